// Fuzzes the safetensors reader (common/safetensors.h): Parse checks the header and offsets; then
// every tensor it accepted is read back as F32 or I32, which must stay inside the bytes.
#include <cstdint>
#include <string>
#include <vector>

#include "common/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<loom::SafetensorsFile> file =
      loom::SafetensorsFile::Parse(std::string(reinterpret_cast<const char*>(data), size), "fuzz.safetensors");
  if (!file.ok()) return 0;
  for (const auto& [name, tensor] : file->tensors()) {
    const int64_t elements = tensor.elements();
    // Parse checked begin/end against the data; a tensor's elements fit in its bytes.
    if (elements < 0 || static_cast<uint64_t>(elements) > size) continue;
    if (tensor.dtype == "F32" || tensor.dtype == "BF16" || tensor.dtype == "F16") {
      std::vector<float> out(static_cast<size_t>(elements));
      (void)file->ReadF32(name, tensor.shape, out.data());
    } else {
      (void)file->ReadI32(name);
    }
  }
  return 0;
}
