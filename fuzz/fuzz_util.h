// Helpers shared by the fuzz targets: a private temporary directory per fuzzing process, for the
// APIs that read files rather than bytes in memory.
#pragma once
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace loom::fuzz {

// A directory made once per process (mkdtemp under $TMPDIR or /tmp) and removed at exit, so
// parallel fuzzing processes never share files.
inline const std::string& TempDir() {
  static const std::string dir = [] {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/loom-fuzz-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) {
      std::perror("loom fuzz: mkdtemp");
      std::abort();
    }
    static std::string removed_at_exit;
    removed_at_exit = tmpl;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(removed_at_exit, ec);
    });
    return tmpl;
  }();
  return dir;
}

// Writes `size` bytes to `path` (replacing it); aborts on an I/O error, which is not a finding.
inline void WriteBytes(const std::string& path, const uint8_t* data, size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr || (size > 0 && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
    std::perror(("loom fuzz: writing " + path).c_str());
    std::abort();
  }
}

}  // namespace loom::fuzz
