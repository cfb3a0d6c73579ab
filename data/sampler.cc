#include "data/sampler.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "data/hash.h"
#include "data/shard.h"

namespace loom::data {
namespace {

constexpr char kStateMagic[] = "loom.sampler.v1";
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;  // 2^64 / golden ratio

}  // namespace

// One source: its documents as one stream, permuted per epoch, and the cursor into it.
struct BlendedSampler::Source {
  struct Doc {
    uint32_t shard;
    int64_t begin;
    int64_t length;
  };
  struct EpochOrder {
    int64_t epoch = -1;
    std::vector<uint32_t> order;  // document indices in stream order
    std::vector<int64_t> starts;  // stream offset of each position in `order`, plus the total
  };

  std::string name;
  uint64_t name_hash = 0;
  std::vector<std::unique_ptr<ShardReader>> shards;
  std::vector<Doc> docs;
  int64_t total = 0;  // tokens per epoch
  // Cursor and counters (the state).
  int64_t epoch = 0;
  int64_t offset = 0;  // in [0, total)
  int64_t drawn = 0;
  // The current and next epochs' orders (a window can run into the next epoch).
  EpochOrder cache[2];

  const EpochOrder& Order(int64_t e, uint64_t seed) {
    for (EpochOrder& c : cache) {
      if (c.epoch == e) return c;
    }
    EpochOrder& slot = cache[0].epoch < cache[1].epoch ? cache[0] : cache[1];
    slot.epoch = e;
    slot.order.resize(docs.size());
    for (size_t i = 0; i < docs.size(); ++i) slot.order[i] = static_cast<uint32_t>(i);
    SplitMix64 rng(Mix64(seed ^ Mix64(name_hash ^ Mix64(static_cast<uint64_t>(e)))));
    for (size_t i = docs.size(); i > 1; --i) std::swap(slot.order[i - 1], slot.order[rng.Below(i)]);
    slot.starts.resize(docs.size() + 1);
    slot.starts[0] = 0;
    for (size_t i = 0; i < docs.size(); ++i) slot.starts[i + 1] = slot.starts[i] + docs[slot.order[i]].length;
    return slot;
  }

  // Copies `count` tokens of the stream starting at (e, off) into out.
  void Read(int64_t e, int64_t off, int64_t count, uint64_t seed, int32_t* out) {
    while (count > 0) {
      const EpochOrder& ord = Order(e, seed);
      size_t k = static_cast<size_t>(std::upper_bound(ord.starts.begin(), ord.starts.end(), off) -
                                     ord.starts.begin()) -
                 1;
      while (count > 0 && k < docs.size()) {
        const Doc& d = docs[ord.order[k]];
        const int64_t within = off - ord.starts[k];
        const int64_t n = std::min(count, d.length - within);
        shards[d.shard]->Copy(d.begin + within, n, out);
        out += n;
        count -= n;
        off += n;
        ++k;
      }
      if (off >= total) {
        ++e;
        off = 0;
      }
    }
  }

  void Advance(int64_t n) {
    offset += n;
    drawn += n;
    if (offset >= total) {
      epoch += offset / total;
      offset %= total;
    }
  }
};

std::vector<SamplerSource> PreparedSources(const std::string& data_dir, const std::vector<std::string>& names,
                                           const std::string& split) {
  std::vector<SamplerSource> out;
  for (const std::string& name : names)
    out.push_back({name, {absl::StrCat(data_dir, "/", name, "/", split)}});
  return out;
}

BlendedSampler::~BlendedSampler() = default;

absl::StatusOr<std::unique_ptr<BlendedSampler>> BlendedSampler::Open(const SamplerOptions& options) {
  if (options.sources.empty()) return absl::InvalidArgumentError("sampler: no sources");
  if (options.mix.empty())
    return absl::InvalidArgumentError("sampler: the data mix is empty (give at least one entry at 0 tokens)");
  auto sampler = std::unique_ptr<BlendedSampler>(new BlendedSampler());
  sampler->seed_ = options.seed;
  sampler->phase_ = Mix64(options.seed ^ 0x6C6F6F6D6D6978ull);
  const ShardExpectation expected{options.expected_tokenizer_hash, options.expected_vocab_size};
  std::map<std::string, int> index;
  Sha256 fingerprint;
  for (const SamplerSource& spec : options.sources) {
    if (index.contains(spec.name))
      return absl::InvalidArgumentError(absl::StrCat("sampler: source '", spec.name, "' is listed twice"));
    auto source = std::make_unique<Source>();
    source->name = spec.name;
    source->name_hash = Hash64(spec.name);
    for (const std::string& dir : spec.shard_dirs) {
      LOOM_ASSIGN_OR_RETURN(auto shards, OpenShardDir(dir, expected));
      for (auto& shard : shards) {
        if (options.max_vocab_size > 0 && shard->vocab_size() > options.max_vocab_size) {
          return absl::FailedPreconditionError(absl::StrCat("token shard ", shard->path(), " has vocab size ",
                                                            shard->vocab_size(), ", more than the model's ",
                                                            options.max_vocab_size, " embedding rows"));
        }
        const uint32_t s = static_cast<uint32_t>(source->shards.size());
        for (int64_t d = 0; d < shard->doc_count(); ++d) {
          const int64_t length = shard->doc_end(d) - shard->doc_begin(d);
          if (length > 0) source->docs.push_back({s, shard->doc_begin(d), length});
        }
        source->total += shard->token_count();
        fingerprint.Update(absl::StrCat(spec.name, ":", shard->token_count(), ":", shard->doc_count(), ":",
                                        shard->tokenizer_hash(), ";"));
        source->shards.push_back(std::move(shard));
      }
    }
    if (source->total == 0) {
      return absl::FailedPreconditionError(absl::StrCat("sampler: source '", spec.name,
                                                        "' has no tokens (shards in ",
                                                        absl::StrJoin(spec.shard_dirs, ", "), ")"));
    }
    index[spec.name] = static_cast<int>(sampler->sources_.size());
    sampler->sources_.push_back(std::move(source));
  }
  sampler->fingerprint_ = fingerprint.HexDigest().substr(0, 16);

  int64_t previous = -1;
  for (size_t e = 0; e < options.mix.size(); ++e) {
    const MixPoint& point = options.mix[e];
    if (e == 0 && point.at_tokens != 0) {
      return absl::InvalidArgumentError(absl::StrCat("sampler: data_mix[0].at_tokens is ", point.at_tokens,
                                                     "; the first entry must be at 0"));
    }
    if (point.at_tokens <= previous) {
      return absl::InvalidArgumentError(absl::StrCat("sampler: data_mix[", e, "].at_tokens ", point.at_tokens,
                                                     " must be greater than the entry before (", previous,
                                                     ")"));
    }
    previous = point.at_tokens;
    std::vector<double> weights(sampler->sources_.size(), 0.0);
    double sum = 0;
    for (const auto& [name, weight] : point.weights) {
      auto it = index.find(name);
      if (it == index.end()) {
        std::vector<std::string> names;
        for (const auto& [n, i] : index) names.push_back(n);
        return absl::InvalidArgumentError(absl::StrCat("sampler: data_mix[", e, "].weights names source '",
                                                       name, "', which is not among the prepared sources (",
                                                       absl::StrJoin(names, ", "), ")"));
      }
      if (!(weight >= 0) || !std::isfinite(weight)) {
        return absl::InvalidArgumentError(absl::StrCat("sampler: data_mix[", e, "].weights[", name, "] is ",
                                                       weight, "; weights must be finite and >= 0"));
      }
      weights[it->second] = weight;
      sum += weight;
    }
    if (!(sum > 0))
      return absl::InvalidArgumentError(absl::StrCat("sampler: data_mix[", e, "].weights sum to 0"));
    std::vector<double> cumulative(weights.size());
    double running = 0;
    for (size_t i = 0; i < weights.size(); ++i) cumulative[i] = (running += weights[i] / sum);
    // The last source with a positive weight takes u up to 1 exactly, whatever the rounding.
    for (size_t i = weights.size(); i-- > 0;) {
      if (weights[i] > 0) {
        for (size_t j = i; j < weights.size(); ++j) cumulative[j] = 2.0;
        break;
      }
    }
    sampler->mix_at_.push_back(point.at_tokens);
    sampler->mix_cum_.push_back(std::move(cumulative));
  }
  return sampler;
}

const std::vector<double>& BlendedSampler::CumulativeAt(int64_t token_offset) const {
  const size_t e =
      static_cast<size_t>(std::upper_bound(mix_at_.begin(), mix_at_.end(), token_offset) - mix_at_.begin()) -
      1;
  return mix_cum_[e];
}

int BlendedSampler::ChooseSource(int64_t token_offset, int64_t sequence) const {
  const std::vector<double>& cumulative = CumulativeAt(token_offset);
  const uint64_t bits = phase_ + static_cast<uint64_t>(sequence) * kGolden;
  const double u = static_cast<double>(bits >> 11) * 0x1.0p-53;
  // Weights of 0 give empty intervals, so such a source is never chosen.
  return static_cast<int>(std::upper_bound(cumulative.begin(), cumulative.end(), u) - cumulative.begin());
}

absl::Status BlendedSampler::NextBatch(int seq_len, int global_sequences, int dp_rank, int dp_size,
                                       TokenBatch* out) {
  if (seq_len < 1)
    return absl::InvalidArgumentError(absl::StrCat("sampler: seq_len ", seq_len, " must be >= 1"));
  if (dp_size < 1 || dp_rank < 0 || dp_rank >= dp_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampler: dp_rank ", dp_rank, " is not in [0, dp_size ", dp_size, ")"));
  }
  if (global_sequences < 1 || global_sequences % dp_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat("sampler: global batch of ", global_sequences,
                                                   " sequences does not split into ", dp_size,
                                                   " equal data-parallel slices"));
  }
  const int per_rank = global_sequences / dp_size;
  const int first = dp_rank * per_rank;
  out->Reset(per_rank, seq_len);
  std::vector<int32_t> window(static_cast<size_t>(seq_len) + 1);
  for (int row = 0; row < global_sequences; ++row) {
    const int64_t start = tokens_ + int64_t{row} * seq_len;
    Source& source = *sources_[ChooseSource(start, sequences_ + row)];
    if (row >= first && row < first + per_rank) {
      source.Read(source.epoch, source.offset, seq_len + 1, seed_, window.data());
      int32_t* inputs = out->inputs.data() + static_cast<size_t>(row - first) * seq_len;
      int32_t* targets = out->targets.data() + static_cast<size_t>(row - first) * seq_len;
      std::copy(window.begin(), window.end() - 1, inputs);
      std::copy(window.begin() + 1, window.end(), targets);
    }
    source.Advance(seq_len);
  }
  tokens_ += int64_t{global_sequences} * seq_len;
  sequences_ += global_sequences;
  return absl::OkStatus();
}

std::string BlendedSampler::SaveState() const {
  std::string blob = absl::StrCat(kStateMagic, "\nseed ", seed_, "\ndata ", fingerprint_, "\ntokens ",
                                  tokens_, "\nsequences ", sequences_, "\n");
  for (const auto& s : sources_)
    absl::StrAppend(&blob, "source ", s->name, " ", s->epoch, " ", s->offset, " ", s->drawn, "\n");
  return blob;
}

absl::Status BlendedSampler::RestoreState(std::string_view blob) {
  auto bad = [](std::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("sampler state: ", AbslView(why)));
  };
  std::vector<std::string> lines = absl::StrSplit(AbslView(blob), '\n', absl::SkipEmpty());
  if (lines.empty() || lines[0] != kStateMagic) return bad(absl::StrCat("does not start with ", kStateMagic));
  uint64_t seed = 0;
  int64_t tokens = -1, sequences = -1;
  std::string data;
  std::map<std::string, std::array<int64_t, 3>> cursors;
  for (size_t i = 1; i < lines.size(); ++i) {
    std::vector<std::string> f = absl::StrSplit(lines[i], ' ');
    bool ok = true;
    if (f[0] == "seed" && f.size() == 2) {
      ok = absl::SimpleAtoi(f[1], &seed);
    } else if (f[0] == "data" && f.size() == 2) {
      data = f[1];
    } else if (f[0] == "tokens" && f.size() == 2) {
      ok = absl::SimpleAtoi(f[1], &tokens);
    } else if (f[0] == "sequences" && f.size() == 2) {
      ok = absl::SimpleAtoi(f[1], &sequences);
    } else if (f[0] == "source" && f.size() == 5) {
      std::array<int64_t, 3> v{};
      ok = absl::SimpleAtoi(f[2], &v[0]) && absl::SimpleAtoi(f[3], &v[1]) && absl::SimpleAtoi(f[4], &v[2]);
      cursors[f[1]] = v;
    } else {
      ok = false;
    }
    if (!ok) return bad(absl::StrCat("line ", i + 1, " '", lines[i], "' is malformed"));
  }
  if (seed != seed_)
    return bad(absl::StrCat("was saved with seed ", seed, ", this sampler has seed ", seed_));
  if (data != fingerprint_) {
    return bad(absl::StrCat("was saved over other data (fingerprint ", data, ", these shards have ",
                            fingerprint_, "): the prepared data changed since the checkpoint"));
  }
  if (tokens < 0 || sequences < 0) return bad("tokens or sequences missing");
  if (cursors.size() != sources_.size())
    return bad(absl::StrCat("has ", cursors.size(), " sources, this sampler ", sources_.size()));
  for (const auto& s : sources_) {
    auto it = cursors.find(s->name);
    if (it == cursors.end()) return bad(absl::StrCat("has no cursor for source '", s->name, "'"));
    const auto& [epoch, offset, drawn] = it->second;
    if (epoch < 0 || offset < 0 || offset >= s->total || drawn < 0)
      return bad(absl::StrCat("cursor of source '", s->name, "' is out of range"));
  }
  for (const auto& s : sources_) {
    const auto& v = cursors[s->name];
    s->epoch = v[0];
    s->offset = v[1];
    s->drawn = v[2];
  }
  tokens_ = tokens;
  sequences_ = sequences;
  return absl::OkStatus();
}

std::map<std::string, double> BlendedSampler::CurrentWeights() const {
  const std::vector<double>& cumulative = CumulativeAt(tokens_);
  std::map<std::string, double> out;
  double previous = 0;
  for (size_t i = 0; i < sources_.size(); ++i) {
    const double c = std::min(cumulative[i], 1.0);
    out[sources_[i]->name] = std::max(0.0, c - previous);
    previous = std::max(previous, c);
  }
  return out;
}

std::map<std::string, int64_t> BlendedSampler::SourceTokens() const {
  std::map<std::string, int64_t> out;
  for (const auto& s : sources_) out[s->name] = s->drawn;
  return out;
}

std::map<std::string, int64_t> BlendedSampler::SourceEpochs() const {
  std::map<std::string, int64_t> out;
  for (const auto& s : sources_) out[s->name] = s->epoch;
  return out;
}

std::map<std::string, int64_t> BlendedSampler::SourceSizes() const {
  std::map<std::string, int64_t> out;
  for (const auto& s : sources_) out[s->name] = s->total;
  return out;
}

}  // namespace loom::data
