// Every byte of every regular file under a directory, concatenated, for tests that check that a
// secret (a bearer token, a key) never reached the disk in plain text.
#pragma once

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace loom::testing {

inline std::string AllBytesUnder(const std::string& dir) {
  std::string bytes;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    bytes.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  return bytes;
}

}  // namespace loom::testing
