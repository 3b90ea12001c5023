/* TinyRecursiveControl's forward pass in plain C (trc_lib/fast/forward.py): small batches, and
   bfloat16 batches of any size on Intel AMX (the tiles' section below).

   At batch 1 every product is a matrix-vector product of a few hundred rows: a microsecond of
   arithmetic, which a framework's per-operation dispatch (several microseconds each, hundreds of
   operations per answer) dwarfs. This file is the same recursion as model.py, one problem at a
   time, with nothing between the products. It reads transposed, packed float32 copies of the
   weights ([in, out] cut into row blocks, see matvec; fast/forward.py remakes them whenever the
   model's tensors change). Parity with the eager PyTorch forward is tested to 1e-5 x max(1, u_max)
   (tests/test_fast_forward.py). A net larger than a core's L2 cache shares its products among a
   team of threads (below).

   The error feedback's x_N(x_0, u) comes from a function pointer: the compiled terminal map of a
   nonlinear system (terminal_map.py, float64), or NULL for a linear one, whose x_N = A^N x_0 + G u
   is computed here.

   The rocket landing's model (kind 1, tasks/rocket_landing/model.py) reads its answer its own way: thrust
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
    int tiles;    /* gate_up, down, embed_controls and decode are AMX tiles in bfloat16 (fast_forward.tiles):
                     groups of problems, each thread its own (the tiles' section below) */
    /* kind 0 with bounds other than one symmetric |u| <= u_max: each control's center c and
       half-width h, [N m]; u = c + h tanh(y / h), features (u - c) / h. NULL: u_max for all. */
    const float *control_center, *control_half;
    int split;  /* threads take problems of their own, each alone (a net that gains nothing from a
                   team, at batch 2 and over), rather than sharing each product (see run_job) */
} trc_model;

/* y = W x (y += W x when accumulate), on every matrix as fast/forward.py packs it: W transposed
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
   0.25 ms at batch 1 (Xeon; fast/forward.py's team_size says when a net gets a team). The team
   runs solve() side by side on the same problem (SPMD): each thread computes its rows of the
   shared net's products into a buffer the team shares, waits at a barrier, then does everything else (SwiGLU, the norm, the small
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

#if defined(__AVX512F__)
/* silu(g) * u for 16 floats, to float32 round-off. On the tiles the result is rounded to bfloat16
   next, and still: an error of 1e-5 moves some values across a rounding boundary, and through the recursion
   that moved the answers by a thousandth of their scale (1 / x by rcp14 alone: 2e-3 x u_max).
   e^-g as -g = k ln 2 + r with |r| <= ln 2 / 2 (ln 2 in two parts, so r keeps its bits), e^r by a minimax polynomial of degree 5 (2e-7 relative, two terms fewer than exp8's
   Taylor polynomial), 2^k by scalef (0 below 2^-149); g is clamped at -88 only inside the
   exponential, so that 1 + e^-g stays finite. The division is IEEE's: rcp14 and a Newton step
   took as long, since the AMX unit's work leaves the vector ports fewer cycles than the divider.
   The SiLU is the largest cost of the tiles besides the products: each instruction here counts.
   At batch 1 (swiglu) its 16 lanes take a small model's answer from 1.10 to 1.08 times its
   products alone, against exp8's 8 (Xeon, ad hoc). */
static inline __m512 silu_times(__m512 g, __m512 u) {
    const __m512 x = _mm512_max_ps(g, _mm512_set1_ps(-88.0f));
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(-1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmsub_ps(k, _mm512_set1_ps(0.693359375f), x);  /* -x - k ln 2 (high part) */
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);       /* ... - k ln 2 (low part) */
    __m512 p = _mm512_set1_ps(0.00829765f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.04191538f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.16667575f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.49998894f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.9999997f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0000001f));
    const __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f), _mm512_scalef_ps(p, k));
    return _mm512_mul_ps(_mm512_div_ps(g, d), u);
}
#endif

/* hidden = silu(gate) * up, with gate = gu[0:H] and up = gu[H:2H]. */
static void swiglu(const float* gu, int H, float* hidden) {
    int i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= H; i += 16) _mm512_storeu_ps(hidden + i, silu_times(_mm512_loadu_ps(gu + i), _mm512_loadu_ps(gu + H + i)));
#endif
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
    if (m->control_center) {  /* bounds of their own for each control: the plain loop */
        for (; i < m->N_m; ++i) u[i] = m->control_center[i] + m->control_half[i] * tanhf(y[i] / m->control_half[i]);
        return;
    }
#if defined(__AVX2__) && defined(__FMA__)
    const __m256 one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f), u_max = _mm256_set1_ps(m->u_max),
                 twice_inverse = _mm256_set1_ps(2.0f / m->u_max);
    for (; i < m->N_m; i += 8) {  /* the last few through a copy: tanhf cost as much as all the 8s */
        float tail[8] = {0};
        const int whole = i + 8 <= m->N_m;
        if (!whole) memcpy(tail, y + i, sizeof(float) * (m->N_m - i));
        const __m256 e = exp8(_mm256_mul_ps(_mm256_loadu_ps(whole ? y + i : tail), twice_inverse));
        const __m256 v = _mm256_mul_ps(u_max, _mm256_sub_ps(one, _mm256_div_ps(two, _mm256_add_ps(e, one))));
        if (whole) _mm256_storeu_ps(u + i, v);
        else {
            _mm256_storeu_ps(tail, v);
            memcpy(u + i, tail, sizeof(float) * (m->N_m - i));
        }
    }
#endif
    for (; i < m->N_m; ++i) u[i] = m->u_max * tanhf(y[i] / m->u_max);
}

/* What the net reads of controls u [N m]: (u - c) / h, within [-1, 1] (u / u_max for one bound). */
static void control_features(const trc_model* m, const float* u, float* scaled) {
    if (m->control_center) {
        for (int i = 0; i < m->N_m; ++i) scaled[i] = (u[i] - m->control_center[i]) / m->control_half[i];
        return;
    }
    for (int i = 0; i < m->N_m; ++i) scaled[i] = u[i] / m->u_max;
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
    float miss[16], checked[16];
    int miss_size = m->kind == 0 ? n : 6;
    int reuse_check = 0;  /* the halting check's x_N is the next recursion's feedback: see solve_group */
    if (n > 16 || Na > 4096) return 2;
    matvec(m->embed_context, D, context_input(m, x0, xt, scaled), scaled, context, 0);
    memset(y, 0, sizeof(float) * Ny);
    memcpy(z, m->z_init, sizeof(float) * D);
    for (int s = 0; s < m->steps; ++s) {
        for (int r = 0; r < m->outer; ++r) {
            if (m->kind == 0) {
                bounded(m, y, u);
                control_features(m, u, scaled);
                if (m->feedback) {
                    if (reuse_check) memcpy(miss, checked, sizeof(float) * n);
                    else if (terminal_state(m, x0, u, miss)) return 1;
                    for (int i = 0; i < n; ++i) miss[i] = (miss[i] - xt[i]) / m->state_scale;
                }
            } else {
                landing_read(m, x0, xt, y, u, scaled, m->feedback ? miss : NULL);
            }
            reuse_check = 0;
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
            memcpy(checked, miss, sizeof(float) * n);
            reuse_check = 1;
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
/* Between supervision steps (halting on tiles): each problem's context, latent z and answer y,
   [B][D], [B][D] and [B][y_size]. */
typedef struct { float *context, *z, *y, *checked; } tile_state;  /* checked [B][n]: x_N of the last check */

enum { FORWARD, PRODUCTS_ONLY };
#define TRC_MAX_THREADS 8
#define TRC_MAX_GROUP 512  /* problems in a group on tiles (group_problems) */
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
    int statuses[TRC_MAX_THREADS];  /* each thread's own, where each takes its own problems (tiles) */
    /* tiles with halting: each problem's state between supervision steps, whether it has halted,
       and the problems still refining (thread 0 lists them before each step) */
    tile_state state;
    unsigned char* halted;
    long long *active, active_count;
} trc_job;

static long solve_floats(const trc_model* m) {  /* solve's work */
    return 6L * m->D + m->y_size + 2L * m->a_size + 3L * m->H + 2L * m->n + 32;
}

static long work_floats(const trc_model* m) {  /* solve's work, then one answer's refinements */
    return solve_floats(m) + (long)m->steps * m->a_size;
}

/* ---- bfloat16 on Intel AMX: groups of problems, the shared net in bfloat16 tiles ------------

   At large batches the products are matrix-matrix products, and an AMX core multiplies bfloat16
   tiles (16 rows of 32 numbers) ten times faster than its float32 vector units. PyTorch reaches
   that rate on the products, but between them every elementwise step (SwiGLU, the residual, the
   norm) streams the whole batch's activations through memory: at batch 10,000 they cost more
   than the products. Here a group of problems (32, or 512 for a net larger than the L2 cache:
   group_problems) goes through the whole recursion at once, its activations never leave the
   caches, and each product's elementwise work runs on its output tiles while they are hot.

   The numbers: the shared net's products, the answer's embedding and the decoder read bfloat16
   inputs and weights and sum in float32, as under PyTorch's bfloat16 autocast; their outputs,
   the SiLU, the residual, the norm and everything else (the context, the error's embedding, the
   answer's reading, the feedback, halting) stay float32, computed by the same functions as
   solve(). A problem's answer does not depend on its group or thread (tested bit for bit).
   The weights come packed by fast/forward.py as AMX's B operands: for each block of 16 output rows and 32 inputs, 16 pairs of inputs by 16 outputs
   ([rows / 16][ceil(cols / 32)][16][32] bfloat16, zero past the last input), gate_up's blocks
   interleaved (gate block j, then up block j) so one output tile pair holds a unit's gate and up.
   Every thread of the job takes its own groups (run_tiles; with halting, step by step). */
#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#define TRC_TILES 1

/* Whether this CPU has AMX and Linux lets this process use it (a process asks once). */
int trc_has_tiles(void) {
    static int allowed = -1;
    if (allowed < 0) allowed = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
    return allowed;
}

static void tiles_begin(void) {  /* eight tiles of 16 rows x 64 bytes: C 0-3, A 4-5, B 6-7 */
    struct { uint8_t palette, start_row, reserved[14]; uint16_t bytes[16]; uint8_t rows[16]; } config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    for (int i = 0; i < 8; ++i) config.bytes[i] = 64, config.rows[i] = 16;
    _tile_loadconfig(&config);
}

/* c[2 i + j] = A's problems 16 i .. 16 i + 15 times B_j (j < blocks), over kb steps of 32 inputs;
   A: bfloat16 [32][stride], B_j: one block of packed weights. */
static inline __attribute__((always_inline)) void tile_product(const uint16_t* A, int stride, const uint16_t* B0, const uint16_t* B1,
                                int blocks, int kb, float c[4][256]) {
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    for (int k = 0; k < kb; ++k) {
        _tile_loadd(4, A + 32 * k, 2 * stride);
        _tile_loadd(5, A + 16 * stride + 32 * k, 2 * stride);
        _tile_loadd(6, B0 + 512 * k, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(2, 5, 6);
        if (blocks == 2) {
            _tile_loadd(7, B1 + 512 * k, 64);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(3, 5, 7);
        }
    }
    _tile_stored(0, c[0], 64); _tile_stored(2, c[2], 64);
    if (blocks == 2) { _tile_stored(1, c[1], 64); _tile_stored(3, c[3], 64); }
}

/* Output blocks j and j + 1 (only j where it is the last of `blocks`) of packed W with kb steps
   of 32 inputs, for the 32 problems of A [32][stride]: c as tile_product leaves it. */
static inline __attribute__((always_inline)) void block_pair(const uint16_t* A, int stride, const uint16_t* W,
                                                             int j, int blocks, int kb, float c[4][256]) {
    const uint16_t* B0 = W + (size_t)j * kb * 512;
    if (j + 1 < blocks) tile_product(A, stride, B0, B0 + (size_t)kb * 512, 2, kb, c);
    else tile_product(A, stride, B0, NULL, 1, kb, c);
}

static inline void store_bf16(uint16_t* to, __m512 v) { _mm256_storeu_si256((__m256i*)to, (__m256i)_mm512_cvtneps_pbh(v)); }

static int padded(int size) { return (size + 31) / 32 * 32; }

/* Problems per group: 32 (two tiles of rows), or 512 where the shared net's tiles outgrow a
   core's L2 cache: each block of weights then serves 512 problems while it sits in L1 before the
   next one streams in from L3 (the large model at batch 10,000: 10,700 answers/s in groups of
   32, 16,800 of 128, 17,600 of 256, 18,300 of 512, 16,100 of 1024; Xeon, 2 MB L2 per core, ad hoc). */
static int group_problems(const trc_model* m) {
    const long net_bytes = 2L * m->layers * (2L * m->H * padded(m->D) + (long)m->D * padded(m->H));
    return net_bytes > 1536 * 1024 ? TRC_MAX_GROUP : 32;
}

/* hidden [P][Hp] = silu(h W_gate^T) * (h W_up^T) in bfloat16, from hb [P][Dp] and gate_up's
   tiles: one item per 16 hidden units (gate block j and up block j) and 32 problems. The SiLU of
   an item costs the vector units longer than its products cost the AMX unit, so the two overlap:
   while the tiles multiply item i + 1, its k-loop carries item i's SiLU, a slice of rows per step
   (one after the other, the medium model's answers took 1.2 times as long). */
static void gate_up_tiles(const uint16_t* gate_up, int P, const uint16_t* hb, int Dp, uint16_t* hidden, int H, int Hp) {
    float c[2][4][256] __attribute__((aligned(64)));
    const int kb = Dp / 32, per_problem = P / 32, items = H / 16 * per_problem;
    int done = 0;  /* rows of the item in c[(i + 1) % 2] whose SiLU is written */
    for (int i = 0; i <= items; ++i) {
        /* item i - 1 sits in c[(i + 1) % 2]; item i goes into the tiles, then c[i % 2] */
        const int j_last = (i - 1) / per_problem, q_last = 32 * ((i - 1) % per_problem);
        float (*last)[256] = c[(i + 1) % 2];
        done = 0;
#define SILU_ROWS(UNTIL)                                                                               \
        for (; i > 0 && done < (UNTIL); ++done) {                                                    \
            const int p = done % 16, half = done / 16;                                                \
            store_bf16(hidden + (size_t)(q_last + done) * Hp + 16 * j_last,                            \
                       silu_times(_mm512_load_ps(last[2 * half] + 16 * p), _mm512_load_ps(last[2 * half + 1] + 16 * p))); \
        }
        if (i < items) {
            const int j = i / per_problem, q = 32 * (i % per_problem);
            const uint16_t *A = hb + (size_t)q * Dp, *B0 = gate_up + (size_t)2 * j * kb * 512, *B1 = B0 + (size_t)kb * 512;
            _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
            for (int k = 0; k < kb; ++k) {
                _tile_loadd(4, A + 32 * k, 2 * Dp);
                _tile_loadd(5, A + 16 * Dp + 32 * k, 2 * Dp);
                _tile_loadd(6, B0 + 512 * k, 64);
                _tile_loadd(7, B1 + 512 * k, 64);
                _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
                SILU_ROWS(32 * (k + 1) / kb)
            }
            SILU_ROWS(32)
            _tile_stored(0, c[i % 2][0], 64); _tile_stored(1, c[i % 2][1], 64);
            _tile_stored(2, c[i % 2][2], 64); _tile_stored(3, c[i % 2][3], 64);
        } else {
            SILU_ROWS(32)
        }
#undef SILU_ROWS
    }
}

/* h [P][D] <- the shared net of h, as net() does for one problem, for P problems (a multiple of
   32). hb [P][padded(D)] and hidden [P][padded(H)]: bfloat16 scratch whose padding columns are zero. */
static void net_tiles(const trc_model* m, int P, float* h, uint16_t* hb, uint16_t* hidden) {
    const int D = m->D, H = m->H, Dp = padded(D), Hp = padded(H);
    float c[4][256] __attribute__((aligned(64)));
    for (int p = 0; p < P; ++p)
        for (int i = 0; i < D; i += 16) store_bf16(hb + p * Dp + i, _mm512_loadu_ps(h + p * D + i));
    for (int l = 0; l < m->layers; ++l) {
        const uint16_t *gate_up = m->gate_up[l], *down = m->down[l];
        gate_up_tiles(gate_up, P, hb, Dp, hidden, H, Hp);
        for (int j = 0; j < D / 16; j += 2) {  /* h += down's output blocks j (and j + 1) */
            const int blocks = j + 1 < D / 16 ? 2 : 1;
            for (int q = 0; q < P; q += 32) {
                block_pair(hidden + (size_t)q * Hp, Hp, down, j, D / 16, Hp / 32, c);
                for (int p = 0; p < 16; ++p)
                    for (int b = 0; b < blocks; ++b) {
                        float *low = h + (size_t)(q + p) * D + 16 * (j + b), *high = low + 16 * D;
                        _mm512_storeu_ps(low, _mm512_add_ps(_mm512_loadu_ps(low), _mm512_load_ps(c[b] + 16 * p)));
                        _mm512_storeu_ps(high, _mm512_add_ps(_mm512_loadu_ps(high), _mm512_load_ps(c[2 + b] + 16 * p)));
                    }
            }
        }
        for (int p = 0; p < P; ++p) {  /* RMSNorm, and the next product's bfloat16 input */
            float* row = h + p * D;
            __m512 sum = _mm512_setzero_ps();
            for (int i = 0; i < D; i += 16) sum = _mm512_fmadd_ps(_mm512_loadu_ps(row + i), _mm512_loadu_ps(row + i), sum);
            const __m512 scale = _mm512_set1_ps(1.0f / sqrtf(_mm512_reduce_add_ps(sum) / D + m->eps));
            for (int i = 0; i < D; i += 16) {
                const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(row + i), scale);
                _mm512_storeu_ps(row + i, v);
                store_bf16(hb + p * Dp + i, v);
            }
        }
    }
}

/* out[p][i] = sum_k A[p][k] W[i][k] for P problems p (a multiple of 32) and i < rows (out +=
   that when accumulate): A bfloat16 [P][Kp], W packed tiles of rows rounded up to 16 (zeros past
   rows), out [P][ldo] float32. The embeddings of the answer and the decoder, whose sizes are the
   problem's, not multiples of 16. */
static void tile_linear(int P, const uint16_t* A, int Kp, const uint16_t* W, int rows, float* out, int ldo,
                        int accumulate) {
    float c[4][256] __attribute__((aligned(64)));
    const int blocks = (rows + 15) / 16, kb = Kp / 32;
    for (int j = 0; j < blocks; j += 2)
    for (int q = 0; q < P; q += 32) {
        const int two = j + 1 < blocks;
        block_pair(A + (size_t)q * Kp, Kp, W, j, blocks, kb, c);
        for (int b = 0; b <= two; ++b) {
            const int first = 16 * (j + b), width = rows - first < 16 ? rows - first : 16;
            const __mmask16 mask = (__mmask16)((1u << width) - 1);
            for (int p = 0; p < 32; ++p) {
                float* to = out + (size_t)(q + p) * ldo + first;
                __m512 v = _mm512_load_ps(c[2 * (p / 16) + b] + 16 * (p % 16));
                if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, to));
                _mm512_mask_storeu_ps(to, mask, v);
            }
        }
    }
}

static void store_bf16_row(uint16_t* to, const float* x, int size) {  /* size floats; the padding stays */
    for (int i = 0; i < size; i += 16) {
        const __mmask16 mask = (__mmask16)(size - i < 16 ? (1u << (size - i)) - 1 : 0xffff);
        _mm256_mask_storeu_epi16(to + i, mask, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, x + i)));
    }
}

static long tile_floats(const trc_model* m) {  /* a group's work: see solve_group (its 14 arrays, 16 floats each to align) */
    return (long)group_problems(m) * (5L * m->D + m->y_size + (padded(m->D) + padded(m->H) + padded(m->a_size)) / 2 + 1)
           + 3L * m->a_size + 16 + 16 * 15 + 16L * group_problems(m);
}

static float* aligned(float* p) { return (float*)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

/* The problems index[0 .. count - 1] (count <= P, P a multiple of 32 up to group_problems), as
   solve() computes each of them but with the shared net in tiles, over supervision steps
   first_step .. last_step - 1; the rows past count are zeros that nobody reads. Outputs as
   trc_forward's (refinements [steps][B][a_size], used and errors [B]). Where the job has a state
   (halting, run_tiles), each problem's context, z, y and last check wait there between calls. */
static int solve_group(const trc_model* m, int P, float* work, trc_job* job, const long long* index, int count,
                       int first_step, int last_step) {
    const int n = m->n, D = m->D, Ny = m->y_size, Na = m->a_size;
    const tile_state* state = job->state.z ? &job->state : NULL;
    /* every array on a cache line of its own: a tile row or a vector that straddles two lines
       loads at half speed (the medium model's answers took 1.7 times as long) */
    float *context = aligned(work), *z = aligned(context + P * D), *question = aligned(z + P * D);
    float *ce = aligned(question + P * D), *h = aligned(ce + P * D), *y = aligned(h + P * D);
    float *u = aligned(y + P * Ny), *scaled = aligned(u + Na), *answer = aligned(scaled + Na + 16);
    int *done = (int*)aligned(answer + Na);
    uint16_t *hb = (uint16_t*)aligned((float*)(done + P)), *hidden = (uint16_t*)aligned((float*)(hb + P * padded(D)));
    uint16_t *features = (uint16_t*)aligned((float*)(hidden + P * padded(m->H)));  /* [P][padded(Na)] */
    float *checked = aligned((float*)(features + P * padded(Na)));  /* [P][16]: x_N of the last halting check */
    float miss[16];
    const int miss_size = m->kind == 0 ? n : 6;
    if (n > 16 || Na > 4096) return 2;
    /* The halting check after a step simulates the answer that the next recursion reads first:
       its x_N serves as that recursion's feedback (a rollout saved per step and problem) */
    int reuse_check = first_step > 0 && state != NULL && m->kind == 0;
    memset(work, 0, sizeof(float) * tile_floats(m));
    for (int p = 0; p < P; ++p) {
        memcpy(z + p * D, m->z_init, sizeof(float) * D);
        done[p] = p >= count;
    }
    for (int p = 0; p < count; ++p) {
        const long long i = index[p];
        if (first_step == 0) {
            matvec(m->embed_context, D, context_input(m, job->x0 + i * n, job->xt + i * n, scaled), scaled,
                   context + p * D, 0);
        } else {
            memcpy(context + p * D, state->context + i * D, sizeof(float) * D);
            memcpy(z + p * D, state->z + i * D, sizeof(float) * D);
            memcpy(y + p * Ny, state->y + i * Ny, sizeof(float) * Ny);
            if (reuse_check) memcpy(checked + 16 * p, state->checked + i * n, sizeof(float) * n);
        }
    }
    int left = count;
    for (int s = first_step; s < last_step && left > 0; ++s) {
        for (int r = 0; r < m->outer; ++r) {
            for (int p = 0; p < count; ++p) {
                const float *x0 = job->x0 + index[p] * n, *xt = job->xt + index[p] * n;
                if (m->kind == 0) {
                    bounded(m, y + p * Ny, u);
                    control_features(m, u, scaled);
                    if (m->feedback) {
                        if (reuse_check) memcpy(miss, checked + 16 * p, sizeof(float) * n);
                        else if (terminal_state(m, x0, u, miss)) return 1;
                        for (int i = 0; i < n; ++i) miss[i] = (miss[i] - xt[i]) / m->state_scale;
                    }
                } else {
                    landing_read(m, x0, xt, y + p * Ny, u, scaled, m->feedback ? miss : NULL);
                }
                store_bf16_row(features + p * padded(Na), scaled, Na);
                float* question_p = question + p * D;
                memcpy(question_p, context + p * D, sizeof(float) * D);
                if (m->feedback) matvec(m->embed_error, D, miss_size, miss, question_p, 1);
            }
            reuse_check = 0;
            tile_linear(P, features, padded(Na), (const uint16_t*)m->embed_controls, D, ce, D, 0);
            for (int i = 0; i < P * D; ++i) question[i] += ce[i];
            for (int c = 0; c < m->inner; ++c) {
                for (int i = 0; i < P * D; ++i) z[i] += question[i];
                net_tiles(m, P, z, hb, hidden);
            }
            for (int i = 0; i < P * D; ++i) h[i] = ce[i] + z[i];
            net_tiles(m, P, h, hb, hidden);
            tile_linear(P, hb, padded(D), (const uint16_t*)m->decode, Ny, y, Ny, 1);  /* hb: net_tiles' bfloat16 h */
        }
        for (int p = 0; p < count; ++p) {
            if (done[p]) continue;
            const long long i = index[p];
            const float *x0 = job->x0 + i * n, *xt = job->xt + i * n;
            if (m->kind == 0) bounded(m, y + p * Ny, answer);
            else landing_read(m, x0, xt, y + p * Ny, answer, scaled, NULL);
            for (int later = s; later < m->steps; ++later)  /* later steps overwrite it unless it halts */
                memcpy(job->refinements + ((long)later * job->B + i) * Na, answer, sizeof(float) * Na);
            job->used[i] = s + 1;
            if (job->tolerance > 0.0f && m->kind == 0) {
                if (terminal_state(m, x0, answer, miss)) return 1;
                memcpy(checked + 16 * p, miss, sizeof(float) * n);
                float sq = 0.0f;
                for (int k = 0; k < n; ++k) sq += (miss[k] - xt[k]) * (miss[k] - xt[k]);
                job->errors[i] = sqrtf(sq);
                if (job->errors[i] < job->tolerance) {
                    done[p] = 1, --left;
                    if (state) job->halted[i] = 1;
                }
            }
        }
        reuse_check = job->tolerance > 0.0f && m->kind == 0;
    }
    if (state)
        for (int p = 0; p < count; ++p) {
            if (done[p]) continue;
            const long long i = index[p];
            memcpy(state->context + i * D, context + p * D, sizeof(float) * D);
            memcpy(state->z + i * D, z + p * D, sizeof(float) * D);
            memcpy(state->y + i * Ny, y + p * Ny, sizeof(float) * Ny);
            if (m->kind == 0) memcpy(state->checked + i * n, checked + 16 * p, sizeof(float) * n);
        }
    return 0;
}

/* The product of P problems' A [P][Kp] with a packed W of `rows` outputs, each output tile
   stored and dropped: a product and nothing else. */
static void product_alone(int P, const uint16_t* A, int Kp, const uint16_t* W, int rows) {
    float c[4][256] __attribute__((aligned(64)));
    const int blocks = (rows + 15) / 16;
    for (int j = 0; j < blocks; j += 2)
        for (int q = 0; q < P; q += 32) block_pair(A + (size_t)q * Kp, Kp, W, j, blocks, Kp / 32, c);
}

/* The inputs of tile_products_only for groups of P problems: bfloat16 numbers of size 0.5 to 2
   with scattered signs and mantissas, not zeros, which the AMX unit multiplies faster (the medium
   model's products took 1.2 to 1.3 times as long on such numbers as on zeros; Xeon, ad hoc).
   Written once per job, outside the groups' timed products. */
static void scattered_inputs(const trc_model* m, float* work, int P) {
    uint16_t* hb = (uint16_t*)aligned(work);
    for (size_t i = 0; i < (size_t)P * (padded(m->D) + padded(m->H) + padded(m->a_size)); ++i) {
        uint32_t x = (uint32_t)i * 2654435761u;  /* Knuth's multiplicative hash */
        x ^= x >> 15;
        hb[i] = (uint16_t)((x & 0x8000) | 0x3f00 | (x >> 16 & 0xff));  /* sign, exponent 126 or 127, mantissa */
    }
}

/* The tiles' floor (benchmarks/performance.py): a group's products in solve_group's order and
   shapes on scattered_inputs, and nothing else (per supervision step and outer cycle: the
   answer's embedding, the shared net inner + 1 times, the decoder). */
static void tile_products_only(const trc_model* m, float* work, int P) {
    const int D = m->D, Dp = padded(D), Hp = padded(m->H), Nap = padded(m->a_size);
    uint16_t *hb = (uint16_t*)aligned(work), *hidden = hb + (size_t)P * Dp, *features = hidden + (size_t)P * Hp;
    for (int s = 0; s < m->steps; ++s)
        for (int r = 0; r < m->outer; ++r) {
            product_alone(P, features, Nap, (const uint16_t*)m->embed_controls, D);
            for (int c = 0; c <= m->inner; ++c)
                for (int l = 0; l < m->layers; ++l) {
                    product_alone(P, hb, Dp, m->gate_up[l], 2 * m->H);
                    product_alone(P, hidden, Hp, m->down[l], D);
                }
            product_alone(P, hb, Dp, (const uint16_t*)m->decode, m->y_size);
        }
}

/* Groups of P problems for `count` problems on T threads: the model's group size, or smaller
   where there are fewer problems per thread (a large model's single problem in a group of 512
   took 60 ms). */
static int group_for(const trc_model* m, long long count, int T) {
    const long long share = (count + T - 1) / T;
    const int P = group_problems(m);
    return share >= P ? P : share < 32 ? 32 : (int)((share + 31) / 32 * 32);
}

/* This thread's groups of a job: groups tid, tid + T, ... Halting (tolerance > 0) goes step by
   step: after each supervision step the problems that reached the target leave the batch, the
   others are regrouped, so a group never carries finished problems (their state waits in
   job->state between steps). */
static int run_tiles(trc_job* job, float* work, const team* t) {
    const int tid = t->tid, T = t->T;
    const trc_model* m = job->m;
    long long* index = (long long*)(work + tile_floats(m));
    int status = trc_has_tiles() && m->D % 16 == 0 && m->H % 16 == 0 ? 0 : 2;
    if (!status) tiles_begin();
    if (job->what == PRODUCTS_ONLY || job->tolerance <= 0.0f) {
        const int P = group_for(m, job->B, T);
        if (job->what == PRODUCTS_ONLY && !status) scattered_inputs(m, work, P);
        for (long long g = tid; g * P < job->B && !status; g += T) {
            const long long first = g * P;
            const int count = job->B - first < P ? (int)(job->B - first) : P;
            if (job->what == PRODUCTS_ONLY) {
                tile_products_only(m, work, P);
                continue;
            }
            for (int p = 0; p < count; ++p) index[p] = first + p;
            status = solve_group(m, P, work, job, index, count, 0, m->steps);
        }
    } else {
        for (int s = 0; s < m->steps; ++s) {  /* every thread meets the others at each step, even after a failure */
            if (tid == 0) {
                long long active = 0;
                for (long long i = 0; i < job->B; ++i)
                    if (!job->halted[i]) job->active[active++] = i;
                job->active_count = active;
            }
            team_sync(t);
            const long long active = job->active_count;
            const int P = group_for(m, active, T);
            for (long long g = tid; g * P < active && !status; g += T) {
                const int count = active - g * P < P ? (int)(active - g * P) : P;
                status = solve_group(m, P, work, job, job->active + g * P, count, s, s + 1);
            }
            team_sync(t);
        }
    }
    if (trc_has_tiles()) _tile_release();
    return status;
}
#else
int trc_has_tiles(void) { return 0; }
static long tile_floats(const trc_model* m) { return solve_floats(m); }  /* never asked for: no tiles here */
#endif

/* One member's share of a job: every thread runs all of it, thread 0 keeps the results. */
static void run_job(trc_job* job, int tid) {
    const trc_model* m = job->m;
    const team* t = &job->teams[tid];
    float* work = job->work[tid];
#ifdef TRC_TILES
    if (m->tiles) {
        job->statuses[tid] = run_tiles(job, work, t);
        return;
    }
#endif
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
    if (m->split) {  /* this thread's own share of the problems, alone: its own team of one, its
                        outputs written straight to their rows (the same numbers as one thread) */
        float* own = one + (long)m->steps * m->a_size;
        const team alone = {0, 1, own, own + 2L * m->H, NULL};
        const long long first = job->B * tid / t->T, last = job->B * (tid + 1) / t->T;
        for (long long b = first; b < last && !status; ++b) {
            status = solve(m, &alone, job->x0 + b * m->n, job->xt + b * m->n, one, work, job->tolerance,
                           job->used + b, job->errors + b);
            for (int s = 0; s < m->steps; ++s)
                memcpy(job->refinements + ((long)s * job->B + b) * m->a_size, one + (long)s * m->a_size,
                       sizeof(float) * m->a_size);
        }
        job->statuses[tid] = status;
        return;
    }
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
    if (m->tiles && !trc_has_tiles()) return 2;
    int T = m->threads < 1 ? 1 : m->threads > TRC_MAX_THREADS ? TRC_MAX_THREADS : m->threads;
    const int split = m->split && !m->tiles && job->what == FORWARD;
    if (split && T > job->B) T = (int)job->B;
    if (!trc_pack_blocks() && !split) T = 1;
#ifdef TRC_HAS_THREADS
    int owner = T > 1 && pthread_mutex_trylock(&pool.busy) == 0;
    if (owner) T = start_workers(T);
    else T = 1;
#else
    T = 1;
#endif
    float* shared = malloc(sizeof(float) * (2L * m->H + m->D));
    const int halting_tiles = m->tiles && job->what == FORWARD && job->tolerance > 0.0f;
    if (halting_tiles) {  /* see run_tiles */
        job->state = (tile_state){malloc(sizeof(float) * job->B * m->D), malloc(sizeof(float) * job->B * m->D),
                                  malloc(sizeof(float) * job->B * m->y_size), malloc(sizeof(float) * job->B * m->n)};
        job->halted = calloc(job->B, 1);
        job->active = malloc(sizeof(long long) * job->B);
    }
    /* One barrier for every job, never reset: a worker still spinning on the last job's final
       barrier must see its generation move on, not a fresh zero at the same address (a barrier
       on this stack frame, remade by the next call, left such a worker spinning forever). Only
       the pool's owner (busy) uses it. */
    static trc_barrier barrier;
    int status = shared && (!halting_tiles || (job->state.context && job->state.z && job->state.y
                                                && job->state.checked && job->halted && job->active)) ? 0 : 3;
    for (int tid = 0; tid < T; ++tid) {
        /* tiles: a group's work, then room for its problems' indices */
        job->work[tid] = status ? NULL : malloc(sizeof(float) * (m->tiles ? tile_floats(m) + 2L * TRC_MAX_GROUP
                                                                              : work_floats(m) + (split ? 2L * m->H + m->D : 0)));
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
        for (int tid = 0; tid < T; ++tid)
            if (job->statuses[tid]) status = job->statuses[tid];
    }
#ifdef TRC_HAS_THREADS
    if (owner) pthread_mutex_unlock(&pool.busy);
#endif
    for (int tid = 0; tid < T; ++tid) free(job->work[tid]);
    free(shared);
    free(job->state.context), free(job->state.z), free(job->state.y), free(job->state.checked);
    free(job->halted), free(job->active);
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
