#include "worker/engine/sources/batch_source.h"

#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/strings.h"

namespace loom::engine {

TokenStreamSource::TokenStreamSource(std::vector<int32_t> tokens) : tokens_(std::move(tokens)) {}

absl::StatusOr<std::unique_ptr<TokenStreamSource>> TokenStreamSource::FromTextFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  if (text->size() < 2)
    return absl::InvalidArgumentError(absl::StrCat(path, " has fewer than 2 bytes of text"));
  std::vector<int32_t> tokens(text->size());
  for (size_t i = 0; i < text->size(); ++i) tokens[i] = static_cast<unsigned char>((*text)[i]);
  return std::make_unique<TokenStreamSource>(std::move(tokens));
}

absl::StatusOr<std::unique_ptr<TokenStreamSource>> TokenStreamSource::FromTokenFile(const std::string& path,
                                                                                    int vocab) {
  absl::StatusOr<std::string> bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  if (bytes->size() % 4 != 0 || bytes->size() < 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " is not a token file: expected little-endian uint32 ids, got ", bytes->size(), " bytes"));
  }
  std::vector<int32_t> tokens(bytes->size() / 4);
  for (size_t i = 0; i < tokens.size(); ++i) {
    uint32_t id;
    std::memcpy(&id, bytes->data() + 4 * i, 4);
    if (id >= static_cast<uint32_t>(vocab)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": token ", i, " is ", id, ", not below the model's vocab_size ", vocab));
    }
    tokens[i] = static_cast<int32_t>(id);
  }
  return std::make_unique<TokenStreamSource>(std::move(tokens));
}

absl::Status TokenStreamSource::Next(int seq_len, int global_sequences, int dp_rank, int dp_size,
                                     data::TokenBatch* out) {
  if (dp_size < 1 || global_sequences % dp_size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("global batch of ", global_sequences, " sequences does not split over dp=", dp_size));
  }
  const int64_t n = size();
  const int per_rank = global_sequences / dp_size;
  out->batch_size = per_rank;
  out->seq_len = seq_len;
  out->inputs.resize(static_cast<size_t>(per_rank) * seq_len);
  out->targets.resize(out->inputs.size());
  out->segment_ids.clear();
  out->positions.clear();
  for (int s = 0; s < per_rank; ++s) {
    const int64_t start = cursor_ + static_cast<int64_t>(dp_rank * per_rank + s) * seq_len;
    for (int t = 0; t < seq_len; ++t) {
      out->inputs[static_cast<size_t>(s) * seq_len + t] = tokens_[(start + t) % n];
      out->targets[static_cast<size_t>(s) * seq_len + t] = tokens_[(start + t + 1) % n];
    }
  }
  cursor_ = (cursor_ + static_cast<int64_t>(global_sequences) * seq_len) % n;
  return absl::OkStatus();
}

std::string TokenStreamSource::SaveState() const { return absl::StrCat("stream:", cursor_); }

absl::Status TokenStreamSource::RestoreState(std::string_view state) {
  if (state.substr(0, 7) != "stream:") {
    return absl::InvalidArgumentError("data state was not written by a token-stream source");
  }
  int64_t cursor;
  if (!absl::SimpleAtoi(AbslView(state.substr(7)), &cursor) || cursor < 0 || cursor >= size()) {
    return absl::InvalidArgumentError(absl::StrCat("bad token-stream data state '", AbslView(state), "'"));
  }
  cursor_ = cursor;
  return absl::OkStatus();
}

data::TokenBatch SliceBatch(const data::TokenBatch& batch, int first, int count) {
  data::TokenBatch out;
  out.batch_size = count;
  out.seq_len = batch.seq_len;
  const size_t begin = static_cast<size_t>(first) * batch.seq_len,
               end = begin + static_cast<size_t>(count) * batch.seq_len;
  auto slice = [&](const std::vector<int32_t>& v, std::vector<int32_t>* o) {
    if (!v.empty()) o->assign(v.begin() + begin, v.begin() + end);
  };
  slice(batch.inputs, &out.inputs);
  slice(batch.targets, &out.targets);
  slice(batch.segment_ids, &out.segment_ids);
  slice(batch.positions, &out.positions);
  auto rows = [&](const std::vector<double>& v, std::vector<double>* o) {
    if (!v.empty()) o->assign(v.begin() + first, v.begin() + first + count);
  };
  rows(batch.reference_logprobs, &out.reference_logprobs);
  rows(batch.advantages, &out.advantages);
  return out;
}

}  // namespace loom::engine
