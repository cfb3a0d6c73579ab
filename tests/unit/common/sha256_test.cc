#include "common/sha256.h"

#include <fstream>

#include <gtest/gtest.h>

namespace loom {
namespace {

TEST(Sha256, KnownAnswers) {
  // FIPS 180-2 test vectors.
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Sha256 h;
  for (int i = 0; i < 1000; ++i) h.Update(std::string(1000, 'a'));  // one million 'a'
  EXPECT_EQ(h.HexDigest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, FileMatchesBytesAndMissingFileIsNamed) {
  const std::string path = ::testing::TempDir() + "/sha256_test.bin";
  std::string bytes(3 << 20, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 31);
  std::ofstream(path, std::ios::binary) << bytes;
  EXPECT_EQ(*Sha256File(path), Sha256Hex(bytes));
  const auto missing = Sha256File("/nonexistent/shard.safetensors");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("/nonexistent/shard.safetensors"), std::string::npos);
}

}  // namespace
}  // namespace loom
