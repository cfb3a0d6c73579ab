#include "worker/engine/parallel/key_value_store.h"

#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/clock.h"
#include "common/files.h"

namespace loom::engine {
namespace {
namespace fs = std::filesystem;

class DirectoryKeyValueStore : public KeyValueStore {
 public:
  explicit DirectoryKeyValueStore(std::string dir) : dir_(std::move(dir)) {}

  absl::Status Set(const std::string& key, const std::string& value) override {
    std::error_code ec;
    fs::create_directories(dir_, ec);
    const std::string path = Path(key);
    const std::string temp = absl::StrCat(path, ".tmp.", ::getpid());
    if (absl::Status s = WriteFileDurably(temp, value); !s.ok()) return s;
    fs::rename(temp, path, ec);
    if (ec)
      return absl::InternalError(absl::StrCat("rendezvous store: cannot rename ", temp, ": ", ec.message()));
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Get(const std::string& key, absl::Duration timeout) override {
    const absl::Time deadline = MonotonicNow() + timeout;
    const std::string path = Path(key);
    absl::Duration pause = absl::Milliseconds(1);
    while (true) {
      if (fs::exists(path)) return ReadFile(path);
      if (MonotonicNow() > deadline) {
        return absl::DeadlineExceededError(absl::StrCat("rendezvous: key '", key, "' did not appear in ",
                                                        dir_, " within ", absl::FormatDuration(timeout),
                                                        " (is every rank of the group running?)"));
      }
      std::this_thread::sleep_for(absl::ToChronoMilliseconds(pause));
      pause = std::min(pause * 2, absl::Milliseconds(50));
    }
  }

 private:
  std::string Path(const std::string& key) const {
    return absl::StrCat(dir_, "/", absl::StrReplaceAll(key, {{"/", "%2F"}}));
  }
  std::string dir_;
};

}  // namespace

std::unique_ptr<KeyValueStore> NewDirectoryKeyValueStore(const std::string& dir) {
  return std::make_unique<DirectoryKeyValueStore>(dir);
}

}  // namespace loom::engine
