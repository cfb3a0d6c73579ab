// Test hosts for multi-host tests on one machine (tests/hosts/test-hosts does the work): N
// network namespaces on a private bridge, each with its own mount namespace (private /tmp and
// /dev/shm), and a shared directory at the same path on all of them. Made in the constructor
// (after sweeping what killed runs left), removed in the destructor.
//
//   if (std::string why; !TestHosts::Available(&why)) GTEST_SKIP() << why;
//   TestHosts hosts(4);
//   Process p(hosts.Wrap(1, {"loom-worker", ...}), log);   // runs on host 1
//   hosts.Kill(1); hosts.SetLink(2, false);
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/cluster_harness.h"

namespace loom::testing {

class TestHosts : public HostPlacement {
 public:
  static std::string Script() { return SourcePath("tests/hosts/test-hosts"); }

  // False (with the reason) when this machine cannot make test hosts (not root, no namespaces).
  static bool Available(std::string* why) {
    const std::string out = Run(Script() + " check");
    if (exit_code_ == 0) return true;
    *why = out;
    return false;
  }

  // `keep`: more paths under /tmp that the hosts must see (e.g. prepared data made there).
  explicit TestHosts(int n, const std::vector<std::string>& keep = {}) : name_("lt" + std::to_string(::getpid())) {
    // Keep the source and build trees visible inside the hosts' private /tmp when they live there.
    std::string kept = std::string(LOOM_SOURCE_DIR) + ":" + LOOM_BINARY_DIR;
    for (const std::string& k : keep) kept += ":" + k;
    setenv("LOOM_HOSTS_KEEP", kept.c_str(), 1);
    const std::string out = Run(Script() + " up " + name_ + " " + std::to_string(n));
    if (exit_code_ != 0) {
      ADD_FAILURE() << "test-hosts up failed:\n" << out;
      return;
    }
    // "I ADDRESS" lines; others (what `sweep` removed of killed runs) are only said.
    std::istringstream in(out);
    for (std::string line; std::getline(in, line);) {
      int index = -1;
      char address[64];
      if (std::sscanf(line.c_str(), "%d %63s", &index, address) == 2 && index == size()) {
        addresses_.push_back(address);
      } else {
        std::fprintf(stderr, "%s\n", line.c_str());
      }
    }
    if (size() != n) ADD_FAILURE() << "test-hosts up made " << size() << " of " << n << " hosts:\n" << out;
    shared_ = Trim(Run(Script() + " shared " + name_));
  }
  ~TestHosts() override { Run(Script() + " down " + name_); }
  TestHosts(const TestHosts&) = delete;
  TestHosts& operator=(const TestHosts&) = delete;

  int size() const { return static_cast<int>(addresses_.size()); }
  const std::string& address(int host) const override { return addresses_.at(host); }
  // Visible at this same path on every host and in the test process.
  const std::string& shared_dir() const override { return shared_; }
  const std::string& name() const { return name_; }

  // `argv` run on `host`.
  // (nsenter without --pid execs in place: the pid is the program's.)
  std::vector<std::string> Wrap(int host, const std::vector<std::string>& argv) const override {
    std::vector<std::string> out = {"/usr/bin/nsenter",
                                    "--mount=/run/loom-hosts/" + name_ + "/ns/h" + std::to_string(host),
                                    "--net=/run/netns/" + name_ + "h" + std::to_string(host), "--"};
    out.insert(out.end(), argv.begin(), argv.end());
    return out;
  }
  // A shell command line run on `host`.
  std::string WrapShell(int host, const std::string& command) const override {
    std::string out, quoted;
    for (const std::string& w : Wrap(host, {"/bin/sh", "-c"})) out += "'" + w + "' ";
    for (char c : command) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'" + quoted + "'";
  }

  // SIGKILL every process on `host`.
  void Kill(int host) { Run(Script() + " kill " + name_ + " " + std::to_string(host)); }
  // Connects (true) or cuts (false) `host`'s link to the bridge.
  void SetLink(int host, bool up) {
    Run(Script() + " link " + name_ + " " + std::to_string(host) + (up ? " up" : " down"));
  }

  // GET http://<address><path> from inside `host`'s network; "" on failure.
  std::string HttpGetFrom(int host, const std::string& address, const std::string& path) const override {
    std::string body;
    std::thread t([&] {
      // A network namespace is per thread: only this one moves.
      const int fd = open(("/run/netns/" + name_ + "h" + std::to_string(host)).c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) return;
      close(fd);
      body = HttpGet(address, path);
    });
    t.join();
    return body;
  }

 private:
  static std::string Trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
  }
  // Runs `command`, returns its stdout+stderr; the exit code in exit_code_.
  static std::string Run(const std::string& command) {
    std::string out;
    FILE* p = popen((command + " 2>&1").c_str(), "r");
    if (p == nullptr) {
      exit_code_ = -1;
      return "popen failed";
    }
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    const int status = pclose(p);
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return out;
  }
  static inline int exit_code_ = 0;

  std::string name_;
  std::vector<std::string> addresses_;
  std::string shared_;
};

}  // namespace loom::testing
