// Internal to common/: the validator behind ValidatePlan (plan_validation.h). Plan-, model- and
// stage-level rules, and the references a stage makes (common/stage_inputs.h), live in
// plan_validation.cc; the rules of kind-specific blocks (distill, dpo, average, merge,
// rejection_sampling, rl) and of which kinds run under which layouts in plan_validation_kinds.cc.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <google/protobuf/message.h>

#include "common/plan_error.h"
#include "loom/v1/plan.pb.h"

namespace loom::internal {

// Which kind of result a checkpoint reference must point at.
enum class Need { kModel, kRewardModel };

// "pretrain", "sft": a kind as plans write it.
std::string KindName(loom::v1::StageKind kind);
// "an average stage", "a pretrain stage", "an sft stage" (said as letters): the article and kind.
std::string AKind(loom::v1::StageKind kind);

class Validator {
 public:
  explicit Validator(const loom::v1::TrainingPlan& plan) : plan_(plan) {}

  // Every problem of the plan, in field order.
  std::vector<PlanError> Run();

 private:
  void Error(std::string path, std::string message, std::string hint = "");
  // plan_validation.cc: sizes, plan-level fields, models, and the rules every stage shares.
  void CheckSizes(const google::protobuf::Message& message, const std::string& path);
  void CheckString(const std::string& value, const std::string& path);
  void CheckPlanFields();
  void CheckModel(const loom::v1::ModelConfig& m, const std::string& path);
  void CheckRopeScaling(const loom::v1::RopeScaling& s, const std::string& path);
  void CheckStage(int i);
  // Blocks and fields that only some kinds read: written on another kind they are a mistake.
  // Checked on the stage as written (not on inherited defaults).
  void CheckIrrelevantFields(const loom::v1::Stage& raw, const std::string& p, loom::v1::StageKind kind);
  // Validates a checkpoint reference; returns the stage index it names, or -1 (a path, or bad).
  int CheckRef(int i, const std::string& path, const std::string& text, Need need);
  // A model reference must also be a checkpoint of the same architecture as the stage's model.
  void CheckSameModel(int j, const loom::v1::Stage& s, const std::string& path);
  // `from` where the kind needs it (the reference itself: CheckInputRefs).
  void CheckFrom(const loom::v1::Stage& s, const loom::v1::Stage& raw, const std::string& p);
  // Every reference of StageInputRefs(s): checkpoints (CheckRef, CheckSameModel, a teacher's
  // vocabulary) and a dataset.from_stage (CheckDatasetRef). `model` is the stage's, or null.
  void CheckInputRefs(int i, const loom::v1::Stage& s, const std::string& p,
                      const loom::v1::ModelConfig* model);
  void CheckParallel(const loom::v1::ParallelConfig& par, const std::string& path,
                     const loom::v1::ModelConfig* model);
  void CheckTokens(const loom::v1::Stage& s, const std::string& p, loom::v1::StageKind kind);
  void CheckOptimizer(const loom::v1::Stage& s, const std::string& p);
  // Checks that a schedule starts at 0, increases strictly, and stays within the budget.
  // `at` returns the at_tokens of entry k. Returns true when the points are usable.
  bool CheckSchedulePoints(const std::string& path, int size, const std::function<int64_t(int)>& at,
                           const loom::v1::Stage& s, const char* example);
  void CheckSchedules(const loom::v1::Stage& s, const std::string& p, const loom::v1::ModelConfig* model);
  void CheckSourceName(const std::string& path, const std::string& source);
  void CheckMix(const loom::v1::Stage& s, const std::string& p);
  void CheckDataset(const loom::v1::Stage& s, const std::string& p);
  void CheckDatasetRef(int i, const loom::v1::Stage& s, const std::string& path, const std::string& name);
  void CheckCheckpointPolicy(const loom::v1::Stage& s, const std::string& p);
  void CheckEval(const loom::v1::Stage& s, const std::string& p, loom::v1::StageKind kind);

  // plan_validation_kinds.cc: the kind-specific blocks.
  void CheckSampling(const loom::v1::SamplingConfig& c, const std::string& path);
  void CheckScorer(const loom::v1::Scorer& c, const std::string& path);
  void CheckUnit(const std::string& path, double value, bool open_low, const char* hint = "");
  void CheckDistill(const loom::v1::Stage& s, const std::string& p, const loom::v1::ModelConfig* student);
  void CheckDpo(const loom::v1::Stage& s, const std::string& p);
  void CheckWeights(const std::string& path, const google::protobuf::RepeatedField<double>& weights,
                    int expected, const char* what);
  void CheckAverage(int i, const loom::v1::Stage& s, const std::string& p);
  void CheckMerge(const loom::v1::Stage& s, const std::string& p);
  void CheckRejectionSampling(const loom::v1::Stage& s, const std::string& p);
  void CheckRl(const loom::v1::Stage& s, const std::string& p);
  // dpo, reward_model, rl, distill and rejection_sampling need tp 1 and pp 1, and so does
  // zero1; dpo and reward_model an even micro_batch_size, and offline one seq_len.
  void CheckKindLayout(const loom::v1::Stage& s, const std::string& p, loom::v1::StageKind kind);

  const loom::v1::TrainingPlan& plan_;
  std::vector<PlanError> errors_;
  std::vector<loom::v1::Stage> resolved_;  // parallel to plan_.stages (plan_resolve.h ResolveStage)
  std::vector<std::string> sources_;
};

}  // namespace loom::internal
