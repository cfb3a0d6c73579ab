// How Loom shows protobuf enum values and field names to people, and reads them back.
//
// Enum values are written in lower case without their type prefix: StageKind's
// STAGE_KIND_CONTINUED_PRETRAIN is "continued_pretrain", OptimizerConfig.Type's TYPE_ADAMW is
// "adamw". The *_UNSPECIFIED value of every enum means "use the default" and is never written.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/generated_enum_reflection.h>

namespace loom {

// "continued_pretrain" for STAGE_KIND_CONTINUED_PRETRAIN.
std::string EnumDisplayName(const google::protobuf::EnumValueDescriptor* value);

// Finds the value written as `text` ("pretrain", "PRETRAIN", "STAGE_KIND_PRETRAIN", "ties"),
// case-insensitively, with '-' read as '_'. Never returns the *_UNSPECIFIED value.
const google::protobuf::EnumValueDescriptor* ParseEnumDisplayName(
    const google::protobuf::EnumDescriptor* type, std::string_view text);

// "pretrain, continued_pretrain, ..." (every value but *_UNSPECIFIED).
std::string EnumChoices(const google::protobuf::EnumDescriptor* type);

template <typename E>
std::string EnumName(E value) {
  const auto* type = google::protobuf::GetEnumDescriptor<E>();
  const auto* v = type->FindValueByNumber(static_cast<int>(value));
  return v == nullptr ? std::to_string(static_cast<int>(value)) : EnumDisplayName(v);
}

// "did you mean 'lr'?" when a candidate is within a small edit distance of `word`, else "".
std::string DidYouMean(std::string_view word, const std::vector<std::string>& candidates);

}  // namespace loom
