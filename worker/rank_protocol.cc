#include "worker/rank_protocol.h"

#include <errno.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace loom {

// Messages above this size are refused: a rank reports small records, and a corrupt length
// must not make the daemon allocate gigabytes.
constexpr uint64_t kMaxMessageBytes = 16 << 20;

absl::StatusOr<RankReporter> RankReporter::FromEnvironment() {
  const char* text = std::getenv(kReportFdEnv);
  if (text == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(kReportFdEnv, " is not set: a rank must be started by loom-worker"));
  }
  int fd = -1;
  if (!absl::SimpleAtoi(text, &fd) || fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(kReportFdEnv, "='", text, "' is not a file descriptor"));
  }
  return RankReporter(fd);
}

RankReporter::RankReporter(int fd) : fd_(fd), mu_(std::make_unique<absl::Mutex>()) {}

RankReporter::RankReporter(RankReporter&& other) noexcept : fd_(other.fd_), mu_(std::move(other.mu_)) {
  other.fd_ = -1;
}

RankReporter& RankReporter::operator=(RankReporter&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = other.fd_;
    mu_ = std::move(other.mu_);
    other.fd_ = -1;
  }
  return *this;
}

RankReporter::~RankReporter() {
  if (fd_ >= 0) close(fd_);
}

absl::Status RankReporter::Send(const loom::v1::WorkerMessage& message) {
  if (message.body_case() != loom::v1::WorkerMessage::kProgress &&
      message.body_case() != loom::v1::WorkerMessage::kCheckpoint) {
    return absl::InvalidArgumentError("a rank may only report progress and checkpoints");
  }
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream raw(&bytes);
    google::protobuf::io::CodedOutputStream out(&raw);
    out.WriteVarint32(static_cast<uint32_t>(message.ByteSizeLong()));
    if (!message.SerializeToCodedStream(&out)) return absl::InternalError("cannot serialise a rank message");
  }
  absl::MutexLock lock(mu_.get());
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = write(fd_, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return absl::UnavailableError(absl::StrCat("writing to the worker daemon: ", std::strerror(errno)));
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

RankMessageReader::RankMessageReader(int fd) : fd_(fd) {}

RankMessageReader::~RankMessageReader() {
  if (fd_ >= 0) close(fd_);
}

absl::StatusOr<bool> RankMessageReader::Fill() {
  if (offset_ > 0 && offset_ == buffer_.size()) {
    buffer_.clear();
    offset_ = 0;
  }
  char chunk[65536];
  while (true) {
    const ssize_t n = read(fd_, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::UnavailableError(absl::StrCat("reading from a rank: ", std::strerror(errno)));
    if (n == 0) return false;
    buffer_.append(chunk, static_cast<size_t>(n));
    return true;
  }
}

absl::StatusOr<std::optional<loom::v1::WorkerMessage>> RankMessageReader::Next() {
  while (true) {
    // Try to decode one message from what is buffered.
    const auto* data = reinterpret_cast<const uint8_t*>(buffer_.data() + offset_);
    const size_t available = buffer_.size() - offset_;
    uint64_t length = 0;
    size_t header = 0;
    bool have_length = false;
    for (size_t i = 0; i < available && i < 10; ++i) {
      length |= static_cast<uint64_t>(data[i] & 0x7f) << (7 * i);
      if ((data[i] & 0x80) == 0) {
        header = i + 1;
        have_length = true;
        break;
      }
    }
    if (!have_length && available >= 10) return absl::DataLossError("a rank wrote a malformed length prefix");
    if (have_length && length > kMaxMessageBytes) {
      return absl::DataLossError(
          absl::StrCat("a rank wrote a message of ", length, " bytes (limit ", kMaxMessageBytes, ")"));
    }
    if (have_length && available >= header + length) {
      loom::v1::WorkerMessage message;
      if (!message.ParseFromArray(data + header, static_cast<int>(length))) {
        return absl::DataLossError("a rank wrote a message that does not parse as loom.v1.WorkerMessage");
      }
      offset_ += header + length;
      return std::optional<loom::v1::WorkerMessage>(std::move(message));
    }
    absl::StatusOr<bool> more = Fill();
    if (!more.ok()) return more.status();
    if (!*more) {
      if (offset_ != buffer_.size())
        return absl::DataLossError("a rank's report stream ended inside a message");
      return std::optional<loom::v1::WorkerMessage>();
    }
  }
}

absl::Status WriteAssignment(const std::string& path, const loom::v1::Assignment& assignment) {
  std::string bytes;
  if (!assignment.SerializeToString(&bytes)) return absl::InternalError("cannot serialise an assignment");
  // It holds the attempt's rendezvous secret: readable by the worker's user alone.
  return WriteFileDurably(path, bytes, 0600);
}

absl::StatusOr<loom::v1::Assignment> ReadAssignment(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  loom::v1::Assignment assignment;
  if (!assignment.ParseFromString(*bytes)) {
    return absl::DataLossError(absl::StrCat(path, " is not a binary loom.v1.Assignment"));
  }
  return assignment;
}

std::string RankName(const loom::v1::RankRef& rank) {
  return absl::StrCat(rank.job_id(), "#", rank.attempt(), "/rank", rank.rank());
}

}  // namespace loom
