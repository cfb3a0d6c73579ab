#include "common/plan_summary.h"

#include <algorithm>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/plan_resolve.h"
#include "common/proto_names.h"
#include "common/units.h"

namespace loom {
namespace {

using loom::v1::Stage;

std::string Ramp(const Stage& s) {
  std::vector<std::string> parts;
  for (const auto& e : s.batch_ramp()) {
    parts.push_back(e.at_tokens() == 0 ? FormatCount(e.global_batch_tokens())
                                       : absl::StrCat(FormatCount(e.global_batch_tokens()), "@",
                                                      FormatCount(e.at_tokens())));
  }
  return parts.empty() ? "-" : absl::StrJoin(parts, ">");
}

std::string SeqLens(const Stage& s) {
  std::vector<std::string> parts;
  for (const auto& e : s.seq_len_schedule()) {
    parts.push_back(e.at_tokens() == 0 ? absl::StrCat(e.seq_len())
                                       : absl::StrCat(e.seq_len(), "@", FormatCount(e.at_tokens())));
  }
  return parts.empty() ? "-" : absl::StrJoin(parts, ">");
}

std::string Mix(const Stage& s) {
  std::vector<std::string> entries;
  for (const auto& e : s.data_mix()) {
    double sum = 0;
    for (const auto& [unused, w] : e.weights()) sum += w;
    // Heaviest source first; names break ties so the order is stable.
    std::vector<std::pair<double, std::string>> sorted;
    for (const auto& [source, w] : e.weights()) sorted.push_back({-w, source});
    std::sort(sorted.begin(), sorted.end());
    std::vector<std::string> parts;
    for (const auto& [neg_w, source] : sorted)
      parts.push_back(absl::StrFormat("%s %.2f", source, -neg_w / sum));
    entries.push_back(
        absl::StrCat(e.at_tokens() == 0 ? "" : absl::StrCat("@", FormatCount(e.at_tokens()), " "),
                     absl::StrJoin(parts, " ")));
  }
  return absl::StrJoin(entries, " | ");
}

std::string Layout(const Stage& s) {
  const auto& p = s.parallel();
  std::vector<std::string> parts;
  if (p.dp() > 1) parts.push_back(absl::StrCat("dp", p.dp()));
  if (p.tp() > 1) parts.push_back(absl::StrCat("tp", p.tp()));
  if (p.pp() > 1) parts.push_back(absl::StrCat("pp", p.pp()));
  return absl::StrCat(parts.empty() ? "1" : absl::StrJoin(parts, "x"), p.elastic() ? "e" : "");
}

std::string Details(const Stage& s) {
  switch (s.kind()) {
    case loom::v1::STAGE_KIND_DISTILL:
      return absl::StrCat("teacher ", s.distill().teacher(), ", ", EnumName(s.distill().mode()),
                          s.distill().mode() == loom::v1::DistillConfig::MODE_TOP1_TARGET
                              ? absl::StrFormat(" w=%.2f", s.distill().teacher_weight())
                              : absl::StrFormat(" T=%.2f", s.distill().temperature()),
                          " | mix ", Mix(s));
    case loom::v1::STAGE_KIND_DPO:
      return absl::StrFormat("%s beta=%g reference %s%s, data %s", EnumName(s.dpo().loss()), s.dpo().beta(),
                             s.dpo().reference(), s.dpo().online() ? ", online" : "",
                             s.dataset().source().empty() ? s.dataset().from_stage() : s.dataset().source());
    case loom::v1::STAGE_KIND_AVERAGE:
      return absl::StrCat(EnumName(s.average().method()), " of ",
                          s.average().checkpoints().empty()
                              ? absl::StrCat("last ", s.average().last_k(), " of ", s.from())
                              : absl::StrJoin(s.average().checkpoints(), ", "));
    case loom::v1::STAGE_KIND_MERGE:
      return absl::StrCat(EnumName(s.merge().method()), " of ", absl::StrJoin(s.merge().inputs(), ", "),
                          s.merge().base().empty() ? "" : absl::StrCat(" (base ", s.merge().base(), ")"));
    case loom::v1::STAGE_KIND_REJECTION_SAMPLING:
      return absl::StrCat(s.rejection_sampling().samples_per_prompt(), " samples/prompt from ",
                          s.dataset().source(), ", scored by ",
                          s.rejection_sampling().scorer().reward_model().empty()
                              ? EnumName(s.rejection_sampling().scorer().verifier())
                              : s.rejection_sampling().scorer().reward_model(),
                          ", keep ", EnumName(s.rejection_sampling().keep()));
    case loom::v1::STAGE_KIND_EVAL:
      return absl::StrCat("sets ", absl::StrJoin(s.eval().sets(), ", "),
                          s.eval().math_accuracy() ? " + math accuracy" : "");
    default:
      break;
  }
  if (TrainsOnDataset(s.kind())) {
    std::string out =
        absl::StrCat("data ", s.dataset().source().empty() ? s.dataset().from_stage() : s.dataset().source(),
                     ", ", s.dataset().epochs(), s.dataset().epochs() == 1 ? " epoch" : " epochs");
    if (s.kind() == loom::v1::STAGE_KIND_RL) {
      absl::StrAppend(
          &out, absl::StrFormat(", %d samples/prompt, kl %g, scored by %s", s.rl().samples_per_prompt(),
                                s.rl().kl_coef(),
                                s.rl().scorer().reward_model().empty() ? EnumName(s.rl().scorer().verifier())
                                                                       : s.rl().scorer().reward_model()));
    }
    return out;
  }
  std::string out = absl::StrCat("mix ", Mix(s));
  if (s.has_rope()) {
    if (s.rope().has_theta()) absl::StrAppend(&out, absl::StrFormat(" | rope theta %g", s.rope().theta()));
    if (s.rope().scaling().factor() > 0) {
      absl::StrAppend(&out, absl::StrFormat(" | rope %s x%g", EnumName(s.rope().scaling().type()),
                                            s.rope().scaling().factor()));
    }
  }
  return out;
}

}  // namespace

std::string SummarizeModel(const loom::v1::ModelConfig& raw) {
  loom::v1::ModelConfig m = raw;
  ApplyModelDefaults(&m);
  std::string out = absl::StrFormat("%d layers, d_model %d, %d heads", m.layers(), m.d_model(), m.heads());
  if (m.kv_heads() != m.heads()) absl::StrAppend(&out, " (", m.kv_heads(), " kv)");
  absl::StrAppend(
      &out, absl::StrFormat(", ffn %d, vocab %d, rope %g", m.ffn_size(), m.vocab_size(), m.rope_theta()));
  if (m.sliding_window() > 0) {
    absl::StrAppend(&out, ", window ", m.sliding_window());
    if (m.sliding_window_period() > 0) absl::StrAppend(&out, " every ", m.sliding_window_period(), " layers");
    if (m.sliding_window_layers_size() > 0) {
      absl::StrAppend(&out, " on layers ", absl::StrJoin(m.sliding_window_layers(), ","));
    }
  }
  if (m.tied_embeddings()) absl::StrAppend(&out, ", tied");
  return out;
}

std::string SummarizePlan(const loom::v1::TrainingPlan& plan) {
  std::vector<Stage> stages;
  int64_t total_tokens = 0;
  for (int i = 0; i < plan.stages_size(); ++i) {
    stages.push_back(ResolveStage(plan, i));
    if (IsTraining(stages.back().kind())) total_tokens += stages.back().tokens();
  }
  std::string out = absl::StrFormat("plan %s: %d stages, %s training tokens, seed %d\n", plan.name(),
                                    plan.stages_size(), FormatCount(total_tokens), PlanSeed(plan));
  absl::StrAppend(&out, "model: ", SummarizeModel(plan.model()), "\n");
  std::map<std::string, loom::v1::ModelConfig> models(plan.models().begin(), plan.models().end());
  for (const auto& [name, model] : models)
    absl::StrAppend(&out, "model ", name, ": ", SummarizeModel(model), "\n");
  absl::StrAppend(&out, absl::StrFormat("\n %-2s %-18s %-18s %-14s %-7s %-6s %-9s %-22s %s\n", "#", "stage",
                                        "kind", "from", "tokens", "ranks", "lr", "batch tokens", "seq len"));
  for (int i = 0; i < plan.stages_size(); ++i) {
    const Stage& s = stages[i];
    const bool training = IsTraining(s.kind());
    std::string from = s.from().empty() ? "-" : s.from();
    if (!s.model().empty()) from = absl::StrCat(from, " [", s.model(), "]");
    absl::StrAppend(
        &out, absl::StrFormat(
                  " %-2d %-18s %-18s %-14s %-7s %-6s %-9s %-22s %s\n", i, s.name(), EnumName(s.kind()), from,
                  training && s.has_tokens() ? FormatCount(s.tokens()) : "-", training ? Layout(s) : "1",
                  training ? absl::StrFormat("%g %s", s.optimizer().lr(),
                                             EnumName(s.lr_schedule().type()).substr(0, 3))
                           : "-",
                  training ? Ramp(s) : "-", training ? SeqLens(s) : "-"));
    absl::StrAppend(&out, "    ", Details(s), "\n");
  }
  return out;
}

}  // namespace loom
