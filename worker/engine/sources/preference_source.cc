#include "worker/engine/sources/preference_source.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "data/hash.h"

namespace loom::engine {
namespace {

constexpr char kStateMagic[] = "loom.preference_source.v1";
constexpr char kCacheMagic[] = "loom.reference_logprobs.v1";

}  // namespace

data::TokenBatch PreferenceRows(const std::vector<data::PreferenceExample>& pairs, size_t first, size_t count,
                                int seq_len, int32_t pad_id) {
  data::TokenBatch b;
  b.Reset(static_cast<int>(2 * count), seq_len);
  for (size_t i = 0; i < count; ++i) {
    const data::PreferenceExample& p = pairs[first + i];
    const size_t chosen = 2 * i * seq_len, rejected = (2 * i + 1) * seq_len;
    FillCompletionRow(p.prompt, p.chosen, p.chosen_mask, seq_len, pad_id, &b.inputs[chosen], &b.targets[chosen]);
    FillCompletionRow(p.prompt, p.rejected, p.rejected_mask, seq_len, pad_id, &b.inputs[rejected], &b.targets[rejected]);
  }
  return b;
}

absl::StatusOr<std::vector<data::PreferenceExample>> ReadPreferenceExamples(const std::string& path,
                                                                           data::ChatTemplate chat_template,
                                                                           const data::Tokenizer& tokenizer) {
  LOOM_ASSIGN_OR_RETURN(std::vector<data::PreferencePair> raw, data::ReadPreferences(path));
  std::vector<data::PreferenceExample> out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    absl::StatusOr<data::PreferenceExample> e = data::TokenizePreference(raw[i], chat_template, tokenizer);
    if (!e.ok()) return absl::InvalidArgumentError(absl::StrCat(path, " pair ", i + 1, ": ", e.status().message()));
    out.push_back(std::move(*e));
  }
  if (out.empty()) return absl::FailedPreconditionError(absl::StrCat("preference data ", path, " has no pair"));
  return out;
}

absl::StatusOr<std::unique_ptr<PreferenceBatchSource>> PreferenceBatchSource::Open(
    const PreferenceSourceOptions& options, const data::Tokenizer& tokenizer) {
  if (options.epochs < 1) return absl::InvalidArgumentError("dataset.epochs must be at least 1");
  auto source = std::unique_ptr<PreferenceBatchSource>(new PreferenceBatchSource());
  source->options_ = options;
  LOOM_ASSIGN_OR_RETURN(source->pairs_, ReadPreferenceExamples(options.path, options.chat_template, tokenizer));
  source->pad_id_ = tokenizer.pad_id() >= 0 ? tokenizer.pad_id() : tokenizer.eos_id();
  uint64_t fingerprint = data::Hash64(tokenizer.hash());
  for (const data::PreferenceExample& p : source->pairs_) {
    for (const auto* v : {&p.prompt, &p.chosen, &p.rejected}) {
      fingerprint = data::Hash64(std::string_view(reinterpret_cast<const char*>(v->data()), v->size() * sizeof(int32_t)),
                           fingerprint);
    }
  }
  source->fingerprint_ = absl::StrCat(fingerprint);
  return source;
}

absl::Status PreferenceBatchSource::ComputeReference(Transformer& reference, const std::string& reference_id,
                                                     int seq_len, const std::string& cache_path,
                                                     Communicator* group) {
  const std::string header =
      absl::StrCat(kCacheMagic, " ", fingerprint_, " ", seq_len, " ", data::Hash64(reference_id), " ", pairs(), "\n");
  const size_t values = 2 * pairs_.size();
  reference_seq_len_ = seq_len;
  reference_from_cache_ = false;
  truncated_ = 0;
  for (const data::PreferenceExample& p : pairs_) {
    truncated_ += p.prompt.size() + std::max(p.chosen.size(), p.rejected.size()) > static_cast<size_t>(seq_len) + 1;
  }
  const int ranks = group ? group->size() : 1, rank = group ? group->rank() : 0;
  absl::StatusOr<std::string> cached = cache_path.empty() ? absl::NotFoundError("") : ReadFile(cache_path);
  double valid = cached.ok() && cached->size() == header.size() + values * sizeof(double) &&
                 cached->compare(0, header.size(), header) == 0;
  if (ranks > 1) LOOM_RETURN_IF_ERROR(group->AllReduceSum(&valid, 1));
  if (valid == ranks) {
    reference_.resize(values);
    std::memcpy(reference_.data(), cached->data() + header.size(), values * sizeof(double));
    reference_from_cache_ = true;
    return absl::OkStatus();
  }
  reference_.assign(values, 0.0);
  constexpr size_t kPairsPerBatch = 8;
  for (size_t first = 0, block = 0; first < pairs_.size(); first += kPairsPerBatch, ++block) {
    if (static_cast<int>(block % ranks) != rank) continue;
    const size_t count = std::min(pairs_.size() - first, kPairsPerBatch);
    const std::vector<double> sums = RowLogProbSums(reference, PreferenceRows(pairs_, first, count, seq_len, pad_id_));
    std::copy(sums.begin(), sums.end(), reference_.begin() + 2 * first);
  }
  if (ranks > 1) LOOM_RETURN_IF_ERROR(group->AllReduceSum(reference_.data(), static_cast<int64_t>(values)));
  if (cache_path.empty()) return absl::OkStatus();
  std::string bytes = header;
  bytes.append(reinterpret_cast<const char*>(reference_.data()), values * sizeof(double));
  const std::string temp = cache_path + ".tmp";
  std::filesystem::create_directories(std::filesystem::path(cache_path).parent_path());
  LOOM_RETURN_IF_ERROR(WriteFileDurably(temp, bytes));
  return RenameDurably(temp, cache_path);
}

const std::vector<uint32_t>& PreferenceBatchSource::Order(int64_t epoch) {
  if (order_epoch_ != epoch) {
    data::EpochOrder(pairs_.size(), options_.seed, 0x707265660000ull, epoch, &order_);
    order_epoch_ = epoch;
  }
  return order_;
}

absl::Status PreferenceBatchSource::Next(int seq_len, int global_sequences, int dp_rank, int dp_size,
                                         data::TokenBatch* out) {
  if (options_.with_reference && reference_.empty()) {
    return absl::FailedPreconditionError("the reference log-probabilities were not computed");
  }
  if (options_.with_reference && seq_len != reference_seq_len_) {
    return absl::FailedPreconditionError(absl::StrCat("a dpo stage trains at one seq_len (the reference was run at ",
                                                      reference_seq_len_, ", this step asks for ", seq_len, ")"));
  }
  if (global_sequences % (2 * dp_size) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "a dpo batch of ", global_sequences, " sequences does not split into whole pairs on ", dp_size,
        " ranks: global_batch_tokens / seq_len must be a multiple of 2 x dp"));
  }
  const int global_pairs = global_sequences / 2, rank_pairs = global_pairs / dp_size;
  std::vector<uint32_t> taken;
  for (int k = 0; k < global_pairs; ++k) {
    taken.push_back(Order(epoch_)[position_]);
    if (++position_ == pairs()) {
      position_ = 0;
      ++epoch_;
    }
  }
  std::vector<data::PreferenceExample> mine;
  out->reference_logprobs.clear();
  for (int k = dp_rank * rank_pairs; k < (dp_rank + 1) * rank_pairs; ++k) {
    mine.push_back(pairs_[taken[k]]);
  }
  *out = PreferenceRows(mine, 0, mine.size(), seq_len, pad_id_);
  for (int k = dp_rank * rank_pairs; k < (dp_rank + 1) * rank_pairs && options_.with_reference; ++k) {
    out->reference_logprobs.push_back(reference_[2 * taken[k]]);
    out->reference_logprobs.push_back(reference_[2 * taken[k] + 1]);
  }
  return absl::OkStatus();
}

std::string PreferenceBatchSource::SaveState() const {
  return absl::StrCat(kStateMagic, " ", options_.seed, " ", fingerprint_, " ", epoch_, " ", position_);
}

absl::Status PreferenceBatchSource::RestoreState(std::string_view state) {
  std::vector<std::string> f = absl::StrSplit(AbslView(state), ' ');
  uint64_t seed;
  int64_t epoch, position;
  if (f.size() != 5 || f[0] != kStateMagic || !absl::SimpleAtoi(f[1], &seed) || !absl::SimpleAtoi(f[3], &epoch) ||
      !absl::SimpleAtoi(f[4], &position)) {
    return absl::InvalidArgumentError(absl::StrCat("preference source state '", AbslView(state), "' is malformed"));
  }
  if (seed != options_.seed || f[2] != fingerprint_) {
    return absl::InvalidArgumentError(
        "preference source state was saved with another seed or other data (the JSONL or tokenizer changed)");
  }
  if (epoch < 0 || position < 0 || position >= pairs()) {
    return absl::InvalidArgumentError("preference source state is out of range");
  }
  epoch_ = epoch;
  position_ = position;
  return absl::OkStatus();
}

}  // namespace loom::engine
