// Confined paths (coordinator/plan_files.h): with allowed roots, every path a plan names must
// resolve inside them after `..` and symlinks; anything else is refused with its field path.
#include "coordinator/plan_files.h"

#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace loom::coordinator {
namespace {

namespace fs = std::filesystem;

struct Roots {
  Roots() {
    base = fs::path(::testing::TempDir()) / "plan_files_roots";
    fs::remove_all(base);
    fs::create_directories(base / "allowed/data");
    fs::create_directories(base / "allowed2");  // a sibling whose name extends the root's
    fs::create_symlink("/etc", base / "allowed/escape");
  }
  ~Roots() { fs::remove_all(base); }
  fs::path base;
};

loom::v1::PlanRecord Record(const std::string& data_dir, const std::string& from) {
  loom::v1::PlanRecord record;
  record.mutable_plan()->mutable_data()->set_dir(data_dir);
  loom::v1::Stage* stage = record.add_resolved()->mutable_stage();
  stage->set_name("avg");
  stage->set_kind(loom::v1::STAGE_KIND_AVERAGE);  // reads no data: only the confinement of data.dir shows
  stage->set_from(from);
  return record;
}

// The first error on a field that starts with `field` and says "outside", or "" when none.
std::string OutsideError(const std::vector<PlanError>& errors, const std::string& field) {
  for (const PlanError& e : errors) {
    if (e.path.rfind(field, 0) == 0 && e.message.find("outside the coordinator's allowed roots") != std::string::npos)
      return e.path + ": " + e.message;
  }
  return "";
}

TEST(PlanFiles, PathsOutsideTheAllowedRootsAreRefusedWithTheirField) {
  Roots r;
  const std::vector<std::string> roots = {(r.base / "allowed").string()};

  // data.dir naming /etc/passwd's directory, and a checkpoint path at /etc.
  auto errors = CheckPlanFiles(Record("/etc", "/etc/passwd"), "", roots);
  EXPECT_NE(OutsideError(errors, "data.dir"), "");
  EXPECT_NE(OutsideError(errors, "stages[0]"), "");

  // `..` and a symlink that leave the root are resolved first.
  errors = CheckPlanFiles(Record((r.base / "allowed/data/../../allowed2").string(),
                                 (r.base / "allowed/escape/ckpt").string()),
                          "", roots);
  EXPECT_NE(OutsideError(errors, "data.dir"), "") << "a sibling named like the root is not inside it";
  const std::string via_link = OutsideError(errors, "stages[0]");
  EXPECT_NE(via_link.find("/etc/ckpt"), std::string::npos) << via_link;

  // Inside the root: no confinement error (other checks may still complain of missing files).
  errors = CheckPlanFiles(Record((r.base / "allowed/data").string(), (r.base / "allowed/data/ckpt").string()),
                          "", roots);
  EXPECT_EQ(OutsideError(errors, ""), "");

  // Without roots, paths are not confined.
  EXPECT_EQ(OutsideError(CheckPlanFiles(Record("/etc", "/etc/passwd"), "", {}), ""), "");
}

// Every path field of plan.proto that a plan can name, each pointing at /etc, is refused with its
// own field path: data.tokenizer, a source that climbs out of the data directory, and every
// checkpoint reference (from, teacher, references, reward models, averaged and merged inputs).
TEST(PlanFiles, EveryPathFieldOfThePlanIsConfined) {
  Roots r;
  fs::create_directories(r.base / "allowed/data/math/train");
  const std::vector<std::string> roots = {(r.base / "allowed").string()};
  loom::v1::PlanRecord record;
  record.mutable_plan()->mutable_data()->set_dir((r.base / "allowed/data").string());
  record.mutable_plan()->mutable_data()->set_tokenizer("/etc/passwd");
  auto add = [&](const std::string& name, loom::v1::StageKind kind) {
    loom::v1::Stage* s = record.add_resolved()->mutable_stage();
    s->set_name(name);
    s->set_kind(kind);
    return s;
  };
  loom::v1::Stage* distill = add("distill", loom::v1::STAGE_KIND_DISTILL);
  distill->set_from("/etc/from");
  distill->mutable_distill()->set_teacher("/etc/teacher");
  (*distill->add_data_mix()->mutable_weights())["../../../../../etc"] = 1;
  loom::v1::Stage* dpo = add("dpo", loom::v1::STAGE_KIND_DPO);
  dpo->set_from((r.base / "allowed/ckpt").string());
  dpo->mutable_dpo()->set_reference("/etc/reference");
  dpo->mutable_dpo()->set_online(true);
  dpo->mutable_dpo()->mutable_scorer()->set_reward_model("/etc/reward");
  loom::v1::Stage* rl = add("rl", loom::v1::STAGE_KIND_RL);
  rl->set_from((r.base / "allowed/ckpt").string());
  rl->mutable_rl()->set_reference("/etc/reference");
  rl->mutable_rl()->mutable_scorer()->set_reward_model("/etc/reward");
  loom::v1::Stage* sampling = add("sampling", loom::v1::STAGE_KIND_REJECTION_SAMPLING);
  sampling->set_from((r.base / "allowed/ckpt").string());
  sampling->mutable_rejection_sampling()->mutable_scorer()->set_reward_model("/etc/reward");
  loom::v1::Stage* average = add("average", loom::v1::STAGE_KIND_AVERAGE);
  average->mutable_average()->add_checkpoints((r.base / "allowed/ckpt").string());
  average->mutable_average()->add_checkpoints("/etc/averaged");
  loom::v1::Stage* merge = add("merge", loom::v1::STAGE_KIND_MERGE);
  merge->mutable_merge()->add_inputs("/etc/merged");
  merge->mutable_merge()->set_base("/etc/base");
  const std::vector<PlanError> errors = CheckPlanFiles(record, "", roots);
  for (const std::string field :
       {"data.tokenizer", "stages[0].from", "stages[0].distill.teacher", "stages[0].data_mix[0].weights",
        "stages[1].dpo.reference", "stages[1].dpo.scorer.reward_model", "stages[2].rl.reference",
        "stages[2].rl.scorer.reward_model", "stages[3].rejection_sampling.scorer.reward_model",
        "stages[4].average.checkpoints[1]", "stages[5].merge.inputs[0]", "stages[5].merge.base"}) {
    EXPECT_NE(OutsideError(errors, field), "") << field << " is not confined; errors:\n" << FormatPlanErrors(errors);
  }
  EXPECT_EQ(OutsideError(errors, "stages[4].average.checkpoints[0]"), "") << "inside the root";
}

// The default tokenizer lies in the data directory, but a symlink there may point out of it.
TEST(PlanFiles, TheDefaultTokenizerIsConfinedAfterSymlinks) {
  Roots r;
  fs::create_symlink("/etc/passwd", r.base / "allowed/data/tokenizer.model");
  loom::v1::PlanRecord record = Record((r.base / "allowed/data").string(), "");
  record.mutable_resolved(0)->mutable_stage()->set_kind(loom::v1::STAGE_KIND_PRETRAIN);
  const std::vector<PlanError> errors = CheckPlanFiles(record, "", {(r.base / "allowed").string()});
  const std::string error = OutsideError(errors, "data.tokenizer");
  EXPECT_NE(error.find("/etc/passwd"), std::string::npos) << FormatPlanErrors(errors);
}

}  // namespace
}  // namespace loom::coordinator
