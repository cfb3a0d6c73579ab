#include "common/plan_resolve.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <memory>

namespace loom {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using loom::v1::StageKind;

// Generic overlay: `top`'s set fields win over `base`'s.
void Overlay(const Message& top, Message* base) {
  const Reflection* top_refl = top.GetReflection();
  const Reflection* base_refl = base->GetReflection();
  std::vector<const FieldDescriptor*> fields;
  top_refl->ListFields(top, &fields);  // set fields only: present scalars, non-empty lists
  for (const FieldDescriptor* field : fields) {
    if (!field->is_repeated() && field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      Overlay(top_refl->GetMessage(top, field), base_refl->MutableMessage(base, field));
      continue;
    }
    // Scalars and whole lists/maps: replace. SwapFields moves one field of any type between two
    // messages of the same type; a stage is small, so copying it first costs nothing.
    std::unique_ptr<Message> copy(top.New());
    copy->CopyFrom(top);
    base_refl->ClearField(base, field);
    base_refl->SwapFields(base, copy.get(), {field});
  }
}

void ApplySamplingDefaults(loom::v1::SamplingConfig* s) {
  if (!s->has_temperature()) s->set_temperature(1.0);
  if (!s->has_top_p()) s->set_top_p(1.0);
  if (!s->has_top_k()) s->set_top_k(0);
  if (!s->has_max_new_tokens()) s->set_max_new_tokens(128);
}

}  // namespace

std::vector<std::string> KnownSources(const loom::v1::TrainingPlan& plan) {
  if (plan.data().sources_size() > 0) {
    return {plan.data().sources().begin(), plan.data().sources().end()};
  }
  return {kDefaultSources.begin(), kDefaultSources.end()};
}

void OverlayStage(const loom::v1::Stage& top, loom::v1::Stage* base) { Overlay(top, base); }

loom::v1::Stage ResolveStage(const loom::v1::TrainingPlan& plan, int index) {
  loom::v1::Stage stage = plan.defaults();
  OverlayStage(plan.stages(index), &stage);
  ApplyStageDefaults(&stage);
  if (!stage.has_seed()) stage.set_seed(StageSeed(PlanSeed(plan), stage.name()));
  return stage;
}

uint64_t StageSeed(uint64_t plan_seed, std::string_view stage_name) {
  // FNV-1a of the name, mixed with the plan seed by SplitMix64's finaliser: stable across
  // platforms and releases, which resuming and reproducing runs rely on.
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : stage_name) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  uint64_t z = plan_seed ^ h;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void ApplyStageDefaults(loom::v1::Stage* s) {
  auto* par = s->mutable_parallel();
  if (!par->has_dp()) par->set_dp(1);
  if (!par->has_tp()) par->set_tp(1);
  if (!par->has_pp()) par->set_pp(1);
  if (!par->has_micro_batch_size()) par->set_micro_batch_size(1);
  if (!par->has_elastic()) par->set_elastic(false);
  if (!par->has_zero1()) par->set_zero1(false);

  auto* opt = s->mutable_optimizer();
  if (opt->type() == loom::v1::OptimizerConfig::TYPE_UNSPECIFIED) {
    opt->set_type(loom::v1::OptimizerConfig::TYPE_ADAMW);
  }
  const bool lion = opt->type() == loom::v1::OptimizerConfig::TYPE_LION;
  if (!opt->has_beta1()) opt->set_beta1(0.9);
  if (!opt->has_beta2()) opt->set_beta2(lion ? 0.99 : 0.95);
  if (!opt->has_eps()) opt->set_eps(1e-8);
  if (!opt->has_weight_decay()) opt->set_weight_decay(0.1);
  if (!opt->has_grad_clip()) opt->set_grad_clip(1.0);

  auto* lr = s->mutable_lr_schedule();
  if (lr->type() == loom::v1::LrSchedule::TYPE_UNSPECIFIED) {
    lr->set_type(loom::v1::LrSchedule::TYPE_COSINE);
  }
  if (!lr->has_warmup_tokens()) lr->set_warmup_tokens(0);
  if (!lr->has_min_lr_ratio()) lr->set_min_lr_ratio(0.1);
  if (!lr->has_decay_fraction()) lr->set_decay_fraction(0.2);

  if (TrainsOnDataset(s->kind()) || s->kind() == loom::v1::STAGE_KIND_REJECTION_SAMPLING) {
    if (!s->dataset().has_epochs()) s->mutable_dataset()->set_epochs(1);
  }

  auto* ck = s->mutable_checkpoint();
  if (!ck->has_every_steps()) ck->set_every_steps(100);
  if (!ck->has_keep_last()) ck->set_keep_last(3);

  auto* ev = s->mutable_eval();
  if (!ev->has_every_steps()) ev->set_every_steps(0);
  if (!ev->has_max_tokens()) ev->set_max_tokens(64 * 1024);
  if (!ev->has_math_accuracy()) ev->set_math_accuracy(false);
  if (!ev->has_math_problems()) ev->set_math_problems(64);
  if (!ev->has_math_max_new_tokens()) ev->set_math_max_new_tokens(64);
  if (ev->math_source().empty()) ev->set_math_source("sft_math");
  if (!ev->has_seq_len()) ev->set_seq_len(256);

  switch (s->kind()) {
    case loom::v1::STAGE_KIND_DISTILL: {
      auto* d = s->mutable_distill();
      if (d->mode() == loom::v1::DistillConfig::MODE_UNSPECIFIED) {
        d->set_mode(loom::v1::DistillConfig::MODE_SOFT_CE);
      }
      if (!d->has_temperature()) d->set_temperature(1.0);
      if (!d->has_top_k()) d->set_top_k(0);
      if (!d->has_teacher_weight()) d->set_teacher_weight(0.9);
      if (!d->has_lm_loss_weight()) d->set_lm_loss_weight(0.0);
      break;
    }
    case loom::v1::STAGE_KIND_DPO: {
      auto* d = s->mutable_dpo();
      if (d->reference().empty()) d->set_reference(s->from());
      if (d->loss() == loom::v1::DpoConfig::LOSS_UNSPECIFIED) {
        d->set_loss(loom::v1::DpoConfig::LOSS_SIGMOID);
      }
      if (!d->has_beta()) d->set_beta(0.1);
      if (!d->has_label_smoothing()) d->set_label_smoothing(0.0);
      if (!d->has_online()) d->set_online(false);
      if (!d->has_samples_per_prompt()) d->set_samples_per_prompt(4);
      ApplySamplingDefaults(d->mutable_sampling());
      break;
    }
    case loom::v1::STAGE_KIND_AVERAGE: {
      auto* a = s->mutable_average();
      if (a->method() == loom::v1::AverageConfig::METHOD_UNSPECIFIED) {
        a->set_method(loom::v1::AverageConfig::METHOD_UNIFORM);
      }
      if (!a->has_ema_beta()) a->set_ema_beta(0.9);
      break;
    }
    case loom::v1::STAGE_KIND_MERGE: {
      auto* m = s->mutable_merge();
      if (!m->has_lambda()) m->set_lambda(1.0);
      if (!m->has_t()) m->set_t(0.5);
      if (!m->has_density()) {
        m->set_density(m->method() == loom::v1::MergeConfig::METHOD_DARE ? 0.5 : 1.0);
      }
      break;
    }
    case loom::v1::STAGE_KIND_REJECTION_SAMPLING: {
      auto* r = s->mutable_rejection_sampling();
      if (!r->has_samples_per_prompt()) r->set_samples_per_prompt(4);
      if (r->keep() == loom::v1::RejectionSamplingConfig::KEEP_UNSPECIFIED) {
        r->set_keep(loom::v1::RejectionSamplingConfig::KEEP_BEST);
      }
      if (!r->has_max_prompts()) r->set_max_prompts(0);
      ApplySamplingDefaults(r->mutable_sampling());
      break;
    }
    case loom::v1::STAGE_KIND_SFT: {
      auto* f = s->mutable_sft();
      if (f->template_() == loom::v1::SftConfig::TEMPLATE_UNSPECIFIED) {
        f->set_template_(loom::v1::SftConfig::TEMPLATE_CHATML);
      }
      if (!f->has_packing()) f->set_packing(true);
      break;
    }
    case loom::v1::STAGE_KIND_REWARD_MODEL: {
      auto* r = s->mutable_reward_model();
      if (!r->has_margin()) r->set_margin(0.0);
      break;
    }
    case loom::v1::STAGE_KIND_RL: {
      auto* r = s->mutable_rl();
      if (!r->has_samples_per_prompt()) r->set_samples_per_prompt(4);
      if (!r->has_kl_coef()) r->set_kl_coef(0.05);
      if (r->reference().empty()) r->set_reference(s->from());
      ApplySamplingDefaults(r->mutable_sampling());
      break;
    }
    default:
      break;
  }
}

void ApplyModelDefaults(loom::v1::ModelConfig* m) {
  if (m->kv_heads() == 0) m->set_kv_heads(m->heads());
  if (!m->has_rope_theta()) m->set_rope_theta(10000.0);
  if (!m->has_norm_eps()) m->set_norm_eps(1e-5);
  if (!m->has_init_std()) m->set_init_std(0.02);
  if (m->rope_scaling().type() == loom::v1::RopeScaling::TYPE_UNSPECIFIED) {
    m->mutable_rope_scaling()->set_type(loom::v1::RopeScaling::TYPE_NONE);
  }
}

loom::v1::ModelConfig ResolveModel(const loom::v1::TrainingPlan& plan, const std::string& name) {
  loom::v1::ModelConfig model;
  if (name.empty()) {
    model = plan.model();
  } else if (auto it = plan.models().find(name); it != plan.models().end()) {
    model = it->second;
  } else {
    return model;
  }
  ApplyModelDefaults(&model);
  return model;
}

uint64_t PlanSeed(const loom::v1::TrainingPlan& plan) { return plan.has_seed() ? plan.seed() : 1234; }

bool TrainsOnTokenStream(StageKind kind) {
  switch (kind) {
    case loom::v1::STAGE_KIND_PRETRAIN:
    case loom::v1::STAGE_KIND_CONTINUED_PRETRAIN:
    case loom::v1::STAGE_KIND_CONTEXT_EXTENSION:
    case loom::v1::STAGE_KIND_ANNEAL:
    case loom::v1::STAGE_KIND_DISTILL:
      return true;
    default:
      return false;
  }
}

bool TrainsOnDataset(StageKind kind) {
  switch (kind) {
    case loom::v1::STAGE_KIND_SFT:
    case loom::v1::STAGE_KIND_DPO:
    case loom::v1::STAGE_KIND_REWARD_MODEL:
    case loom::v1::STAGE_KIND_RL:
      return true;
    default:
      return false;
  }
}

bool IsTraining(StageKind kind) { return TrainsOnTokenStream(kind) || TrainsOnDataset(kind); }

bool ProducesModel(StageKind kind) {
  return kind != loom::v1::STAGE_KIND_REJECTION_SAMPLING && kind != loom::v1::STAGE_KIND_EVAL &&
         kind != loom::v1::STAGE_KIND_REWARD_MODEL && kind != loom::v1::STAGE_KIND_UNSPECIFIED;
}

}  // namespace loom
