#include "kernels/cpu/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <mutex>

#include "kernels/cpu/parallel.h"

namespace loom::kernels::cpu {
namespace {

// Rows per chunk: one chunk per thread (each chunk packs the shared operand once), but at least
// 32 rows so that small products stay on one thread.
int64_t RowGrain(int64_t rows) { return std::max<int64_t>(32, (rows + NumThreads() - 1) / NumThreads()); }

}  // namespace

void PinBlasToOneThread() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

void Gemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  PinBlasToOneThread();
  if (m <= 0 || n <= 0) return;
  const CBLAS_TRANSPOSE ta = transpose_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = transpose_b ? CblasTrans : CblasNoTrans;
  if (m < 64 && n >= 256 && NumThreads() > 1) {
    // Few rows (decoding a handful of sequences): split the columns of C instead. Column j of
    // op(B) starts at b + j*ldb (transposed) or b + j.
    const int64_t grain = std::max<int64_t>(64, (n + NumThreads() - 1) / NumThreads());
    ParallelFor(n, grain, [&](int64_t c0, int64_t c1) {
      cblas_sgemm(CblasRowMajor, ta, tb, static_cast<int>(m), static_cast<int>(c1 - c0), static_cast<int>(k),
                  alpha, a, static_cast<int>(lda), transpose_b ? b + c0 * ldb : b + c0, static_cast<int>(ldb),
                  beta, c + c0, static_cast<int>(ldc));
    });
    return;
  }
  // Split the rows of C. Row i of op(A) starts at a + i*lda (no transpose) or a + i (transpose).
  ParallelFor(m, RowGrain(m), [&](int64_t r0, int64_t r1) {
    const float* a_rows = transpose_a ? a + r0 : a + r0 * lda;
    cblas_sgemm(CblasRowMajor, ta, tb, static_cast<int>(r1 - r0), static_cast<int>(n), static_cast<int>(k),
                alpha, a_rows, static_cast<int>(lda), b, static_cast<int>(ldb), beta, c + r0 * ldc,
                static_cast<int>(ldc));
  });
}

void LinearForward(const float* x, const float* w, float* y, int64_t rows, int64_t in, int64_t out) {
  Gemm(false, true, rows, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
}

void LinearBackward(const float* dy, const float* x, const float* w, float* dx, float* dw, int64_t rows,
                    int64_t in, int64_t out, bool accumulate_dx) {
  if (dx != nullptr)
    Gemm(false, false, rows, in, out, 1.0f, dy, out, w, in, accumulate_dx ? 1.0f : 0.0f, dx, in);
  // dw[out, in] += dyᵀ[out, rows] · x[rows, in]
  Gemm(true, false, out, in, rows, 1.0f, dy, out, x, in, 1.0f, dw, in);
}

}  // namespace loom::kernels::cpu
