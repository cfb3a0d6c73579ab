// The safetensors format (Hugging Face): an 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the raw
// little-endian tensor bytes. Loom writes F32 (checkpoints) or BF16 (exports, rounded to nearest
// even); it reads F32, BF16 and F16 (converted to F32) so that Hugging Face checkpoints import.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace loom {

struct TensorToWrite {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;  // product(shape) floats
  bool bf16 = false;            // stored as BF16 (round to nearest even; NaN stays NaN), else F32
};

// Bytes `t` takes in the data section.
size_t StoredBytes(const TensorToWrite& t);

// Serialises tensors (header padded to 8 bytes, tensors in the given order).
std::string EncodeSafetensors(const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

// Encodes and writes durably (fsync).
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

class SafetensorsFile {
 public:
  struct Tensor {
    std::string dtype;  // "F32", "BF16", "F16", ...
    std::vector<int64_t> shape;
    size_t begin = 0, end = 0;  // byte range in the data section
    int64_t elements() const;
  };

  // Reads and checks the whole file: the header parses, offsets lie inside the data and match
  // dtype x shape. Errors (DATA_LOSS) name the file and what is wrong.
  static absl::StatusOr<SafetensorsFile> Read(const std::string& path);
  static absl::StatusOr<SafetensorsFile> Parse(std::string bytes, const std::string& name);

  const std::map<std::string, Tensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool Has(const std::string& name) const { return tensors_.contains(name); }

  // Copies a tensor into `out` as F32, checking that its shape is `expected_shape`.
  absl::Status ReadF32(const std::string& name, const std::vector<int64_t>& expected_shape, float* out) const;
  // Reads an I32 or I64 tensor of any shape into 32-bit integers (fixtures, token data).
  absl::StatusOr<std::vector<int32_t>> ReadI32(const std::string& name) const;

 private:
  std::string path_;
  std::string bytes_;
  size_t data_start_ = 0;
  std::map<std::string, Tensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace loom
