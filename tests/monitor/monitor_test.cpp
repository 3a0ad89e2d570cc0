// Monitoring (issue 24) on the real digits data (shared/data/digits): the drift decision keeps
// its false-alarm rate when unshifted data is replayed and finds shifts; Page-Hinkley finds an
// accuracy drop; and the MonitorService, over a real SQLite store, a real dataset store and a
// sample log written by serving's RequestSampler, fires a drift alert (stored, sent to a webhook,
// starting a pipeline), joins delayed labels into live accuracy, and resolves.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <numeric>
#include <random>
#include <thread>

#include "api/http_server.h"
#include "api/router.h"
#include "core/file_util.h"
#include "data/dataset_store.h"
#include "data/export.h"
#include "data/ingest.h"
#include "data/push.h"
#include "meta/meta_store.h"
#include "monitor/column_sketch.h"
#include "monitor/drift_score.h"
#include "monitor/monitor_config.h"
#include "monitor/monitor_service.h"
#include "monitor/page_hinkley.h"
#include "monitor/reference_profile.h"
#include "serve/request_sampler.h"

namespace dlsys::monitor {
namespace {

namespace fs = std::filesystem;

const std::vector<std::string>& digit_features() {
  static const std::vector<std::string> f = [] {
    std::vector<std::string> v;
    for (int i = 0; i < 64; ++i) v.push_back("c" + std::to_string(i));
    return v;
  }();
  return f;
}

class DigitsFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("dlsys-monitor-test-" + random_hex(6));
    fs::create_directories(root_);
    auto ds = data::DatasetStore::open((root_ / "datasets").string());
    ASSERT_TRUE(ds.ok()) << ds.status().to_string();
    datasets_ = std::move(*ds);
    auto src = data::open_csv(std::string(DLSYS_SHARED_DIR) + "/data/digits/digits.csv", {});
    ASSERT_TRUE(src.ok()) << src.status().to_string();
    data::PushOptions po;
    po.train = 0.7;
    po.validation = 0.3;
    po.test = 0;
    auto pushed = data::push(*datasets_, "digits", **src, po);
    ASSERT_TRUE(pushed.ok()) << pushed.status().to_string();
    version_ = pushed->version;
    // The validation rows (features and label) replayed as traffic.
    ASSERT_TRUE(
        data::for_each_batch(*datasets_, version_, "validation", {}, [&](const data::RowBatch& b) {
          for (int64_t r = 0; r < b.rows; ++r) {
            std::vector<double> row;
            for (int c = 0; c < 64; ++c) row.push_back(double(b.columns[c].i64[r]));
            rows_.push_back(row);
            labels_.push_back(b.columns[64].i64[r]);
          }
          return Status::OK();
        }).ok());
  }
  void TearDown() override { fs::remove_all(root_); }

  fs::path root_;
  std::unique_ptr<data::DatasetStore> datasets_;
  data::VersionInfo version_;
  std::vector<std::vector<double>> rows_;
  std::vector<int64_t> labels_;
};

// Windows of `n` rows drawn (seeded) from the validation rows, transformed by `shift` (false:
// the row is left out); without replacement, so that a window is a sample of the population as
// new traffic is, not of the few hundred validation rows. Returns the share of windows where
// any column drifted.
double drifted_share(const ReferenceProfile& ref, const std::vector<std::vector<double>>& rows,
                     const std::vector<int64_t>& labels, int windows, int n, const DriftRule& rule,
                     const std::function<bool(std::vector<double>&, int64_t)>& shift) {
  std::mt19937_64 rng(42);
  const double alpha = rule.false_alarm_rate / double(ref.columns.size());
  int drifted = 0;
  std::vector<size_t> order(rows.size());
  for (int w = 0; w < windows; ++w) {
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    std::vector<ColumnSketch> sk;
    for (const auto& c : ref.columns) sk.emplace_back(c.bins.size());
    int taken = 0;
    for (size_t k : order) {
      if (taken == n) break;
      std::vector<double> row = rows[k];
      if (!shift(row, labels[k])) continue;
      for (size_t c = 0; c < ref.columns.size(); ++c) sk[c].add(row[c], ref.columns[c].bins);
      ++taken;
    }
    EXPECT_EQ(taken, n) << "the validation split has too few rows for windows of " << n;
    bool any = false;
    for (size_t c = 0; c < ref.columns.size(); ++c)
      any |= score_drift(ref.columns[c].counts, sk[c].bins, rule, alpha).drift;
    drifted += any;
  }
  return double(drifted) / windows;
}

TEST_F(DigitsFixture, ReplayedDataKeepsTheFalseAlarmRateAndShiftsAreFound) {
  auto ref = profile_dataset(*datasets_, version_, "train", digit_features(), "", {});
  ASSERT_TRUE(ref.ok()) << ref.status().to_string();
  ASSERT_EQ(ref->columns.size(), 64u);
  EXPECT_GT(ref->rows, 1000);
  // A constant column of the training data (a corner pixel) has one inner bin.
  EXPECT_EQ(ref->columns[0].bins.size(), 3u);
  DriftRule rule;
  rule.false_alarm_rate = 0.05;
  rule.psi = 0;  // the noise limit alone: the strictest test of the calibration
  rule.ks = 0;
  auto same = [](std::vector<double>&, int64_t) { return true; };
  // Small and large windows alike: unshifted traffic alarms at most at the configured rate
  // (with slack for 200 windows' sampling error).
  for (int n : {50, 150, 400}) {
    double share = drifted_share(*ref, rows_, labels_, 200, n, rule, same);
    std::printf("unshifted, %d rows per window: %.3f of windows drifted (configured 0.05)\n", n,
                share);
    EXPECT_LE(share, 0.09) << n << " rows per window";
  }
  // Pixel intensities scaled by 0.7: every window drifts, even a small one.
  auto dim = [](std::vector<double>& r, int64_t) {
    for (double& x : r) x = std::round(x * 0.7);
    return true;
  };
  EXPECT_EQ(drifted_share(*ref, rows_, labels_, 50, 100, rule, dim), 1.0);
  // A class removed (no zeros, a tenth of the rows): found in most windows of 400 rows.
  auto no_zeros = [](std::vector<double>&, int64_t y) { return y != 0; };
  double found = drifted_share(*ref, rows_, labels_, 50, 400, rule, no_zeros);
  std::printf("class 0 removed, 400 rows per window: %.2f of windows drifted\n", found);
  EXPECT_GE(found, 0.6);
  // With the default effect floors, the same replay is quieter still, and the dimmed data
  // still drifts.
  DriftRule floors;
  floors.false_alarm_rate = 0.05;
  EXPECT_LE(drifted_share(*ref, rows_, labels_, 200, 400, floors, same), 0.05);
  EXPECT_EQ(drifted_share(*ref, rows_, labels_, 50, 100, floors, dim), 1.0);
}

TEST(PageHinkleyTest, FindsAnAccuracyDropAndIsQuietBeforeIt) {
  int false_flags = 0, found = 0;
  int64_t total_delay = 0;
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    std::mt19937_64 rng(seed);
    std::bernoulli_distribution before(0.03), after(0.20);
    PageHinkley ph;
    for (int i = 0; i < 2000; ++i) false_flags += ph.add(before(rng) ? 1 : 0);
    for (int i = 0; i < 2000; ++i)
      if (ph.add(after(rng) ? 1 : 0)) {
        ++found;
        total_delay += i + 1;
        break;
      }
  }
  std::printf(
      "accuracy 97%% -> 80%%: found in %d of 20 runs, mean delay %.1f labels, %d false "
      "flags in 40000 labels before the drop\n",
      found, found ? double(total_delay) / found : 0.0, false_flags);
  EXPECT_EQ(found, 20);
  EXPECT_LE(double(total_delay) / found, 150);
  EXPECT_LE(false_flags, 1);
}

TEST(MonitorConfigTest, ErrorsNameTheLineAndField) {
  auto bad =
      parse_monitor_config("rules:\n  - name: a\n    deployment: d\n    signal: drfit\n", "m.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("m.yaml:4: rules[0].signal"), std::string::npos)
      << bad.status().message();
  EXPECT_NE(bad.status().message().find("drift"), std::string::npos);
  auto dur = parse_monitor_config("defaults:\n  windows: [5x]\n", "m.yaml");
  ASSERT_FALSE(dur.ok());
  EXPECT_NE(dur.status().message().find("m.yaml:2"), std::string::npos) << dur.status().message();
  auto good = parse_monitor_config(
      "defaults: {windows: [1m, 5m]}\nrules:\n  - {name: r, deployment: d, signal: accuracy, "
      "below: 0.9, for: 10m, window: 5m, notify: {pipeline: retrain}}\n",
      "m.yaml");
  ASSERT_TRUE(good.ok()) << good.status().to_string();
  ASSERT_EQ(good->rules.size(), 1u);
  EXPECT_FALSE(good->rules[0].above);
  EXPECT_EQ(good->rules[0].for_s, 600);
  EXPECT_EQ(good->rules[0].window_s, 300);
  EXPECT_EQ(good->rules[0].pipeline, "retrain");
  EXPECT_FALSE(
      parse_monitor_config("rules:\n  - {name: r, deployment: d, signal: drift, window: 2m}\n",
                           "m.yaml")
          .ok());  // not one of the windows
}

// The service end to end, on the real clock with 1-second windows.
TEST_F(DigitsFixture, ServiceFiresAStoredAlertOnShiftedTrafficAndJoinsLabels) {
  auto store = meta::MetaStore::open((root_ / "meta.db").string(), 4);
  ASSERT_TRUE(store.ok()) << store.status().to_string();
  meta::MetaStore& ms = **store;
  const meta::Principal who{"tester", meta::Role::kAdmin};
  ASSERT_TRUE(ms.registry().create_model("digits", "", who).ok());
  ASSERT_TRUE(ms.registry().create_file_version("digits", "model.onnx", std::string(64, 'a'), 1, "", who).ok());
  meta::Deployment dep;
  dep.name = "digits";
  dep.model = "digits";
  dep.ref = "1";
  dep.config = {{"sample_rate", 1.0}};
  ASSERT_TRUE(ms.deployments().create(dep, who).ok());
  // A webhook receiver on loopback.
  std::atomic<int> hooks{0};
  std::string last_hook;
  std::mutex hook_mu;
  api::Router hook_router(api::Router::Options{});
  hook_router.add("POST", "/hook", api::Access::kPublic,
                  [&](api::Request& r) -> Result<api::Response> {
                    std::lock_guard<std::mutex> l(hook_mu);
                    last_hook = r.body;
                    ++hooks;
                    return api::Response::json_body({{"ok", true}});
                  });
  api::ServerOptions so;
  so.host = "127.0.0.1";
  so.port = 0;
  api::HttpServer hook_server(hook_router, so);
  ASSERT_TRUE(hook_server.listen().ok());
  std::thread hook_thread([&] { hook_server.run(); });
  const std::string config = fmt::format(
      "defaults: {{windows: [1s], history: 60, drift: {{min_count: 20}}, change: {{min_count: "
      "20}}}}\n"
      "deployments:\n  digits: {{reference: '{}:train', windows: [1s], history: 60, drift: "
      "{{min_count: 20}}, change: {{min_count: 20}}}}\n"
      "rules:\n"
      "  - {{name: digits-drift, deployment: digits, signal: drift, severity: critical,\n"
      "     notify: {{webhook: 'http://127.0.0.1:{}/hook', pipeline: retrain}}}}\n"
      "  - {{name: digits-accuracy, deployment: '*', signal: accuracy, below: 0.9}}\n",
      version_.label(), hook_server.port());
  ASSERT_TRUE(parse_monitor_config(config, "test").ok())
      << parse_monitor_config(config, "test").status().to_string();
  ASSERT_TRUE(ms.monitor().put_config(config, who).ok());

  std::vector<std::string> fired;
  std::mutex fired_mu;
  MonitorServiceOptions mo;
  mo.sample_root = (root_ / "samples").string();
  mo.datasets = datasets_.get();
  mo.grace = std::chrono::milliseconds(300);
  mo.model_facts = [](const std::string&, int64_t) -> Result<ModelFacts> {
    ModelFacts f;
    f.feature_names = digit_features();
    for (int i = 0; i < 10; ++i) f.class_names.push_back(std::to_string(i));
    f.task = "classification";
    return f;
  };
  mo.fire_pipeline = [&](const std::string& p, const std::string& alert, const std::string& ev) {
    std::lock_guard<std::mutex> l(fired_mu);
    fired.push_back(p + "/" + alert + "/" + ev);
    return Status::OK();
  };
  MonitorService svc(ms, mo);
  serve::RequestSamplerOptions ro;
  ro.dir = mo.sample_root;
  serve::RequestSampler sampler(ro);
  // One request per row: x f32 [1, 64], the output a one-hot "logit" row [1, 10] predicting
  // the true class, except every tenth (90% accuracy... then all wrong for the drop below).
  int64_t next_id = 0;
  auto serve_rows = [&](int n, bool dim, bool wrong,
                        std::vector<std::pair<std::string, int64_t>>* ids) {
    std::mt19937_64 rng(next_id + 7);
    for (int i = 0; i < n; ++i) {
      size_t k = rng() % rows_.size();
      serve::V2InferRequest req;
      req.id = fmt::format("req-{}", next_id++);
      Tensor x = Tensor::empty(DType::kF32, {1, 64});
      for (int c = 0; c < 64; ++c)
        x.data_as<float>()[c] = float(dim ? std::round(rows_[k][c] * 0.5) : rows_[k][c]);
      req.inputs = {{"input", x}};
      req.batch_rows = 1;
      Tensor y = Tensor::empty(DType::kF32, {1, 10});
      const int64_t predicted = wrong ? (labels_[k] + 1) % 10 : labels_[k];
      for (int c = 0; c < 10; ++c) y.data_as<float>()[c] = c == predicted ? 5.f : 0.f;
      auto p = sampler.begin(1.0, "digits", req, {{"output", DType::kF32, {-1, 10}}});
      ASSERT_NE(p, nullptr);
      sampler.finish(p, "digits", 1, 100, {y});
      if (ids) ids->emplace_back(req.id, labels_[k]);
    }
    sampler.flush();
  };
  // Let a second boundary pass, so that the windows below are whole.
  auto next_second = [] {
    const int64_t now = now_ms();
    std::this_thread::sleep_for(std::chrono::milliseconds(1000 - now % 1000 + 20));
  };
  auto open_alerts = [&](const std::string& state) {
    auto a = ms.monitor().list_alerts(state, "digits", 100);
    EXPECT_TRUE(a.ok());
    return a.ok() ? *a : std::vector<meta::AlertRecord>{};
  };
  // Unshifted traffic with right answers: nothing fires.
  std::vector<std::pair<std::string, int64_t>> ids;
  next_second();
  serve_rows(300, false, false, &ids);
  next_second();
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  ASSERT_TRUE(svc.tick().ok());
  EXPECT_TRUE(open_alerts("FIRING").empty());
  EXPECT_TRUE(open_alerts("PENDING").empty());
  // The labels of those requests: live accuracy 1.
  std::vector<std::pair<std::string, nlohmann::json>> labels;
  for (const auto& [id, y] : ids) labels.emplace_back(id, nlohmann::json(std::to_string(y)));
  auto added = ms.monitor().add_feedback("digits", labels);
  ASSERT_TRUE(added.ok());
  EXPECT_EQ(*added, 300);
  EXPECT_EQ(*ms.monitor().add_feedback("digits", {labels[0]}), 0);  // a repeat is ignored
  ASSERT_TRUE(svc.tick().ok());
  auto report = svc.report("digits", 0, 10);
  ASSERT_TRUE(report.ok()) << report.status().to_string();
  EXPECT_EQ((*report)["labels"]["joined"], 300);
  double acc = -1;
  for (const auto& q : (*report)["quality"])
    if (q.value("labels", 0) > 0) acc = q["accuracy"].get<double>();
  EXPECT_EQ(acc, 1.0);
  // Dimmed inputs: the drift rule fires in the next window, is stored, the webhook gets it and
  // the pipeline starts once.
  next_second();
  serve_rows(300, true, false, nullptr);
  next_second();
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  ASSERT_TRUE(svc.tick().ok());
  auto firing = open_alerts("FIRING");
  ASSERT_EQ(firing.size(), 1u);
  EXPECT_EQ(firing[0].rule, "digits-drift");
  EXPECT_EQ(firing[0].severity, "critical");
  EXPECT_GT(firing[0].value, 10);  // many pixels drifted
  svc.flush_notifications();
  EXPECT_EQ(hooks.load(), 1);
  {
    std::lock_guard<std::mutex> l(hook_mu);
    auto body = nlohmann::json::parse(last_hook);
    EXPECT_EQ(body["state"], "FIRING");
    EXPECT_EQ(body["deployment"], "digits");
  }
  {
    std::lock_guard<std::mutex> l(fired_mu);
    ASSERT_EQ(fired.size(), 1u);
    EXPECT_EQ(fired[0], fmt::format("retrain/digits-drift/alert-{}", firing[0].id));
  }
  EXPECT_NE(svc.metrics_text().find("dlsys_alerts_firing{rule=\"digits-drift\",deployment="
                                    "\"digits\",severity=\"critical\"} 1"),
            std::string::npos);
  // Wrong answers, labelled: live accuracy drops below 0.9 and that rule fires too.
  ids.clear();
  next_second();
  serve_rows(100, false, true, &ids);
  labels.clear();
  for (const auto& [id, y] : ids) labels.emplace_back(id, nlohmann::json(y));
  ASSERT_TRUE(ms.monitor().add_feedback("digits", labels).ok());
  ASSERT_TRUE(svc.tick().ok());
  bool accuracy_fired = false;
  for (const auto& a : open_alerts("FIRING")) accuracy_fired |= a.rule == "digits-accuracy";
  EXPECT_TRUE(accuracy_fired);
  // Unshifted traffic again: the drift alert resolves (the webhook hears that too).
  next_second();
  serve_rows(300, false, false, nullptr);
  next_second();
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  ASSERT_TRUE(svc.tick().ok());
  bool resolved = false;
  for (const auto& a : open_alerts("RESOLVED")) resolved |= a.rule == "digits-drift";
  EXPECT_TRUE(resolved);
  svc.flush_notifications();
  EXPECT_EQ(hooks.load(), 2);
  // A restarted monitor reads the same samples again and takes over the open alerts.
  MonitorService again(ms, mo);
  ASSERT_TRUE(again.tick().ok());
  auto r2 = again.report("digits", 0, 60);
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ((*r2)["samples"], 1000);
  sampler.stop();
  hook_server.shutdown();
  hook_thread.join();
}

}  // namespace
}  // namespace dlsys::monitor
