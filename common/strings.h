// Debian 12's Abseil is built with its own absl::string_view class (not an alias of
// std::string_view), so absl::StrCat and friends do not accept std::string_view. Loom's
// interfaces use std::string_view; this converts at the call into Abseil.
#pragma once

#include <string_view>

#include "absl/strings/string_view.h"

namespace loom {

inline absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace loom
