/* cblas_sgemm in front of OpenBLAS: a product with one row or one column goes to sgemv.
 *
 * A decode step multiplies one token's hidden state (M = 1) by every weight
 * matrix. mlx's CPU backend calls cblas_sgemm for every matmul; OpenBLAS
 * before 0.3.27 (Debian 12 ships 0.3.21) packs the whole weight matrix into
 * panels on every such call, so a (1, K) x (K, N) product reads and writes the
 * weights about three times. sgemv of the same library reads them once.
 * Everything else goes to OpenBLAS's own sgemm unchanged.
 *
 * Loaded (RTLD_GLOBAL) before OpenBLAS and mlx, so mlx's cblas_sgemm binds
 * here; steering/backend.py hands it OpenBLAS's sgemm and sgemv.
 */
#include <stddef.h>

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int,
                         float, float *, int);
typedef void (*sgemv_fn)(int, int, int, int, float, const float *, int, const float *, int, float,
                         float *, int);

enum { ROW_MAJOR = 101, COL_MAJOR = 102, NO_TRANS = 111, TRANS = 112 };

static sgemm_fn real_sgemm;
static sgemv_fn real_sgemv;
static long routed;
static int enabled = 1;
static int row_limit = 1; /* products with up to this many rows go to sgemv, one call per row (backend.py sets it) */

void mlx_interp_gemv_shim_init(void *gemm, void *gemv) {
    real_sgemm = (sgemm_fn)gemm;
    real_sgemv = (sgemv_fn)gemv;
}

long mlx_interp_gemv_shim_routed(void) { return routed; }

/* Benchmarks switch routing off and on inside one process, to pair steps with and without it. */
void mlx_interp_gemv_shim_enable(int on) { enabled = on; }

/* A few rows (a small decode batch) as one sgemv per row: each reads the weights once more, which
 * for small matrices stays in cache and for large ones still beats sgemm's packing up to a few rows. */
void mlx_interp_gemv_shim_rows(int rows) { row_limit = rows < 1 ? 1 : rows; }

static void zero(float *y, int n, int inc) {
    for (int i = 0; i < n; i++) y[(size_t)i * inc] = 0.0f;
}

void cblas_sgemm(int order, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc) {
    if (order == COL_MAJOR) { /* C^T = B^T A^T, row-major */
        int t = ta; ta = tb; tb = t;
        t = M; M = N; N = t;
        const float *p = A; A = B; B = p;
        t = lda; lda = ldb; ldb = t;
    }
    if (enabled && K > 0 && M > 1 && M <= row_limit && N > 1) {
        routed++;
        for (int r = 0; r < M; r++) {
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
