// Monitoring (issue 24) on the real digits data (shared/data/digits): the drift decision keeps
// its false-alarm rate when unshifted data is replayed and finds shifts; Page-Hinkley finds an
// accuracy drop; and the MonitorService, over a real SQLite store, a real dataset store and a
// sample log written by serving's RequestSampler, fires a drift alert (stored, sent to a webhook,
// starting a pipeline), joins delayed labels into live accuracy, and resolves.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <numeric>
#include <random>
#include <sstream>
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
#include "monitor/monitor_routes.h"
#include "monitor/monitor_service.h"
#include "monitor/page_hinkley.h"
#include "monitor/reference_profile.h"
#include "serve/request_sampler.h"
#include "tensor/npy.h"

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

// A metadata store at `path` with model `model` (version 1, a registered file) served as
// deployment `name` with `config`; null (and a failed expectation) when any step fails.
std::unique_ptr<meta::MetaStore> StoreWithDeployment(const fs::path& path, const std::string& name,
                                                     const std::string& model,
                                                     const nlohmann::json& config) {
  auto store = meta::MetaStore::open(path.string(), 4);
  EXPECT_TRUE(store.ok()) << store.status().to_string();
  if (!store.ok()) return nullptr;
  const meta::Principal who{"tester", meta::Role::kAdmin};
  meta::Deployment dep;
  dep.name = name;
  dep.model = model;
  dep.ref = "1";
  dep.config = config;
  const bool ok = (*store)->registry().create_model(model, "", who).ok() &&
                  (*store)
                      ->registry()
                      .create_file_version(model, "model.onnx", std::string(64, 'a'), 1, "", who)
                      .ok() &&
                  (*store)->deployments().create(dep, who).ok();
  EXPECT_TRUE(ok) << "registering " << model << " and deploying it as " << name;
  return ok ? std::move(*store) : nullptr;
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
  // Per-column tests only here (no projection columns).
  auto ref = profile_dataset(*datasets_, version_, "train", digit_features(), "", {},
                             TensorColumns{256, 0});
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
  EXPECT_GE(found, 0.9);
  // With the default effect floors, the same replay is quieter still, and the dimmed data
  // still drifts.
  DriftRule floors;
  floors.false_alarm_rate = 0.05;
  EXPECT_LE(drifted_share(*ref, rows_, labels_, 200, 400, floors, same), 0.05);
  EXPECT_EQ(drifted_share(*ref, rows_, labels_, 50, 100, floors, dim), 1.0);
}

// The multivariate signal: within each window the pixels are shuffled across rows, column by
// column, so every pixel keeps exactly its distribution and only how pixels go together changes.
// No per-column test can see that; the projection's components do. Unshifted windows stay quiet
// on both.
TEST_F(DigitsFixture, TheProjectionFindsAChangeThePerColumnTestsCannotSee) {
  auto ref = profile_dataset(*datasets_, version_, "train", digit_features(), "", {});
  ASSERT_TRUE(ref.ok()) << ref.status().to_string();
  ASSERT_FALSE(ref->projection.empty());
  ASSERT_EQ(ref->projection.components.size(), 4u);
  ASSERT_EQ(ref->columns.size(), 68u);
  EXPECT_EQ(ref->columns[ref->projection_first].name, "__pc1");
  DriftRule rule;  // the defaults: effect floors and calibrated noise levels
  const double alpha = rule.false_alarm_rate / double(ref->columns.size());
  std::mt19937_64 rng(9);
  const int n = 400, windows = 20;
  int column_alarms[2] = {0, 0}, projection_alarms[2] = {0, 0};
  std::vector<size_t> order(rows_.size());
  for (int shuffled = 0; shuffled < 2; ++shuffled)
    for (int w = 0; w < windows; ++w) {
      std::iota(order.begin(), order.end(), 0);
      std::shuffle(order.begin(), order.end(), rng);
      std::vector<std::vector<double>> win;
      for (int i = 0; i < n; ++i) win.push_back(rows_[order[i]]);
      if (shuffled)
        for (int c = 0; c < 64; ++c) {
          std::vector<double> col;
          for (auto& r : win) col.push_back(r[c]);
          std::shuffle(col.begin(), col.end(), rng);
          for (int i = 0; i < n; ++i) win[i][c] = col[i];
        }
      std::vector<ColumnSketch> sk;
      for (const auto& c : ref->columns) sk.emplace_back(c.bins.size());
      std::vector<double> full(ref->columns.size());
      for (const auto& r : win) {
        std::copy(r.begin(), r.end(), full.begin());
        ref->projection.project(full.data(), full.data() + ref->projection_first);
        for (size_t c = 0; c < full.size(); ++c) sk[c].add(full[c], ref->columns[c].bins);
      }
      bool col_drift = false, pc_drift = false;
      for (size_t c = 0; c < ref->columns.size(); ++c) {
        bool d = score_drift(ref->columns[c].counts, sk[c].bins, rule, alpha).drift;
        (static_cast<int>(c) >= ref->projection_first ? pc_drift : col_drift) |= d;
      }
      column_alarms[shuffled] += col_drift;
      projection_alarms[shuffled] += pc_drift;
    }
  std::printf(
      "unshifted: %d/%d windows with a column drifted, %d/%d with a component drifted; "
      "pixels shuffled across rows: %d/%d and %d/%d\n",
      column_alarms[0], windows, projection_alarms[0], windows, column_alarms[1], windows,
      projection_alarms[1], windows);
  EXPECT_LE(column_alarms[0], 1);
  EXPECT_LE(projection_alarms[0], 1);
  EXPECT_LE(column_alarms[1], 1) << "each pixel keeps its distribution";
  EXPECT_EQ(projection_alarms[1], windows) << "how pixels go together changed";
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

// The bins give a column's smallest value a bin of its own and judge out-of-range values apart:
// a 0/1 feature whose share of ones moves, and a column the training data had constant that now
// varies, both drift; the same shares as the reference do not.
TEST(DriftScoreTest, BinaryAndConstantColumnsDrift) {
  std::vector<double> binary(1000, 0.0);
  for (int i = 0; i < 100; ++i) binary[i * 10] = 1;  // 10% ones
  std::sort(binary.begin(), binary.end());
  const ColumnBins b = ColumnBins::from_sorted(binary);
  // Interpolated quantiles may add an edge between the two values: below, {0}, (0, e], ...,
  // (.., 1], above.
  ASSERT_EQ(b.edges.front(), 0);
  ASSERT_EQ(b.edges.back(), 1);
  EXPECT_EQ(b.bin_of(0), 1u);  // the zeros: a bin of their own
  EXPECT_EQ(b.bin_of(1), b.size() - 2);
  EXPECT_EQ(b.bin_of(-1), 0u);
  EXPECT_EQ(b.bin_of(2), b.size() - 1);
  std::vector<int64_t> ref(b.size(), 0);
  for (double x : binary) ++ref[b.bin_of(x)];
  auto window = [&](double ones, size_t bins, const ColumnBins& cb, double other = 1) {
    ColumnSketch sk(bins);
    for (int i = 0; i < 400; ++i) sk.add(i < ones * 400 ? other : 0, cb);
    return sk;
  };
  DriftRule rule;
  const double alpha = 0.01;
  EXPECT_FALSE(score_drift(ref, window(0.1, b.size(), b).bins, rule, alpha).drift);
  DriftScore moved = score_drift(ref, window(0.9, b.size(), b).bins, rule, alpha);
  EXPECT_TRUE(moved.drift) << moved.psi << " " << moved.ks;

  const std::vector<double> zeros(1000, 0.0);
  const ColumnBins c = ColumnBins::from_sorted(zeros);
  ASSERT_EQ(c.size(), 3u);  // below, {0}, above
  std::vector<int64_t> cref(c.size(), 0);
  for (double x : zeros) ++cref[c.bin_of(x)];
  EXPECT_FALSE(score_drift(cref, window(0, c.size(), c).bins, rule, alpha).drift);
  ColumnSketch lit = window(0.1, c.size(), c, 12);  // a tenth of the rows now 12
  EXPECT_EQ(lit.out_of_range(), 40);
  DriftScore d = score_drift(cref, lit.bins, rule, alpha);
  EXPECT_TRUE(d.drift) << d.psi << " " << d.ks;
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
  for (const char* hook : {"https://h/x", "http://:80/x", "http://h:0/x", "http://h:99999/",
                           "http://h:abc/", "http://[::1]:80/", "http://h/a b"}) {
    auto r = parse_monitor_config(
        fmt::format("rules:\n  - {{name: r, deployment: d, signal: drift, notify: {{webhook: "
                    "'{}'}}}}\n",
                    hook),
        "m.yaml");
    ASSERT_FALSE(r.ok()) << hook;
    EXPECT_NE(r.status().message().find("m.yaml:2: rules[0].notify.webhook"), std::string::npos)
        << r.status().message();
  }
  auto url = parse_webhook_url("http://127.0.0.1:9000/hooks/a?x=1", "w");
  ASSERT_TRUE(url.ok()) << url.status().to_string();
  EXPECT_EQ(url->host, "127.0.0.1");
  EXPECT_EQ(url->port, 9000);
  EXPECT_EQ(url->path, "/hooks/a?x=1");
  auto log = parse_monitor_config(
      "rules:\n  - {name: r, deployment: d, signal: drift, notify: {log: [1]}}\n", "m.yaml");
  ASSERT_FALSE(log.ok());
  EXPECT_NE(log.status().message().find("notify.log must be true or false"), std::string::npos)
      << log.status().message();
  EXPECT_FALSE(
      parse_monitor_config("rules:\n  - {name: r, deployment: d, signal: drift, window: 2m}\n",
                           "m.yaml")
          .ok());  // not one of the windows
}

// The service end to end, on the real clock with 1-second windows.
TEST_F(DigitsFixture, ServiceFiresAStoredAlertOnShiftedTrafficAndJoinsLabels) {
  auto store = StoreWithDeployment(root_ / "meta.db", "digits", "digits", {{"sample_rate", 1.0}});
  ASSERT_NE(store, nullptr);
  meta::MetaStore& ms = *store;
  const meta::Principal who{"tester", meta::Role::kAdmin};
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
      "{{min_count: 20, false_alarm_rate: 0.001}}, change: {{min_count: 20}}}}\n"
      "rules:\n"
      "  - {{name: digits-drift, deployment: digits, signal: drift, severity: critical,\n"
      "     notify: {{webhook: 'http://127.0.0.1:{}/hook', pipeline: retrain}}}}\n"
      "  - {{name: digits-accuracy, deployment: '*', signal: accuracy, below: 0.9}}\n"
      "  - {{name: refused, deployment: digits, signal: rejection_rate, above: 0.1}}\n"
      "  - {{name: quick, deployment: digits, signal: latency_p99_ms, below: 1}}\n",
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
  // Serving's counters, as the server reads them from the version served.
  std::atomic<int64_t> requests{0}, rejected{0};
  mo.request_counts = [&](const std::string&) {
    // The primary (version 1) refuses; a canary (version 2) is healthy.
    return std::map<int64_t, RequestCounts>{{1, RequestCounts{requests.load(), 0, rejected.load()}},
                                            {2, RequestCounts{requests.load() / 10, 0, 0}}};
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
  // The alerts in `state`, of `rule` when given.
  auto open_alerts = [&](const std::string& state, const std::string& rule = "") {
    auto a = ms.monitor().list_alerts(state, "digits", 100);
    EXPECT_TRUE(a.ok());
    std::vector<meta::AlertRecord> out;
    for (const auto& x : a.ok() ? *a : std::vector<meta::AlertRecord>{})
      if (rule.empty() || x.rule == rule) out.push_back(x);
    return out;
  };
  // Unshifted traffic with right answers: nothing fires.
  std::vector<std::pair<std::string, int64_t>> ids;
  next_second();
  serve_rows(300, false, false, &ids);
  next_second();
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  ASSERT_TRUE(svc.tick().ok());
  EXPECT_TRUE(open_alerts("FIRING", "digits-drift").empty());
  EXPECT_TRUE(open_alerts("PENDING", "digits-drift").empty());
  // The sampled latency (100 us each) of version 1: p99 under 1 ms, so that rule fires.
  auto quick = open_alerts("FIRING", "quick");
  ASSERT_EQ(quick.size(), 1u);
  EXPECT_NE(quick[0].message.find("ms of version 1 over 300 sampled requests"), std::string::npos)
      << quick[0].message;
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
  auto firing = open_alerts("FIRING", "digits-drift");
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
  // A fifth of the requests refused since the last pass: the rejection rule fires.
  requests = 1000;
  rejected = 200;
  ASSERT_TRUE(svc.tick().ok());
  bool refused_fired = false;
  for (const auto& a : open_alerts("FIRING"))
    if (a.rule == "refused") {
      refused_fired = true;
      EXPECT_NE(a.message.find("200 of 1000 requests to version 1 were refused"),
                std::string::npos)
          << a.message;  // the refusing version, not the healthy canary
    }
  EXPECT_TRUE(refused_fired);
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

// A webhook receiver that accepts the connection and never answers: each attempt gives up at
// the webhook deadline, so the notifier is free again after attempts x deadline (+ backoff), not
// never.
TEST_F(DigitsFixture, AWebhookThatNeverAnswersIsGivenUpOnAtItsDeadline) {
  auto store = StoreWithDeployment(root_ / "meta.db", "digits", "digits", {{"sample_rate", 1.0}});
  ASSERT_NE(store, nullptr);
  meta::MetaStore& ms = *store;
  const meta::Principal who{"tester", meta::Role::kAdmin};
  // A listening socket nobody accepts on: the kernel completes the handshake (backlog).
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 16), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);
  // accuracy_change below 1: holds at once (no change flagged), so the rule fires on the first
  // pass and calls the webhook.
  const std::string config = fmt::format(
      "deployments:\n  digits: {{reference: '{}:train'}}\n"
      "rules:\n  - {{name: hook, deployment: digits, signal: accuracy_change, below: 1,\n"
      "     notify: {{webhook: 'http://127.0.0.1:{}/hook', log: false}}}}\n",
      version_.label(), port);
  ASSERT_TRUE(ms.monitor().put_config(config, who).ok());
  MonitorServiceOptions mo;
  mo.sample_root = (root_ / "samples").string();
  mo.datasets = datasets_.get();
  mo.webhook_attempts = 2;
  mo.webhook_timeout = std::chrono::milliseconds(300);
  mo.model_facts = [](const std::string&, int64_t) -> Result<ModelFacts> {
    return ModelFacts{digit_features(), {}, "classification"};
  };
  MonitorService svc(ms, mo);
  ASSERT_TRUE(svc.tick().ok());
  auto firing = ms.monitor().list_alerts("FIRING", "", 10);
  ASSERT_TRUE(firing.ok());
  ASSERT_EQ(firing->size(), 1u);
  const auto t0 = std::chrono::steady_clock::now();
  svc.flush_notifications();
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Two attempts of 0.3 s and a 0.5 s backoff: about 1.1 s; far below the 300 s default.
  EXPECT_GE(waited, 0.5);
  EXPECT_LT(waited, 10);
  ::close(fd);
}

// An image input, summarized per channel (`tensors: channel`): the reference's dataset column
// "x" (an NPY of [N, 3, 8, 8]) becomes x[c=0..2], the served input "input" maps onto it through
// the model's one feature, and brightening one channel drifts that channel alone.
TEST(MonitorTensorTest, AnImageIsSummarizedPerChannelAndAChannelShiftIsFound) {
  const fs::path root = fs::temp_directory_path() / ("dlsys-monitor-image-" + random_hex(6));
  fs::create_directories(root);
  {
    auto ds = data::DatasetStore::open((root / "datasets").string());
    ASSERT_TRUE(ds.ok()) << ds.status().to_string();
    std::mt19937_64 rng(4);
    std::uniform_real_distribution<float> u(0, 1);
    auto image = [&](float* px, float bright1) {
      for (int c = 0; c < 3; ++c)
        for (int i = 0; i < 64; ++i)
          px[c * 64 + i] = 10.f * c + 4.f * u(rng) + (c == 1 ? bright1 : 0);
    };
    Tensor images = Tensor::empty(DType::kF32, {600, 3, 8, 8});
    for (int n = 0; n < 600; ++n) image(images.data_as<float>() + n * 192, 0);
    const std::string npy = (root / "images.npy").string();
    ASSERT_TRUE(npy_write(npy, images).ok());
    auto src = data::open_npy(npy, {});
    ASSERT_TRUE(src.ok()) << src.status().to_string();
    data::PushOptions po;
    po.train = 1;
    po.validation = 0;
    po.test = 0;
    auto pushed = data::push(**ds, "images", **src, po);
    ASSERT_TRUE(pushed.ok()) << pushed.status().to_string();
    auto store = StoreWithDeployment(root / "meta.db", "img", "cnn", {{"sample_rate", 1.0}});
    ASSERT_NE(store, nullptr);
    const std::string config = fmt::format(
        "deployments:\n  img: {{reference: '{}:train', windows: [1s], tensors: channel, "
        "drift: {{min_count: 20, false_alarm_rate: 0.001}}}}\n",
        pushed->version.label());
    ASSERT_TRUE(store->monitor().put_config(config, {"t", meta::Role::kAdmin}).ok());
    MonitorServiceOptions mo;
    mo.sample_root = (root / "samples").string();
    mo.datasets = ds->get();
    mo.grace = std::chrono::milliseconds(300);
    mo.model_facts = [](const std::string&, int64_t) -> Result<ModelFacts> {
      return ModelFacts{{"x"}, {}, "regression"};
    };
    MonitorService svc(*store, mo);
    serve::RequestSamplerOptions ro;
    ro.dir = mo.sample_root;
    serve::RequestSampler sampler(ro);
    std::this_thread::sleep_for(std::chrono::milliseconds(1000 - now_ms() % 1000 + 20));
    for (int i = 0; i < 200; ++i) {
      serve::V2InferRequest req;
      req.id = "i" + std::to_string(i);
      Tensor x = Tensor::empty(DType::kF32, {1, 3, 8, 8});
      image(x.data_as<float>(), 3);  // channel 1 brighter
      req.inputs = {{"input", x}};
      req.batch_rows = 1;
      Tensor y = Tensor::empty(DType::kF32, {1, 1});
      y.data_as<float>()[0] = 0;
      auto p = sampler.begin(1.0, "img", req, {{"output", DType::kF32, {-1, 1}}});
      ASSERT_NE(p, nullptr);
      sampler.finish(p, "cnn", 1, 100, {y});
    }
    sampler.flush();
    std::this_thread::sleep_for(std::chrono::milliseconds(1000 - now_ms() % 1000 + 400));
    ASSERT_TRUE(svc.tick().ok());
    auto report = svc.report("img", 0, 5);
    ASSERT_TRUE(report.ok()) << report.status().to_string();
    ASSERT_FALSE(report->contains("error")) << report->dump();
    std::map<std::string, bool> drift;
    for (const auto& w : (*report)["windows"])
      if (w["judged"].get<bool>() && w["samples"].get<int64_t>() == 200)
        for (const auto& c : w["columns"]) drift[c["column"]] = c["drift"].get<bool>();
    ASSERT_EQ(drift.size(), 3u) << report->dump().substr(0, 2000);
    EXPECT_FALSE(drift["x[c=0]"]);
    EXPECT_TRUE(drift["x[c=1]"]);
    EXPECT_FALSE(drift["x[c=2]"]);
    sampler.stop();
  }
  fs::remove_all(root);
}

// With tokens required, each monitoring route answers a role by its access: the reports and
// alerts to viewers, labels to editors, the configuration (webhooks, pipelines) to admins only;
// bad input is a 400 naming the field.
TEST(MonitorRoutesTest, RolesAndBadInput) {
  const fs::path root = fs::temp_directory_path() / ("dlsys-monitor-routes-" + random_hex(6));
  fs::create_directories(root);
  {
    auto store = StoreWithDeployment(root / "meta.db", "d", "m", nlohmann::json::object());
    ASSERT_NE(store, nullptr);
    meta::MetaStore& ms = *store;
    const meta::Principal admin{"admin", meta::Role::kAdmin};
    api::Router::Options ro;
    ro.auth_required = true;
    ro.tokens = &ms.tokens();
    api::Router router(ro);
    add_monitor_routes(router, ms, nullptr);
    std::map<meta::Role, std::string> tokens;
    for (meta::Role role :
         {meta::Role::kInference, meta::Role::kViewer, meta::Role::kEditor, meta::Role::kAdmin}) {
      auto t = ms.tokens().create_token(meta::role_name(role), role, admin);
      ASSERT_TRUE(t.ok());
      tokens[role] = t->token;
    }
    auto call = [&](const std::string& method, const std::string& path, const std::string& body,
                    const std::string& token) {
      api::Request req;
      req.method = method;
      req.path = path.substr(0, path.find('?'));
      if (path.find('?') != std::string::npos) {
        std::stringstream q(path.substr(path.find('?') + 1));
        for (std::string kv; std::getline(q, kv, '&');)
          req.query[kv.substr(0, kv.find('='))] = kv.substr(kv.find('=') + 1);
      }
      req.body = body;
      if (!token.empty()) req.headers["authorization"] = "Bearer " + token;
      return router.dispatch(req);
    };
    const std::string labels = R"({"labels": [{"id": "r1", "label": "3"}]})";
    const std::string config = R"({"spec_text": "rules: []\n"})";
    struct Case {
      std::string method, path, body;
      meta::Role least;
    };
    for (const Case& c :
         std::vector<Case>{{"GET", "/api/v1/alerts", "", meta::Role::kViewer},
                           {"GET", "/api/v1/monitor/config", "", meta::Role::kViewer},
                           {"POST", "/api/v1/deployments/d/feedback", labels, meta::Role::kEditor},
                           {"PUT", "/api/v1/monitor/config", config, meta::Role::kAdmin}}) {
      EXPECT_EQ(call(c.method, c.path, c.body, "").status, 401) << c.path;
      for (const auto& [role, token] : tokens) {
        const int status = call(c.method, c.path, c.body, token).status;
        if (role >= c.least)
          EXPECT_EQ(status, 200) << c.method << " " << c.path << " as " << meta::role_name(role);
        else
          EXPECT_EQ(status, 403) << c.method << " " << c.path << " as " << meta::role_name(role);
      }
    }
    // Without a monitor on this server the reports say so (503), the labels are still kept.
    EXPECT_EQ(call("GET", "/api/v1/monitor", "", tokens[meta::Role::kViewer]).status, 503);
    auto stored = ms.monitor().feedback_after("d", 0, 0, 10);
    ASSERT_TRUE(stored.ok());
    EXPECT_EQ(stored->size(), 1u);
    const std::string& editor = tokens[meta::Role::kEditor];
    auto bad = call("POST", "/api/v1/deployments/d/feedback", R"({"labels": [{"id": 7}]})", editor);
    EXPECT_EQ(bad.status, 400);
    EXPECT_NE(bad.body.find("labels[0].id"), std::string::npos) << bad.body;
    bad = call("POST", "/api/v1/deployments/nope/feedback", labels, editor);
    EXPECT_EQ(bad.status, 404) << bad.body;
    bad = call("PUT", "/api/v1/monitor/config",
               R"({"spec_text": "rules:\n  - {name: r, deployment: d, signal: nope}\n"})",
               tokens[meta::Role::kAdmin]);
    EXPECT_EQ(bad.status, 400);
    EXPECT_NE(bad.body.find("monitor config:2: rules[0].signal"), std::string::npos) << bad.body;
    bad = call("GET", "/api/v1/alerts?state=LOUD", "", tokens[meta::Role::kViewer]);
    EXPECT_EQ(bad.status, 400);
  }
  fs::remove_all(root);
}

}  // namespace
}  // namespace dlsys::monitor
