// `loom`: the client. Subcommands are listed by `loom --help`; each has its own --help.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "cli/commands.h"
#include "common/command_line.h"
#include "common/proto_names.h"

namespace {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const loom::cli::Args&);
};

constexpr Command kCommands[] = {
    {"validate", "check a plan: print a summary, or every error with its field path", loom::cli::RunValidate},
    {"submit", "validate and submit a plan; prints its id", loom::cli::RunSubmit},
    {"status", "a plan's jobs (or every plan): state, attempt, progress, reason", loom::cli::RunStatus},
    {"watch", "follow a plan live until it ends (exit 1 if it failed)", loom::cli::RunWatch},
    {"metrics", "a plan's run history: loss, lr, grad norm, tokens/s, evals per step (table, csv, jsonl)",
     loom::cli::RunMetrics},
    {"logs", "a rank's log, read through the coordinator from its worker (--follow)", loom::cli::RunLogs},
    {"cancel", "cancel a plan", loom::cli::RunCancel},
    {"workers", "the worker daemons and the ranks they run", loom::cli::RunWorkers},
    {"checkpoints", "a plan's committed checkpoints", loom::cli::RunCheckpoints},
    {"certs", "make a CA and issue certificates for mutual TLS (init, issue, show)", loom::cli::RunCerts},
    {"tokens", "bearer tokens for the CLI instead of a certificate (issue, list, revoke; admin)",
     loom::cli::RunTokens},
    {"up", "run a coordinator and N local workers in the foreground", loom::cli::RunUp},
    {"train-local", "train one stage of a plan in this process on a local file (developers)",
     loom::cli::RunTrainLocal},
    {"generate", "continue a prompt with a checkpoint's model", loom::cli::RunGenerate},
    {"eval", "held-out loss and math accuracy of a checkpoint, in this process", loom::cli::RunEval},
    {"export-hf", "write a checkpoint as a Hugging Face Llama directory", loom::cli::RunExportHf},
    {"import-hf", "read a Hugging Face Llama directory into a Loom checkpoint", loom::cli::RunImportHf},
    {"data", "build the corpus, prepare token shards and the tokenizer, inspect prepared data",
     loom::cli::RunData},
};

void PrintUsage(FILE* out) {
  std::fprintf(out,
               "usage: loom COMMAND [flags] [args]\n\n"
               "Loom's client: check and submit training plans, watch them run.\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-12s %s\n", c.name, c.summary);
  std::fprintf(out, "\nRun `loom COMMAND --help` for a command's flags, `loom --version` for the version.\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    PrintUsage(stderr);
    return 2;
  }
  const std::string name = args[0];
  if (name == "--version") {
    std::printf("loom %s\n", loom::Version());
    return 0;
  }
  if (name == "--help" || name == "-h" || name == "help") {
    if (name == "help" && args.size() > 1) {
      args = {args[1], "--help"};
    } else {
      PrintUsage(stdout);
      return 0;
    }
  }
  for (const Command& c : kCommands) {
    if (args[0] == c.name) return c.run(std::vector<std::string>(args.begin() + 1, args.end()));
  }
  std::vector<std::string> names;
  for (const Command& c : kCommands) names.push_back(c.name);
  const std::string hint = loom::DidYouMean(args[0], names);
  std::fprintf(stderr, "loom: unknown command '%s'%s\n", args[0].c_str(),
               hint.empty() ? "" : absl::StrFormat(" (%s)", hint).c_str());
  PrintUsage(stderr);
  return 2;
}
