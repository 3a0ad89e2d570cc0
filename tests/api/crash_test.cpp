// Kills `dlsys server` with SIGKILL while clients log metrics and upload artifacts, restarts it
// on the same data directory, and checks: the database passes SQLite's integrity check, every
// metric batch the server acknowledged is there, every listed artifact is complete and hashes
// to its address, and no partial upload is left behind.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include "api/client.h"
#include "api/http_server.h"
#include "core/file_util.h"
#include "core/sha256.h"
#include "meta/sql_db.h"
#include "testing/free_port.h"

namespace dlsys::api {
namespace {

class ServerProcess {
 public:
  // Starts the server and waits (blocking on its stdout, no polling) for its "listening" line.
  // `nofile` > 0 sets the server's RLIMIT_NOFILE (as `ulimit -n` would).
  ServerProcess(const std::string& dir, int port, rlim_t nofile = 0) {
    int fds[2];
    if (pipe(fds) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      if (nofile > 0) {
        rlimit rl{nofile, nofile};
        setrlimit(RLIMIT_NOFILE, &rl);
      }
      dup2(fds[1], STDOUT_FILENO);
      close(fds[0]);
      close(fds[1]);
      std::string p = std::to_string(port);
      execl(DLSYS_BIN, DLSYS_BIN, "server", "--data-dir", dir.c_str(), "--port", p.c_str(),
            "--access-log", "off", static_cast<char*>(nullptr));
      _exit(127);
    }
    close(fds[1]);
    std::string out;
    char buf[256];
    ssize_t n;
    while (out.find('\n') == std::string::npos && (n = read(fds[0], buf, sizeof buf)) > 0)
      out.append(buf, static_cast<size_t>(n));
    out_fd_ = fds[0];  // kept open: a write to a closed pipe would kill the server (SIGPIPE)
    up_ = out.rfind("dlsys server on", 0) == 0;
    line_ = out;
  }
  const std::string& first_line() const { return line_; }
  ~ServerProcess() { kill(SIGTERM); }
  bool up() const { return up_; }
  void kill(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    int st;
    waitpid(pid_, &st, 0);
    pid_ = -1;
    close(out_fd_);
  }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  bool up_ = false;
  std::string line_;
};

// Opens a TCP connection to the loopback port and leaves it idle; -1 on failure.
int open_idle_connection(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Issue 17: 300 idle connections against a server under `ulimit -n 256` made it unresponsive.
// Now the server caps its connections below the limit and sheds idle ones, so health checks
// keep being answered.
TEST(CrashTest, IdleConnectionsUnderALowFdLimitDoNotStopHealthChecks) {
  std::string dir =
      (std::filesystem::temp_directory_path() / ("dlsys-fds-" + random_hex(6))).string();
  int port = testing::free_loopback_port();
  ServerProcess server(dir, port, 256);
  ASSERT_TRUE(server.up()) << server.first_line();
  EXPECT_NE(server.first_line().find("connections: 176"), std::string::npos)
      << "256 descriptors less 64 reserved and 2 per worker: " << server.first_line();
  std::vector<int> idle;
  for (int i = 0; i < 300; ++i) {
    int fd = open_idle_connection(port);
    ASSERT_GE(fd, 0);
    idle.push_back(fd);
  }
  for (int i = 0; i < 10; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    auto c = HttpConnection::open("127.0.0.1", port);
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    auto r = (*c)->request("GET", "/api/v1/health", "");
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_EQ(r->status, 200);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  }
  for (int fd : idle) close(fd);
  server.kill(SIGTERM);
  std::filesystem::remove_all(dir);
}

TEST(CrashTest, SigkillDuringWritesLosesNothingAcknowledged) {
  std::string dir =
      (std::filesystem::temp_directory_path() / ("dlsys-crash-" + random_hex(6))).string();
  int port = testing::free_loopback_port();
  std::string url = "http://127.0.0.1:" + std::to_string(port);
  int64_t run_id = 0;
  std::vector<int64_t> acked_steps;                  // first step of each acknowledged batch
  std::map<std::string, std::string> acked_uploads;  // path -> sha256
  constexpr int kBatch = 100;
  int64_t next_step = 0;

  for (int round = 0; round < 2; ++round) {
    ServerProcess server(dir, port);
    ASSERT_TRUE(server.up()) << "dlsys server did not start";
    if (run_id == 0) {
      auto c = connect_http(url, "");
      ASSERT_TRUE(c.ok());
      auto r = (*c)->call("POST", "/api/v1/runs", {{"experiment", "crash"}});
      ASSERT_TRUE(r.ok()) << r.status().to_string();
      run_id = (*r)["id"];
    }
    std::atomic<int> batches{0}, uploads{0};
    std::mutex mu;
    std::condition_variable progress;
    std::thread logger([&] {
      auto c = connect_http(url, "");
      if (!c.ok()) return;
      for (;;) {
        int64_t first = next_step;
        json b = {{"metrics", json::array()}};
        for (int i = 0; i < kBatch; ++i)
          b["metrics"].push_back(
              {{"key", "loss"}, {"value", double(first + i)}, {"step", first + i}});
        auto r = (*c)->call("POST", fmt::format("/api/v1/runs/{}/log-batch", run_id), b);
        if (!r.ok()) return;  // the server died
        next_step += kBatch;
        std::lock_guard<std::mutex> g(mu);
        acked_steps.push_back(first);
        ++batches;
        progress.notify_all();
      }
    });
    std::thread uploader([&] {
      auto c = connect_http(url, "");
      if (!c.ok()) return;
      for (int i = 0;; ++i) {
        std::string content = random_hex(1 << 20);  // 2 MiB, unique
        std::string path = fmt::format("round{}/blob{}.bin", round, i);
        std::string f = dir + "-src-" + std::to_string(i);
        if (!write_file_atomic(f, content).ok()) return;
        auto r = (*c)->upload(fmt::format("/api/v1/runs/{}/artifacts/{}", run_id, path), f);
        std::filesystem::remove(f);
        if (!r.ok()) return;
        std::lock_guard<std::mutex> g(mu);
        acked_uploads[path] = sha256_hex(content);
        ++uploads;
        progress.notify_all();
      }
    });
    // Kill once both kinds of writes are flowing (at most a minute).
    {
      std::unique_lock<std::mutex> lock(mu);
      progress.wait_for(lock, std::chrono::seconds(60),
                        [&] { return batches >= 20 && uploads >= 2; });
    }
    server.kill(SIGKILL);
    logger.join();
    uploader.join();
    ASSERT_GE(batches.load(), 20);
    ASSERT_GE(uploads.load(), 2);
  }

  // Restart and check.
  ServerProcess server(dir, port);
  ASSERT_TRUE(server.up());
  {
    auto db = meta::SqlDatabase::open(dir + "/meta.db", 1);
    ASSERT_TRUE(db.ok());
    auto c = (*db)->acquire();
    auto rows = (*c)->query("PRAGMA integrity_check", {});
    ASSERT_TRUE(rows.ok());
    EXPECT_EQ(meta::sql_text((*rows)[0][0]), "ok");
  }
  auto c = connect_http(url, "");
  ASSERT_TRUE(c.ok());
  auto h = (*c)->call("GET", fmt::format("/api/v1/runs/{}/metrics/loss?max_points=100000", run_id));
  ASSERT_TRUE(h.ok());
  ASSERT_LE((*h)["total_points"].get<int64_t>(), 100000) << "every point must come back";
  std::set<int64_t> steps;
  for (auto& p : (*h)["points"]) steps.insert(p["step"].get<int64_t>());
  for (int64_t first : acked_steps)
    for (int i = 0; i < kBatch; ++i)
      ASSERT_TRUE(steps.count(first + i)) << "acknowledged step " << first + i << " is missing";
  auto list = (*c)->call("GET", fmt::format("/api/v1/runs/{}/artifacts", run_id));
  ASSERT_TRUE(list.ok());
  std::map<std::string, std::string> listed;
  for (auto& a : (*list)["artifacts"]) listed[a["path"]] = a["sha256"];
  for (auto& [path, sha] : acked_uploads) {
    ASSERT_TRUE(listed.count(path)) << "acknowledged upload " << path << " is missing";
    EXPECT_EQ(listed[path], sha);
  }
  for (auto& [path, sha] : listed) {
    std::string out = dir + "-check";
    ASSERT_TRUE((*c)->download(fmt::format("/api/v1/runs/{}/artifacts/{}", run_id, path), out).ok())
        << path << " cannot be read back";
    EXPECT_EQ(*sha256_file(out), sha);
    std::filesystem::remove(out);
  }
  // Every stored object hashes to its name; interrupted uploads were cleared.
  for (auto& e : std::filesystem::recursive_directory_iterator(dir + "/objects")) {
    if (!e.is_regular_file()) continue;
    if (e.path().parent_path().filename() == "tmp") {
      ADD_FAILURE() << "leftover partial upload " << e.path();
      continue;
    }
    EXPECT_EQ(*sha256_file(e.path().string()), e.path().filename().string());
  }
  server.kill(SIGTERM);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace dlsys::api
