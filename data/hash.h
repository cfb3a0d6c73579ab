// Small, fixed hash functions and a seeded generator for the data pipeline. They are defined here
// (not std::hash, not <random>'s distributions) because their values are part of Loom's
// determinism contract: the same seed must give the same data order on every platform and build.
#pragma once

#include <cstdint>
#include <cstddef>
#include <vector>
#include <utility>
#include <string_view>

namespace loom::data {

// splitmix64's finaliser: a bijective 64-bit mixer.
inline uint64_t Mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// FNV-1a over bytes, then mixed (FNV alone has weak low bits).
inline uint64_t Hash64(std::string_view bytes, uint64_t seed = 0) {
  uint64_t h = 0xCBF29CE484222325ull ^ Mix64(seed);
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001B3ull;
  }
  return Mix64(h);
}

// splitmix64 as a generator.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    state_ += 0x9E3779B97F4A7C15ull;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) (multiply-shift; the bias is below 2^-32 for n < 2^32).
  uint64_t Below(uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(Next()) * n) >> 64);
  }
  // Uniform in [0, 1).
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

// The order in which a dataset of `n` examples is read in `epoch`: a Fisher-Yates shuffle seeded
// by (seed, salt + epoch), the salt separating the readers that share a stage seed.
inline void EpochOrder(size_t n, uint64_t seed, uint64_t salt, int64_t epoch, std::vector<uint32_t>* order) {
  order->resize(n);
  for (size_t i = 0; i < n; ++i) (*order)[i] = static_cast<uint32_t>(i);
  SplitMix64 rng(Mix64(seed ^ Mix64(salt + static_cast<uint64_t>(epoch))));
  for (size_t i = n; i > 1; --i) std::swap((*order)[i - 1], (*order)[rng.Below(i)]);
}

}  // namespace loom::data
