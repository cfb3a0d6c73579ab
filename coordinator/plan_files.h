// What a plan reads from the shared filesystem, checked when the plan arrives: the prepared data
// directory and its tokenizer, every source a stage's data mix, held-out sets, dataset and math
// accuracy read, and every checkpoint the plan names by path. The coordinator sees the same
// shared filesystem as the workers, so a file missing or unreadable here would fail every rank of
// every attempt; refusing the plan at submit names the field instead, before anything runs.
#pragma once

#include <string>
#include <vector>

#include "common/plan_error.h"
#include "loom/v1/coordinator_store.pb.h"

namespace loom::coordinator {

// Every file problem of `record` (its plan and its resolved stages). `default_data_dir` is where
// plans without data.dir read (the coordinator's --prepared-data). With neither, the data checks
// are skipped: there is nothing to look at (checkpoint paths are still checked).
//
// With `allowed_roots`, every path the plan names must resolve, after `..` and symlinks, inside one
// of them; anything else is refused with its field path (a plan must not make workers read
// /etc/passwd). Those paths: data.dir (or the default), data.tokenizer (or its default in the data
// directory), every source a stage reads under the data directory (data_mix weights, eval.sets,
// eval.math_source, dataset.source), and every checkpoint reference given as a path (from,
// distill.teacher, dpo.reference, rl.reference, the scorers' reward_model, average.checkpoints,
// merge.inputs, merge.base; repeat-block `initial` entries are expanded into these). Empty: paths
// are not confined (loom-coordinator --allow-any-path).
std::vector<PlanError> CheckPlanFiles(const loom::v1::PlanRecord& record, const std::string& default_data_dir,
                                      const std::vector<std::string>& allowed_roots = {});

}  // namespace loom::coordinator
