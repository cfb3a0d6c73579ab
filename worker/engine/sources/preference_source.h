// A dpo stage's batches: preference pairs (prompt, chosen, rejected; data/chat.h) rendered with
// the chat template. Each pair fills two rows of the global batch, chosen then rejected, one
// example per row: the prompt and the completion cut to seq_len + 1 tokens, targets on the
// completion only, padding after it. Pairs are read for `epochs` passes in an order reshuffled
// each epoch from (seed, epoch); a data-parallel rank takes a contiguous, even slice of the rows,
// so pairs never split across ranks.
//
// Every row carries the frozen reference model's summed completion log-probability
// (TokenBatch::reference_logprobs). ComputeReference evaluates the reference once per pair and
// keeps the values in a cache file beside the stage's checkpoints, so a resumed attempt reads
// them instead of running the reference again.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/chat.h"
#include "data/tokenizer.h"
#include "worker/engine/sources/batch_source.h"
#include "worker/engine/parallel/communicator.h"
#include "worker/engine/model/row_scores.h"
#include "worker/engine/model/transformer.h"

namespace loom::engine {

struct PreferenceSourceOptions {
  std::string path;  // JSONL preference pairs
  data::ChatTemplate chat_template = data::ChatTemplate::kChatML;
  uint64_t seed = 0;
  int epochs = 1;
  // dpo: every row carries the reference's log-probability (ComputeReference must run first).
  // reward_model stages train without a reference.
  bool with_reference = true;
};

class PreferenceBatchSource : public BatchSource {
 public:
  static absl::StatusOr<std::unique_ptr<PreferenceBatchSource>> Open(const PreferenceSourceOptions& options,
                                                                     const data::Tokenizer& tokenizer);

  // The reference's summed completion log-probabilities of every pair at `seq_len` (the one
  // length the stage trains at), read from `cache_path` when it holds them for these pairs, this
  // seq_len and `reference_id` (e.g. the reference checkpoint's path), else computed and written
  // there atomically. Empty cache_path: computed, not kept. With a data-parallel `group` the ranks
  // split the work (blocks of 8 pairs dealt round-robin) and sum the results — exact, each value
  // meets only zeros — so every rank holds the same values a single process computes; the cache
  // is read only when every rank has a valid one.
  absl::Status ComputeReference(Transformer& reference, const std::string& reference_id, int seq_len,
                                const std::string& cache_path, Communicator* group = nullptr);

  absl::Status Next(int seq_len, int global_sequences, int dp_rank, int dp_size, data::TokenBatch* out) override;
  std::string SaveState() const override;
  absl::Status RestoreState(std::string_view state) override;
  bool Exhausted() const override { return epoch_ >= options_.epochs; }

  int64_t pairs() const { return static_cast<int64_t>(pairs_.size()); }
  // Pairs whose longer side does not fit seq_len + 1 tokens at the reference's seq_len: they are
  // cut, and where chosen and rejected differ only after the cut they teach nothing.
  int64_t truncated_pairs() const { return truncated_; }
  // Whether ComputeReference read its values from the cache (for tests and logs).
  bool reference_from_cache() const { return reference_from_cache_; }

 private:
  PreferenceBatchSource() = default;
  const std::vector<uint32_t>& Order(int64_t epoch);

  PreferenceSourceOptions options_;
  std::vector<data::PreferenceExample> pairs_;
  int32_t pad_id_ = 0;
  std::string fingerprint_;
  int reference_seq_len_ = 0;
  std::vector<double> reference_;  // [pairs, 2]: chosen, rejected
  bool reference_from_cache_ = false;
  int64_t truncated_ = 0;
  int64_t epoch_ = 0, position_ = 0;
  int64_t order_epoch_ = -1;
  std::vector<uint32_t> order_;
};

// Rows 2i (chosen) and 2i+1 (rejected) of pairs [first, first + count), as described above.
data::TokenBatch PreferenceRows(const std::vector<data::PreferenceExample>& pairs, size_t first, size_t count,
                                int seq_len, int32_t pad_id);

// Reads and tokenizes a JSONL file of preference pairs.
absl::StatusOr<std::vector<data::PreferenceExample>> ReadPreferenceExamples(const std::string& path,
                                                                           data::ChatTemplate chat_template,
                                                                           const data::Tokenizer& tokenizer);

}  // namespace loom::engine
