// The README's walkthrough runs as written: its `sh` blocks marked `<!-- walkthrough -->` are
// executed top to bottom by bash -e in a fresh temporary directory laid out like a checkout,
// against this build, with an empty data directory and a free port.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/file_util.h"

extern char** environ;

namespace fs = std::filesystem;

namespace dlsys {
namespace {

// The file's text, or "" when it cannot be read.
std::string read_text(const fs::path& path) {
  auto t = read_file(path.string());
  return t.ok() ? *t : std::string();
}

// The lines of every ```sh block that directly follows a `<!-- walkthrough -->` line.
std::vector<std::string> walkthrough_blocks(const std::string& readme) {
  std::vector<std::string> blocks;
  std::istringstream in(readme);
  std::string line, block;
  enum { kText, kMarked, kBlock } state = kText;
  while (std::getline(in, line)) {
    if (state == kBlock) {
      if (line == "```") {
        blocks.push_back(block);
        block.clear();
        state = kText;
      } else {
        block += line + "\n";
      }
    } else if (state == kMarked) {
      state = line == "```sh" ? kBlock : kText;
    } else if (line == "<!-- walkthrough -->") {
      state = kMarked;
    }
  }
  return blocks;
}

// A TCP port nothing listens on now (the kernel's pick for port 0).
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

TEST(ReadmeWalkthrough, RunsAsWritten) {
  std::vector<std::string> blocks =
      walkthrough_blocks(read_text(fs::path(DLSYS_SOURCE_DIR) / "README.md"));
  // The walkthrough has five marked blocks; fewer means markers were lost, and the test would
  // check less than the README shows.
  ASSERT_GE(blocks.size(), 5u) << "README.md lost its <!-- walkthrough --> markers";

  // A checkout's layout: examples/ in the working directory, shared/ beside it; HOME with an
  // empty ~/.dlsys; nothing of the caller's dlsys environment.
  fs::path root = fs::temp_directory_path() / ("dlsys_readme_" + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::path work = root / "dlsys";
  fs::create_directories(work);
  fs::create_directories(root / "home");
  fs::create_directory_symlink(fs::absolute(DLSYS_SHARED_DIR), root / "shared");
  fs::create_directory_symlink(fs::path(DLSYS_SOURCE_DIR) / "examples", work / "examples");
  std::string script = "set -x\n";
  for (const std::string& b : blocks) script += b;
  std::ofstream(root / "walkthrough.sh") << script;
  int port = free_port();
  ASSERT_GT(port, 0);

  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string kv = *e;
    std::string k = kv.substr(0, kv.find('='));
    if (k == "HOME" || k == "PATH" || k == "PORT" || k.rfind("DLSYS_", 0) == 0) continue;
    env.push_back(kv);
  }
  const char* path = std::getenv("PATH");
  env.push_back("PATH=" + fs::path(DLSYS_BIN).parent_path().string() + ":" +
                (path ? path : "/usr/bin:/bin"));
  env.push_back("HOME=" + (root / "home").string());
  env.push_back("PORT=" + std::to_string(port));
  std::vector<char*> envp;
  for (std::string& kv : env) envp.push_back(kv.data());
  envp.push_back(nullptr);

  // bash -e in its own process group, so that the server the README starts in the background is
  // stopped with everything else at the end, whatever the script did.
  std::string log = (root / "walkthrough.log").string();
  std::string cmd =
      "cd '" + work.string() + "' && exec bash -e ../walkthrough.sh > '" + log + "' 2>&1";
  const char* argv[] = {"/bin/sh", "-c", cmd.c_str(), nullptr};
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, "/bin/sh", nullptr, &attr, const_cast<char**>(argv), envp.data()), 0);
  posix_spawnattr_destroy(&attr);

  int status = 0;
  bool done = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(240);
  while (!done && std::chrono::steady_clock::now() < deadline) {
    done = ::waitpid(pid, &status, WNOHANG) == pid;
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ::kill(-pid, SIGTERM);  // the process group: the background server, anything left
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ::kill(-pid, SIGKILL);
  if (!done) ::waitpid(pid, &status, 0);
  std::string out = read_text(log);
  fs::remove_all(root);
  ASSERT_TRUE(done) << "the walkthrough ran over 240 s:\n" << out;
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "a README walkthrough command failed (bash -e; the last '+' line is the command):\n"
      << out;
  // What the README's comments say the commands print, where it does not change between runs.
  for (const char* shown :
       {"split: train 1456, validation 341, test 0",
        "trained digits-mlp-dataset: 5 epochs, 115 steps in", "model: runs/digits/model.onnx",
        "tracked as run 1 (http://127.0.0.1:", "logits: f32 [341, 10] -> out/logits.npy",
        "registered digits version 1",
        "\"model_name\":\"digits\",\"model_version\":\"1\",\"outputs\":[{\"data\":["})
    EXPECT_NE(out.find(shown), std::string::npos) << "missing: " << shown << "\n" << out;
}

}  // namespace
}  // namespace dlsys
