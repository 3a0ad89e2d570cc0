// SIGKILLs `dlsys data push` at several points of a multi-shard push and checks that the store
// never shows a half-written version: every visible version has all its shards, each decodes
// and hashes to its name, and the row counts add up. A push after the kills completes. The
// kill points follow the child's own progress lines (no timing).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/file_util.h"
#include "core/sha256.h"
#include "data/dataset_store.h"
#include "data/shard.h"

namespace dlsys::data {
namespace {

namespace fs = std::filesystem;

enum class Ended { kFinished, kKilled, kOther };

// Runs `dlsys data push` and sends SIGKILL right after it printed `lines` progress lines (-1:
// never). Returns how the child ended: kKilled only when the SIGKILL is what ended it, i.e. it
// landed while the push was still running; *seen counts the progress lines read.
Ended push_and_kill(const std::string& home, const std::string& csv, int lines, int* seen) {
  *seen = 0;
  int fds[2];
  if (pipe(fds) != 0) return Ended::kOther;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    execl(DLSYS_BIN, DLSYS_BIN, "data", "push", csv.c_str(), "--name", "big", "--data-dir",
          home.c_str(), "--shard-rows", "100000", "--json", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fds[1]);
  FILE* out = fdopen(fds[0], "r");
  char buf[4096];
  while (std::fgets(buf, sizeof buf, out)) {
    if (std::string(buf).find("\"progress\"") != std::string::npos && ++*seen == lines) {
      kill(pid, SIGKILL);
      break;
    }
  }
  fclose(out);
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) return Ended::kKilled;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return Ended::kFinished;
  return Ended::kOther;
}

// Checks every visible version of "big"; returns how many there are.
int check_store(const std::string& home) {
  auto store = DatasetStore::open(home + "/datasets");
  EXPECT_TRUE(store.ok());
  auto vs = (*store)->versions("big");
  if (!vs.ok()) return 0;  // no version yet
  for (const auto& v : *vs) {
    int64_t rows = 0;
    for (const auto& s : v.manifest["shards"]) {
      std::string id = s["id"];
      auto bytes = read_file((*store)->shard_path(id));
      EXPECT_TRUE(bytes.ok()) << v.label() << " lists shard " << id << " that is not stored";
      if (!bytes.ok()) continue;
      EXPECT_EQ(sha256_hex(*bytes), id);
      auto b = decode_shard(*bytes, {}, id);
      EXPECT_TRUE(b.ok()) << b.status().to_string();
      if (b.ok()) rows += b->rows;
    }
    EXPECT_EQ(rows, v.manifest["rows"].get<int64_t>()) << v.label();
  }
  return static_cast<int>(vs->size());
}

TEST(PushCrash, KilledPushesLeaveNoHalfVersion) {
  char tmpl[] = "/tmp/dlsys-crash-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  std::string csv = dir + "/big.csv";
  {
    std::ofstream f(csv);
    f << "a,b,c,d\n";
    for (int i = 0; i < 600000; ++i)
      f << i << "," << i * 0.5 << "," << (i % 7) << ",x" << i << "\n";
  }
  std::string home = dir + "/home";
  // Six shards, one progress line each: kill after the first, third and sixth batch (the last
  // while the final shard is staged and the shards are published, before the commit). The push
  // prints each line before it goes on, so the kill lands mid-push; a push that finished anyway
  // would check nothing, and fails the test.
  for (int lines : {1, 3, 6}) {
    int seen = 0;
    Ended e = push_and_kill(home, csv, lines, &seen);
    EXPECT_EQ(seen, lines) << "the push printed fewer progress lines than expected";
    EXPECT_EQ(e, Ended::kKilled) << "the SIGKILL after " << lines
                                 << " progress lines did not end the push mid-way";
    EXPECT_EQ(check_store(home), 0) << "killed after " << lines << " progress lines";
  }
  int seen = 0;
  EXPECT_EQ(push_and_kill(home, csv, -1, &seen), Ended::kFinished);
  EXPECT_EQ(seen, 6);
  EXPECT_GE(check_store(home), 1);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace dlsys::data
