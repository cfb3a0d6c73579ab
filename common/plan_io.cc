#include "common/plan_io.h"
#include "common/plan_repeat.h"

#include <fstream>
#include <sstream>

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>
#include <yaml-cpp/yaml.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/plan_validation.h"
#include "common/yaml_proto.h"

namespace loom {
namespace {

class CollectErrors : public google::protobuf::io::ErrorCollector {
 public:
  explicit CollectErrors(std::vector<PlanError>* errors) : errors_(errors) {}
  void AddError(int line, int column, const std::string& message) override {
    errors_->push_back(PlanError{"", message, "", line + 1, column + 1});
  }
  void AddWarning(int line, int column, const std::string& message) override {}

 private:
  std::vector<PlanError>* errors_;
};

void ParseYaml(std::string_view text, ParsedPlan* out) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    PlanError error{"", absl::StrCat("not valid YAML: ", e.msg), "check indentation and quoting here"};
    if (!e.mark.is_null()) {
      error.line = e.mark.line + 1;
      error.column = e.mark.column + 1;
    }
    out->errors.push_back(std::move(error));
    return;
  } catch (const std::exception& e) {
    out->errors.push_back(PlanError{"", absl::StrCat("cannot parse the plan: ", e.what())});
    return;
  }
  if (root.IsNull()) {
    out->errors.push_back(PlanError{"", "the plan is empty", "see examples/plans/ for complete plans"});
    return;
  }
  YamlProtoReader reader;
  try {
    reader.Read(root, &out->plan);
  } catch (const std::exception& e) {  // yaml-cpp may throw on malformed nodes
    out->errors.push_back(PlanError{"", absl::StrCat("cannot read the plan: ", e.what())});
  }
  out->errors.insert(out->errors.end(), reader.errors().begin(), reader.errors().end());
  for (const auto& [path, where] : reader.locations()) {
    out->locations[path] = {where.line, where.column};
  }
}

void ParseTextproto(std::string_view text, ParsedPlan* out) {
  google::protobuf::TextFormat::Parser parser;
  CollectErrors collector(&out->errors);
  parser.RecordErrorsTo(&collector);
  if (!parser.ParseFromString(std::string(text), &out->plan) && out->errors.empty()) {
    out->errors.push_back(PlanError{"", "not a valid textproto TrainingPlan"});
  }
}

}  // namespace

PlanFormat PlanFormatFromPath(std::string_view path) {
  const std::string lower = absl::AsciiStrToLower(std::string(path));
  if (absl::EndsWith(lower, ".json")) return PlanFormat::kJson;
  if (absl::EndsWith(lower, ".textproto") || absl::EndsWith(lower, ".txtpb") ||
      absl::EndsWith(lower, ".pbtxt")) {
    return PlanFormat::kTextproto;
  }
  return PlanFormat::kYaml;
}

ParsedPlan ParsePlanText(std::string_view text, PlanFormat format) {
  ParsedPlan out;
  if (text.size() > static_cast<size_t>(kMaxPlanBytes)) {
    out.errors.push_back(
        PlanError{"", absl::StrCat("the plan is ", text.size(), " bytes; the limit is ", kMaxPlanBytes),
                  "a plan describes stages; data belongs in `loom data`"});
    return out;
  }
  if (format == PlanFormat::kTextproto) {
    ParseTextproto(text, &out);
  } else {
    ParseYaml(text, &out);  // JSON is YAML
  }
  // Rounds written once become plain stages before anything reads them.
  if (out.errors.empty()) out.errors = ExpandRepeats(&out.plan);
  return out;
}

absl::StatusOr<ParsedPlan> ReadPlanFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open plan file ", path));
  // Read at most one byte past the limit: enough to refuse an oversized file.
  std::string text(static_cast<size_t>(kMaxPlanBytes) + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading plan file ", path));
  return ParsePlanText(text, PlanFormatFromPath(path));
}

void AttachLocations(const std::map<std::string, std::pair<int, int>>& locations,
                     std::vector<PlanError>* errors) {
  auto lookup = [&](std::string path) -> const std::pair<int, int>* {
    while (true) {
      if (auto it = locations.find(path); it != locations.end()) return &it->second;
      const size_t cut = path.find_last_of(".[");
      if (cut == std::string::npos || cut == 0) return nullptr;
      path.resize(cut);
    }
  };
  for (PlanError& error : *errors) {
    if (error.line > 0 || error.path.empty()) continue;
    std::string path = error.path;
    const std::pair<int, int>* where = nullptr;
    if (auto exact = locations.find(path); exact != locations.end()) where = &exact->second;
    // A stage's value may have come from defaults: "stages[2].optimizer.lr" <- "defaults.optimizer.lr".
    if (where == nullptr && absl::StartsWith(path, "stages[")) {
      if (const size_t dot = path.find("]."); dot != std::string::npos) {
        const std::string in_defaults = absl::StrCat("defaults.", path.substr(dot + 2));
        if (auto it = locations.find(in_defaults); it != locations.end()) where = &it->second;
      }
    }
    if (where == nullptr) where = lookup(path);
    if (where != nullptr) {
      error.line = where->first;
      error.column = where->second;
    }
  }
}

namespace {

// Validates a parsed plan and places its errors: the plan, or INVALID_ARGUMENT naming `source`.
absl::StatusOr<loom::v1::TrainingPlan> CheckParsed(ParsedPlan parsed, std::string_view source) {
  std::vector<PlanError> errors = std::move(parsed.errors);
  if (errors.empty()) errors = ValidatePlan(parsed.plan);
  AttachLocations(parsed.locations, &errors);
  if (!errors.empty()) return PlanErrorsToStatus(errors, source);
  return std::move(parsed.plan);
}

}  // namespace

absl::StatusOr<loom::v1::TrainingPlan> LoadPlan(const std::string& path) {
  absl::StatusOr<ParsedPlan> parsed = ReadPlanFile(path);
  if (!parsed.ok()) return parsed.status();
  return CheckParsed(std::move(*parsed), path);
}

absl::StatusOr<loom::v1::TrainingPlan> LoadPlanText(std::string_view text, PlanFormat format,
                                                    std::string_view source) {
  return CheckParsed(ParsePlanText(text, format), source);
}

}  // namespace loom
