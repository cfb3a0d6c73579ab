// The `loom` client's subcommands. Each takes its arguments (after the subcommand name) and
// returns the process exit code: 0 success, 1 the command ran and found a problem (e.g. an
// invalid plan), 2 bad usage.
#pragma once

#include <string>
#include <vector>

namespace loom::cli {

using Args = std::vector<std::string>;

int RunValidate(const Args& args);
// `loom data corpus|prepare|inspect` (cli/data_command.cc).
int RunData(const Args& args);

// Engine commands (cli/engine_commands.cc): they run the engine in this process.
int RunTrainLocal(const Args& args);
int RunGenerate(const Args& args);
int RunExportHf(const Args& args);
int RunImportHf(const Args& args);

}  // namespace loom::cli
