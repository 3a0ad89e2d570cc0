// Job processes (jobs/child_process.h) with real programs: exit codes and signals, the log,
// the environment, SIGTERM then SIGKILL to the whole group, the memory limit, a missing
// program, and no process left behind.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/file_util.h"
#include "jobs/child_process.h"
#include "jobs/local_executor.h"

namespace dlsys::jobs {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

class ChildProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dlsys-child-" + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  ProcessSpec spec(std::vector<std::string> argv) {
    ProcessSpec s;
    s.argv = std::move(argv);
    s.log_path = (dir_ / "job.log").string();
    return s;
  }
  std::string log() {
    std::ifstream f(dir_ / "job.log");
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  fs::path dir_;
};

TEST_F(ChildProcessTest, ExitCodeOutputAndEnvironment) {
  ProcessSpec s =
      spec({"sh", "-c", "echo out $OMP_NUM_THREADS $DLSYS_RUN_ID; echo err >&2; exit 3"});
  s.threads = 3;
  s.env["DLSYS_RUN_ID"] = "17";
  auto p = ChildProcess::start(s);
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  auto e = (*p)->wait_for(milliseconds(10000));
  ASSERT_TRUE(e.has_value());
  EXPECT_TRUE(e->exited);
  EXPECT_EQ(e->code, 3);
  EXPECT_EQ(e->describe(), "exit code 3");
  EXPECT_NE(log().find("out 3 17\nerr\n"), std::string::npos) << log();
}

TEST_F(ChildProcessTest, StopSendsTermToTheGroupThenKill) {
  auto p = ChildProcess::start(spec({"sh", "-c", "sleep 60 & wait"}));
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE((*p)->wait_for(milliseconds(50)).has_value()) << "it should still run";
  auto t0 = std::chrono::steady_clock::now();
  ExitStatus e = (*p)->stop(milliseconds(5000));
  EXPECT_FALSE(e.exited);
  EXPECT_EQ(e.signal, SIGTERM) << e.describe();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(4000));
  // A program that ignores SIGTERM (its children inherit that) is killed after the grace.
  auto q = ChildProcess::start(spec({"sh", "-c", "trap '' TERM; sleep 60"}));
  ASSERT_TRUE(q.ok());
  // Let the shell install its trap before the signal arrives.
  ASSERT_FALSE((*q)->wait_for(milliseconds(200)).has_value());
  t0 = std::chrono::steady_clock::now();
  e = (*q)->stop(milliseconds(300));
  EXPECT_EQ(e.signal, SIGKILL) << e.describe();
  EXPECT_NE(e.describe().find("SIGKILL"), std::string::npos) << e.describe();
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, milliseconds(300));
  EXPECT_LT(took, milliseconds(5000));
}

TEST_F(ChildProcessTest, TheMemoryLimitStopsAnAllocationPastIt) {
  ProcessSpec s = spec({"python3", "-c", "x = bytearray(1 << 29)"});
  s.memory_bytes = 256 << 20;
  auto p = ChildProcess::start(s);
  ASSERT_TRUE(p.ok());
  auto e = (*p)->wait_for(milliseconds(30000));
  ASSERT_TRUE(e.has_value());
  EXPECT_FALSE(e->ok()) << "a 512 MiB allocation under a 256 MiB limit must fail";
  EXPECT_NE(log().find("MemoryError"), std::string::npos) << log();
  // Without the limit the same program succeeds.
  s.memory_bytes = 0;
  auto q = ChildProcess::start(s);
  ASSERT_TRUE(q.ok());
  auto f = (*q)->wait_for(milliseconds(30000));
  ASSERT_TRUE(f.has_value());
  EXPECT_TRUE(f->ok()) << f->describe() << "\n" << log();
}

TEST_F(ChildProcessTest, AMissingProgramExits127AndNothingOutlivesItsOwner) {
  auto p = ChildProcess::start(spec({"no-such-program-dlsys"}));
  ASSERT_TRUE(p.ok());
  auto e = (*p)->wait_for(milliseconds(10000));
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code, 127);
  EXPECT_NE(log().find("cannot start the job's program"), std::string::npos) << log();
  EXPECT_EQ(ChildProcess::start(spec({})).status().code(), StatusCode::kInvalidArgument);
  ProcessSpec bad = spec({"true"});
  bad.log_path = (dir_ / "missing-dir" / "job.log").string();
  EXPECT_EQ(ChildProcess::start(bad).status().code(), StatusCode::kIOError);
  pid_t pid = 0;
  {
    auto q = ChildProcess::start(spec({"sleep", "60"}));
    ASSERT_TRUE(q.ok());
    pid = (*q)->pid();
    EXPECT_EQ(kill(pid, 0), 0);
  }
  // Destroyed while running: killed and reaped.
  EXPECT_EQ(kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
}

// recover() ends what is left of an attempt by its process group, but only in the boot the
// attempt ran in: after a reboot its pid may be another program's.
TEST_F(ChildProcessTest, ALeftoverIsKilledOnlyInTheBootItRanIn) {
  LocalExecutor local(dir_.string(), "dlsys-job-run");
  auto other = ChildProcess::start(spec({"sleep", "60"}));  // a group that is not the job's now
  ASSERT_TRUE(other.ok());
  meta::Job j;
  j.id = 7;
  j.attempts = 2;
  j.pid = (*other)->pid();
  fs::create_directories(dir_ / "7");
  ASSERT_TRUE(write_file_atomic(local.boot_file(j), "an-earlier-boot").ok());
  local.end_leftover(j, true);
  EXPECT_FALSE((*other)->wait_for(milliseconds(200)).has_value())
      << "a process of another boot's pid was killed";
  auto boot = read_file("/proc/sys/kernel/random/boot_id");
  ASSERT_TRUE(boot.ok());
  ASSERT_TRUE(write_file_atomic(local.boot_file(j), boot->substr(0, boot->find('\n'))).ok());
  local.end_leftover(j, false);
  EXPECT_FALSE((*other)->wait_for(milliseconds(100)).has_value()) << "another host's attempt";
  local.end_leftover(j, true);
  auto e = (*other)->wait_for(milliseconds(5000));
  ASSERT_TRUE(e.has_value()) << "this boot's leftover is killed";
  EXPECT_EQ(e->signal, SIGKILL);
}

}  // namespace
}  // namespace dlsys::jobs
