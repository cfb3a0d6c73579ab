#include "common/checkpoint_io.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <random>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/confined_read.h"
#include "common/files.h"
#include "common/rank_lifecycle.h"
#include "common/sha256.h"

namespace loom {
namespace fs = std::filesystem;

std::string CheckpointDirName(int64_t step) { return absl::StrFormat("step-%06d", step); }

absl::Status WriteCheckpointDir(const std::string& dir, const std::vector<CheckpointFileData>& files,
                                loom::v1::CheckpointManifest manifest) {
  const fs::path final_dir(dir);
  const fs::path parent = final_dir.parent_path().empty() ? fs::path(".") : final_dir.parent_path();
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", parent.string(), ": ", ec.message()));
  std::random_device random;
  const fs::path tmp =
      parent / absl::StrCat(".tmp-", final_dir.filename().string(), "-", ::getpid(), "-", random());
  fs::create_directory(tmp, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", tmp.string(), ": ", ec.message()));
  auto cleanup_on_error = [&](absl::Status status) {
    fs::remove_all(tmp, ec);
    return status;
  };

  manifest.set_format_version(1);
  if (manifest.created_ms() == 0) {
    manifest.set_created_ms(std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count());
  }
  manifest.clear_files();
  for (const CheckpointFileData& f : files) {
    if (absl::Status s = WriteFileDurably((tmp / f.name).string(), f.bytes); !s.ok())
      return cleanup_on_error(s);
    loom::v1::CheckpointFile& entry = (*manifest.mutable_files())[f.name];
    entry.set_sha256(Sha256Hex(f.bytes));
    entry.set_bytes(static_cast<int64_t>(f.bytes.size()));
    entry.set_role(f.role);
  }
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(manifest, &json, options).ok()) {
    return cleanup_on_error(absl::InternalError("cannot encode the checkpoint manifest"));
  }
  if (absl::Status s = WriteFileDurably((tmp / "manifest.json").string(), json); !s.ok())
    return cleanup_on_error(s);
  if (absl::Status s = SyncDirectory(tmp.string()); !s.ok()) return cleanup_on_error(s);

  // The commit point: a rank of a replaced attempt stops here, before it can touch a directory
  // the current attempt may own (rank_lifecycle.h).
  if (absl::Status s = CheckWriteFence(); !s.ok()) return cleanup_on_error(s);

  // Replace an existing checkpoint of the same step (a rerun after a crash) by moving it aside
  // first; the new one appears with a single rename.
  fs::path old;
  if (fs::exists(final_dir)) {
    old = parent / absl::StrCat(".old-", final_dir.filename().string(), "-", ::getpid(), "-", random());
    fs::rename(final_dir, old, ec);
    if (ec)
      return cleanup_on_error(
          absl::InternalError(absl::StrCat("cannot move aside ", dir, ": ", ec.message())));
  }
  if (absl::Status s = RenameDurably(tmp.string(), final_dir.string()); !s.ok()) return cleanup_on_error(s);
  if (!old.empty()) fs::remove_all(old, ec);
  return absl::OkStatus();
}

absl::Status CheckCheckpointFileName(std::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("the file name is empty");
  if (name.size() > 255) return absl::InvalidArgumentError("the file name is longer than 255 bytes");
  if (name.find('\0') != std::string_view::npos) return absl::InvalidArgumentError("the file name holds a NUL byte");
  const fs::path p{std::string(name)};
  if (p.is_absolute() || name.front() == '/') {
    return absl::InvalidArgumentError("the file name is an absolute path; it must be relative to the checkpoint");
  }
  for (const fs::path& part : p) {
    if (part == "..") return absl::InvalidArgumentError("the file name contains '..'; it must stay inside the checkpoint");
  }
  return absl::OkStatus();
}

absl::StatusOr<loom::v1::CheckpointManifest> ReadCheckpointManifest(const std::string& dir, bool verify) {
  const std::string path = (fs::path(dir) / "manifest.json").string();
  // Confined to the read roots (a rank's; common/confined_read.h), like every file read below.
  absl::StatusOr<std::string> json = ReadConfinedFile(path);
  if (!json.ok()) {
    return absl::Status(json.status().code(), absl::StrCat("checkpoint ", dir, " has no readable manifest.json (",
                                                           json.status().message(), ")"));
  }
  loom::v1::CheckpointManifest manifest;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;  // newer writers may add fields
  if (auto s = google::protobuf::util::JsonStringToMessage(*json, &manifest, options); !s.ok()) {
    return absl::DataLossError(
        absl::StrCat(path, " is not a valid checkpoint manifest: ", s.message().as_string()));
  }
  if (manifest.format_version() != 1) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " has format_version ", manifest.format_version(), "; this Loom reads version 1"));
  }
  // The manifest is untrusted (a plan can name any checkpoint directory): its file names must
  // stay inside the directory, their count is bounded, and it must list the model's tensors.
  if (manifest.files_size() > kMaxCheckpointFiles) {
    return absl::DataLossError(absl::StrCat(path, " lists ", manifest.files_size(), " files; at most ",
                                            kMaxCheckpointFiles, " are allowed"));
  }
  for (const auto& [name, entry] : manifest.files()) {
    if (absl::Status s = CheckCheckpointFileName(name); !s.ok()) {
      return absl::DataLossError(absl::StrCat(path, ": files[\"", name, "\"]: ", s.message(),
                                              " (re-write the checkpoint with Loom)"));
    }
  }
  if (!manifest.files().contains(kCheckpointTensorsFile)) {
    return absl::DataLossError(absl::StrCat(path, " does not list ", kCheckpointTensorsFile,
                                            " in files (not a complete Loom checkpoint)"));
  }
  if (!verify) return manifest;
  for (const auto& [name, entry] : manifest.files()) {
    const std::string file = (fs::path(dir) / name).string();
    absl::StatusOr<ConfinedFile> opened = OpenConfined(file);
    if (!opened.ok() && opened.status().code() == absl::StatusCode::kNotFound) {
      return absl::DataLossError(absl::StrCat("checkpoint ", dir, ": file ", name, " is missing"));
    }
    if (!opened.ok()) return opened.status();
    struct stat st {};
    if (::fstat(opened->fd(), &st) != 0) return ErrnoError("cannot stat", file);
    if (static_cast<int64_t>(st.st_size) != entry.bytes()) {
      return absl::DataLossError(absl::StrCat("checkpoint ", dir, ": file ", name, " has ", st.st_size,
                                              " bytes but the manifest says ", entry.bytes(),
                                              "; the file is damaged: resume from another checkpoint"));
    }
    absl::StatusOr<std::string> digest = Sha256Descriptor(opened->fd(), file);
    if (!digest.ok()) return digest.status();
    if (*digest != entry.sha256()) {
      return absl::DataLossError(absl::StrCat("checkpoint ", dir, ": file ", name, " has sha256 ", *digest,
                                              " but the manifest says ", entry.sha256(),
                                              "; the file is damaged: resume from another checkpoint"));
    }
  }
  return manifest;
}

std::vector<std::string> ListCheckpointDirs(const std::string& stage_dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(stage_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || name.rfind("step-", 0) != 0) continue;
    if (!fs::exists(entry.path() / "manifest.json")) continue;
    char* end = nullptr;
    const long long step = std::strtoll(name.c_str() + 5, &end, 10);
    if (end == nullptr || *end != '\0') continue;
    found.emplace_back(step, entry.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& [step, path] : found) out.push_back(std::move(path));
  return out;
}

}  // namespace loom
