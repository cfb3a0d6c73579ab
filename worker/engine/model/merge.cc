#include "worker/engine/model/merge.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/checkpoint_io.h"
#include "worker/engine/model/checkpoint.h"
#include "worker/engine/model/random.h"
#include "worker/engine/model/transformer.h"

namespace loom::engine {
namespace {

constexpr double kSlerpColinear = 0.9995;

// Keeps the ceil(density·n) entries of largest magnitude (ties broken by index), zeroes the rest.
std::vector<double> Trim(const std::vector<double>& delta, double density) {
  const size_t n = delta.size();
  const size_t keep = std::min(n, static_cast<size_t>(std::ceil(density * static_cast<double>(n))));
  if (keep == n) return delta;
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return std::abs(delta[a]) > std::abs(delta[b]); });
  std::vector<double> out(n, 0.0);
  for (size_t i = 0; i < keep; ++i) out[order[i]] = delta[order[i]];
  return out;
}

}  // namespace

absl::Status MergeTensors(const std::vector<const float*>& inputs, const float* base, const MergeOptions& o,
                          uint64_t salt, std::vector<float>* out) {
  const size_t k = inputs.size(), n = out->size();
  if (k == 0) return absl::InvalidArgumentError("merge: no inputs");
  std::vector<double> w = o.weights.empty() ? std::vector<double>(k, 1.0) : o.weights;
  if (w.size() != k) {
    return absl::InvalidArgumentError(absl::StrCat("merge: ", w.size(), " weights for ", k, " inputs"));
  }
  const bool task_vectors = o.method == MergeMethod::kTaskArithmetic || o.method == MergeMethod::kTies ||
                            o.method == MergeMethod::kDare;
  if (task_vectors && base == nullptr)
    return absl::InvalidArgumentError("merge: this method needs a base model");
  if ((o.method == MergeMethod::kTies || o.method == MergeMethod::kDare) &&
      !(o.density > 0 && o.density <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("merge: density ", o.density, " is not in (0, 1]"));
  }

  switch (o.method) {
    case MergeMethod::kLinear: {
      const double total = std::accumulate(w.begin(), w.end(), 0.0);
      if (total <= 0) return absl::InvalidArgumentError("merge: weights must have a positive sum");
      for (size_t j = 0; j < n; ++j) {
        double s = 0;
        for (size_t i = 0; i < k; ++i) s += w[i] * inputs[i][j];
        (*out)[j] = static_cast<float>(s / total);
      }
      return absl::OkStatus();
    }
    case MergeMethod::kEma: {
      if (!(o.ema_beta > 0 && o.ema_beta < 1)) {
        return absl::InvalidArgumentError(
            absl::StrCat("average: ema_beta ", o.ema_beta, " is not in (0, 1)"));
      }
      for (size_t j = 0; j < n; ++j) {
        double ema = inputs[0][j];
        for (size_t i = 1; i < k; ++i) ema = o.ema_beta * ema + (1 - o.ema_beta) * inputs[i][j];
        (*out)[j] = static_cast<float>(ema);
      }
      return absl::OkStatus();
    }
    case MergeMethod::kSlerp: {
      if (k != 2) return absl::InvalidArgumentError(absl::StrCat("merge: slerp takes 2 models, not ", k));
      double dot = 0, n0 = 0, n1 = 0;
      for (size_t j = 0; j < n; ++j) {
        dot += double{inputs[0][j]} * inputs[1][j];
        n0 += double{inputs[0][j]} * inputs[0][j];
        n1 += double{inputs[1][j]} * inputs[1][j];
      }
      double s0 = 1 - o.t, s1 = o.t;  // lerp
      const double cos = (n0 > 0 && n1 > 0) ? dot / std::sqrt(n0 * n1) : 1.0;
      if (std::abs(cos) <= kSlerpColinear) {
        const double theta = std::acos(cos), sin = std::sin(theta);
        s0 = std::sin((1 - o.t) * theta) / sin;
        s1 = std::sin(o.t * theta) / sin;
      }
      for (size_t j = 0; j < n; ++j) (*out)[j] = static_cast<float>(s0 * inputs[0][j] + s1 * inputs[1][j]);
      return absl::OkStatus();
    }
    case MergeMethod::kTaskArithmetic:
    case MergeMethod::kDare: {
      std::vector<double> merged(n, 0.0);
      for (size_t i = 0; i < k; ++i) {
        Random rng(o.seed ^ (salt * 0x9E3779B97F4A7C15ull) ^ (i + 1));
        for (size_t j = 0; j < n; ++j) {
          double d = double{inputs[i][j]} - base[j];
          if (o.method == MergeMethod::kDare) d = rng.NextUniform() < o.density ? d / o.density : 0.0;
          merged[j] += w[i] * d;
        }
      }
      for (size_t j = 0; j < n; ++j) (*out)[j] = static_cast<float>(base[j] + o.lambda * merged[j]);
      return absl::OkStatus();
    }
    case MergeMethod::kTies: {
      std::vector<std::vector<double>> deltas(k, std::vector<double>(n));
      for (size_t i = 0; i < k; ++i) {
        for (size_t j = 0; j < n; ++j) deltas[i][j] = double{inputs[i][j]} - base[j];
        deltas[i] = Trim(deltas[i], o.density);
      }
      for (size_t j = 0; j < n; ++j) {
        double elected = 0;
        for (size_t i = 0; i < k; ++i) elected += w[i] * deltas[i][j];
        double sum = 0, weight = 0;
        for (size_t i = 0; i < k; ++i) {
          const double d = deltas[i][j];
          if (d != 0 && (d > 0) == (elected > 0)) {
            sum += w[i] * d;
            weight += w[i];
          }
        }
        (*out)[j] = static_cast<float>(base[j] + o.lambda * (weight > 0 ? sum / weight : 0.0));
      }
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError("merge: unknown method");
}

absl::Status MergeCheckpoints(const std::vector<std::string>& inputs, const std::string& base,
                              const MergeOptions& options, const std::string& out_dir,
                              const std::string& plan_id, const std::string& stage, int64_t step) {
  if (inputs.empty()) return absl::InvalidArgumentError("merge: no input checkpoints");
  std::vector<std::string> paths = inputs;
  if (!base.empty()) paths.push_back(base);
  std::vector<std::unique_ptr<Transformer>> models;
  loom::v1::CheckpointManifest first;
  for (size_t i = 0; i < paths.size(); ++i) {
    absl::StatusOr<loom::v1::CheckpointManifest> manifest =
        ReadCheckpointManifest(paths[i], /*verify=*/false);
    if (!manifest.ok()) return manifest.status();
    absl::StatusOr<TransformerConfig> config = TransformerConfig::FromProto(manifest->model());
    if (!config.ok()) return config.status();
    if (i == 0) {
      first = *manifest;
    } else {
      const auto& a = first.model();
      const auto& b = manifest->model();
      if (a.layers() != b.layers() || a.d_model() != b.d_model() || a.heads() != b.heads() ||
          a.kv_heads() != b.kv_heads() || a.ffn_size() != b.ffn_size() || a.vocab_size() != b.vocab_size() ||
          a.tied_embeddings() != b.tied_embeddings()) {
        return absl::InvalidArgumentError(absl::StrCat("merge: ", paths[i],
                                                       " has a different architecture from ", paths[0],
                                                       " (layers, d_model, heads, kv_heads, ffn_size, "
                                                       "vocab_size and tied_embeddings must match)"));
      }
      if (!first.tokenizer_sha256().empty() && !manifest->tokenizer_sha256().empty() &&
          first.tokenizer_sha256() != manifest->tokenizer_sha256()) {
        return absl::InvalidArgumentError(
            absl::StrCat("merge: ", paths[i], " was trained with a different tokenizer from ", paths[0]));
      }
    }
    auto model = std::make_unique<Transformer>(*config);
    if (absl::StatusOr<loom::v1::CheckpointManifest> loaded = LoadWeights(paths[i], model.get());
        !loaded.ok())
      return loaded.status();
    models.push_back(std::move(model));
  }
  const Transformer* base_model = base.empty() ? nullptr : models.back().get();
  Transformer& result = *models[0];
  std::vector<float> merged;
  uint64_t salt = 0;
  // Inputs are read from models[i]; the result is written into a copy to keep models[0] intact.
  std::vector<float> out_params(result.num_params());
  for (const ParamTensor& t : result.layout().tensors()) {
    std::vector<const float*> views;
    for (size_t i = 0; i < inputs.size(); ++i) views.push_back(models[i]->params() + t.offset);
    merged.assign(t.size, 0.0f);
    if (absl::Status s = MergeTensors(views, base_model ? base_model->params() + t.offset : nullptr, options,
                                      ++salt, &merged);
        !s.ok()) {
      return absl::Status(s.code(), absl::StrCat(s.message(), " (tensor ", t.name, ")"));
    }
    std::copy(merged.begin(), merged.end(), out_params.begin() + t.offset);
  }
  std::copy(out_params.begin(), out_params.end(), result.params());
  loom::v1::CheckpointManifest manifest;
  manifest.set_plan_id(plan_id);
  manifest.set_stage(stage);
  manifest.set_step(step);
  *manifest.mutable_model() = first.model();
  manifest.set_final(true);
  manifest.set_tokenizer_sha256(first.tokenizer_sha256());
  for (const char* key : {"tokenizer", "chat_template"}) {  // what an export ships with the weights
    if (first.metadata().contains(key)) (*manifest.mutable_metadata())[key] = first.metadata().at(key);
  }
  return SaveCheckpoint(out_dir, result, nullptr, manifest);
}

MergeOptions MergeOptionsFromStage(const loom::v1::Stage& stage, uint64_t plan_seed) {
  MergeOptions o;
  if (stage.has_average()) {
    const auto& a = stage.average();
    o.method = a.method() == loom::v1::AverageConfig::METHOD_EMA ? MergeMethod::kEma : MergeMethod::kLinear;
    if (a.method() == loom::v1::AverageConfig::METHOD_WEIGHTED)
      o.weights.assign(a.weights().begin(), a.weights().end());
    o.ema_beta = a.has_ema_beta() ? a.ema_beta() : 0.9;
    return o;
  }
  const auto& m = stage.merge();
  switch (m.method()) {
    case loom::v1::MergeConfig::METHOD_TASK_ARITHMETIC:
      o.method = MergeMethod::kTaskArithmetic;
      break;
    case loom::v1::MergeConfig::METHOD_SLERP:
      o.method = MergeMethod::kSlerp;
      break;
    case loom::v1::MergeConfig::METHOD_TIES:
      o.method = MergeMethod::kTies;
      break;
    case loom::v1::MergeConfig::METHOD_DARE:
      o.method = MergeMethod::kDare;
      break;
    default:
      o.method = MergeMethod::kLinear;
      break;
  }
  o.weights.assign(m.weights().begin(), m.weights().end());
  o.lambda = m.has_lambda() ? m.lambda() : 1.0;
  o.t = m.has_t() ? m.t() : 0.5;
  o.density = m.has_density() ? m.density() : (o.method == MergeMethod::kDare ? 0.5 : 1.0);
  o.seed = m.has_seed() ? m.seed() : plan_seed;
  return o;
}

}  // namespace loom::engine
