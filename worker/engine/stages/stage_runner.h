// One runner per stage kind, behind one small interface: a runner takes a resolved stage and its
// resolved inputs (a StageRun), does the stage's work on this rank, and tells what happened through
// a StageReporter — progress and measures, checkpoints written, lines for people. It never sees a
// wire message or gRPC: loom-rank maps the reports to the coordinator's messages, `loom
// train-local` and `loom eval` print them, tests collect them.
//
//   kind                                                   runner               file
//   pretrain, continued_pretrain, context_extension, anneal  pre-training-like  pretrain_stage.cc
//   sft                                                    chat SFT             sft_stage.cc
//   distill                                                student ← teacher    distill_stage.cc
//   dpo (offline and online)                               preference pairs     dpo_stage.cc
//   reward_model                                           Bradley–Terry        reward_model_stage.cc
//   rl                                                     RLOO                 rl_stage.cc
//   rejection_sampling                                     sample and verify    rejection_sampling_stage.cc
//   average, merge                                         checkpoint merging   merge_stage.cc
//   eval                                                   measurements         eval_stage.cc
//
// Every training runner shares one loop (training_stage.h) and one setup (stage_context.h).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "loom/v1/plan.pb.h"
#include "worker/engine/parallel/process_groups.h"
#include "worker/engine/sources/batch_source.h"

namespace loom::engine {

// What a runner needs to run one rank of a stage.
struct StageRun {
  std::string plan_id;
  // The stage and its model, resolved (plan defaults and built-in defaults applied, the stage's
  // seed set: plan_resolve.h).
  loom::v1::Stage stage;
  loom::v1::ModelConfig model;
  // data.dir: the prepared data (`loom data prepare`); data.tokenizer: its tokenizer
  // (default <data.dir>/tokenizer.model, or tokenizer.json).
  loom::v1::DataConfig data;
  // The checkpoints and datasets the stage reads, resolved to directories.
  loom::v1::StageInputs inputs;
  // This rank's place in the layout the stage was placed on.
  RankLayout layout;
  // The rendezvous store the rank's groups meet through (opened only when a group has two ranks).
  StoreOpener open_store;
  // The address this rank's collective sockets bind and its peers dial: its worker's advertised
  // address (loopback when every rank runs on one machine).
  std::string collective_host = "127.0.0.1";
  // Longest any collective may take. The writer alone saves checkpoints and runs held-out
  // evaluation while its peers wait in the next collective: this covers those, not just a step.
  absl::Duration group_timeout = absl::Minutes(10);
  // A committed checkpoint of this stage to resume from, or empty; where its checkpoints go
  // (empty: none).
  std::string resume_from;
  std::string checkpoint_dir;
  // A directory shared by every attempt of the stage, for caches a later attempt may reuse (DPO's
  // reference log-probabilities); empty: checkpoint_dir.
  std::string cache_dir;
  // Delete checkpoints beyond checkpoint.keep_last (a local run); false on a cluster's ranks,
  // whose coordinator owns retention.
  bool prune_checkpoints = true;
  // Steps whose checkpoint save fails its first try as on a full disk (fault injection for tests:
  // LOOM_TEST_FAIL_SAVES on a rank).
  std::set<int64_t> fail_saves_at_steps;
  // Extra time every training step spends in this rank's compute (a slow rank for straggler
  // tests: LOOM_TEST_SLOW_RANK on a rank); zero in real runs.
  absl::Duration extra_compute = absl::ZeroDuration();
  // Stop after this many optimizer steps in total (0: the stage's budget).
  int64_t max_steps = 0;
  // CPU threads for the kernels.
  int threads = 1;
  // A pre-training-like stage trains on this instead of its data mix (not owned; `loom
  // train-local --text`); null: the stage's own data.
  BatchSource* token_source = nullptr;
};

// A progress report: after an optimizer step (`step_done`), or measures alone (an evaluation
// before training, an eval stage's results, a rank with nothing to do).
struct ProgressReport {
  bool step_done = false;
  int64_t step = 0;    // optimizer steps done
  int64_t tokens = 0;  // tokens the stage has consumed (global)
  double loss = 0;
  double tokens_per_second = 0;
  double learning_rate = 0;
  double grad_norm = 0;
  int64_t global_batch_tokens = 0;
  int seq_len = 0;
  std::map<std::string, double> mix_weights;     // by source, summing to 1
  std::map<std::string, int64_t> source_tokens;  // tokens drawn from each source so far
  std::map<std::string, double> train_metrics;   // the step's measures ("dpo/accuracy", ...)
  std::map<std::string, double> eval_loss;       // held-out loss by set ("math", "math@512")
  std::map<std::string, double> eval_metrics;    // other held-out measures ("sft_math/accuracy")
  // This rank's timing of the step, seconds (StepReport: compute, collectives, data; and whole).
  double step_seconds = 0;
  double compute_seconds = 0;
  double communication_wait_seconds = 0;
  double data_wait_seconds = 0;
  // Model FLOPs of one trained token at this step (training/model_flops.h), for MFU; 0 unknown.
  double model_flops_per_token = 0;
};

// A checkpoint (or a dataset directory) this rank's part of which is durable.
struct CheckpointWritten {
  std::string path;
  int64_t step = 0;
  int64_t tokens = 0;
  int num_shards = 1;  // parts in all (one per rank of the layout), and this rank's
  int shard = 0;
  bool final = false;  // the stage's result
  double save_seconds = 0;
  // Non-empty: this rank could not save its part (the checkpoint is not committed; training went
  // on and the next interval tries again).
  std::string error;
};

// Where a runner's reports go. Calls come from the runner's thread, in order.
class StageReporter {
 public:
  virtual ~StageReporter() = default;
  virtual absl::Status Progress(const ProgressReport& report) = 0;
  virtual absl::Status Checkpoint(const CheckpointWritten& checkpoint) = 0;
  // One line for people (measures, samples, what the stage is doing); no trailing newline.
  virtual void Log(const std::string& line) = 0;
};

class StageRunner {
 public:
  virtual ~StageRunner() = default;
  // Runs this rank's part of the stage to its end: OK once its final checkpoint (or its result)
  // is durable and reported.
  virtual absl::Status Run(const StageRun& run, StageReporter& reporter) = 0;
};

// The runner for a stage kind; null for STAGE_KIND_UNSPECIFIED.
std::unique_ptr<StageRunner> RunnerFor(loom::v1::StageKind kind);

// Sets the kernels' threads and runs `run.stage` with the runner of its kind.
absl::Status RunStage(const StageRun& run, StageReporter& reporter);

}  // namespace loom::engine
