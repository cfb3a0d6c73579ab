#include "kernels/cpu/attention.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/matmul.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/vec_math.h"

namespace loom::kernels::cpu {
namespace {

constexpr int64_t kBlock = 64;  // query rows per block

// First visible key of each query of one sequence: max(segment start, i - window + 1). Both
// terms are non-decreasing in i, so a block of queries needs keys [first[i0], i1).
std::vector<int64_t> FirstKeys(const AttentionShape& s, const int32_t* segments_of_row) {
  std::vector<int64_t> first(static_cast<size_t>(s.seq_len));
  int64_t segment_start = 0;
  for (int64_t i = 0; i < s.seq_len; ++i) {
    if (segments_of_row != nullptr && i > 0 && segments_of_row[i] != segments_of_row[i - 1])
      segment_start = i;
    first[i] = std::max(segment_start, s.window > 0 ? i - s.window + 1 : int64_t{0});
  }
  return first;
}

// C[m,n] = A[m,k]·op(B) + beta·C with explicit strides; single-threaded (inside a parallel task).
void SmallGemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, const float* a,
               int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans, transpose_b ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), 1.0f, a, static_cast<int>(lda),
              b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

struct Strides {
  int64_t q_row, kv_row;  // floats between consecutive tokens in q/out and in k/v
};

}  // namespace

void AttentionForward(const AttentionShape& s, const float* q, const float* k, const float* v,
                      const int32_t* segment_ids, float* out, float* lse) {
  PinBlasToOneThread();
  const int64_t T = s.seq_len, hd = s.head_dim;
  const Strides st{int64_t{s.heads} * hd, int64_t{s.kv_heads} * hd};
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  // One task per (sequence, query head).
  ParallelFor(s.batch * s.heads, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> scores(static_cast<size_t>(kBlock * T));
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t b = task / s.heads, h = task % s.heads, kvh = h / (s.heads / s.kv_heads);
      const std::vector<int64_t> first = FirstKeys(s, segment_ids ? segment_ids + b * T : nullptr);
      const float* qb = q + b * T * st.q_row + h * hd;
      const float* kb = k + b * T * st.kv_row + kvh * hd;
      const float* vb = v + b * T * st.kv_row + kvh * hd;
      float* ob = out + b * T * st.q_row + h * hd;
      float* lse_b = lse + (b * s.heads + h) * T;
      for (int64_t i0 = 0; i0 < T; i0 += kBlock) {
        const int64_t i1 = std::min(T, i0 + kBlock), m = i1 - i0, k0 = first[i0], n = i1 - k0;
        SmallGemm(false, true, m, n, hd, qb + i0 * st.q_row, st.q_row, kb + k0 * st.kv_row, st.kv_row, 0.0f,
                  scores.data(), n);
        for (int64_t r = 0; r < m; ++r) {
          const int64_t i = i0 + r, lo = first[i] - k0, hi = i - k0;  // visible columns [lo, hi]
          float* row = scores.data() + r * n;
          float max = -INFINITY;
          for (int64_t j = lo; j <= hi; ++j) max = std::max(max, row[j] * scale);
          float sum = 0.0f;
          for (int64_t j = 0; j < lo; ++j) row[j] = 0.0f;
          for (int64_t j = lo; j <= hi; ++j) {
            row[j] = FastExp(row[j] * scale - max);
            sum += row[j];
          }
          for (int64_t j = hi + 1; j < n; ++j) row[j] = 0.0f;
          const float inv = 1.0f / sum;
          for (int64_t j = lo; j <= hi; ++j) row[j] *= inv;
          lse_b[i] = max + std::log(sum);
        }
        SmallGemm(false, false, m, hd, n, scores.data(), n, vb + k0 * st.kv_row, st.kv_row, 0.0f,
                  ob + i0 * st.q_row, st.q_row);
      }
    }
  });
}

void AttentionBackward(const AttentionShape& s, const float* q, const float* k, const float* v,
                       const float* out, const float* lse, const float* dout, const int32_t* segment_ids,
                       float* dq, float* dk, float* dv) {
  PinBlasToOneThread();
  const int64_t T = s.seq_len, hd = s.head_dim;
  const Strides st{int64_t{s.heads} * hd, int64_t{s.kv_heads} * hd};
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int group = s.heads / s.kv_heads;
  // One task per (sequence, kv head): it owns dk/dv of that head, so no two tasks write the same
  // gradient, and the query heads of its group are summed in a fixed order.
  ParallelFor(s.batch * s.kv_heads, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> probs(static_cast<size_t>(kBlock * T)), dprobs(probs.size());
    std::vector<float> delta(kBlock);
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t b = task / s.kv_heads, kvh = task % s.kv_heads;
      const std::vector<int64_t> first = FirstKeys(s, segment_ids ? segment_ids + b * T : nullptr);
      const float* kb = k + b * T * st.kv_row + kvh * hd;
      const float* vb = v + b * T * st.kv_row + kvh * hd;
      float* dkb = dk + b * T * st.kv_row + kvh * hd;
      float* dvb = dv + b * T * st.kv_row + kvh * hd;
      for (int64_t t = 0; t < T; ++t) {
        std::memset(dkb + t * st.kv_row, 0, sizeof(float) * hd);
        std::memset(dvb + t * st.kv_row, 0, sizeof(float) * hd);
      }
      for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
        const float* qb = q + b * T * st.q_row + h * hd;
        const float* ob = out + b * T * st.q_row + h * hd;
        const float* dob = dout + b * T * st.q_row + h * hd;
        float* dqb = dq + b * T * st.q_row + h * hd;
        const float* lse_b = lse + (b * s.heads + h) * T;
        for (int64_t i0 = 0; i0 < T; i0 += kBlock) {
          const int64_t i1 = std::min(T, i0 + kBlock), m = i1 - i0, k0 = first[i0], n = i1 - k0;
          SmallGemm(false, true, m, n, hd, qb + i0 * st.q_row, st.q_row, kb + k0 * st.kv_row, st.kv_row, 0.0f,
                    probs.data(), n);
          SmallGemm(false, true, m, n, hd, dob + i0 * st.q_row, st.q_row, vb + k0 * st.kv_row, st.kv_row,
                    0.0f, dprobs.data(), n);
          for (int64_t r = 0; r < m; ++r) {
            const int64_t i = i0 + r, lo = first[i] - k0, hi = i - k0;
            const float* o = ob + i * st.q_row;
            const float* go = dob + i * st.q_row;
            float d = 0.0f;
            for (int64_t c = 0; c < hd; ++c) d += o[c] * go[c];
            float* p = probs.data() + r * n;
            float* dp = dprobs.data() + r * n;
            for (int64_t j = 0; j < lo; ++j) p[j] = dp[j] = 0.0f;
            for (int64_t j = lo; j <= hi; ++j) {
              p[j] = FastExp(p[j] * scale - lse_b[i]);
              dp[j] = p[j] * (dp[j] - d) * scale;  // dS
            }
            for (int64_t j = hi + 1; j < n; ++j) p[j] = dp[j] = 0.0f;
          }
          // dQ = dS·K, dK += dSᵀ·Q, dV += Pᵀ·dO
          SmallGemm(false, false, m, hd, n, dprobs.data(), n, kb + k0 * st.kv_row, st.kv_row, 0.0f,
                    dqb + i0 * st.q_row, st.q_row);
          SmallGemm(true, false, n, hd, m, dprobs.data(), n, qb + i0 * st.q_row, st.q_row, 1.0f,
                    dkb + k0 * st.kv_row, st.kv_row);
          SmallGemm(true, false, n, hd, m, probs.data(), n, dob + i0 * st.q_row, st.q_row, 1.0f,
                    dvb + k0 * st.kv_row, st.kv_row);
        }
      }
    }
  });
}

}  // namespace loom::kernels::cpu
