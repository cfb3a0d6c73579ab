#include "common/command_line.h"

#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/proto_names.h"
#include "common/units.h"

#ifndef LOOM_VERSION
#error "LOOM_VERSION must be defined (common/CMakeLists.txt passes project(VERSION))"
#endif

namespace loom {

const char* Version() { return LOOM_VERSION; }

CommandLine::CommandLine(std::string program, std::string summary)
    : program_(std::move(program)), summary_(std::move(summary)) {}

void CommandLine::Add(const std::string& name, Type type, void* target, const std::string& help,
                      std::string default_text) {
  flags_.push_back(Flag{name, type, target, help, std::move(default_text)});
}

void CommandLine::AddFlag(const std::string& name, std::string* value, const std::string& help) {
  Add(name, Type::kString, value, help, value->empty() ? "" : absl::StrCat("\"", *value, "\""));
}
void CommandLine::AddFlag(const std::string& name, int64_t* value, const std::string& help) {
  Add(name, Type::kInt64, value, help, absl::StrCat(*value));
}
void CommandLine::AddFlag(const std::string& name, int* value, const std::string& help) {
  Add(name, Type::kInt, value, help, absl::StrCat(*value));
}
void CommandLine::AddFlag(const std::string& name, double* value, const std::string& help) {
  Add(name, Type::kDouble, value, help, absl::StrCat(*value));
}
void CommandLine::AddFlag(const std::string& name, bool* value, const std::string& help) {
  Add(name, Type::kBool, value, help, *value ? "true" : "");
}
void CommandLine::AddFlag(const std::string& name, absl::Duration* value, const std::string& help) {
  Add(name, Type::kDuration, value, help, absl::FormatDuration(*value));
}

void CommandLine::AddPositional(const std::string& name, std::string* value, const std::string& help,
                                bool required) {
  positionals_.push_back(Positional{name, value, help, required});
}

const CommandLine::Flag* CommandLine::Find(const std::string& name) const {
  for (const Flag& f : flags_) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

absl::Status CommandLine::Set(const Flag& flag, const std::string& text) {
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag.name, ": '", text, "' is not ", what));
  };
  switch (flag.type) {
    case Type::kString:
      *static_cast<std::string*>(flag.target) = text;
      return absl::OkStatus();
    case Type::kInt64:
    case Type::kInt: {
      absl::StatusOr<int64_t> v = ParseCount(text);
      if (!v.ok()) return bad("a whole number");
      if (flag.type == Type::kInt) {
        if (*v < INT32_MIN || *v > INT32_MAX) return bad("in the 32-bit range");
        *static_cast<int*>(flag.target) = static_cast<int>(*v);
      } else {
        *static_cast<int64_t*>(flag.target) = *v;
      }
      return absl::OkStatus();
    }
    case Type::kDouble: {
      absl::StatusOr<double> v = ParseReal(text);
      if (!v.ok()) return bad("a number");
      *static_cast<double*>(flag.target) = *v;
      return absl::OkStatus();
    }
    case Type::kBool: {
      const std::string lower = absl::AsciiStrToLower(text);
      if (lower == "true" || lower == "1" || lower == "yes")
        *static_cast<bool*>(flag.target) = true;
      else if (lower == "false" || lower == "0" || lower == "no")
        *static_cast<bool*>(flag.target) = false;
      else
        return bad("true or false");
      return absl::OkStatus();
    }
    case Type::kDuration: {
      absl::Duration d;
      // absl has no unit longer than hours: whole days ("7d") are read here.
      int64_t days = 0;
      const bool in_days = text.size() > 1 && text.back() == 'd' &&
                           absl::SimpleAtoi(absl::string_view(text).substr(0, text.size() - 1), &days) && days >= 0;
      if (in_days) {
        d = absl::Hours(24) * days;
      } else if (!absl::ParseDuration(text, &d) || d < absl::ZeroDuration()) {
        return bad("a duration such as 500ms, 5s, 2m, 12h or 7d");
      }
      *static_cast<absl::Duration*>(flag.target) = d;
      return absl::OkStatus();
    }
  }
  return absl::OkStatus();
}

absl::Status CommandLine::Parse(const std::vector<std::string>& args) {
  size_t next_positional = 0;
  bool only_positionals = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (!only_positionals && (arg == "--help" || arg == "-h")) {
      help_requested_ = true;
      return absl::OkStatus();
    }
    if (!only_positionals && arg == "--version") {
      version_requested_ = true;
      return absl::OkStatus();
    }
    if (!only_positionals && arg == "--") {
      only_positionals = true;
      continue;
    }
    if (!only_positionals && absl::StartsWith(arg, "--")) {
      std::string name = arg.substr(2);
      std::string value;
      bool has_value = false;
      if (const size_t eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name.resize(eq);
        has_value = true;
      }
      const Flag* flag = Find(name);
      if (flag == nullptr && absl::StartsWith(name, "no-") && !has_value) {
        const Flag* negated = Find(name.substr(3));
        if (negated != nullptr && negated->type == Type::kBool) {
          *static_cast<bool*>(negated->target) = false;
          continue;
        }
      }
      if (flag == nullptr) {
        std::vector<std::string> names;
        for (const Flag& f : flags_) names.push_back(f.name);
        std::string hint = DidYouMean(name, names);
        return absl::InvalidArgumentError(
            absl::StrCat("unknown flag --", name, hint.empty() ? "" : absl::StrCat(" (", hint, ")")));
      }
      if (!has_value) {
        if (flag->type == Type::kBool) {
          *static_cast<bool*>(flag->target) = true;
          continue;
        }
        if (i + 1 >= args.size()) {
          return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
        }
        value = args[++i];
      }
      if (absl::Status s = Set(*flag, value); !s.ok()) return s;
      continue;
    }
    if (next_positional >= positionals_.size()) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    }
    *positionals_[next_positional++].target = arg;
  }
  for (size_t k = next_positional; k < positionals_.size(); ++k) {
    if (positionals_[k].required) {
      return absl::InvalidArgumentError(
          absl::StrCat("missing ", positionals_[k].name, ": ", positionals_[k].help));
    }
  }
  return absl::OkStatus();
}

std::string CommandLine::Usage() const {
  std::string out = absl::StrCat("usage: ", program_);
  if (!flags_.empty()) absl::StrAppend(&out, " [flags]");
  for (const Positional& p : positionals_) {
    absl::StrAppend(&out, p.required ? " " : " [", p.name, p.required ? "" : "]");
  }
  absl::StrAppend(&out, "\n\n", summary_, "\n");
  if (!positionals_.empty()) {
    absl::StrAppend(&out, "\narguments:\n");
    for (const Positional& p : positionals_)
      absl::StrAppend(&out, absl::StrFormat("  %-24s %s\n", p.name, p.help));
  }
  absl::StrAppend(&out, "\nflags:\n");
  for (const Flag& f : flags_) {
    std::string left = absl::StrCat("--", f.name);
    switch (f.type) {
      case Type::kBool:
        break;
      case Type::kDuration:
        absl::StrAppend(&left, " DURATION");
        break;
      case Type::kString:
        absl::StrAppend(&left, " TEXT");
        break;
      default:
        absl::StrAppend(&left, " N");
        break;
    }
    std::string help = f.help;
    if (!f.default_text.empty()) absl::StrAppend(&help, " (default ", f.default_text, ")");
    absl::StrAppend(&out, absl::StrFormat("  %-24s %s\n", left, help));
  }
  absl::StrAppend(&out, absl::StrFormat("  %-24s %s\n", "--help", "show this help"));
  absl::StrAppend(&out, absl::StrFormat("  %-24s %s\n", "--version", "print the version and exit"));
  if (!epilog_.empty()) absl::StrAppend(&out, "\n", epilog_, "\n");
  return out;
}

std::string CommandLine::VersionLine() const { return absl::StrCat(program_, " ", Version()); }

bool ParseOrExit(CommandLine& cl, const std::vector<std::string>& args, int* exit_code) {
  const absl::Status status = cl.Parse(args);
  if (!status.ok()) {
    std::fprintf(stderr, "%s\nrun with --help for usage\n", std::string(status.message()).c_str());
    *exit_code = 2;
    return false;
  }
  if (cl.help_requested()) {
    std::fputs(cl.Usage().c_str(), stdout);
    *exit_code = 0;
    return false;
  }
  if (cl.version_requested()) {
    std::printf("%s\n", cl.VersionLine().c_str());
    *exit_code = 0;
    return false;
  }
  return true;
}

}  // namespace loom
