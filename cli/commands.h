// The `loom` client's subcommands. Each takes its arguments (after the subcommand name) and
// returns the process exit code: 0 success, 1 the command ran and found a problem (e.g. an
// invalid plan), 2 bad usage.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace loom::cli {

using Args = std::vector<std::string>;

int RunValidate(const Args& args);
// Prints a plan's load/validation error (every line, ending in a newline) to stderr; returns 1.
int ReportPlanError(const absl::Status& status);
// client_commands.cc: talk to a coordinator.
int RunSubmit(const Args& args);
int RunStatus(const Args& args);
int RunWatch(const Args& args);
int RunCancel(const Args& args);
int RunWorkers(const Args& args);
int RunCheckpoints(const Args& args);
// history_commands.cc: a plan's run history.
int RunMetrics(const Args& args);
int RunLogs(const Args& args);
// up_command.cc: a coordinator and local workers in the foreground.
int RunUp(const Args& args);

// `loom certs init|issue|show` (cli/certs_command.cc): a CA for mutual TLS.
int RunCerts(const Args& args);

// `loom tokens issue|list|revoke` (cli/tokens_command.cc): bearer tokens, admin only.
int RunTokens(const Args& args);

// `loom data corpus|prepare|inspect` (cli/data_command.cc).
int RunData(const Args& args);

// Engine commands (cli/engine_commands.cc): they run the engine in this process.
int RunTrainLocal(const Args& args);
int RunGenerate(const Args& args);
int RunEval(const Args& args);
int RunExportHf(const Args& args);
int RunImportHf(const Args& args);

}  // namespace loom::cli
