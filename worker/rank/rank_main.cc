// `loom-rank`: runs one rank of a job attempt with the training engine. The worker daemon starts
// one per assigned rank (so a crashing rank never takes the daemon down), hands it the
// Assignment in a file, and reads its progress and checkpoint reports from the pipe named by
// LOOM_REPORT_FD (worker/rank_protocol.h). Exit code 0: the stage finished and its final
// checkpoint is durable; anything else fails the attempt, with the last stderr line as reason.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/checkpoint_io.h"
#include "common/command_line.h"
#include "common/files.h"
#include "common/proto_names.h"
#include "common/status_macros.h"
#include "data/chat.h"
#include "data/tokenizer.h"
#include "kernels/cpu/parallel.h"
#include "loom/v1/coordinator.pb.h"
#include "worker/engine/chat_source.h"
#include "worker/engine/communicator.h"
#include "worker/engine/evaluator.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/math_eval.h"
#include "worker/engine/merge.h"
#include "worker/engine/online_preference_source.h"
#include "worker/engine/preference_source.h"
#include "worker/engine/rejection_sampling.h"
#include "worker/engine/rl_source.h"
#include "worker/engine/sampler_source.h"
#include "worker/engine/trainer.h"
#include "worker/rank/coordinator_store.h"
#include "worker/rank_protocol.h"

namespace {

using loom::v1::StageKind;

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

bool IsPretrainingKind(StageKind kind) {
  return kind == loom::v1::STAGE_KIND_PRETRAIN || kind == loom::v1::STAGE_KIND_CONTINUED_PRETRAIN ||
         kind == loom::v1::STAGE_KIND_CONTEXT_EXTENSION || kind == loom::v1::STAGE_KIND_ANNEAL;
}

// The checkpoint path the coordinator resolved for one of the stage's inputs, by the key the
// input maps used to have ("from", "teacher", "reference", "reward_model", "dataset", "base",
// "checkpoints[i]" and "last_k[i]" (both Assignment.inputs.checkpoints), "inputs[i]"
// (merge_inputs)). Interim: common/stage_inputs.h CheckInputsResolved is the check to use.
absl::StatusOr<std::string> Input(const loom::v1::Assignment& a, const std::string& key) {
  const loom::v1::StageInputs& in = a.inputs();
  int i = -1;
  auto indexed = [&](const char* prefix) {  // "<prefix>i]" with i >= 0 into `i`
    const size_t n = std::string(prefix).size();
    return absl::StartsWith(key, prefix) && key.size() > n && key.back() == ']' &&
           absl::SimpleAtoi(key.substr(n, key.size() - n - 1), &i) && i >= 0;
  };
  std::string path;
  if (key == "from") {
    path = in.from();
  } else if (key == "teacher") {
    path = in.teacher();
  } else if (key == "reference") {
    path = in.reference();
  } else if (key == "reward_model") {
    path = in.reward_model();
  } else if (key == "dataset") {
    path = in.dataset();
  } else if (key == "base") {
    path = in.merge_base();
  } else if ((indexed("checkpoints[") || indexed("last_k[")) && i < in.checkpoints_size()) {
    path = in.checkpoints(i);
  } else if (indexed("inputs[") && i < in.merge_inputs_size()) {
    path = in.merge_inputs(i);
  }
  if (path.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("stage '", a.stage().name(), "': input ", key, " was not resolved to a checkpoint"));
  }
  return path;
}

// A rank with nothing to do in a one-rank stage run under a wider layout: the empty report tells
// the coordinator this rank ran.
absl::Status ReportIdle(const loom::v1::Assignment& a, loom::RankReporter& reporter) {
  loom::v1::WorkerMessage m;
  *m.mutable_progress()->mutable_rank() = a.rank();
  m.mutable_progress()->set_time_ms(NowMs());
  return reporter.Send(m);
}

// average and merge stages: no training, one weights-only checkpoint (written by rank 0 alone,
// whatever the layout), reported as final.
absl::Status RunMerge(const loom::v1::Assignment& a, loom::RankReporter& reporter) {
  if (a.rank().rank() != 0) return ReportIdle(a, reporter);
  const loom::v1::Stage& stage = a.stage();
  std::vector<std::string> paths;
  std::string base;
  if (stage.has_average()) {
    if (stage.average().has_last_k()) {
      for (int i = 0; i < stage.average().last_k(); ++i) {
        LOOM_ASSIGN_OR_RETURN(std::string p, Input(a, absl::StrCat("last_k[", i, "]")));
        paths.push_back(p);
      }
    }
    for (int i = 0; i < stage.average().checkpoints_size(); ++i) {
      LOOM_ASSIGN_OR_RETURN(std::string p, Input(a, absl::StrCat("checkpoints[", i, "]")));
      paths.push_back(p);
    }
  } else {
    for (int i = 0; i < stage.merge().inputs_size(); ++i) {
      LOOM_ASSIGN_OR_RETURN(std::string p, Input(a, absl::StrCat("inputs[", i, "]")));
      paths.push_back(p);
    }
    if (!stage.merge().base().empty()) {
      LOOM_ASSIGN_OR_RETURN(base, Input(a, "base"));
    }
  }
  const std::string out = a.checkpoint_dir() + "/" + loom::CheckpointDirName(0);
  const absl::Time start = absl::Now();
  LOOM_RETURN_IF_ERROR(loom::engine::MergeCheckpoints(
      paths, base, loom::engine::MergeOptionsFromStage(stage, a.seed()), out, a.plan_id(), stage.name(), 0));
  loom::v1::WorkerMessage m;
  loom::v1::CheckpointReport& c = *m.mutable_checkpoint();
  *c.mutable_rank() = a.rank();
  c.set_path(out);
  c.set_num_shards(1);
  c.set_final(true);
  c.set_save_seconds(absl::ToDoubleSeconds(absl::Now() - start));
  return reporter.Send(m);
}

// Math accuracy of `model` on the held-out conversations of eval.math_source, into `p` as
// eval_metrics "<source>/accuracy" (and "/no_answer", "/problems"); the first answers go to the
// rank's log.
absl::Status EvaluateMath(const loom::v1::Stage& stage, const std::string& data_dir,
                          const loom::engine::Transformer& model, const loom::data::Tokenizer& tokenizer,
                          loom::v1::Progress* p, const std::string& suffix = "") {
  const loom::v1::EvalConfig& eval = stage.eval();
  const std::string path = absl::StrCat(data_dir, "/", eval.math_source(), "/heldout.jsonl");
  LOOM_ASSIGN_OR_RETURN(std::vector<loom::data::Conversation> problems, loom::data::ReadConversations(path));
  loom::engine::MathEvalOptions options;
  options.max_problems = eval.math_problems();
  if (stage.sft().template_() == loom::v1::SftConfig::TEMPLATE_ALPACA) {
    options.chat_template = loom::data::ChatTemplate::kAlpaca;
  }
  LOOM_ASSIGN_OR_RETURN(loom::engine::MathEvalResult r,
                        loom::engine::EvaluateMathAccuracy(model, tokenizer, problems, options));
  const std::string& set = eval.math_source();
  (*p->mutable_eval_metrics())[set + "/accuracy" + suffix] = r.accuracy();
  (*p->mutable_eval_metrics())[set + "/no_answer" + suffix] = r.problems ? double(r.no_answer) / r.problems : 0.0;
  (*p->mutable_eval_metrics())[set + "/problems" + suffix] = r.problems;
  std::printf("eval step %lld %s accuracy%s %.6f (%d of %d correct, %d without an answer)\n",
              static_cast<long long>(p->step()), set.c_str(), suffix.c_str(), r.accuracy(), r.correct, r.problems,
              r.no_answer);
  for (const auto& sample : r.samples) {
    std::printf("  %s -> %s [%s; reference %s]\n", sample.prompt.c_str(), sample.answer.c_str(),
                sample.verdict.c_str(), sample.reference.c_str());
  }
  std::fflush(stdout);
  return absl::OkStatus();
}

// eval stages: held-out loss of `from` on eval.sets and its math accuracy, reported once by
// rank 0; the stage writes no checkpoint (it produces measurements only).
absl::Status RunEval(const loom::v1::Assignment& a, const std::string& data_dir,
                     const loom::data::Tokenizer& tokenizer, loom::RankReporter& reporter) {
  if (a.rank().rank() != 0) return ReportIdle(a, reporter);  // nothing to measure twice
  const loom::v1::EvalConfig& eval = a.stage().eval();
  LOOM_ASSIGN_OR_RETURN(std::string from, Input(a, "from"));
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<loom::engine::Transformer> loaded, loom::engine::LoadModel(from));
  loom::engine::Transformer& model = *loaded;
  loom::v1::WorkerMessage m;
  loom::v1::Progress& p = *m.mutable_progress();
  *p.mutable_rank() = a.rank();
  if (!eval.sets().empty()) {
    loom::engine::EvalOptions eo;
    eo.data_dir = data_dir;
    eo.sets.assign(eval.sets().begin(), eval.sets().end());
    eo.max_tokens = eval.max_tokens();
    eo.tokenizer_hash = tokenizer.hash();
    eo.vocab_size = tokenizer.vocab_size();
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<loom::engine::Evaluator> evaluator, loom::engine::Evaluator::Open(eo));
    LOOM_ASSIGN_OR_RETURN(auto losses, evaluator->Evaluate(model, eval.seq_len(), 1));
    for (const auto& [set, loss] : losses) {
      (*p.mutable_eval_loss())[set] = loss;
      std::printf("eval %s loss %.6f\n", set.c_str(), loss);
    }
  }
  if (eval.math_accuracy()) LOOM_RETURN_IF_ERROR(EvaluateMath(a.stage(), data_dir, model, tokenizer, &p));
  p.set_time_ms(NowMs());
  return reporter.Send(m);
}

// A stage's sampling block (defaults resolved) as the generator's options, seeded by the stage.
loom::engine::SamplingOptions SamplingFromProto(const loom::v1::SamplingConfig& c, uint64_t seed) {
  loom::engine::SamplingOptions o;
  o.temperature = static_cast<float>(c.temperature());
  o.top_p = static_cast<float>(c.top_p());
  o.top_k = c.top_k();
  o.max_new_tokens = c.max_new_tokens();
  o.seed = seed;
  return o;
}

// A scorer's reward model (input "reward_model", a reward_model stage's checkpoint): its
// end-of-turn logit at the end of a completion, as the reward_model stage trained it.
absl::StatusOr<loom::engine::RewardScorer> LoadRewardScorer(const loom::v1::Assignment& a,
                                                            const loom::data::Tokenizer& tokenizer,
                                                            std::unique_ptr<loom::engine::Transformer>* model) {
  LOOM_ASSIGN_OR_RETURN(std::string path, Input(a, "reward_model"));
  LOOM_ASSIGN_OR_RETURN(*model, loom::engine::LoadModel(path));
  loom::engine::RewardScorer scorer;
  scorer.model = model->get();
  LOOM_ASSIGN_OR_RETURN(scorer.reward_token, loom::data::EndOfTurnToken(loom::data::ChatTemplate::kChatML, tokenizer));
  scorer.seq_len = (*model)->config().max_seq_len > 0 ? std::min(512, (*model)->config().max_seq_len) : 512;
  return scorer;
}

// rejection_sampling stages: this rank's block of the dataset's prompts, N samples each from the
// `from` model, verified; the kept examples go to <checkpoint_dir>/dataset/part-<rank>.jsonl, and
// the directory is reported as the stage's final "checkpoint" (one shard per rank), which later
// stages read through dataset.from_stage. pass@1 and best-of-N are summed over the ranks.
absl::Status RunRejectionSampling(const loom::v1::Assignment& a, const std::string& data_dir,
                                  const loom::data::Tokenizer& tokenizer, loom::engine::Communicator* group,
                                  loom::RankReporter& reporter) {
  const loom::v1::Stage& stage = a.stage();
  const loom::v1::RejectionSamplingConfig& rs = stage.rejection_sampling();
  if (stage.dataset().source().empty()) {
    return absl::UnimplementedError(absl::StrCat(
        "stage '", stage.name(), "': a rejection_sampling stage reads its prompts from a prepared chat source"));
  }
  LOOM_ASSIGN_OR_RETURN(std::vector<loom::data::Conversation> problems,
                        loom::data::ReadConversations(absl::StrCat(data_dir, "/", stage.dataset().source(), "/train.jsonl")));
  if (rs.max_prompts() > 0 && problems.size() > static_cast<size_t>(rs.max_prompts())) problems.resize(rs.max_prompts());
  LOOM_ASSIGN_OR_RETURN(std::string from, Input(a, "from"));
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<loom::engine::Transformer> model, loom::engine::LoadModel(from));

  loom::engine::RejectionSamplingOptions options;
  options.samples_per_prompt = rs.samples_per_prompt();
  options.sampling = SamplingFromProto(rs.sampling(), a.seed());
  options.keep = rs.keep() == loom::v1::RejectionSamplingConfig::KEEP_ALL_CORRECT
                     ? loom::engine::RejectionSamplingOptions::Keep::kAllCorrect
                     : loom::engine::RejectionSamplingOptions::Keep::kBest;
  std::unique_ptr<loom::engine::Transformer> reward_model;
  loom::engine::RewardScorer scorer;
  if (!rs.scorer().reward_model().empty()) {
    LOOM_ASSIGN_OR_RETURN(scorer, LoadRewardScorer(a, tokenizer, &reward_model));
    options.reward_model = &scorer;
  }
  const loom::v1::ParallelLayout& layout = a.layout();
  size_t first = 0, count = 0;
  loom::engine::PromptBlock(problems.size(), layout.dp_rank(), std::max(1, layout.dp()), &first, &count);
  std::printf("sampling prompts %zu..%zu of %zu, %d samples each\n", first, first + count, problems.size(),
              options.samples_per_prompt);
  std::fflush(stdout);
  const absl::Time start = absl::Now();
  LOOM_ASSIGN_OR_RETURN(loom::engine::RejectionSamplingResult result,
                        loom::engine::SampleAndVerify(*model, tokenizer, problems, first, count, options));

  const std::string dir = a.checkpoint_dir() + "/dataset";
  std::filesystem::create_directories(dir);
  const std::string part = absl::StrCat(dir, "/part-", absl::Dec(layout.dp_rank(), absl::kZeroPad5), ".jsonl");
  LOOM_RETURN_IF_ERROR(loom::WriteFileDurably(part + ".tmp", loom::engine::ConversationsToJsonl(result.kept)));
  LOOM_RETURN_IF_ERROR(loom::RenameDurably(part + ".tmp", part));
  // The same examples as token shards (tokens and loss mask), for stages that read shards.
  LOOM_RETURN_IF_ERROR(loom::data::WriteChatShards(part.substr(0, part.size() - 6), result.kept,
                                                   options.chat_template, tokenizer));

  double counts[5] = {double(result.prompts), double(result.samples), double(result.correct_samples),
                      double(result.solved_prompts), double(result.kept.size())};
  if (group) LOOM_RETURN_IF_ERROR(group->AllReduceSum(counts, 5));
  loom::v1::WorkerMessage m;
  loom::v1::Progress& p = *m.mutable_progress();
  *p.mutable_rank() = a.rank();
  auto& e = *p.mutable_eval_metrics();
  e["rs/prompts"] = counts[0];
  e["rs/samples"] = counts[1];
  e["rs/pass@1"] = counts[1] > 0 ? counts[2] / counts[1] : 0.0;
  e["rs/best_of_n"] = counts[0] > 0 ? counts[3] / counts[0] : 0.0;
  e["rs/kept"] = counts[4];
  p.set_time_ms(NowMs());
  std::printf("rejection sampling: %.0f prompts x %d samples in %.1f s: pass@1 %.4f, best-of-%d %.4f, %.0f examples kept\n",
              counts[0], options.samples_per_prompt, absl::ToDoubleSeconds(absl::Now() - start), e["rs/pass@1"],
              options.samples_per_prompt, e["rs/best_of_n"], counts[4]);
  std::fflush(stdout);
  LOOM_RETURN_IF_ERROR(reporter.Send(m));

  loom::v1::WorkerMessage done;
  loom::v1::CheckpointReport& c = *done.mutable_checkpoint();
  *c.mutable_rank() = a.rank();
  c.set_path(dir);
  c.set_num_shards(std::max(1, layout.world_size()));
  c.set_shard(a.rank().rank());
  c.set_final(true);
  return reporter.Send(done);
}

absl::Status Run(const loom::v1::Assignment& a, const std::string& coordinator, int threads) {
  const loom::v1::ParallelLayout& layout = a.layout();
  loom::kernels::cpu::SetNumThreads(std::max(1, threads));
  if (a.stage().kind() == loom::v1::STAGE_KIND_AVERAGE || a.stage().kind() == loom::v1::STAGE_KIND_MERGE) {
    LOOM_ASSIGN_OR_RETURN(loom::RankReporter reporter, loom::RankReporter::FromEnvironment());
    return RunMerge(a, reporter);
  }
  const bool distill = a.stage().kind() == loom::v1::STAGE_KIND_DISTILL;
  const bool sft = a.stage().kind() == loom::v1::STAGE_KIND_SFT;
  const bool eval_only = a.stage().kind() == loom::v1::STAGE_KIND_EVAL;
  const bool dpo = a.stage().kind() == loom::v1::STAGE_KIND_DPO;
  const bool rejection_sampling = a.stage().kind() == loom::v1::STAGE_KIND_REJECTION_SAMPLING;
  const bool rl = a.stage().kind() == loom::v1::STAGE_KIND_RL;
  const bool reward_model = a.stage().kind() == loom::v1::STAGE_KIND_REWARD_MODEL;

  if (!IsPretrainingKind(a.stage().kind()) && !distill && !sft && !eval_only && !dpo && !rejection_sampling &&
      !rl && !reward_model) {
    return absl::UnimplementedError(absl::StrCat("stage '", a.stage().name(), "': kind ",
                                                 loom::EnumName(a.stage().kind()),
                                                 " is not implemented by this worker yet"));
  }
  if ((layout.tp() > 1 || layout.pp() > 1) && !IsPretrainingKind(a.stage().kind()) && !sft && !eval_only) {
    return absl::UnimplementedError(absl::StrCat("stage '", a.stage().name(), "': kind ",
                                                 loom::EnumName(a.stage().kind()),
                                                 " does not run with tensor or pipeline parallelism yet (tp ",
                                                 layout.tp(), ", pp ", layout.pp(), "); set tp: 1 and pp: 1 for it"));
  }

  // Data: the stage's mix over the prepared shards, checked against the plan's tokenizer.
  const std::string& data_dir = a.data().dir();
  if (data_dir.empty())
    return absl::InvalidArgumentError("assignment has no data.dir (prepared data directory)");
  const std::string tokenizer_path =
      a.data().tokenizer().empty() ? data_dir + "/tokenizer.model" : a.data().tokenizer();
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<loom::data::Tokenizer> tokenizer,
                        loom::data::Tokenizer::Load(tokenizer_path));
  if (tokenizer->vocab_size() > a.model().vocab_size()) {
    return absl::InvalidArgumentError(absl::StrCat("model.vocab_size ", a.model().vocab_size(),
                                                   " is smaller than the tokenizer's ",
                                                   tokenizer->vocab_size(), " (", tokenizer_path, ")"));
  }
  if (eval_only) {
    LOOM_ASSIGN_OR_RETURN(loom::RankReporter reporter, loom::RankReporter::FromEnvironment());
    return RunEval(a, data_dir, *tokenizer, reporter);
  }
  // The data-parallel group meets through the coordinator's rendezvous store (before the data:
  // a dpo stage's ranks split the reference's work through it).
  std::unique_ptr<loom::engine::KeyValueStore> store;
  // Ranks are ordered (dp_rank, pp_rank, tp_rank), tp innermost (Megatron's order): a tensor-
  // parallel group is consecutive ranks, a pipeline strides by tp, a data-parallel group by tp·pp.
  std::unique_ptr<loom::engine::Communicator> dp_group, tp_group, pp_group;
  auto join = [&](const std::string& prefix, int rank, int size,
                  std::unique_ptr<loom::engine::Communicator>* group) -> absl::Status {
    if (size <= 1) return absl::OkStatus();
    if (!store) {
      LOOM_ASSIGN_OR_RETURN(store, loom::worker::NewCoordinatorKeyValueStore(coordinator, a.rendezvous_prefix()));
    }
    loom::engine::GlooOptions options;
    options.rank = rank;
    options.size = size;
    options.prefix = prefix;
    // Rank 0 alone writes checkpoints and runs held-out evaluation while its peers wait in the
    // next collective: the timeout must cover those, not just a step. A peer that dies still
    // fails the group at once (its connections close).
    options.timeout = absl::Minutes(10);
    LOOM_ASSIGN_OR_RETURN(*group, loom::engine::NewGlooCommunicator(store.get(), options));
    return absl::OkStatus();
  };
  LOOM_RETURN_IF_ERROR(join(absl::StrCat("tp", layout.dp_rank(), "_", layout.pp_rank()), layout.tp_rank(),
                            layout.tp(), &tp_group));
  LOOM_RETURN_IF_ERROR(join(absl::StrCat("pp", layout.dp_rank(), "_", layout.tp_rank()), layout.pp_rank(),
                            layout.pp(), &pp_group));
  LOOM_RETURN_IF_ERROR(join(layout.tp() > 1 || layout.pp() > 1
                                ? absl::StrCat("dp", layout.pp_rank(), "_", layout.tp_rank())
                                : std::string("dp"),
                            layout.dp_rank(), layout.dp(), &dp_group));

  std::unique_ptr<loom::engine::BatchSource> data;
  loom::engine::RlBatchSource* rl_source = nullptr;  // rl: `data`, which samples from the policy
  loom::engine::OnlinePreferenceSource* online_source = nullptr;  // online dpo: likewise
  std::unique_ptr<loom::engine::Transformer> rl_reference, rl_reward_model;
  loom::engine::RewardScorer rl_scorer;
  int64_t schedule_tokens = 0;
  // dpo: held-out pairs for the preference accuracy, and the source's name for its keys.
  std::vector<loom::data::PreferenceExample> heldout_pairs;
  int dpo_seq_len = 0;
  int32_t reward_token = -1;  // reward_model: the LM-head row that is the scalar head
  const bool online_dpo = dpo && a.stage().dpo().online();
  if (online_dpo) {
    // Qwen 2's online DPO: pairs from the policy's own samples each step, scored by the verifier
    // or a reward model; the frozen reference is kept for their log-probabilities.
    const loom::v1::Stage& stage = a.stage();
    if (stage.dataset().source().empty()) {
      return absl::UnimplementedError(
          absl::StrCat("stage '", stage.name(), "': online dpo reads its prompts from a prepared chat source"));
    }
    const loom::v1::DpoConfig& d = stage.dpo();
    loom::engine::OnlinePreferenceOptions oo;
    oo.path = absl::StrCat(data_dir, "/", stage.dataset().source(), "/train.jsonl");
    oo.seed = a.seed();
    oo.epochs = stage.dataset().has_epochs() ? stage.dataset().epochs() : 1;
    oo.samples_per_prompt = d.samples_per_prompt();
    oo.sampling = SamplingFromProto(d.sampling(), a.seed());
    if (!d.scorer().reward_model().empty()) {
      LOOM_ASSIGN_OR_RETURN(rl_scorer, LoadRewardScorer(a, *tokenizer, &rl_reward_model));
      oo.reward_model = &rl_scorer;
    }
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<loom::engine::OnlinePreferenceSource> source,
                          loom::engine::OnlinePreferenceSource::Open(oo, *tokenizer));
    LOOM_ASSIGN_OR_RETURN(std::string reference_path, Input(a, "reference"));
    LOOM_ASSIGN_OR_RETURN(rl_reference, loom::engine::LoadModel(reference_path));
    const int seq_len = stage.seq_len_schedule().empty() ? 256 : stage.seq_len_schedule(0).seq_len();
    schedule_tokens = source->prompts() * 2 * seq_len * oo.epochs;
    online_source = source.get();
    data = std::move(source);
  } else if (dpo || reward_model) {
    const loom::v1::Stage& stage = a.stage();
    if (stage.dataset().source().empty()) {
      return absl::UnimplementedError(absl::StrCat("stage '", stage.name(), "': a ", loom::EnumName(stage.kind()),
                                                   " stage reads a prepared preference source (dataset.source)"));
    }
    if (stage.seq_len_schedule_size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat("stage '", stage.name(), "': a ", loom::EnumName(stage.kind()),
                                                     " stage trains at one seq_len (pairs are cut to it once); "
                                                     "give seq_len_schedule one entry"));
    }
    dpo_seq_len = stage.seq_len_schedule(0).seq_len();
    loom::engine::PreferenceSourceOptions po;
    po.path = absl::StrCat(data_dir, "/", stage.dataset().source(), "/train.jsonl");
    po.seed = a.seed();
    po.epochs = stage.dataset().has_epochs() ? stage.dataset().epochs() : 1;
    po.with_reference = dpo;
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<loom::engine::PreferenceBatchSource> prefs,
                          loom::engine::PreferenceBatchSource::Open(po, *tokenizer));
    // dpo: the frozen reference runs once over the pairs; its values are kept with the stage's
    // checkpoints, so a later attempt reads them back.
    if (dpo) {
      LOOM_ASSIGN_OR_RETURN(std::string reference_path, Input(a, "reference"));
      LOOM_ASSIGN_OR_RETURN(std::unique_ptr<loom::engine::Transformer> reference,
                            loom::engine::LoadModel(reference_path));
      const absl::Time start = absl::Now();
      LOOM_RETURN_IF_ERROR(prefs->ComputeReference(
          *reference, reference_path, dpo_seq_len,
          absl::StrCat(a.checkpoint_dir(), "/reference_logprobs.rank", layout.dp_rank(), ".bin"), dp_group.get()));
      std::printf("reference log-probabilities of %lld pairs %s in %.1f s (%lld pairs longer than seq_len %d are cut)\n",
                  static_cast<long long>(prefs->pairs()),
                  prefs->reference_from_cache() ? "read from the cache" : "computed",
                  absl::ToDoubleSeconds(absl::Now() - start), static_cast<long long>(prefs->truncated_pairs()),
                  dpo_seq_len);
    }
    if (reward_model) {
      LOOM_ASSIGN_OR_RETURN(reward_token,
                            loom::data::EndOfTurnToken(loom::data::ChatTemplate::kChatML, *tokenizer));
    }
    schedule_tokens = prefs->pairs() * 2 * dpo_seq_len * po.epochs;
    if (layout.dp_rank() == 0) {
      LOOM_ASSIGN_OR_RETURN(heldout_pairs, loom::engine::ReadPreferenceExamples(
                                               absl::StrCat(data_dir, "/", stage.dataset().source(), "/heldout.jsonl"),
                                               loom::data::ChatTemplate::kChatML, *tokenizer));
    }
    data = std::move(prefs);
  } else if (rl) {
    // The policy samples its own batches (RlBatchSource); the frozen reference is kept for the KL.
    const loom::v1::Stage& stage = a.stage();
    if (stage.dataset().source().empty()) {
      return absl::UnimplementedError(
          absl::StrCat("stage '", stage.name(), "': an rl stage reads its prompts from a prepared chat source"));
    }
    loom::engine::RlSourceOptions ro;
    ro.path = absl::StrCat(data_dir, "/", stage.dataset().source(), "/train.jsonl");
    ro.seed = a.seed();
    ro.epochs = stage.dataset().has_epochs() ? stage.dataset().epochs() : 1;
    ro.samples_per_prompt = stage.rl().samples_per_prompt();
    ro.sampling = SamplingFromProto(stage.rl().sampling(), a.seed());
    ro.kl_coef = stage.rl().kl_coef();
    if (!stage.rl().scorer().reward_model().empty()) {
      LOOM_ASSIGN_OR_RETURN(rl_scorer, LoadRewardScorer(a, *tokenizer, &rl_reward_model));
      ro.reward_model = &rl_scorer;
    }
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<loom::engine::RlBatchSource> source,
                          loom::engine::RlBatchSource::Open(ro, *tokenizer));
    rl_source = source.get();
    data = std::move(source);
    LOOM_ASSIGN_OR_RETURN(std::string reference_path, Input(a, "reference"));
    LOOM_ASSIGN_OR_RETURN(rl_reference, loom::engine::LoadModel(reference_path));
    const int seq_len = stage.seq_len_schedule().empty() ? 256 : stage.seq_len_schedule(0).seq_len();
    schedule_tokens = rl_source->prompts() * ro.samples_per_prompt * seq_len * ro.epochs;
  } else if (rejection_sampling) {
    // Samples after the data-parallel group is up (below).
  } else if (sft) {
    // Chat data stays JSONL after `loom data prepare`: <data>/<source>/train.jsonl, rendered with
    // the stage's template at load time; or a rejection_sampling stage's dataset directory.
    const loom::v1::DatasetRef& dataset = a.stage().dataset();
    std::string chats = absl::StrCat(data_dir, "/", dataset.source(), "/train.jsonl");
    if (dataset.source().empty()) {
      LOOM_ASSIGN_OR_RETURN(chats, Input(a, "dataset"));
    }
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<loom::engine::ChatBatchSource> chat,
                          loom::engine::ChatBatchSource::Open(a.stage(), chats, *tokenizer, a.seed()));
    schedule_tokens = chat->tokens_per_epoch() * chat->epochs();
    data = std::move(chat);
  } else {
    LOOM_ASSIGN_OR_RETURN(data, loom::engine::SamplerBatchSource::Open(a.stage(), data_dir, tokenizer->hash(),
                                                                       tokenizer->vocab_size(), a.seed()));
  }

  LOOM_ASSIGN_OR_RETURN(loom::RankReporter reporter, loom::RankReporter::FromEnvironment());
  if (rejection_sampling) return RunRejectionSampling(a, data_dir, *tokenizer, dp_group.get(), reporter);
  loom::engine::TrainerOptions options;
  options.model = a.model();
  options.stage = a.stage();
  options.plan_id = a.plan_id();
  options.checkpoint_dir = a.checkpoint_dir();
  options.resume_from = a.resume_from();
  options.init_from = a.inputs().from();
  options.data_parallel = dp_group.get();
  options.tensor_parallel = tp_group.get();
  options.pipeline_parallel = pp_group.get();
  options.schedule_tokens = schedule_tokens;
  options.policy_gradient = rl;
  if (reward_model) {
    options.reward_model = true;
    options.reward_token = reward_token;
    options.reward_margin = a.stage().reward_model().margin();
  }
  if (dpo) {
    options.preference = true;
    options.dpo = loom::engine::DpoOptionsFromProto(a.stage().dpo());
  }
  if (distill) {
    LOOM_ASSIGN_OR_RETURN(options.teacher_from, Input(a, "teacher"));
    options.distill = loom::engine::DistillOptionsFromProto(a.stage().distill());
  }
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<loom::engine::Trainer> trainer,
                        loom::engine::Trainer::Create(options, data.get()));
  if (rl_source) rl_source->SetModels(&trainer->model(), rl_reference.get());
  if (online_source) online_source->SetModels(&trainer->model(), rl_reference.get());

  // What evaluations read: under tensor or pipeline parallelism a whole copy of the model,
  // gathered from the group (a collective every tensor rank and stage of data-parallel rank 0
  // joins), evaluated by the first of them alone: null on the others, which skip the evaluation.
  std::unique_ptr<loom::engine::Transformer> whole_model;
  auto eval_model = [&]() -> absl::StatusOr<loom::engine::Transformer*> {
    if (layout.tp() <= 1 && layout.pp() <= 1) return &trainer->model();
    LOOM_ASSIGN_OR_RETURN(std::vector<float> weights, trainer->WholeWeights());
    if (layout.tp_rank() != 0 || layout.pp_rank() != 0) return nullptr;
    if (!whole_model) {
      LOOM_ASSIGN_OR_RETURN(loom::engine::TransformerConfig config,
                            loom::engine::TransformerConfig::FromProto(trainer->effective_model()));
      whole_model = std::make_unique<loom::engine::Transformer>(config);
    }
    std::copy(weights.begin(), weights.end(), whole_model->params());
    return whole_model.get();
  };

  // Held-out evaluation (rank 0 reports it): every eval.every_steps steps and at the end.
  std::unique_ptr<loom::engine::Evaluator> evaluator;
  const loom::v1::EvalConfig& eval = a.stage().eval();
  if (!eval.sets().empty() && layout.dp_rank() == 0) {
    loom::engine::EvalOptions eo;
    eo.data_dir = data_dir;
    eo.sets.assign(eval.sets().begin(), eval.sets().end());
    if (eval.has_max_tokens()) eo.max_tokens = eval.max_tokens();
    eo.tokenizer_hash = tokenizer->hash();
    eo.vocab_size = tokenizer->vocab_size();
    LOOM_ASSIGN_OR_RETURN(evaluator, loom::engine::Evaluator::Open(eo));
  }
  absl::Status eval_status;

  absl::Status report_status;
  auto report = [&](const loom::v1::WorkerMessage& m) {
    if (absl::Status s = reporter.Send(m); !s.ok() && report_status.ok()) report_status = s;
  };

  // Context extension: held-out loss at the short and the long length, before training (reported
  // at step 0 as "<set>@<len>/before") and at the end ("<set>@<len>"), so the gain at the long
  // length and any loss at the short one are visible. Short: the schedule's first length (or a
  // quarter of the long one when the schedule has a single length); long: its last.
  const bool context_extension = a.stage().kind() == loom::v1::STAGE_KIND_CONTEXT_EXTENSION && evaluator;
  std::vector<int> lengths;
  if (context_extension && !a.stage().seq_len_schedule().empty()) {
    const int long_len = a.stage().seq_len_schedule().rbegin()->seq_len();
    const int first = a.stage().seq_len_schedule(0).seq_len();
    lengths = {first != long_len ? first : std::max(16, long_len / 4), long_len};
  }
  auto eval_lengths = [&](loom::engine::Transformer& model, const std::string& suffix,
                          loom::v1::Progress* p) -> absl::Status {
    for (int len : lengths) {
      LOOM_ASSIGN_OR_RETURN(auto losses, evaluator->Evaluate(model, len, 1));
      for (const auto& [set, loss] : losses) {
        const std::string key = absl::StrCat(set, "@", len, suffix);
        (*p->mutable_eval_loss())[key] = loss;
        std::printf("eval step %lld %s loss %.6f\n", static_cast<long long>(trainer->step()), key.c_str(),
                    loss);
      }
    }
    return absl::OkStatus();
  };
  // dpo: held-out preference accuracy (log p(chosen) > log p(rejected)), before training
  // ("<source>/accuracy/before") and at every evaluation.
  const int32_t pad_id = tokenizer->pad_id() >= 0 ? tokenizer->pad_id() : tokenizer->eos_id();
  auto eval_preferences = [&](const std::string& suffix, loom::v1::Progress* p) {
    // dpo: log p(chosen) > log p(rejected); reward_model: r(chosen) > r(rejected).
    const loom::engine::PreferenceAccuracy acc =
        reward_model ? loom::engine::EvaluateRewardAccuracy(trainer->model(), heldout_pairs, dpo_seq_len, pad_id,
                                                            reward_token)
                     : loom::engine::EvaluatePreferenceAccuracy(trainer->model(), heldout_pairs, dpo_seq_len, pad_id);
    const std::string& set = a.stage().dataset().source();
    (*p->mutable_eval_metrics())[set + "/accuracy" + suffix] = acc.accuracy;
    (*p->mutable_eval_metrics())[set + "/margin" + suffix] = acc.mean_margin;
    std::printf("eval step %lld %s preference accuracy%s %.6f margin %.4f (%lld pairs)\n",
                static_cast<long long>(trainer->step()), set.c_str(), suffix.c_str(), acc.accuracy,
                acc.mean_margin, static_cast<long long>(acc.pairs));
  };
  // Before training: the starting point of the held-out measures that training should move
  // (reported as "<set>/accuracy/before").
  const bool math_before = eval.math_accuracy() && layout.dp_rank() == 0 && trainer->step() == 0;
  if (!heldout_pairs.empty() || math_before) {
    loom::v1::WorkerMessage m;
    loom::v1::Progress& p = *m.mutable_progress();
    *p.mutable_rank() = a.rank();
    p.set_step(trainer->step());
    p.set_tokens(trainer->tokens());
    p.set_time_ms(NowMs());
    if (!heldout_pairs.empty()) eval_preferences("/before", &p);
    if (math_before) {
      LOOM_ASSIGN_OR_RETURN(loom::engine::Transformer * model, eval_model());
      if (model != nullptr) LOOM_RETURN_IF_ERROR(EvaluateMath(a.stage(), data_dir, *model, *tokenizer, &p, "/before"));
    }
    report(m);
  }
  if (!lengths.empty()) {
    loom::v1::WorkerMessage m;
    loom::v1::Progress& p = *m.mutable_progress();
    *p.mutable_rank() = a.rank();
    p.set_step(trainer->step());
    p.set_tokens(trainer->tokens());
    p.set_time_ms(NowMs());
    LOOM_ASSIGN_OR_RETURN(loom::engine::Transformer * model, eval_model());
    if (model != nullptr) {
      LOOM_RETURN_IF_ERROR(eval_lengths(*model, "/before", &p));
      report(m);
    }
  }
  absl::Time checkpoint_start = absl::Now();
  absl::Status status = trainer->Run(
      [&](const loom::engine::StepReport& r) {
        loom::v1::WorkerMessage m;
        loom::v1::Progress& p = *m.mutable_progress();
        *p.mutable_rank() = a.rank();
        p.set_step(r.step);
        p.set_tokens(r.tokens);
        p.set_loss(r.loss);
        p.set_tokens_per_second(r.tokens_per_second);
        p.set_learning_rate(r.learning_rate);
        p.set_grad_norm(r.grad_norm);
        p.set_global_batch_tokens(r.global_batch_tokens);
        p.set_seq_len(r.seq_len);
        for (const auto& [source, weight] : data->MixWeights()) (*p.mutable_mix_weights())[source] = weight;
        for (const auto& [source, tokens] : data->SourceTokens())
          (*p.mutable_source_tokens())[source] = tokens;
        p.set_time_ms(NowMs());
        const int every = eval.has_every_steps() ? eval.every_steps() : 0;
        for (const auto& [name, value] : r.metrics) (*p.mutable_train_metrics())[name] = value;
        const bool evaluates = evaluator || (eval.math_accuracy() && layout.dp_rank() == 0) || !heldout_pairs.empty();
        // (A lambda: it ends early without skipping the step's report and log line below.)
        if (evaluates && ((every > 0 && r.step % every == 0) || trainer->Done())) [&] {
          absl::StatusOr<loom::engine::Transformer*> model = eval_model();
          if (!model.ok() || *model == nullptr) {  // failed, or another rank of the group evaluates
            if (!model.ok() && eval_status.ok()) eval_status = model.status();
            return;
          }
          absl::StatusOr<std::map<std::string, double>> losses =
              evaluator ? evaluator->Evaluate(**model, r.seq_len, a.stage().parallel().micro_batch_size())
                        : std::map<std::string, double>{};
          if (!losses.ok()) {
            if (eval_status.ok()) eval_status = losses.status();
          } else {
            for (const auto& [set, loss] : *losses) {
              (*p.mutable_eval_loss())[set] = loss;
              std::printf("eval step %lld %s loss %.6f\n", static_cast<long long>(r.step), set.c_str(), loss);
            }
          }
          if (!lengths.empty() && trainer->Done()) {
            if (absl::Status s = eval_lengths(**model, "", &p); !s.ok() && eval_status.ok()) eval_status = s;
          }
          if (eval.math_accuracy()) {
            absl::Status s = EvaluateMath(a.stage(), data_dir, **model, *tokenizer, &p);
            if (!s.ok() && eval_status.ok()) eval_status = s;
          }
          if (!heldout_pairs.empty()) eval_preferences("", &p);
        }();
        report(m);
        // The rank's log (rank.log) keeps every step, exactly, for people and tests.
        std::printf("step %lld tokens %lld loss %.17g lr %.6g grad_norm %.6g seq %d batch %lld tok/s %.0f\n",
                    static_cast<long long>(r.step), static_cast<long long>(r.tokens), r.loss, r.learning_rate,
                    r.grad_norm, r.seq_len, static_cast<long long>(r.global_batch_tokens),
                    r.tokens_per_second);
        for (const auto& [name, value] : r.metrics) std::printf("  %s %.6g\n", name.c_str(), value);
        std::fflush(stdout);
        checkpoint_start = absl::Now();  // a checkpoint, if any, is written right after the step
      },
      [&](const std::string& dir) {
        loom::v1::WorkerMessage m;
        loom::v1::CheckpointReport& c = *m.mutable_checkpoint();
        *c.mutable_rank() = a.rank();
        c.set_step(trainer->step());
        c.set_tokens(trainer->tokens());
        c.set_path(dir);
        // Rank 0 writes the replicated weights; every rank reports its part as durable once the
        // trainer's barrier has seen rank 0's write finish, so the coordinator commits on all.
        c.set_num_shards(std::max(1, layout.world_size()));
        c.set_shard(a.rank().rank());
        c.set_final(trainer->Done());
        c.set_save_seconds(absl::ToDoubleSeconds(absl::Now() - checkpoint_start));
        report(m);
      });
  LOOM_RETURN_IF_ERROR(status);
  LOOM_RETURN_IF_ERROR(eval_status);
  return report_status;
}

}  // namespace

int main(int argc, char** argv) {
  const char* env_coordinator = std::getenv("LOOM_COORDINATOR");
  const char* env_threads = std::getenv("LOOM_THREADS");
  std::string assignment_path, coordinator = env_coordinator ? env_coordinator : "127.0.0.1:7070";
  int threads = env_threads ? std::max(1, std::atoi(env_threads)) : 1;
  loom::CommandLine cl("loom-rank",
                       "Runs one rank of a job attempt (started by loom-worker; reports go to the pipe "
                       "in LOOM_REPORT_FD).");
  cl.AddFlag("assignment", &assignment_path, "file holding the binary loom.v1.Assignment");
  cl.AddFlag("coordinator", &coordinator,
             "coordinator address, for the rendezvous store (env LOOM_COORDINATOR)");
  cl.AddFlag("threads", &threads, "CPU threads for the kernels (env LOOM_THREADS)");
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
  const loom::v1::Assignment& assignment = *read;
  if (absl::Status s = Run(assignment, coordinator, threads); !s.ok()) {
    std::fprintf(stderr, "loom-rank %s/rank%d: %s\n", assignment.rank().job_id().c_str(),
                 assignment.rank().rank(), std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
