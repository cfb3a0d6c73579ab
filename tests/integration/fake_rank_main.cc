// TEST FIXTURE for the control plane, not a trainer: a stand-in for `loom-rank` that speaks the
// daemon↔rank protocol (worker/rank_protocol.h) without the engine, so the coordinator, the
// worker daemon and the client are tested end to end in seconds. Per "step" it sleeps
// LOOM_FAKE_STEP_MS (default 20), reports Progress with a deterministic fake loss (a function of
// the stage seed and the step only, so a resumed attempt reports what an uninterrupted one
// would), appends "step loss time_ms" to losses.txt beside the assignment, prints
// "fake rank R: step N loss X" on stdout (its rank.log, for `loom logs`), and every
// stage.checkpoint.every_steps writes a real checkpoint directory (common/checkpoint_io.h; rank 0
// writes, every rank reports its shard). It resumes from assignment.resume_from (the step read
// from its manifest), verifies the manifest of inputs.from when set, and ends with a final
// checkpoint. Fault injection: LOOM_FAKE_CRASH_AT_STEP=N exits 3 at step N on rank
// LOOM_FAKE_CRASH_RANK (default 0) in attempt LOOM_FAKE_CRASH_ATTEMPT (default 1; 0 = every);
// LOOM_FAKE_CRASH_AFTER_FINAL=1 makes that rank exit 3 instead half a second after it reported
// the final checkpoint (an evaluation failing at the very end). Each report carries the step's
// time as step_seconds and step_compute_seconds (the sleep stands for compute).
#include <signal.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/checkpoint_io.h"
#include "common/command_line.h"
#include "common/rank_exit.h"
#include "common/rank_lifecycle.h"
#include "worker/engine/model/transformer_config.h"
#include "worker/engine/training/model_flops.h"
#include "worker/rank_protocol.h"

namespace {

int64_t EnvInt(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  int64_t out = fallback;
  if (v != nullptr && !absl::SimpleAtoi(v, &out)) return fallback;
  return out;
}

double FakeLoss(uint64_t seed, int64_t step) {
  const double noise =
      std::sin(static_cast<double>((seed % 1000) + 1) * 0.37 + static_cast<double>(step) * 1.3);
  return 2.0 + 4.0 * std::exp(-static_cast<double>(step) / 40.0) + 0.05 * noise;
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "fake rank: %s\n", message.c_str());
  return 2;
}

}  // namespace

void OnSigusr1(int) { loom::RequestCheckpointAndStop(); }

int main(int argc, char** argv) {
  struct sigaction drain = {};
  drain.sa_handler = OnSigusr1;
  sigaction(SIGUSR1, &drain, nullptr);
  std::string assignment_path;
  loom::CommandLine cl("loom-fake-rank", "Test fixture: a fake rank for control-plane tests (no training).");
  cl.AddFlag("assignment", &assignment_path, "binary loom.v1.Assignment written by loom-worker");
  int exit_code = 0;
  if (!loom::ParseOrExit(cl, std::vector<std::string>(argv + 1, argv + argc), &exit_code)) return exit_code;
  absl::StatusOr<loom::v1::Assignment> a = loom::ReadAssignment(assignment_path);
  if (!a.ok()) return Fail(std::string(a.status().message()));
  absl::StatusOr<loom::RankReporter> reporter = loom::RankReporter::FromEnvironment();
  if (!reporter.ok()) return Fail(std::string(reporter.status().message()));

  const loom::v1::Stage& stage = a->stage();
  const int rank = a->rank().rank();
  const int world = std::max(1, a->layout().world_size());
  const int64_t batch =
      stage.batch_ramp_size() > 0 ? std::max<int64_t>(1, stage.batch_ramp(0).global_batch_tokens()) : 1000;
  const int64_t total_steps = std::max<int64_t>(1, (stage.tokens() + batch - 1) / batch);
  const int every = std::max(1, stage.checkpoint().every_steps());
  const int64_t step_ms = EnvInt("LOOM_FAKE_STEP_MS", 20);
  const int64_t crash_step = EnvInt("LOOM_FAKE_CRASH_AT_STEP", -1);
  const int64_t crash_attempt = EnvInt("LOOM_FAKE_CRASH_ATTEMPT", 1);
  const int64_t crash_rank = EnvInt("LOOM_FAKE_CRASH_RANK", 0);
  const bool crash_after_final = EnvInt("LOOM_FAKE_CRASH_AFTER_FINAL", 0) == 1;

  if (!a->inputs().from().empty()) {
    absl::StatusOr<loom::v1::CheckpointManifest> m = loom::ReadCheckpointManifest(a->inputs().from());
    if (!m.ok()) return Fail(absl::StrCat("input 'from': ", m.status().message()));
  }
  int64_t step = 0;
  if (!a->resume_from().empty()) {
    absl::StatusOr<loom::v1::CheckpointManifest> m = loom::ReadCheckpointManifest(a->resume_from());
    if (!m.ok()) {  // as loom-rank does: a corrupt or incomplete checkpoint is reported as such
      std::fprintf(stderr, "fake rank: resume_from: %s\n", std::string(m.status().message()).c_str());
      return loom::RankExitCodeFor(loom::ResumeCheckpointBad(m.status()));
    }
    step = m->step();
  }
  const std::string rank_dir = std::filesystem::path(assignment_path).parent_path().string();
  std::ofstream losses(rank_dir + "/losses.txt", std::ios::app);

  auto checkpoint = [&](bool final) -> absl::Status {
    const auto start = std::chrono::steady_clock::now();
    const std::string dir = absl::StrCat(a->checkpoint_dir(), "/", loom::CheckpointDirName(step));
    if (rank == 0) {
      loom::v1::CheckpointManifest manifest;
      manifest.set_format_version(1);
      manifest.set_plan_id(a->plan_id());
      manifest.set_stage(stage.name());
      manifest.set_step(step);
      manifest.set_tokens(step * batch);
      *manifest.mutable_model() = a->model();
      manifest.set_dp(a->layout().dp());
      manifest.set_tp(a->layout().tp());
      manifest.set_pp(a->layout().pp());
      manifest.set_created_ms(NowMs());
      manifest.set_final(final);
      (*manifest.mutable_metadata())["writer"] = "loom-fake-rank";
      const std::string weights =
          absl::StrCat("fake weights of ", a->plan_id(), "/", stage.name(), " at step ", step);
      if (absl::Status s = loom::WriteCheckpointDir(dir, {{"model.safetensors", "model", weights}}, manifest);
          !s.ok()) {
        return s;
      }
    }
    loom::v1::WorkerMessage m;
    loom::v1::CheckpointReport* r = m.mutable_checkpoint();
    *r->mutable_rank() = a->rank();
    r->set_step(step);
    r->set_tokens(step * batch);
    r->set_path(dir);
    r->set_num_shards(world);
    r->set_shard(rank);
    r->set_final(final);
    r->set_save_seconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    if (rank == 0) {  // the writer reports the checkpoint's size, as loom-rank does
      std::error_code ec;
      int64_t bytes = 0;
      for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
        std::error_code size_ec;
        const uintmax_t size = e.is_regular_file(size_ec) ? e.file_size(size_ec) : 0;
        if (!size_ec) bytes += static_cast<int64_t>(size);
      }
      r->set_bytes(bytes);
    }
    return reporter->Send(m);
  };

  while (step < total_steps) {
    const auto step_start = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(std::chrono::milliseconds(step_ms));
    ++step;
    const double step_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
    if (step == crash_step && rank == crash_rank &&
        (crash_attempt == 0 || crash_attempt == a->rank().attempt())) {
      std::fprintf(stderr, "fake rank: injected crash at step %lld\n", static_cast<long long>(step));
      return 3;
    }
    const double loss = FakeLoss(a->seed(), step);
    losses << step << " " << loss << " " << NowMs() << "\n";
    losses.flush();
    // On stdout, which the worker keeps as the rank's log (`loom logs` shows it).
    std::printf("fake rank %d: step %lld loss %.6f\n", rank, static_cast<long long>(step), loss);
    std::fflush(stdout);
    loom::v1::WorkerMessage m;
    loom::v1::Progress* p = m.mutable_progress();
    *p->mutable_rank() = a->rank();
    p->set_step(step);
    p->set_tokens(step * batch);
    p->set_loss(loss);
    p->set_tokens_per_second(static_cast<double>(batch) * 1000.0 /
                             static_cast<double>(std::max<int64_t>(1, step_ms)));
    p->set_learning_rate(stage.optimizer().lr());
    p->set_grad_norm(1.0 / std::sqrt(static_cast<double>(step)));
    p->set_global_batch_tokens(batch);
    p->set_seq_len(stage.seq_len_schedule_size() > 0 ? stage.seq_len_schedule(0).seq_len() : 0);
    // The real estimate for the plan's model, so that the worker's MFU is computed as for loom-rank.
    if (absl::StatusOr<loom::engine::TransformerConfig> model =
            loom::engine::TransformerConfig::FromProto(a->model());
        model.ok()) {
      p->set_model_flops_per_token(
          loom::engine::ModelFlopsPerToken(*model, p->seq_len(), loom::engine::ModelPass::kTraining));
    }
    if (stage.data_mix_size() > 0) {
      double sum = 0;
      for (const auto& [source, w] : stage.data_mix(0).weights()) sum += w;
      for (const auto& [source, w] : stage.data_mix(0).weights())
        (*p->mutable_mix_weights())[source] = w / sum;
    }
    p->set_time_ms(NowMs());
    // The sleep stands for compute; a fake rank waits for nothing else.
    p->set_step_seconds(step_seconds);
    p->set_step_compute_seconds(step_seconds);
    if (absl::Status s = reporter->Send(m); !s.ok()) return Fail(std::string(s.message()));
    if (step % every == 0 && step < total_steps) {
      if (absl::Status s = checkpoint(false); !s.ok()) return Fail(std::string(s.message()));
    }
    // Drained (SIGUSR1): checkpoint here and stop, as loom-rank does (without agreeing with peers:
    // a fake rank has none, so its peers may stop a step apart and the checkpoint not commit).
    if (loom::CheckpointAndStopRequested() && step < total_steps) {
      if (step % every != 0) {
        if (absl::Status s = checkpoint(false); !s.ok()) return Fail(std::string(s.message()));
      }
      std::fprintf(stderr, "fake rank: %s\n", std::string(loom::Preempted(step).message()).c_str());
      return loom::kRankExitPreempted;
    }
  }
  if (absl::Status s = checkpoint(true); !s.ok()) return Fail(std::string(s.message()));
  if (crash_after_final && rank == crash_rank && (crash_attempt == 0 || crash_attempt == a->rank().attempt())) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    std::fprintf(stderr, "fake rank: injected crash after the final checkpoint\n");
    return 3;
  }
  return 0;
}
