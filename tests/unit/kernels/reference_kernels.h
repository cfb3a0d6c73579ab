// Plain reference implementations of the CPU kernels: the definitions, in double precision, with
// no blocking, no threads and no tricks. The kernels are tested against these, and their
// backward passes against finite differences of these.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace loom::reference {

using Vec = std::vector<double>;

// y[r, o] = Σ_i x[r, i] · w[o, i]
inline Vec Linear(const Vec& x, const Vec& w, int64_t rows, int64_t in, int64_t out) {
  Vec y(rows * out, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i) y[r * out + o] += x[r * in + i] * w[o * in + i];
  return y;
}

inline Vec RmsNorm(const Vec& x, const Vec& w, int64_t rows, int64_t dim, double eps) {
  Vec y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ms = 0;
    for (int64_t i = 0; i < dim; ++i) ms += x[r * dim + i] * x[r * dim + i];
    const double s = 1.0 / std::sqrt(ms / dim + eps);
    for (int64_t i = 0; i < dim; ++i) y[r * dim + i] = x[r * dim + i] * s * w[i];
  }
  return y;
}

// Rotate-half RoPE on x [tokens, heads, head_dim] at `positions`.
inline Vec Rope(const Vec& x, const std::vector<int32_t>& positions, int64_t tokens, int heads, int head_dim,
                double theta, double position_divisor = 1.0) {
  Vec y(x.size());
  const int half = head_dim / 2;
  for (int64_t t = 0; t < tokens; ++t)
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < half; ++i) {
        const double angle = positions[t] / position_divisor * std::pow(theta, -2.0 * i / head_dim);
        const int64_t a = (t * heads + h) * head_dim + i, b = a + half;
        y[a] = x[a] * std::cos(angle) - x[b] * std::sin(angle);
        y[b] = x[b] * std::cos(angle) + x[a] * std::sin(angle);
      }
  return y;
}

inline bool Visible(int64_t i, int64_t j, int window, const int32_t* segments) {
  if (j > i) return false;
  if (window > 0 && i - j >= window) return false;
  if (segments != nullptr) {
    for (int64_t t = j + 1; t <= i; ++t)
      if (segments[t] != segments[t - 1]) return false;  // a segment boundary lies between them
  }
  return true;
}

// q [B,T,H,hd], k/v [B,T,KV,hd] -> out [B,T,H,hd]; segments [B,T] or empty.
inline Vec Attention(const Vec& q, const Vec& k, const Vec& v, const std::vector<int32_t>& segments,
                     int64_t batch, int64_t seq, int heads, int kv_heads, int hd, int window) {
  Vec out(q.size(), 0.0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  for (int64_t b = 0; b < batch; ++b)
    for (int h = 0; h < heads; ++h) {
      const int kvh = h / (heads / kv_heads);
      const int32_t* seg = segments.empty() ? nullptr : segments.data() + b * seq;
      for (int64_t i = 0; i < seq; ++i) {
        std::vector<double> p(seq, 0.0);
        double max = -INFINITY;
        for (int64_t j = 0; j < seq; ++j) {
          if (!Visible(i, j, window, seg)) continue;
          double dot = 0;
          for (int d = 0; d < hd; ++d)
            dot += q[((b * seq + i) * heads + h) * hd + d] * k[((b * seq + j) * kv_heads + kvh) * hd + d];
          p[j] = dot * scale;
          max = std::max(max, p[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j < seq; ++j) {
          p[j] = Visible(i, j, window, seg) ? std::exp(p[j] - max) : 0.0;
          sum += p[j];
        }
        for (int64_t j = 0; j < seq; ++j)
          for (int d = 0; d < hd; ++d)
            out[((b * seq + i) * heads + h) * hd + d] +=
                p[j] / sum * v[((b * seq + j) * kv_heads + kvh) * hd + d];
      }
    }
  return out;
}

inline Vec SwiGlu(const Vec& gate, const Vec& up) {
  Vec y(gate.size());
  for (size_t i = 0; i < gate.size(); ++i) y[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
  return y;
}

// Σ over rows with a target (target >= 0) of logsumexp(row) − row[target].
inline double CrossEntropySum(const Vec& logits, const std::vector<int32_t>& targets, int64_t vocab) {
  double total = 0;
  for (size_t r = 0; r < targets.size(); ++r) {
    if (targets[r] < 0) continue;
    double max = -INFINITY, sum = 0;
    for (int64_t v = 0; v < vocab; ++v) max = std::max(max, logits[r * vocab + v]);
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(logits[r * vocab + v] - max);
    total += max + std::log(sum) - logits[r * vocab + targets[r]];
  }
  return total;
}

inline Vec Embedding(const std::vector<int32_t>& ids, const Vec& table, int64_t dim) {
  Vec y(ids.size() * dim);
  for (size_t t = 0; t < ids.size(); ++t)
    for (int64_t c = 0; c < dim; ++c) y[t * dim + c] = table[ids[t] * dim + c];
  return y;
}

// One AdamW step as torch.optim.AdamW defines it (foreach=False).
inline void AdamW(Vec& p, const Vec& g, Vec& m, Vec& v, double lr, double b1, double b2, double eps,
                  double wd, int64_t step) {
  for (size_t i = 0; i < p.size(); ++i) {
    p[i] *= 1 - lr * wd;
    m[i] = b1 * m[i] + (1 - b1) * g[i];
    v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
    const double bc1 = 1 - std::pow(b1, step), bc2 = 1 - std::pow(b2, step);
    p[i] -= lr / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + eps);
  }
}

inline void Lion(Vec& p, const Vec& g, Vec& m, double lr, double b1, double b2, double wd) {
  for (size_t i = 0; i < p.size(); ++i) {
    const double c = b1 * m[i] + (1 - b1) * g[i];
    p[i] -= lr * ((c > 0) - (c < 0) + wd * p[i]);
    m[i] = b2 * m[i] + (1 - b2) * g[i];
  }
}

}  // namespace loom::reference
