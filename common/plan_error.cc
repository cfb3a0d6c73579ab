#include "common/plan_error.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/strings.h"

namespace loom {
namespace {

bool IsPlainKey(const std::string& key) {
  if (key.empty()) return false;
  for (char c : key) {
    if (!absl::ascii_isalnum(c) && c != '_') return false;
  }
  return true;
}

}  // namespace

std::string FormatPlanError(const PlanError& error, std::string_view source) {
  std::string out;
  if (!source.empty()) absl::StrAppend(&out, AbslView(source), ":");
  if (error.line > 0) absl::StrAppend(&out, error.line, ":", error.column, ":");
  if (!out.empty()) out.push_back(' ');
  if (!error.path.empty()) absl::StrAppend(&out, error.path, ": ");
  absl::StrAppend(&out, error.message);
  if (!error.hint.empty()) absl::StrAppend(&out, " (hint: ", error.hint, ")");
  return out;
}

std::string FormatPlanErrors(const std::vector<PlanError>& errors, std::string_view source) {
  std::string out;
  for (const PlanError& e : errors) absl::StrAppend(&out, FormatPlanError(e, source), "\n");
  return out;
}

absl::Status PlanErrorsToStatus(const std::vector<PlanError>& errors, std::string_view source) {
  if (errors.empty()) return absl::OkStatus();
  std::string head = absl::StrCat(errors.size(), errors.size() == 1 ? " error" : " errors");
  if (!source.empty()) absl::StrAppend(&head, " in ", AbslView(source));
  return absl::InvalidArgumentError(absl::StrCat(head, ":\n", FormatPlanErrors(errors, source)));
}

std::string FieldPath(const std::string& parent, const std::string& field) {
  return parent.empty() ? field : absl::StrCat(parent, ".", field);
}

std::string IndexPath(const std::string& parent, int index) { return absl::StrCat(parent, "[", index, "]"); }

std::string KeyPath(const std::string& parent, const std::string& key) {
  return IsPlainKey(key) ? FieldPath(parent, key) : absl::StrCat(parent, "[\"", key, "\"]");
}

}  // namespace loom
