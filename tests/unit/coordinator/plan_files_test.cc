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

}  // namespace
}  // namespace loom::coordinator
