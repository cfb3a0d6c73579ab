// Human units for the numbers people write in plans: token counts such as `2M`, `1.5B`, `64Ki`.
//
// Decimal suffixes: K = 1e3, M = 1e6, B or G = 1e9, T = 1e12. Binary: Ki = 2^10, Mi = 2^20,
// Gi = 2^30, Ti = 2^40. Case-sensitive except that `k` is accepted for K. Underscores between
// digits are ignored (`1_000_000`), and an integral scientific form is accepted (`1e6`).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace loom {

// Parses a non-negative or negative integer count with an optional unit suffix. The result must
// be an exact integer ("1.5K" is 1500; "1.0005K" is an error) that fits in int64.
absl::StatusOr<int64_t> ParseCount(std::string_view text);

// Parses a finite real number ("3e-4", "0.1", "1_000.5").
absl::StatusOr<double> ParseReal(std::string_view text);

// Formats a count compactly and exactly: 2000000 -> "2M", 65536 -> "64Ki", 1500000 -> "1.5M",
// 12345 -> "12345". ParseCount(FormatCount(n)) == n for every n.
std::string FormatCount(int64_t n);

}  // namespace loom
