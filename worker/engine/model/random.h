// The engine's random numbers: xoshiro256** seeded through SplitMix64, with its own normal
// sampler, so that a seed gives the same weights and samples on every platform and library
// version, and the whole state fits in a checkpoint.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace loom::engine {

class Random {
 public:
  explicit Random(uint64_t seed);

  uint64_t NextU64();
  // Uniform in [0, 1) with 24 random bits (exactly representable as float).
  float NextUniform();
  // Standard normal (Box-Muller, both values used).
  float NextNormal();

  // 32 bytes of generator state plus the cached normal; restores exactly.
  std::string SaveState() const;
  bool RestoreState(std::string_view state);

 private:
  std::array<uint64_t, 4> s_;
  bool has_spare_ = false;
  float spare_ = 0;
};

}  // namespace loom::engine
