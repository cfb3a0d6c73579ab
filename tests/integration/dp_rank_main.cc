// Test fixture: one rank of a small byte-level training run, for the Gloo data- and
// tensor-parallel equivalence tests. Writes its per-step losses and the final whole weights to --out.
// Of --size ranks, --tp consecutive ones form a tensor-parallel group and --pp of those strides a
// pipeline (Megatron's order: rank = (dp_rank · pp + pp_rank) · tp + tp_rank); the rest is data
// parallel.
//
//   dp_rank_main --rank R --size N --store DIR --out FILE [--tp T] [--pp P] [--bucket-floats F]
//                [--tied] [--steps 20] [--fail-at-step K]
//                [--zero1] [--checkpoint-dir DIR --checkpoint-at K] [--resume CHECKPOINT]
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/command_line.h"
#include "common/plan_io.h"
#include "common/plan_resolve.h"
#include "worker/engine/parallel/communicator.h"
#include "worker/engine/training/trainer.h"

int main(int argc, char** argv) {
  int64_t bucket_floats = int64_t{1} << 20;
  int rank = 0, size = 1, tp = 1, pp = 1, steps = 20, fail_at_step = 0, checkpoint_at = 0;
  bool zero1 = false, tied = false;
  std::string store_dir, out, checkpoint_dir, resume;
  absl::Duration timeout = absl::Seconds(20);
  loom::CommandLine cl("dp_rank_main", "One data-parallel rank of a small training run (test fixture).");
  cl.AddFlag("rank", &rank, "rank in the group");
  cl.AddFlag("size", &size, "ranks in all (1: no communicator)");
  cl.AddFlag("tp", &tp, "tensor-parallel ranks per pipeline stage");
  cl.AddFlag("pp", &pp, "pipeline stages per data-parallel rank (tp x pp must divide --size)");
  cl.AddFlag("store", &store_dir, "rendezvous directory (fresh per run)");
  cl.AddFlag("out", &out, "file for losses and weights");
  cl.AddFlag("steps", &steps, "optimizer steps");
  cl.AddFlag("fail-at-step", &fail_at_step, "exit(3) before this step (to test a lost peer)");
  cl.AddFlag("timeout", &timeout, "collective timeout");
  cl.AddFlag("bucket-floats", &bucket_floats, "data parallel: all-reduce buckets overlapped with the backward (0: none)");
  cl.AddFlag("tied", &tied, "tie the embedding and the output head");
  cl.AddFlag("zero1", &zero1, "shard the optimizer state across the ranks (ZeRO-1)");
  cl.AddFlag("checkpoint-dir", &checkpoint_dir, "where --checkpoint-at writes");
  cl.AddFlag("checkpoint-at", &checkpoint_at, "write a checkpoint after this step");
  cl.AddFlag("resume", &resume, "resume from this checkpoint (losses are written from its step on)");
  int exit_code = 0;
  if (!loom::ParseOrExit(cl, std::vector<std::string>(argv + 1, argv + argc), &exit_code)) return exit_code;

  const char* plan_text = R"(name: dp
model: {layers: 2, d_model: 64, heads: 4, kv_heads: 2, ffn_size: 128, vocab_size: 256}
data: {sources: [text]}
stages:
  - name: core
    kind: pretrain
    tokens: 1M
    optimizer: {lr: 3e-3, grad_clip: 1.0}
    lr_schedule: {type: cosine, warmup_tokens: 2Ki}
    parallel: {micro_batch_size: 2}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: 512}, {at_tokens: 4Ki, global_batch_tokens: 1Ki}]
    seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
    data_mix: [{at_tokens: 0, weights: {text: 1}}]
)";
  loom::ParsedPlan parsed = loom::ParsePlanText(plan_text, loom::PlanFormat::kYaml);
  if (!parsed.errors.empty()) {
    std::fprintf(stderr, "%s", loom::FormatPlanErrors(parsed.errors).c_str());
    return 1;
  }
  std::string text;
  for (int i = 0; i < 400; ++i)
    text += absl::StrFormat("line %d: the quick brown fox jumps over the lazy dog. ", i % 17);
  loom::engine::TokenStreamSource data(std::vector<int32_t>(text.begin(), text.end()));

  std::unique_ptr<loom::engine::KeyValueStore> store = loom::engine::NewDirectoryKeyValueStore(store_dir);
  if (tp < 1 || pp < 1 || size % (tp * pp) != 0) {
    std::fprintf(stderr, "--tp %d x --pp %d does not divide --size %d\n", tp, pp, size);
    return 2;
  }
  const int dp = size / (tp * pp), dp_rank = rank / (tp * pp), pp_rank = rank / tp % pp, tp_rank = rank % tp;
  // Joins the group under `prefix` as member `index` of `count` (none when count is 1).
  auto connect = [&](const std::string& prefix, int index, int count,
                     std::unique_ptr<loom::engine::Communicator>* group) {
    if (count == 1) return true;
    loom::engine::GlooOptions options;
    options.rank = index;
    options.size = count;
    options.prefix = prefix;
    options.timeout = timeout;
    auto c = loom::engine::NewGlooCommunicator(store.get(), options);
    if (!c.ok()) {
      std::fprintf(stderr, "%s: %s\n", prefix.c_str(), std::string(c.status().message()).c_str());
      return false;
    }
    *group = std::move(*c);
    return true;
  };
  std::unique_ptr<loom::engine::Communicator> comm, tp_group, pp_group;
  if (!connect(absl::StrFormat("test/tp%d_%d", dp_rank, pp_rank), tp_rank, tp, &tp_group)) return 1;
  if (!connect(absl::StrFormat("test/pp%d_%d", dp_rank, tp_rank), pp_rank, pp, &pp_group)) return 1;
  if (!connect(absl::StrFormat("test/dp%d_%d", pp_rank, tp_rank), dp_rank, dp, &comm)) return 1;
  loom::engine::TrainerOptions options;
  options.model = parsed.plan.model();
  options.model.set_tied_embeddings(tied);
  options.stage = loom::ResolveStage(parsed.plan, 0);
  options.plan_id = "dp-1";
  options.max_steps = steps;
  options.parallel = {comm.get(), tp_group.get(), pp_group.get()};
  options.bucket_floats = bucket_floats;
  options.stage.mutable_parallel()->set_zero1(zero1);
  options.checkpoint_dir = checkpoint_dir;
  options.resume_from = resume;
  auto trainer = loom::engine::Trainer::Create(options, &data);
  if (!trainer.ok()) {
    std::fprintf(stderr, "%s\n", std::string(trainer.status().message()).c_str());
    return 1;
  }
  std::ofstream file(out);
  for (int i = static_cast<int>((*trainer)->step()) + 1; i <= steps; ++i) {
    if (i == fail_at_step) std::_Exit(3);
    auto r = (*trainer)->Step();
    if (!r.ok()) {
      std::fprintf(stderr, "step %d: %s\n", i, std::string(r.status().message()).c_str());
      return 1;
    }
    file << absl::StrFormat("%.17g\n", r->loss);
    if (i == checkpoint_at) {
      if (auto saved = (*trainer)->SaveCheckpoint(false); !saved.ok()) {
        std::fprintf(stderr, "checkpoint: %s\n", std::string(saved.status().message()).c_str());
        return 1;
      }
    }
  }
  auto weights = (*trainer)->WholeWeights();
  if (!weights.ok()) {
    std::fprintf(stderr, "weights: %s\n", std::string(weights.status().message()).c_str());
    return 1;
  }
  file << "weights\n";
  file.write(reinterpret_cast<const char*>(weights->data()), weights->size() * sizeof(float));
  return file.good() ? 0 : 1;
}
