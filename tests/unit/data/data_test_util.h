// Helpers shared by the data tests: temporary directories and a tiny tokenizer trained once per
// test binary on generated text (a second or two).
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/hash.h"
#include "data/tokenizer.h"
#include "gtest/gtest.h"

namespace loom::data::testing {

// A fresh directory, removed with everything in it when the object goes.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "loom-data-XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// Sentences of English-like words, digits and a little code, from a seed.
inline std::vector<std::string> GeneratedSentences(int count, uint64_t seed) {
  static const char* kWords[] = {"the",    "model", "reads", "tokens", "from", "many",   "sources", "and",
                                 "learns", "math",  "code",  "text",   "with", "care",   "every",   "step",
                                 "loss",   "falls", "when",  "data",   "is",   "clean",  "über",    "naïve",
                                 "число",  "año",   "int",   "return", "void", "struct", "{",       "}"};
  SplitMix64 rng(seed);
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) {
    std::string s;
    const int n = 4 + static_cast<int>(rng.Below(12));
    for (int w = 0; w < n; ++w) {
      if (w > 0) s += rng.Below(10) == 0 ? "  " : " ";
      if (rng.Below(6) == 0) {
        s += std::to_string(rng.Below(1000));
      } else {
        s += kWords[rng.Below(sizeof(kWords) / sizeof(kWords[0]))];
      }
    }
    s += rng.Below(3) == 0 ? "?" : ".";
    out.push_back(s);
  }
  return out;
}

// Trains (once per process) a BPE tokenizer of `vocab` pieces and returns the model's path.
inline std::string TinyTokenizerModel(int vocab = 320) {
  static TempDir* dir = new TempDir();  // lives until exit: tests share the model
  const std::string prefix = (*dir) / ("tok" + std::to_string(vocab));
  if (!std::filesystem::exists(prefix + ".model")) {
    std::string text;
    for (const std::string& s : GeneratedSentences(3000, 7)) text += s + "\n";
    WriteText((*dir) / "train.txt", text);
    TokenizerTrainOptions options;
    options.inputs = {(*dir) / "train.txt"};
    options.model_prefix = prefix;
    options.vocab_size = vocab;
    const absl::Status status = TrainTokenizer(options);
    EXPECT_TRUE(status.ok()) << status;
  }
  return prefix + ".model";
}

}  // namespace loom::data::testing
