// The content-addressed object store: dedup, verification on read, crash leftovers.
#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "core/file_util.h"
#include "core/sha256.h"
#include "meta/artifact_store.h"

namespace dlsys::meta {
namespace {

class ArtifactStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("dlsys-objects-" + random_hex(6));
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(ArtifactStoreTest, StoresByContentAndDeduplicates) {
  auto s = ArtifactStore::open(dir_.string());
  ASSERT_TRUE(s.ok());
  auto a = s->put("hello world");
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  // The SHA-256 of "hello world" (sha256sum).
  EXPECT_EQ(a->sha256, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
  EXPECT_EQ(a->size, 11);
  EXPECT_FALSE(a->deduplicated);
  auto b = s->put("hello world");
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(b->deduplicated);
  size_t files = 0;
  for (auto& e : std::filesystem::recursive_directory_iterator(dir_ / "objects"))
    if (e.is_regular_file()) ++files;
  EXPECT_EQ(files, 1u) << "the same content was stored twice";
  auto path = s->open_verified(a->sha256);
  ASSERT_TRUE(path.ok());
  EXPECT_EQ(*read_file(*path), "hello world");
}

TEST_F(ArtifactStoreTest, CorruptedObjectIsNeverServed) {
  auto s = ArtifactStore::open(dir_.string());
  auto a = s->put("precious bytes");
  ASSERT_TRUE(a.ok());
  {
    std::ofstream f(s->object_path(a->sha256), std::ios::binary | std::ios::trunc);
    f << "precious bytez";
  }
  auto r = s->open_verified(a->sha256);
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
  EXPECT_NE(r.status().message().find("corrupted"), std::string::npos);
  EXPECT_EQ(s->open_verified(std::string(64, '0')).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(s->open_verified("../../etc/passwd").status().code(), StatusCode::kInvalidArgument);
}

// When a store opens, an upload whose writer is gone (a crash) is removed, as is one over an hour
// old; another running process's upload in progress on the same data directory stays.
TEST_F(ArtifactStoreTest, InterruptedUploadsAreClearedOnOpen) {
  std::string old_upload, live_upload;
  const std::string tmp = (dir_ / "objects" / "tmp").string();
  {
    auto s = ArtifactStore::open(dir_.string());
    ASSERT_TRUE(s.ok());
    old_upload = s->temp_path();
    live_upload = s->temp_path();  // this process's: running
    std::ofstream(old_upload) << "half an upload";
    std::ofstream(live_upload) << "an upload being written";
    std::filesystem::last_write_time(
        old_upload, std::filesystem::file_time_type::clock::now() - std::chrono::hours(2));
  }
  // A writer that ended: a child that exited, its pid in the name.
  pid_t gone = fork();
  if (gone == 0) _exit(0);
  int st = 0;
  waitpid(gone, &st, 0);
  const std::string dead_upload = tmp + "/upload-" + std::to_string(gone) + "-abc";
  std::ofstream(dead_upload) << "cut short";
  auto s = ArtifactStore::open(dir_.string());
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(std::filesystem::exists(old_upload));
  EXPECT_FALSE(std::filesystem::exists(dead_upload));
  EXPECT_TRUE(std::filesystem::exists(live_upload));
}

}  // namespace
}  // namespace dlsys::meta
