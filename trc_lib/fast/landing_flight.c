/* The rocket landing's flight and its Jacobian, for the correction step's Gauss-Newton.

   The same arithmetic as LandingRecursiveControl.fly (tasks/rocket_landing/model.py), in float64, with the
   derivatives carried forward (forward-mode) through every interval: each quantity q comes with
   its tangent dq[p] = dq / dv_p for the P = 4n + 1 raw numbers v of a flight (per interval k:
   v[4k..4k+2] for the direction, v[4k+3] for the magnitude; v[4n] moves the interval length dt,
   with d dt / d v[4n] = ddt). Without a pointing cone only (the caller falls back to autograd).

   Per interval k, from the mass m_k:
     d_k    = w / |w|,  w = v[4k..4k+2] + e_z
     low_k  : NEWTON steps on low = rho_1 exp(burn low), burn = alpha dt / m_k, from rho_1
     |T_k|  = low (1 + margin) + (rho_2 (1 - margin) - low (1 + margin)) sigmoid(v[4k+3] + offset)
     a_k    = |T_k| d_k / m_k + g,   r += dt v + dt^2 a / 2,   v += dt a,   m_k+1 = m_k exp(-burn |T_k|)
*/

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* params: alpha, rho_1, rho_2, gravity, margin, magnitude_offset */
int landing_flight(long long B, int n, const double* params, int newton_steps, const double* x0,
                   const double* raw, const double* dt_in, const double* ddt_in, double* thrusts,
                   double* positions, double* velocity, double* jac_positions, double* jac_velocity) {
    const double alpha = params[0], rho_1 = params[1], rho_2 = params[2], gravity = params[3],
                 margin = params[4], offset = params[5];
    const int P = 4 * n + 1, T = 4 * n, tangents = jac_positions != NULL;
    double* work = malloc(sizeof(double) * 11 * P);
    if (!work) return 1;
    double *dm = work, *db = work + P, *dlow = work + 2 * P, *dmag = work + 3 * P,
           *da = work + 4 * P /* [3][P] */, *dv = work + 7 * P /* [3][P] */, *dG = work + 10 * P;
    const double high = rho_2 * (1.0 - margin);
    for (long long b = 0; b < B; ++b) {
        const double* x = x0 + 7 * b;
        const double* y = raw + (long long)b * 4 * n;
        const double dt = dt_in[b], ddt = ddt_in[b];
        double r[3] = {x[0], x[1], x[2]}, v[3] = {x[3], x[4], x[5]}, m = x[6];
        double* dr = tangents ? jac_positions + (long long)b * n * 3 * P : NULL; /* node k: dr + 3 P k */
        memset(dm, 0, sizeof(double) * P);
        memset(dv, 0, sizeof(double) * 3 * P);
        for (int k = 0; k < n; ++k) {
            const double* w = y + 4 * k;
            double wz = w[2] + 1.0, norm = sqrt(w[0] * w[0] + w[1] * w[1] + wz * wz);
            if (norm < 1e-12) norm = 1e-12;
            const double d[3] = {w[0] / norm, w[1] / norm, wz / norm};
            /* burn = alpha dt / m */
            const double burn = alpha * dt / m;
            for (int p = 0; p < P * tangents; ++p) db[p] = -burn * dm[p] / m;
            db[T] += alpha * ddt / m;
            double low = rho_1;
            memset(dlow, 0, sizeof(double) * P);
            for (int i = 0; i < newton_steps; ++i) {
                const double G = rho_1 * exp(burn * low), num = low - G, den = 1.0 - burn * G;
                for (int p = 0; p < P * tangents; ++p) {
                    dG[p] = G * (low * db[p] + burn * dlow[p]);
                    const double dnum = dlow[p] - dG[p], dden = -(db[p] * G + burn * dG[p]);
                    dlow[p] -= (dnum * den - num * dden) / (den * den);
                }
                low -= num / den;
            }
            const double f = 1.0 / (1.0 + exp(-(w[3] + offset)));
            const double L = low * (1.0 + margin), mag = L + (high - L) * f;
            for (int p = 0; p < P * tangents; ++p) dmag[p] = (1.0 + margin) * dlow[p] * (1.0 - f);
            dmag[4 * k + 3] += (high - L) * f * (1.0 - f);
            double a[3];
            for (int i = 0; i < 3; ++i) {
                thrusts[((long long)b * n + k) * 3 + i] = mag * d[i];
                a[i] = mag * d[i] / m - (i == 2 ? gravity : 0.0);
                if (!tangents) continue;
                double* dai = da + i * P;
                for (int p = 0; p < P; ++p) dai[p] = (dmag[p] * d[i] - mag * d[i] * dm[p] / m) / m;
                for (int j = 0; j < 3; ++j)  /* d d_i / d w_j = (delta_ij - d_i d_j) / |w| */
                    dai[4 * k + j] += mag * ((i == j) - d[i] * d[j]) / norm / m;
            }
            /* r += dt v + dt^2 a / 2 (with the interval's starting v), then v += dt a */
            for (int i = 0; i < 3 && tangents; ++i) {
                double *out = dr + (long long)3 * P * k + i * P, *dvi = dv + i * P, *dai = da + i * P;
                const double* before = k > 0 ? out - 3 * P : NULL;
                for (int p = 0; p < P; ++p)
                    out[p] = (before ? before[p] : 0.0) + dt * dvi[p] + 0.5 * dt * dt * dai[p];
                out[T] += ddt * v[i] + dt * ddt * a[i];
                for (int p = 0; p < P; ++p) dvi[p] += dt * dai[p];
                dvi[T] += ddt * a[i];
            }
            for (int i = 0; i < 3; ++i) {
                r[i] += dt * v[i] + 0.5 * dt * dt * a[i];
                v[i] += dt * a[i];
                positions[((long long)b * n + k) * 3 + i] = r[i];
            }
            const double next = m * exp(-burn * mag);
            for (int p = 0; p < P * tangents; ++p) dm[p] = next * (dm[p] / m - (db[p] * mag + burn * dmag[p]));
            m = next;
        }
        for (int i = 0; i < 3; ++i) {
            velocity[b * 3 + i] = v[i];
            if (tangents) memcpy(jac_velocity + ((long long)b * 3 + i) * P, dv + i * P, sizeof(double) * P);
        }
    }
    free(work);
    return 0;
}

/* The flight of given thrusts, exact, as RocketLanding.rollout flies it (thrust per unit mass held
   over each interval, the mass decaying in closed form), and what it misses: per problem the
   landing miss[6] = (r_N - r*, v_N - v*) and glide[1], the largest of tan(gamma) |r_k - r*|_horizontal
   - (z_k - z*) over the nodes k = 0 .. N (positive: the glide slope is violated; slope 0: no cone).
   x0 [B][7], thrusts [B][N][3] (N), time_horizons [B] (s), targets [B][7]. */
void landing_miss(long long B, int N, double alpha, double gravity, double slope, const double* x0,
                  const double* thrusts, const double* time_horizons, const double* targets, double* miss,
                  double* glide) {
    for (long long b = 0; b < B; ++b) {
        const double *x = x0 + 7 * b, *target = targets + 7 * b, *T = thrusts + (long long)b * N * 3;
        const double dt = time_horizons[b] / N;
        double r[3] = {x[0], x[1], x[2]}, v[3] = {x[3], x[4], x[5]}, m = x[6], worst = -INFINITY;
        for (int k = 0; k <= N; ++k) {
            if (slope > 0) {
                const double dx = r[0] - target[0], dy = r[1] - target[1];
                const double violation = slope * sqrt(dx * dx + dy * dy) - (r[2] - target[2]);
                if (violation > worst) worst = violation;
            }
            if (k == N) break;
            const double* Tk = T + 3 * k;
            double a[3], u = 0.0;
            for (int i = 0; i < 3; ++i) {
                a[i] = Tk[i] / m - (i == 2 ? gravity : 0.0);
                u += (Tk[i] / m) * (Tk[i] / m);
            }
            for (int i = 0; i < 3; ++i) {
                r[i] += dt * v[i] + 0.5 * dt * dt * a[i];
                v[i] += dt * a[i];
            }
            m *= exp(-alpha * sqrt(u) * dt);
        }
        for (int i = 0; i < 3; ++i) {
            miss[6 * b + i] = r[i] - target[i];
            miss[6 * b + 3 + i] = v[i] - target[3 + i];
        }
        glide[b] = slope > 0 ? worst : 0.0;
    }
}

/* The inverse of the magnitude's reading (LandingRecursiveControl.raw_answer): the fraction
   f_k = (|T_k| - lo_k) / (high - lo_k) of each interval's thrust range, lo_k the least thrust
   (newton_steps of Newton's method, nudged up by margin) from the mass the thrusts before leave.
   masses [B] (kg, at the start), magnitudes [B][N] (N), dt [B] (s) -> fractions [B][N]. */
void landing_fractions(long long B, int N, double alpha, double rho_1, double high, double margin,
                       int newton_steps, const double* masses, const double* magnitudes, const double* dt,
                       double* fractions) {
    for (long long b = 0; b < B; ++b) {
        double m = masses[b];
        for (int k = 0; k < N; ++k) {
            const double burn = alpha * dt[b] / m, magnitude = magnitudes[(long long)b * N + k];
            double low = rho_1;
            for (int i = 0; i < newton_steps; ++i) {
                const double grown = rho_1 * exp(burn * low);
                low -= (low - grown) / (1.0 - burn * grown);
            }
            low *= 1.0 + margin;
            fractions[(long long)b * N + k] = (magnitude - low) / (high - low);
            m *= exp(-burn * magnitude);
        }
    }
}
