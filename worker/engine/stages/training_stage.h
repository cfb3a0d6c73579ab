// The part every training runner shares: the trainer over the runner's batch source and objective,
// and around it the stage's held-out measures and the reports.
//
//   before the first step   the starting point of what training should move: math accuracy and
//                           preference accuracy ("<set>/accuracy/before"), a context extension's
//                           loss at the short and the long length ("<set>@<len>/before")
//   after every step        a progress report (step_done) with the step's loss, schedule values,
//                           data mix and measures
//   every eval.every_steps  held-out loss of eval.sets, math and preference accuracy (and at the
//   and at the end          end a context extension's two lengths), measured by the first rank of
//                           the layout on the whole model (gathered under tp / pp)
//   after a checkpoint      a checkpoint report from every rank (one shard each), once durable
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "data/chat.h"
#include "worker/engine/sources/batch_source.h"
#include "worker/engine/sources/preference_source.h"
#include "worker/engine/stages/stage_context.h"
#include "worker/engine/training/objective.h"
#include "worker/engine/training/trainer.h"

namespace loom::engine {

struct TrainingSetup {
  BatchSource* data = nullptr;  // not owned
  // What the steps optimise; null: language modelling.
  std::shared_ptr<Objective> objective;
  // The length the LR schedule plans with when the stage has no token budget (0: stage.tokens).
  int64_t schedule_tokens = 0;
  // Called once the trainer exists (sources that sample from the policy being trained take it here).
  std::function<void(Trainer&)> on_trainer;
  // Held-out preference pairs (dpo, reward_model; the first data-parallel rank only): their
  // accuracy is measured with the evaluations, by the policy's log-probabilities, or with
  // `reward_token` >= 0 by that token's logit.
  std::vector<data::PreferenceExample> heldout_pairs;
  int pairs_seq_len = 0;
  int32_t reward_token = -1;
};

// dpo (offline) and reward_model stages: the stage's preference pairs (dataset.source) as
// `setup`'s batch source, at the stage's one sequence length, with the length the schedule plans
// with and, on the first data-parallel rank, the held-out pairs measured with the evaluations.
absl::StatusOr<std::unique_ptr<PreferenceBatchSource>> OpenPreferencePairs(const StageContext& context,
                                                                          bool with_reference,
                                                                          TrainingSetup* setup);

// Runs the stage's training to its end on this rank, reporting as above.
absl::Status RunTraining(const StageContext& context, const TrainingSetup& setup, StageReporter& reporter);

}  // namespace loom::engine
