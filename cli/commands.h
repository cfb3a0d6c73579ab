// The `loom` client's subcommands. Each takes its arguments (after the subcommand name) and
// returns the process exit code: 0 success, 1 the command ran and found a problem (e.g. an
// invalid plan), 2 bad usage.
#pragma once

#include <string>
#include <vector>

namespace loom::cli {

using Args = std::vector<std::string>;

int RunValidate(const Args& args);
// client_commands.cc: talk to a coordinator.
int RunSubmit(const Args& args);
int RunStatus(const Args& args);
int RunWatch(const Args& args);
int RunCancel(const Args& args);
int RunWorkers(const Args& args);
int RunCheckpoints(const Args& args);
// up_command.cc: a coordinator and local workers in the foreground.
int RunUp(const Args& args);

}  // namespace loom::cli
