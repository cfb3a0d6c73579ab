// One problem found in a plan, with where it is and how to fix it. Parsing and validation both
// return every problem they find, not only the first, so a person fixes a plan in one pass.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace loom {

struct PlanError {
  // Field path in the plan, e.g. "stages[1].batch_ramp[2].at_tokens"; empty for the whole file.
  std::string path;
  // What is wrong, e.g. "500000 is not after the previous entry (800000)".
  std::string message;
  // How to fix it; may be empty.
  std::string hint;
  // Where in the plan file (1-based), when known; 0 when not.
  int line = 0;
  int column = 0;
};

// "plan.yaml:31:7: stages[1].batch_ramp[2].at_tokens: 500000 is not after ... (hint: ...)".
// `source` (a file name) may be empty.
std::string FormatPlanError(const PlanError& error, std::string_view source = {});

// One error per line, in order.
std::string FormatPlanErrors(const std::vector<PlanError>& errors, std::string_view source = {});

// INVALID_ARGUMENT whose message is "N error(s) in <source>:\n" followed by FormatPlanErrors;
// OK when `errors` is empty.
absl::Status PlanErrorsToStatus(const std::vector<PlanError>& errors, std::string_view source = {});

// Field paths as every plan error writes them: "a.b", "a[3]", and map keys as `a.key` or
// `a["odd key"]`.
std::string FieldPath(const std::string& parent, const std::string& field);
std::string IndexPath(const std::string& parent, int index);
std::string KeyPath(const std::string& parent, const std::string& key);

}  // namespace loom
