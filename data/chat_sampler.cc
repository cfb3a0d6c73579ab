#include "data/chat_sampler.h"

#include <algorithm>
#include <filesystem>
#include <iterator>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/confined_read.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "data/hash.h"

namespace loom::data {
namespace {
constexpr char kStateMagic[] = "loom.chat_sampler.v1";
}

absl::StatusOr<std::unique_ptr<ChatSampler>> ChatSampler::Open(const ChatSamplerOptions& options,
                                                               const Tokenizer& tokenizer) {
  // A directory (a rejection_sampling stage's dataset): every *.jsonl in it, in name order.
  std::vector<std::string> files;
  if (std::filesystem::is_directory(options.path)) {
    // Listed confined to the read roots (a rank's; common/confined_read.h); each file is opened
    // confined again, so an entry that is a symlink out is refused too.
    LOOM_ASSIGN_OR_RETURN(std::vector<std::string> names, ListConfinedDirectory(options.path));
    for (const std::string& name : names) {
      const std::filesystem::path entry = std::filesystem::path(options.path) / name;
      if (entry.extension() == ".jsonl") files.push_back(entry.string());
    }
  } else {
    files.push_back(options.path);
  }
  std::vector<Conversation> conversations;
  for (const std::string& file : files) {
    LOOM_ASSIGN_OR_RETURN(std::vector<Conversation> part, ReadConversations(file));
    conversations.insert(conversations.end(), std::make_move_iterator(part.begin()),
                         std::make_move_iterator(part.end()));
  }
  auto sampler = std::unique_ptr<ChatSampler>(new ChatSampler());
  sampler->options_ = options;
  sampler->pad_id_ = tokenizer.pad_id() >= 0 ? tokenizer.pad_id() : tokenizer.eos_id();
  uint64_t fingerprint = Hash64(tokenizer.hash());
  for (const Conversation& c : conversations) {
    LOOM_ASSIGN_OR_RETURN(TokenizedExample example,
                          TokenizeConversation(c, options.chat_template, tokenizer));
    if (example.tokens.size() < 2) continue;
    fingerprint = Mix64(fingerprint ^ example.tokens.size());
    sampler->examples_.push_back(std::move(example));
  }
  if (sampler->examples_.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("chat data ", options.path, " has no usable conversation"));
  }
  sampler->fingerprint_ = absl::StrCat(fingerprint);
  return sampler;
}

const std::vector<uint32_t>& ChatSampler::Order(int64_t epoch) {
  if (order_epoch_ != epoch) {
    EpochOrder(examples_.size(), options_.seed, 0x636861740000ull, epoch, &order_);
    order_epoch_ = epoch;
  }
  return order_;
}

const TokenizedExample& ChatSampler::Take() {
  const TokenizedExample& example = examples_[Order(epoch_)[position_]];
  ++consumed_;
  if (++position_ == static_cast<int64_t>(examples_.size())) {
    position_ = 0;
    ++epoch_;
  }
  return example;
}

absl::Status ChatSampler::NextBatch(int seq_len, int global_sequences, int dp_rank, int dp_size,
                                    TokenBatch* out) {
  if (seq_len < 1)
    return absl::InvalidArgumentError(absl::StrCat("chat sampler: seq_len ", seq_len, " must be >= 1"));
  if (dp_size < 1 || dp_rank < 0 || dp_rank >= dp_size || global_sequences < 1 ||
      global_sequences % dp_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat("chat sampler: a global batch of ", global_sequences,
                                                   " sequences does not split into ", dp_size,
                                                   " equal slices (rank ", dp_rank, ")"));
  }
  const int per_rank = global_sequences / dp_size;
  const int first = dp_rank * per_rank;
  out->Reset(per_rank, seq_len);
  out->segment_ids.resize(out->inputs.size());
  out->positions.resize(out->inputs.size());
  for (int row = 0; row < global_sequences; ++row) {
    std::vector<TokenizedExample> parts = {Take()};
    int used = std::min<int>(seq_len, static_cast<int>(parts[0].tokens.size()) - 1);
    while (options_.packing) {
      const TokenizedExample& next = examples_[Order(epoch_)[position_]];
      const int need = static_cast<int>(next.tokens.size()) - 1;
      if (used + need > seq_len) break;
      parts.push_back(Take());
      used += need;
    }
    if (row < first || row >= first + per_rank) continue;
    const TokenBatch packed = PackExamples(parts, seq_len, pad_id_, /*pack=*/true);
    const size_t at = static_cast<size_t>(row - first) * seq_len;
    std::copy(packed.inputs.begin(), packed.inputs.end(), out->inputs.begin() + at);
    std::copy(packed.targets.begin(), packed.targets.end(), out->targets.begin() + at);
    std::copy(packed.segment_ids.begin(), packed.segment_ids.end(), out->segment_ids.begin() + at);
    std::copy(packed.positions.begin(), packed.positions.end(), out->positions.begin() + at);
  }
  return absl::OkStatus();
}

std::string ChatSampler::SaveState() const {
  return absl::StrCat(kStateMagic, " ", options_.seed, " ", fingerprint_, " ", epoch_, " ", position_, " ",
                      consumed_);
}

absl::Status ChatSampler::RestoreState(std::string_view blob) {
  std::vector<std::string> f = absl::StrSplit(AbslView(blob), ' ');
  uint64_t seed;
  int64_t epoch, position, consumed;
  if (f.size() != 6 || f[0] != kStateMagic || !absl::SimpleAtoi(f[1], &seed) ||
      !absl::SimpleAtoi(f[3], &epoch) || !absl::SimpleAtoi(f[4], &position) ||
      !absl::SimpleAtoi(f[5], &consumed)) {
    return absl::InvalidArgumentError(absl::StrCat("chat sampler state '", AbslView(blob), "' is malformed"));
  }
  if (seed != options_.seed || f[2] != fingerprint_) {
    return absl::InvalidArgumentError(
        "chat sampler state was saved with another seed or other data (the JSONL or tokenizer changed)");
  }
  if (epoch < 0 || position < 0 || position >= examples() || consumed < 0) {
    return absl::InvalidArgumentError("chat sampler state is out of range");
  }
  epoch_ = epoch;
  position_ = position;
  consumed_ = consumed;
  return absl::OkStatus();
}

int64_t ChatSampler::tokens_per_epoch() const {
  int64_t total = 0;
  for (const TokenizedExample& e : examples_) total += static_cast<int64_t>(e.tokens.size());
  return total;
}

}  // namespace loom::data
