// `loom-rank`: runs one rank of a job attempt. The worker daemon starts one per assigned rank (so a
// crashing rank never takes the daemon down) and hands it the Assignment in a file; the rank runs
// the stage with the engine's runner for its kind (worker/engine/stages/) and maps the runner's
// reports to the messages it writes to the pipe named by LOOM_REPORT_FD (worker/rank_protocol.h).
// Its stdout and stderr are the rank's log. Exit code 0: the stage finished and its final
// checkpoint is durable; anything else fails the attempt, with the last stderr line as reason and
// the exit code saying whose fault it was (common/rank_exit.h: the plan's are not retried).
//
// SIGUSR1 (its worker is drained) and SIGTERM (its worker is stopping, or Slurm's signal before a
// time limit) make a training loop save a checkpoint with its peers at the next step boundary and
// exit 76; when the attempt may no longer write (its worker has left) that save fails and the rank
// exits 75. Before it
// commits or prunes a checkpoint the rank checks the attempt's write lease at the coordinator, so a
// rank of an attempt that was replaced while its host was cut off writes nothing
// (common/rank_lifecycle.h). Its collective sockets bind LOOM_ADVERTISE, the worker's address.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/clock.h"
#include "common/command_line.h"
#include "common/confined_read.h"
#include "common/rank_exit.h"
#include "common/rank_lifecycle.h"
#include "common/status_macros.h"
#include "common/stage_inputs.h"
#include "loom/v1/coordinator.pb.h"
#include "worker/engine/stages/stage_runner.h"
#include "worker/engine/training/rank_time.h"
#include "worker/rank/coordinator_store.h"
#include "worker/rank_protocol.h"

namespace {

void SetRankTime(loom::v1::RankTime* out) {
  const loom::engine::RankTime t = loom::engine::RankTimeNow();
  out->set_rendezvous_seconds(t.rendezvous);
  out->set_load_seconds(t.load);
  out->set_data_wait_seconds(t.data_wait);
  out->set_compute_seconds(t.compute);
  out->set_communication_seconds(t.communication);
  out->set_checkpoint_save_seconds(t.checkpoint_save);
  out->set_evaluation_seconds(t.evaluation);
}

// Bytes of the regular files under `dir` (0 when it cannot be read): a checkpoint's size.
int64_t DirectoryBytes(const std::string& dir) {
  std::error_code ec;
  int64_t total = 0;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec); !ec && it != std::filesystem::end(it);
       it.increment(ec)) {
    std::error_code size_ec;
    if (it->is_regular_file(size_ec)) {
      const uintmax_t size = it->file_size(size_ec);
      if (!size_ec) total += static_cast<int64_t>(size);
    }
  }
  return total;
}

// The runner's reports as the coordinator's messages, and the rank's log.
class WireReporter : public loom::engine::StageReporter {
 public:
  WireReporter(loom::v1::RankRef rank, loom::RankReporter pipe) : rank_(std::move(rank)), pipe_(std::move(pipe)) {}

  absl::Status Progress(const loom::engine::ProgressReport& r) override {
    loom::v1::WorkerMessage m;
    loom::v1::Progress& p = *m.mutable_progress();
    *p.mutable_rank() = rank_;
    p.set_step(r.step);
    p.set_tokens(r.tokens);
    p.set_loss(r.loss);
    p.set_tokens_per_second(r.tokens_per_second);
    p.set_learning_rate(r.learning_rate);
    p.set_grad_norm(r.grad_norm);
    p.set_global_batch_tokens(r.global_batch_tokens);
    p.set_seq_len(r.seq_len);
    p.mutable_mix_weights()->insert(r.mix_weights.begin(), r.mix_weights.end());
    p.mutable_source_tokens()->insert(r.source_tokens.begin(), r.source_tokens.end());
    p.mutable_train_metrics()->insert(r.train_metrics.begin(), r.train_metrics.end());
    p.mutable_eval_loss()->insert(r.eval_loss.begin(), r.eval_loss.end());
    p.mutable_eval_metrics()->insert(r.eval_metrics.begin(), r.eval_metrics.end());
    p.set_time_ms(absl::ToUnixMillis(absl::Now()));
    p.set_step_seconds(r.step_seconds);
    p.set_step_compute_seconds(r.compute_seconds);
    p.set_step_communication_wait_seconds(r.communication_wait_seconds);
    p.set_step_data_wait_seconds(r.data_wait_seconds);
    p.set_model_flops_per_token(r.model_flops_per_token);
    SetRankTime(p.mutable_rank_time());
    last_progress_ = m;
    const absl::Status sent = pipe_.Send(m);
    if (r.step_done) {
      // The rank's log keeps every step, exactly, for people and tests.
      Log(absl::StrFormat("step %d tokens %d loss %.17g lr %.6g grad_norm %.6g seq %d batch %d tok/s %.0f", r.step,
                          r.tokens, r.loss, r.learning_rate, r.grad_norm, r.seq_len, r.global_batch_tokens,
                          r.tokens_per_second));
      for (const auto& [name, value] : r.train_metrics) Log(absl::StrFormat("  %s %.6g", name, value));
    }
    return sent;
  }

  absl::Status Checkpoint(const loom::engine::CheckpointWritten& c) override {
    loom::v1::WorkerMessage m;
    loom::v1::CheckpointReport& report = *m.mutable_checkpoint();
    *report.mutable_rank() = rank_;
    report.set_step(c.step);
    report.set_tokens(c.tokens);
    report.set_path(c.path);
    report.set_num_shards(c.num_shards);
    report.set_shard(c.shard);
    report.set_final(c.final);
    report.set_save_seconds(c.save_seconds);
    report.set_error(c.error);
    if (c.shard == 0 && c.error.empty()) report.set_bytes(DirectoryBytes(c.path));
    return pipe_.Send(m);
  }

  // The stage ended well: the last progress again, with where the time went up to now (the final
  // save included), for the coordinator's goodput ledger. A stage that reported no progress (an
  // average, a merge) reports step 0.
  absl::Status Final() {
    loom::v1::WorkerMessage m = last_progress_;
    *m.mutable_progress()->mutable_rank() = rank_;
    // No step of its own: not a sample for straggler detection.
    loom::v1::Progress& p = *m.mutable_progress();
    p.clear_step_seconds();
    p.clear_step_compute_seconds();
    p.clear_step_communication_wait_seconds();
    p.clear_step_data_wait_seconds();
    m.mutable_progress()->set_time_ms(absl::ToUnixMillis(absl::Now()));
    SetRankTime(m.mutable_progress()->mutable_rank_time());
    return pipe_.Send(m);
  }

  void Log(const std::string& line) override {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  }

 private:
  loom::v1::RankRef rank_;
  loom::RankReporter pipe_;
  loom::v1::WorkerMessage last_progress_;
};

// Mutual TLS to the rendezvous (common/tls.h): the worker's identity, from --tls-dir/--tls-name or
// LOOM_TLS_DIR/LOOM_TLS_NAME (set by loom-worker); empty: no TLS.
std::string tls_dir, tls_name;

absl::Status Run(const loom::v1::Assignment& a, const std::string& coordinator, int threads) {
  LOOM_RETURN_IF_ERROR(loom::CheckInputsResolved(a.stage(), a.inputs()));
  // Every plan-named file this rank reads (shards, tokenizer, sources, checkpoints) must lie, once
  // opened, inside the coordinator's allowed roots: a symlink swapped in after the plan was
  // accepted is refused where it is read. Set once, before any of them is opened.
  loom::SetProcessReadRoots({a.read_roots().begin(), a.read_roots().end()});
  loom::engine::StageRun run;
  run.plan_id = a.plan_id();
  run.stage = a.stage();
  run.model = a.model();
  run.data = a.data();
  run.inputs = a.inputs();
  const loom::v1::ParallelLayout& l = a.layout();
  run.layout = {std::max(1, l.dp()), std::max(1, l.tp()), std::max(1, l.pp()), l.dp_rank(), l.tp_rank(), l.pp_rank()};
  run.open_store = [&] { return loom::worker::NewCoordinatorKeyValueStore(coordinator, a.rendezvous_prefix(), a.rendezvous_secret(), tls_dir, tls_name); };
  if (const char* host = std::getenv("LOOM_ADVERTISE"); host != nullptr && *host != '\0') run.collective_host = host;
  // The write lease: a key the coordinator keeps in this attempt's rendezvous namespace while the
  // attempt is current (coordinator.h, GrantWriteLease). A coordinator that cannot be reached
  // (restarting, or this host cut off) is asked again for up to kLeaseWait: a restarted
  // coordinator grants the lease again to the attempts it resumes, so training outlives a
  // coordinator restart; a cut-off rank whose attempt was replaced meanwhile finds no lease when
  // its link is back, and one still cut off after kLeaseWait writes nothing.
  std::shared_ptr<loom::engine::KeyValueStore> lease_store;
  if (!a.rendezvous_prefix().empty()) {
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<loom::engine::KeyValueStore> store,
                          loom::worker::NewCoordinatorKeyValueStore(coordinator, a.rendezvous_prefix(), a.rendezvous_secret(), tls_dir, tls_name));
    lease_store = std::move(store);
    loom::SetWriteFence([lease_store, attempt = a.rank().attempt(), coordinator]() -> absl::Status {
      constexpr absl::Duration kLeaseWait = absl::Minutes(5);
      const absl::Time give_up = loom::MonotonicNow() + kLeaseWait;
      absl::Duration pause = absl::Milliseconds(200);
      for (bool said = false;; said = true) {
        absl::StatusOr<std::string> lease = lease_store->Get("lease", absl::ZeroDuration());
        if (lease.ok()) return absl::OkStatus();
        if (lease.status().code() != absl::StatusCode::kUnavailable || loom::MonotonicNow() + pause > give_up) {
          return absl::Status(lease.status().code(), absl::StrCat("attempt ", attempt, " holds no write lease: ",
                                                                  lease.status().message()));
        }
        if (!said) {
          std::fprintf(stderr, "loom-rank: the coordinator at %s is unreachable (%s); waiting up to %s to confirm "
                       "this attempt's write lease before writing a checkpoint\n",
                       coordinator.c_str(), std::string(lease.status().message()).c_str(),
                       absl::FormatDuration(kLeaseWait).c_str());
        }
        absl::SleepFor(pause);
        pause = std::min(pause * 2, absl::Seconds(5));
      }
    });
  }
  run.resume_from = a.resume_from();
  run.checkpoint_dir = a.checkpoint_dir();
  run.cache_dir = a.cache_dir();
  run.prune_checkpoints = false;  // the coordinator deletes what retention no longer needs
  // Fault injection for tests: LOOM_TEST_FAIL_SAVES="10,15" makes the saves at those steps fail.
  if (const char* fail = std::getenv("LOOM_TEST_FAIL_SAVES"); fail != nullptr) {
    for (absl::string_view step : absl::StrSplit(fail, ',', absl::SkipEmpty())) {
      int64_t n = 0;
      if (absl::SimpleAtoi(step, &n)) run.fail_saves_at_steps.insert(n);
    }
  }
  // Fault injection for tests: LOOM_TEST_SLOW_RANK="RANK:MS" makes global rank RANK spend MS
  // extra milliseconds in its compute every step (a straggler).
  if (const char* slow = std::getenv("LOOM_TEST_SLOW_RANK"); slow != nullptr) {
    const std::vector<std::string> parts = absl::StrSplit(slow, ':');
    int slow_rank = -1;
    int64_t ms = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &slow_rank) || !absl::SimpleAtoi(parts[1], &ms) || ms < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("LOOM_TEST_SLOW_RANK is \"", slow, "\"; expected RANK:MS, e.g. 2:200"));
    }
    if (slow_rank == a.rank().rank()) run.extra_compute = absl::Milliseconds(ms);
  }
  run.threads = threads;
  LOOM_ASSIGN_OR_RETURN(loom::RankReporter pipe, loom::RankReporter::FromEnvironment());
  WireReporter reporter(a.rank(), std::move(pipe));
  {
    // What no narrower phase claims is the stage's own work (generation, averaging...).
    loom::engine::RankPhaseScope work(loom::engine::RankPhase::kCompute);
    LOOM_RETURN_IF_ERROR(loom::engine::RunStage(run, reporter));
  }
  // Best effort: the stage's result is durable already.
  if (absl::Status s = reporter.Final(); !s.ok()) {
    std::fprintf(stderr, "loom-rank: the final time report was not sent: %s\n", std::string(s.message()).c_str());
  }
  return absl::OkStatus();
}

}  // namespace

// SIGTERM comes from the worker (an abort, or its own stop) or straight from Slurm before a time
// limit (a step signal reaches every process of the step): either way, checkpoint with the peers
// at the next step boundary if the attempt may still write, and stop.
static void OnSigterm(int) {
  loom::RequestCheckpointAndStop();
  loom::RequestStop();
}
static void OnSigusr1(int) { loom::RequestCheckpointAndStop(); }

int main(int argc, char** argv) {
  struct sigaction stop = {};
  stop.sa_handler = OnSigterm;
  sigaction(SIGTERM, &stop, nullptr);
  struct sigaction drain = {};
  drain.sa_handler = OnSigusr1;
  sigaction(SIGUSR1, &drain, nullptr);
  const char* env_coordinator = std::getenv("LOOM_COORDINATOR");
  const char* env_threads = std::getenv("LOOM_THREADS");
  std::string assignment_path, coordinator = env_coordinator ? env_coordinator : "127.0.0.1:7070";
  int threads = env_threads ? std::max(1, std::atoi(env_threads)) : 1;
  loom::CommandLine cl("loom-rank",
                       "Runs one rank of a job attempt (started by loom-worker; reports go to the pipe "
                       "in LOOM_REPORT_FD).");
  cl.AddFlag("assignment", &assignment_path, "file holding the binary loom.v1.Assignment");
  cl.AddFlag("coordinator", &coordinator, "coordinator address, for the rendezvous store (env LOOM_COORDINATOR)");
  cl.AddFlag("threads", &threads, "CPU threads for the kernels (env LOOM_THREADS)");
  if (const char* d = std::getenv("LOOM_TLS_DIR")) tls_dir = d;
  if (const char* n = std::getenv("LOOM_TLS_NAME")) tls_name = n;
  cl.AddFlag("tls-dir", &tls_dir,
             "mutual TLS to the rendezvous: directory with ca.pem and NAME.pem/NAME.key (env LOOM_TLS_DIR, set by "
             "loom-worker to its own; empty: no TLS)");
  cl.AddFlag("tls-name", &tls_name, "which NAME in --tls-dir (env LOOM_TLS_NAME)");
  int exit_code = 0;
  if (!loom::ParseOrExit(cl, std::vector<std::string>(argv + 1, argv + argc), &exit_code)) return exit_code;
  if (assignment_path.empty()) {
    std::fprintf(stderr, "loom-rank: --assignment FILE is required\n");
    return 2;
  }
  absl::StatusOr<loom::v1::Assignment> read = loom::ReadAssignment(assignment_path);
  if (!read.ok()) {
    std::fprintf(stderr, "loom-rank: %s\n", std::string(read.status().message()).c_str());
    return 2;
  }
  if (absl::Status s = Run(*read, coordinator, threads); !s.ok()) {
    std::fprintf(stderr, "loom-rank %s/rank%d: %s\n", read->rank().job_id().c_str(), read->rank().rank(),
                 std::string(s.message()).c_str());
    return loom::RankExitCodeFor(s);
  }
  return 0;
}
