// The blended sampler: training sequences drawn from several sources by a mix schedule.
//
// Determinism rule (the contract every rank and every resume relies on):
//   * Global sequence number n (counted from the start of the stage) starts at global token offset
//     t_n = tokens consumed before its batch + (its row in the global batch) x seq_len.
//   * The mix in force for sequence n is the last schedule entry with at_tokens <= t_n, so a weight
//     change takes effect exactly at its at_tokens boundary, even in the middle of a global batch.
//   * Its source is chosen by u_n = frac(phi(seed) + n x golden ratio) against the cumulative
//     normalised weights (a Weyl sequence: every window of sequences has shares within O(log n / n)
//     of the weights, with no random-number state to carry).
//   * Within a source, documents are read as one stream in an order reshuffled each epoch from
//     (seed, source name, epoch); a sequence is the next seq_len + 1 tokens of the stream (inputs
//     the first seq_len, targets the last seq_len) and the cursor moves on by seq_len. Sequences
//     run across document boundaries (documents end with EOS) and across epochs.
// Every rank computes the whole global batch's choices and copies only its rows, so DP=1 and
// DP=k give the same global batches, and the state is a few numbers per source (SaveState).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/batch.h"

namespace loom::data {

struct SamplerSource {
  std::string name;
  // Directories of token shards (shard-*.bin); their documents form one stream, in this order.
  std::vector<std::string> shard_dirs;
};

struct MixPoint {
  int64_t at_tokens = 0;
  // Source name -> relative weight (>= 0, positive sum; normalised here). Sources not named: 0.
  std::map<std::string, double> weights;
};

struct SamplerOptions {
  std::vector<SamplerSource> sources;
  // Sorted by at_tokens, the first at 0.
  std::vector<MixPoint> mix;
  uint64_t seed = 0;
  // Shards must have been written with this tokenizer (empty: not checked) and vocab (0: any).
  std::string expected_tokenizer_hash;
  int expected_vocab_size = 0;
  // Shards whose vocab is larger than this (the model's embedding rows) are refused; 0: any.
  int max_vocab_size = 0;
};

// Sources laid out by `loom data prepare`: <data_dir>/<name>/<split>/shard-*.bin.
std::vector<SamplerSource> PreparedSources(const std::string& data_dir, const std::vector<std::string>& names,
                                           const std::string& split = "train");

class BlendedSampler {
 public:
  static absl::StatusOr<std::unique_ptr<BlendedSampler>> Open(const SamplerOptions& options);
  ~BlendedSampler();
  BlendedSampler(const BlendedSampler&) = delete;
  BlendedSampler& operator=(const BlendedSampler&) = delete;

  // Fills `out` with this rank's rows of the next global batch of `global_sequences` sequences of
  // `seq_len` tokens: rows [dp_rank * g / dp_size, (dp_rank + 1) * g / dp_size), g divisible by
  // dp_size. Advances past the whole global batch (tokens consumed += g x seq_len). segment_ids and
  // positions are left empty (plain causal attention over the window).
  absl::Status NextBatch(int seq_len, int global_sequences, int dp_rank, int dp_size, TokenBatch* out);

  // The position in the data: a short text blob for checkpoints. RestoreState accepts a blob
  // from a sampler opened on the same sources and seed, and refuses (naming the difference) one
  // from other data.
  std::string SaveState() const;
  absl::Status RestoreState(std::string_view blob);

  // For metrics and progress.
  int64_t tokens_consumed() const { return tokens_; }
  int64_t sequences_consumed() const { return sequences_; }
  // Normalised weights in force at the current token offset.
  std::map<std::string, double> CurrentWeights() const;
  // Tokens drawn from each source so far (seq_len per sequence).
  std::map<std::string, int64_t> SourceTokens() const;
  // Completed passes over each source (0 during the first).
  std::map<std::string, int64_t> SourceEpochs() const;
  // Tokens available in each source (one epoch).
  std::map<std::string, int64_t> SourceSizes() const;

 private:
  struct Source;
  BlendedSampler() = default;
  int ChooseSource(int64_t token_offset, int64_t sequence) const;
  const std::vector<double>& CumulativeAt(int64_t token_offset) const;

  std::vector<std::unique_ptr<Source>> sources_;
  std::vector<int64_t> mix_at_;               // at_tokens of each schedule entry
  std::vector<std::vector<double>> mix_cum_;  // cumulative normalised weights, per entry
  uint64_t seed_ = 0;
  uint64_t phase_ = 0;
  std::string fingerprint_;
  int64_t tokens_ = 0;
  int64_t sequences_ = 0;
};

}  // namespace loom::data
