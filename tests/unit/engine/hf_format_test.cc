// Hugging Face export and import: a round trip is bitwise, config.json describes the model, and
// damaged files are refused with errors that name them.
#include "worker/engine/model/hf_format.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "worker/engine/model/checkpoint.h"
#include "worker/engine/model/transformer.h"

namespace loom::engine {
namespace {
namespace fs = std::filesystem;

loom::v1::ModelConfig Model(bool tied, bool window) {
  loom::v1::ModelConfig m;
  m.set_layers(2);
  m.set_d_model(32);
  m.set_heads(4);
  m.set_kv_heads(2);
  m.set_ffn_size(48);
  m.set_vocab_size(50);
  m.set_rope_theta(500000);
  m.set_norm_eps(1e-6);
  m.set_tied_embeddings(tied);
  if (window) {
    m.set_sliding_window(8);
    m.add_sliding_window_layers(0);
  }
  return m;
}

std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/hf_" + name;
  fs::remove_all(dir);
  return dir;
}

// Saves a randomly initialised model as a Loom checkpoint; returns its directory.
std::string SaveModel(const loom::v1::ModelConfig& m, const std::string& dir, Transformer* model) {
  loom::v1::CheckpointManifest manifest;
  manifest.set_plan_id("hf-1");
  manifest.set_stage("core");
  manifest.set_step(3);
  *manifest.mutable_model() = m;
  model->InitWeights(99);
  EXPECT_TRUE(SaveCheckpoint(dir, *model, nullptr, manifest).ok());
  return dir;
}

void ExpectRoundTripIsBitwise(bool tied, bool window) {
  const std::string root = FreshDir(absl::StrCat("rt", tied, window));
  const loom::v1::ModelConfig m = Model(tied, window);
  auto config = TransformerConfig::FromProto(m);
  ASSERT_TRUE(config.ok());
  Transformer original(*config);
  SaveModel(m, root + "/ckpt", &original);

  auto warning = ExportHuggingFace(root + "/ckpt", root + "/hf");
  ASSERT_TRUE(warning.ok()) << warning.status();
  EXPECT_EQ(window, warning->find("sliding-window") != std::string::npos)
      << "sliding-window export must warn that HF ignores it: " << *warning;
  EXPECT_NE(warning->find("records no tokenizer"), std::string::npos) << *warning;
  ASSERT_TRUE(fs::exists(root + "/hf/model.safetensors"));

  auto json = ReadFile(root + "/hf/config.json");
  ASSERT_TRUE(json.ok());
  const auto j = nlohmann::json::parse(*json);
  EXPECT_EQ(j["model_type"], "llama");
  EXPECT_EQ(j["num_key_value_heads"], 2);
  EXPECT_EQ(j["tie_word_embeddings"], tied);
  EXPECT_DOUBLE_EQ(j["rope_theta"].get<double>(), 500000);

  ASSERT_TRUE(ImportHuggingFace(root + "/hf", root + "/back").ok());
  Transformer reloaded(*config);
  auto manifest = LoadWeights(root + "/back", &reloaded);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_EQ(manifest->model().sliding_window(), window ? 8 : 0);
  EXPECT_EQ(manifest->model().tied_embeddings(), tied);
  ASSERT_EQ(reloaded.num_params(), original.num_params());
  EXPECT_EQ(0, std::memcmp(reloaded.params(), original.params(), original.num_params() * sizeof(float)));
}

TEST(HuggingFace, RoundTripIsBitwise) { ExpectRoundTripIsBitwise(false, false); }
TEST(HuggingFace, RoundTripIsBitwiseTiedWithWindow) { ExpectRoundTripIsBitwise(true, true); }

TEST(HuggingFace, ExportUsesLlamaTensorNames) {
  const std::string root = FreshDir("names");
  const loom::v1::ModelConfig m = Model(false, false);
  Transformer model(*TransformerConfig::FromProto(m));
  SaveModel(m, root + "/ckpt", &model);
  ASSERT_TRUE(ExportHuggingFace(root + "/ckpt", root + "/hf").ok());
  auto bytes = ReadFile(root + "/hf/model.safetensors");
  ASSERT_TRUE(bytes.ok());
  for (const char* name : {"model.embed_tokens.weight", "model.layers.1.self_attn.k_proj.weight",
                           "model.layers.0.mlp.gate_proj.weight", "model.norm.weight", "lm_head.weight"}) {
    EXPECT_NE(bytes->find(name), std::string::npos) << name;
  }
}

TEST(HuggingFace, CorruptedCheckpointShardIsRefusedNamingTheFile) {
  const std::string root = FreshDir("corrupt");
  const loom::v1::ModelConfig m = Model(false, false);
  Transformer model(*TransformerConfig::FromProto(m));
  SaveModel(m, root + "/ckpt", &model);
  {
    std::fstream f(root + "/ckpt/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-5, std::ios::end);
    f.put('\x7f');
  }
  Transformer other(*TransformerConfig::FromProto(m));
  auto loaded = LoadWeights(root + "/ckpt", &other);
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("model.safetensors"), std::string::npos) << loaded.status();
  auto exported = ExportHuggingFace(root + "/ckpt", root + "/hf");
  ASSERT_FALSE(exported.ok());
  EXPECT_NE(exported.status().message().find("model.safetensors"), std::string::npos) << exported.status();
}

TEST(HuggingFace, ImportRefusesATruncatedFileNamingIt) {
  const std::string root = FreshDir("truncated");
  const loom::v1::ModelConfig m = Model(false, false);
  Transformer model(*TransformerConfig::FromProto(m));
  SaveModel(m, root + "/ckpt", &model);
  ASSERT_TRUE(ExportHuggingFace(root + "/ckpt", root + "/hf").ok());
  fs::resize_file(root + "/hf/model.safetensors", fs::file_size(root + "/hf/model.safetensors") - 100);
  absl::Status s = ImportHuggingFace(root + "/hf", root + "/back");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("model.safetensors"), std::string::npos) << s;
  EXPECT_FALSE(fs::exists(root + "/back/manifest.json"));
}

}  // namespace
}  // namespace loom::engine
