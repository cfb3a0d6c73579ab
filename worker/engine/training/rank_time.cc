#include "worker/engine/training/rank_time.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <mutex>
#include <vector>

namespace loom::engine {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kPhases = 7;

struct State {
  std::mutex mu;
  std::array<double, kPhases> seconds{};
  // Open scopes, innermost last, each with when it last resumed.
  std::vector<std::pair<RankPhase, Clock::time_point>> open;
};

State& Global() {
  static State* state = new State;  // never destroyed: scopes may outlive static destruction order
  return *state;
}

// Charges the innermost open scope up to `now`.
void ChargeInnermost(State& s, Clock::time_point now) {
  if (s.open.empty()) return;
  auto& [phase, since] = s.open.back();
  s.seconds[static_cast<int>(phase)] += std::chrono::duration<double>(now - since).count();
  since = now;
}

}  // namespace

RankPhaseScope::RankPhaseScope(RankPhase phase) {
  State& s = Global();
  std::lock_guard lock(s.mu);
  const Clock::time_point now = Clock::now();
  ChargeInnermost(s, now);
  s.open.emplace_back(phase, now);
}

RankPhaseScope::~RankPhaseScope() {
  State& s = Global();
  std::lock_guard lock(s.mu);
  const Clock::time_point now = Clock::now();
  if (s.open.empty()) return;  // reset meanwhile (tests)
  ChargeInnermost(s, now);
  s.open.pop_back();
  if (!s.open.empty()) s.open.back().second = now;
}

void MoveRankPhaseSeconds(RankPhase from, RankPhase to, double seconds) {
  State& s = Global();
  std::lock_guard lock(s.mu);
  ChargeInnermost(s, Clock::now());
  const double moved = std::clamp(seconds, 0.0, s.seconds[static_cast<int>(from)]);
  s.seconds[static_cast<int>(from)] -= moved;
  s.seconds[static_cast<int>(to)] += moved;
}

RankTime RankTimeNow() {
  State& s = Global();
  std::lock_guard lock(s.mu);
  ChargeInnermost(s, Clock::now());
  auto at = [&](RankPhase p) { return s.seconds[static_cast<int>(p)]; };
  return {at(RankPhase::kRendezvous), at(RankPhase::kLoad),           at(RankPhase::kDataWait),
          at(RankPhase::kCompute),    at(RankPhase::kCommunication), at(RankPhase::kCheckpointSave),
          at(RankPhase::kEvaluation)};
}

void ResetRankTime() {
  State& s = Global();
  std::lock_guard lock(s.mu);
  s.seconds = {};
  s.open.clear();
}

}  // namespace loom::engine
