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

}  // namespace loom::cli
