#include "coordinator/plan_files.h"

#include <unistd.h>

#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/checkpoint_ref.h"
#include "common/confined_read.h"
#include "common/plan_resolve.h"
#include "common/stage_inputs.h"
#include "data/tokenizer_path.h"

namespace loom::coordinator {
namespace {

namespace fs = std::filesystem;

// "" when `path` is what `want` says (a directory or a regular file) and readable, else why not.
std::string Problem(const std::string& path, bool want_directory) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec || !fs::exists(status)) return absl::StrCat(path, " does not exist");
  if (want_directory && !fs::is_directory(status)) return absl::StrCat(path, " is not a directory");
  if (!want_directory && !fs::is_regular_file(status)) return absl::StrCat(path, " is not a file");
  if (::access(path.c_str(), want_directory ? (R_OK | X_OK) : R_OK) != 0) {
    return absl::StrCat(path, " is not readable by the coordinator");
  }
  return "";
}

class Checker {
 public:
  Checker(const loom::v1::PlanRecord& record, std::string data_dir, bool data_dir_is_default,
          const std::vector<std::string>& allowed_roots)
      : record_(record), data_dir_(std::move(data_dir)), default_(data_dir_is_default) {
    for (const std::string& root : allowed_roots) roots_.push_back(ResolvedPath(root));
  }

  std::vector<PlanError> Run() {
    bool reads_data = false;
    for (const loom::v1::ResolvedStage& r : record_.resolved()) {
      reads_data |= r.stage().kind() != loom::v1::STAGE_KIND_AVERAGE && r.stage().kind() != loom::v1::STAGE_KIND_MERGE;
    }
    // Confinement applies to every path the plan names, whether or not a stage reads it.
    const bool data_dir_ok = data_dir_.empty() || Confined("data.dir", data_dir_);
    const std::string& tokenizer = record_.plan().data().tokenizer();
    tokenizer_ok_ = tokenizer.empty() || Confined("data.tokenizer", tokenizer);
    if (reads_data && data_dir_ok && !data_dir_.empty() && CheckDataDir()) {
      for (int i = 0; i < record_.resolved_size(); ++i) CheckStageData(i);
    }
    for (int i = 0; i < record_.resolved_size(); ++i) CheckCheckpointPaths(i);
    return std::move(errors_);
  }

 private:
  void Error(std::string path, std::string message, std::string hint) {
    errors_.push_back({std::move(path), std::move(message), std::move(hint)});
  }

  // False (with an error on `field`) when roots are configured and `path`, resolved after
  // symlinks, is inside none of them.
  bool Confined(const std::string& field, const std::string& path) {
    if (roots_.empty()) return true;
    const std::string resolved = ResolvedPath(path);
    for (const std::string& root : roots_) {
      if (IsInsideRoot(resolved, root)) return true;
    }
    Error(field,
          absl::StrCat(path, resolved == path ? "" : absl::StrCat(" (", resolved, ")"),
                       " is outside the coordinator's allowed roots (", absl::StrJoin(roots_, ", "), ")"),
          "move the files under an allowed root, or start loom-coordinator with --allowed-roots naming "
          "their directory");
    return false;
  }

  // The data directory and the tokenizer; false when the directory is unusable (the per-stage
  // checks would only repeat it).
  bool CheckDataDir() {
    const std::string hint = default_
                                 ? "set data.dir to a `loom data prepare` output, or start the coordinator "
                                   "(loom up) with --prepared-data DIR"
                                 : "point data.dir at a `loom data prepare` output on the shared filesystem";
    if (std::string p = Problem(data_dir_, /*want_directory=*/true); !p.empty()) {
      Error("data.dir", default_ ? absl::StrCat("is empty, and the coordinator's --prepared-data: ", p) : p, hint);
      return false;
    }
    const std::string& tokenizer = record_.plan().data().tokenizer();
    if (tokenizer.empty()) {
      // The default lies in the (confined) data directory, but may be a symlink out of it.
      if (!Confined("data.tokenizer", data::DefaultTokenizerPath(data_dir_))) {
      } else if (std::string p = Problem(data::DefaultTokenizerPath(data_dir_), false); !p.empty()) {
        Error("data.tokenizer", absl::StrCat("is empty, and its default: ", p), hint);
      }
    } else if (!tokenizer_ok_) {
    } else if (std::string p = Problem(tokenizer, false); !p.empty()) {
      Error("data.tokenizer", p,
            "name the tokenizer the data was prepared with (tokenizer.model or tokenizer.json)");
    }
    return true;
  }

  void Need(const std::string& field, const std::string& path, bool directory, const std::string& hint) {
    if (!Confined(field, path)) return;
    if (std::string p = Problem(path, directory); !p.empty()) Error(field, p, hint);
  }

  void CheckStageData(int i) {
    const loom::v1::Stage& s = record_.resolved(i).stage();
    const std::string prefix = IndexPath("stages", i);
    const std::string prepare = "prepare it with `loom data prepare` (its --corpus must hold the source)";
    if (TrainsOnTokenStream(s.kind())) {
      std::set<std::string> seen;
      for (int j = 0; j < s.data_mix_size(); ++j) {
        for (const auto& [source, weight] : s.data_mix(j).weights()) {
          if (!seen.insert(source).second) continue;
          Need(KeyPath(IndexPath(prefix + ".data_mix", j) + ".weights", source),
               absl::StrCat(data_dir_, "/", source, "/train"), true, prepare);
        }
      }
    }
    for (int k = 0; k < s.eval().sets_size(); ++k) {
      Need(IndexPath(prefix + ".eval.sets", k), absl::StrCat(data_dir_, "/", s.eval().sets(k), "/heldout"), true,
           prepare);
    }
    if (s.eval().math_accuracy()) {
      Need(prefix + ".eval.math_source", absl::StrCat(data_dir_, "/", s.eval().math_source(), "/heldout.jsonl"),
           false, prepare);
    }
    const std::string& source = s.dataset().source();
    if (!source.empty() && (TrainsOnDataset(s.kind()) || s.kind() == loom::v1::STAGE_KIND_REJECTION_SAMPLING)) {
      Need(prefix + ".dataset.source", absl::StrCat(data_dir_, "/", source, "/train.jsonl"), false, prepare);
      const bool pairs = s.kind() == loom::v1::STAGE_KIND_REWARD_MODEL ||
                         (s.kind() == loom::v1::STAGE_KIND_DPO && !s.dpo().online());
      if (pairs) {
        // Their held-out pairs are measured with the evaluations.
        Need(prefix + ".dataset.source", absl::StrCat(data_dir_, "/", source, "/heldout.jsonl"), false, prepare);
      }
    }
  }

  void CheckCheckpointPaths(int i) {
    const std::string prefix = IndexPath("stages", i);
    for (const StageInputRef& ref : StageInputRefs(record_.resolved(i).stage())) {
      absl::StatusOr<CheckpointRef> parsed = ParseCheckpointRef(ref.text);
      if (!parsed.ok() || parsed->kind != CheckpointRef::Kind::kPath) continue;
      if (!Confined(FieldPath(prefix, ref.field), parsed->path)) continue;
      if (std::string p = Problem(parsed->path + "/manifest.json", false); !p.empty()) {
        Error(FieldPath(prefix, ref.field), absl::StrCat("names checkpoint ", parsed->path, ", but ", p),
              "name an earlier stage, or a checkpoint directory (with manifest.json) on the shared filesystem");
      }
    }
  }

  const loom::v1::PlanRecord& record_;
  const std::string data_dir_;
  const bool default_;
  std::vector<std::string> roots_;  // resolved
  bool tokenizer_ok_ = true;
  std::vector<PlanError> errors_;
};

}  // namespace

std::vector<PlanError> CheckPlanFiles(const loom::v1::PlanRecord& record, const std::string& default_data_dir,
                                      const std::vector<std::string>& allowed_roots) {
  const std::string& dir = record.plan().data().dir();
  return Checker(record, dir.empty() ? default_data_dir : dir, dir.empty(), allowed_roots).Run();
}

}  // namespace loom::coordinator
