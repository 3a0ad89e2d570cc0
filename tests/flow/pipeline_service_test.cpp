// The pipeline runner (flow/pipeline_service.h) on a real metadata store (SQLite) with the real
// training service running its command steps as processes: order, fan-out and fan-in, gates
// that stop a branch, retries and a retry of a failed run, timeouts, cancels, the step cache
// (a hit, and a miss for each of its four causes), and a restart in the middle of a run.
// The data.validate / evaluate kinds get handlers of the test's own here (their real ones need
// the dataset store and the engine: cli_test runs them through `dlsys server`).
#include "flow/pipeline_service.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "core/file_util.h"
#include "data/ingest.h"
#include "data/push.h"
#include "jobs/job_service.h"
#include "jobs/search_service.h"

namespace dlsys::flow {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using json = nlohmann::json;

const meta::Principal kAlice{"alice", meta::Role::kEditor};

class PipelineServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("dlsys-flow-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "work");
    auto s = meta::MetaStore::open((dir_ / "meta.db").string(), 4);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    store_ = std::move(s).value();
    auto o = meta::ArtifactStore::open(dir_.string());
    ASSERT_TRUE(o.ok()) << o.status().to_string();
    objects_ = std::make_unique<meta::ArtifactStore>(std::move(o).value());
    jobs_options_.objects = objects_.get();
    jobs_options_.work_dir = (dir_ / "jobs").string();
    jobs_options_.data_dir = dir_.string();
    jobs_options_.scheduler.threads = 2;
    jobs_options_.retry_backoff_ms = 0;
    jobs_options_.dlsys_exe = DLSYS_BIN;
    options_.objects = objects_.get();
    options_.work_dir = (dir_ / "work").string();
    options_.retry_backoff_ms = 10;
    options_.poll = milliseconds(50);
    // Datasets: "d@1" of the test handlers by a made-up content id; others from the data
    // directory's real store (what a command job pulls), by their version's id.
    datasets_["d@1"] = "content-of-d1";
    auto ds = data::DatasetStore::open((dir_ / "datasets").string());
    ASSERT_TRUE(ds.ok()) << ds.status().to_string();
    data_ = std::move(ds).value();
    options_.dataset_version = [this](const std::string& ref) -> Result<DatasetVersion> {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = datasets_.find(ref);
      if (it != datasets_.end()) return DatasetVersion{ref, it->second};
      DLSYS_ASSIGN_OR_RETURN(data::VersionRef r, data::parse_version_ref(ref));
      DLSYS_ASSIGN_OR_RETURN(data::VersionInfo v, data_->resolve(r));
      return DatasetVersion{v.label(), v.id};
    };
  }
  void TearDown() override {
    pipes_.reset();
    // Jobs still running (a sleeping step) are stopped, not left behind.
    if (jobs_) (void)jobs_->shutdown(std::chrono::seconds(2));
    jobs_.reset();
    store_.reset();
    fs::remove_all(dir_);
  }
  // The runner (its own thread) and the job service (ticked here until `until` holds).
  void start() {
    jobs::JobServiceOptions jo = jobs_options_;
    jo.on_attempt_settled = [this](int64_t) {
      if (pipes_) pipes_->wake();
    };
    jobs_ = std::make_unique<jobs::JobService>(*store_, jo);
    ASSERT_TRUE(jobs_->recover().ok());
    searches_ = std::make_unique<jobs::SearchService>(
        *store_, jobs::SearchServiceOptions{objects_.get(), nullptr});
    PipelineServiceOptions po = options_;
    po.wake_jobs = [this] { jobs_->wake(); };
    pipes_ = std::make_unique<PipelineService>(*store_, po);
    pipes_->start();
  }
  void create(const std::string& yaml) {
    auto spec = parse_pipeline_spec(yaml, "p.yaml");
    ASSERT_TRUE(spec.ok()) << spec.status().to_string();
    ASSERT_TRUE(store_->pipelines().put_pipeline(spec->name, yaml, kAlice).ok());
  }
  int64_t run(const std::string& name, const json& params = json::object(), bool no_cache = false) {
    auto r = pipes_->start_run(name, params, "manual", "", no_cache, kAlice);
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    return r.ok() ? r->id : 0;
  }
  // Drives the job service until `done` or 30 s.
  bool drive_until(const std::function<bool()>& done) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      auto t = jobs_->tick();
      EXPECT_TRUE(t.ok()) << t.status().to_string();
      auto q = searches_->tick();
      EXPECT_TRUE(q.ok()) << q.status().to_string();
      if (q.ok() && *q > 0) jobs_->wake();
      if (done()) return true;
      jobs_->wait(milliseconds(20));
    }
    return false;
  }
  meta::PipelineRun wait_run(int64_t id) {
    bool ended = drive_until([&] { return store_->pipelines().get_run(id)->state != "RUNNING"; });
    EXPECT_TRUE(ended) << "pipeline run " << id << " did not end in 30 s";
    return store_->pipelines().get_run(id).value();
  }
  std::map<std::string, meta::StepRun> steps(int64_t id) {
    std::map<std::string, meta::StepRun> out;
    auto all = store_->pipelines().steps(id);
    EXPECT_TRUE(all.ok()) << all.status().to_string();
    if (all.ok())
      for (auto& s : *all) out[s.item >= 0 ? s.step + "#" + std::to_string(s.item) : s.step] = s;
    return out;
  }
  size_t jobs_named(const std::string& name) {
    size_t n = 0;
    auto page = store_->jobs().list("", "", 1000, "");
    if (page.ok())
      for (const auto& j : page->items) n += j.name == name;
    return n;
  }
  void write(const std::string& rel, const std::string& text) {
    ASSERT_TRUE(write_file_atomic((dir_ / "work" / rel).string(), text).ok());
  }

  fs::path dir_;
  std::unique_ptr<meta::MetaStore> store_;
  std::unique_ptr<meta::ArtifactStore> objects_;
  jobs::JobServiceOptions jobs_options_;
  PipelineServiceOptions options_;
  std::unique_ptr<jobs::JobService> jobs_;
  std::unique_ptr<jobs::SearchService> searches_;
  std::unique_ptr<PipelineService> pipes_;
  // Pushes `csv` as a new version of dataset `name` in the data directory.
  void push(const std::string& name, const std::string& csv) {
    write("data.csv", csv);
    auto src = data::open_source((dir_ / "work" / "data.csv").string(), "", data::IngestOptions{});
    ASSERT_TRUE(src.ok()) << src.status().to_string();
    auto r = data::push(*data_, name, **src, data::PushOptions{});
    ASSERT_TRUE(r.ok()) << r.status().to_string();
  }

  std::mutex mu_;
  std::map<std::string, std::string> datasets_;
  std::unique_ptr<data::DatasetStore> data_;
};

TEST_F(PipelineServiceTest, StepsRunInDependencyOrderFanOutAndFanIn) {
  create(R"(name: fan
params: {sizes: [1, 2, 3], word: hello}
steps:
  - name: last
    kind: command
    with: {command: [sh, -c, "echo got ${steps.square.outputs.metrics.sq}"]}
  - name: first
    kind: command
    with: {command: [sh, -c, "echo '{\"metric\": \"n\", \"value\": 7}'"]}
  - name: square
    kind: command
    for_each: ${params.sizes}
    needs: [first]
    with:
      command: [sh, -c, "echo '{\"metric\": \"sq\", \"value\": '$(( ${item} * ${item} ))'}'"]
      env: {WORD: "${params.word}"}
)");
  start();
  const int64_t id = run("fan");
  meta::PipelineRun r = wait_run(id);
  EXPECT_EQ(r.state, "SUCCEEDED") << r.end_reason;
  auto s = steps(id);
  ASSERT_EQ(s.size(), 5u);
  EXPECT_EQ(s["first"].outputs["metrics.n"], 7);
  for (int i = 0; i < 3; ++i) {
    const meta::StepRun& sq = s["square#" + std::to_string(i)];
    EXPECT_EQ(sq.state, "SUCCEEDED") << sq.end_reason;
    EXPECT_EQ(sq.outputs["metrics.sq"], (i + 1) * (i + 1));
    EXPECT_GE(sq.started_at, s["first"].ended_at) << "needs: after first";
    EXPECT_EQ(sq.inputs["env"]["WORD"], "hello");
  }
  // Fan-in: the list of every instance's output, rendered into the command's text.
  EXPECT_EQ(s["last"].inputs["command"][2], "echo got [1.0,4.0,9.0]");
  for (int i = 0; i < 3; ++i)
    EXPECT_GE(s["last"].started_at, s["square#" + std::to_string(i)].ended_at);
  EXPECT_GT(s["last"].job_id, 0);
}

TEST_F(PipelineServiceTest, AGateThatIsFalseStopsItsBranchNotTheRun) {
  options_.handlers["evaluate"] = [](const StepCall& c) -> Result<json> {
    return json{{"metrics.accuracy", c.with["model"] == "good@1" ? 0.95 : 0.90},
                {"baseline.accuracy", 0.93}};
  };
  // The pipeline, its gate's condition given.
  auto gated = [&](const std::string& condition) {
    create(R"(name: gated
params: {model: bad@1, min_gain: 0.005}
steps:
  - name: evaluate
    kind: evaluate
    with: {model: "${params.model}", dataset: d@1}
  - name: better
    kind: gate
    condition: )" +
           condition + R"(
  - name: deploy
    kind: command
    needs: [better]
    with: {command: ["true"]}
  - name: after-deploy
    kind: command
    needs: [deploy]
    with: {command: ["true"]}
  - name: independent
    kind: command
    needs: [evaluate]
    with: {command: ["true"]}
)");
  };
  gated(
      ">-\n      ${steps.evaluate.outputs.baseline.missing} == null or\n"
      "      ${steps.evaluate.outputs.metrics.accuracy} >=\n"
      "      ${steps.evaluate.outputs.baseline.accuracy} + ${params.min_gain}");
  start();
  int64_t id = run("gated");
  meta::PipelineRun r = wait_run(id);
  EXPECT_EQ(r.state, "SUCCEEDED") << "a gate stops its branch, not the run: " << r.end_reason;
  auto s = steps(id);
  EXPECT_EQ(s["better"].outputs["passed"], true) << "baseline.missing is null: the or holds";
  // Now without the escape: 0.90 < 0.93 + 0.005.
  gated(
      "${steps.evaluate.outputs.metrics.accuracy} >= "
      "${steps.evaluate.outputs.baseline.accuracy} + ${params.min_gain}");
  id = run("gated");
  r = wait_run(id);
  EXPECT_EQ(r.state, "SUCCEEDED") << r.end_reason;
  s = steps(id);
  EXPECT_EQ(s["better"].state, "SUCCEEDED");
  EXPECT_EQ(s["better"].outputs["passed"], false);
  EXPECT_EQ(s["better"].outputs["explanation"], "0.9 >= 0.93 + 0.005 -> false");
  EXPECT_EQ(s["deploy"].state, "SKIPPED");
  EXPECT_EQ(s["deploy"].end_reason, "gate 'better' did not pass: 0.9 >= 0.93 + 0.005 -> false");
  EXPECT_EQ(s["after-deploy"].state, "SKIPPED");
  EXPECT_EQ(s["after-deploy"].end_reason, s["deploy"].end_reason) << "the first cause, passed on";
  EXPECT_EQ(s["independent"].state, "SUCCEEDED");
  EXPECT_EQ(s["deploy"].job_id, 0) << "a skipped step queues no job";
  // A better model passes.
  id = run("gated", {{"model", "good@1"}});
  r = wait_run(id);
  s = steps(id);
  EXPECT_EQ(s["better"].outputs["passed"], true);
  EXPECT_EQ(s["after-deploy"].state, "SUCCEEDED");
  // An unknown parameter is refused before anything runs.
  auto bad = pipes_->start_run("gated", {{"modle", "x"}}, "manual", "", false, kAlice);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("no parameter 'modle' (its parameters: min_gain, model)"),
            std::string::npos)
      << bad.status().message();
}

TEST_F(PipelineServiceTest, FailuresAreRetriedThenSkipDependentsAndARetryRerunsOnlyWhatFailed) {
  std::atomic<int> validations{0};
  options_.handlers["data.validate"] = [&](const StepCall&) -> Result<json> {
    // Fails twice, then passes: within its 2 retries.
    if (++validations <= 2) return Status::IOError("the disk hiccuped");
    return json{{"ok", true}, {"rows", 10}};
  };
  create(R"(name: flaky
steps:
  - name: check
    kind: data.validate
    with: {dataset: d@1}
    retries: 2
  - name: good
    kind: command
    needs: [check]
    with: {command: ["true"]}
  - name: fragile
    kind: command
    needs: [check]
    with: {command: [sh, -c, "test -e ok"]}
  - name: downstream
    kind: command
    needs: [fragile, good]
    with: {command: ["true"]}
)");
  start();
  const int64_t id = run("flaky");
  meta::PipelineRun r = wait_run(id);
  EXPECT_EQ(r.state, "FAILED");
  EXPECT_NE(r.end_reason.find("step 'fragile' failed"), std::string::npos) << r.end_reason;
  auto s = steps(id);
  EXPECT_EQ(s["check"].state, "SUCCEEDED");
  EXPECT_EQ(s["check"].attempts, 3) << "2 failures, then the retry that passed";
  EXPECT_EQ(validations.load(), 3);
  EXPECT_EQ(s["good"].state, "SUCCEEDED") << "an independent branch goes on";
  EXPECT_EQ(s["fragile"].state, "FAILED");
  EXPECT_NE(s["fragile"].end_reason.find("exit code 1"), std::string::npos)
      << s["fragile"].end_reason;
  EXPECT_EQ(s["downstream"].state, "SKIPPED");
  EXPECT_EQ(s["downstream"].end_reason, "step 'fragile' failed");
  // Fixed; the retry runs fragile and downstream only.
  write("ok", "");
  auto again = store_->pipelines().retry_run(id, kAlice);
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  pipes_->wake();
  r = wait_run(id);
  EXPECT_EQ(r.state, "SUCCEEDED") << r.end_reason;
  EXPECT_EQ(r.attempt, 2);
  auto t = steps(id);
  EXPECT_EQ(t["check"].started_at, s["check"].started_at) << "a succeeded step is not run again";
  EXPECT_EQ(t["good"].job_id, s["good"].job_id);
  EXPECT_NE(t["fragile"].job_id, s["fragile"].job_id);
  EXPECT_EQ(t["fragile"].state, "SUCCEEDED");
  EXPECT_EQ(t["downstream"].state, "SUCCEEDED");
  EXPECT_EQ(validations.load(), 3);
  EXPECT_EQ(jobs_named("flaky-good"), 1u);
  EXPECT_EQ(jobs_named("flaky-fragile"), 2u);
}

TEST_F(PipelineServiceTest, StepsRunOutOfTimeAndRunsAreCancelled) {
  std::atomic<bool> release{false};
  options_.handlers["data.validate"] = [&](const StepCall&) -> Result<json> {
    while (!release.load()) std::this_thread::sleep_for(milliseconds(10));
    return json{{"ok", true}};
  };
  create(R"(name: slow
steps:
  - name: check
    kind: data.validate
    with: {dataset: d@1}
    timeout: 1s
)");
  create(R"(name: long
steps:
  - name: sleep
    kind: command
    with: {command: [sleep, "60"]}
  - name: after
    kind: command
    needs: [sleep]
    with: {command: ["true"]}
)");
  start();
  const int64_t slow = run("slow");
  meta::PipelineRun r = wait_run(slow);
  release = true;
  EXPECT_EQ(r.state, "FAILED");
  auto s = steps(slow);
  EXPECT_EQ(s["check"].end_reason, "ran longer than its timeout (1 s)");
  const int64_t id = run("long");
  ASSERT_TRUE(drive_until([&] {
    auto st = steps(id);
    return st.count("sleep") && st["sleep"].job_id > 0 &&
           store_->jobs().get(st["sleep"].job_id)->state == "RUNNING";
  }));
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(store_->pipelines().request_cancel(id, kAlice).ok());
  pipes_->wake();
  r = wait_run(id);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  EXPECT_EQ(r.state, "CANCELLED");
  s = steps(id);
  EXPECT_EQ(s["sleep"].state, "CANCELLED");
  EXPECT_EQ(store_->jobs().get(s["sleep"].job_id)->state, "CANCELLED");
  EXPECT_EQ(s.count("after"), 0u) << "nothing starts after a cancel";
}

// The cache: a hit reuses outputs without running; a changed parameter, a changed code file, a
// changed input version and a deleted output artifact are misses.
TEST_F(PipelineServiceTest, TheCacheHitsOnlyWhenNothingChangedAndTheOutputsStillExist) {
  push("d", "x,y\n1,2\n3,4\n");
  write("step.sh", "wc -l < \"$DLSYS_DATA_DIR/data.csv\" > \"$DLSYS_OUTPUT_DIR/out.txt\"\n");
  create(R"(name: cached
params: {data: d, n: 3}
steps:
  - name: work
    kind: command
    with:
      command: [sh, step.sh, "${params.n}"]
      files: [step.sh]
      dataset: "${params.data}"
)");
  start();
  auto once = [&](const json& params = json::object(), bool no_cache = false) {
    const int64_t id = run("cached", params, no_cache);
    meta::PipelineRun r = wait_run(id);
    EXPECT_EQ(r.state, "SUCCEEDED") << r.end_reason;
    return steps(id)["work"];
  };
  meta::StepRun first = once();
  EXPECT_FALSE(first.cached);
  ASSERT_GT(first.job_id, 0);
  ASSERT_EQ(first.outputs["artifacts"], json::array({"output/out.txt"}));
  // Unchanged: a hit, no job.
  meta::StepRun hit = once();
  EXPECT_TRUE(hit.cached);
  EXPECT_EQ(hit.job_id, 0);
  EXPECT_EQ(hit.outputs, first.outputs);
  EXPECT_NE(hit.end_reason.find("cache hit"), std::string::npos) << hit.end_reason;
  EXPECT_EQ(hit.cache_key, first.cache_key);
  // --no-cache: runs.
  EXPECT_FALSE(once({}, true).cached);
  // 1. A changed parameter.
  meta::StepRun p = once({{"n", 4}});
  EXPECT_FALSE(p.cached);
  EXPECT_NE(p.cache_key, first.cache_key);
  EXPECT_TRUE(once({{"n", 4}}).cached);
  // 2. A changed code file.
  write("step.sh", "wc -c < \"$DLSYS_DATA_DIR/data.csv\" > \"$DLSYS_OUTPUT_DIR/out.txt\"\n");
  meta::StepRun code = once();
  EXPECT_FALSE(code.cached);
  EXPECT_NE(code.cache_key, first.cache_key);
  EXPECT_TRUE(once().cached);
  // 3. A changed input version: a new version of d lands (the step reads the newest).
  push("d", "x,y\n1,2\n3,4\n5,6\n");
  meta::StepRun input = once();
  EXPECT_FALSE(input.cached);
  EXPECT_NE(input.cache_key, code.cache_key);
  meta::StepRun again = once();
  ASSERT_TRUE(again.cached);
  // 4. A deleted output artifact: the hit is refused, the step runs again.
  auto art = store_->runs().get_artifact(again.outputs["run"].get<int64_t>(), "output/out.txt");
  ASSERT_TRUE(art.ok());
  ASSERT_TRUE(fs::remove(objects_->object_path(art->sha256)));
  meta::StepRun gone = once();
  EXPECT_FALSE(gone.cached);
  EXPECT_GT(gone.job_id, 0);
  EXPECT_NE(gone.end_reason.find("is gone from the artifact store"), std::string::npos)
      << gone.end_reason;
  EXPECT_TRUE(once().cached) << "its new outputs are cached";
}

// A restart in the middle of a run: finished steps stay finished, the running job step is
// re-attached (its job is not started again), and an inline step that was running runs again.
TEST_F(PipelineServiceTest, ARestartedRunnerGoesOnWhereTheRunWas) {
  std::atomic<int> validations{0};
  options_.handlers["data.validate"] = [&](const StepCall&) -> Result<json> {
    ++validations;
    return json{{"ok", true}};
  };
  create(R"(name: resume
steps:
  - name: a
    kind: command
    with: {command: ["true"]}
  - name: b
    kind: command
    needs: [a]
    with: {command: [sh, -c, "while ! test -e go; do sleep 0.05; done"]}
  - name: c
    kind: data.validate
    needs: [b]
    with: {dataset: d@1}
)");
  start();
  const int64_t id = run("resume");
  ASSERT_TRUE(drive_until([&] {
    auto s = steps(id);
    return s.count("b") && s["b"].job_id > 0 &&
           store_->jobs().get(s["b"].job_id)->state == "RUNNING";
  }));
  const int64_t a_started = steps(id)["a"].started_at;
  // The runner stops (its server went down); the job service keeps b's process.
  pipes_->stop();
  pipes_.reset();
  write("go", "");
  ASSERT_TRUE(
      drive_until([&] { return store_->jobs().get(steps(id)["b"].job_id)->state == "SUCCEEDED"; }));
  // A new runner: b is taken from its job, c runs, a is left alone.
  PipelineServiceOptions po = options_;
  po.wake_jobs = [this] { jobs_->wake(); };
  pipes_ = std::make_unique<PipelineService>(*store_, po);
  pipes_->start();
  meta::PipelineRun r = wait_run(id);
  EXPECT_EQ(r.state, "SUCCEEDED") << r.end_reason;
  auto s = steps(id);
  EXPECT_EQ(s["a"].started_at, a_started);
  EXPECT_EQ(jobs_named("resume-a"), 1u);
  EXPECT_EQ(jobs_named("resume-b"), 1u) << "b's job was re-attached, not started again";
  EXPECT_EQ(s["c"].state, "SUCCEEDED");
  EXPECT_EQ(validations.load(), 1);

  // An inline step left RUNNING by a runner that died: run again by the next one, once.
  pipes_->stop();
  pipes_.reset();
  create(R"(name: inline
steps:
  - name: c
    kind: data.validate
    with: {dataset: d@1}
    cache: false
)");
  auto r2 = store_->pipelines().create_run("inline", json::object(), "manual", "", false, kAlice);
  ASSERT_TRUE(r2.ok());
  meta::StepRun c = meta::StepRun::of(r2->id, "c", -1, "RUNNING");
  c.attempts = 1;
  c.started_at = now_ms();
  ASSERT_TRUE(store_->pipelines().insert_step(c).ok());
  pipes_ = std::make_unique<PipelineService>(*store_, po);
  pipes_->start();
  r = wait_run(r2->id);
  EXPECT_EQ(r.state, "SUCCEEDED") << r.end_reason;
  EXPECT_EQ(validations.load(), 2);
  EXPECT_EQ(steps(r2->id)["c"].attempts, 1) << "a restart is not counted as an attempt";
}

// Triggers: a new dataset version, an alias moving, an interval and an alert each start a run
// with the event in its parameter, once per event, and one triggered run at a time.
TEST_F(PipelineServiceTest, TriggersStartOneRunPerEvent) {
  create(R"(name: on-data
params: {data: none}
steps:
  - name: use
    kind: command
    with: {command: [sh, -c, "echo ${params.data}"]}
    cache: false
triggers:
  - {dataset: d, param: data}
  - {alert: drift, param: data}
)");
  create(R"(name: on-alias
params: {model: none}
steps:
  - {name: use, kind: command, with: {command: ["true"]}, cache: false}
triggers:
  - {alias: m@production, param: model}
)");
  create(R"(name: ticking
steps:
  - {name: use, kind: command, with: {command: [sleep, "60"]}, cache: false}
triggers:
  - {every: 1s}
)");
  auto runs_of = [&](const std::string& name) {
    auto page = store_->pipelines().list_runs(name, "", 100, "");
    return page.ok() ? page->items : std::vector<meta::PipelineRun>();
  };
  start();
  // No version yet: nothing. The every-second trigger starts one run, which sleeps: no second
  // run starts while it runs (its slots are skipped).
  ASSERT_TRUE(drive_until([&] { return runs_of("ticking").size() == 1; }));
  push("d", "x\n1\n");
  ASSERT_TRUE(drive_until([&] {
    auto r = runs_of("on-data");
    return r.size() == 1 && r[0].state == "SUCCEEDED";
  }));
  auto r = runs_of("on-data");
  EXPECT_EQ(r[0].trigger, "dataset");
  EXPECT_EQ(r[0].event_id, "dataset:d=d@v1");
  EXPECT_EQ(r[0].params["data"], "d@v1");
  EXPECT_EQ(r[0].owner, "alice") << "a triggered run is its pipeline's owner's";
  // The same version again (another runner, a restart): no second run; a new version: one.
  ASSERT_TRUE(drive_until([&] { return runs_of("ticking").size() == 1 && now_ms() > 0; }));
  push("d", "x\n1\n2\n");
  ASSERT_TRUE(drive_until([&] {
    auto rr = runs_of("on-data");
    return rr.size() == 2 && rr[0].state == "SUCCEEDED";
  }));
  EXPECT_EQ(runs_of("on-data")[0].params["data"], "d@v2");
  // An alert: once per id.
  bool created = false;
  auto a1 = pipes_->fire_alert("on-data", "drift", "alert-1", &created);
  ASSERT_TRUE(a1.ok()) << a1.status().to_string();
  EXPECT_TRUE(created);
  EXPECT_EQ(a1->params["data"], "drift");
  auto a2 = pipes_->fire_alert("on-data", "drift", "alert-1", &created);
  ASSERT_TRUE(a2.ok());
  EXPECT_FALSE(created);
  EXPECT_EQ(a2->id, a1->id);
  auto other = pipes_->fire_alert("on-data", "latency", "alert-2");
  EXPECT_EQ(other.status().code(), StatusCode::kNotFound);
  EXPECT_NE(other.status().message().find("no alert trigger for 'latency'"), std::string::npos);
  // An alias moving: a run per version it names.
  auto exp = store_->runs().ensure_experiment("e", kAlice);
  ASSERT_TRUE(exp.ok());
  auto tracked = store_->runs().create_run(exp->id, "r", {}, {}, kAlice);
  ASSERT_TRUE(tracked.ok());
  auto stored = objects_->put("onnx bytes");
  ASSERT_TRUE(stored.ok());
  ASSERT_TRUE(
      store_->runs()
          .record_artifact(tracked->id, {"model.onnx", stored->sha256, stored->size}, kAlice)
          .ok());
  (void)store_->registry().create_model("m", "", kAlice);
  for (int v = 1; v <= 2; ++v) {
    auto mv = store_->registry().create_model_version("m", tracked->id, "model.onnx", "", kAlice);
    ASSERT_TRUE(mv.ok()) << mv.status().to_string();
  }
  ASSERT_TRUE(store_->registry().set_alias("m", "production", 1, kAlice).ok());
  ASSERT_TRUE(drive_until([&] { return runs_of("on-alias").size() == 1; }));
  EXPECT_EQ(runs_of("on-alias")[0].params["model"], "m@1");
  ASSERT_TRUE(drive_until([&] { return runs_of("on-alias")[0].state != "RUNNING"; }));
  ASSERT_TRUE(store_->registry().set_alias("m", "production", 2, kAlice).ok());
  ASSERT_TRUE(drive_until([&] { return runs_of("on-alias").size() == 2; }));
  EXPECT_EQ(runs_of("on-alias")[0].event_id, "alias:m@production=m@2");
  EXPECT_EQ(runs_of("ticking").size(), 1u) << "one triggered run at a time";
}

// A search step: a hyperparameter search whose best trial's run, metrics and registered model
// are the step's outputs, which a later step reads.
TEST_F(PipelineServiceTest, ASearchStepGivesItsBestTrial) {
  write("mlp.yaml", "name: t\ndata:\n  train: " DLSYS_SHARED_DATA
                    "/digits/digits.csv\n  label_column: -1\n  feature_scale: 0.0625\n"
                    "model:\n  input: [64]\n  layers: [{linear: {out: 16}}, relu, {linear: {out: "
                    "10}}]\ntrain:\n  epochs: 1\n  batch_size: 64\n  seed: 3\n"
                    "  optimizer: {name: adam, lr: 0.001}\n");
  write("search.yaml",
        "name: lr\ntrial: {spec: mlp.yaml, resources: {threads: 1}}\nalgorithm: grid\n"
        "space: {lr: {choice: [0.00001, 0.01]}}\nparallelism: 2\n"
        "register: {model: lr-best}\n");
  create(R"(name: tune
steps:
  - {name: tune, kind: search, with: {search: search.yaml}}
  - name: use
    kind: command
    with: {command: [sh, -c, "echo ${steps.tune.outputs.model} ${steps.tune.outputs.best_run}"]}
)");
  start();
  const int64_t id = run("tune");
  meta::PipelineRun r = wait_run(id);
  ASSERT_EQ(r.state, "SUCCEEDED") << r.end_reason;
  auto s = steps(id);
  const json& out = s["tune"].outputs;
  EXPECT_EQ(out["model"], "lr-best@1");
  ASSERT_TRUE(out.contains("best_run")) << out.dump();
  auto search = store_->searches().get(out["search_id"].get<int64_t>());
  ASSERT_TRUE(search.ok());
  EXPECT_EQ(search->name, "lr-p" + std::to_string(id) + "-tune") << "named for its run and step";
  EXPECT_EQ(search->state, "SUCCEEDED");
  // The better learning rate's trial is the best (0.00001 learns next to nothing in an epoch).
  auto trials = store_->searches().trials(search->id);
  ASSERT_TRUE(trials.ok());
  for (const auto& t : *trials)
    if (t.trial == search->best_trial) {
      EXPECT_EQ(t.params["lr"], 0.01);
    }
  EXPECT_GT(out["metrics.val_accuracy"].get<double>(), 0.5);
  EXPECT_EQ(s["use"].inputs["command"][2],
            "echo lr-best@1 " + std::to_string(out["best_run"].get<int64_t>()));
}

// What a review found: a handler that throws fails its step (not the server); outputs too big
// to keep fail their step, saying so; a retry re-runs a failed fan-out instance and the fan-in
// gets every item; a cancel drops a step still waiting for a worker.
TEST_F(PipelineServiceTest, BadHandlersFanOutRetriesAndQueuedCancelsAreHandled) {
  options_.workers = 1;
  std::atomic<int> calls{0};
  std::atomic<bool> release{false};
  options_.handlers["evaluate"] = [&](const StepCall& c) -> Result<json> {
    ++calls;
    const std::string mode = c.with.value("split", "");
    if (mode == "throw") throw std::runtime_error("a bug in a handler");
    if (mode == "big") return json{{"metrics.blob", std::string(2 << 20, 'x')}};
    if (mode == "block")
      while (!release.load()) std::this_thread::sleep_for(milliseconds(5));
    return json{{"metrics.accuracy", 0.5}};
  };
  create(R"(name: bad
params: {mode: throw}
steps:
  - {name: e, kind: evaluate, with: {model: m@1, dataset: d@1, split: "${params.mode}"}, cache: false}
)");
  start();
  meta::PipelineRun r = wait_run(run("bad"));
  EXPECT_EQ(r.state, "FAILED");
  EXPECT_NE(r.end_reason.find("the step's handler failed: a bug in a handler"), std::string::npos)
      << r.end_reason;
  r = wait_run(run("bad", {{"mode", "big"}}));
  EXPECT_EQ(r.state, "FAILED");
  EXPECT_NE(r.end_reason.find("its outputs cannot be recorded"), std::string::npos) << r.end_reason;

  // Fan-out: the instance for item 2 fails until a file exists; the retry runs only it.
  create(R"(name: fan
params: {items: [1, 2, 3]}
steps:
  - name: each
    kind: command
    for_each: ${params.items}
    with: {command: [sh, -c, "test ${item} != 2 || test -e ok2 || exit 1; echo '{\"metric\": \"v\", \"value\": ${item}}'"]}
    cache: false
  - name: all
    kind: command
    with: {command: [sh, -c, "echo ${steps.each.outputs.metrics.v}"]}
)");
  const int64_t id = run("fan");
  r = wait_run(id);
  EXPECT_EQ(r.state, "FAILED");
  auto s = steps(id);
  EXPECT_EQ(s["each#1"].state, "FAILED");
  const int64_t job0 = s["each#0"].job_id;
  write("ok2", "");
  ASSERT_TRUE(store_->pipelines().retry_run(id, kAlice).ok());
  pipes_->wake();
  r = wait_run(id);
  EXPECT_EQ(r.state, "SUCCEEDED") << r.end_reason;
  s = steps(id);
  EXPECT_EQ(s["each#0"].job_id, job0) << "a succeeded instance is not run again";
  EXPECT_EQ(s["each#1"].state, "SUCCEEDED");
  EXPECT_EQ(s["all"].inputs["command"][2], "echo [1.0,2.0,3.0]") << "every item in the fan-in";

  // One worker: the first evaluation blocks it, the second waits; a cancel drops the waiting
  // one without running it.
  create(R"(name: two
steps:
  - {name: a, kind: evaluate, with: {model: m@1, dataset: d@1, split: block}, cache: false}
  - {name: b, kind: evaluate, with: {model: m@1, dataset: d@1, split: x}, cache: false}
)");
  calls = 0;
  const int64_t two = run("two");
  ASSERT_TRUE(drive_until([&] {
    auto st = steps(two);
    return calls.load() == 1 && st.count("b") && st["b"].state == "RUNNING";
  }));
  ASSERT_TRUE(store_->pipelines().request_cancel(two, kAlice).ok());
  pipes_->wake();
  ASSERT_TRUE(drive_until([&] { return steps(two)["b"].state == "CANCELLED"; }));
  release = true;
  r = wait_run(two);
  EXPECT_EQ(r.state, "CANCELLED");
  EXPECT_EQ(calls.load(), 1) << "the waiting step never ran";
}

// Two runners on one database (two servers on one PostgreSQL): each inline step runs once.
TEST_F(PipelineServiceTest, TwoRunnersOnOneStoreRunEachStepOnce) {
  std::atomic<int> calls{0};
  std::mutex seen_mu;
  std::map<std::string, int> seen;
  options_.handlers["data.validate"] = [&](const StepCall& c) -> Result<json> {
    ++calls;
    {
      std::lock_guard<std::mutex> lock(seen_mu);
      ++seen[std::to_string(c.run->id) + "/" + std::to_string(c.item)];
    }
    std::this_thread::sleep_for(milliseconds(20));
    return json{{"ok", true}};
  };
  create(R"(name: many
params: {items: [1, 2, 3, 4, 5, 6, 7, 8]}
steps:
  - {name: v, kind: data.validate, for_each: "${params.items}", with: {dataset: d@1}, cache: false}
)");
  // Both pass over the runs every millisecond, so that they meet on the same steps.
  options_.poll = milliseconds(1);
  start();
  PipelineServiceOptions other = options_;
  other.runner = "the-other-runner";
  PipelineService second(*store_, other);
  second.start();
  std::vector<int64_t> ids;
  for (int i = 0; i < 6; ++i) {
    auto r = store_->pipelines().create_run(
        "many", {{"items", json::array({1, 2, 3, 4, 5, 6, 7, 8})}}, "manual", "", false, kAlice);
    ASSERT_TRUE(r.ok());
    ids.push_back(r->id);
  }
  for (int64_t id : ids) EXPECT_EQ(wait_run(id).state, "SUCCEEDED");
  second.stop();
  EXPECT_EQ(calls.load(), 48) << "8 instances x 6 runs, each once";
  for (const auto& [k, n] : seen) EXPECT_EQ(n, 1) << "run/item " << k;
}

// A notify step POSTs the run's identity and message to its URL (a listener on loopback here),
// and fails, naming the URL, when nothing answers.
TEST_F(PipelineServiceTest, ANotifyStepPostsToItsWebhook) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  const int port = ntohs(a.sin_port);
  std::string request;
  std::thread hook([&] {
    int c = ::accept(fd, nullptr, nullptr);
    if (c < 0) return;
    char buf[4096];
    // Read the head and the body (the client sends Content-Length).
    for (ssize_t n; (n = ::recv(c, buf, sizeof buf, 0)) > 0;) {
      request.append(buf, static_cast<size_t>(n));
      const size_t head = request.find("\r\n\r\n");
      const size_t cl = request.find("Content-Length: ");
      if (head != std::string::npos && cl != std::string::npos &&
          request.size() >= head + 4 + std::stoul(request.substr(cl + 16)))
        break;
    }
    const std::string answer =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    (void)::send(c, answer.data(), answer.size(), 0);
    ::close(c);
  });
  create("name: hooked\nsteps:\n  - {name: tell, kind: notify, with: {url: 'http://127.0.0.1:" +
         std::to_string(port) + "/hooks/dlsys', message: 'retrained'}}\n");
  create(R"(name: nobody
steps:
  - {name: tell, kind: notify, with: {url: "http://127.0.0.1:1/none"}}
)");
  start();
  const int64_t id = run("hooked");
  meta::PipelineRun r = wait_run(id);
  hook.join();
  ::close(fd);
  EXPECT_EQ(r.state, "SUCCEEDED") << r.end_reason;
  EXPECT_EQ(request.rfind("POST /hooks/dlsys HTTP/1.1", 0), 0u) << request;
  const json body = json::parse(request.substr(request.find("\r\n\r\n") + 4), nullptr, false);
  EXPECT_EQ(body["pipeline"], "hooked");
  EXPECT_EQ(body["run"], id);
  EXPECT_EQ(body["step"], "tell");
  EXPECT_EQ(body["message"], "retrained");
  r = wait_run(run("nobody"));
  EXPECT_EQ(r.state, "FAILED");
  EXPECT_NE(r.end_reason.find("notifying http://127.0.0.1:1/none"), std::string::npos)
      << r.end_reason;
}

}  // namespace
}  // namespace dlsys::flow
