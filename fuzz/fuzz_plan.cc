// Fuzzes plan parsing and validation: the bytes as a YAML (JSON is YAML) plan and as a textproto
// plan, through LoadPlanText (parse, expand repeats, validate, place errors), as the coordinator
// does with SubmitPlanRequest.plan_yaml. Every outcome must be a plan or an INVALID_ARGUMENT
// status; a crash, a sanitizer report or an exception escaping is a bug.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/plan_io.h"
#include "common/plan_validation.h"

namespace {

void Check(std::string_view text, loom::PlanFormat format) {
  absl::StatusOr<loom::v1::TrainingPlan> plan = loom::LoadPlanText(text, format, "fuzz.plan");
  if (plan.ok()) {
    // A plan LoadPlanText accepts must validate again without errors.
    if (!loom::ValidatePlan(*plan).empty()) std::abort();
  } else if (plan.status().code() != absl::StatusCode::kInvalidArgument) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  Check(text, loom::PlanFormat::kYaml);
  Check(text, loom::PlanFormat::kTextproto);
  return 0;
}
