#include "worker/engine/model/random.h"

#include <cmath>
#include <cstring>

namespace loom::engine {
namespace {

uint64_t SplitMix64(uint64_t* x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

}  // namespace

Random::Random(uint64_t seed) {
  for (uint64_t& word : s_) word = SplitMix64(&seed);
}

uint64_t Random::NextU64() {
  const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = Rotl(s_[3], 45);
  return result;
}

float Random::NextUniform() { return static_cast<float>(NextU64() >> 40) * (1.0f / 16777216.0f); }

float Random::NextNormal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  // u1 in (0, 1] so the log is finite.
  const double u1 = (static_cast<double>(NextU64() >> 11) + 1.0) * (1.0 / 9007199254740992.0);
  const double u2 = static_cast<double>(NextU64() >> 11) * (1.0 / 9007199254740992.0);
  const double r = std::sqrt(-2.0 * std::log(u1));
  spare_ = static_cast<float>(r * std::sin(2.0 * M_PI * u2));
  has_spare_ = true;
  return static_cast<float>(r * std::cos(2.0 * M_PI * u2));
}

std::string Random::SaveState() const {
  std::string out(sizeof(s_) + 1 + sizeof(float), '\0');
  std::memcpy(out.data(), s_.data(), sizeof(s_));
  out[sizeof(s_)] = has_spare_ ? 1 : 0;
  std::memcpy(out.data() + sizeof(s_) + 1, &spare_, sizeof(float));
  return out;
}

bool Random::RestoreState(std::string_view state) {
  if (state.size() != sizeof(s_) + 1 + sizeof(float)) return false;
  std::memcpy(s_.data(), state.data(), sizeof(s_));
  has_spare_ = state[sizeof(s_)] != 0;
  std::memcpy(&spare_, state.data() + sizeof(s_) + 1, sizeof(float));
  return true;
}

}  // namespace loom::engine
