// The training service's loop (jobs/job_service.h) on a real metadata store (SQLite) and real
// processes: command jobs succeed, fail after their retries, run within the capacity, get their
// environment and log, are cancelled while running, and survive a restart of the service.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "jobs/job_service.h"
#include "jobs/job_spec.h"
#include "testing/submit_job.h"

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
    auto o = meta::ArtifactStore::open(dir_.string());
    ASSERT_TRUE(o.ok()) << o.status().to_string();
    objects_ = std::make_unique<meta::ArtifactStore>(std::move(o).value());
    options_.objects = objects_.get();
    options_.work_dir = (dir_ / "jobs").string();
    options_.scheduler.threads = 2;
    options_.retry_backoff_ms = 0;
    options_.stop_grace = milliseconds(2000);
    options_.dlsys_exe = DLSYS_BIN;  // attempts run under the dlsys-job-run beside it
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }
  // Submits a command job as the CLI will: the spec parsed, then queued.
  int64_t submit(const std::string& yaml) { return submit_job(*store_, yaml, kAlice); }
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
  std::unique_ptr<meta::ArtifactStore> objects_;
  JobServiceOptions options_;
};

TEST_F(JobServiceTest, CommandJobsSucceedFailAfterRetriesAndStayWithinCapacity) {
  int64_t ok = submit(
      "kind: command\nname: ok\nhyperparameters: {lr: 0.5}\n"
      "command: [sh, -c, 'echo job $DLSYS_JOB_ID attempt $DLSYS_ATTEMPT "
      "threads $OMP_NUM_THREADS run $DLSYS_RUN_ID; echo done > $DLSYS_OUTPUT_DIR/result; "
      "echo \\{\\\"metric\\\": \\\"loss\\\", \\\"value\\\": 0.25, \\\"step\\\": 3\\}']\n");
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
  // Its run: made by the service, named in the environment, ended with the job; the metric it
  // printed, its hyperparameters, what it used, its log and its output file.
  ASSERT_GT(a.run_id, 0);
  EXPECT_NE(read(jdir / "log").find("run " + std::to_string(a.run_id)), std::string::npos);
  meta::Run run = store_->runs().get_run(a.run_id).value();
  EXPECT_EQ(run.status, "FINISHED");
  EXPECT_EQ(run.metrics.at("loss").value, 0.25);
  EXPECT_EQ(run.metrics.at("loss").step, 3);
  EXPECT_GT(run.metrics.at("job.core_seconds").value, 0);
  EXPECT_GT(run.metrics.at("job.peak_memory_mb").value, 0);
  EXPECT_EQ(run.params["lr"], "0.5") << "the hyperparameters are the run's params";
  EXPECT_EQ(store_->runs().get_artifact(a.run_id, "output/result").value().size, 5);
  EXPECT_GT(store_->runs().get_artifact(a.run_id, "job.log").value().size, 0);
  EXPECT_GT(a.core_ms, 0);
  EXPECT_GT(a.peak_memory_bytes, 0);
  meta::Job f = job(flaky);
  EXPECT_EQ(f.state, "FAILED");
  EXPECT_EQ(f.attempts, 3) << "1 attempt and 2 retries";
  EXPECT_EQ(f.end_reason, "exit code 3");
  for (int64_t id : sleepers) EXPECT_EQ(job(id).state, "SUCCEEDED");
  // A job that succeeds without the model its on_success registers has not done its work.
  int64_t no_model = submit("kind: command\ncommand: ['true']\non_success: {register: m}\n");
  run_until_settled(svc);
  EXPECT_EQ(job(no_model).state, "FAILED");
  EXPECT_NE(job(no_model).end_reason.find("on_success.register: the job left no ONNX file"),
            std::string::npos)
      << job(no_model).end_reason;
}

// A command job's outputs are kept up to max_output_bytes; what is past it stays in its folder
// and its log says so.
TEST_F(JobServiceTest, OutputsPastTheLimitAreNotKeptAndTheLogSaysSo) {
  options_.max_output_bytes = 1000;
  int64_t id = submit(
      "kind: command\ncommand: [sh, -c, 'head -c 600 /dev/zero > $DLSYS_OUTPUT_DIR/a.bin; "
      "head -c 600 /dev/zero > $DLSYS_OUTPUT_DIR/b.bin']\n");
  JobService svc(*store_, options_);
  ASSERT_TRUE(svc.recover().ok());
  run_until_settled(svc);
  meta::Job j = job(id);
  ASSERT_EQ(j.state, "SUCCEEDED") << j.end_reason;
  auto kept = store_->runs().list_artifacts(j.run_id, "output/");
  ASSERT_TRUE(kept.ok()) << kept.status().to_string();
  EXPECT_EQ(kept->size(), 1u) << "600 + 600 bytes against a limit of 1000";
  const std::string log = read(dir_ / "jobs" / std::to_string(id) / "log");
  EXPECT_NE(log.find("(600 bytes) is not kept as an artifact: the job's outputs are limited to "
                     "1000 bytes"),
            std::string::npos)
      << log;
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
    // The first tick sends SIGTERM, a later one settles the ended process.
    run_until_settled(svc);
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

TEST_F(JobServiceTest, ARunPastItsTimeOrIgnoringSigtermIsKilledAndAHungOneIsFoundAndRetried) {
  options_.stop_grace = milliseconds(300);
  options_.heartbeat_timeout = milliseconds(1000);
  // Ignores SIGTERM (an ignored signal stays ignored in sleep too): SIGKILL after the grace.
  int64_t ignores_sigterm =
      submit("kind: command\ncommand: [sh, -c, \"trap '' TERM; sleep 60\"]\n");
  int64_t slow = submit("kind: command\ncommand: [sleep, '60']\nmax_run_time: 1s\n");
  // Beats once, then hangs: killed once its heartbeat is a second old, and retried (the retry
  // hangs too and is failed: its attempts are spent).
  int64_t hung = submit(
      "kind: command\ncommand: [sh, -c, 'touch $DLSYS_HEARTBEAT_FILE; sleep 60']\n"
      "max_retries: 1\nresources: {threads: 1}\n");
  options_.scheduler.threads = 3;
  JobService svc(*store_, options_);
  ASSERT_EQ(svc.tick().value(), 3);
  ASSERT_TRUE(store_->jobs().cancel(ignores_sigterm, kAlice).ok());
  auto t0 = std::chrono::steady_clock::now();
  run_until_settled(svc);
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(job(ignores_sigterm).state, "CANCELLED");
  EXPECT_EQ(job(slow).state, "FAILED");
  EXPECT_NE(job(slow).end_reason.find("ran longer than its max_run_time (1 s)"), std::string::npos)
      << job(slow).end_reason;
  EXPECT_EQ(job(hung).state, "FAILED");
  EXPECT_EQ(job(hung).attempts, 2);
  EXPECT_NE(job(hung).end_reason.find("hung: its heartbeat stopped for 1 s"), std::string::npos)
      << job(hung).end_reason;
  // Two hangs of ~1 s each, found by ticks at most 1 s apart (the waits' timeout here is 200 ms).
  EXPECT_LT(took, std::chrono::seconds(6));
  // The service's default finds a hang within the 10 s: the timeout plus one tick of
  // the server's loop (1 s).
  EXPECT_LE(JobServiceOptions{}.heartbeat_timeout + std::chrono::seconds(1),
            std::chrono::seconds(10));
}

// Several servers share one queue: each recovers only what it ran itself, counts only its own
// jobs against its capacity, and takes over a job whose server stopped heartbeating it.
TEST_F(JobServiceTest, ServersOnOneQueueLeaveEachOthersJobsAloneUntilTheirHeartbeatStops) {
  int64_t id = submit(
      "kind: command\ncommand: [sh, -c, 'echo x >> $DLSYS_OUTPUT_DIR/starts; "
      "[ $(wc -l < $DLSYS_OUTPUT_DIR/starts) -ge 2 ] || sleep 60']\n");
  JobServiceOptions a_options = options_, b_options = options_;
  a_options.runner = "host-a";
  b_options.runner = "host-b";
  b_options.runner_timeout = milliseconds(300);
  b_options.scheduler.threads = 1;
  JobService b(*store_, b_options);
  {
    JobService a(*store_, a_options);
    ASSERT_EQ(a.tick().value(), 1);
    EXPECT_EQ(job(id).runner, "host-a");
    // B starts beside it: A's job is not B's to recover, and does not take B's one thread.
    ASSERT_TRUE(b.recover().ok());
    EXPECT_EQ(job(id).state, "RUNNING");
    int64_t other = submit("kind: command\ncommand: ['true']\n");
    run_until_settled(b);  // settles once only A's job is left running... which B never runs
    EXPECT_EQ(job(other).state, "SUCCEEDED");
    EXPECT_EQ(job(id).state, "RUNNING") << "fresh heartbeats: B leaves A's job alone";
  }  // A goes away with its job (its process killed): nobody heartbeats the job any more
  // B takes it over once its heartbeat is 300 ms old (and starts it again: it has the room).
  auto t0 = std::chrono::steady_clock::now();
  while (job(id).runner != "host-b" &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10)) {
    ASSERT_TRUE(b.tick().ok());
    b.wait(milliseconds(50));
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  run_until_settled(b);
  EXPECT_EQ(job(id).state, "SUCCEEDED") << job(id).end_reason;
  EXPECT_EQ(job(id).runner, "host-b");
  EXPECT_EQ(job(id).attempts, 1) << "the attempt cut short by A's end is not counted";
}

// A service cut off from the database for longer than the takeover time (it does not tick)
// comes back to find its job taken over: it kills its own attempt and records nothing of it,
// and the other service's attempt is the one that ends the job.
TEST_F(JobServiceTest, AServiceThatWasCutOffKillsItsAttemptAndLeavesTheTakeoverAlone) {
  int64_t id = submit(
      "kind: command\ncommand: [sh, -c, 'echo $$ >> $DLSYS_OUTPUT_DIR/pids; "
      "[ $(wc -l < $DLSYS_OUTPUT_DIR/pids) -ge 2 ] && exit 0; exec sleep 60']\n");
  JobServiceOptions a_options = options_, b_options = options_;
  a_options.runner = "host-a";
  b_options.runner = "host-b";
  b_options.runner_timeout = milliseconds(300);
  JobService a(*store_, a_options);
  JobService b(*store_, b_options);
  ASSERT_EQ(a.tick().value(), 1);
  const fs::path pids = dir_ / "jobs" / std::to_string(id) / "output" / "pids";
  auto t0 = std::chrono::steady_clock::now();
  while (!fs::exists(pids) && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5))
    a.wait(milliseconds(20));
  ASSERT_TRUE(fs::exists(pids));
  const pid_t a_pid = static_cast<pid_t>(std::stol(read(pids)));
  // A is silent; B takes the job over and runs it to its end.
  t0 = std::chrono::steady_clock::now();
  while (job(id).state != "SUCCEEDED" &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10)) {
    ASSERT_TRUE(b.tick().ok());
    b.wait(milliseconds(50));
  }
  ASSERT_EQ(job(id).state, "SUCCEEDED") << job(id).end_reason;
  EXPECT_EQ(job(id).runner, "host-b");
  ASSERT_EQ(::kill(a_pid, 0), 0) << "A's attempt still runs: A has not looked yet";
  // A comes back: the job is not its attempt's any more.
  ASSERT_TRUE(a.tick().ok());
  EXPECT_EQ(a.running(), 0u);
  t0 = std::chrono::steady_clock::now();
  while (::kill(a_pid, 0) == 0 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5))
    std::this_thread::sleep_for(milliseconds(10));
  EXPECT_NE(::kill(a_pid, 0), 0) << "A killed its own attempt";
  meta::Job j = job(id);
  EXPECT_EQ(j.state, "SUCCEEDED") << "A's killed attempt did not retry or fail the job";
  EXPECT_EQ(j.runner, "host-b");
  EXPECT_EQ(j.attempts, 1);
}

// A server started with a relative data directory gives its jobs absolute paths: a job runs in
// its own folder, where the server's relative paths would mean something else.
TEST_F(JobServiceTest, AJobGetsAbsolutePathsFromARelativeWorkDir) {
  options_.work_dir = fs::relative(dir_ / "jobs", fs::current_path()).string();
  ASSERT_NE(options_.work_dir[0], '/');
  int64_t id = submit(
      "kind: command\ncommand: [sh, -c, 'echo $DLSYS_OUTPUT_DIR > "
      "$DLSYS_OUTPUT_DIR/where']\n");
  JobService svc(*store_, options_);
  run_until_settled(svc);
  ASSERT_EQ(job(id).state, "SUCCEEDED") << job(id).end_reason;
  const fs::path out = dir_ / "jobs" / std::to_string(id) / "output";
  EXPECT_EQ(read(out / "where"), fs::canonical(out).string() + "\n");
}

TEST_F(JobServiceTest, WaitEndsWhenAnAttemptEndsAndWhenARetrysBackoffDoes) {
  options_.retry_backoff_ms = 100;
  int64_t id = submit("kind: command\ncommand: [sh, -c, 'exit 3']\nmax_retries: 1\n");
  JobService svc(*store_, options_);
  ASSERT_EQ(svc.tick().value(), 1);
  auto t0 = std::chrono::steady_clock::now();
  svc.wait(std::chrono::seconds(10));  // the process ends: its pidfd wakes the wait
  ASSERT_EQ(svc.tick().value(), 0);
  ASSERT_EQ(job(id).state, "QUEUED") << job(id).end_reason;
  svc.wait(std::chrono::seconds(10));  // the backoff ends: the wait ends with it
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
  EXPECT_EQ(svc.tick().value(), 1) << "the retry starts once its backoff passed";
  run_until_settled(svc);
  // wake() ends a wait from another thread at once.
  t0 = std::chrono::steady_clock::now();
  std::thread waker([&svc] {
    std::this_thread::sleep_for(milliseconds(50));
    svc.wake();
  });
  svc.wait(std::chrono::seconds(10));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
  waker.join();
}

// Train jobs: `dlsys train` in the child, checkpointing every 100 steps. A job killed with
// SIGKILL at a random step is retried from its last checkpoint and ends with a model
// byte-identical to the same job run without interruption; a service that stops asks its jobs to
// stop (the trainer checkpoints on SIGTERM) and the next service finishes them, again identical.
class TrainJobTest : public JobServiceTest {
 protected:
  void SetUp() override {
    JobServiceTest::SetUp();
    options_.dlsys_exe = DLSYS_BIN;
    options_.data_dir = dir_.string();  // its meta.db is the test's store
    options_.checkpoint_every = 100;
    options_.scheduler.threads = 1;
    std::ofstream(dir_ / "mlp.yaml")
        << "name: jobs-test\n"
           "data:\n"
           "  train: " DLSYS_SHARED_DATA
           "/digits/digits.csv\n"
           "  label_column: -1\n"
           "  feature_scale: 0.0625\n"
           "model:\n"
           "  input: [64]\n"
           "  layers: [{linear: {out: 64}}, relu, {linear: {out: 10}}]\n"
           "train:\n"
           "  epochs: 10\n"
           "  batch_size: 32\n"
           "  seed: 7\n"
           "  optimizer: {name: adam, lr: 0.001}\n";
  }
  // A train job of the spec above for `epochs` (a hyperparameter, as users override them).
  int64_t submit_train(int epochs, int max_retries, const std::string& extra = "") {
    return submit(
        fmt::format("kind: train\nspec: {}\nhyperparameters: {{epochs: {}}}\nmax_retries: {}\n{}",
                    (dir_ / "mlp.yaml").string(), epochs, max_retries, extra));
  }
  fs::path run_dir(int64_t id) { return dir_ / "jobs" / std::to_string(id) / "run"; }
  // The process of rank `rank` of job `id` (its command line names the job's run and --rank),
  // or -1.
  pid_t rank_process(int64_t id, int rank) {
    const std::string needle = run_dir(id).string(), flag = fmt::format("--rank {} ", rank);
    for (const auto& e : fs::directory_iterator("/proc")) {
      const std::string name = e.path().filename();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::string cmd = read(e.path() / "cmdline");
      std::replace(cmd.begin(), cmd.end(), '\0', ' ');
      if (cmd.find(needle) != std::string::npos && cmd.find(flag) != std::string::npos)
        return static_cast<pid_t>(std::stol(name));
    }
    return -1;
  }
  // Submits a data-parallel job of `epochs` (`dp`: its distributed and resources lines), runs
  // it to its end and returns its model's bytes.
  std::string reference_model(int epochs, const std::string& dp) {
    int64_t id = submit_train(epochs, 0, dp);
    {
      JobService svc(*store_, options_);
      run_until_settled(svc);
    }
    EXPECT_EQ(job(id).state, "SUCCEEDED")
        << job(id).end_reason << read(dir_ / "jobs" / std::to_string(id) / "log");
    return read(run_dir(id) / "model.onnx");
  }
  // The step the job's log last reported (its --json step events, every 10 steps).
  int64_t last_step(int64_t id) {
    std::string log = read(dir_ / "jobs" / std::to_string(id) / "log");
    size_t at = log.rfind("\"step\":");
    return at == std::string::npos ? -1 : std::atoll(log.c_str() + at + 7);
  }
  // The step numbers of the job's log in order, and where they go back (an attempt that started
  // again): the first step the later attempt reported, or -1 when none went back.
  int64_t restarted_at(int64_t id, int64_t* before) {
    std::string log = read(dir_ / "jobs" / std::to_string(id) / "log");
    int64_t prev = -1;
    for (size_t at = log.find("\"step\":"); at != std::string::npos;
         at = log.find("\"step\":", at + 1)) {
      int64_t step = std::atoll(log.c_str() + at + 7);
      if (step < prev) {
        *before = prev;
        return step;
      }
      prev = step;
    }
    return -1;
  }
  // Ticks `svc` until the job's log reports step `step` or later (30 s at most).
  void run_until_step(JobService& svc, int64_t id, int64_t step) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (last_step(id) < step) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "no step " << step << " in 30 s";
      ASSERT_TRUE(svc.tick().ok());
      ASSERT_EQ(job(id).state, "RUNNING") << job(id).end_reason << "\n"
                                          << read(dir_ / "jobs" / std::to_string(id) / "log");
      std::this_thread::sleep_for(milliseconds(2));  // the log is another process's file
    }
  }
};

TEST_F(TrainJobTest, AJobKilledAtARandomStepResumesFromItsCheckpointBitIdentically) {
  constexpr int kEpochs = 40;  // 45 steps an epoch: 1800 steps
  int64_t reference =
      submit_train(kEpochs, 0, "on_success: {register: digits-job, alias: staging}\n");
  {
    JobService svc(*store_, options_);
    run_until_settled(svc);
  }
  ASSERT_EQ(job(reference).state, "SUCCEEDED")
      << job(reference).end_reason << read(dir_ / "jobs" / std::to_string(reference) / "log");
  const std::string want = read(run_dir(reference) / "model.onnx");
  ASSERT_FALSE(want.empty());
  // on_success: the run's model.onnx is version 1 of digits-job, and staging points at it.
  auto staged = store_->registry().get_version_by_alias("digits-job", "staging");
  ASSERT_TRUE(staged.ok()) << staged.status().to_string();
  EXPECT_EQ(staged->version, 1);
  EXPECT_EQ(staged->run_id, job(reference).run_id);

  // Killed past its first checkpoint, at a step drawn at random. The trainer is fast (1800 steps
  // in about a second): on a loaded machine it can run to its end between the step seen here and
  // the kill, and then there is nothing to resume. Such a try is told by its log (the killed
  // attempt reported the last step) and done again, at most three times. The retry's part of
  // the log begins where the service recorded it (log-start-2): its first step is the
  // checkpoint it went on from.
  std::mt19937 rng(std::random_device{}());
  JobService svc(*store_, options_);
  int64_t kill_at = 0, killed = 0, reached = 0, resumed = -1;
  for (int tries = 0; tries < 3; ++tries) {
    kill_at = std::uniform_int_distribution<int64_t>(150, 900)(rng);
    killed = submit_train(kEpochs, 2);
    run_until_step(svc, killed, kill_at);
    ASSERT_GT(job(killed).pid, 0);
    ASSERT_EQ(::kill(-static_cast<pid_t>(job(killed).pid), SIGKILL), 0);
    reached = last_step(killed);
    run_until_settled(svc);
    const fs::path jdir = dir_ / "jobs" / std::to_string(killed);
    const std::string retry =
        read(jdir / "log").substr(static_cast<size_t>(std::stoll(read(jdir / "log-start-2"))));
    const size_t at = retry.find("\"step\":");
    resumed = at == std::string::npos ? -1 : std::atoll(retry.c_str() + at + 7);
    if (reached < 45 * kEpochs) break;
  }
  meta::Job k = job(killed);
  ASSERT_EQ(k.state, "SUCCEEDED") << k.end_reason;
  EXPECT_EQ(k.attempts, 2) << "one kill, one retry";
  // The retry went on from the last checkpoint (every 100 steps) before the kill, not from 0:
  // an uninterrupted second run would give the same weights too.
  EXPECT_GE(resumed, 100) << "the retry started again from step " << resumed;
  EXPECT_EQ(resumed % 100, 0) << "the retry's first step " << resumed;
  EXPECT_LE(resumed, reached) << "the retry went on from a step the killed attempt never reached";
  EXPECT_GT(resumed + 100, reached) << "the retry did not go on from the last checkpoint";
  EXPECT_EQ(read(run_dir(killed) / "model.onnx"), want)
      << "killed after step " << kill_at << "; the weights differ from the uninterrupted run";
  // One run for both attempts, with one history: an evaluation per epoch, steps in order.
  ASSERT_GT(k.run_id, 0);
  meta::Run run = store_->runs().get_run(k.run_id).value();
  EXPECT_EQ(run.status, "FINISHED");
  EXPECT_EQ(run.tags["dlsys.job_id"], std::to_string(killed));
  auto history = store_->runs().metric_history(k.run_id, "val_accuracy", 0).value();
  std::set<int64_t> steps;
  int64_t prev = -1;
  for (const auto& p : history.points) {
    EXPECT_GE(p.step, prev) << "the history goes back";
    prev = p.step;
    steps.insert(p.step);
  }
  EXPECT_EQ(steps.size(), static_cast<size_t>(kEpochs)) << "one evaluation per epoch";
  EXPECT_EQ(prev, 45 * kEpochs);
  EXPECT_GT(store_->runs().get_artifact(k.run_id, "job.log").value().size, 0);
  EXPECT_GT(k.cpu_ms, 0) << "the two attempts' CPU time";

  // The service stops while the job runs: SIGTERM, the trainer checkpoints that step and exits;
  // the job goes back to the queue without spending an attempt; the next service finishes it.
  int64_t stopped = submit_train(kEpochs, 0);
  run_until_step(svc, stopped, kill_at);
  ASSERT_TRUE(svc.shutdown(std::chrono::seconds(20)).ok());
  EXPECT_EQ(job(stopped).state, "QUEUED");
  EXPECT_EQ(job(stopped).attempts, 0);
  EXPECT_NE(
      read(dir_ / "jobs" / std::to_string(stopped) / "log").find("training stopped on request"),
      std::string::npos);
  JobService next(*store_, options_);
  ASSERT_TRUE(next.recover().ok());
  run_until_settled(next);
  ASSERT_EQ(job(stopped).state, "SUCCEEDED") << job(stopped).end_reason;
  // It went on from the step it stopped at: no step number in its log goes back (a start from 0,
  // or from an older checkpoint, would repeat steps).
  int64_t before = 0;
  EXPECT_EQ(restarted_at(stopped, &before), -1) << "steps were redone after step " << before;
  EXPECT_EQ(read(run_dir(stopped) / "model.onnx"), want)
      << "stopped after step " << kill_at << "; the weights differ from the uninterrupted run";
}

// A data-parallel job (distributed: {workers: 2}): one of its ranks SIGKILLed mid-run fails the
// attempt; the retry starts both ranks again from the last checkpoint, and the model is the one
// an uninterrupted 2-worker job trains. The job's spec sets no micro_batches: 2, one per worker.
TEST_F(TrainJobTest, ADataParallelJobWhoseRankDiesRestartsEveryRankFromItsCheckpoint) {
  constexpr int kEpochs = 20;
  options_.scheduler.threads = 2;
  const std::string dp = "distributed: {workers: 2}\nresources: {threads: 2}\n";
  const std::string want = reference_model(kEpochs, dp);
  ASSERT_FALSE(want.empty());

  JobService svc(*store_, options_);
  int64_t killed = 0, reached = 0;
  for (int tries = 0; tries < 3; ++tries) {
    killed = submit_train(kEpochs, 2, dp);
    run_until_step(svc, killed, 250);
    pid_t rank1 = rank_process(killed, 1);
    ASSERT_GT(rank1, 0) << "rank 1 of job " << killed << " not found";
    ASSERT_EQ(::kill(rank1, SIGKILL), 0);
    reached = last_step(killed);
    run_until_settled(svc);
    if (reached < 45 * kEpochs) break;
  }
  meta::Job k = job(killed);
  ASSERT_EQ(k.state, "SUCCEEDED") << k.end_reason;
  EXPECT_EQ(k.attempts, 2) << "one rank killed, one retry of both";
  EXPECT_TRUE(fs::exists(run_dir(killed) / "rank-1.log")) << "not trained on 2 ranks";
  const std::string log = read(dir_ / "jobs" / std::to_string(killed) / "log");
  EXPECT_NE(log.find("rank 1 of 2 failed"), std::string::npos) << log;
  EXPECT_EQ(read(run_dir(killed) / "model.onnx"), want)
      << "a rank killed after step " << reached
      << "; the weights differ from the uninterrupted job";
}

// distributed.min_workers: a rank killed in a 4-worker job does not fail the attempt: the
// others go on as 2 workers from the newest checkpoint, to the weights of the uninterrupted
// 4-worker job.
TEST_F(TrainJobTest, ADataParallelJobWithMinWorkersGoesOnWithoutTheRankThatDied) {
  constexpr int kEpochs = 20;
  options_.scheduler.threads = 2;
  const std::string dp = "distributed: {workers: 4, min_workers: 2}\nresources: {threads: 2}\n";
  const std::string want = reference_model(kEpochs, dp);
  ASSERT_FALSE(want.empty());
  JobService svc(*store_, options_);
  int64_t killed = submit_train(kEpochs, 2, dp);
  run_until_step(svc, killed, 250);
  pid_t rank3 = rank_process(killed, 3);
  ASSERT_GT(rank3, 0) << "rank 3 of job " << killed << " not found";
  ASSERT_EQ(::kill(rank3, SIGKILL), 0);
  run_until_settled(svc);
  meta::Job k = job(killed);
  const std::string log = read(dir_ / "jobs" / std::to_string(killed) / "log");
  ASSERT_EQ(k.state, "SUCCEEDED") << k.end_reason << log;
  EXPECT_EQ(k.attempts, 1) << "the attempt went on: no retry";
  EXPECT_NE(log.find("rank 3 of 4 failed"), std::string::npos) << log;
  EXPECT_NE(log.find("continuing on 2 workers"), std::string::npos) << log;
  EXPECT_EQ(read(run_dir(killed) / "model.onnx"), want)
      << "the weights differ from the uninterrupted job";
}

}  // namespace
}  // namespace dlsys::jobs
