// Developer commands that run the training engine in this process: `loom train-local`,
// `loom generate`, `loom eval`, `loom export-hf`, `loom import-hf`. (The client proper never trains; these
// exist so a model, a plan stage or a checkpoint can be tried without a cluster.)
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "common/checkpoint_io.h"
#include "common/checkpoint_ref.h"
#include "common/command_line.h"
#include "common/plan_io.h"
#include "common/plan_resolve.h"
#include "common/units.h"
#include "common/stage_inputs.h"
#include "data/tokenizer.h"
#include "kernels/cpu/parallel.h"
#include "nlohmann/json.hpp"
#include "worker/engine/model/checkpoint.h"
#include "worker/engine/model/generator.h"
#include "worker/engine/model/hf_format.h"
#include "worker/engine/sources/batch_source.h"
#include "worker/engine/stages/stage_runner.h"

namespace loom::cli {
namespace {

int Fail(const absl::Status& status, const char* command) {
  std::fprintf(stderr, "loom %s: %s\n", command, std::string(status.message()).c_str());
  return 1;
}

// Prints a runner's reports as a person running one stage here wants them.
class ConsoleReporter : public engine::StageReporter {
 public:
  // `json`: only the measures are printed, at the end, as JSON (for scripts).
  explicit ConsoleReporter(bool json = false) : json_(json) {}

  absl::Status Progress(const engine::ProgressReport& r) override {
    if (r.step_done) {
      std::printf("step %5lld  tokens %9lld  loss %.4f  lr %.3g  grad_norm %.3f  seq %d  batch %lld  %.0f tok/s\n",
                  static_cast<long long>(r.step), static_cast<long long>(r.tokens), r.loss, r.learning_rate,
                  r.grad_norm, r.seq_len, static_cast<long long>(r.global_batch_tokens), r.tokens_per_second);
      std::fflush(stdout);
    }
    for (const auto& [set, loss] : r.eval_loss) eval_loss_[set] = loss;
    for (const auto& [name, value] : r.eval_metrics) eval_metrics_[name] = value;
    return absl::OkStatus();
  }
  absl::Status Checkpoint(const engine::CheckpointWritten& c) override {
    std::printf("checkpoint %s\n", c.path.c_str());
    std::fflush(stdout);
    return absl::OkStatus();
  }
  void Log(const std::string& line) override {
    if (json_) return;
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  }
  // {"eval_loss": {...}, "eval_metrics": {...}}, as `loom status --json` shows them.
  std::string MeasuresJson() const {
    return nlohmann::json{{"eval_loss", eval_loss_}, {"eval_metrics", eval_metrics_}}.dump(2);
  }

 private:
  bool json_;
  std::map<std::string, double> eval_loss_, eval_metrics_;
};

}  // namespace

int RunTrainLocal(const Args& args) {
  std::string plan_path, stage_name, text_path, tokens_path, data_dir, out_dir, resume, from;
  int64_t steps = 0;
  int threads = 1;
  CommandLine cl("loom train-local",
                 "Trains one stage of a plan in this process, with the runner a worker uses for its kind, "
                 "on prepared data or a local text or token file, printing the loss of every step; "
                 "checkpoints go to --out and a run resumes with --resume.");
  cl.AddPositional("PLAN", &plan_path, "plan file (.yaml, .json or .textproto)");
  cl.AddFlag("stage", &stage_name, "stage to train (default: the first)");
  cl.AddFlag("text", &text_path, "train on this file's bytes (byte-level models: vocab_size 256; pre-training kinds)");
  cl.AddFlag("tokens", &tokens_path, "train on this file of little-endian uint32 token ids (pre-training kinds)");
  cl.AddFlag("data", &data_dir,
             "train on prepared data (`loom data prepare` output): the stage's data mix, chats or pairs");
  cl.AddFlag("steps", &steps, "stop after this many optimizer steps (0: the stage's token budget)");
  cl.AddFlag("out", &out_dir, "directory for checkpoints (step-NNNNNN/); empty: none");
  cl.AddFlag("resume", &resume, "checkpoint directory to resume from (weights, optimizer, data, RNG)");
  cl.AddFlag("from", &from, "checkpoint directory to start from (weights only)");
  cl.AddFlag("threads", &threads, "CPU threads for the kernels");
  cl.AddEpilog(
      "example:\n  loom train-local examples/plans/demo.yaml --text README.md --steps 50 --out /tmp/ckpt");
  int exit_code = 0;
  if (!ParseOrExit(cl, args, &exit_code)) return exit_code;
  if (text_path.empty() + tokens_path.empty() + data_dir.empty() != 2) {
    std::fprintf(stderr, "loom train-local: give exactly one of --text FILE, --tokens FILE or --data DIR\n");
    return 2;
  }
  if (threads < 1) {
    std::fprintf(stderr, "loom train-local: --threads must be at least 1\n");
    return 2;
  }

  absl::StatusOr<loom::v1::TrainingPlan> plan = LoadPlan(plan_path);
  if (!plan.ok()) return Fail(plan.status(), "train-local");
  const int index = stage_name.empty() ? (plan->stages_size() > 0 ? 0 : -1) : FindStage(*plan, stage_name);
  if (index < 0) {
    std::vector<std::string> names;
    for (const loom::v1::Stage& s : plan->stages()) names.push_back(s.name());
    std::fprintf(stderr, "loom train-local: the plan has no stage '%s' (stages: %s)\n", stage_name.c_str(),
                 absl::StrJoin(names, ", ").c_str());
    return 2;
  }

  engine::StageRun run;
  run.plan_id = plan->name();
  run.stage = ResolveStage(*plan, index);
  run.model = ResolveModel(*plan, run.stage.model());
  run.data = plan->data();
  run.data.set_dir(data_dir);
  // The stage's inputs that the plan names by path; stage names need a coordinator (--from
  // stands in for `from`).
  for (const StageInputRef& ref : StageInputRefs(run.stage)) {
    absl::StatusOr<CheckpointRef> parsed = ParseCheckpointRef(ref.text);
    if (parsed.ok() && parsed->kind == CheckpointRef::Kind::kPath) SetInput(ref, parsed->path, &run.inputs);
  }
  if (!from.empty()) run.inputs.set_from(from);
  run.open_store = [] {
    return absl::StatusOr<std::unique_ptr<engine::KeyValueStore>>(
        absl::FailedPreconditionError("train-local runs one process: no rendezvous store"));
  };
  run.resume_from = resume;
  run.checkpoint_dir = out_dir;
  run.max_steps = steps;
  run.threads = threads;
  std::unique_ptr<engine::TokenStreamSource> tokens;
  if (!text_path.empty() || !tokens_path.empty()) {
    auto source = !text_path.empty() ? engine::TokenStreamSource::FromTextFile(text_path)
                                     : engine::TokenStreamSource::FromTokenFile(tokens_path, run.model.vocab_size());
    if (!source.ok()) return Fail(source.status(), "train-local");
    tokens = std::move(*source);
    std::printf("data: %lld tokens from %s\n", static_cast<long long>(tokens->size()),
                (!text_path.empty() ? text_path : tokens_path).c_str());
    run.token_source = tokens.get();
    // A file of tokens has no held-out split or problems: the stage's evaluations are skipped.
    if (!run.stage.eval().sets().empty() || run.stage.eval().math_accuracy()) {
      std::printf("eval: skipped (%s has no held-out data; use --data for the stage's evaluations)\n",
                  !text_path.empty() ? "--text" : "--tokens");
      run.stage.mutable_eval()->clear_sets();
      run.stage.mutable_eval()->set_math_accuracy(false);
    }
  }
  ConsoleReporter reporter;
  if (absl::Status s = engine::RunStage(run, reporter); !s.ok()) return Fail(s, "train-local");
  return 0;
}

int RunGenerate(const Args& args) {
  std::string checkpoint, prompt, ids, tokenizer_path;
  int max_new_tokens = 64, top_k = 0, threads = 1;
  double temperature = 0, top_p = 1;
  int64_t seed = 0;
  CommandLine cl("loom generate",
                 "Continues a prompt with a checkpoint's model (KV cache; greedy by default).");
  cl.AddPositional("CHECKPOINT", &checkpoint, "checkpoint directory (with manifest.json)");
  cl.AddFlag("prompt", &prompt, "prompt text (with --tokenizer, or for byte-level models: vocab_size 256)");
  cl.AddFlag("tokenizer", &tokenizer_path,
             "tokenizer the checkpoint was trained with (e.g. DATA/tokenizer.model or DATA/tokenizer.json)");
  cl.AddFlag("ids", &ids, "prompt as token ids separated by spaces or commas (any model)");
  cl.AddFlag("max-new-tokens", &max_new_tokens, "tokens to generate");
  cl.AddFlag("temperature", &temperature, "0 = greedy; otherwise sample at this temperature");
  cl.AddFlag("top-k", &top_k, "sample among the k most likely tokens (0: all)");
  cl.AddFlag("top-p", &top_p, "sample within the smallest set reaching this probability");
  cl.AddFlag("seed", &seed, "sampling seed");
  cl.AddFlag("threads", &threads, "CPU threads for the kernels");
  int exit_code = 0;
  if (!ParseOrExit(cl, args, &exit_code)) return exit_code;
  if (prompt.empty() == ids.empty()) {
    std::fprintf(stderr, "loom generate: give exactly one of --prompt TEXT or --ids \"1 2 3\"\n");
    return 2;
  }
  auto manifest = ReadCheckpointManifest(checkpoint, /*verify=*/false);
  if (!manifest.ok()) return Fail(manifest.status(), "generate");
  auto config = engine::TransformerConfig::FromProto(manifest->model());
  if (!config.ok()) return Fail(config.status(), "generate");
  std::vector<int32_t> tokens;
  std::unique_ptr<data::Tokenizer> tokenizer;
  if (!tokenizer_path.empty()) {
    auto loaded_tokenizer = data::Tokenizer::Load(tokenizer_path);
    if (!loaded_tokenizer.ok()) return Fail(loaded_tokenizer.status(), "generate");
    tokenizer = std::move(*loaded_tokenizer);
    if (tokenizer->vocab_size() > config->vocab) {
      std::fprintf(stderr,
                   "loom generate: the tokenizer has %d pieces, more than the model's vocab_size %d\n",
                   tokenizer->vocab_size(), config->vocab);
      return 2;
    }
  }
  if (!prompt.empty() && tokenizer) {
    tokens = tokenizer->Encode(prompt);
  } else if (!prompt.empty()) {
    if (config->vocab != 256) {
      std::fprintf(
          stderr,
          "loom generate: --prompt needs --tokenizer FILE or a byte-level model (vocab_size 256; this "
          "one has %d), or pass token ids with --ids\n",
          config->vocab);
      return 2;
    }
    for (unsigned char c : prompt) tokens.push_back(c);
  } else {
    for (absl::string_view piece : absl::StrSplit(ids, absl::ByAnyChar(" ,"), absl::SkipEmpty())) {
      int32_t id = 0;
      if (!absl::SimpleAtoi(piece, &id) || id < 0 || id >= config->vocab) {
        std::fprintf(stderr, "loom generate: --ids: '%s' is not a token id in [0, %d)\n",
                     std::string(piece).c_str(), config->vocab);
        return 2;
      }
      tokens.push_back(id);
    }
  }
  kernels::cpu::SetNumThreads(threads);
  engine::Transformer model(*config);
  auto loaded = engine::LoadWeights(checkpoint, &model);
  if (!loaded.ok()) return Fail(loaded.status(), "generate");
  engine::Generator generator(model, 1, static_cast<int>(tokens.size()) + max_new_tokens);
  engine::SamplingOptions options;
  options.temperature = static_cast<float>(temperature);
  options.top_k = top_k;
  options.top_p = static_cast<float>(top_p);
  options.max_new_tokens = max_new_tokens;
  options.seed = static_cast<uint64_t>(seed);
  const std::vector<int32_t> out = generator.Generate({tokens}, options)[0];
  if (tokenizer) {
    std::printf("%s%s\n", prompt.c_str(), tokenizer->Decode(out).c_str());
  } else if (!prompt.empty()) {
    std::string text = prompt;
    for (int32_t t : out) text.push_back(static_cast<char>(t));
    std::printf("%s\n", text.c_str());
  } else {
    std::printf("%s\n", absl::StrJoin(out, " ").c_str());
  }
  return 0;
}

int RunExportHf(const Args& args) {
  std::string checkpoint, out, dtype = "f32", max_shard = "5G";
  engine::HfExportOptions options;
  CommandLine cl("loom export-hf",
                 "Writes a checkpoint as a Hugging Face Llama directory: config.json, the weights "
                 "(model.safetensors, or shards and model.safetensors.index.json), the tokenizer the model was trained "
                 "with, tokenizer_config.json (with the chat template as Jinja), special_tokens_map.json and "
                 "generation_config.json.");
  cl.AddPositional("CHECKPOINT", &checkpoint, "Loom checkpoint directory (verified before export)");
  cl.AddPositional("OUT", &out, "output directory (created; must not exist or be empty)");
  cl.AddFlag("dtype", &dtype, "weights as f32 (exact) or bf16 (half the size, rounded to nearest even)");
  cl.AddFlag("max-shard-size", &max_shard,
             "bytes per weights file (5G, 500M, 64Mi, ...); larger models are written as shards with an index");
  cl.AddFlag("tokenizer", &options.tokenizer,
             "tokenizer file to include (default: the one the checkpoint records; its sha256 must match)");
  cl.AddFlag("chat-template", &options.chat_template,
             "chatml, alpaca or none (default: the template the checkpoint was trained with, if any)");
  int exit_code = 0;
  if (!ParseOrExit(cl, args, &exit_code)) return exit_code;
  if (dtype != "f32" && dtype != "bf16") {
    return Fail(absl::InvalidArgumentError(absl::StrCat("--dtype '", dtype, "': use f32 or bf16")), "export-hf");
  }
  options.bf16 = dtype == "bf16";
  absl::StatusOr<int64_t> shard_bytes = ParseCount(max_shard);
  if (!shard_bytes.ok() || *shard_bytes <= 0) {
    return Fail(absl::InvalidArgumentError(absl::StrCat("--max-shard-size '", max_shard,
                                                        "': give a positive size such as 5G, 500M or 64Mi")),
                "export-hf");
  }
  options.max_shard_bytes = *shard_bytes;
  auto warnings = engine::ExportHuggingFace(checkpoint, out, options);
  if (!warnings.ok()) return Fail(warnings.status(), "export-hf");
  for (absl::string_view w : absl::StrSplit(*warnings, '\n', absl::SkipEmpty())) {
    std::fprintf(stderr, "loom export-hf: warning: %s\n", std::string(w).c_str());
  }
  std::printf("wrote %s\n", out.c_str());
  return 0;
}

int RunImportHf(const Args& args) {
  std::string hf_dir, checkpoint;
  CommandLine cl("loom import-hf",
                 "Reads a Hugging Face Llama directory (F32/BF16/F16, sharded or not) into a Loom "
                 "checkpoint that a stage can start `from`.");
  cl.AddPositional("HF_DIR", &hf_dir, "directory with config.json and model.safetensors (or its index)");
  cl.AddPositional("CHECKPOINT", &checkpoint, "Loom checkpoint directory to write");
  int exit_code = 0;
  if (!ParseOrExit(cl, args, &exit_code)) return exit_code;
  if (absl::Status s = engine::ImportHuggingFace(hf_dir, checkpoint); !s.ok()) return Fail(s, "import-hf");
  std::printf("wrote %s\n", checkpoint.c_str());
  return 0;
}

int RunEval(const Args& args) {
  std::string checkpoint, data_dir, sets, math_source = "sft_math", tokenizer_path;
  bool math = false, json = false;
  int problems = 64, seq_len = 256, threads = 1, max_new_tokens = 64;
  int64_t max_tokens = 64 * 1024;
  CommandLine cl("loom eval",
                 "Measures a checkpoint on prepared data in this process, with the runner of an `eval` stage: "
                 "held-out loss per source and math accuracy (greedy answers checked by the math verifier).");
  cl.AddPositional("CHECKPOINT", &checkpoint, "Loom checkpoint directory");
  cl.AddFlag("data", &data_dir, "prepared data directory (`loom data prepare` output)");
  cl.AddFlag("set", &sets, "held-out sources to measure the loss on, comma-separated (e.g. math,code)");
  cl.AddFlag("math", &math, "also measure math accuracy on --math-source's held-out problems");
  cl.AddFlag("math-source", &math_source, "chat source whose held-out conversations are the problems");
  cl.AddFlag("problems", &problems, "math problems to answer (the first of the held-out split)");
  cl.AddFlag("max-new-tokens", &max_new_tokens, "tokens an answer may take");
  cl.AddFlag("seq-len", &seq_len, "tokens per sequence for the held-out loss");
  cl.AddFlag("max-tokens", &max_tokens, "held-out tokens per set");
  cl.AddFlag(
      "tokenizer", &tokenizer_path,
      "tokenizer file (default: DATA/tokenizer.model, or DATA/tokenizer.json if that is what DATA holds)");
  cl.AddFlag("threads", &threads, "CPU threads for the kernels");
  cl.AddFlag("json", &json, "print {\"eval_loss\": {...}, \"eval_metrics\": {...}} as `status --json` does");
  cl.AddEpilog("example:\n  loom eval ~/.cache/loom-demo/ckpt/step-000040 --data ~/.cache/loom-demo/data --set math,code --math");
  int exit_code = 0;
  if (!ParseOrExit(cl, args, &exit_code)) return exit_code;
  if (data_dir.empty()) {
    std::fprintf(stderr, "loom eval: --data DIR is required (the prepared data the model was trained on)\n");
    return 2;
  }
  const std::vector<std::string> set_list = absl::StrSplit(sets, ',', absl::SkipEmpty());
  if (set_list.empty() && !math) {
    std::fprintf(stderr, "loom eval: nothing to measure: give --set SOURCES and/or --math\n");
    return 2;
  }
  engine::StageRun run;
  run.stage.set_name("eval");
  run.stage.set_kind(loom::v1::STAGE_KIND_EVAL);
  loom::v1::EvalConfig& eval = *run.stage.mutable_eval();
  for (const std::string& set : set_list) eval.add_sets(set);
  eval.set_max_tokens(max_tokens);
  eval.set_seq_len(seq_len);
  eval.set_math_accuracy(math);
  eval.set_math_problems(problems);
  eval.set_math_source(math_source);
  eval.set_math_max_new_tokens(max_new_tokens);
  ApplyStageDefaults(&run.stage);
  run.data.set_dir(data_dir);
  run.data.set_tokenizer(tokenizer_path);
  run.inputs.set_from(checkpoint);
  run.threads = threads;
  ConsoleReporter reporter(json);
  if (absl::Status s = engine::RunStage(run, reporter); !s.ok()) return Fail(s, "eval");
  if (json) std::printf("%s\n", reporter.MeasuresJson().c_str());
  return 0;
}

}  // namespace loom::cli
