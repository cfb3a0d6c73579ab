#include "coordinator/straggler.h"

#include <algorithm>

namespace loom::coordinator {
namespace {

double Median(std::vector<double> v) {
  const size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid), v.end());
  if (v.size() % 2 == 1) return v[mid];
  const double upper = v[mid];
  return (*std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid)) + upper) / 2;
}

}  // namespace

bool StragglerDetector::Record(int rank, int64_t step, double compute_seconds, int64_t now_ms) {
  Rank& r = ranks_[rank];
  if (step > r.last_step && compute_seconds >= 0) {
    r.last_step = step;
    r.recent.push_back(compute_seconds);
    while (static_cast<int>(r.recent.size()) > std::max(1, settings_.window_steps)) r.recent.pop_front();
  }
  return last_evaluation_ms_ < 0 || now_ms - last_evaluation_ms_ >= settings_.evaluate_every_ms ||
         now_ms < last_evaluation_ms_;
}

std::vector<StragglerDetector::Verdict> StragglerDetector::Evaluate(int64_t now_ms) {
  last_evaluation_ms_ = now_ms;
  std::map<int, double> medians;  // ranks with a full window
  for (const auto& [rank, r] : ranks_) {
    if (static_cast<int>(r.recent.size()) >= std::max(1, settings_.window_steps)) {
      medians[rank] = Median(std::vector<double>(r.recent.begin(), r.recent.end()));
    }
  }
  std::vector<Verdict> out;
  if (medians.size() < 2) return out;  // nobody to compare with
  for (const auto& [rank, own] : medians) {
    std::vector<double> peers;
    for (const auto& [other, median] : medians) {
      if (other != rank) peers.push_back(median);
    }
    const double peer = Median(std::move(peers));
    if (own >= settings_.ratio * peer && own - peer >= settings_.min_excess_seconds) {
      out.push_back({.rank = rank, .compute_seconds = own, .peers_compute_seconds = peer});
    }
  }
  return out;
}

}  // namespace loom::coordinator
