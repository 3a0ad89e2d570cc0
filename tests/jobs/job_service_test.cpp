// The training service's loop (jobs/job_service.h) on a real metadata store (SQLite) and real
// processes: command jobs succeed, fail after their retries, run within the capacity, get their
// environment and log, are cancelled while running, and survive a restart of the service.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "jobs/job_service.h"
#include "jobs/job_spec.h"

namespace dlsys::jobs {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

const meta::Principal kAlice{"alice", meta::Role::kEditor};

class JobServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dlsys-jobsvc-" + std::to_string(getpid()));
    fs::create_directories(dir_);
    auto s = meta::MetaStore::open((dir_ / "meta.db").string(), 4);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    store_ = std::move(s).value();
    options_.work_dir = (dir_ / "jobs").string();
    options_.scheduler.threads = 2;
    options_.retry_backoff_ms = 0;
    options_.stop_grace = milliseconds(2000);
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }
  // Submits a command job as the CLI will: the spec parsed, then queued.
  int64_t submit(const std::string& yaml) {
    auto spec = parse_job_spec(yaml, "job.yaml");
    EXPECT_TRUE(spec.ok()) << spec.status().to_string();
    meta::NewJob n{spec->name,       job_kind_name(spec->kind), to_json(*spec),
                   spec->priority,   spec->resources.threads,   spec->resources.memory_bytes,
                   spec->max_retries};
    auto j = store_->jobs().submit(n, kAlice);
    EXPECT_TRUE(j.ok()) << j.status().to_string();
    return j.ok() ? j->id : 0;
  }
  // Runs the service until no job is queued or running, or 20 s pass; returns the most jobs
  // seen running at once.
  size_t run_until_settled(JobService& svc) {
    size_t most = 0;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      auto started = svc.tick();
      EXPECT_TRUE(started.ok()) << started.status().to_string();
      most = std::max(most, svc.running());
      auto queued = store_->jobs().list("QUEUED", "", 10, "");
      if (svc.running() == 0 && queued.ok() && queued->items.empty()) return most;
      svc.wait(milliseconds(200));
    }
    ADD_FAILURE() << "jobs did not settle in 20 s";
    return most;
  }
  std::string read(const fs::path& p) {
    std::ifstream f(p);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  meta::Job job(int64_t id) { return store_->jobs().get(id).value(); }

  fs::path dir_;
  std::unique_ptr<meta::MetaStore> store_;
  JobServiceOptions options_;
};

TEST_F(JobServiceTest, CommandJobsSucceedFailAfterRetriesAndStayWithinCapacity) {
  int64_t ok = submit(
      "kind: command\ncommand: [sh, -c, 'echo job $DLSYS_JOB_ID attempt $DLSYS_ATTEMPT "
      "threads $OMP_NUM_THREADS; echo done > $DLSYS_OUTPUT_DIR/result']\n");
  int64_t flaky = submit("kind: command\ncommand: [sh, -c, 'exit 3']\nmax_retries: 2\n");
  std::vector<int64_t> sleepers;
  for (int i = 0; i < 3; ++i)
    sleepers.push_back(submit("kind: command\ncommand: [sleep, '0.3']\n"));
  JobService svc(*store_, options_);
  ASSERT_TRUE(svc.recover().ok());
  size_t most = run_until_settled(svc);
  EXPECT_LE(most, 2u) << "2 threads of capacity, 1 thread per job";
  meta::Job a = job(ok);
  EXPECT_EQ(a.state, "SUCCEEDED") << a.end_reason;
  fs::path jdir = dir_ / "jobs" / std::to_string(ok);
  EXPECT_NE(read(jdir / "log").find("job " + std::to_string(ok) + " attempt 1 threads 1"),
            std::string::npos)
      << read(jdir / "log");
  EXPECT_EQ(read(jdir / "output" / "result"), "done\n");
  meta::Job f = job(flaky);
  EXPECT_EQ(f.state, "FAILED");
  EXPECT_EQ(f.attempts, 3) << "1 attempt and 2 retries";
  EXPECT_EQ(f.end_reason, "exit code 3");
  for (int64_t id : sleepers) EXPECT_EQ(job(id).state, "SUCCEEDED");
  // A job of a kind this service does not run yet fails with a message that says so.
  int64_t train = submit("kind: train\nspec: a.yaml\n");
  run_until_settled(svc);
  EXPECT_EQ(job(train).state, "FAILED");
  EXPECT_NE(job(train).end_reason.find("train jobs do not run yet"), std::string::npos);
}

TEST_F(JobServiceTest, CancelStopsARunningJobAndARestartRequeuesWhatWasRunning) {
  int64_t id = submit("kind: command\ncommand: [sleep, '60']\n");
  {
    JobService svc(*store_, options_);
    ASSERT_EQ(svc.tick().value(), 1);
    ASSERT_EQ(job(id).state, "RUNNING");
    EXPECT_GT(job(id).pid, 0);
    ASSERT_TRUE(store_->jobs().cancel(id, kAlice).ok());
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(svc.tick().ok());
    EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(2000)) << "SIGTERM suffices";
    EXPECT_EQ(job(id).state, "CANCELLED");
    EXPECT_EQ(svc.running(), 0u);
  }
  // A service that goes away with a job running (its process killed with it): the next one
  // queues the job again, without counting the interrupted attempt, and runs it. The command
  // sleeps on its first start and succeeds on its second.
  int64_t again = submit(
      "kind: command\ncommand: [sh, -c, 'echo x >> $DLSYS_OUTPUT_DIR/starts; "
      "[ $(wc -l < $DLSYS_OUTPUT_DIR/starts) -ge 2 ] || sleep 60']\n");
  fs::path starts = dir_ / "jobs" / std::to_string(again) / "output" / "starts";
  {
    JobService first(*store_, options_);
    ASSERT_EQ(first.tick().value(), 1);
    ASSERT_EQ(job(again).state, "RUNNING");
    // Its first start has written its line (a file another process writes: checked every 10 ms
    // up to 10 s) before the service goes away.
    for (int i = 0; i < 1000 && read(starts).empty(); ++i)
      std::this_thread::sleep_for(milliseconds(10));
    ASSERT_EQ(read(starts), "x\n");
  }
  JobService second(*store_, options_);
  ASSERT_TRUE(second.recover().ok());
  EXPECT_EQ(job(again).state, "QUEUED");
  EXPECT_EQ(job(again).attempts, 0);
  EXPECT_EQ(job(again).end_reason, "the service restarted while it ran");
  run_until_settled(second);
  EXPECT_EQ(job(again).state, "SUCCEEDED") << job(again).end_reason;
  EXPECT_EQ(job(again).attempts, 1);
  EXPECT_EQ(read(starts), "x\nx\n");
}

}  // namespace
}  // namespace dlsys::jobs
