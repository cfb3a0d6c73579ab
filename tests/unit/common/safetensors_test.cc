#include "common/safetensors.h"

#include <cmath>
#include <cstring>
#include <limits>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

namespace loom {
namespace {

TEST(Safetensors, RoundTripKeepsBitsShapesAndMetadata) {
  const std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f};
  const std::vector<float> b = {42.0f};
  const std::string bytes = EncodeSafetensors(
      {{"model.embed_tokens.weight", {2, 3}, a.data()}, {"scalar", {1}, b.data()}}, {{"step", "7"}});
  // 8-byte length, then a JSON header padded to 8 bytes, then the data.
  uint64_t length;
  std::memcpy(&length, bytes.data(), 8);
  EXPECT_EQ(length % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + length + (a.size() + b.size()) * 4);

  auto file = SafetensorsFile::Parse(bytes, "mem");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->metadata().at("step"), "7");
  ASSERT_TRUE(file->Has("scalar"));
  std::vector<float> out(6);
  ASSERT_TRUE(file->ReadF32("model.embed_tokens.weight", {2, 3}, out.data()).ok());
  EXPECT_EQ(0, std::memcmp(out.data(), a.data(), 24));
  EXPECT_EQ(file->ReadF32("model.embed_tokens.weight", {3, 2}, out.data()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(file->ReadF32("nope", {1}, out.data()).code(), absl::StatusCode::kNotFound);
}

TEST(Safetensors, ReadsBf16AndF16AsWrittenByOtherTools) {
  // {"x":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"y":{"dtype":"F16","shape":[3],"data_offsets":[4,10]}}
  const std::string header =
      R"({"x":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"y":{"dtype":"F16","shape":[3],"data_offsets":[4,10]}})";
  std::string bytes(8, '\0');
  const uint64_t length = header.size();
  std::memcpy(bytes.data(), &length, 8);
  bytes += header;
  const uint16_t data[] = {0x3fc0, 0xc000,           // bf16 1.5, -2
                           0x3c00, 0x0001, 0xfc00};  // f16 1, smallest subnormal, -inf
  bytes.append(reinterpret_cast<const char*>(data), sizeof(data));
  auto file = SafetensorsFile::Parse(bytes, "hf");
  ASSERT_TRUE(file.ok()) << file.status();
  float x[2], y[3];
  ASSERT_TRUE(file->ReadF32("x", {2}, x).ok());
  ASSERT_TRUE(file->ReadF32("y", {3}, y).ok());
  EXPECT_EQ(x[0], 1.5f);
  EXPECT_EQ(x[1], -2.0f);
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_FLOAT_EQ(y[1], 5.9604645e-8f);
  EXPECT_TRUE(std::isinf(y[2]) && y[2] < 0);
}

TEST(Safetensors, Bf16IsWrittenRoundedToNearestEvenAndReadsBack) {
  // 1 + 2^-8 is exactly half-way between two bf16 values (1 and 1 + 2^-7): it goes to the even one,
  // 1; 1 + 3 * 2^-8 goes up to 1 + 2^-6 (even); just above half rounds up; NaN stays NaN.
  const std::vector<float> v = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-8f + 0x1p-20f, -3.5f,
                                std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()};
  TensorToWrite t{"w", {2, 3}, v.data(), /*bf16=*/true};
  EXPECT_EQ(StoredBytes(t), 12u);
  auto file = SafetensorsFile::Parse(EncodeSafetensors({t}), "mem");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->tensors().at("w").dtype, "BF16");
  std::vector<float> out(6);
  ASSERT_TRUE(file->ReadF32("w", {2, 3}, out.data()).ok());
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], 1.0f + 0x1p-6f);
  EXPECT_EQ(out[2], 1.0f + 0x1p-7f);
  EXPECT_EQ(out[3], -3.5f);
  EXPECT_TRUE(std::isnan(out[4]));
  EXPECT_TRUE(std::isinf(out[5]));
}

TEST(Safetensors, DamagedFilesAreRefusedWithTheReason) {
  const std::vector<float> a = {1, 2, 3, 4};
  const std::string good = EncodeSafetensors({{"w", {4}, a.data()}});
  std::string truncated = good.substr(0, good.size() - 3);
  EXPECT_NE(SafetensorsFile::Parse(truncated, "f.safetensors").status().message().find("outside the file"),
            std::string::npos);
  std::string bad_json = good;
  bad_json[9] = '#';
  EXPECT_EQ(SafetensorsFile::Parse(bad_json, "f.safetensors").status().code(), absl::StatusCode::kDataLoss);
  std::string huge = good;
  huge[7] = 0x7f;
  EXPECT_NE(SafetensorsFile::Parse(huge, "f.safetensors").status().message().find("f.safetensors"),
            std::string::npos);
  EXPECT_FALSE(SafetensorsFile::Parse("abc", "tiny").ok());
}

// A header whose shape's element count x dtype size wraps around 2^64 (here to 0 bytes, which
// matches its empty data_offsets) must be refused, not read as an empty tensor of that shape.
TEST(Safetensors, ShapesWhoseSizeOverflowsAreRefused) {
  auto parse = [](const std::string& header, size_t data_bytes) {
    std::string bytes(8, '\0');
    const uint64_t length = header.size();
    std::memcpy(bytes.data(), &length, 8);
    bytes += header;
    bytes.append(data_bytes, '\0');
    return SafetensorsFile::Parse(bytes, "crafted.safetensors");
  };
  for (const std::string shape : {"[4294967296,4294967296]", "[4294967296,1073741824,4]",
                                  "[9223372036854775807,2]"}) {
    auto file = parse(absl::StrCat(R"({"w":{"dtype":"F32","shape":)", shape, R"(,"data_offsets":[0,0]}})"), 0);
    ASSERT_FALSE(file.ok()) << shape;
    EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(file.status().message().find("more elements than the file holds"), std::string::npos)
        << file.status();
  }
  // A zero dimension beside huge ones is an empty tensor, and fine.
  auto empty = parse(R"({"w":{"dtype":"F32","shape":[9223372036854775807,0],"data_offsets":[0,0]}})", 0);
  ASSERT_TRUE(empty.ok()) << empty.status();
  // Offsets past the end, or reversed, are refused.
  EXPECT_FALSE(parse(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,0]}})", 4).ok());
  EXPECT_FALSE(parse(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4).ok());
}

}  // namespace
}  // namespace loom
