// Reading plans: YAML (the usual form), JSON, or textproto -> loom.v1.TrainingPlan.
//
// Parsing reports every problem it finds with its field path and, for YAML/JSON, its line and
// column. LoadPlan also validates (plan_validation.h) and maps validation errors back to the
// lines they came from, so `loom validate` and `loom submit` print the same messages as the
// coordinator would return.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/plan_error.h"
#include "loom/v1/plan.pb.h"

namespace loom {

enum class PlanFormat { kAuto, kYaml, kJson, kTextproto };

// From a file name: .yaml/.yml -> YAML, .json -> JSON, .textproto/.txtpb/.pbtxt -> textproto;
// anything else -> YAML.
PlanFormat PlanFormatFromPath(std::string_view path);

struct ParsedPlan {
  loom::v1::TrainingPlan plan;
  // Parse errors; when non-empty, `plan` is incomplete.
  std::vector<PlanError> errors;
  // Field path -> (line, column) of the value in the text (YAML and JSON only).
  std::map<std::string, std::pair<int, int>> locations;
};

// Parses `text`; never fails outright: every problem is in `errors`. Text over kMaxPlanBytes is
// refused without parsing.
ParsedPlan ParsePlanText(std::string_view text, PlanFormat format);

// Reads and parses a file. Fails only when the file cannot be read.
absl::StatusOr<ParsedPlan> ReadPlanFile(const std::string& path);

// Sets line/column of errors that have none, from the location of their path, its closest
// parent, or, for a value a stage inherited, the same path under `defaults`.
void AttachLocations(const std::map<std::string, std::pair<int, int>>& locations,
                     std::vector<PlanError>* errors);

// Reads, parses and validates a plan file: the plan, or INVALID_ARGUMENT listing every error as
// "file:line:col: path: message (hint: ...)", one per line.
absl::StatusOr<loom::v1::TrainingPlan> LoadPlan(const std::string& path);

// LoadPlan for text already in memory (the coordinator reading SubmitPlanRequest.plan_yaml):
// parses and validates `text`, naming `source` (a file name, may be empty) in every error.
absl::StatusOr<loom::v1::TrainingPlan> LoadPlanText(std::string_view text, PlanFormat format,
                                                    std::string_view source);

}  // namespace loom
