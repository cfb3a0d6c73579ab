// Command-line flags for Loom's binaries and `loom` subcommands, with a generated --help.
//
//   CommandLine cl("loom validate", "Checks a plan and prints a summary or every error.");
//   cl.AddPositional("PLAN", &plan_path, "plan file (.yaml, .json or .textproto)");
//   cl.AddFlag("quiet", &quiet, "print only errors");
//   if (absl::Status s = cl.Parse(args); !s.ok()) ...   // cl.help_requested() after --help
//
// Every command line also takes --version (cl.version_requested()): ParseOrExit prints
// "<program> <version>", the version being CMake's project(VERSION), and exits 0.
//
// Accepted forms: --name value, --name=value, and for booleans --name / --no-name. Unknown flags
// and missing positionals are errors that name the flag and suggest the closest one. Flags are
// declared next to the main (or subcommand) that reads them, as Abseil recommends, but without
// global state, so every subcommand has its own set.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace loom {

// Loom's version, "MAJOR.MINOR.PATCH" from the top-level CMakeLists.txt's project(VERSION).
const char* Version();

class CommandLine {
 public:
  CommandLine(std::string program, std::string summary);

  // The variable's current value is the default shown in --help.
  void AddFlag(const std::string& name, std::string* value, const std::string& help);
  void AddFlag(const std::string& name, int64_t* value, const std::string& help);
  void AddFlag(const std::string& name, int* value, const std::string& help);
  void AddFlag(const std::string& name, double* value, const std::string& help);
  void AddFlag(const std::string& name, bool* value, const std::string& help);
  // Durations as "500ms", "5s", "2m", "12h", and whole days as "7d".
  void AddFlag(const std::string& name, absl::Duration* value, const std::string& help);
  void AddPositional(const std::string& name, std::string* value, const std::string& help,
                     bool required = true);
  // Extra free text at the end of --help (examples, environment variables).
  void AddEpilog(const std::string& text) { epilog_ = text; }

  // Parses `args` (without the program name). OK with help_requested() set after --help/-h, or
  // version_requested() after --version; what follows either is not read.
  absl::Status Parse(const std::vector<std::string>& args);
  bool help_requested() const { return help_requested_; }
  bool version_requested() const { return version_requested_; }
  std::string Usage() const;
  // "<program> <version>", e.g. "loom-worker 0.1.0".
  std::string VersionLine() const;

 private:
  enum class Type { kString, kInt64, kInt, kDouble, kBool, kDuration };
  struct Flag {
    std::string name;
    Type type;
    void* target;
    std::string help;
    std::string default_text;
  };
  struct Positional {
    std::string name;
    std::string* target;
    std::string help;
    bool required;
  };
  void Add(const std::string& name, Type type, void* target, const std::string& help,
           std::string default_text);
  absl::Status Set(const Flag& flag, const std::string& text);
  const Flag* Find(const std::string& name) const;

  std::string program_;
  std::string summary_;
  std::string epilog_;
  std::vector<Flag> flags_;
  std::vector<Positional> positionals_;
  bool help_requested_ = false;
  bool version_requested_ = false;
};

// Runs `cl.Parse(args)`; on --help prints usage (on --version the version line) to stdout and
// returns 0 in *exit_code; on an
// error prints it with a pointer to --help on stderr and returns 2. Returns true when the caller
// should go on.
bool ParseOrExit(CommandLine& cl, const std::vector<std::string>& args, int* exit_code);

}  // namespace loom
