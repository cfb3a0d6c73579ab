#include "worker/daemon/rank_logs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "worker/rank_protocol.h"

namespace loom::worker {

void RankLogs::Remember(const std::string& name, const std::string& path) {
  absl::MutexLock lock(&mu_);
  if (paths_.emplace(name, path).second) order_.push_back(name);
  while (order_.size() > kMaxRanks) {
    paths_.erase(order_.front());
    order_.pop_front();
  }
}

loom::v1::LogChunk RankLogs::Read(const loom::v1::LogRequest& request) {
  loom::v1::LogChunk chunk;
  chunk.set_request_id(request.request_id());
  const std::string name = RankName(request.rank());
  std::string path;
  {
    absl::MutexLock lock(&mu_);
    auto it = paths_.find(name);
    if (it == paths_.end()) {
      chunk.set_error(absl::StrCat("this worker has no log of ", name,
                                   " (it did not start that rank, or restarted since)"));
      return chunk;
    }
    path = it->second;
  }
  // O_NOFOLLOW: the file this daemon created, not whatever a link there would point to.
  const int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    chunk.set_error(absl::StrCat("cannot open the log of ", name, ": ", std::strerror(errno)));
    return chunk;
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    chunk.set_error(absl::StrCat("the log of ", name, " is not a regular file"));
    return chunk;
  }
  const int64_t size = st.st_size;
  const int64_t max = request.max_bytes() > 0 ? std::min(request.max_bytes(), kMaxLogChunk) : kMaxLogChunk;
  int64_t offset = request.offset() < 0 ? std::max<int64_t>(0, size + request.offset()) : std::min(request.offset(), size);
  const int64_t want = std::min(max, size - offset);
  std::string data(static_cast<size_t>(want), '\0');
  int64_t got = 0;
  while (got < want) {
    const ssize_t n = pread(fd, data.data() + got, static_cast<size_t>(want - got), offset + got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += n;
  }
  close(fd);
  data.resize(static_cast<size_t>(got));
  chunk.set_data(std::move(data));
  chunk.set_offset(offset);
  chunk.set_size(size);
  return chunk;
}

}  // namespace loom::worker
