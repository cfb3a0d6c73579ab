#include "common/proto_names.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace loom {
namespace {

// "StageKind" -> "STAGE_KIND_", "Type" -> "TYPE_".
std::string ValuePrefix(const google::protobuf::EnumDescriptor* type) {
  std::string prefix;
  const std::string& name = type->name();
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (i > 0 && absl::ascii_isupper(c)) prefix.push_back('_');
    prefix.push_back(absl::ascii_toupper(c));
  }
  prefix.push_back('_');
  return prefix;
}

bool IsUnspecified(const google::protobuf::EnumValueDescriptor* value) {
  return value->number() == 0 && absl::EndsWith(value->name(), "_UNSPECIFIED");
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

}  // namespace

std::string EnumDisplayName(const google::protobuf::EnumValueDescriptor* value) {
  std::string name = value->name();
  const std::string prefix = ValuePrefix(value->type());
  if (absl::StartsWith(name, prefix)) name = name.substr(prefix.size());
  return absl::AsciiStrToLower(name);
}

const google::protobuf::EnumValueDescriptor* ParseEnumDisplayName(
    const google::protobuf::EnumDescriptor* type, std::string_view text) {
  std::string upper = absl::AsciiStrToUpper(std::string(text));
  std::replace(upper.begin(), upper.end(), '-', '_');
  for (const std::string& candidate : {ValuePrefix(type) + upper, upper}) {
    const auto* value = type->FindValueByName(candidate);
    if (value != nullptr && !IsUnspecified(value)) return value;
  }
  return nullptr;
}

std::string EnumChoices(const google::protobuf::EnumDescriptor* type) {
  std::vector<std::string> names;
  for (int i = 0; i < type->value_count(); ++i) {
    if (!IsUnspecified(type->value(i))) names.push_back(EnumDisplayName(type->value(i)));
  }
  return absl::StrJoin(names, ", ");
}

std::string DidYouMean(std::string_view word, const std::vector<std::string>& candidates) {
  const std::string lower = absl::AsciiStrToLower(std::string(word));
  const std::string* best = nullptr;
  size_t best_distance = 0;
  for (const std::string& c : candidates) {
    const size_t d = EditDistance(lower, absl::AsciiStrToLower(c));
    if (best == nullptr || d < best_distance) {
      best = &c;
      best_distance = d;
    }
  }
  // Allow about one edit per four characters, at least one, at most three.
  const size_t allowed = std::clamp<size_t>(word.size() / 4, 1, 3);
  if (best == nullptr || best_distance > allowed) return "";
  return absl::StrCat("did you mean '", *best, "'?");
}

}  // namespace loom
