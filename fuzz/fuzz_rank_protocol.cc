// Fuzzes the rank -> daemon protocol (worker/rank_protocol.h): the bytes are what a rank wrote to
// its report pipe, read by RankMessageReader until the end of the stream or an error; and the
// same bytes as an assignment.pb file read by ReadAssignment.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "fuzz/fuzz_util.h"
#include "worker/rank_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A memory file stands in for the pipe: read() returns its bytes, then end of file.
  const int fd = memfd_create("loom-fuzz-rank", 0);
  if (fd < 0) std::abort();
  for (size_t done = 0; done < size;) {
    const ssize_t n = write(fd, data + done, size - done);
    if (n <= 0) std::abort();
    done += static_cast<size_t>(n);
  }
  if (lseek(fd, 0, SEEK_SET) != 0) std::abort();
  {
    loom::RankMessageReader reader(fd);  // owns and closes fd
    // Each message takes at least one byte, so the stream ends within size + 1 calls.
    for (size_t i = 0; i <= size + 1; ++i) {
      absl::StatusOr<std::optional<loom::v1::WorkerMessage>> message = reader.Next();
      if (!message.ok() || !message->has_value()) break;
      if (i == size + 1) std::abort();  // more messages than bytes: the reader is looping
    }
  }
  static const std::string path = loom::fuzz::TempDir() + "/assignment.pb";
  loom::fuzz::WriteBytes(path, data, size);
  (void)loom::ReadAssignment(path);
  return 0;
}
