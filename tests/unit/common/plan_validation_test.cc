// A table of broken plans: each breaks one rule and must produce an error at exactly the expected
// field path, with a message that says what is wrong.
#include "common/plan_validation.h"

#include <functional>

#include <gtest/gtest.h>

#include "common/plan_resolve.h"
#include "plan_test_util.h"

namespace loom {
namespace {

using loom::testing::BasePlan;
using loom::testing::FindError;
using loom::v1::Stage;
using loom::v1::TrainingPlan;

struct BrokenPlan {
  const char* name;
  std::function<void(TrainingPlan&)> breakit;
  const char* path;     // the error must be reported here
  const char* message;  // and its message must contain this
};

Stage* AddStage(TrainingPlan& p, const char* name, loom::v1::StageKind kind, const char* from = "") {
  Stage* s = p.add_stages();
  s->set_name(name);
  s->set_kind(kind);
  s->set_from(from);
  return s;
}

// Stages of the kinds that run only with tp 1 and pp 1, appended to the base plan as stages[4].
Stage* AddRewardModel(TrainingPlan& p) {
  Stage* rm = AddStage(p, "rm", loom::v1::STAGE_KIND_REWARD_MODEL, "sft");
  rm->mutable_dataset()->set_source("prefs_math");
  return rm;
}
Stage* AddRl(TrainingPlan& p) {
  Stage* rl = AddStage(p, "rl", loom::v1::STAGE_KIND_RL, "sft");
  rl->mutable_dataset()->set_source("sft_math");
  rl->mutable_rl()->mutable_scorer()->set_verifier(loom::v1::Scorer::VERIFIER_MATH);
  return rl;
}
Stage* AddDistill(TrainingPlan& p) {
  Stage* kd = AddStage(p, "kd", loom::v1::STAGE_KIND_DISTILL);
  kd->set_tokens(1000000);
  kd->mutable_distill()->set_teacher("core");
  return kd;
}
Stage* AddRejectionSampling(TrainingPlan& p) {
  Stage* rs = AddStage(p, "rs", loom::v1::STAGE_KIND_REJECTION_SAMPLING, "sft");
  rs->mutable_dataset()->set_source("sft_math");
  rs->mutable_rejection_sampling()->mutable_scorer()->set_verifier(loom::v1::Scorer::VERIFIER_MATH);
  return rs;
}

const BrokenPlan kBroken[] = {
    {"missing plan name", [](TrainingPlan& p) { p.clear_name(); }, "name", "is missing"},
    {"invalid plan name", [](TrainingPlan& p) { p.set_name("Llama 3"); }, "name", "not a valid name"},
    {"no stages", [](TrainingPlan& p) { p.clear_stages(); }, "stages", "is empty"},
    {"duplicate stage name", [](TrainingPlan& p) { p.mutable_stages(1)->set_name("core"); }, "stages[1].name",
     "'core' is already the name of stages[0]"},
    {"stage kind missing", [](TrainingPlan& p) { p.mutable_stages(0)->clear_kind(); }, "stages[0].kind",
     "is missing"},
    {"from names no stage", [](TrainingPlan& p) { p.mutable_stages(1)->set_from("cor"); }, "stages[1].from",
     "'cor' is not a stage of this plan"},
    {"from names a later stage", [](TrainingPlan& p) { p.mutable_stages(1)->set_from("dpo"); },
     "stages[1].from", "'dpo' is stages[2], which comes after this stage"},
    {"from names itself", [](TrainingPlan& p) { p.mutable_stages(1)->set_from("sft"); }, "stages[1].from",
     "cannot start from itself"},
    {"sft without from", [](TrainingPlan& p) { p.mutable_stages(1)->clear_from(); }, "stages[1].from",
     "is missing"},
    {"from a rejection_sampling stage",
     [](TrainingPlan& p) {
       Stage* rs = AddStage(p, "rs", loom::v1::STAGE_KIND_REJECTION_SAMPLING, "core");
       rs->mutable_dataset()->set_source("sft_math");
       rs->mutable_rejection_sampling()->mutable_scorer()->set_verifier(loom::v1::Scorer::VERIFIER_MATH);
       AddStage(p, "sft2", loom::v1::STAGE_KIND_SFT, "rs")->mutable_dataset()->set_source("sft_math");
     },
     "stages[5].from", "produces a dataset, not a language model"},
    {"from a stage of another model",
     [](TrainingPlan& p) {
       Stage* t = AddStage(p, "teach", loom::v1::STAGE_KIND_PRETRAIN);
       t->set_model("teacher");
       t->set_tokens(1000000);
       AddStage(p, "cont", loom::v1::STAGE_KIND_CONTINUED_PRETRAIN, "teach")->set_tokens(1000000);
     },
     "stages[5].from", "trains model 'teacher', but this stage trains the plan's model"},
    {"from with a bad step", [](TrainingPlan& p) { p.mutable_stages(1)->set_from("core@soon"); },
     "stages[1].from", "must be a step number"},
    {"ramp not increasing (the issue's example)",
     [](TrainingPlan& p) {
       Stage* s = p.mutable_stages(0);
       s->set_tokens(4000000);
       for (auto [at, b] : {std::pair<int64_t, int64_t>{0, 16384}, {800000, 32768}, {500000, 65536}}) {
         auto* e = s->add_batch_ramp();
         e->set_at_tokens(at);
         e->set_global_batch_tokens(b);
       }
     },
     "stages[0].batch_ramp[2].at_tokens", "500000 is not after the previous entry (800000)"},
    {"ramp not starting at 0",
     [](TrainingPlan& p) {
       auto* e = p.mutable_stages(0)->add_batch_ramp();
       e->set_at_tokens(100);
       e->set_global_batch_tokens(16384);
     },
     "stages[0].batch_ramp[0].at_tokens", "the first entry must be at 0, not 100"},
    {"ramp entry beyond the budget",
     [](TrainingPlan& p) {
       Stage* s = p.mutable_stages(0);
       for (auto [at, b] : {std::pair<int64_t, int64_t>{0, 16384}, {4000000, 32768}}) {
         auto* e = s->add_batch_ramp();
         e->set_at_tokens(at);
         e->set_global_batch_tokens(b);
       }
     },
     "stages[0].batch_ramp[1].at_tokens", "is not before the end of the stage (tokens: 4000000)"},
    {"batch not a multiple of seq_len x micro_batch x dp",
     [](TrainingPlan& p) { p.mutable_defaults()->mutable_batch_ramp(0)->set_global_batch_tokens(10000); },
     "stages[0].batch_ramp[0].global_batch_tokens",
     "10000 is not a multiple of seq_len x micro_batch_size x dp = 256 x 4 x 2 = 2048"},
    {"batch missing",
     [](TrainingPlan& p) { p.mutable_defaults()->mutable_batch_ramp(0)->clear_global_batch_tokens(); },
     "stages[0].batch_ramp[0].global_batch_tokens", "is missing"},
    {"no batch ramp at all", [](TrainingPlan& p) { p.mutable_defaults()->clear_batch_ramp(); },
     "stages[0].batch_ramp", "is empty"},
    {"sequence too short",
     [](TrainingPlan& p) { p.mutable_defaults()->mutable_seq_len_schedule(0)->set_seq_len(1); },
     "stages[0].seq_len_schedule[0].seq_len", "1 is not in [2, 4194304]"},
    {"sequence longer than max_seq_len",
     [](TrainingPlan& p) {
       auto* e = p.mutable_stages(0)->add_seq_len_schedule();
       e->set_seq_len(2048);
     },
     "stages[0].seq_len_schedule[0].seq_len", "2048 is longer than the model's max_seq_len (1024)"},
    {"negative mix weight",
     [](TrainingPlan& p) { (*p.mutable_defaults()->mutable_data_mix(0)->mutable_weights())["english"] = -1; },
     "stages[0].data_mix[0].weights.english", "-1 is negative"},
    {"mix weights sum to zero",
     [](TrainingPlan& p) { (*p.mutable_defaults()->mutable_data_mix(0)->mutable_weights())["english"] = 0; },
     "stages[0].data_mix[0].weights", "weights sum to 0"},
    {"unknown mix source",
     [](TrainingPlan& p) { (*p.mutable_defaults()->mutable_data_mix(0)->mutable_weights())["wiki"] = 1; },
     "stages[0].data_mix[0].weights.wiki", "'wiki' is not a known source"},
    {"mix entries out of order",
     [](TrainingPlan& p) {
       auto* e = p.mutable_defaults()->add_data_mix();
       e->set_at_tokens(0);
       (*e->mutable_weights())["code"] = 1;
     },
     "stages[0].data_mix[1].at_tokens", "0 is not after the previous entry (0)"},
    {"pretrain without a mix", [](TrainingPlan& p) { p.mutable_defaults()->clear_data_mix(); },
     "stages[0].data_mix", "is empty"},
    {"heads not a multiple of kv_heads", [](TrainingPlan& p) { p.mutable_model()->set_kv_heads(3); },
     "model.kv_heads", "heads (8) is not a multiple of kv_heads (3)"},
    {"d_model not a multiple of heads", [](TrainingPlan& p) { p.mutable_model()->set_d_model(250); },
     "model.d_model", "250 is not a multiple of heads (8)"},
    {"odd head size", [](TrainingPlan& p) { p.mutable_model()->set_d_model(8 * 33); }, "model.d_model",
     "odd head size (33)"},
    {"missing model layers", [](TrainingPlan& p) { p.mutable_model()->clear_layers(); }, "model.layers",
     "is missing"},
    {"vocabulary too small", [](TrainingPlan& p) { p.mutable_model()->set_vocab_size(1); },
     "model.vocab_size", "1 is not in [2, 4194304]"},
    {"tp does not divide heads", [](TrainingPlan& p) { p.mutable_stages(0)->mutable_parallel()->set_tp(3); },
     "stages[0].parallel.tp", "3 does not divide heads (8)"},
    {"tp does not divide kv_heads",
     [](TrainingPlan& p) { p.mutable_stages(0)->mutable_parallel()->set_tp(4); }, "stages[0].parallel.tp",
     "4 does not divide kv_heads (2)"},
    {"tp does not divide vocab_size",
     [](TrainingPlan& p) {
       p.mutable_model()->set_vocab_size(8191);
       p.mutable_stages(0)->mutable_parallel()->set_tp(2);
     },
     "stages[0].parallel.tp", "2 does not divide vocab_size (8191)"},
    {"pp more than layers", [](TrainingPlan& p) { p.mutable_stages(0)->mutable_parallel()->set_pp(5); },
     "stages[0].parallel.pp", "5 is more than the model's layers (4)"},
    {"dp zero", [](TrainingPlan& p) { p.mutable_stages(0)->mutable_parallel()->set_dp(0); },
     "stages[0].parallel.dp", "0 is not in [1, 4096]"},
    {"too many ranks",
     [](TrainingPlan& p) {
       auto* par = p.mutable_stages(0)->mutable_parallel();
       par->set_dp(4096);
       par->set_tp(2);
     },
     "stages[0].parallel", "ranks; the limit is 4096"},
    {"lr missing", [](TrainingPlan& p) { p.mutable_defaults()->mutable_optimizer()->clear_lr(); },
     "stages[0].optimizer.lr", "is missing"},
    {"lr negative", [](TrainingPlan& p) { p.mutable_stages(0)->mutable_optimizer()->set_lr(-1e-3); },
     "stages[0].optimizer.lr", "is not in (0, 1]"},
    {"beta2 of 1", [](TrainingPlan& p) { p.mutable_stages(0)->mutable_optimizer()->set_beta2(1.0); },
     "stages[0].optimizer.beta2", "1 is not in [0, 1)"},
    {"warmup longer than the stage",
     [](TrainingPlan& p) { p.mutable_stages(0)->mutable_lr_schedule()->set_warmup_tokens(5000000); },
     "stages[0].lr_schedule.warmup_tokens", "5000000 is more than the stage's budget"},
    {"min_lr_ratio above 1",
     [](TrainingPlan& p) { p.mutable_stages(0)->mutable_lr_schedule()->set_min_lr_ratio(2); },
     "stages[0].lr_schedule.min_lr_ratio", "2 is not in [0, 1]"},
    {"pretrain without tokens", [](TrainingPlan& p) { p.mutable_stages(0)->clear_tokens(); },
     "stages[0].tokens", "is missing"},
    {"tokens on an average stage", [](TrainingPlan& p) { p.mutable_stages(3)->set_tokens(10); },
     "stages[3].tokens", "an average stage trains on no tokens"},
    {"dpo without a reference", [](TrainingPlan& p) { p.mutable_stages(2)->clear_from(); },
     "stages[2].dpo.reference", "is missing"},
    {"dpo beta zero", [](TrainingPlan& p) { p.mutable_stages(2)->mutable_dpo()->set_beta(0); },
     "stages[2].dpo.beta", "0 is not in (0, 100]"},
    {"online dpo without a scorer",
     [](TrainingPlan& p) { p.mutable_stages(2)->mutable_dpo()->set_online(true); }, "stages[2].dpo.scorer",
     "is missing"},
    {"distill without a teacher",
     [](TrainingPlan& p) { AddStage(p, "kd", loom::v1::STAGE_KIND_DISTILL)->set_tokens(1000000); },
     "stages[4].distill.teacher", "is missing"},
    {"distill teacher with another vocabulary",
     [](TrainingPlan& p) {
       (*p.mutable_models())["teacher"].set_vocab_size(32000);
       Stage* t = AddStage(p, "teach", loom::v1::STAGE_KIND_PRETRAIN);
       t->set_model("teacher");
       t->set_tokens(1000000);
       Stage* kd = AddStage(p, "kd", loom::v1::STAGE_KIND_DISTILL);
       kd->set_tokens(1000000);
       kd->mutable_distill()->set_teacher("teach");
     },
     "stages[5].distill.teacher", "the teacher's vocab_size (32000) differs from the student's (8192)"},
    {"merge of one model",
     [](TrainingPlan& p) {
       auto* m = AddStage(p, "m", loom::v1::STAGE_KIND_MERGE)->mutable_merge();
       m->set_method(loom::v1::MergeConfig::METHOD_LINEAR);
       m->add_inputs("sft");
     },
     "stages[4].merge.inputs", "has 1 model; a merge needs at least 2"},
    {"ties without a base",
     [](TrainingPlan& p) {
       auto* m = AddStage(p, "m", loom::v1::STAGE_KIND_MERGE)->mutable_merge();
       m->set_method(loom::v1::MergeConfig::METHOD_TIES);
       m->add_inputs("sft");
       m->add_inputs("dpo");
     },
     "stages[4].merge.base", "is missing"},
    {"slerp of three models",
     [](TrainingPlan& p) {
       auto* m = AddStage(p, "m", loom::v1::STAGE_KIND_MERGE)->mutable_merge();
       m->set_method(loom::v1::MergeConfig::METHOD_SLERP);
       for (const char* in : {"core", "sft", "dpo"}) m->add_inputs(in);
     },
     "stages[4].merge.inputs", "slerp interpolates exactly 2"},
    {"merge method missing",
     [](TrainingPlan& p) {
       auto* m = AddStage(p, "m", loom::v1::STAGE_KIND_MERGE)->mutable_merge();
       m->add_inputs("sft");
       m->add_inputs("dpo");
     },
     "stages[4].merge.method", "is missing"},
    {"weighted average with the wrong number of weights",
     [](TrainingPlan& p) {
       auto* a = p.mutable_stages(3)->mutable_average();
       a->set_method(loom::v1::AverageConfig::METHOD_WEIGHTED);
       a->add_weights(1);
     },
     "stages[3].average.weights", "has 1 weights for 2 checkpoints"},
    {"average last_k without from",
     [](TrainingPlan& p) {
       auto* a = p.mutable_stages(3)->mutable_average();
       a->clear_checkpoints();
       a->set_last_k(3);
     },
     "stages[3].average.last_k", "needs from"},
    {"average of a step of an average stage",
     [](TrainingPlan& p) {
       AddStage(p, "avg2", loom::v1::STAGE_KIND_AVERAGE)->mutable_average()->add_checkpoints("avg@10");
     },
     "stages[4].average.checkpoints[0]", "writes only a final checkpoint"},
    {"average last_k more than kept",
     [](TrainingPlan& p) {
       p.mutable_stages(0)->mutable_checkpoint()->set_keep_last(2);
       Stage* a = AddStage(p, "avg2", loom::v1::STAGE_KIND_AVERAGE, "core");
       a->mutable_average()->set_last_k(3);
     },
     "stages[4].average.last_k", "3 is more than stage 'core' keeps"},
    {"sft without a dataset", [](TrainingPlan& p) { p.mutable_stages(1)->clear_dataset(); },
     "stages[1].dataset", "is missing"},
    {"dataset from a stage that is not rejection sampling",
     [](TrainingPlan& p) { p.mutable_stages(2)->mutable_dataset()->set_from_stage("sft"); },
     "stages[2].dataset", "sets both source and from_stage"},
    {"dataset from_stage of the wrong kind",
     [](TrainingPlan& p) {
       p.mutable_stages(2)->mutable_dataset()->clear_source();
       p.mutable_stages(2)->mutable_dataset()->set_from_stage("sft");
     },
     "stages[2].dataset.from_stage", "'sft' is an sft stage, which produces no dataset"},
    {"unknown dataset source",
     [](TrainingPlan& p) { p.mutable_stages(1)->mutable_dataset()->set_source("chats"); },
     "stages[1].dataset.source", "'chats' is not a known source"},
    {"kind block on the wrong kind",
     [](TrainingPlan& p) { p.mutable_stages(1)->mutable_dpo()->set_beta(0.1); }, "stages[1].dpo",
     "is only read by dpo stages; this stage is sft"},
    {"mix on an sft stage",
     [](TrainingPlan& p) {
       p.mutable_stages(1)->add_data_mix()->mutable_weights()->insert({"english", 1});
     },
     "stages[1].data_mix", "is not read by sft stages"},
    {"name in defaults", [](TrainingPlan& p) { p.mutable_defaults()->set_name("x"); }, "defaults.name",
     "cannot be set in defaults"},
    {"unknown model name", [](TrainingPlan& p) { p.mutable_stages(0)->set_model("teachr"); },
     "stages[0].model", "'teachr' is not one of the plan's models"},
    {"sliding-window layer out of range",
     [](TrainingPlan& p) {
       p.mutable_model()->set_sliding_window(64);
       p.mutable_model()->add_sliding_window_layers(4);
     },
     "model.sliding_window_layers[0]", "4 is not a layer of this model (0 to 3)"},
    {"local layers without a window",
     [](TrainingPlan& p) { p.mutable_model()->set_sliding_window_period(2); }, "model.sliding_window",
     "local layers are listed but have no window"},
    {"rope scaling factor below 1",
     [](TrainingPlan& p) {
       p.mutable_model()->mutable_rope_scaling()->set_type(loom::v1::RopeScaling::TYPE_LINEAR);
       p.mutable_model()->mutable_rope_scaling()->set_factor(0.5);
     },
     "model.rope_scaling.factor", "0.5 must be greater than 1"},
    {"rejection sampling without a scorer",
     [](TrainingPlan& p) {
       AddStage(p, "rs", loom::v1::STAGE_KIND_REJECTION_SAMPLING, "sft")
           ->mutable_dataset()
           ->set_source("sft_math");
     },
     "stages[4].rejection_sampling.scorer", "is missing"},
    {"scorer reward model that is not one",
     [](TrainingPlan& p) {
       Stage* rs = AddStage(p, "rs", loom::v1::STAGE_KIND_REJECTION_SAMPLING, "sft");
       rs->mutable_dataset()->set_source("sft_math");
       rs->mutable_rejection_sampling()->mutable_scorer()->set_reward_model("sft");
     },
     "stages[4].rejection_sampling.scorer.reward_model", "'sft' is an sft stage, not a reward_model stage"},
    {"rl with one sample per prompt",
     [](TrainingPlan& p) {
       Stage* rl = AddStage(p, "rl", loom::v1::STAGE_KIND_RL, "sft");
       rl->mutable_dataset()->set_source("sft_math");
       rl->mutable_rl()->set_samples_per_prompt(1);
       rl->mutable_rl()->mutable_scorer()->set_verifier(loom::v1::Scorer::VERIFIER_MATH);
     },
     "stages[4].rl.samples_per_prompt", "1 is not in [2, 1024]"},
    {"eval of an unknown set",
     [](TrainingPlan& p) { p.mutable_stages(0)->mutable_eval()->add_sets("wikitext"); },
     "stages[0].eval.sets[0]", "'wikitext' is not a known source"},
    {"eval stage that measures nothing",
     [](TrainingPlan& p) { AddStage(p, "ev", loom::v1::STAGE_KIND_EVAL, "dpo"); }, "stages[4].eval",
     "measures nothing"},
    {"eval stage with math accuracy on an unknown source",
     [](TrainingPlan& p) {
       Stage* ev = AddStage(p, "ev", loom::v1::STAGE_KIND_EVAL, "dpo");
       ev->mutable_eval()->set_math_accuracy(true);
       ev->mutable_eval()->set_math_source("gsm8k");
     },
     "stages[4].eval.math_source", "'gsm8k' is not a known source"},
    {"eval stage answering no problems",
     [](TrainingPlan& p) {
       Stage* ev = AddStage(p, "ev", loom::v1::STAGE_KIND_EVAL, "dpo");
       ev->mutable_eval()->set_math_accuracy(true);
       ev->mutable_eval()->set_math_problems(0);
     },
     "stages[4].eval.math_problems", "0 must be positive"},
    {"eval stage whose answers may take no token",
     [](TrainingPlan& p) {
       Stage* ev = AddStage(p, "ev", loom::v1::STAGE_KIND_EVAL, "dpo");
       ev->mutable_eval()->set_math_accuracy(true);
       ev->mutable_eval()->set_math_max_new_tokens(0);
     },
     "stages[4].eval.math_max_new_tokens", "0 is not in [1, 4096]"},
    {"eval at a one-token length",
     [](TrainingPlan& p) {
       Stage* ev = AddStage(p, "ev", loom::v1::STAGE_KIND_EVAL, "dpo");
       ev->mutable_eval()->add_sets("math");
       ev->mutable_eval()->set_seq_len(1);
     },
     "stages[4].eval.seq_len", "1 must be at least 2"},
    // Which kinds run under which layouts: refused here rather than when the stage starts.
    {"dpo under tensor parallelism",
     [](TrainingPlan& p) { p.mutable_stages(2)->mutable_parallel()->set_tp(2); }, "stages[2].parallel.tp",
     "2: a dpo stage does not run with tensor parallelism"},
    {"dpo under pipeline parallelism",
     [](TrainingPlan& p) { p.mutable_stages(2)->mutable_parallel()->set_pp(2); }, "stages[2].parallel.pp",
     "2: a dpo stage does not run with pipeline parallelism"},
    {"reward_model under tensor parallelism",
     [](TrainingPlan& p) { AddRewardModel(p)->mutable_parallel()->set_tp(2); }, "stages[4].parallel.tp",
     "2: a reward_model stage does not run with tensor parallelism (its loss reads whole-vocabulary logits)"},
    {"reward_model under pipeline parallelism",
     [](TrainingPlan& p) { AddRewardModel(p)->mutable_parallel()->set_pp(2); }, "stages[4].parallel.pp",
     "2: a reward_model stage does not run with pipeline parallelism"},
    {"rl under tensor parallelism", [](TrainingPlan& p) { AddRl(p)->mutable_parallel()->set_tp(2); },
     "stages[4].parallel.tp", "2: an rl stage does not run with tensor parallelism"},
    {"rl under pipeline parallelism", [](TrainingPlan& p) { AddRl(p)->mutable_parallel()->set_pp(4); },
     "stages[4].parallel.pp", "4: an rl stage does not run with pipeline parallelism"},
    {"distill under tensor parallelism",
     [](TrainingPlan& p) { AddDistill(p)->mutable_parallel()->set_tp(2); }, "stages[4].parallel.tp",
     "2: a distill stage does not run with tensor parallelism (the teacher runs whole beside the student)"},
    {"distill under pipeline parallelism",
     [](TrainingPlan& p) { AddDistill(p)->mutable_parallel()->set_pp(2); }, "stages[4].parallel.pp",
     "2: a distill stage does not run with pipeline parallelism"},
    {"rejection_sampling under tensor parallelism",
     [](TrainingPlan& p) { AddRejectionSampling(p)->mutable_parallel()->set_tp(2); }, "stages[4].parallel.tp",
     "2: a rejection_sampling stage does not run with tensor parallelism"},
    {"zero1 with tensor parallelism",
     [](TrainingPlan& p) {
       p.mutable_stages(0)->mutable_parallel()->set_zero1(true);
       p.mutable_stages(0)->mutable_parallel()->set_tp(2);
     },
     "stages[0].parallel.zero1", "does not run with tp 2 and pp 1"},
    {"zero1 with pipeline parallelism",
     [](TrainingPlan& p) {
       p.mutable_defaults()->mutable_parallel()->set_zero1(true);
       p.mutable_stages(1)->mutable_parallel()->set_pp(2);
     },
     "stages[1].parallel.zero1", "does not run with tp 1 and pp 2"},
    {"dpo with an odd micro-batch",
     [](TrainingPlan& p) { p.mutable_stages(2)->mutable_parallel()->set_micro_batch_size(1); },
     "stages[2].parallel.micro_batch_size", "1 is odd: a dpo stage needs an even micro_batch_size"},
    {"reward_model with an odd micro-batch",
     [](TrainingPlan& p) { AddRewardModel(p)->mutable_parallel()->set_micro_batch_size(1); },
     "stages[4].parallel.micro_batch_size", "1 is odd: a reward_model stage needs an even micro_batch_size"},
    {"offline dpo with two sequence lengths",
     [](TrainingPlan& p) {
       for (auto [at, len] : {std::pair<int64_t, int>{0, 256}, {1000000, 128}}) {
         auto* e = p.mutable_stages(2)->add_seq_len_schedule();
         e->set_at_tokens(at);
         e->set_seq_len(len);
       }
     },
     "stages[2].seq_len_schedule", "has 2 entries; an offline dpo stage trains at one seq_len"},
    {"reward_model with two sequence lengths",
     [](TrainingPlan& p) {
       Stage* rm = AddRewardModel(p);
       for (auto [at, len] : {std::pair<int64_t, int>{0, 256}, {1000000, 128}}) {
         auto* e = rm->add_seq_len_schedule();
         e->set_at_tokens(at);
         e->set_seq_len(len);
       }
     },
     "stages[4].seq_len_schedule", "has 2 entries; a reward_model stage trains at one seq_len"},
    {"dpo pairs from a rejection_sampling dataset",
     [](TrainingPlan& p) {
       AddRejectionSampling(p);
       Stage* d = AddStage(p, "dpo2", loom::v1::STAGE_KIND_DPO, "sft");
       d->mutable_dataset()->set_from_stage("rs");
     },
     "stages[5].dataset.from_stage", "a dpo stage reads preference pairs from a prepared source"},
    {"rl prompts from a rejection_sampling dataset",
     [](TrainingPlan& p) {
       AddRejectionSampling(p);
       Stage* rl = AddRl(p);
       rl->mutable_dataset()->clear_source();
       rl->mutable_dataset()->set_from_stage("rs");
     },
     "stages[5].dataset.from_stage", "an rl stage reads its prompts from a prepared source"},
    {"rl batch not whole prompts on every rank",
     [](TrainingPlan& p) { AddRl(p)->mutable_rl()->set_samples_per_prompt(3); },
     "stages[4].batch_ramp[0].global_batch_tokens",
     "16384 is 64 sequences of 256 tokens (seq_len from seq_len_schedule[0]), not a multiple of "
     "rl.samples_per_prompt x dp = 3 x 2 = 6"},
    {"max_attempts zero", [](TrainingPlan& p) { p.set_max_attempts(0); }, "max_attempts",
     "0 is not in [1, 100]"},
    {"hang factor under 2", [](TrainingPlan& p) { p.mutable_hang()->set_step_time_factor(1.5); },
     "hang.step_time_factor", "1.5 is not in [2, 1000]"},
    {"hang floor under a second", [](TrainingPlan& p) { p.mutable_hang()->set_min_seconds(0); },
     "hang.min_seconds", "0 is not in [1, 604800]"},
    {"negative retry budget", [](TrainingPlan& p) { p.mutable_retry()->set_max_retries(-1); },
     "retry.max_retries", "-1 is not in [0, 10000]"},
    {"retry window under a second", [](TrainingPlan& p) { p.mutable_retry()->set_window_seconds(0.5); },
     "retry.window_seconds", "0.5 is not in [1, 31536000]"},
    {"longest backoff below the first",
     [](TrainingPlan& p) {
       p.mutable_retry()->set_initial_backoff_seconds(10);
       p.mutable_retry()->set_max_backoff_seconds(5);
     },
     "retry.max_backoff_seconds", "5 is less than retry.initial_backoff_seconds (10)"},
    {"too many stages",
     [](TrainingPlan& p) {
       for (int i = 0; i < kMaxStages; ++i) p.add_stages()->set_name("s" + std::to_string(i));
     },
     "stages", "the limit is 256"},
    {"description too long", [](TrainingPlan& p) { p.set_description(std::string(5000, 'x')); },
     "description", "is 5000 bytes long; the limit is 4096"},
    {"too many mix sources",
     [](TrainingPlan& p) {
       auto* w = p.mutable_defaults()->mutable_data_mix(0)->mutable_weights();
       for (int i = 0; i < 70; ++i) (*w)["s" + std::to_string(i)] = 1;
     },
     "defaults.data_mix[0].weights", "has 71 entries; the limit is 64"},
};

class BrokenPlanTest : public ::testing::TestWithParam<BrokenPlan> {};

TEST_P(BrokenPlanTest, ReportsTheErrorAtItsFieldPath) {
  const BrokenPlan& c = GetParam();
  TrainingPlan plan = BasePlan();
  ASSERT_TRUE(ValidatePlan(plan).empty()) << FormatPlanErrors(ValidatePlan(plan));
  c.breakit(plan);
  const std::vector<PlanError> errors = ValidatePlan(plan);
  const PlanError* error = FindError(errors, c.path);
  ASSERT_NE(error, nullptr) << c.name << ": no error at " << c.path << "; got:\n" << FormatPlanErrors(errors);
  EXPECT_NE(error->message.find(c.message), std::string::npos)
      << c.name << ": message at " << c.path << " is '" << error->message << "', expected it to contain '"
      << c.message << "'";
}

INSTANTIATE_TEST_SUITE_P(Table, BrokenPlanTest, ::testing::ValuesIn(kBroken),
                         [](const ::testing::TestParamInfo<BrokenPlan>& info) {
                           std::string name;
                           for (const char* c = info.param.name; *c; ++c) {
                             name.push_back(std::isalnum(static_cast<unsigned char>(*c)) ? *c : '_');
                           }
                           return name;
                         });

TEST(PlanValidation, TableIsLargeEnough) { EXPECT_GE(std::size(kBroken), 30u); }

TEST(PlanValidation, BasePlanIsValid) { EXPECT_TRUE(ValidatePlan(BasePlan()).empty()); }

TEST(PlanValidation, ReportsEveryErrorAtOnce) {
  TrainingPlan plan = BasePlan();
  plan.clear_name();
  plan.mutable_model()->set_kv_heads(3);
  plan.mutable_stages(1)->set_from("nowhere");
  plan.mutable_stages(0)->mutable_parallel()->set_pp(9);
  const std::vector<PlanError> errors = ValidatePlan(plan);
  for (const char* path : {"name", "model.kv_heads", "stages[1].from", "stages[0].parallel.pp"}) {
    EXPECT_NE(FindError(errors, path), nullptr) << "missing " << path << " in\n" << FormatPlanErrors(errors);
  }
}

TEST(PlanValidation, ErrorsCarryHints) {
  TrainingPlan plan = BasePlan();
  plan.mutable_stages(1)->set_from("cor");
  std::vector<PlanError> errors = ValidatePlan(plan);
  const PlanError* e = FindError(errors, "stages[1].from");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->hint, "did you mean 'core'?");
  plan = BasePlan();
  plan.mutable_defaults()->mutable_batch_ramp(0)->set_global_batch_tokens(10000);
  errors = ValidatePlan(plan);
  e = FindError(errors, "stages[0].batch_ramp[0].global_batch_tokens");
  ASSERT_NE(e, nullptr);
  EXPECT_NE(e->hint.find("nearest valid: 8192 or 10240"), std::string::npos) << e->hint;
}

TEST(PlanValidation, BatchMustDivideAtEverySeqLenBoundary) {
  // 12Ki is a multiple of 256*4*2 = 2Ki but not of 1024*4*2 = 8Ki, which applies from 1M tokens.
  TrainingPlan plan = BasePlan();
  plan.mutable_defaults()->mutable_batch_ramp(0)->set_global_batch_tokens(12 * 1024);
  auto* e = plan.mutable_stages(0)->add_seq_len_schedule();
  e->set_at_tokens(0);
  e->set_seq_len(256);
  e = plan.mutable_stages(0)->add_seq_len_schedule();
  e->set_at_tokens(1000000);
  e->set_seq_len(1024);
  const std::vector<PlanError> errors = ValidatePlan(plan);
  const PlanError* error = FindError(errors, "stages[0].batch_ramp[0].global_batch_tokens");
  ASSERT_NE(error, nullptr);
  EXPECT_NE(error->message.find("= 8192 (seq_len from seq_len_schedule[1])"), std::string::npos)
      << error->message;
}

// A dpo stage at tp 2 used to be accepted and then fail on the worker when it started; now the
// plan is refused at submit, at the field to change.
TEST(PlanValidation, ADpoStageUnderTensorParallelismIsRefusedBeforeItReachesAWorker) {
  TrainingPlan plan = BasePlan();
  plan.mutable_stages(2)->mutable_parallel()->set_tp(2);
  const std::vector<PlanError> errors = ValidatePlan(plan);
  ASSERT_EQ(errors.size(), 1u) << FormatPlanErrors(errors);
  EXPECT_EQ(errors[0].path, "stages[2].parallel.tp");
  EXPECT_EQ(errors[0].message,
            "2: a dpo stage does not run with tensor parallelism (its loss reads whole-vocabulary "
            "log-probabilities)");
  EXPECT_EQ(errors[0].hint, "use tp: 1 and pp: 1 for it");
}

TEST(PlanValidation, PretrainingAndSftStagesStillRunUnderTensorAndPipelineParallelism) {
  TrainingPlan plan = BasePlan();
  for (int i : {0, 1}) {
    plan.mutable_stages(i)->mutable_parallel()->set_tp(2);
    plan.mutable_stages(i)->mutable_parallel()->set_pp(2);
  }
  EXPECT_TRUE(ValidatePlan(plan).empty()) << FormatPlanErrors(ValidatePlan(plan));
  // An sft stage may read a rejection_sampling stage's dataset.
  AddRejectionSampling(plan);
  AddStage(plan, "sft2", loom::v1::STAGE_KIND_SFT, "core")->mutable_dataset()->set_from_stage("rs");
  EXPECT_TRUE(ValidatePlan(plan).empty()) << FormatPlanErrors(ValidatePlan(plan));
}

TEST(PlanValidation, DefaultsAreInheritedAndOverridable) {
  TrainingPlan plan = BasePlan();
  plan.mutable_defaults()->mutable_optimizer()->set_weight_decay(0.1);
  plan.mutable_stages(0)->mutable_optimizer()->set_weight_decay(0.0);  // explicit zero wins
  const Stage core = ResolveStage(plan, 0);
  EXPECT_EQ(core.optimizer().weight_decay(), 0.0);
  EXPECT_DOUBLE_EQ(core.optimizer().lr(), 3e-3);  // inherited
  EXPECT_EQ(core.optimizer().beta2(), 0.95);      // built-in
  const Stage sft = ResolveStage(plan, 1);
  EXPECT_EQ(sft.optimizer().weight_decay(), 0.1);
  EXPECT_EQ(sft.dataset().epochs(), 1);
  const Stage dpo = ResolveStage(plan, 2);
  EXPECT_EQ(dpo.dpo().reference(), "sft");  // reference defaults to from
  EXPECT_DOUBLE_EQ(dpo.dpo().beta(), 0.1);
  // A stage's list replaces the default list instead of appending to it.
  auto* ramp = plan.mutable_stages(0)->add_batch_ramp();
  ramp->set_global_batch_tokens(32768);
  EXPECT_EQ(ResolveStage(plan, 0).batch_ramp_size(), 1);
  EXPECT_EQ(ResolveStage(plan, 0).batch_ramp(0).global_batch_tokens(), 32768);
  // Every stage gets its own seed, stable across runs.
  EXPECT_NE(ResolveStage(plan, 0).seed(), ResolveStage(plan, 1).seed());
  EXPECT_EQ(ResolveStage(plan, 0).seed(), StageSeed(1234, "core"));
}

}  // namespace
}  // namespace loom
