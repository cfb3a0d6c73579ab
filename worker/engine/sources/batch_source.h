// Where the trainer gets its token sequences: an interface, so that the blended sampler of the
// data pipeline, a plain token file (developers' `loom train-local`) and tests plug in alike.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "data/batch.h"

namespace loom::engine {

class BatchSource {
 public:
  virtual ~BatchSource() = default;

  // The global batch of the next step has `global_sequences` sequences of `seq_len` tokens; fills
  // `out` with this rank's contiguous slice of dp_size equal slices and advances past the whole
  // global batch. The same calls give the same sequences on every rank and after RestoreState.
  virtual absl::Status Next(int seq_len, int global_sequences, int dp_rank, int dp_size,
                            data::TokenBatch* out) = 0;

  // The position in the data, for checkpoints.
  virtual std::string SaveState() const = 0;
  virtual absl::Status RestoreState(std::string_view state) = 0;

  // True when a finite source (an SFT dataset read for N epochs) has been read to its end: the
  // stage is over. Pre-training streams never end.
  virtual bool Exhausted() const { return false; }

  // For progress and metrics; empty when the source has no notion of sources.
  // Measures of the last batch (an rl source: mean reward, KL), averaged over ranks by the trainer.
  virtual std::map<std::string, double> BatchMetrics() const { return {}; }

  virtual std::map<std::string, double> MixWeights() const { return {}; }
  virtual std::map<std::string, int64_t> SourceTokens() const { return {}; }
};

// One token stream read cyclically: sequence s of a batch is the window of seq_len + 1 tokens
// starting at cursor + s·seq_len (inputs are its first seq_len tokens, targets its last). The
// state is the cursor.
class TokenStreamSource : public BatchSource {
 public:
  explicit TokenStreamSource(std::vector<int32_t> tokens);

  // Every byte of a file is one token (ids 0-255): for byte-level models and tests.
  static absl::StatusOr<std::unique_ptr<TokenStreamSource>> FromTextFile(const std::string& path);
  // Little-endian uint32 token ids; each must be below `vocab`.
  static absl::StatusOr<std::unique_ptr<TokenStreamSource>> FromTokenFile(const std::string& path, int vocab);

  absl::Status Next(int seq_len, int global_sequences, int dp_rank, int dp_size,
                    data::TokenBatch* out) override;
  std::string SaveState() const override;
  absl::Status RestoreState(std::string_view state) override;
  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }

 private:
  std::vector<int32_t> tokens_;
  int64_t cursor_ = 0;
};

// Rows [first, first + count) of a batch (for micro-batches).
data::TokenBatch SliceBatch(const data::TokenBatch& batch, int first, int count);

}  // namespace loom::engine
