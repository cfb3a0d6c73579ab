// Fuzzes the token-shard reader (data/shard.h): the bytes are a shard file; Open checks the
// header and document index, then every id is verified and the first documents are read, which
// must stay inside the mapped file.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "data/shard.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = loom::fuzz::TempDir() + "/shard-00000.bin";
  loom::fuzz::WriteBytes(path, data, size);
  absl::StatusOr<std::unique_ptr<loom::data::ShardReader>> reader = loom::data::ShardReader::Open(path);
  if (!reader.ok()) return 0;
  const loom::data::ShardReader& shard = **reader;
  (void)shard.Verify();
  const int64_t docs = std::min<int64_t>(shard.doc_count(), 64);
  for (int64_t d = 0; d < docs; ++d) {
    std::vector<int32_t> doc = shard.Document(d);
    if (static_cast<int64_t>(doc.size()) != shard.doc_end(d) - shard.doc_begin(d)) std::abort();
  }
  if (shard.token_count() > 0) {
    std::vector<int32_t> out(static_cast<size_t>(std::min<int64_t>(shard.token_count(), 4096)));
    shard.Copy(shard.token_count() - static_cast<int64_t>(out.size()), static_cast<int64_t>(out.size()), out.data());
  }
  return 0;
}
