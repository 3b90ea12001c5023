/* TinyRecursiveControl's forward pass for small batches, in plain C (trc_lib/fast_forward.py).

   At batch 1 every product is a matrix-vector product of a few hundred rows: a microsecond of
   arithmetic, which a framework's per-operation dispatch (several microseconds each, hundreds of
   operations per answer) dwarfs. This file is the same recursion as model.py, one problem at a
   time, with nothing between the products. It reads transposed, packed float32 copies of the
   weights ([in, out] cut into row blocks, see matvec; fast_forward.py remakes them whenever the
   model's tensors change). Parity with the eager PyTorch forward is tested to 1e-5 x max(1, u_max)
   (tests/test_fast_forward.py). A net larger than a core's L2 cache shares its products among a
   team of threads (below).

   The error feedback's x_N(x_0, u) comes from a function pointer: the compiled terminal map of a
   nonlinear system (terminal_map.py, float64), or NULL for a linear one, whose x_N = A^N x_0 + G u
   is computed here.

   The rocket landing's model (kind 1, landing_model.py) reads its answer its own way: thrust
   directions and magnitudes within the annulus, the flight time, the mass scan and the landing
   miss (landing_read below, the same arithmetic as LandingRecursiveControl.read_answer). */

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#if defined(__F16C__) || defined(__AVX2__) || defined(__SSE2__)
#include <immintrin.h>
#endif
#if defined(__linux__) || defined(__APPLE__)
#include <pthread.h>
#include <sched.h>
#define TRC_HAS_THREADS 1
#endif

typedef int (*terminal_map_fn)(long long B, const double* x0, const double* u, double* xN);

typedef struct {
    int n, N_m, D, H, layers, inner, outer, steps, feedback;
    float u_max, state_scale, eps;
    /* every matrix transposed, [in, out], and packed for matvec */
    const float *embed_context;   /* [2n, D] */
    const float *embed_controls;  /* [N m, D] */
    const float *embed_error;     /* [n, D] or NULL */
    const void *const *gate_up;   /* per block: [D, 2H], float32 or IEEE half */
    const void *const *down;      /* per block: [H, D], likewise */
    const float *decode;          /* [D, N m] */
    const float *z_init;          /* [D] */
    const float *A_N, *G;         /* [n, n], [N m, n]: linear systems */
    terminal_map_fn terminal;     /* nonlinear systems (feedback and halting) */
    /* kind 0: controls bounded by u_max (N_m each of y, answer, features; n of context/2, miss);
       kind 1: the rocket landing, y [4N+1], answer and features [3N+1], context [13], miss [6] */
    int kind, y_size, a_size, landing_N, newton_steps, has_pointing;
    float alpha, rho_1, rho_2, gravity, margin, magnitude_offset, pointing_ratio, time_scale,
          position_scale, velocity_scale, dry_mass, wet_mass, res_position, res_velocity;
    int half;  /* the shared net's weights in IEEE half precision (arithmetic stays float32) */
    int threads;  /* cores that share the shared net's products (see team below); 1: this thread alone */
} trc_model;

/* y = W x (y += W x when accumulate), on every matrix as fast_forward.py packs it: W transposed
   ([cols][rows], so each row's sum runs in column order) and cut into blocks of 64 rows, then
   one block of the remaining whole 8s of rows, then the last rows % 8, each block stored as
   [cols][width], one after another (trc_pack_blocks() says whether blocks are used; without them
   the packing is the plain [cols][rows]). With AVX2 a block of 8 J rows stays in J registers over
   every column, so the weights are the only memory traffic (a plain loop also loads and stores y
   once per column: at batch 1 that made these products 1.5 to 2 times slower than ONNX
   Runtime's), and every block is one sequential stream, which the prefetcher follows better than
   a layout that jumps a whole row between columns once the weights outgrow the L2 cache (a
   medium model's float32 products: 0.86 ms, then 0.75; with half-precision weights, the large
   model's: 5.7 ms, then 4.4; Xeon, benchmarks/performance.py). A block of fewer than 8 registers
   waits on its additions (each takes four cycles), so the last whole 8s of rows go in one block,
   not one by one: a block then costs about the same whatever its width, which is what team_matvec
   shares out. The same sums, in the same order, whichever loop runs.

   matvec_half reads the weights in IEEE half precision, converted on the fly (F16C), summed in
   float32: half the bytes to stream, which at batch 1 is what bounds the shared net's products
   once its float32 weights outgrow the core's L2 cache. */
#if defined(__AVX2__) && defined(__FMA__)
int trc_pack_blocks(void) { return 1; }  /* blocks of 64 rows, then one of the whole 8s left */
#else
int trc_pack_blocks(void) { return 0; }
#endif
#if defined(__F16C__) && defined(__FMA__) && defined(__AVX2__)
int trc_has_half(void) { return 1; }
#else
int trc_has_half(void) { return 0; }
#endif

#define LOAD_FLOAT(P, i) _mm256_loadu_ps((P) + (i))
#define LOAD_HALF(P, i) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)((P) + (i))))
#define TO_FLOAT(v) (v)
#define HALF_TO_FLOAT(v) _cvtsh_ss(v)

/* MATVEC(name, weight type, 8-wide load, scalar conversion): the block kernel for J registers
   (J a constant where it is called: the compiler keeps acc in registers) and the matvec over one
   packed matrix. */
#define MATVEC(NAME, TYPE, LOAD, CONVERT)                                                              \
static inline __attribute__((always_inline)) void NAME##_block(const TYPE* restrict P, const int J, int cols, \
        const float* restrict x, float* restrict y, int accumulate) {                                 \
    __m256 acc[8];                                                                                     \
    for (int j = 0; j < J; ++j) acc[j] = accumulate ? _mm256_loadu_ps(y + 8 * j) : _mm256_setzero_ps(); \
    for (int k = 0; k < cols; ++k) {                                                                   \
        const __m256 xk = _mm256_set1_ps(x[k]);                                                        \
        for (int j = 0; j < J; ++j) acc[j] = _mm256_fmadd_ps(LOAD(P, 8L * J * k + 8 * j), xk, acc[j]); \
    }                                                                                                  \
    for (int j = 0; j < J; ++j) _mm256_storeu_ps(y + 8 * j, acc[j]);                                   \
}                                                                                                      \
static void NAME(const TYPE* restrict P, int rows, int cols, const float* restrict x, float* restrict y, \
                 int accumulate) {                                                                     \
    int o0 = 0;                                                                                        \
    for (; o0 + 64 <= rows; o0 += 64, P += 64L * cols) NAME##_block(P, 8, cols, x, y + o0, accumulate); \
    const int J = (rows - o0) / 8;                                                                     \
    switch (J) {                                                                                       \
        case 1: NAME##_block(P, 1, cols, x, y + o0, accumulate); break;                                \
        case 2: NAME##_block(P, 2, cols, x, y + o0, accumulate); break;                                \
        case 3: NAME##_block(P, 3, cols, x, y + o0, accumulate); break;                                \
        case 4: NAME##_block(P, 4, cols, x, y + o0, accumulate); break;                                \
        case 5: NAME##_block(P, 5, cols, x, y + o0, accumulate); break;                                \
        case 6: NAME##_block(P, 6, cols, x, y + o0, accumulate); break;                                \
        case 7: NAME##_block(P, 7, cols, x, y + o0, accumulate); break;                                \
    }                                                                                                  \
    o0 += 8 * J, P += 8L * J * cols;                                                                   \
    const int r = rows - o0;                                                                           \
    if (r == 0) return;                                                                                \
    if (!accumulate) memset(y + o0, 0, sizeof(float) * r);                                             \
    for (int k = 0; k < cols; ++k)                                                                     \
        for (int o = 0; o < r; ++o) y[o0 + o] += CONVERT(P[(long)k * r + o]) * x[k];                  \
}

#if defined(__AVX2__) && defined(__FMA__)
MATVEC(matvec, float, LOAD_FLOAT, TO_FLOAT)
#else
static void matvec(const float* restrict P, int rows, int cols, const float* restrict x, float* restrict y,
                   int accumulate) {  /* the plain [cols][rows] packing */
    if (!accumulate) memset(y, 0, sizeof(float) * rows);
    for (int k = 0; k < cols; ++k)
        for (int o = 0; o < rows; ++o) y[o] += P[(long)k * rows + o] * x[k];
}
#endif
#if defined(__F16C__) && defined(__FMA__) && defined(__AVX2__)
MATVEC(matvec_half, unsigned short, LOAD_HALF, HALF_TO_FLOAT)
#else
static void matvec_half(const unsigned short* P, int rows, int cols, const float* x, float* y, int accumulate) {
    (void)P, (void)rows, (void)cols, (void)x, (void)y, (void)accumulate;  /* never called: trc_has_half() */
}
#endif

/* One product of the shared net, in the precision its weights are stored in. */
static void net_matvec(const trc_model* m, const void* WT, int rows, int cols, const float* x, float* y, int accumulate) {
    if (m->half) matvec_half((const unsigned short*)WT, rows, cols, x, y, accumulate);
    else matvec((const float*)WT, rows, cols, x, y, accumulate);
}


/* ---- a team of threads for the shared net's products ---------------------------------------
   One thread streams a medium model's float32 net (2.1 MB) from L3 at every answer; two threads
   that each own half of every matrix's rows hold their halves in their own L2 caches: 0.70 ->
   0.25 ms at batch 1 (Xeon; fast_forward.py's team_size says when a net gets a team). The team
   runs solve() side by side on the same problem (SPMD): each thread computes its rows of the shared net's products into a buffer the
   team shares, waits at a barrier, then does everything else (SwiGLU, the norm, the small
   products, the feedback) on its own copy, the same arithmetic on the same numbers. So every
   thread holds the same answer and the split changes no number: the result is bit for bit the
   one of a single thread (tested). Only thread 0 writes the outputs. Idle workers spin a
   fifth of a millisecond (the gap between two calls of predict), then sleep. */
typedef struct {
    atomic_int count, generation;
} trc_barrier;

static inline void relax(void) {
#if defined(__SSE2__)
    _mm_pause();
#endif
}
#ifndef TRC_HAS_THREADS
static inline int sched_yield(void) { return 0; }
#endif

typedef struct {
    int tid, T;
    float *gu, *out;  /* shared: [2H] and [D], the split products' outputs */
    trc_barrier* barrier;
} team;

/* Every member of the team waits here until all have arrived (writes before it are seen after). */
static void team_sync(const team* t) {
    if (t->T == 1) return;
    trc_barrier* b = t->barrier;
    int generation = atomic_load_explicit(&b->generation, memory_order_acquire);
    if (atomic_fetch_add_explicit(&b->count, 1, memory_order_acq_rel) == t->T - 1) {
        atomic_store_explicit(&b->count, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&b->generation, 1, memory_order_release);
    } else {  /* spin; past a few microseconds give the core away, in case the others share it */
        for (long spins = 1; atomic_load_explicit(&b->generation, memory_order_acquire) == generation; ++spins)
            if (spins % 256) relax();
            else sched_yield();
    }
}

/* This thread's rows [*begin, *end) of a product with `rows` rows: an even share of its blocks
   (the 64s and the one of the 8s left, which cost about the same: see matvec); the rows after
   the last whole 8 go to the last thread. */
static void row_of_block(int rows, int block, int* row) {
    *row = block * 64 < rows / 8 * 8 ? block * 64 : rows / 8 * 8;
}
static void rows_of(int rows, const team* t, int* begin, int* end) {
    int blocks = rows / 64 + (rows % 64 >= 8);
    row_of_block(rows, (t->tid * blocks + t->T / 2) / t->T, begin);
    if (t->tid == t->T - 1) *end = rows;
    else row_of_block(rows, ((t->tid + 1) * blocks + t->T / 2) / t->T, end);
}

/* y = W x of the shared net, each thread its rows of the shared y, then the barrier. */
static void team_matvec(const trc_model* m, const void* WT, int rows, int cols, const float* x, float* y, const team* t) {
    int begin, end;
    rows_of(rows, t, &begin, &end);
    if (end > begin)
        net_matvec(m, (const char*)WT + (size_t)(m->half ? 2 : 4) * begin * cols, end - begin, cols, x, y + begin, 0);
    team_sync(t);
}

#if defined(__AVX2__) && defined(__FMA__)
/* e^x for 8 floats, to about 2e-7 relative: x = k ln 2 + r with |r| <= ln 2 / 2 (ln 2 in two
   parts, so r keeps its bits), e^r by its Taylor polynomial to r^7 / 7!, 2^k built in the
   exponent field. x is clamped to [-87, 88], where e^x is a normal float. The scalar expf costs
   ten to twenty times as much per element, and SiLU takes one per hidden unit: at batch 1 it was
   the largest cost besides the products themselves. */
static inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i two_k = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(two_k));
}
#endif

/* hidden = silu(gate) * up, with gate = gu[0:H] and up = gu[H:2H]. */
static void swiglu(const float* gu, int H, float* hidden) {
    int i = 0;
#if defined(__AVX2__) && defined(__FMA__)
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= H; i += 8) {
        const __m256 g = _mm256_loadu_ps(gu + i);
        const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
        _mm256_storeu_ps(hidden + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(gu + H + i)));
    }
#endif
    for (; i < H; ++i) hidden[i] = gu[i] / (1.0f + expf(-gu[i])) * gu[H + i];
}

/* sum_i h_i^2. With AVX2 in eight interleaved partial sums: one running sum waits four cycles
   for each addition, which at batch 1 cost as much as all the other elementwise work. */
static float sum_of_squares(const float* h, int D) {
    int i = 0;
    float sq = 0.0f;
#if defined(__AVX2__) && defined(__FMA__)
    __m256 acc = _mm256_setzero_ps();
    for (; i + 8 <= D; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(h + i), _mm256_loadu_ps(h + i), acc);
    float lanes[8];
    _mm256_storeu_ps(lanes, acc);
    for (int j = 0; j < 8; ++j) sq += lanes[j];
#endif
    for (; i < D; ++i) sq += h[i] * h[i];
    return sq;
}

/* h <- RMSNorm(h + W_down (silu(W_gate h) * W_up h)) for every block of the shared net; the two
   products shared by the team, h and hidden this thread's own. */
static void net(const trc_model* m, const team* t, float* h, float* hidden) {
    for (int l = 0; l < m->layers; ++l) {
        team_matvec(m, m->gate_up[l], 2 * m->H, m->D, h, t->gu, t);
        swiglu(t->gu, m->H, hidden);
        team_matvec(m, m->down[l], m->D, m->H, hidden, t->out, t);
        for (int i = 0; i < m->D; ++i) h[i] += t->out[i];
        float scale = 1.0f / sqrtf(sum_of_squares(h, m->D) / m->D + m->eps);
        for (int i = 0; i < m->D; ++i) h[i] *= scale;
    }
}

/* u = u_max tanh(y / u_max). With AVX2 as 1 - 2 / (e^(2y/u_max) + 1), from exp8: within a few
   float32 roundings of tanhf (absolute, u_max being the scale), at a tenth of its cost; an answer
   reads its controls this way seven times, which took a sixth of its time besides the products. */
static void bounded(const trc_model* m, const float* y, float* u) {
    int i = 0;
#if defined(__AVX2__) && defined(__FMA__)
    const __m256 one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f), u_max = _mm256_set1_ps(m->u_max),
                 twice_inverse = _mm256_set1_ps(2.0f / m->u_max);
    for (; i + 8 <= m->N_m; i += 8) {
        const __m256 e = exp8(_mm256_mul_ps(_mm256_loadu_ps(y + i), twice_inverse));
        _mm256_storeu_ps(u + i, _mm256_mul_ps(u_max, _mm256_sub_ps(one, _mm256_div_ps(two, _mm256_add_ps(e, one)))));
    }
#endif
    for (; i < m->N_m; ++i) u[i] = m->u_max * tanhf(y[i] / m->u_max);
}

/* xN = x_N(x0, u): the compiled terminal map (float64), or A^N x0 + G u for a linear system. */
static int terminal_state(const trc_model* m, const float* x0, const float* u, float* xN) {
    if (!m->terminal) {
        matvec(m->A_N, m->n, m->n, x0, xN, 0);
        matvec(m->G, m->n, m->N_m, u, xN, 1);
        return 0;
    }
    double x0_d[16], u_d[4096], xN_d[16];
    for (int i = 0; i < m->n; ++i) x0_d[i] = x0[i];
    for (int i = 0; i < m->N_m; ++i) u_d[i] = u[i];
    if (m->terminal(1, x0_d, u_d, xN_d)) return 1;
    for (int i = 0; i < m->n; ++i) xN[i] = (float)xN_d[i];
    return 0;
}

/* The landing's answer from y [4N+1]: answer = [thrusts (N, 3N), t_f], features = [thrusts / rho_2,
   log(t_f / time_scale)] and, unless miss is NULL, asinh(landing error / resolution) [6]. */
static void landing_read(const trc_model* m, const float* x0, const float* xt, const float* y,
                         float* answer, float* features, float* miss) {
    int N = m->landing_N;
    float tf = m->time_scale * expf(2.0f * tanhf(y[4 * N] / 2.0f)), dt = tf / N;
    float mass = x0[6], high = m->rho_2 * (1.0f - m->margin);
    float sum[3] = {0, 0, 0}, weighted[3] = {0, 0, 0};
    for (int k = 0; k < N; ++k) {
        const float* w = y + 4 * k;
        float d[3], wz = w[2] + 1.0f;
        if (!m->has_pointing) {
            float norm = sqrtf(w[0] * w[0] + w[1] * w[1] + wz * wz);
            if (norm < 1e-12f) norm = 1e-12f;
            d[0] = w[0] / norm, d[1] = w[1] / norm, d[2] = wz / norm;
        } else {
            float horizontal = sqrtf(w[0] * w[0] + w[1] * w[1]);
            float tilt = atan2f(horizontal, wz) * m->pointing_ratio;
            float h = horizontal < 1e-12f ? 1e-12f : horizontal;
            d[0] = sinf(tilt) * w[0] / h, d[1] = sinf(tilt) * w[1] / h, d[2] = cosf(tilt);
        }
        float burn = m->alpha * dt / mass, low = m->rho_1;
        for (int i = 0; i < m->newton_steps; ++i) {
            float grown = m->rho_1 * expf(burn * low);
            low = low - (low - grown) / (1.0f - burn * grown);
        }
        float fraction = 1.0f / (1.0f + expf(-(w[3] + m->magnitude_offset)));
        float magnitude = low * (1.0f + m->margin) + (high - low * (1.0f + m->margin)) * fraction;
        for (int i = 0; i < 3; ++i) {
            float thrust = magnitude * d[i];
            answer[3 * k + i] = thrust;
            features[3 * k + i] = thrust / m->rho_2;
            float a = thrust / mass + (i == 2 ? -m->gravity : 0.0f);
            sum[i] += a;
            weighted[i] += (N - k - 0.5f) * a;
        }
        mass *= expf(-burn * magnitude);
    }
    answer[3 * N] = tf;
    features[3 * N] = logf(tf / m->time_scale);
    if (!miss) return;
    for (int i = 0; i < 3; ++i) {
        float r = x0[i] + N * dt * x0[3 + i] + dt * dt * weighted[i];
        float v = x0[3 + i] + dt * sum[i];
        miss[i] = asinhf((r - xt[i]) / m->res_position);
        miss[3 + i] = asinhf((v - xt[3 + i]) / m->res_velocity);
    }
}

/* The context's input: x_0 and x* over state_scale, or the landing's per-quantity features [13]. */
static int context_input(const trc_model* m, const float* x0, const float* xt, float* scaled) {
    if (m->kind == 0) {
        for (int i = 0; i < m->n; ++i) { scaled[i] = x0[i] / m->state_scale; scaled[m->n + i] = xt[i] / m->state_scale; }
        return 2 * m->n;
    }
    for (int i = 0; i < 3; ++i) {
        scaled[i] = x0[i] / m->position_scale, scaled[3 + i] = x0[3 + i] / m->velocity_scale;
        scaled[7 + i] = xt[i] / m->position_scale, scaled[10 + i] = xt[3 + i] / m->velocity_scale;
    }
    scaled[6] = (x0[6] - m->dry_mass) / (m->wet_mass - m->dry_mass);
    return 13;
}

/* One problem: refinements[s] = the controls after supervision step s (s < steps), each [N m].
   With tolerance > 0 it stops after the first step whose answer misses x* by less (halting):
   the later refinements repeat that answer, *used is the number of steps run, *error its miss. */
static int solve(const trc_model* m, const team* t, const float* x0, const float* xt, float* refinements,
                 float* work, float tolerance, int* used, float* error) {
    int n = m->n, D = m->D, Ny = m->y_size, Na = m->a_size;
    float *context = work, *z = context + D, *question = z + D, *h = question + D, *ce = h + D;
    float *y = ce + D, *u = y + Ny, *hidden = u + Na, *scaled = hidden + m->H;
    float miss[16];
    int miss_size = m->kind == 0 ? n : 6;
    if (n > 16 || Na > 4096) return 2;
    matvec(m->embed_context, D, context_input(m, x0, xt, scaled), scaled, context, 0);
    memset(y, 0, sizeof(float) * Ny);
    memcpy(z, m->z_init, sizeof(float) * D);
    for (int s = 0; s < m->steps; ++s) {
        for (int r = 0; r < m->outer; ++r) {
            if (m->kind == 0) {
                bounded(m, y, u);
                for (int i = 0; i < Na; ++i) scaled[i] = u[i] / m->u_max;
                if (m->feedback) {
                    if (terminal_state(m, x0, u, miss)) return 1;
                    for (int i = 0; i < n; ++i) miss[i] = (miss[i] - xt[i]) / m->state_scale;
                }
            } else {
                landing_read(m, x0, xt, y, u, scaled, m->feedback ? miss : NULL);
            }
            matvec(m->embed_controls, D, Na, scaled, ce, 0);
            for (int i = 0; i < D; ++i) question[i] = context[i] + ce[i];
            if (m->feedback) matvec(m->embed_error, D, miss_size, miss, question, 1);
            for (int c = 0; c < m->inner; ++c) {
                for (int i = 0; i < D; ++i) z[i] += question[i];
                net(m, t, z, hidden);
            }
            for (int i = 0; i < D; ++i) h[i] = ce[i] + z[i];
            net(m, t, h, hidden);
            matvec(m->decode, Ny, D, h, y, 1);
        }
        float* answer = refinements + (long)s * Na;
        if (m->kind == 0) bounded(m, y, answer);
        else landing_read(m, x0, xt, y, answer, scaled, NULL);
        *used = s + 1;
        if (tolerance > 0.0f && m->kind == 0) {
            if (terminal_state(m, x0, answer, miss)) return 1;
            float sq = 0.0f;
            for (int i = 0; i < n; ++i) sq += (miss[i] - xt[i]) * (miss[i] - xt[i]);
            *error = sqrtf(sq);
            if (*error < tolerance) {
                for (int later = s + 1; later < m->steps; ++later)
                    memcpy(refinements + (long)later * Na, answer, sizeof(float) * Na);
                break;
            }
        }
    }
    return 0;
}

/* ---- the team's jobs ---------------------------------------------------------------------- */
enum { FORWARD, PRODUCTS_ONLY };
#define TRC_MAX_THREADS 8
#define TRC_SPIN_SECONDS 2e-4  /* an idle worker's spin before it sleeps */

typedef struct {
    int what;
    const trc_model* m;
    long long B;
    const float *x0, *xt;
    float tolerance;
    float *refinements, *errors;  /* thread 0's outputs: [steps, B, a_size], [B] */
    int* used;                    /* [B] */
    float* work[TRC_MAX_THREADS];  /* each thread's own, allocated before the job starts */
    team teams[TRC_MAX_THREADS];
    int status;                   /* thread 0's (every thread reaches the same) */
} trc_job;

static long solve_floats(const trc_model* m) {  /* solve's work */
    return 6L * m->D + m->y_size + 2L * m->a_size + 3L * m->H + 2L * m->n + 32;
}

static long work_floats(const trc_model* m) {  /* solve's work, then one answer's refinements */
    return solve_floats(m) + (long)m->steps * m->a_size;
}

/* One member's share of a job: every thread runs all of it, thread 0 keeps the results. */
static void run_job(trc_job* job, int tid) {
    const trc_model* m = job->m;
    const team* t = &job->teams[tid];
    float* work = job->work[tid];
    if (job->what == PRODUCTS_ONLY) {  /* solve's products in its order and shapes, on zeros, each
                                          reading the one before's output (on a team, from the others) */
        const int D = m->D, H = m->H, Ny = m->y_size, Na = m->a_size;
        float *controls = work, *h = controls + Na, *y = h + D;
        memset(work, 0, sizeof(float) * ((size_t)Na + D + Ny));
        for (long long b = 0; b < job->B; ++b)
            for (int s = 0; s < m->steps; ++s)
                for (int r = 0; r < m->outer; ++r) {
                    matvec(m->embed_controls, D, Na, controls, h, 0);
                    const float* x = h;
                    for (int c = 0; c <= m->inner; ++c)
                        for (int l = 0; l < m->layers; ++l) {
                            team_matvec(m, m->gate_up[l], 2 * H, D, x, t->gu, t);
                            team_matvec(m, m->down[l], D, H, t->gu, t->out, t);
                            x = t->out;
                        }
                    matvec(m->decode, Ny, D, x, y, 1);
                }
        return;
    }
    float* one = work + solve_floats(m);
    int used_here = 0;
    float error_here = 0.0f;
    int status = 0;
    for (long long b = 0; b < job->B && !status; ++b) {
        int* used = tid == 0 ? job->used + b : &used_here;
        float* error = tid == 0 ? job->errors + b : &error_here;
        status = solve(m, t, job->x0 + b * m->n, job->xt + b * m->n, one, work, job->tolerance, used, error);
        if (tid == 0)
            for (int s = 0; s < m->steps; ++s)
                memcpy(job->refinements + ((long)s * job->B + b) * m->a_size, one + (long)s * m->a_size,
                       sizeof(float) * m->a_size);
    }
    if (tid == 0) job->status = status;
}

#ifdef TRC_HAS_THREADS
/* The workers (threads 1, 2, ...) wait for the next job's ticket: generation * 16 + T. */
static struct {
    pthread_mutex_t busy;  /* one job at a time; a second caller meanwhile runs alone */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    atomic_int ticket;
    int workers;
    trc_job* job;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, NULL};

static double seconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec + 1e-9 * now.tv_nsec;
}

static void* worker(void* argument) {
    const int tid = (int)(intptr_t)argument;
    int seen = 0;
    for (;;) {
        int ticket = atomic_load_explicit(&pool.ticket, memory_order_acquire);
        for (double since = seconds(); ticket == seen && seconds() - since < TRC_SPIN_SECONDS;) {
            for (int i = 0; i < 64 && ticket == seen; ++i) {
                relax();
                ticket = atomic_load_explicit(&pool.ticket, memory_order_acquire);
            }
        }
        if (ticket == seen) {  /* asleep until the next ticket (posted under the lock: none is missed) */
            pthread_mutex_lock(&pool.lock);
            while ((ticket = atomic_load_explicit(&pool.ticket, memory_order_acquire)) == seen)
                pthread_cond_wait(&pool.wake, &pool.lock);
            pthread_mutex_unlock(&pool.lock);
        }
        seen = ticket;
        if (tid < (ticket & 15)) {
            run_job(pool.job, tid);
            team_sync(&pool.job->teams[tid]);  /* the job is over for the team */
        }
    }
    return NULL;
}

/* A forked child has none of its parent's workers: it starts its own when it needs them. */
static void forget_workers(void) {
    pthread_mutex_init(&pool.busy, NULL);
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    atomic_store(&pool.ticket, 0);
    pool.workers = 0;
}

/* The team for a job that asks for T threads: T, or fewer where workers could not be started. */
static int start_workers(int T) {
    static int registered = 0;
    if (!registered) { pthread_atfork(NULL, NULL, forget_workers); registered = 1; }
    while (pool.workers < T - 1) {
        pthread_t thread;
        pthread_attr_t attributes;
        pthread_attr_init(&attributes);
        pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&thread, &attributes, worker, (void*)(intptr_t)(pool.workers + 1));
        pthread_attr_destroy(&attributes);
        if (failed) break;
        ++pool.workers;
    }
    return pool.workers + 1 < T ? pool.workers + 1 : T;
}
#endif

/* Runs a job on a team of m->threads threads (one where that is 1, a team is busy with another
   caller's job, or the packing has no blocks of 64 to split at). Returns its status, or 3
   without memory. */
static int run(trc_job* job) {
    const trc_model* m = job->m;
    int T = m->threads < 1 ? 1 : m->threads > TRC_MAX_THREADS ? TRC_MAX_THREADS : m->threads;
    if (!trc_pack_blocks()) T = 1;
#ifdef TRC_HAS_THREADS
    int owner = T > 1 && pthread_mutex_trylock(&pool.busy) == 0;
    if (owner) T = start_workers(T);
    else T = 1;
#else
    T = 1;
#endif
    float* shared = malloc(sizeof(float) * (2L * m->H + m->D));
    trc_barrier barrier;
    atomic_init(&barrier.count, 0);
    atomic_init(&barrier.generation, 0);
    int status = shared ? 0 : 3;
    for (int tid = 0; tid < T; ++tid) {
        job->work[tid] = status ? NULL : malloc(sizeof(float) * work_floats(m));
        if (!job->work[tid]) status = 3;
        job->teams[tid] = (team){tid, T, shared, shared ? shared + 2L * m->H : NULL, &barrier};
    }
    if (!status) {
#ifdef TRC_HAS_THREADS
        if (T > 1) {  /* the ticket, under the lock, after the job: a worker that sees it sees the job */
            pool.job = job;
            pthread_mutex_lock(&pool.lock);
            int generation = (atomic_load_explicit(&pool.ticket, memory_order_relaxed) >> 4) + 1;
            atomic_store_explicit(&pool.ticket, ((generation & 0x3ffffff) << 4) | T, memory_order_release);
            pthread_cond_broadcast(&pool.wake);
            pthread_mutex_unlock(&pool.lock);
        }
#endif
        run_job(job, 0);
        team_sync(&job->teams[0]);  /* every worker is done with the job and its buffers */
        status = job->status;
    }
#ifdef TRC_HAS_THREADS
    if (owner) pthread_mutex_unlock(&pool.busy);
#endif
    for (int tid = 0; tid < T; ++tid) free(job->work[tid]);
    free(shared);
    return status;
}

/* refinements: [steps, B, a_size]; used [B], errors [B]: see solve (tolerance 0: every step, no
   errors computed). Returns 0, or non-zero if the terminal map failed (1, 2) or memory ran out (3). */
int trc_forward(const trc_model* m, long long B, const float* x0, const float* xt, float tolerance,
                float* refinements, int* used, float* errors) {
    trc_job job = {.what = FORWARD, .m = m, .B = B, .x0 = x0, .xt = xt, .tolerance = tolerance,
                   .refinements = refinements, .errors = errors, .used = used};
    return run(&job);
}

/* The floor these kernels allow (benchmarks/performance.py): the matrix products of B answers in
   solve's order and shapes, each reading the output of the one before, on the same team, and
   nothing else (per supervision step and outer cycle: embed_controls, the shared net's products
   inner + 1 times, decode), on vectors of zeros. Returns 0, or 3 without memory. */
int trc_products_only(const trc_model* m, long long B) {
    trc_job job = {.what = PRODUCTS_ONLY, .m = m, .B = B};
    return run(&job);
}
