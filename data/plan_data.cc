#include "data/plan_data.h"

#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/sha256.h"
#include "common/status_macros.h"

namespace loom::data {

std::vector<MixPoint> MixSchedule(const loom::v1::Stage& stage) {
  std::vector<MixPoint> out;
  for (const loom::v1::MixEntry& entry : stage.data_mix()) {
    MixPoint point;
    point.at_tokens = entry.at_tokens();
    for (const auto& [source, weight] : entry.weights()) point.weights[source] = weight;
    out.push_back(std::move(point));
  }
  return out;
}

absl::StatusOr<SamplerOptions> SamplerOptionsForStage(const loom::v1::TrainingPlan& plan,
                                                      const loom::v1::Stage& stage,
                                                      const std::string& data_dir, uint64_t seed) {
  if (data_dir.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("stage ", stage.name(),
                     ": no data directory (set data.dir in the plan or start the coordinator "
                     "with --data-dir)"));
  }
  SamplerOptions options;
  options.mix = MixSchedule(stage);
  if (options.mix.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("stage ", stage.name(), " has no data_mix"));
  }
  std::set<std::string> names;
  for (const MixPoint& point : options.mix) {
    for (const auto& [name, weight] : point.weights) names.insert(name);
  }
  options.sources = PreparedSources(data_dir, std::vector<std::string>(names.begin(), names.end()));
  const std::string tokenizer =
      plan.data().tokenizer().empty() ? data_dir + "/tokenizer.model" : plan.data().tokenizer();
  absl::StatusOr<std::string> hash = Sha256File(tokenizer);
  if (!hash.ok()) {
    return absl::NotFoundError(absl::StrCat("stage ", stage.name(), ": tokenizer ", tokenizer, ": ",
                                            hash.status().message(), " (run `loom data prepare`)"));
  }
  options.expected_tokenizer_hash = *hash;
  options.max_vocab_size = plan.model().vocab_size();
  options.seed = seed;
  return options;
}

}  // namespace loom::data
