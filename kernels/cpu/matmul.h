// Matrix products through OpenBLAS (cblas_sgemm), row-major, with Loom owning the threads:
// OpenBLAS runs single-threaded and Loom splits the output rows across its pool
// (parallel.h), so GEMMs never fight Loom's other kernels for the cores. For a fixed thread
// count the results are bitwise reproducible.
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

// C[m,n] = alpha * op(A) · op(B) + beta * C, with op(A) [m,k] and op(B) [k,n]. lda/ldb/ldc are
// the row strides of A, B, C as stored.
void Gemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// A linear layer with PyTorch's weight layout [out, in]: y[rows, out] = x[rows, in] · wᵀ.
void LinearForward(const float* x, const float* w, float* y, int64_t rows, int64_t in, int64_t out);

// Its backward: dx = dy · w (added to dx when accumulate_dx, else written; skipped when dx is
// null), dw += dyᵀ · x.
void LinearBackward(const float* dy, const float* x, const float* w, float* dx, float* dw, int64_t rows,
                    int64_t in, int64_t out, bool accumulate_dx);

// Makes OpenBLAS single-threaded (called once by the engine; idempotent).
void PinBlasToOneThread();

}  // namespace loom::kernels::cpu
