#include "common/checkpoint_io.h"

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "common/files.h"

namespace loom {
namespace {
namespace fs = std::filesystem;

std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/ckpt_io_" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

loom::v1::CheckpointManifest Manifest(int64_t step) {
  loom::v1::CheckpointManifest m;
  m.set_stage("core");
  m.set_step(step);
  m.set_tokens(step * 1000);
  m.set_data_state(std::string("\x00\x01\xff", 3));
  m.mutable_model()->set_layers(2);
  return m;
}

TEST(CheckpointIo, WritesVerifiesAndReadsBack) {
  const std::string root = FreshDir("roundtrip");
  const std::string dir = root + "/" + CheckpointDirName(12);
  ASSERT_TRUE(
      WriteCheckpointDir(
          dir, {{"model.safetensors", "model", "weights"}, {"optimizer.safetensors", "optimizer", "moments"}},
          Manifest(12))
          .ok());
  EXPECT_EQ(fs::path(dir).filename(), "step-000012");
  auto m = ReadCheckpointManifest(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->step(), 12);
  EXPECT_EQ(m->data_state(), std::string("\x00\x01\xff", 3));
  EXPECT_EQ(m->files().at("model.safetensors").role(), "model");
  EXPECT_EQ(m->files().at("optimizer.safetensors").bytes(), 7);
  // No temporary directory is left behind.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(root)) entries += e.path().filename().string()[0] == '.';
  EXPECT_EQ(entries, 0);
}

TEST(CheckpointIo, DamagedFileIsRefusedNamingTheFile) {
  const std::string dir = FreshDir("damaged") + "/step-000001";
  ASSERT_TRUE(WriteCheckpointDir(dir, {{"model.safetensors", "model", "weights!"}}, Manifest(1)).ok());
  ASSERT_TRUE(WriteFileDurably(dir + "/model.safetensors", "weightz!").ok());  // same size, other bytes
  auto m = ReadCheckpointManifest(dir);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(m.status().message().find("model.safetensors has sha256"), std::string::npos) << m.status();
  ASSERT_TRUE(WriteFileDurably(dir + "/model.safetensors", "short").ok());
  EXPECT_NE(ReadCheckpointManifest(dir).status().message().find("has 5 bytes but the manifest says 8"),
            std::string::npos);
  fs::remove(dir + "/model.safetensors");
  EXPECT_NE(ReadCheckpointManifest(dir).status().message().find("model.safetensors is missing"),
            std::string::npos);
  // Without verification the manifest still reads (for listing).
  EXPECT_TRUE(ReadCheckpointManifest(dir, /*verify=*/false).ok());
}

TEST(CheckpointIo, ReplacingAStepAndListingSkipsInterruptedWrites) {
  const std::string root = FreshDir("list");
  for (int64_t step : {30, 4, 100}) {
    ASSERT_TRUE(
        WriteCheckpointDir(root + "/" + CheckpointDirName(step), {{"a", "model", "x"}}, Manifest(step)).ok());
  }
  ASSERT_TRUE(
      WriteCheckpointDir(root + "/" + CheckpointDirName(30), {{"a", "model", "second"}}, Manifest(30)).ok());
  EXPECT_EQ(*ReadFile(root + "/step-000030/a"), "second");
  fs::create_directories(root + "/.tmp-step-000200-1-2");  // a writer that crashed
  fs::create_directories(root + "/step-000300");           // no manifest: never completed
  const auto dirs = ListCheckpointDirs(root);
  ASSERT_EQ(dirs.size(), 3u);
  EXPECT_EQ(fs::path(dirs[0]).filename(), "step-000004");
  EXPECT_EQ(fs::path(dirs[2]).filename(), "step-000100");
}

TEST(CheckpointIo, MissingManifestIsNotFound) {
  EXPECT_EQ(ReadCheckpointManifest("/nonexistent/step-000001").status().code(), absl::StatusCode::kNotFound);
}

// A manifest is untrusted: a file name that leaves the directory, or a manifest without the model's
// tensors, is refused naming the manifest and the entry.
TEST(CheckpointIo, ManifestFileNamesMustStayInsideAndListTheTensors) {
  const std::string dir = FreshDir("names") + "/step-000001";
  ASSERT_TRUE(WriteCheckpointDir(dir, {{"model.safetensors", "model", "weights"}}, Manifest(1)).ok());
  ASSERT_TRUE(ReadCheckpointManifest(dir).ok());
  const std::string manifest_path = dir + "/manifest.json";
  auto original = ReadFile(manifest_path);
  ASSERT_TRUE(original.ok());
  auto with_name = [&](const std::string& from, const std::string& to) {
    std::string json = *original;
    const size_t at = json.find(from);
    EXPECT_NE(at, std::string::npos);
    json.replace(at, from.size(), to);
    EXPECT_TRUE(WriteFileDurably(manifest_path, json).ok());
    return ReadCheckpointManifest(dir, /*verify=*/false).status();
  };
  for (const std::string bad : {"../../etc/passwd", "/etc/passwd", "a/../../b", ""}) {
    const absl::Status s = with_name("\"model.safetensors\"", "\"" + bad + "\"");
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << bad << ": " << s;
    EXPECT_NE(s.message().find("manifest.json"), std::string::npos) << s;
  }
  EXPECT_NE(with_name("\"model.safetensors\"", "\"../x\"").message().find("'..'"), std::string::npos);
  EXPECT_NE(with_name("\"model.safetensors\"", "\"/abs\"").message().find("absolute"), std::string::npos);
  const absl::Status missing = with_name("\"model.safetensors\"", "\"weights.bin\"");
  EXPECT_NE(missing.message().find("does not list model.safetensors"), std::string::npos) << missing;
  EXPECT_TRUE(with_name("\"model.safetensors\"", "\"model.safetensors\"").ok());
  EXPECT_TRUE(CheckCheckpointFileName("sub/dir/file..bin").ok());
}

}  // namespace
}  // namespace loom
