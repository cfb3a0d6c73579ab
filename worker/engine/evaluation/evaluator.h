// Held-out evaluation: the mean next-token loss of a model on the held-out split of each named
// source (`loom data prepare` writes <data>/<source>/heldout/), over the same first tokens every
// time, so evaluations at different steps compare — and forgetting of an old domain during
// continued pre-training shows as a rising curve.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/sampler.h"
#include "worker/engine/model/transformer.h"

namespace loom::engine {

struct EvalOptions {
  std::string data_dir;
  std::vector<std::string> sets;   // source names
  int64_t max_tokens = 64 * 1024;  // per set (fewer when the held-out split is smaller)
  std::string tokenizer_hash;      // empty: not checked
  int vocab_size = 0;
};

class Evaluator {
 public:
  // Checks that every set's held-out shards exist and match the tokenizer.
  static absl::StatusOr<std::unique_ptr<Evaluator>> Open(EvalOptions options);

  // Mean loss per set, over sequences of `seq_len` in batches of `rows` (forward only; the
  // model's gradients are untouched).
  absl::StatusOr<std::map<std::string, double>> Evaluate(Transformer& model, int seq_len, int rows) const;

 private:
  explicit Evaluator(EvalOptions options) : options_(std::move(options)) {}
  absl::StatusOr<std::unique_ptr<data::BlendedSampler>> OpenSet(const std::string& set) const;
  EvalOptions options_;
};

}  // namespace loom::engine
