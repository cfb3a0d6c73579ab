#include "worker/engine/sources/chat_source.h"

#include "absl/strings/str_cat.h"

namespace loom::engine {

absl::StatusOr<std::unique_ptr<ChatBatchSource>> ChatBatchSource::Open(const loom::v1::Stage& stage,
                                                                       const std::string& jsonl,
                                                                       const data::Tokenizer& tokenizer,
                                                                       uint64_t seed) {
  data::ChatSamplerOptions o;
  o.path = jsonl;
  o.chat_template = stage.sft().template_() == loom::v1::SftConfig::TEMPLATE_ALPACA
                        ? data::ChatTemplate::kAlpaca
                        : data::ChatTemplate::kChatML;
  o.packing = stage.sft().has_packing() ? stage.sft().packing() : true;
  o.seed = seed;
  absl::StatusOr<std::unique_ptr<data::ChatSampler>> sampler = data::ChatSampler::Open(o, tokenizer);
  if (!sampler.ok()) return sampler.status();
  const int epochs = stage.dataset().has_epochs() ? stage.dataset().epochs() : 1;
  if (epochs < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("stage '", stage.name(), "': dataset.epochs must be at least 1"));
  }
  return std::unique_ptr<ChatBatchSource>(new ChatBatchSource(std::move(*sampler), epochs));
}

}  // namespace loom::engine
