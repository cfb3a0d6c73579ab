// Fuzzes the checkpoint manifest reader (common/checkpoint_io.h): the bytes are a checkpoint
// directory's manifest.json beside one small data file, read with verification (sizes and
// sha256 of the listed files), as resuming does.
#include <cstdint>
#include <string>

#include "common/checkpoint_io.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    const std::string d = loom::fuzz::TempDir() + "/step-000001";
    std::filesystem::create_directories(d);
    // 5 bytes, sha256 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824 ("hello").
    loom::fuzz::WriteBytes(d + "/model.safetensors", reinterpret_cast<const uint8_t*>("hello"), 5);
    return d;
  }();
  loom::fuzz::WriteBytes(dir + "/manifest.json", data, size);
  (void)loom::ReadCheckpointManifest(dir, /*verify=*/true);
  (void)loom::ReadCheckpointManifest(dir, /*verify=*/false);
  return 0;
}
