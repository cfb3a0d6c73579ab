// Confined reads on a real filesystem: files and directories inside the roots are read, anything
// that resolves outside (a symlink, `..`, a sibling whose name merely starts like a root) is
// refused with an error naming the path, where it led and the roots, and a symlink swapped in
// after a check that passed is caught when the file is opened.
#include "common/confined_read.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "common/checkpoint_io.h"
#include "common/safetensors.h"

namespace loom {
namespace {

namespace fs = std::filesystem;

class ConfinedReadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string dir = (fs::temp_directory_path() / "loom-confined-XXXXXX").string();
    ASSERT_NE(::mkdtemp(dir.data()), nullptr);
    // Resolved, as the coordinator sends roots (the temporary directory may be a symlink).
    base_ = fs::canonical(dir).string();
    root_ = base_ + "/srv/data";
    fs::create_directories(root_ + "/sub");
    fs::create_directories(base_ + "/srv/data2");
    fs::create_directories(base_ + "/outside");
    Write(root_ + "/inside.txt", "inside");
    Write(root_ + "/sub/nested.txt", "nested");
    Write(base_ + "/srv/data2/neighbour.txt", "neighbour");
    Write(base_ + "/outside/secret.txt", "secret");
  }
  void TearDown() override {
    SetProcessReadRoots({});
    fs::remove_all(base_);
  }
  static void Write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }
  std::vector<std::string> roots() const { return {root_}; }

  std::string base_, root_;
};

TEST(IsInsideRoot, ComparesWholeComponents) {
  EXPECT_TRUE(IsInsideRoot("/srv/data", "/srv/data"));
  EXPECT_TRUE(IsInsideRoot("/srv/data/a/b", "/srv/data"));
  EXPECT_TRUE(IsInsideRoot("/srv/data/a", "/srv/data/"));
  EXPECT_FALSE(IsInsideRoot("/srv/data2/a", "/srv/data"));
  EXPECT_FALSE(IsInsideRoot("/srv", "/srv/data"));
  EXPECT_FALSE(IsInsideRoot("/etc/passwd", "/srv/data"));
}

TEST_F(ConfinedReadTest, ReadsAFileInsideARoot) {
  absl::StatusOr<ConfinedFile> file = OpenConfined(root_ + "/sub/nested.txt", roots());
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<std::string> text = ReadAll(*file);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "nested");
  // The root itself is inside.
  EXPECT_TRUE(OpenConfined(root_, roots(), /*directory=*/true).ok());
}

TEST_F(ConfinedReadTest, RefusesAFileOutsideNamingPathResolutionAndRoots) {
  absl::StatusOr<ConfinedFile> file = OpenConfined(base_ + "/outside/secret.txt", roots());
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(
      file.status().message().find(base_ + "/outside/secret.txt is outside the read roots (" + root_ + ")"),
      std::string::npos)
      << file.status();
}

TEST_F(ConfinedReadTest, ASiblingWhoseNameStartsLikeTheRootIsOutside) {
  // /srv/data2 is not inside /srv/data: components, not string prefixes.
  absl::StatusOr<ConfinedFile> file = OpenConfined(base_ + "/srv/data2/neighbour.txt", roots());
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(file.status().message().find("outside"), std::string::npos) << file.status();
  // Nor through `..` from inside.
  EXPECT_FALSE(OpenConfined(root_ + "/../data2/neighbour.txt", roots()).ok());
}

TEST_F(ConfinedReadTest, ASymlinkSwappedInAfterTheCheckIsRefusedWhereItIsRead) {
  const std::string shard = root_ + "/shard-000.bin";
  Write(shard, "tokens");
  // What the coordinator saw at submit: a file inside the root.
  ASSERT_TRUE(OpenConfined(shard, roots()).ok());
  // Swapped afterwards for a symlink to a file outside.
  fs::remove(shard);
  fs::create_symlink(base_ + "/outside/secret.txt", shard);
  absl::StatusOr<ConfinedFile> file = OpenConfined(shard, roots());
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(file.status().message().find(shard + " (which is " + base_ + "/outside/secret.txt) is outside"),
            std::string::npos)
      << file.status();
  // A symlink that stays inside the root is fine.
  fs::remove(shard);
  fs::create_symlink(root_ + "/inside.txt", shard);
  EXPECT_TRUE(OpenConfined(shard, roots()).ok());
}

TEST_F(ConfinedReadTest, DirectoriesAreConfinedToo) {
  fs::create_symlink(base_ + "/outside", root_ + "/src");
  absl::StatusOr<ConfinedFile> dir = OpenConfined(root_ + "/src", roots(), /*directory=*/true);
  ASSERT_FALSE(dir.ok());
  EXPECT_EQ(dir.status().code(), absl::StatusCode::kPermissionDenied);
  // A file reached through the swapped directory is outside as well.
  EXPECT_FALSE(OpenConfined(root_ + "/src/secret.txt", roots()).ok());
  // O_DIRECTORY: a file is not a directory.
  EXPECT_FALSE(OpenConfined(root_ + "/inside.txt", roots(), /*directory=*/true).ok());

  SetProcessReadRoots(roots());
  absl::StatusOr<std::vector<std::string>> names = ListConfinedDirectory(root_);
  ASSERT_TRUE(names.ok()) << names.status();
  EXPECT_EQ(*names, (std::vector<std::string>{"inside.txt", "src", "sub"}));
  absl::StatusOr<std::vector<std::string>> out = ListConfinedDirectory(root_ + "/src");
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("outside"), std::string::npos) << out.status();
}

TEST_F(ConfinedReadTest, AFifoInsideARootIsRefusedWithoutBlocking) {
  // Opening a FIFO for reading blocks until a writer comes; a confined open must neither block
  // nor read it: a plan could otherwise hang a rank on a pipe placed in a root.
  const std::string fifo = root_ + "/pipe";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  absl::StatusOr<ConfinedFile> file = OpenConfined(fifo, roots());
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(file.status().message().find("not a regular file"), std::string::npos) << file.status();
  // A regular file's descriptor is left blocking, as readers expect.
  absl::StatusOr<ConfinedFile> regular = OpenConfined(root_ + "/inside.txt", roots());
  ASSERT_TRUE(regular.ok()) << regular.status();
  EXPECT_EQ(::fcntl(regular->fd(), F_GETFL) & O_NONBLOCK, 0);
}

TEST_F(ConfinedReadTest, NoRootsMeansNoConfinementAndMissingFilesSayNotFound) {
  EXPECT_TRUE(OpenConfined(base_ + "/outside/secret.txt", {}).ok());
  absl::StatusOr<std::string> text = ReadConfinedFile(base_ + "/outside/secret.txt");  // no process roots set
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "secret");
  EXPECT_EQ(OpenConfined(root_ + "/missing", roots()).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ConfinedReadTest, ProcessRootsAreResolvedAndConfineTheCheckpointReaders) {
  // A root named through a symlink matches the real paths the kernel reports.
  fs::create_symlink(root_, base_ + "/alias");
  SetProcessReadRoots({base_ + "/alias"});
  EXPECT_EQ(ProcessReadRoots(), (std::vector<std::string>{root_}));
  EXPECT_TRUE(ReadConfinedFile(root_ + "/inside.txt").ok());
  EXPECT_FALSE(ReadConfinedFile(base_ + "/outside/secret.txt").ok());

  // The checkpoint readers go through it: a model.safetensors swapped for a symlink out is refused.
  const std::string tensors = root_ + "/model.safetensors";
  fs::create_symlink(base_ + "/outside/secret.txt", tensors);
  absl::StatusOr<SafetensorsFile> read = SafetensorsFile::Read(tensors);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kPermissionDenied);
  fs::create_symlink(base_ + "/outside", root_ + "/ckpt");
  Write(base_ + "/outside/manifest.json", "{}");
  absl::StatusOr<loom::v1::CheckpointManifest> manifest = ReadCheckpointManifest(root_ + "/ckpt", false);
  ASSERT_FALSE(manifest.ok());
  EXPECT_NE(manifest.status().message().find("outside the read roots"), std::string::npos)
      << manifest.status();
}

}  // namespace
}  // namespace loom
