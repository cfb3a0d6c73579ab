// Small prepared datasets built with the real `loom data corpus` and `loom data prepare`, for
// tests that train on real shards: PreparedData() has math, code and sft_math (512 pieces);
// PrepareData(name, sources, vocab) any sources of the default corpus.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "tests/integration/cluster_harness.h"

namespace loom::testing {

// Builds <tmp>/loom-prepared-<pid>/<name>/prepared (under PreparedDataParent(), which clusters
// allow) and returns its path.
// `corpus_flags` go to `loom data corpus` after the defaults (e.g. "--heldout 0.1").
inline std::string PrepareData(const std::string& name, const std::string& sources, int vocab,
                               const std::string& corpus_flags = "") {
  const std::string root = PreparedDataParent() + "/" + name;
  std::filesystem::remove_all(root);
  std::filesystem::create_directories(PreparedDataParent());
  PreparedDataRoots().push_back(root);
  const std::string loom = LoomBinary();
  const std::string corpus = loom + " data corpus --out " + root + "/corpus --sources " + sources +
                             " --max-docs 400 --math-docs 800 --code-files 100 " + corpus_flags + " > " + root + ".log 2>&1";
  const std::string prepare = loom + " data prepare --corpus " + root + "/corpus --out " + root +
                              "/prepared --vocab " + std::to_string(vocab) + " --threads 2 >> " + root +
                              ".log 2>&1";
  EXPECT_EQ(std::system(corpus.c_str()), 0) << ReadAll(root + ".log");
  EXPECT_EQ(std::system(prepare.c_str()), 0) << ReadAll(root + ".log");
  return root + "/prepared";
}

inline const std::string& PreparedData() {
  static const std::string dir = PrepareData("math-code", "math,code,sft_math", 512);
  return dir;
}

}  // namespace loom::testing
