#include "worker/engine/evaluation/preference_accuracy.h"

#include <algorithm>

#include "worker/engine/model/row_scores.h"
#include "worker/engine/sources/preference_source.h"

namespace loom::engine {
namespace {

// The share of pairs whose chosen row `score` rates above the rejected one, and the mean gap.
template <typename Score>
PreferenceAccuracy PairAccuracy(const std::vector<data::PreferenceExample>& pairs, int seq_len, int32_t pad_id,
                                int pairs_per_batch, Score score) {
  PreferenceAccuracy out;
  double right = 0, margin = 0;
  for (size_t first = 0; first < pairs.size(); first += pairs_per_batch) {
    const size_t count = std::min(pairs.size() - first, static_cast<size_t>(pairs_per_batch));
    const std::vector<double> s = score(PreferenceRows(pairs, first, count, seq_len, pad_id));
    for (size_t i = 0; i < count; ++i) {
      const double m = s[2 * i] - s[2 * i + 1];
      right += m > 0;
      margin += m;
    }
  }
  out.pairs = static_cast<int64_t>(pairs.size());
  if (out.pairs > 0) {
    out.accuracy = right / out.pairs;
    out.mean_margin = margin / out.pairs;
  }
  return out;
}

}  // namespace

PreferenceAccuracy EvaluateRewardAccuracy(Transformer& model, const std::vector<data::PreferenceExample>& pairs,
                                          int seq_len, int32_t pad_id, int32_t reward_token, int pairs_per_batch) {
  return PairAccuracy(pairs, seq_len, pad_id, pairs_per_batch,
                      [&](const data::TokenBatch& b) { return RowRewards(model, b, reward_token); });
}

PreferenceAccuracy EvaluatePreferenceAccuracy(Transformer& model, const std::vector<data::PreferenceExample>& pairs,
                                              int seq_len, int32_t pad_id, int pairs_per_batch) {
  return PairAccuracy(pairs, seq_len, pad_id, pairs_per_batch,
                      [&](const data::TokenBatch& b) { return RowLogProbSums(model, b); });
}

}  // namespace loom::engine
