/* cblas_sgemm in front of OpenBLAS: decode-sized products read each weight once.
 *
 * A decode step multiplies a few tokens' hidden states (M = 1..8 rows, one per
 * sequence in the batch) by every weight matrix. mlx's CPU backend calls
 * cblas_sgemm for every matmul; OpenBLAS before 0.3.27 (Debian 12 ships 0.3.21)
 * packs the whole weight matrix into panels on every such call, so a (M, K) x
 * (K, N) product with small M reads and writes the weights about three times,
 * and one sgemv per row reads them M times. Decoding is bound by reading the
 * weights, so both waste most of the step.
 *
 * Here a product with up to ROWS_MAX rows whose weight is stored (N, K) row-major
 * (what x @ W.T is: every Linear layer and a tied LM head) is computed weight-
 * stationary: each weight row is loaded once and multiplied into every input
 * row while it is in registers. The output columns are split between a small
 * pool of persistent threads (spawning threads per call would cost more than a
 * layer's product), so the weights stream through every core's share of the
 * memory bandwidth. Products of other shapes with one row or one column go to
 * OpenBLAS's sgemv; everything else to its own sgemm unchanged.
 *
 * Loaded (RTLD_GLOBAL) before OpenBLAS and mlx, so mlx's cblas_sgemm binds
 * here; steering/backend.py hands it OpenBLAS's sgemm and sgemv.
 */
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define SHIM_AVX2 1
#endif

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int,
                         float, float *, int);
typedef void (*sgemv_fn)(int, int, int, int, float, const float *, int, const float *, int, float,
                         float *, int);

enum { ROW_MAJOR = 101, COL_MAJOR = 102, NO_TRANS = 111, TRANS = 112 };
enum { ROWS_MAX = 8 };            /* the kernel keeps ROWS_MAX accumulators per weight row in registers */
enum { THREADS_MAX = 16 };
enum { PARALLEL_MIN = 1 << 16 }; /* N*K below this: one thread (a wake-up costs more than the product) */
/* A worker spins this long (~10 us) for the next product before it sleeps. Longer spins kept the
 * next product's wake-up cheaper but took the second core from the server's event loop and its
 * clients: on 2 cores, 4 streamed clients ran at 30 tok/s with 20000 rounds, 35-37 with 0-300. */
enum { SPIN_ROUNDS = 200 };

static sgemm_fn real_sgemm;
static sgemv_fn real_sgemv;
static long routed;
static int enabled = 1;
static int row_limit = 1; /* products with up to this many rows avoid sgemm (backend.py sets it) */

void mlx_interp_gemv_shim_init(void *gemm, void *gemv) {
    real_sgemm = (sgemm_fn)gemm;
    real_sgemv = (sgemv_fn)gemv;
}

long mlx_interp_gemv_shim_routed(void) { return routed; }

/* Benchmarks switch routing off and on inside one process, to pair steps with and without it. */
void mlx_interp_gemv_shim_enable(int on) { enabled = on; }

void mlx_interp_gemv_shim_rows(int rows) { row_limit = rows < 1 ? 1 : rows; }

static void zero(float *y, int n, int inc) {
    for (int i = 0; i < n; i++) y[(size_t)i * inc] = 0.0f;
}

/* ---- the weight-stationary kernel: C[m, n] = alpha * sum_k A[m, k] W[n, k] + beta * C[m, n] ---- */

typedef struct {
    int M, N, K, lda, ldw, ldc;
    float alpha, beta;
    const float *A, *W;
    float *C;
} product;

static inline void store(const product *p, int m, int n, float dot) {
    float *c = p->C + (size_t)m * p->ldc + n;
    *c = p->beta == 0.0f ? p->alpha * dot : p->alpha * dot + p->beta * *c; /* beta 0: C is never read */
}

#ifdef SHIM_AVX2
static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/* Columns [n0, n1) for a compile-time row count R, P weight rows at a time: R * P independent
 * accumulators hide the FMA latency (one chain per row would wait on itself) and stay within the 16
 * vector registers with the loads. */
#define DEFINE_KERNEL(R, P)                                                                             \
    static void kernel_##R(const product *p, int n0, int n1) {                                          \
        const int K = p->K, K8 = K & ~7;                                                                \
        int n = n0;                                                                                     \
        for (; n + (P) <= n1; n += (P)) {                                                               \
            const float *w = p->W + (size_t)n * p->ldw;                                                 \
            __m256 acc[P][R];                                                                           \
            _Pragma("GCC unroll 8") for (int j = 0; j < (P); j++)                                      \
            _Pragma("GCC unroll 8") for (int m = 0; m < (R); m++) acc[j][m] = _mm256_setzero_ps();     \
            for (int k = 0; k < K8; k += 8) {                                                           \
                __m256 x[P];                                                                            \
                _Pragma("GCC unroll 8") for (int j = 0; j < (P); j++)                                  \
                    x[j] = _mm256_loadu_ps(w + (size_t)j * p->ldw + k);                                  \
                _Pragma("GCC unroll 8") for (int m = 0; m < (R); m++) {                                \
                    __m256 a = _mm256_loadu_ps(p->A + (size_t)m * p->lda + k);                          \
                    _Pragma("GCC unroll 8") for (int j = 0; j < (P); j++)                              \
                        acc[j][m] = _mm256_fmadd_ps(a, x[j], acc[j][m]);                                \
                }                                                                                       \
            }                                                                                           \
            for (int j = 0; j < (P); j++)                                                               \
                for (int m = 0; m < (R); m++) {                                                         \
                    const float *a = p->A + (size_t)m * p->lda, *wj = w + (size_t)j * p->ldw;           \
                    float d = hsum(acc[j][m]);                                                          \
                    for (int k = K8; k < K; k++) d += a[k] * wj[k];                                     \
                    store(p, m, n + j, d);                                                              \
                }                                                                                       \
        }                                                                                               \
        for (; n < n1; n++) { /* the last few columns, one weight row each */                          \
            const float *w = p->W + (size_t)n * p->ldw;                                                 \
            for (int m = 0; m < (R); m++) {                                                             \
                const float *a = p->A + (size_t)m * p->lda;                                             \
                __m256 v = _mm256_setzero_ps();                                                         \
                for (int k = 0; k < K8; k += 8)                                                         \
                    v = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(w + k), v);             \
                float d = hsum(v);                                                                      \
                for (int k = K8; k < K; k++) d += a[k] * w[k];                                          \
                store(p, m, n, d);                                                                      \
            }                                                                                           \
        }                                                                                               \
    }
#else
/* Without AVX2 + FMA: plain loops the compiler vectorizes as it can (arm64 Linux, old x86). */
#define DEFINE_KERNEL(R, P)                                                                             \
    static void kernel_##R(const product *p, int n0, int n1) {                                          \
        for (int n = n0; n < n1; n++) {                                                                 \
            const float *w = p->W + (size_t)n * p->ldw;                                                 \
            float acc[R] = {0};                                                                         \
            for (int k = 0; k < p->K; k++)                                                              \
                for (int m = 0; m < (R); m++) acc[m] += p->A[(size_t)m * p->lda + k] * w[k];            \
            for (int m = 0; m < (R); m++) store(p, m, n, acc[m]);                                       \
        }                                                                                               \
    }
#endif

DEFINE_KERNEL(1, 4) /* P measured on a 2-core EPYC: more weight rows per pass helped one and two rows, */
DEFINE_KERNEL(2, 2) /* and slowed four (the accumulators no longer stayed in registers) */
DEFINE_KERNEL(3, 1)
DEFINE_KERNEL(4, 1)
DEFINE_KERNEL(5, 1)
DEFINE_KERNEL(6, 1)
DEFINE_KERNEL(7, 1)
DEFINE_KERNEL(8, 1)

static void (*const kernels[ROWS_MAX + 1])(const product *, int, int) = {
    0, kernel_1, kernel_2, kernel_3, kernel_4, kernel_5, kernel_6, kernel_7, kernel_8,
};

/* ---- a pool of persistent workers sharing a product's columns in chunks ----
 *
 * The columns are cut into chunks that every thread (the caller too) claims one at a time, so a
 * worker the OS has descheduled (a loaded machine, the server's event loop on the other core)
 * delays the product by at most the chunk it holds, not by a fixed share. A claim is a
 * compare-and-swap on (generation << 32 | next chunk): a worker that wakes after its product is
 * over finds another generation and claims nothing, and the caller's product (on its stack) stays
 * alive until every claimed chunk is reported done. */

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int started, threads;
    product job;                 /* the product being computed, valid while claims succeed */
    int chunk, chunks;           /* columns per chunk, chunks in the job */
    unsigned long claim;         /* generation << 32 | next chunk */
    int done;                    /* chunks finished */
    long born;                   /* the generation when the workers were started */
    char busy;                   /* a parallel product is in flight (taken with test-and-set) */
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER, .threads = 1};

static unsigned long generation_of(unsigned long claim) { return claim >> 32; }

/* Claims and computes chunks of generation g until none is left. */
static void work_on(unsigned long g) {
    unsigned long v = __atomic_load_n(&pool.claim, __ATOMIC_ACQUIRE);
    while (generation_of(v) == g && (int)(v & 0xffffffffUL) < pool.chunks) {
        if (!__atomic_compare_exchange_n(&pool.claim, &v, v + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            continue; /* v now holds the current value: try again */
        int c = (int)(v & 0xffffffffUL);
        int n0 = c * pool.chunk, n1 = n0 + pool.chunk < pool.job.N ? n0 + pool.chunk : pool.job.N;
        kernels[pool.job.M](&pool.job, n0, n1);
        __atomic_add_fetch(&pool.done, 1, __ATOMIC_ACQ_REL);
        v = __atomic_load_n(&pool.claim, __ATOMIC_ACQUIRE);
    }
}

static void *worker(void *arg) {
    (void)arg;
    unsigned long seen = (unsigned long)pool.born; /* the first job may be posted before this runs */
    for (;;) {
        int spins = 0;
        while (generation_of(__atomic_load_n(&pool.claim, __ATOMIC_ACQUIRE)) == seen) {
            if (++spins < SPIN_ROUNDS) {
#ifdef SHIM_AVX2
                _mm_pause();
#endif
                continue;
            }
            pthread_mutex_lock(&pool.lock);
            while (generation_of(pool.claim) == seen) pthread_cond_wait(&pool.wake, &pool.lock);
            pthread_mutex_unlock(&pool.lock);
        }
        seen = generation_of(__atomic_load_n(&pool.claim, __ATOMIC_ACQUIRE));
        work_on(seen);
    }
    return NULL;
}

static int pool_threads(void) {
    const char *env = getenv("MLX_INTERP_GEMV_THREADS");
    long n = env ? strtol(env, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > THREADS_MAX ? THREADS_MAX : (int)n;
}

/* A forked child has the parent's memory but none of its threads: start afresh there. */
static void forget_pool(void) {
    pool.started = 0;
    pool.threads = 1;
    pool.busy = 0;
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
}

static void start_pool(void) {
    pool.started = 1;
    pool.threads = 1;
    pool.born = (long)generation_of(pool.claim);
    int want = pool_threads();
    pthread_atfork(NULL, NULL, forget_pool);
    /* The workers are the library's, not the program's: they start with the asynchronous signals
     * blocked (a new thread inherits the creator's mask), so a SIGINT or SIGTERM meant for the server
     * is taken by one of its own threads. Faults raised by the worker itself stay deliverable, so a
     * crash there still reaches Python's faulthandler. */
    sigset_t all, before;
    sigfillset(&all);
    int faults[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS};
    for (unsigned i = 0; i < sizeof faults / sizeof faults[0]; i++) sigdelset(&all, faults[i]);
    pthread_sigmask(SIG_SETMASK, &all, &before);
    for (int t = 1; t < want; t++) {
        pthread_t id;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&id, &attr, worker, NULL) == 0) pool.threads++;
        pthread_attr_destroy(&attr);
    }
    pthread_sigmask(SIG_SETMASK, &before, NULL);
}

/* mlx's CPU stream runs its ops in order on one thread; a product from a second stream that arrives
 * while the pool is busy is computed by its own thread alone rather than waiting. */
static void multiply(const product *p) {
    if ((long)p->N * p->K < PARALLEL_MIN || __atomic_test_and_set(&pool.busy, __ATOMIC_ACQUIRE)) {
        kernels[p->M](p, 0, p->N);
        return;
    }
    if (!pool.started) start_pool();
    if (pool.threads == 1) {
        kernels[p->M](p, 0, p->N);
        __atomic_clear(&pool.busy, __ATOMIC_RELEASE);
        return;
    }
    pool.job = *p;
    pool.chunk = ((p->N + 8 * pool.threads - 1) / (8 * pool.threads) + 15) & ~15; /* whole cache lines of C */
    pool.chunks = (p->N + pool.chunk - 1) / pool.chunk;
    __atomic_store_n(&pool.done, 0, __ATOMIC_RELAXED);
    unsigned long g = generation_of(pool.claim) + 1;
    pthread_mutex_lock(&pool.lock);
    __atomic_store_n(&pool.claim, g << 32, __ATOMIC_RELEASE); /* publishes the job above */
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    work_on(g);
    while (__atomic_load_n(&pool.done, __ATOMIC_ACQUIRE) < pool.chunks) {
#ifdef SHIM_AVX2
        _mm_pause();
#endif
    }
    /* Seal the generation before the next product rewrites the job: the last claim left the word at
     * (g, chunks), and a worker still holding that value could otherwise win its compare-and-swap
     * against a larger next `chunks` and compute a chunk of a half-written job (found in review:
     * 1 wrong product in ~55k back to back, beta applied twice). 0x7fffffff stays above any chunk
     * count as an int. */
    __atomic_store_n(&pool.claim, (g << 32) | 0x7fffffffUL, __ATOMIC_RELEASE);
    __atomic_clear(&pool.busy, __ATOMIC_RELEASE);
}

/* The number of threads the pool computes with (1 until the first parallel product). */
int mlx_interp_gemv_shim_threads(void) { return pool.threads; }

void cblas_sgemm(int order, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc) {
    if (order == COL_MAJOR) { /* C^T = B^T A^T, row-major */
        int t = ta; ta = tb; tb = t;
        t = M; M = N; N = t;
        const float *p = A; A = B; B = p;
        t = lda; lda = ldb; ldb = t;
    }
    if (enabled && K > 0 && M > 0 && M <= row_limit && M <= ROWS_MAX && N > 1 && ta == NO_TRANS &&
        tb == TRANS) {
        /* x (M,K) @ W.T with W (N,K) row-major: the decode step's products */
        routed++;
        product p = {M, N, K, lda, ldb, ldc, alpha, beta, A, B, C};
        multiply(&p);
        return;
    }
    if (enabled && K > 0 && M > 1 && M <= row_limit && N > 1) {
        routed++;
        for (int r = 0; r < M; r++) { /* one sgemv per row: the other transposes */
            const float *a = ta == NO_TRANS ? A + (size_t)r * lda : A + r; /* row r of op(A) */
            int inca = ta == NO_TRANS ? 1 : lda;
            float *c = C + (size_t)r * ldc;
            if (beta == 0.0f) zero(c, N, 1);
            if (tb == NO_TRANS)
                real_sgemv(ROW_MAJOR, TRANS, K, N, alpha, B, ldb, a, inca, beta, c, 1);
            else
                real_sgemv(ROW_MAJOR, NO_TRANS, N, K, alpha, B, ldb, a, inca, beta, c, 1);
        }
        return;
    }
    if (enabled && K > 0 && (M == 1 || N == 1) && M > 0 && N > 0) {
        routed++;
        if (beta == 0.0f) zero(C, M == 1 ? N : M, M == 1 ? 1 : ldc); /* sgemm never reads C then */
        if (M == 1) {
            /* c (1,N) = a (1,K) op(B) (K,N):  c^T = op(B)^T a^T */
            int inca = ta == NO_TRANS ? 1 : lda;
            if (tb == NO_TRANS)
                real_sgemv(ROW_MAJOR, TRANS, K, N, alpha, B, ldb, A, inca, beta, C, 1);
            else
                real_sgemv(ROW_MAJOR, NO_TRANS, N, K, alpha, B, ldb, A, inca, beta, C, 1);
        } else {
            /* c (M,1) = op(A) (M,K) b (K,1) */
            int incb = tb == NO_TRANS ? ldb : 1;
            if (ta == NO_TRANS)
                real_sgemv(ROW_MAJOR, NO_TRANS, M, K, alpha, A, lda, B, incb, beta, C, ldc);
            else
                real_sgemv(ROW_MAJOR, TRANS, K, M, alpha, A, lda, B, incb, beta, C, ldc);
        }
        return;
    }
    real_sgemm(ROW_MAJOR, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
