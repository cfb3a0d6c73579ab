#include "worker/engine/model/generator.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/cpu/embedding.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/swiglu.h"
#include "kernels/cpu/vec_math.h"

namespace loom::engine {

namespace k = loom::kernels::cpu;

Generator::Generator(const Transformer& model, int max_batch, int max_len)
    : model_(model), c_(model.config()), max_batch_(max_batch), max_len_(max_len) {
  const int64_t b = max_batch, kv = int64_t{c_.kv_heads} * c_.head_dim, q = int64_t{c_.heads} * c_.head_dim;
  k_cache_.Resize(int64_t{c_.layers} * b * max_len * kv);
  v_cache_.Resize(k_cache_.size());
  x_.Resize(b * c_.d_model);
  h_.Resize(b * c_.d_model);
  tmp_.Resize(b * c_.d_model);
  q_.Resize(b * q);
  attn_.Resize(b * q);
  k_.Resize(b * kv);
  v_.Resize(b * kv);
  gate_.Resize(b * c_.ffn);
  up_.Resize(b * c_.ffn);
  rstd_.Resize(b);
  logits_.Resize(b * c_.vocab);
  rope_ = k::MakeRopeTable(max_len, c_.head_dim, c_.rope_theta, c_.rope_position_divisor);
  Reset(max_batch);
}

void Generator::Reset(int batch) {
  batch_ = std::min(batch, max_batch_);
  position_ = 0;
}

const float* Generator::Step(const int32_t* tokens) {
  const int B = batch_, t = position_;
  const int64_t d = c_.d_model, hd = c_.head_dim, q_dim = int64_t{c_.heads} * hd,
                kv_dim = int64_t{c_.kv_heads} * hd;
  const float* P = model_.params();
  const ParameterLayout& L = model_.layout();
  const std::vector<int32_t> positions(B, t);
  k::EmbeddingForward(tokens, P + L.embedding(), x_.data(), B, d);
  for (int l = 0; l < c_.layers; ++l) {
    const LayerOffsets& w = L.layer(l);
    k::RmsNormForward(x_.data(), P + w.input_norm, h_.data(), rstd_.data(), B, d, c_.norm_eps);
    k::LinearForward(h_.data(), P + w.q, q_.data(), B, d, q_dim);
    k::LinearForward(h_.data(), P + w.k, k_.data(), B, d, kv_dim);
    k::LinearForward(h_.data(), P + w.v, v_.data(), B, d, kv_dim);
    k::RopeForward(q_.data(), positions.data(), rope_, B, c_.heads);
    k::RopeForward(k_.data(), positions.data(), rope_, B, c_.kv_heads);
    float* kc = k_cache_.data() + int64_t{l} * max_batch_ * max_len_ * kv_dim;
    float* vc = v_cache_.data() + int64_t{l} * max_batch_ * max_len_ * kv_dim;
    for (int b = 0; b < B; ++b) {
      std::copy_n(k_.data() + b * kv_dim, kv_dim, kc + (int64_t{b} * max_len_ + t) * kv_dim);
      std::copy_n(v_.data() + b * kv_dim, kv_dim, vc + (int64_t{b} * max_len_ + t) * kv_dim);
    }
    // One query per (sequence, head) against the cached keys [first, t].
    const int window = c_.window_of(l);
    const int first = window > 0 ? std::max(0, t - window + 1) : 0;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    k::ParallelFor(int64_t{B} * c_.heads, 4, [&](int64_t i0, int64_t i1) {
      std::vector<float> p(t + 1);
      for (int64_t i = i0; i < i1; ++i) {
        const int b = static_cast<int>(i / c_.heads), h = static_cast<int>(i % c_.heads);
        const int kvh = h / (c_.heads / c_.kv_heads);
        const float* qv = q_.data() + b * q_dim + h * hd;
        float max = -INFINITY;
        for (int j = first; j <= t; ++j) {
          const float* kr = kc + (int64_t{b} * max_len_ + j) * kv_dim + kvh * hd;
          float dot = 0;
          for (int64_t e = 0; e < hd; ++e) dot += qv[e] * kr[e];
          p[j] = dot * scale;
          max = std::max(max, p[j]);
        }
        float sum = 0;
        for (int j = first; j <= t; ++j) sum += (p[j] = k::FastExp(p[j] - max));
        float* out = attn_.data() + b * q_dim + h * hd;
        std::fill(out, out + hd, 0.0f);
        for (int j = first; j <= t; ++j) {
          const float* vr = vc + (int64_t{b} * max_len_ + j) * kv_dim + kvh * hd;
          const float weight = p[j] / sum;
          for (int64_t e = 0; e < hd; ++e) out[e] += weight * vr[e];
        }
      }
    });
    k::LinearForward(attn_.data(), P + w.o, tmp_.data(), B, q_dim, d);
    for (int64_t i = 0; i < B * d; ++i) x_.data()[i] += tmp_.data()[i];
    k::RmsNormForward(x_.data(), P + w.post_norm, h_.data(), rstd_.data(), B, d, c_.norm_eps);
    k::LinearForward(h_.data(), P + w.gate, gate_.data(), B, d, c_.ffn);
    k::LinearForward(h_.data(), P + w.up, up_.data(), B, d, c_.ffn);
    k::SwiGluForward(gate_.data(), up_.data(), gate_.data(), int64_t{B} * c_.ffn);
    k::LinearForward(gate_.data(), P + w.down, tmp_.data(), B, c_.ffn, d);
    for (int64_t i = 0; i < B * d; ++i) x_.data()[i] += tmp_.data()[i];
  }
  k::RmsNormForward(x_.data(), P + L.final_norm(), h_.data(), rstd_.data(), B, d, c_.norm_eps);
  k::LinearForward(h_.data(), P + L.lm_head(), logits_.data(), B, d, c_.vocab);
  ++position_;
  return logits_.data();
}

int32_t Generator::Sample(const float* logits, const SamplingOptions& o, Random& rng) {
  const int V = c_.vocab;
  if (o.temperature <= 0.0f) return static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
  probs_.resize(V);
  const float max = *std::max_element(logits, logits + V);
  float sum = 0;
  for (int v = 0; v < V; ++v) sum += (probs_[v] = k::FastExp((logits[v] - max) / o.temperature));
  for (float& p : probs_) p /= sum;
  order_.resize(V);
  std::iota(order_.begin(), order_.end(), 0);
  // Most likely first; ties by id so the order is deterministic.
  int keep = (o.top_k > 0 && o.top_k < V) ? o.top_k : V;
  auto by_prob = [&](int32_t a, int32_t b) {
    return probs_[a] > probs_[b] || (probs_[a] == probs_[b] && a < b);
  };
  if (keep < V || o.top_p < 1.0f) {
    std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(), by_prob);
    if (o.top_p < 1.0f) {
      float cumulative = 0;
      for (int i = 0; i < keep; ++i) {
        cumulative += probs_[order_[i]];
        if (cumulative >= o.top_p) {
          keep = i + 1;
          break;
        }
      }
    }
  }
  float total = 0;
  for (int i = 0; i < keep; ++i) total += probs_[order_[i]];
  float r = rng.NextUniform() * total;
  for (int i = 0; i < keep; ++i) {
    r -= probs_[order_[i]];
    if (r < 0) return order_[i];
  }
  return order_[keep - 1];
}

std::vector<std::vector<int32_t>> Generator::Generate(const std::vector<std::vector<int32_t>>& prompts,
                                                      const SamplingOptions& options) {
  std::vector<std::vector<int32_t>> out(prompts.size());
  for (size_t start = 0; start < prompts.size(); start += max_batch_) {
    const int B = static_cast<int>(std::min<size_t>(max_batch_, prompts.size() - start));
    size_t longest = 0;
    for (int b = 0; b < B; ++b) longest = std::max(longest, prompts[start + b].size());
    const int steps = std::min<int>(max_len_, static_cast<int>(longest) + options.max_new_tokens - 1);
    Reset(B);
    std::vector<Random> rngs;
    for (int b = 0; b < B; ++b) rngs.emplace_back(options.seed + start + b);
    std::vector<int32_t> tokens(B);
    std::vector<bool> done(B, false);
    for (int t = 0; t < steps; ++t) {
      bool any = false;
      for (int b = 0; b < B; ++b) {
        const auto& prompt = prompts[start + b];
        tokens[b] = t < static_cast<int>(prompt.size()) ? prompt[t] : out[start + b].back();
        any |= !done[b];
      }
      if (!any) break;
      const float* logits = Step(tokens.data());
      for (int b = 0; b < B; ++b) {
        const auto& prompt = prompts[start + b];
        if (done[b] || t + 1 < static_cast<int>(prompt.size())) continue;  // still reading the prompt
        const int32_t next = Sample(logits + int64_t{b} * c_.vocab, options, rngs[b]);
        out[start + b].push_back(next);
        if (next == options.stop_token || static_cast<int>(out[start + b].size()) >= options.max_new_tokens) {
          done[b] = true;
        }
      }
    }
  }
  return out;
}

}  // namespace loom::engine
