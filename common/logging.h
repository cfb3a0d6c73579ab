// A small line logger for operators: one event per line, UTC timestamp, level, component, text.
//
//   2026-11-24T19:06:03.123Z INFO  coordinator: plan llama3_tiny-1 submitted (6 stages)
//
// Abseil 20220623 (Debian 12) has no absl/log, so Loom carries this instead. Thread-safe; writes
// to stderr. The level is set once at start-up (LOOM_LOG_LEVEL=debug|info|warning|error, or
// SetLogLevel).
#pragma once

#include <string_view>

#include "absl/strings/str_cat.h"

namespace loom {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
// Parses "debug", "info", "warning"/"warn", "error"; false if unknown.
bool ParseLogLevel(std::string_view text, LogLevel* level);

// Writes one line (newlines in `message` are replaced by spaces).
void LogLine(LogLevel level, std::string_view component, std::string_view message);

template <typename... Args>
void Log(LogLevel level, std::string_view component, const Args&... args) {
  if (level < GetLogLevel()) return;
  LogLine(level, component, absl::StrCat(args...));
}

}  // namespace loom
