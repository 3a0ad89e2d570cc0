// A hyperparameter search run for real (jobs/search_service.h): the job service runs each trial
// as `dlsys train` on the digits MLP, the search service promotes the best by ASHA. The promoted
// trials continue from their checkpoints: the best trial's model is byte-identical to a run
// trained for the top budget in one go, and its run has one evaluation per epoch. A search whose
// services stop in the middle (a server restart) goes on without starting any trial again and
// ends with the same model.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "jobs/job_service.h"
#include "jobs/search_policy.h"
#include "jobs/search_service.h"
#include "jobs/search_spec.h"

namespace dlsys::jobs {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

class SearchServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dlsys-search-" + std::to_string(getpid()));
    fs::remove_all(dir_);
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
    options_.stop_grace = milliseconds(20000);
    options_.dlsys_exe = DLSYS_BIN;
    options_.data_dir = dir_.string();  // its meta.db is the test's store
    options_.checkpoint_every = 20;
    std::ofstream(dir_ / "mlp.yaml")
        << "name: search-test\n"
           "data:\n"
           "  train: " DLSYS_SHARED_DATA
           "/digits/digits.csv\n"
           "  label_column: -1\n"
           "  feature_scale: 0.0625\n"
           "model:\n"
           "  input: [64]\n"
           "  layers: [{linear: {out: 32}}, relu, {linear: {out: 10}}]\n"
           "train:\n"
           "  epochs: 1\n"
           "  batch_size: 64\n"
           "  seed: 3\n"
           "  optimizer: {name: adam, lr: 0.001}\n";
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }
  // An ASHA search over 6 learning rates: rungs of 1, 3 and 9 epochs, 2 trials at a time.
  int64_t submit_search() {
    auto spec = parse_search_spec(
        "name: lr\ntrial: {spec: " + (dir_ / "mlp.yaml").string() +
            ", resources: {threads: 1}}\nalgorithm: grid\n"
            "space: {lr: {choice: [0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03]}}\n"
            "parallelism: 2\nepochs: 9\nasha: {min_epochs: 1, reduction_factor: 3}\n"
            "register: {model: lr-best, alias: candidate}\n",
        "search.yaml");
    EXPECT_TRUE(spec.ok()) << spec.status().to_string();
    auto s = store_->searches().create("lr", to_json(*spec), {"alice", meta::Role::kEditor});
    EXPECT_TRUE(s.ok()) << s.status().to_string();
    return s.ok() ? s->id : 0;
  }
  // Ticks both services, as the server's job thread does, until `until` says stop or the search
  // ends (60 s at most). Returns whether `until` stopped it.
  template <typename Until>
  bool drive(JobService& jobs, SearchService& searches, int64_t id, Until until) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      auto t = jobs.tick();
      EXPECT_TRUE(t.ok()) << t.status().to_string();
      auto q = searches.tick();
      EXPECT_TRUE(q.ok()) << q.status().to_string();
      if (until()) return true;
      if (store_->searches().get(id)->state != "RUNNING") return false;
      if (q.ok() && *q == 0) jobs.wait(milliseconds(200));
    }
    ADD_FAILURE() << "the search did not end in 60 s";
    return false;
  }
  std::string read(const fs::path& p) {
    std::ifstream f(p);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  // The model of one uninterrupted `dlsys train` of the spec with `lr` for `epochs`, as a job
  // runs it.
  std::string reference_model(const nlohmann::json& lr, int epochs) {
    const fs::path out = dir_ / "reference";
    std::string cmd = std::string(DLSYS_BIN) + " train " + (dir_ / "mlp.yaml").string() +
                      " --quiet --threads 1 --set train.checkpoint_every=20 --set lr=" + lr.dump() +
                      " --set epochs=" + std::to_string(epochs) + " --out " + out.string() +
                      " >/dev/null";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    return read(out / "model.onnx");
  }
  // Checks the ended search `id`: every trial once, its best at the top rung with the model
  // of an uninterrupted run, registered, and its run's history one evaluation per epoch.
  void check_finished(int64_t id) {
    meta::Search s = store_->searches().get(id).value();
    ASSERT_EQ(s.state, "SUCCEEDED") << s.end_reason;
    auto trials = store_->searches().trials(id).value();
    ASSERT_EQ(trials.size(), 6u);
    for (const auto& t : trials)
      EXPECT_NE(t.state, "FAILED") << "trial " << t.trial << ": " << t.end_reason << "\n"
                                   << read(dir_ / "jobs" / std::to_string(t.job_id) / "log");
    std::set<int64_t> jobs;
    for (const auto& t : trials) jobs.insert(t.job_id);
    EXPECT_EQ(jobs.size(), 6u) << "one job per trial, none started twice";
    EXPECT_EQ(store_->jobs().list("", "", 100, "")->items.size(), 6u);
    ASSERT_GE(s.best_trial, 0);
    const meta::SearchTrial& best = trials.at(s.best_trial);
    EXPECT_EQ(best.state, "COMPLETED");
    EXPECT_EQ(best.rung, 2);
    ASSERT_EQ(best.results.size(), 3u);
    // ASHA: every trial at 1 epoch, fewer at 3, fewer still at 9 (how many depends on the order
    // results arrive in: a promotion is decided on the results known then).
    int at_rung[3] = {0, 0, 0};
    for (const auto& t : trials)
      for (size_t r = 0; r < t.results.size(); ++r) ++at_rung[r];
    EXPECT_EQ(at_rung[0], 6);
    EXPECT_GE(at_rung[1], 2);
    EXPECT_LT(at_rung[1], 6);
    EXPECT_GE(at_rung[2], 1);
    EXPECT_LT(at_rung[2], at_rung[1]);
    // No trial trained a step twice: the step numbers in each job's log never go back (a trial
    // started again, or resumed from an older checkpoint, would repeat some).
    for (const auto& t : trials) {
      const std::string log = read(dir_ / "jobs" / std::to_string(t.job_id) / "log");
      int64_t prev = -1;
      for (size_t at = log.find("\"step\":"); at != std::string::npos;
           at = log.find("\"step\":", at + 1)) {
        const int64_t step = std::atoll(log.c_str() + at + 7);
        ASSERT_GE(step, prev) << "trial " << t.trial << " went back to step " << step;
        prev = step;
      }
      EXPECT_GT(prev, 0) << "trial " << t.trial << " reported no step";
    }
    // Trained 1, then 2 more, then 6 more epochs: the weights of 9 epochs in one go.
    meta::Job job = store_->jobs().get(best.job_id).value();
    const fs::path run = dir_ / "jobs" / std::to_string(job.id) / "run";
    EXPECT_EQ(read(run / "model.onnx"), reference_model(best.params["lr"], 9))
        << "the promoted trial did not continue from its checkpoints exactly";
    auto history = store_->runs().metric_history(job.run_id, "val_accuracy", 0).value();
    ASSERT_EQ(history.points.size(), 9u) << "one evaluation per epoch over the three rungs";
    for (size_t i = 1; i < history.points.size(); ++i)
      EXPECT_GT(history.points[i].step, history.points[i - 1].step);
    EXPECT_EQ(history.points.back().value, *best.results.back());
    // Registered: lr-best@candidate is the best trial's run.
    auto v = store_->registry().get_version_by_alias("lr-best", "candidate");
    ASSERT_TRUE(v.ok()) << v.status().to_string();
    EXPECT_EQ(v->run_id, job.run_id);
    EXPECT_EQ(s.model_version, v->version);
  }

  fs::path dir_;
  std::unique_ptr<meta::MetaStore> store_;
  std::unique_ptr<meta::ArtifactStore> objects_;
  JobServiceOptions options_;
};

TEST_F(SearchServiceTest, AshaPromotesTheBestAndTheyContinueFromTheirCheckpoints) {
  int64_t id = submit_search();
  JobService jobs(*store_, options_);
  ASSERT_TRUE(jobs.recover().ok());
  SearchService searches(*store_, {objects_.get(), nullptr});
  drive(jobs, searches, id, [] { return false; });
  check_finished(id);
}

TEST_F(SearchServiceTest, ARestartInTheMiddleStartsNoTrialAgain) {
  int64_t id = submit_search();
  {
    JobService jobs(*store_, options_);
    ASSERT_TRUE(jobs.recover().ok());
    SearchService searches(*store_, {objects_.get(), nullptr});
    // Until a promoted trial's job runs: the server stops then (its trials checkpoint).
    bool stopped = drive(jobs, searches, id, [&] {
      const auto trials = store_->searches().trials(id).value();  // named: a temporary dangles
      for (const auto& t : trials)
        if (t.rung > 0 && t.state == "RUNNING" && store_->jobs().get(t.job_id)->state == "RUNNING")
          return true;
      return false;
    });
    ASSERT_TRUE(stopped) << "no trial was promoted";
    ASSERT_TRUE(jobs.shutdown(std::chrono::seconds(20)).ok());
  }
  // The next server: the same store, new services.
  JobService jobs(*store_, options_);
  ASSERT_TRUE(jobs.recover().ok());
  SearchService searches(*store_, {objects_.get(), nullptr});
  drive(jobs, searches, id, [] { return false; });
  check_finished(id);
}

}  // namespace
}  // namespace dlsys::jobs
