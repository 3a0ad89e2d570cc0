// The metadata store's behaviour, run against both engines: SQLite in a temporary file and a
// real PostgreSQL server started on loopback for this binary.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include "core/utf8.h"
#include "meta/meta_store.h"
#include "meta/run_filter.h"
#include "meta/sql_db.h"
#include "testing/postgres_server.h"

namespace dlsys::meta {
namespace {

testing::PostgresServer* postgres() {
  static std::unique_ptr<testing::PostgresServer> server = [] {
    auto s = testing::PostgresServer::start();
    if (!s.ok()) {
      ADD_FAILURE() << "cannot start PostgreSQL: " << s.status().to_string();
      return std::unique_ptr<testing::PostgresServer>();
    }
    return std::move(s).value();
  }();
  return server.get();
}

const Principal kAlice{"alice", Role::kEditor};

class MetaStoreTest : public ::testing::TestWithParam<std::string> {
 protected:
  // The URL of a new, empty database of the engine under test ("" after a failure).
  std::string new_database() {
    static std::atomic<int> counter{0};
    int n = counter++;
    if (GetParam() == "sqlite") {
      if (dir_.empty()) {
        dir_ = std::filesystem::temp_directory_path() /
               ("dlsys-meta-test-" + std::to_string(getpid()) + "-" + std::to_string(n));
        std::filesystem::create_directories(dir_);
      }
      return (dir_ / ("meta-" + std::to_string(n) + ".db")).string();
    }
    auto* pg = postgres();
    if (!pg) {
      ADD_FAILURE() << "no PostgreSQL server";
      return "";
    }
    auto admin = SqlDatabase::open(pg->url(), 1);
    EXPECT_TRUE(admin.ok()) << admin.status().to_string();
    if (!admin.ok()) return "";
    auto lease = (*admin)->acquire();
    EXPECT_TRUE(lease.ok());
    if (!lease.ok()) return "";
    std::string db = "t" + std::to_string(n);
    Status created = (*lease)->exec_script("CREATE DATABASE " + db);
    EXPECT_TRUE(created.ok()) << created.to_string();
    return created.ok() ? pg->url(db) : "";
  }

  void SetUp() override {
    std::string url = new_database();
    ASSERT_FALSE(url.empty());
    auto s = MetaStore::open(url, 8);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    store_ = std::move(s).value();
    url_ = url;
  }
  void TearDown() override {
    store_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  int64_t new_run(const std::string& exp = "exp") {
    auto e = store_->runs().ensure_experiment(exp, kAlice);
    EXPECT_TRUE(e.ok()) << e.status().to_string();
    auto r = store_->runs().create_run(e->id, "run", {}, {}, kAlice);
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    return r->id;
  }

  std::filesystem::path dir_;
  std::string url_;
  std::unique_ptr<MetaStore> store_;
};

TEST_P(MetaStoreTest, MigratesOnceAndReopens) {
  auto v = store_->db().schema_version();
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  EXPECT_EQ(*v, 10);
  ASSERT_TRUE(store_->runs().create_experiment("kept", "", kAlice).ok());
  store_.reset();
  auto again = MetaStore::open(url_, 2);
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  EXPECT_EQ(*(*again)->db().schema_version(), 10);
  EXPECT_TRUE((*again)->runs().get_experiment_by_name("kept").ok());
}

TEST_P(MetaStoreTest, ExperimentsAreUniqueAndPaginate) {
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(store_->runs().create_experiment("e" + std::to_string(i), "", kAlice).ok());
  auto dup = store_->runs().create_experiment("e1", "", kAlice);
  EXPECT_EQ(dup.status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(store_->runs().create_experiment("bad name!", "", kAlice).status().code(),
            StatusCode::kInvalidArgument);
  std::set<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    auto p = store_->runs().list_experiments(2, token);
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    for (auto& e : p->items) EXPECT_TRUE(seen.insert(e.name).second);
    token = p->next_page_token;
    ++pages;
  } while (!token.empty());
  EXPECT_EQ(seen.size(), 5u);
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(store_->runs().list_experiments(2, "garbage").status().code(),
            StatusCode::kInvalidArgument);
}

TEST_P(MetaStoreTest, RunLifecycleParamsTagsAndLatestMetrics) {
  auto e = store_->runs().create_experiment("mnist", "digits", kAlice);
  ASSERT_TRUE(e.ok());
  auto r = store_->runs().create_run(e->id, "first", {{"lr", "0.1"}}, {{"team", "a"}}, kAlice);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  int64_t id = r->id;
  EXPECT_EQ(r->status, "RUNNING");
  EXPECT_EQ(r->params.at("lr"), "0.1");
  // Out-of-order steps: the latest value is the one with the highest step.
  std::vector<MetricPoint> m = {{"loss", 0.5, 2, 0}, {"loss", 0.9, 1, 0}, {"acc", 0.8, 2, 0}};
  ASSERT_TRUE(store_->runs().log_batch(id, m, {{"batch", "64"}}, {{"team", "b"}}, kAlice).ok());
  ASSERT_TRUE(store_->runs().log_batch(id, {{"loss", 0.7, 0, 0}}, {}, {}, kAlice).ok());
  auto got = store_->runs().get_run(id);
  ASSERT_TRUE(got.ok());
  EXPECT_DOUBLE_EQ(got->metrics.at("loss").value, 0.5);
  // The REST representation reads back into the same record.
  auto back = from_json<meta::Run>(json(*got), "the run");
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(json(*back), json(*got));
  EXPECT_EQ(got->metrics.at("loss").step, 2);
  EXPECT_EQ(got->params.at("batch"), "64");
  EXPECT_EQ(got->tags.at("team"), "b");
  // Params are written once: the same value is fine, another is refused.
  EXPECT_TRUE(store_->runs().log_batch(id, {}, {{"lr", "0.1"}}, {}, kAlice).ok());
  auto changed = store_->runs().log_batch(id, {}, {{"lr", "0.2"}}, {}, kAlice);
  EXPECT_EQ(changed.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(changed.message().find("already"), std::string::npos);
  auto fin = store_->runs().update_run(id, "FINISHED", kAlice);
  ASSERT_TRUE(fin.ok());
  EXPECT_TRUE(fin->end_time.has_value());
  EXPECT_EQ(store_->runs().update_run(id, "DONE", kAlice).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->runs().get_run(id + 1000).status().code(), StatusCode::kNotFound);
}

TEST_P(MetaStoreTest, LimitsGiveClearErrors) {
  int64_t id = new_run();
  auto expect_invalid = [&](const Status& st, const std::string& needle) {
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
    EXPECT_NE(st.message().find(needle), std::string::npos) << st.message();
  };
  expect_invalid(store_->runs().log_batch(id, {{std::string(251, 'k'), 1, 0, 0}}, {}, {}, kAlice),
                 "250");
  expect_invalid(store_->runs().log_batch(id, {}, {{"p", std::string(6001, 'v')}}, {}, kAlice),
                 "6000");
  expect_invalid(store_->runs().log_batch(id, {}, {}, {{"t", std::string(5001, 'v')}}, kAlice),
                 "5000");
  std::vector<MetricPoint> many(kMaxPointsPerBatch + 1, MetricPoint{"m", 1, 0, 0});
  expect_invalid(store_->runs().log_batch(id, many, {}, {}, kAlice), "100000");
  expect_invalid(store_->runs().log_batch(id, {{"m", NAN, 3, 0}}, {}, {}, kAlice), "finite");
  expect_invalid(store_->runs().log_batch(id, {{"bad\nkey", 1, 0, 0}}, {}, {}, kAlice),
                 "character");
  // Exactly at the limits is accepted.
  EXPECT_TRUE(
      store_->runs()
          .log_batch(id,
                     std::vector<MetricPoint>(1000, MetricPoint{std::string(250, 'k'), 1, 0, 0}),
                     {{"p", std::string(6000, 'v')}}, {{"t", std::string(5000, 'v')}}, kAlice)
          .ok());
  EXPECT_EQ(store_->runs().log_batch(id + 99, {{"m", 1, 0, 0}}, {}, {}, kAlice).code(),
            StatusCode::kNotFound);
}

TEST_P(MetaStoreTest, MetricHistoryDownsamplesKeepingSpikes) {
  int64_t id = new_run();
  std::vector<MetricPoint> pts;
  for (int i = 0; i < 1000; ++i) pts.push_back({"loss", i == 501 ? 100.0 : 1.0 / (1 + i), i, 0});
  ASSERT_TRUE(store_->runs().log_batch(id, pts, {}, {}, kAlice).ok());
  auto full = store_->runs().metric_history(id, "loss", 0);
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->points.size(), 1000u);
  auto small = store_->runs().metric_history(id, "loss", 20);
  ASSERT_TRUE(small.ok());
  const auto& p = small->points;
  EXPECT_LE(p.size(), 20u);
  EXPECT_GE(p.size(), 10u);
  EXPECT_EQ(small->total_points, 1000);
  bool spike = false;
  int64_t last_step = -1;
  for (auto& x : p) {
    spike |= x.value == 100.0;
    EXPECT_GT(x.step, last_step);
    last_step = x.step;
  }
  EXPECT_TRUE(spike) << "the spike at step 501 was dropped";
  EXPECT_DOUBLE_EQ(p[0].value, 1.0);  // the first bucket's max is step 0
}

// The bucket layout docs/api.md describes: max_points / 3 buckets of equal step width from the
// first step; each keeps the first point holding its minimum, the first holding its maximum and
// its last point (highest step, then latest timestamp).
struct RefPoint {
  int64_t step, ts;
  double value;
};
std::vector<RefPoint> expected_downsample(const std::vector<RefPoint>& series, int max_points) {
  std::vector<RefPoint> sorted = series;
  std::stable_sort(sorted.begin(), sorted.end(), [](const RefPoint& a, const RefPoint& b) {
    return a.step != b.step ? a.step < b.step : a.ts < b.ts;
  });
  int64_t first = sorted.front().step, span = sorted.back().step - first + 1;
  int64_t buckets = max_points / 3, width = (span + buckets - 1) / buckets;
  std::map<int64_t, std::vector<RefPoint>> by_bucket;
  for (const RefPoint& p : sorted) by_bucket[(p.step - first) / width].push_back(p);
  std::vector<RefPoint> out;
  for (auto& [b, pts] : by_bucket) {
    const RefPoint *lo = &pts[0], *hi = &pts[0];
    for (const RefPoint& p : pts) {
      if (p.value < lo->value) lo = &p;
      if (p.value > hi->value) hi = &p;
    }
    for (const RefPoint* p : {lo, hi, static_cast<const RefPoint*>(&pts.back())}) {
      bool dup = false;
      for (const RefPoint& q : out) dup |= q.step == p->step && q.ts == p->ts;
      if (!dup) out.push_back(*p);
    }
  }
  std::sort(out.begin(), out.end(), [](const RefPoint& a, const RefPoint& b) {
    return a.step != b.step ? a.step < b.step : a.ts < b.ts;
  });
  return out;
}

std::vector<RefPoint> points_of(const MetricHistory& h) {
  std::vector<RefPoint> out;
  for (auto& p : h.points) out.push_back({p.step, p.timestamp, p.value});
  return out;
}

TEST_P(MetaStoreTest, MetricHistoryDownsamplesInTheDatabaseKeepingMinMaxAndLast) {
  int64_t id = new_run();
  std::vector<RefPoint> series;
  std::vector<MetricPoint> batch;
  for (int64_t i = 0; i < 10000; ++i) {
    // Values repeat (ties: the first step holding the extreme is kept); one spike up, one down.
    double v = static_cast<double>(i * 7919 % 1000) / 1000.0;
    if (i == 5003) v = 1000;
    if (i == 7001) v = -1000;
    series.push_back({i, 1000000 + i, v});
    batch.push_back({"loss", v, i, 1000000 + i});
    if (batch.size() == kMaxMetricsPerBatch) {
      ASSERT_TRUE(store_->runs().log_batch(id, batch, {}, {}, kAlice).ok());
      batch.clear();
    }
  }
  auto h = store_->runs().metric_history(id, "loss", 50);
  ASSERT_TRUE(h.ok()) << h.status().to_string();
  EXPECT_EQ(h->total_points, 10000);
  EXPECT_TRUE(h->downsampled);
  EXPECT_EQ(h->run_id, id);
  EXPECT_EQ(h->key, "loss");
  auto got = points_of(*h);
  EXPECT_LE(got.size(), 50u);
  bool up = false, down = false;
  for (size_t i = 0; i < got.size(); ++i) {
    up |= got[i].value == 1000 && got[i].step == 5003;
    down |= got[i].value == -1000 && got[i].step == 7001;
    if (i > 0) {
      EXPECT_GT(got[i].step, got[i - 1].step) << "not in step order, or a duplicate";
    }
    // Every point is a real one.
    EXPECT_EQ(got[i].ts, 1000000 + got[i].step);
    EXPECT_EQ(got[i].value, series[got[i].step].value);
  }
  EXPECT_TRUE(up) << "the spike at step 5003 was dropped";
  EXPECT_TRUE(down) << "the dip at step 7001 was dropped";
  EXPECT_EQ(got.back().step, 9999);  // the last point
  auto want = expected_downsample(series, 50);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].step, want[i].step) << i;
    EXPECT_EQ(got[i].value, want[i].value) << i;
  }
}

// common_metric_keys: the keys the most runs logged, ties by key in byte order on both
// backends, a prefix left out, runs that do not exist counted as nothing.
TEST_P(MetaStoreTest, CommonMetricKeysAreTheMostLoggedFirst) {
  std::vector<int64_t> ids;
  for (int r = 0; r < 4; ++r) {
    ids.push_back(new_run());
    std::vector<MetricPoint> batch = {{"loss", 1.0, 0, 1}, {"job.cpu", 0.5, 0, 1}};
    if (r < 2) batch.push_back({"B", 0.1, 0, 1});  // upper case sorts before lower in bytes
    if (r < 2) batch.push_back({"acc", 0.9, 0, 1});
    if (r == 0) batch.push_back({"zeta", 0.2, 0, 1});
    ASSERT_TRUE(store_->runs().log_batch(ids.back(), batch, {}, {}, kAlice).ok());
  }
  auto keys = [&](std::vector<int64_t> of, int n, const std::string& skip) {
    auto got = store_->runs().common_metric_keys(of, n, skip);
    EXPECT_TRUE(got.ok()) << got.status().to_string();
    return got.ok() ? *got : std::vector<std::string>{};
  };
  EXPECT_EQ(keys(ids, 20, ""), (std::vector<std::string>{"job.cpu", "loss", "B", "acc", "zeta"}));
  EXPECT_EQ(keys(ids, 3, "job."), (std::vector<std::string>{"loss", "B", "acc"}));
  // Only the runs asked count: in runs 2 and 3 B and acc were never logged.
  EXPECT_EQ(keys({ids[2], ids[3], 999999}, 5, "job."), (std::vector<std::string>{"loss"}));
  EXPECT_TRUE(keys({}, 5, "").empty());
  EXPECT_EQ(store_->runs().common_metric_keys(ids, 0, "").status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->runs().common_metric_keys(ids, kMaxHistoryKeys + 1, "").status().code(),
            StatusCode::kInvalidArgument);
}

// metric_histories (many runs in one read, downsampled in memory) gives exactly what
// metric_history (downsampled in the database) gives for each pair, with and without a step
// range; a step range zooms in at full detail.
TEST_P(MetaStoreTest, MetricHistoriesOfManyRunsMatchEachHistoryAndZoom) {
  std::vector<int64_t> ids;
  std::vector<std::vector<RefPoint>> loss;
  uint64_t x = 12345;
  auto rnd = [&x] {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<double>(x >> 40) / static_cast<double>(1ull << 24);
  };
  for (int r = 0; r < 4; ++r) {
    int64_t id = new_run();
    ids.push_back(id);
    loss.emplace_back();
    std::vector<MetricPoint> batch;
    const int n = r == 3 ? 7 : 1500 + 700 * r;  // run 3 is short: returned as it is
    for (int i = 0; i < n; ++i) {
      // Ties (a coarse grid of values), spikes, and some steps logged twice (a resumed run).
      double v = std::floor(rnd() * 8) / 8;
      if (i == 333 * (r + 1)) v = 50;
      if (i == 111 * (r + 1)) v = -50;
      const int64_t step = i - (i % 97 == 5 ? 1 : 0);
      loss.back().push_back({step, 2000000 + i, v});
      batch.push_back({"loss", v, step, 2000000 + i});
      if (r != 1) batch.push_back({"acc", 1 - v, step, 2000000 + i});
      if (batch.size() >= kMaxMetricsPerBatch - 1) {
        ASSERT_TRUE(store_->runs().log_batch(id, batch, {}, {}, kAlice).ok());
        batch.clear();
      }
    }
    ASSERT_TRUE(store_->runs().log_batch(id, batch, {}, {}, kAlice).ok());
  }
  auto same = [](const MetricHistory& a, const MetricHistory& b, const std::string& what) {
    EXPECT_EQ(a.run_id, b.run_id) << what;
    EXPECT_EQ(a.key, b.key) << what;
    EXPECT_EQ(a.total_points, b.total_points) << what;
    EXPECT_EQ(a.downsampled, b.downsampled) << what;
    ASSERT_EQ(a.points.size(), b.points.size()) << what;
    for (size_t i = 0; i < a.points.size(); ++i) {
      EXPECT_EQ(a.points[i].step, b.points[i].step) << what << " point " << i;
      EXPECT_EQ(a.points[i].timestamp, b.points[i].timestamp) << what << " point " << i;
      EXPECT_EQ(a.points[i].value, b.points[i].value) << what << " point " << i;
    }
  };
  for (int n : {3, 10, 31, 200, 1000}) {
    for (StepRange range : {StepRange{}, StepRange{400, 1300}, StepRange{std::nullopt, 900},
                            StepRange{1000, std::nullopt}}) {
      auto all = store_->runs().metric_histories(ids, {"loss", "acc"}, n, range);
      ASSERT_TRUE(all.ok()) << all.status().to_string();
      ASSERT_EQ(all->size(), ids.size() * 2);
      for (size_t i = 0; i < all->size(); ++i) {
        const MetricHistory& h = (*all)[i];
        EXPECT_EQ(h.run_id, ids[i / 2]);
        EXPECT_EQ(h.key, i % 2 ? "acc" : "loss");
        auto one = store_->runs().metric_history(h.run_id, h.key, n, range);
        ASSERT_TRUE(one.ok()) << one.status().to_string();
        same(h, *one,
             fmt::format("run {} {} at {} points, steps {}..{}", h.run_id, h.key, n,
                         range.min_step.value_or(-1), range.max_step.value_or(-1)));
      }
    }
  }
  // A zoomed history is the downsampling of the points in range: the spike at step 666 of run
  // 2 (id[1]) is kept, and nothing outside 600..700 appears.
  std::vector<RefPoint> in_range;
  for (const RefPoint& p : loss[1])
    if (p.step >= 600 && p.step <= 700) in_range.push_back(p);
  auto zoom = store_->runs().metric_history(ids[1], "loss", 30, StepRange{600, 700});
  ASSERT_TRUE(zoom.ok());
  EXPECT_EQ(zoom->total_points, static_cast<int64_t>(in_range.size()));
  auto want = expected_downsample(in_range, 30);
  auto got = points_of(*zoom);
  ASSERT_EQ(got.size(), want.size());
  bool spike = false;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].step, want[i].step) << i;
    EXPECT_EQ(got[i].value, want[i].value) << i;
    spike |= got[i].step == 666 && got[i].value == 50;
  }
  EXPECT_TRUE(spike) << "the spike at step 666 was dropped from the zoomed history";
  // Bad asks name the problem; a missing run is NotFound; a key never logged is empty.
  EXPECT_EQ(store_->runs().metric_history(ids[0], "loss", 10, StepRange{5, 4}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->runs().metric_histories({ids[0], 999999}, {"loss"}, 10).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(store_->runs().metric_histories(ids, {}, 10).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->runs().metric_histories(ids, {"loss"}, kMaxHistoryPoints + 1).status().code(),
            StatusCode::kInvalidArgument);
  std::vector<int64_t> many(kMaxHistoryRuns + 1, ids[0]);
  auto too_many = store_->runs().metric_histories(many, {"loss"}, 10);
  EXPECT_EQ(too_many.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(too_many.status().message().find("1000"), std::string::npos);
  // One answer holds at most kMaxHistoryAnswerPoints: 1,000 runs x 20 keys x 1,000 points is
  // refused before anything is read.
  std::vector<int64_t> thousand(1000, ids[0]);
  std::vector<std::string> twenty;
  for (int k = 0; k < 20; ++k) twenty.push_back("k" + std::to_string(k));
  auto huge = store_->runs().metric_histories(thousand, twenty, 1000);
  EXPECT_EQ(huge.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(huge.status().message().find("fewer keys"), std::string::npos)
      << huge.status().to_string();
  auto absent = store_->runs().metric_histories({ids[1]}, {"acc"}, 10);
  ASSERT_TRUE(absent.ok());
  EXPECT_EQ(absent->at(0).total_points, 0);
  EXPECT_TRUE(absent->at(0).points.empty());
  // A search by run ids returns those runs only.
  SearchRunsRequest q;
  q.run_ids = {ids[2], ids[0]};
  auto found = store_->runs().search_runs(q);
  ASSERT_TRUE(found.ok()) << found.status().to_string();
  std::set<int64_t> got_ids;
  for (const meta::Run& r : found->items) got_ids.insert(r.id);
  EXPECT_EQ(got_ids, (std::set<int64_t>{ids[0], ids[2]}));
  q.run_ids.assign(kMaxSearchRunIds + 1, ids[0]);
  EXPECT_EQ(store_->runs().search_runs(q).status().code(), StatusCode::kInvalidArgument);
}

// Points logged before schema 9 (one row each in `metrics`) are read with the chunks logged
// after the upgrade, as one series; a damaged chunk is an error naming it, never a crash or a
// partial answer.
TEST_P(MetaStoreTest, MetricRowsFromBeforeChunksAreReadWithThem) {
  store_.reset();
  std::string url = new_database();
  {
    auto old = StoreDb::open(url, 2, {}, 8);
    ASSERT_TRUE(old.ok()) << old.status().to_string();
    Status st = (*old)->tx(true, [&](SqlConnection& c) -> Status {
      DLSYS_RETURN_IF_ERROR(
          c.exec("INSERT INTO experiments (name, created_at) VALUES ('e', 1)", {}));
      DLSYS_RETURN_IF_ERROR(
          c.exec("INSERT INTO runs (experiment_id, name, status, start_time) "
                 "VALUES (1, 'r', 'RUNNING', 5000)",
                 {}));
      std::vector<SqlParams> rows;
      for (int64_t i = 0; i < 500; ++i)
        rows.push_back({int64_t{1}, "loss", i, 1000 + i, i == 77 ? 9.0 : 1.0});
      return c.exec_many(
          "INSERT INTO metrics (run_id, key, step, ts, value) VALUES ($1,$2,$3,$4,$5)", rows);
    });
    ASSERT_TRUE(st.ok()) << st.to_string();
  }
  auto s = MetaStore::open(url, 2);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  std::vector<MetricPoint> batch;
  for (int64_t i = 500; i < 1000; ++i)
    batch.push_back({"loss", i == 800 ? -9.0 : 0.5, i, 1000 + i});
  ASSERT_TRUE((*s)->runs().log_batch(1, batch, {}, {}, kAlice).ok());
  auto whole = (*s)->runs().metric_history(1, "loss", 1000);
  ASSERT_TRUE(whole.ok()) << whole.status().to_string();
  ASSERT_EQ(whole->total_points, 1000);
  ASSERT_EQ(whole->points.size(), 1000u);
  for (int64_t i = 0; i < 1000; ++i) {
    EXPECT_EQ(whole->points[i].step, i);
    EXPECT_EQ(whole->points[i].timestamp, 1000 + i);
  }
  auto small = (*s)->runs().metric_history(1, "loss", 30);
  ASSERT_TRUE(small.ok());
  bool up = false, down = false;
  for (auto& p : small->points) {
    up |= p.step == 77 && p.value == 9.0;
    down |= p.step == 800 && p.value == -9.0;
  }
  EXPECT_TRUE(up && down) << "a spike from before the upgrade or after it was dropped";
  std::vector<RefPoint> both;
  for (int64_t i = 0; i < 1000; ++i)
    both.push_back({i, 1000 + i, i < 500 ? (i == 77 ? 9.0 : 1.0) : (i == 800 ? -9.0 : 0.5)});
  auto want = expected_downsample(both, 30);
  auto got = points_of(*small);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].step, want[i].step) << i;
    EXPECT_EQ(got[i].value, want[i].value) << i;
  }
  // Damage one chunk: the read fails and says which.
  Status st = (*s)->db().tx(true, [](SqlConnection& c) {
    return c.exec("UPDATE metric_chunks SET points = 'not*base64' || points", {});
  });
  ASSERT_TRUE(st.ok()) << st.to_string();
  auto bad = (*s)->runs().metric_history(1, "loss", 30);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("chunk"), std::string::npos) << bad.status().to_string();
}

// Ordered by a metric or a param, the runs that have it come in its value's order (ties by id)
// and then those without it by id, across pages that cross from one to the other, in both
// directions.
TEST_P(MetaStoreTest, RunsOrderedByAKeyThenThoseWithoutItAcrossPages) {
  auto e = store_->runs().ensure_experiment("order", kAlice);
  ASSERT_TRUE(e.ok());
  struct Want {
    int64_t id;
    std::optional<double> m;
    std::optional<std::string> p;
  };
  std::vector<Want> all;
  for (int i = 0; i < 13; ++i) {
    std::vector<KeyValue> params;
    std::optional<std::string> p;
    if (i % 3 != 0) p = "v" + std::to_string((i * 7) % 5), params.push_back({"opt", *p});
    auto r = store_->runs().create_run(e->id, "r" + std::to_string(i), params, {}, kAlice);
    ASSERT_TRUE(r.ok());
    std::optional<double> m;
    if (i % 4 != 1) {
      m = (i * 5) % 7 / 10.0;  // ties
      ASSERT_TRUE(store_->runs().log_batch(r->id, {{"acc", *m, 1, 0}}, {}, {}, kAlice).ok());
    }
    all.push_back({r->id, m, p});
  }
  for (const char* field : {"metrics.acc", "params.opt"})
    for (bool desc : {false, true})
      for (int page_size : {1, 4, 5, 13}) {
        std::vector<Want> want = all;
        const bool metric = std::string(field) == "metrics.acc";
        auto has = [&](const Want& w) { return metric ? w.m.has_value() : w.p.has_value(); };
        std::stable_sort(want.begin(), want.end(), [&](const Want& a, const Want& b) {
          if (has(a) != has(b)) return has(a);
          if (has(a)) {
            bool less = metric ? *a.m < *b.m : *a.p < *b.p;
            bool more = metric ? *a.m > *b.m : *a.p > *b.p;
            if (less || more) return desc ? more : less;
          }
          return desc ? a.id > b.id : a.id < b.id;
        });
        SearchRunsRequest q;
        q.experiment_ids = {e->id};
        q.order_by = std::string(field) + (desc ? " DESC" : " ASC");
        q.page_size = page_size;
        std::vector<int64_t> got;
        int pages = 0;
        do {
          auto p = store_->runs().search_runs(q);
          ASSERT_TRUE(p.ok()) << p.status().to_string();
          for (const meta::Run& r : p->items) got.push_back(r.id);
          q.page_token = p->next_page_token;
          ASSERT_LT(++pages, 20);
        } while (!q.page_token.empty());
        std::vector<int64_t> want_ids;
        for (const Want& w : want) want_ids.push_back(w.id);
        EXPECT_EQ(got, want_ids) << field << (desc ? " DESC" : " ASC") << ", pages of "
                                 << page_size;
      }
  // A page past every run with the key, and one past all runs.
  SearchRunsRequest q;
  q.experiment_ids = {e->id};
  q.order_by = "metrics.acc DESC";
  q.page_size = 2;
  q.page_token = "o:11";
  auto tail = store_->runs().search_runs(q);
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(tail->items.size(), 2u);
  q.page_token = "o:40";
  EXPECT_TRUE(store_->runs().search_runs(q)->items.empty());
}

TEST_P(MetaStoreTest, MetricHistoryLastPointIsTheLatestAtTheHighestStep) {
  int64_t id = new_run();
  std::vector<RefPoint> series;
  std::vector<MetricPoint> batch;
  for (int64_t i = 0; i < 300; ++i) {
    series.push_back({i, 5000 + i, 1.0 + i % 7});
    batch.push_back({"acc", 1.0 + i % 7, i, 5000 + i});
  }
  // The same steps logged again later (a resumed run): the later one is the bucket's last.
  for (int64_t step : {int64_t{9}, int64_t{299}}) {
    series.push_back({step, 90000 + step, 0.5});
    batch.push_back({"acc", 0.5, step, 90000 + step});
  }
  ASSERT_TRUE(store_->runs().log_batch(id, batch, {}, {}, kAlice).ok());
  auto h = store_->runs().metric_history(id, "acc", 30);
  ASSERT_TRUE(h.ok()) << h.status().to_string();
  EXPECT_EQ(h->total_points, 302);
  auto got = points_of(*h);
  auto want = expected_downsample(series, 30);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].step, want[i].step) << i;
    EXPECT_EQ(got[i].ts, want[i].ts) << i;
    EXPECT_EQ(got[i].value, want[i].value) << i;
  }
  EXPECT_EQ(got.back().step, 299);
  EXPECT_EQ(got.back().ts, 90299);
  EXPECT_EQ(got.back().value, 0.5);
}

TEST_P(MetaStoreTest, MetricHistoryIsBoundedByDefaultAndLimited) {
  int64_t id = new_run();
  std::vector<MetricPoint> batch;
  for (int i = 0; i < 3000; ++i) {
    batch.push_back({"m", static_cast<double>(i % 11), i, 0});
    if (batch.size() == kMaxMetricsPerBatch) {
      ASSERT_TRUE(store_->runs().log_batch(id, batch, {}, {}, kAlice).ok());
      batch.clear();
    }
  }
  ASSERT_TRUE(store_->runs()
                  .log_batch(id, {{"short", 1.0, 1, 0}, {"short", 2.0, 2, 0}}, {}, {}, kAlice)
                  .ok());
  // Fewer points than max_points: all of them, not downsampled.
  auto all = store_->runs().metric_history(id, "m", 3000);
  ASSERT_TRUE(all.ok()) << all.status().to_string();
  EXPECT_EQ(all->points.size(), 3000u);
  EXPECT_FALSE(all->downsampled);
  auto few = store_->runs().metric_history(id, "short", 0);
  ASSERT_TRUE(few.ok());
  EXPECT_EQ(few->points.size(), 2u);
  EXPECT_FALSE(few->downsampled);
  // No max_points: the default bound, and the real count.
  auto def = store_->runs().metric_history(id, "m", 0);
  ASSERT_TRUE(def.ok()) << def.status().to_string();
  EXPECT_LE(def->points.size(), size_t{kDefaultMaxMetricPoints});
  EXPECT_GE(def->points.size(), size_t{kDefaultMaxMetricPoints / 2});
  EXPECT_TRUE(def->downsampled);
  EXPECT_EQ(def->total_points, 3000);
  // Tiny max_points.
  for (int n : {1, 2, 3, 4}) {
    auto t = store_->runs().metric_history(id, "m", n);
    ASSERT_TRUE(t.ok()) << t.status().to_string();
    EXPECT_LE(t->points.size(), size_t(n));
    EXPECT_GE(t->points.size(), 1u);
    EXPECT_EQ(t->points.back().step, 2999);
  }
  // Over the limit, or negative: an error naming the limit.
  for (int n : {kMaxMetricPoints + 1, -1}) {
    auto over = store_->runs().metric_history(id, "m", n);
    EXPECT_EQ(over.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(over.status().message().find(std::to_string(kMaxMetricPoints)), std::string::npos)
        << over.status().message();
  }
  EXPECT_TRUE(store_->runs().metric_history(id, "m", kMaxMetricPoints).ok());
  auto none = store_->runs().metric_history(id, "absent", 10);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->total_points, 0);
  EXPECT_TRUE(none->points.empty());
}

TEST_P(MetaStoreTest, MetricHistoryWithStepsSpanningAllOfInt64) {
  // Steps at both ends of int64: last - first overflows, so buckets are computed without it.
  int64_t id = new_run();
  const int64_t lo = INT64_MIN + 1, hi = INT64_MAX;
  // Spread steps (1e15 apart), so that no floating-point detour could put them in one bucket.
  const int64_t gap = 1000000000000000;
  std::vector<MetricPoint> pts;
  for (int64_t i = 0; i < 20; ++i) {
    pts.push_back({"s", i == 4 ? 99.0 : 1.0 + i % 3, lo + i * gap, 0});
    pts.push_back({"s", i == 9 ? -99.0 : 1.0 + i % 3, hi - (19 - i) * gap, 0});
  }
  ASSERT_TRUE(store_->runs().log_batch(id, pts, {}, {}, kAlice).ok());
  for (int n : {3, 6, 20, 30}) {
    auto h = store_->runs().metric_history(id, "s", n);
    ASSERT_TRUE(h.ok()) << n << ": " << h.status().to_string();
    EXPECT_TRUE(h->downsampled);
    auto got = points_of(*h);
    EXPECT_LE(got.size(), size_t(n));
    for (size_t i = 1; i < got.size(); ++i) EXPECT_GT(got[i].step, got[i - 1].step);
    EXPECT_EQ(got.back().step, hi);
    if (n >= 20) {  // few enough buckets that nothing is cut: both extremes are there
      bool spike = false, dip = false;
      for (auto& p : got) {
        spike |= p.value == 99 && p.step == lo + 4 * gap;
        dip |= p.value == -99 && p.step == hi - 10 * gap;
      }
      EXPECT_TRUE(spike && dip) << n;
    }
  }
}

TEST_P(MetaStoreTest, MetricKeysMustNotBeEmpty) {
  int64_t id = new_run();
  Status st = store_->runs().log_batch(id, {{"", 1, 0, 0}}, {}, {}, kAlice);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("metric 0"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("empty"), std::string::npos) << st.message();
  st =
      store_->runs().log_batch(id, {{"a", 1, 0, 0}, {"a", 1, 1, 0}, {"", 1, 2, 0}}, {}, {}, kAlice);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("metric 2"), std::string::npos) << st.message();
  st = store_->runs().log_batch(id, {{"a", 1, 0, 0}, {"b\x01", 1, 1, 0}}, {}, {}, kAlice);
  EXPECT_NE(st.message().find("metric 1"), std::string::npos) << st.message();
  auto run = store_->runs().get_run(id);
  ASSERT_TRUE(run.ok());
  EXPECT_TRUE(run->metrics.empty()) << "a refused batch wrote something";
  EXPECT_EQ(store_->runs().metric_history(id, "", 10).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_P(MetaStoreTest, FilterNumbersMustBeFiniteAndInRange) {
  new_run();
  auto expect_refused = [&](const std::string& filter, const std::string& position) {
    SearchRunsRequest q;
    q.filter = filter;
    auto r = store_->runs().search_runs(q);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << filter;
    EXPECT_NE(r.status().message().find("position " + position), std::string::npos)
        << filter << ": " << r.status().message();
  };
  expect_refused("metrics.acc > 1e999", "14");
  expect_refused("metrics.acc > -1e999", "14");
  expect_refused("metrics.acc > -nan", "14");
  expect_refused("metrics.acc > -inf", "14");
  expect_refused("metrics.acc > +infinity", "14");
  expect_refused("metrics.acc > 'nan'", "14");
  expect_refused("metrics.acc > 'Infinity'", "14");
  expect_refused("metrics.acc > 0x1p3", "14");
  expect_refused("metrics.acc > 1.5e", "14");
  expect_refused("metrics.acc > +-1", "14");
  expect_refused("start_time > +-1", "13");
  expect_refused("metrics.acc < nan", "14");  // an identifier where a value belongs
  expect_refused("metrics.acc > 99999999999999999999999", "14");  // an integer past int64
  expect_refused("metrics.acc < -9223372036854775809", "14");
  expect_refused("start_time > 99999999999999999999", "13");
  expect_refused("start_time > 9223372036854775808", "13");
  expect_refused("end_time < -9223372036854775809", "11");
  expect_refused("start_time > 1e19", "13");
  expect_refused("start_time > -1e300", "13");
  expect_refused("start_time > 'inf'", "13");
  for (const char* ok :
       {"metrics.acc > +0.5", "metrics.acc > -1e-3", "metrics.acc > '0.25'", "metrics.acc > 1e23",
        "metrics.acc > 9223372036854775807", "start_time > 9223372036854775807",
        "start_time > -9223372036854775808", "start_time > 1.7e12", "end_time < 0"}) {
    SearchRunsRequest q;
    q.filter = ok;
    auto r = store_->runs().search_runs(q);
    EXPECT_TRUE(r.ok()) << ok << ": " << r.status().to_string();
  }
  SearchRunsRequest q;
  q.filter = "start_time > 0";
  EXPECT_EQ(store_->runs().search_runs(q)->items.size(), 1u);
}

TEST_P(MetaStoreTest, ArtifactPathsMustBeUtf8) {
  int64_t run = new_run();
  std::string sha(64, 'a');
  EXPECT_TRUE(store_->runs()
                  .record_artifact(run, {"caf\xc3\xa9/mod\xe2\x82\xacl.onnx", sha, 1}, kAlice)
                  .ok());
  for (const std::string bad : {"a\xff", "\xc0\xaf", "x/\xed\xa0\x80", "\xf4\x90\x80\x80",
                                "m\xe2\x82", "\x80", "\xe0\x80\xaf", "\xf0\x80\x80\xaf"}) {
    Status st = store_->runs().record_artifact(run, {bad, sha, 1}, kAlice);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find("UTF-8"), std::string::npos) << st.message();
    EXPECT_EQ(store_->runs().get_artifact(run, bad).status().code(), StatusCode::kInvalidArgument);
  }
  auto arts = store_->runs().list_artifacts(run, "");
  ASSERT_TRUE(arts.ok());
  EXPECT_EQ(arts->size(), 1u);
}

TEST_P(MetaStoreTest, SearchFiltersOrdersAndPagesRuns) {
  auto e = store_->runs().create_experiment("sweep", "", kAlice);
  ASSERT_TRUE(e.ok());
  int64_t exp = e->id;
  for (int i = 0; i < 25; ++i) {
    auto r =
        store_->runs().create_run(exp, "r" + std::to_string(i), {{"lr", i % 2 ? "0.1" : "0.01"}},
                                  {{"seed", std::to_string(i)}}, kAlice);
    ASSERT_TRUE(r.ok());
    ASSERT_TRUE(store_->runs().log_batch(r->id, {{"acc", i / 100.0, 1, 0}}, {}, {}, kAlice).ok());
    if (i % 5 == 0) {
      ASSERT_TRUE(store_->runs().update_run(r->id, "FINISHED", kAlice).ok());
    }
  }
  new_run("other");  // not in the experiment
  SearchRunsRequest q;
  q.experiment_ids = {exp};
  q.page_size = 10;
  std::set<int64_t> ids;
  int64_t prev_start = INT64_MAX, prev_id = INT64_MAX;
  int pages = 0;
  do {
    auto p = store_->runs().search_runs(q);
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    for (auto& r : p->items) {
      EXPECT_TRUE(ids.insert(r.id).second);
      int64_t st = r.start_time, id = r.id;
      EXPECT_TRUE(st < prev_start || (st == prev_start && id < prev_id)) << "not newest first";
      prev_start = st;
      prev_id = id;
    }
    q.page_token = p->next_page_token;
    ++pages;
  } while (!q.page_token.empty());
  EXPECT_EQ(ids.size(), 25u);
  EXPECT_EQ(pages, 3);

  q = {};
  q.experiment_ids = {exp};
  q.filter = "params.lr = '0.1' and metrics.acc >= 0.1 and status != 'FINISHED'";
  auto f = store_->runs().search_runs(q);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  // Odd i with i >= 10, not a multiple of 5: 11 13 17 19 21 23.
  EXPECT_EQ(f->items.size(), 6u);
  for (auto& r : f->items) EXPECT_EQ(r.params.at("lr"), "0.1");

  q.filter = "tags.seed = '7'";
  EXPECT_EQ(store_->runs().search_runs(q)->items.size(), 1u);
  q.filter = "name like 'r2%'";
  EXPECT_EQ(store_->runs().search_runs(q)->items.size(), 6u);  // r2, r20..r24

  q.filter = "";
  q.order_by = "metrics.acc DESC";
  q.page_size = 10;
  std::vector<double> accs;
  do {
    auto p = store_->runs().search_runs(q);
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    for (auto& r : p->items) accs.push_back(r.metrics.at("acc").value);
    q.page_token = p->next_page_token;
  } while (!q.page_token.empty());
  ASSERT_EQ(accs.size(), 25u);
  EXPECT_TRUE(std::is_sorted(accs.rbegin(), accs.rend()));
  EXPECT_DOUBLE_EQ(accs[0], 0.24);

  q = {};
  q.filter = "metrics.acc >> 1";
  auto bad = store_->runs().search_runs(q);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  q.filter = "colour = 'red'";
  bad = store_->runs().search_runs(q);
  EXPECT_NE(bad.status().message().find("unknown field 'colour' at position 0"), std::string::npos)
      << bad.status().message();
  q.filter = "";
  q.order_by = "metrics.acc sideways";
  EXPECT_EQ(store_->runs().search_runs(q).status().code(), StatusCode::kInvalidArgument);
}

TEST_P(MetaStoreTest, RegistryVersionsAliasesAndLineage) {
  int64_t run = new_run();
  std::string sha(64, 'a');
  ASSERT_TRUE(store_->runs().record_artifact(run, {"model.onnx", sha, 10}, kAlice).ok());
  ASSERT_TRUE(
      store_->runs().record_artifact(run, {"notes.txt", std::string(64, 'b'), 3}, kAlice).ok());
  EXPECT_EQ(store_->runs().record_artifact(run, {"../escape", sha, 1}, kAlice).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->runs().record_artifact(run, {"/abs", sha, 1}, kAlice).code(),
            StatusCode::kInvalidArgument);
  ASSERT_TRUE(store_->registry().create_model("digits", "", kAlice).ok());
  EXPECT_EQ(store_->registry().create_model("digits", "", kAlice).status().code(),
            StatusCode::kAlreadyExists);
  auto v1 = store_->registry().create_model_version("digits", run, "model.onnx", "", kAlice);
  ASSERT_TRUE(v1.ok()) << v1.status().to_string();
  EXPECT_EQ(v1->version, 1);
  EXPECT_EQ(v1->sha256, sha);
  EXPECT_EQ(store_->registry()
                .create_model_version("digits", run, "notes.txt", "", kAlice)
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->registry()
                .create_model_version("digits", run, "missing.onnx", "", kAlice)
                .status()
                .code(),
            StatusCode::kNotFound);
  EXPECT_EQ(store_->registry()
                .create_model_version("nope", run, "model.onnx", "", kAlice)
                .status()
                .code(),
            StatusCode::kNotFound);
  auto v2 = store_->registry().create_model_version("digits", run, "model.onnx", "", kAlice);
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ(v2->version, 2);

  auto a = store_->registry().set_alias("digits", "production", 1, kAlice);
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  EXPECT_EQ(a->model, "digits");
  EXPECT_EQ(a->alias, "production");
  EXPECT_EQ(a->version, 1);
  EXPECT_FALSE(a->previous_version.has_value());
  EXPECT_TRUE(json(*a)["previous_version"].is_null());                  // the REST form says null
  a = store_->registry().set_alias("digits", "production", 2, kAlice);  // promote
  EXPECT_EQ(a->previous_version, 1);
  EXPECT_EQ(store_->registry().get_version_by_alias("digits", "production")->version, 2);
  a = store_->registry().set_alias("digits", "production", 1, kAlice);  // roll back
  EXPECT_EQ(a->previous_version, 2);
  EXPECT_EQ(store_->registry().get_version_by_alias("digits", "production")->version, 1);
  EXPECT_EQ(store_->registry().get_version_by_alias("digits", "latest")->version, 2);
  EXPECT_EQ(store_->registry().set_alias("digits", "latest", 1, kAlice).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->registry().set_alias("digits", "bad alias", 1, kAlice).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->registry().set_alias("digits", "staging", 9, kAlice).status().code(),
            StatusCode::kNotFound);
  ASSERT_TRUE(store_->registry().set_model_version_status("digits", 2, "ARCHIVED", kAlice).ok());
  EXPECT_EQ(store_->registry().set_alias("digits", "staging", 2, kAlice).status().code(),
            StatusCode::kInvalidArgument);
  auto m = store_->registry().get_model("digits");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->aliases.at("production"), 1);
  EXPECT_EQ(m->version_count, 2);
  auto vs = store_->registry().list_model_versions("digits");
  ASSERT_TRUE(vs.ok());
  EXPECT_EQ((*vs)[0].aliases, std::vector<std::string>{"production"});
  ASSERT_TRUE(store_->registry().delete_alias("digits", "production", kAlice).ok());
  EXPECT_EQ(store_->registry().get_version_by_alias("digits", "production").status().code(),
            StatusCode::kNotFound);

  // Lineage: dataset -> run (added), run -> versions (automatic), version -> deployment.
  ASSERT_TRUE(
      store_->lineage()
          .add_edge("dataset_version", "sha-of-digits", "run", std::to_string(run), "input", kAlice)
          .ok());
  ASSERT_TRUE(
      store_->lineage()
          .add_edge("model_version", "digits/1", "deployment", "prod-digits", "deployed", kAlice)
          .ok());
  EXPECT_EQ(store_->lineage().add_edge("thing", "x", "run", "1", "input", kAlice).code(),
            StatusCode::kInvalidArgument);
  auto g = store_->lineage().graph("model_version", "digits/1", 10);
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  std::set<std::string> nodes;
  for (auto& [n, direction] : g->nodes) nodes.insert(n.kind + ":" + n.id + ":" + direction);
  EXPECT_EQ(g->root.kind, "model_version");
  EXPECT_EQ(g->nodes.size(), nodes.size()) << "a node was listed twice";
  std::set<std::string> edges;
  for (auto& e : g->edges)
    edges.insert(e.src.kind + ":" + e.src.id + "->" + e.dst.kind + ":" + e.dst.id + ":" +
                 e.relation);
  EXPECT_TRUE(edges.count("dataset_version:sha-of-digits->run:" + std::to_string(run) + ":input"));
  EXPECT_TRUE(edges.count("model_version:digits/1->deployment:prod-digits:deployed"));
  EXPECT_TRUE(nodes.count("run:" + std::to_string(run) + ":upstream"));
  EXPECT_TRUE(nodes.count("dataset_version:sha-of-digits:upstream"));
  EXPECT_TRUE(nodes.count("deployment:prod-digits:downstream"));
  EXPECT_FALSE(nodes.count("model_version:digits/2:upstream"));  // a sibling, not an ancestor
  auto shallow = store_->lineage().graph("model_version", "digits/1", 1);
  EXPECT_EQ(shallow->nodes.size(), 3u);  // root, run, deployment

  auto arts = store_->runs().list_artifacts(run, "");
  ASSERT_TRUE(arts.ok());
  EXPECT_EQ(arts->size(), 2u);
}

// Schema 3 on a database written by schema 2: a RUNNING run's heartbeat is its start, a version
// keeps its run (SQLite copies model_versions to drop NOT NULL on run_id), and a version
// without a run can be added.
TEST_P(MetaStoreTest, MigrationToSchema3KeepsRunsAndVersions) {
  std::string url = new_database();
  ASSERT_FALSE(url.empty());
  const std::string sha(64, 'a');
  {
    auto old = StoreDb::open(url, 2, {}, 2);
    ASSERT_TRUE(old.ok()) << old.status().to_string();
    EXPECT_EQ(*(*old)->schema_version(), 2);
    Status st = (*old)->tx(true, [&](SqlConnection& c) -> Status {
      for (const char* sql :
           {"INSERT INTO experiments (name, created_at) VALUES ('e', 1)",
            "INSERT INTO runs (experiment_id, name, status, start_time) VALUES (1, 'r', "
            "'RUNNING', 5000)",
            "INSERT INTO registered_models (name, created_at, updated_at) VALUES ('m', 1, 1)"})
        DLSYS_RETURN_IF_ERROR(c.exec(sql, {}));
      DLSYS_RETURN_IF_ERROR(
          c.exec("INSERT INTO artifacts (run_id, path, sha256, size, created_at) VALUES "
                 "(1, 'model.onnx', $1, 10, 6000)",
                 {sha}));
      return c.exec(
          "INSERT INTO model_versions (model_id, version, run_id, artifact_path, sha256, size, "
          "status, created_at) VALUES (1, 1, 1, 'model.onnx', $1, 10, 'READY', 7000)",
          {sha});
    });
    ASSERT_TRUE(st.ok()) << st.to_string();
  }
  auto s = MetaStore::open(url, 2);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ(*(*s)->db().schema_version(), 10);
  auto run = (*s)->runs().get_run(1);
  ASSERT_TRUE(run.ok()) << run.status().to_string();
  EXPECT_EQ(run->status, "RUNNING");
  EXPECT_EQ(run->heartbeat_time, 5000);
  EXPECT_EQ(run->end_reason, "");
  auto v1 = (*s)->registry().get_model_version("m", 1);
  ASSERT_TRUE(v1.ok()) << v1.status().to_string();
  EXPECT_EQ(v1->run_id, 1);
  EXPECT_EQ(v1->sha256, sha);
  EXPECT_EQ(v1->size, 10);
  auto v2 = (*s)->registry().create_file_version("m", "model.onnx", sha, 10, "", kAlice);
  ASSERT_TRUE(v2.ok()) << v2.status().to_string();
  EXPECT_EQ(v2->version, 2);
  EXPECT_FALSE(v2->run_id.has_value());
  // The run still cannot be a dangling reference: versions from runs check the run's artifact.
  EXPECT_EQ((*s)->registry().create_model_version("m", 9, "model.onnx", "", kAlice).status().code(),
            StatusCode::kNotFound);
}

// A run records when it was last heard from; a sweep fails RUNNING runs not heard from for
// longer than the timeout (and nothing else), saying why. The clock is injected: no sleeps.
TEST_P(MetaStoreTest, HeartbeatsKeepRunsAliveAndTheSweepFailsOnlyStaleRunningOnes) {
  auto t = std::make_shared<std::atomic<int64_t>>(1'000'000);
  auto clock = [t] { return t->load(); };
  store_->runs().set_liveness({0, clock});
  int64_t quiet = new_run(), beating = new_run(), logging = new_run(), finished = new_run();
  EXPECT_EQ(store_->runs().get_run(quiet)->heartbeat_time, 1'000'000);
  EXPECT_EQ(store_->runs().get_run(quiet)->start_time, 1'000'000);
  ASSERT_TRUE(store_->runs().update_run(finished, "FINISHED", kAlice).ok());
  *t = 1'200'000;
  auto hb = store_->runs().heartbeat(beating);
  ASSERT_TRUE(hb.ok()) << hb.status().to_string();
  EXPECT_EQ(hb->heartbeat_time, 1'200'000);
  EXPECT_EQ(hb->status, "RUNNING");
  EXPECT_EQ(store_->runs().heartbeat(999).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(store_->runs().log_batch(logging, {{"loss", 1.0, 1, 0}}, {}, {}, kAlice).ok());
  EXPECT_EQ(store_->runs().get_run(logging)->heartbeat_time, 1'200'000);  // logging counts
  // Without a timeout nothing ever fails.
  *t = 9'000'000'000;
  auto none = store_->runs().fail_stale_runs();
  ASSERT_TRUE(none.ok()) << none.status().to_string();
  EXPECT_TRUE(none->empty());
  EXPECT_EQ(store_->runs().get_run(quiet)->status, "RUNNING");

  store_->runs().set_liveness({300'000, clock, /*read_sweep_interval_ms=*/0});
  *t = 1'300'001;  // quiet: 300.001 s without a heartbeat; the others 100 s
  auto failed = store_->runs().fail_stale_runs();
  ASSERT_TRUE(failed.ok()) << failed.status().to_string();
  EXPECT_EQ(*failed, std::vector<int64_t>{quiet});
  auto q = store_->runs().get_run(quiet);
  EXPECT_EQ(q->status, "FAILED");
  EXPECT_EQ(q->end_time, 1'300'001);
  EXPECT_NE(q->end_reason.find("no heartbeat for 300 s"), std::string::npos) << q->end_reason;
  EXPECT_NE(q->end_reason.find("timeout is 300 s"), std::string::npos) << q->end_reason;
  EXPECT_EQ(json(*q)["end_reason"], q->end_reason);  // the REST form carries it
  EXPECT_EQ(store_->runs().get_run(beating)->status, "RUNNING");
  auto f = store_->runs().get_run(finished);
  EXPECT_EQ(f->status, "FINISHED");
  EXPECT_EQ(f->end_reason, "");
  auto audit = store_->db().list_audit(1, "");
  ASSERT_TRUE(audit.ok());
  EXPECT_EQ(audit->items[0].actor, "system");
  EXPECT_EQ(audit->items[0].target, "run/" + std::to_string(quiet));
  EXPECT_EQ(audit->items[0].detail["status"], "FAILED");
  EXPECT_TRUE(store_->runs().fail_stale_runs()->empty());  // once

  // Reads sweep first. Exactly the timeout is not over it.
  *t = 1'500'000;
  EXPECT_EQ(store_->runs().get_run(beating)->status, "RUNNING");
  *t = 1'500'001;
  EXPECT_EQ(store_->runs().get_run(beating)->status, "FAILED");
  SearchRunsRequest running;
  running.filter = "status = 'RUNNING'";
  EXPECT_TRUE(store_->runs().search_runs(running)->items.empty());  // `logging` failed too
  // Ending a run by hand replaces the server's reason.
  auto killed = store_->runs().update_run(quiet, "KILLED", kAlice);
  ASSERT_TRUE(killed.ok());
  EXPECT_EQ(killed->status, "KILLED");
  EXPECT_EQ(killed->end_reason, "");
  // A run set RUNNING again is alive from then on (a PATCH counts as a heartbeat).
  ASSERT_TRUE(store_->runs().update_run(beating, "RUNNING", kAlice).ok());
  EXPECT_EQ(store_->runs().get_run(beating)->status, "RUNNING");

  // Reads sweep at most once per read_sweep_interval_ms (the periodic sweep does the rest).
  store_->runs().set_liveness({300'000, clock, /*read_sweep_interval_ms=*/1000});
  *t = 2'000'000;
  int64_t late = new_run();  // its read sweeps
  *t = 2'300'000;
  EXPECT_EQ(store_->runs().get_run(late)->status, "RUNNING");  // sweeps: exactly the timeout
  *t = 2'300'500;
  EXPECT_EQ(store_->runs().get_run(late)->status, "RUNNING");  // over it, but no sweep yet
  *t = 2'301'000;
  EXPECT_EQ(store_->runs().get_run(late)->status, "FAILED");
}

// A version registered from a file has no run: no run is made, no lineage edge from one, and
// its REST form says run_id null.
TEST_P(MetaStoreTest, FileVersionsHaveNoRun) {
  ASSERT_TRUE(store_->registry().create_model("own", "", kAlice).ok());
  const std::string sha(64, 'c');
  auto v = store_->registry().create_file_version("own", "model.onnx", sha, 42, "a file", kAlice);
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  EXPECT_EQ(v->version, 1);
  EXPECT_FALSE(v->run_id.has_value());
  EXPECT_EQ(v->sha256, sha);
  EXPECT_EQ(v->size, 42);
  EXPECT_EQ(v->artifact_path, "model.onnx");
  EXPECT_TRUE(json(*v)["run_id"].is_null());
  auto back = from_json<ModelVersion>(json(*v), "the version");
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(json(*back), json(*v));
  EXPECT_EQ(store_->registry().get_version_by_alias("own", "latest")->sha256, sha);
  ASSERT_TRUE(store_->registry().set_alias("own", "production", 1, kAlice).ok());
  EXPECT_FALSE(store_->registry().list_model_versions("own")->at(0).run_id.has_value());
  EXPECT_EQ(store_->registry()
                .create_file_version("own", "model.txt", sha, 1, "", kAlice)
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->registry()
                .create_file_version("own", "model.onnx", "xyz", 1, "", kAlice)
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->registry()
                .create_file_version("nope", "model.onnx", sha, 1, "", kAlice)
                .status()
                .code(),
            StatusCode::kNotFound);
  EXPECT_TRUE(store_->runs().search_runs({})->items.empty());
  auto g = store_->lineage().graph("model_version", "own/1", 10);
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  EXPECT_TRUE(g->edges.empty());
}

TEST_P(MetaStoreTest, DeploymentsAreStoredUpdatedAndAudited) {
  auto& deps = store_->deployments();
  Deployment d{"digits-prod", "digits", "production", {{"max_batch", 16}}, 0, 0, ""};
  EXPECT_EQ(deps.create(d, kAlice).status().code(), StatusCode::kNotFound);  // no model yet
  ASSERT_TRUE(store_->registry().create_model("digits", "", kAlice).ok());
  auto c = deps.create(d, kAlice);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->created_by, "alice");
  EXPECT_GT(c->created_at, 0);
  EXPECT_EQ(deps.create(d, kAlice).status().code(), StatusCode::kAlreadyExists);
  for (const char* bad : {"", "has space", "../x"}) {
    Deployment b = d;
    b.name = bad;
    EXPECT_EQ(deps.create(b, kAlice).status().code(), StatusCode::kInvalidArgument) << bad;
  }
  Deployment not_object = d;
  not_object.name = "other";
  not_object.config = json::array();
  EXPECT_EQ(deps.create(not_object, kAlice).status().code(), StatusCode::kInvalidArgument);

  d.ref = "3";
  d.config = {{"max_batch", 32}, {"instances", 2}};
  auto u = deps.update(d, kAlice);
  ASSERT_TRUE(u.ok()) << u.status().to_string();
  EXPECT_EQ(u->ref, "3");
  EXPECT_EQ(u->config["instances"], 2);
  EXPECT_EQ(u->created_at, c->created_at);
  Deployment missing = d;
  missing.name = "nope";
  EXPECT_EQ(deps.update(missing, kAlice).status().code(), StatusCode::kNotFound);

  auto all = deps.list();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].config["max_batch"], 32);
  ASSERT_TRUE(deps.remove("digits-prod", kAlice).ok());
  EXPECT_EQ(deps.get("digits-prod").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(deps.remove("digits-prod", kAlice).code(), StatusCode::kNotFound);
  auto audit = store_->db().list_audit(10, "");
  ASSERT_TRUE(audit.ok());
  EXPECT_EQ(audit->items[0].action, "deployment.delete");
  EXPECT_EQ(audit->items[1].action, "deployment.update");
}

// The training service's queue (meta/job_queue.h): order, the state machine's transitions as
// compare-and-sets, retries within max_retries with a backoff, cancels and who may make them.
TEST_P(MetaStoreTest, JobUsageAddsUpByOwnerRunAndModelVersion) {
  JobQueue& q = store_->jobs();
  const Principal bob{"bob", Role::kEditor};
  auto submit = [&](const Principal& who) {
    NewJob n{"j", "command", {{"kind", "command"}}, 0, 2, 0, 0};
    auto j = q.submit(n, who);
    EXPECT_TRUE(j.ok()) << j.status().to_string();
    return j.ok() ? j->id : 0;
  };
  int64_t a1 = submit(kAlice), a2 = submit(kAlice), b1 = submit(bob);
  ASSERT_TRUE(q.add_usage(a1, 1500, 4000, 100 << 20).ok());
  ASSERT_TRUE(q.add_usage(a1, 500, 2000, 50 << 20).ok());  // a retry: sums, keeps the peak
  ASSERT_TRUE(q.add_usage(a2, 1000, 1000, 10 << 20).ok());
  ASSERT_TRUE(q.add_usage(b1, 3000, 6000, 200 << 20).ok());
  EXPECT_EQ(q.add_usage(999999, 1, 1, 1).code(), StatusCode::kNotFound);
  EXPECT_EQ(q.add_usage(a1, -1, 1, 1).code(), StatusCode::kInvalidArgument);
  meta::Job j = q.get(a1).value();
  EXPECT_EQ(j.cpu_ms, 2000);
  EXPECT_EQ(j.core_ms, 6000);
  EXPECT_EQ(j.peak_memory_bytes, 100 << 20);
  auto by_owner = q.usage("owner", 0);
  ASSERT_TRUE(by_owner.ok()) << by_owner.status().to_string();
  ASSERT_EQ(by_owner->size(), 2u);
  EXPECT_EQ((*by_owner)[0].key, "alice");
  EXPECT_EQ((*by_owner)[0].jobs, 2);
  EXPECT_EQ((*by_owner)[0].core_ms, 7000);
  EXPECT_EQ((*by_owner)[0].cpu_ms, 3000);
  EXPECT_EQ((*by_owner)[0].peak_memory_bytes, 100 << 20);
  EXPECT_EQ((*by_owner)[1].key, "bob");
  EXPECT_EQ((*by_owner)[1].core_ms, 6000);
  // Jobs created after a time: none here.
  EXPECT_TRUE(q.usage("owner", now_ms() + 60000)->empty());
  // By run and by the model version registered from it.
  auto x = store_->runs().create_experiment("jobs-usage", "", kAlice);
  ASSERT_TRUE(x.ok());
  auto run = store_->runs().create_run(x->id, "r", {}, {}, kAlice);
  ASSERT_TRUE(run.ok());
  ASSERT_TRUE(q.set_run(a1, run->id).ok());
  ASSERT_TRUE(store_->runs()
                  .record_artifact(run->id, {"model.onnx", std::string(64, 'c'), 10}, kAlice)
                  .ok());
  ASSERT_TRUE(store_->registry().create_model("usage-model", "", kAlice).ok());
  ASSERT_TRUE(store_->registry()
                  .create_model_version("usage-model", run->id, "model.onnx", "", kAlice)
                  .ok());
  auto by_run = q.usage("run", 0);
  ASSERT_TRUE(by_run.ok()) << by_run.status().to_string();
  ASSERT_EQ(by_run->size(), 1u);
  EXPECT_EQ((*by_run)[0].key, std::to_string(run->id));
  EXPECT_EQ((*by_run)[0].core_ms, 6000);
  auto by_model = q.usage("model", 0);
  ASSERT_TRUE(by_model.ok()) << by_model.status().to_string();
  ASSERT_EQ(by_model->size(), 1u);
  EXPECT_EQ((*by_model)[0].key, "usage-model@1");
  EXPECT_EQ((*by_model)[0].core_ms, 6000);
  EXPECT_EQ(q.usage("team", 0).status().code(), StatusCode::kInvalidArgument);
}

TEST_P(MetaStoreTest, JobQueueOrdersRetriesAndCancels) {
  JobQueue& q = store_->jobs();
  const Principal bob{"bob", Role::kEditor}, viewer{"val", Role::kViewer},
      admin{"root", Role::kAdmin};
  auto submit = [&](const std::string& name, int64_t priority, int64_t retries,
                    const Principal& who) {
    NewJob n{name, "train", {{"kind", "train"}, {"spec", "a.yaml"}}, priority, 2, 0, retries};
    auto j = q.submit(n, who);
    EXPECT_TRUE(j.ok()) << j.status().to_string();
    return j.ok() ? j->id : 0;
  };
  int64_t low = submit("low", 0, 0, kAlice), high = submit("high", 5, 1, kAlice),
          low2 = submit("low2", 0, 0, bob);
  auto first = q.get(high);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->state, "QUEUED");
  EXPECT_EQ(first->owner, "alice");
  EXPECT_EQ(first->threads, 2);
  EXPECT_EQ(first->spec["spec"], "a.yaml");
  // Priority first, then oldest first.
  auto order = q.runnable(now_ms());
  ASSERT_TRUE(order.ok());
  ASSERT_EQ(order->size(), 3u);
  EXPECT_EQ((*order)[0].id, high);
  EXPECT_EQ((*order)[1].id, low);
  EXPECT_EQ((*order)[2].id, low2);
  // Two schedulers race to start one job: one wins.
  auto a = q.start(high, 100, 1000);
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  EXPECT_EQ(a->attempts, 1);
  EXPECT_EQ(a->pid, 100);
  auto b = q.start(high, 101, 1000);
  EXPECT_EQ(b.status().code(), StatusCode::kFailedPrecondition) << b.status().to_string();
  ASSERT_TRUE(q.heartbeat(high, 2000).ok());
  EXPECT_EQ(q.heartbeat(low, 2000).code(), StatusCode::kFailedPrecondition);
  // A failure with a retry left: queued again, not before the backoff.
  auto r = q.retry_or_fail(high, "exit code 1", 3000, 500);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->state, "QUEUED");
  EXPECT_EQ(r->not_before, 3500);
  EXPECT_EQ(r->end_reason, "exit code 1");
  auto waiting = q.runnable(3499);
  ASSERT_TRUE(waiting.ok());
  for (const Job& j : *waiting) EXPECT_NE(j.id, high) << "started before its backoff";
  ASSERT_TRUE(q.start(high, 102, 3500).ok());
  // The second failure uses the last attempt (max_retries 1): FAILED.
  auto f = q.retry_or_fail(high, "killed by signal 9", 4000, 500);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->state, "FAILED");
  EXPECT_EQ(f->attempts, 2);
  EXPECT_EQ(f->ended_at, 4000);
  // Success.
  ASSERT_TRUE(q.start(low, 103, 5000).ok());
  ASSERT_TRUE(q.set_run(low, 42).ok());
  auto done = q.finish(low, true, "", 6000);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state, "SUCCEEDED");
  EXPECT_EQ(done->run_id, 42);
  EXPECT_EQ(q.finish(low, true, "", 6001).status().code(), StatusCode::kFailedPrecondition);
  // Cancels: not someone else's as an editor, not as a viewer; an admin may.
  EXPECT_EQ(q.cancel(low2, kAlice).status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(q.cancel(low2, viewer).status().code(), StatusCode::kPermissionDenied);
  auto c = q.cancel(low2, bob);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->state, "CANCELLED");
  EXPECT_EQ(c->end_reason, "cancelled by bob");
  EXPECT_EQ(q.cancel(low2, admin).status().code(), StatusCode::kFailedPrecondition);
  // An attempt interrupted by the service (a restart) goes back without counting.
  int64_t interrupted = submit("interrupted", 0, 0, bob);
  ASSERT_TRUE(q.start(interrupted, 105, 6500).ok());
  ASSERT_TRUE(q.set_pid(interrupted, 205).ok());
  EXPECT_EQ(q.get(interrupted)->pid, 205);
  auto back = q.requeue_interrupted(interrupted, "the service restarted while it ran");
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->state, "QUEUED");
  EXPECT_EQ(back->attempts, 0);
  EXPECT_EQ(back->pid, 0);
  EXPECT_EQ(q.requeue_interrupted(interrupted, "again").status().code(),
            StatusCode::kFailedPrecondition);
  ASSERT_TRUE(q.cancel(interrupted, bob).ok());
  // A running job is asked to stop, then marked when its process has.
  int64_t run = submit("run", 0, 0, bob);
  ASSERT_TRUE(q.start(run, 104, 7000).ok());
  EXPECT_EQ(q.mark_cancelled(run, 7001).status().code(), StatusCode::kFailedPrecondition);
  auto asked = q.cancel(run, admin);
  ASSERT_TRUE(asked.ok());
  EXPECT_EQ(asked->state, "RUNNING");
  EXPECT_TRUE(asked->cancel_requested);
  auto stopped = q.mark_cancelled(run, 7100);
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ(stopped->state, "CANCELLED");
  // Usage for fair share: threads x seconds of each job's last attempt inside the window.
  // alice: high's last attempt 3500..4000 (2 threads: 1.0), low 5000..6000 (2 threads: 2.0);
  // bob: interrupted never ended, run 7000..7100 (2 threads: 0.2).
  auto usage = q.usage_by_owner(0, 8000);
  ASSERT_TRUE(usage.ok()) << usage.status().to_string();
  EXPECT_DOUBLE_EQ((*usage)["alice"], 3.0);
  EXPECT_DOUBLE_EQ((*usage)["bob"], 0.2);
  auto recent = q.usage_by_owner(5500, 8000);  // clipped: low counts from 5500
  ASSERT_TRUE(recent.ok());
  EXPECT_DOUBLE_EQ((*recent)["alice"], 1.0);
  // Lists: newest first, by state and owner, paginated; bad input named.
  auto page = q.list("", "", 2, "");
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->items.size(), 2u);
  EXPECT_EQ(page->items[0].id, run);
  auto rest = q.list("", "", 2, page->next_page_token);
  ASSERT_TRUE(rest.ok());
  EXPECT_EQ(rest->items.size(), 2u);
  EXPECT_FALSE(rest->next_page_token.empty());
  auto bobs = q.list("", "bob", 10, "");
  ASSERT_TRUE(bobs.ok());
  EXPECT_EQ(bobs->items.size(), 3u);
  auto failed = q.list("FAILED", "", 10, "");
  ASSERT_TRUE(failed.ok());
  ASSERT_EQ(failed->items.size(), 1u);
  EXPECT_EQ(failed->items[0].id, high);
  EXPECT_EQ(q.list("DONE", "", 10, "").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(q.get(9999).status().code(), StatusCode::kNotFound);
  NewJob bad{"", "train", json::object(), 0, 1, 0, 0};
  EXPECT_EQ(q.submit(bad, kAlice).status().code(), StatusCode::kInvalidArgument);
  bad = {"x", "train", json::array(), 0, 1, 0, 0};
  EXPECT_EQ(q.submit(bad, kAlice).status().code(), StatusCode::kInvalidArgument);
  bad = {"x", "train", json::object(), 0, 0, 0, 0};
  EXPECT_EQ(q.submit(bad, kAlice).status().code(), StatusCode::kInvalidArgument);
  auto audit = store_->db().list_audit(20, "");
  ASSERT_TRUE(audit.ok());
  EXPECT_EQ(audit->items[0].action, "job.cancel");
}

// Transitions with an AttemptGuard apply only to the attempt they name: a service that was cut
// off cannot end, heartbeat or requeue the attempt another service started after taking over,
// and a takeover does not happen once the runner has heartbeaten again.
TEST_P(MetaStoreTest, JobTransitionsWithAGuardApplyOnlyToTheirAttempt) {
  JobQueue& q = store_->jobs();
  NewJob n{"guarded", "command", {{"kind", "command"}}, 0, 1, 0, 3};
  int64_t id = q.submit(n, kAlice).value().id;
  auto a = q.start(id, 0, 1000, "host-a");
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  const AttemptGuard of_a = AttemptGuard::of(*a);
  EXPECT_EQ(of_a.runner, "host-a");
  EXPECT_EQ(of_a.started_at, 1000);
  // host-b takes over: only while the heartbeat is older than its cut-off.
  AttemptGuard takeover = of_a;
  takeover.stale_before = 1000;  // the heartbeat (1000) is not older
  EXPECT_EQ(q.requeue_interrupted(id, "taken over", takeover).status().code(),
            StatusCode::kFailedPrecondition);
  takeover.stale_before = 1001;
  ASSERT_TRUE(q.requeue_interrupted(id, "taken over", takeover).ok());
  auto b = q.start(id, 0, 2000, "host-b");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->attempts, 1) << "the taken-over attempt is not counted";
  // host-a comes back: each of its transitions is refused, and the job is unchanged.
  EXPECT_EQ(q.heartbeat(id, 2100, of_a).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(q.finish(id, true, "", 2100, of_a).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(q.retry_or_fail(id, "exit code 1", 2100, 0, of_a).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(q.requeue_interrupted(id, "stopped", of_a).status().code(),
            StatusCode::kFailedPrecondition);
  ASSERT_TRUE(q.cancel(id, kAlice).ok());
  EXPECT_EQ(q.mark_cancelled(id, 2100, of_a).status().code(), StatusCode::kFailedPrecondition);
  Job now = q.get(id).value();
  EXPECT_EQ(now.state, "RUNNING");
  EXPECT_EQ(now.runner, "host-b");
  EXPECT_EQ(now.heartbeat_at, 2000);
  // host-b's own transitions go through.
  const AttemptGuard of_b = AttemptGuard::of(*b);
  ASSERT_TRUE(q.heartbeat(id, 2200, of_b).ok());
  // Adoption (a cluster's attempt whose service is gone): only of that attempt, and only while
  // its heartbeat is stale; the attempt and its start stay, the runner changes.
  AttemptGuard adopt_b = of_b;
  adopt_b.stale_before = 2200;
  EXPECT_EQ(q.adopt(id, "host-c", 2300, adopt_b).status().code(), StatusCode::kFailedPrecondition)
      << "b heartbeat at 2200: not stale";
  EXPECT_EQ(q.adopt(id, "host-c", 2300, of_a).status().code(), StatusCode::kFailedPrecondition);
  adopt_b.stale_before = 2201;
  auto c = q.adopt(id, "host-c", 2300, adopt_b);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->runner, "host-c");
  EXPECT_EQ(c->started_at, 2000);
  EXPECT_EQ(c->attempts, 1);
  EXPECT_EQ(c->heartbeat_at, 2300);
  EXPECT_EQ(q.heartbeat(id, 2400, of_b).code(), StatusCode::kFailedPrecondition) << "b's no more";
  auto done = q.mark_cancelled(id, 2500, AttemptGuard::of(*c));
  ASSERT_TRUE(done.ok()) << done.status().to_string();
  EXPECT_EQ(done->state, "CANCELLED");
}

// A search's trials and their jobs change together: a trial starts with its job in one
// transaction, a promotion queues the trial's finished job again or changes nothing, and the
// state machine refuses what its state does not allow.
TEST_P(MetaStoreTest, SearchTrialsStartAndArePromotedWithTheirJobs) {
  SearchStore& ss = store_->searches();
  JobQueue& q = store_->jobs();
  const Principal bob{"bob", Role::kEditor}, admin{"root", Role::kAdmin};
  auto bad = ss.create("", {{"a", 1}}, kAlice);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  auto s = ss.create("lr-search", {{"name", "lr-search"}}, kAlice);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ(s->state, "RUNNING");
  EXPECT_EQ(s->owner, "alice");
  EXPECT_EQ(s->best_trial, -1);
  auto job = [](const std::string& name, int64_t epochs) {
    return NewJob{
        name,
        "train",
        {{"kind", "train"}, {"spec", "a.yaml"}, {"hyperparameters", {{"epochs", epochs}}}},
        0,
        1,
        0,
        0};
  };
  auto t0 = ss.start_trial(s->id, 0, {{"lr", 0.1}}, job("lr-search-t0", 1));
  ASSERT_TRUE(t0.ok()) << t0.status().to_string();
  auto t1 = ss.start_trial(s->id, 1, {{"lr", 0.01}}, job("lr-search-t1", 1));
  ASSERT_TRUE(t1.ok()) << t1.status().to_string();
  // A trial starts once: the second start neither records it nor queues a job.
  auto again = ss.start_trial(s->id, 1, {{"lr", 0.01}}, job("lr-search-t1", 1));
  EXPECT_EQ(again.status().code(), StatusCode::kAlreadyExists) << again.status().to_string();
  auto queued = q.list("QUEUED", "", 100, "");
  ASSERT_TRUE(queued.ok());
  EXPECT_EQ(queued->items.size(), 2u) << "one job per trial";
  EXPECT_EQ(q.get(t0->job_id)->owner, "alice") << "trials are the search's owner's";

  // Trial 0's job runs and succeeds; its result pauses it at rung 0.
  ASSERT_TRUE(q.start(t0->job_id, 10, now_ms()).ok());
  ASSERT_TRUE(q.finish(t0->job_id, true, "", now_ms()).ok());
  ASSERT_TRUE(ss.record_result(s->id, 0, 0, 0.75, false, false, "").ok());
  EXPECT_EQ(ss.record_result(s->id, 0, 0, 0.75, false, false, "").code(),
            StatusCode::kFailedPrecondition)
      << "a rung's result is recorded once";
  // Trial 1 has no result yet (its job is queued): recording a result for it at rung 0 works,
  // but its job is not SUCCEEDED, so promoting it changes nothing, trial or job.
  ASSERT_TRUE(ss.record_result(s->id, 1, 0, 0.5, false, false, "").ok());
  auto refused = ss.promote(s->id, 1, 0, {{"kind", "train"}, {"spec", "a.yaml"}});
  EXPECT_EQ(refused.code(), StatusCode::kFailedPrecondition) << refused.to_string();
  auto trials = ss.trials(s->id);
  ASSERT_TRUE(trials.ok());
  ASSERT_EQ(trials->size(), 2u);
  EXPECT_EQ((*trials)[1].state, "PAUSED") << "the refused promotion rolled back";
  EXPECT_EQ((*trials)[1].rung, 0);
  EXPECT_EQ(q.get(t1->job_id)->state, "QUEUED");

  // Trial 0 is promoted: its job is queued again with the new spec, attempts from 0.
  json more = {{"kind", "train"}, {"spec", "a.yaml"}, {"hyperparameters", {{"epochs", 3}}}};
  ASSERT_TRUE(ss.promote(s->id, 0, 0, more).ok());
  EXPECT_EQ(ss.promote(s->id, 0, 0, more).code(), StatusCode::kFailedPrecondition)
      << "promoted twice";
  Job rerun = q.get(t0->job_id).value();
  EXPECT_EQ(rerun.state, "QUEUED");
  EXPECT_EQ(rerun.attempts, 0);
  EXPECT_EQ(rerun.spec["hyperparameters"]["epochs"], 3);
  trials = ss.trials(s->id);
  EXPECT_EQ((*trials)[0].state, "RUNNING");
  EXPECT_EQ((*trials)[0].rung, 1);
  ASSERT_EQ((*trials)[0].results.size(), 1u);
  EXPECT_EQ(*(*trials)[0].results[0], 0.75);
  // It fails at rung 1: FAILED with the reason, its first result kept.
  ASSERT_TRUE(ss.record_result(s->id, 0, 1, std::nullopt, false, true, "job 1 FAILED: oom").ok());
  trials = ss.trials(s->id);
  EXPECT_EQ((*trials)[0].state, "FAILED");
  EXPECT_EQ((*trials)[0].end_reason, "job 1 FAILED: oom");
  EXPECT_EQ((*trials)[0].results.size(), 1u);

  // The best model is registered once: the first claim wins.
  ASSERT_TRUE(ss.claim_registration(s->id).ok());
  EXPECT_EQ(ss.claim_registration(s->id).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(ss.get(s->id)->model_version, -1);
  ASSERT_TRUE(ss.set_model_version(s->id, 0).ok());
  // A search with a trial RUNNING does not end with success (a racing service promoted it).
  ASSERT_TRUE(ss.record_result(s->id, 1, 0, 0.9, false, false, "").code() ==
              StatusCode::kFailedPrecondition);  // trial 1 is PAUSED
  auto t2 = ss.start_trial(s->id, 2, {{"lr", 0.5}}, job("lr-search-t2", 1));
  ASSERT_TRUE(t2.ok()) << t2.status().to_string();
  EXPECT_EQ(ss.finish(s->id, "SUCCEEDED", 1, "").status().code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(ss.record_result(s->id, 2, 0, 0.1, false, false, "").ok());

  // Only its owner or an admin cancels it; finishing stops the paused trials.
  EXPECT_EQ(ss.cancel(s->id, bob).status().code(), StatusCode::kPermissionDenied);
  auto c = ss.cancel(s->id, admin);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_TRUE(c->cancel_requested);
  // Once a cancel is asked for, no trial starts (its job is not queued) and none is promoted.
  const size_t jobs_before = q.list("", "", 100, "")->items.size();
  EXPECT_EQ(ss.start_trial(s->id, 3, {{"lr", 0.2}}, job("lr-search-t3", 1)).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(q.list("", "", 100, "")->items.size(), jobs_before) << "the job's insert rolled back";
  EXPECT_EQ(ss.promote(s->id, 1, 0, more).code(), StatusCode::kFailedPrecondition);
  auto done = ss.finish(s->id, "CANCELLED", 1, "cancelled by root");  // no trial RUNNING now
  ASSERT_TRUE(done.ok()) << done.status().to_string();
  EXPECT_EQ(done->state, "CANCELLED");
  EXPECT_EQ(done->best_trial, 1);
  EXPECT_EQ(ss.trials(s->id)->at(1).state, "STOPPED");
  EXPECT_EQ(ss.trials(s->id)->at(2).state, "STOPPED");
  EXPECT_EQ(ss.finish(s->id, "SUCCEEDED", 1, "").status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(ss.cancel(s->id, kAlice).status().code(), StatusCode::kFailedPrecondition);
  auto listed = ss.list("cancelled", 10, "");
  EXPECT_EQ(listed.status().code(), StatusCode::kInvalidArgument) << "states are upper case";
  listed = ss.list("CANCELLED", 10, "");
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->items.size(), 1u);
  EXPECT_TRUE(ss.running()->empty());
}

TEST_P(MetaStoreTest, PipelineRunsKeepTheirStepsAndStartOnePerEvent) {
  PipelineStore& ps = store_->pipelines();
  const Principal bob{"bob", Role::kEditor}, admin{"root", Role::kAdmin};
  EXPECT_EQ(ps.put_pipeline("bad name", "x", kAlice).status().code(), StatusCode::kInvalidArgument);
  auto p = ps.put_pipeline("retrain", "name: retrain\n", kAlice);
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  EXPECT_EQ(p->version, 1);
  EXPECT_EQ(ps.put_pipeline("retrain", "name: retrain\n", kAlice)->version, 1) << "unchanged";
  EXPECT_EQ(ps.put_pipeline("retrain", "name: retrain\n# v2\n", kAlice)->version, 2);
  EXPECT_EQ(ps.create_run("nope", json::object(), "manual", "", false, kAlice).status().code(),
            StatusCode::kNotFound);

  // One run per event id: the second start with the same event returns the first run.
  bool created = false;
  auto r1 = ps.create_run("retrain", {{"model", "digits"}}, "dataset", "digits@3", false, kAlice,
                          &created);
  ASSERT_TRUE(r1.ok()) << r1.status().to_string();
  EXPECT_TRUE(created);
  EXPECT_EQ(r1->state, "RUNNING");
  EXPECT_EQ(r1->pipeline_version, 2);
  EXPECT_EQ(r1->spec_text, "name: retrain\n# v2\n") << "a run keeps the spec it started with";
  auto again =
      ps.create_run("retrain", json::object(), "dataset", "digits@3", false, kAlice, &created);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(created);
  EXPECT_EQ(again->id, r1->id);
  auto r2 = ps.create_run("retrain", json::object(), "manual", "", true, kAlice, &created);
  ASSERT_TRUE(r2.ok());
  EXPECT_TRUE(created);
  EXPECT_TRUE(r2->no_cache);
  auto r3 = ps.create_run("retrain", json::object(), "manual", "", false, kAlice, &created);
  ASSERT_TRUE(r3.ok() && created) << "runs without an event id are all new";
  EXPECT_EQ(ps.running_runs()->size(), 3u);
  auto page = ps.list_runs("retrain", "", 2, "");
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->items.size(), 2u);
  EXPECT_EQ(page->items[0].id, r3->id) << "newest first";
  auto rest = ps.list_runs("retrain", "", 2, page->next_page_token);
  ASSERT_EQ(rest->items.size(), 1u);
  EXPECT_EQ(rest->items[0].id, r1->id);

  // A run gets the spec its starter read and checked, even when the pipeline changed since.
  auto as_read = ps.get_pipeline("retrain");
  ASSERT_TRUE(as_read.ok());
  ASSERT_EQ(ps.put_pipeline("retrain", "name: retrain\n# v3\n", kAlice)->version, 3);
  auto r4 =
      ps.create_run("retrain", json::object(), "manual", "", false, kAlice, &created, &*as_read);
  ASSERT_TRUE(r4.ok());
  EXPECT_EQ(r4->pipeline_version, 2);
  EXPECT_EQ(r4->spec_text, "name: retrain\n# v2\n");
  ASSERT_TRUE(ps.finish_run(r4->id, "CANCELLED", "").ok());
  // Steps: a row is made once; a job step is inserted with its job in one transaction.
  StepRun push = StepRun::of(r1->id, "push", -1, "RUNNING");
  push.inputs = {{"file", "digits.csv"}};
  ASSERT_TRUE(ps.insert_step(push).ok());
  EXPECT_EQ(ps.insert_step(push).code(), StatusCode::kFailedPrecondition);
  push.state = "SUCCEEDED";
  push.outputs = {{"dataset", "digits@3"}};
  ASSERT_TRUE(ps.update_step(push, "RUNNING").ok());
  EXPECT_EQ(ps.update_step(push, "RUNNING").code(), StatusCode::kFailedPrecondition)
      << "a compare-and-set on the state";
  StepRun train = StepRun::of(r1->id, "train", -1, "RUNNING");
  NewJob job{"retrain-train", "command", {{"kind", "command"}, {"command", {"true"}}}, 0, 1, 0, 0};
  auto jid = ps.start_job_step(train, job, kAlice);
  ASSERT_TRUE(jid.ok()) << jid.status().to_string();
  EXPECT_EQ(store_->jobs().get(*jid)->state, "QUEUED");
  auto twice = ps.start_job_step(train, job, kAlice);
  EXPECT_EQ(twice.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->jobs().list("", "", 100, "")->items.size(), 1u)
      << "the second start's job was rolled back with it";
  StepRun fan = StepRun::of(r1->id, "sizes", 1, "FAILED");
  fan.end_reason = "exit 1";
  ASSERT_TRUE(ps.insert_step(fan).ok());
  StepRun big = StepRun::of(r1->id, "big", -1, "SUCCEEDED");
  big.outputs = {{"data", std::string(2 << 20, 'x')}};
  auto refused = ps.insert_step(big);
  EXPECT_EQ(refused.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.message().find("references"), std::string::npos) << refused.message();
  auto steps = ps.steps(r1->id);
  ASSERT_TRUE(steps.ok());
  ASSERT_EQ(steps->size(), 3u);
  EXPECT_EQ((*steps)[0].step, "push");
  EXPECT_EQ((*steps)[0].outputs["dataset"], "digits@3");
  EXPECT_EQ((*steps)[2].job_id, *jid);

  // Cancel and retry: only the owner or an admin; a retry forgets what did not succeed.
  EXPECT_EQ(ps.request_cancel(r1->id, bob).status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(ps.retry_run(r1->id, kAlice).status().code(), StatusCode::kFailedPrecondition)
      << "a running run is not retried";
  auto cancelling = ps.request_cancel(r1->id, kAlice);
  ASSERT_TRUE(cancelling.ok());
  EXPECT_TRUE(cancelling->cancel_requested);
  auto ended = ps.finish_run(r1->id, "CANCELLED", "cancelled by alice");
  ASSERT_TRUE(ended.ok());
  EXPECT_EQ(ended->state, "CANCELLED");
  EXPECT_EQ(ps.finish_run(r1->id, "FAILED", "").status().code(), StatusCode::kFailedPrecondition);
  auto retried = ps.retry_run(r1->id, admin);
  ASSERT_TRUE(retried.ok()) << retried.status().to_string();
  EXPECT_EQ(retried->state, "RUNNING");
  EXPECT_EQ(retried->attempt, 2);
  EXPECT_FALSE(retried->cancel_requested);
  steps = ps.steps(r1->id);
  ASSERT_EQ(steps->size(), 1u) << "only the succeeded step stays";
  EXPECT_EQ((*steps)[0].step, "push");

  // The cache: put, get, replace, drop.
  EXPECT_FALSE(ps.cache_get("k1")->has_value());
  ASSERT_TRUE(ps.cache_put({"k1", "train", {{"run", 7}}, r1->id, "train"}).ok());
  ASSERT_TRUE(ps.cache_put({"k1", "train", {{"run", 8}}, r1->id, "train"}).ok());
  auto hit = ps.cache_get("k1");
  ASSERT_TRUE(hit.ok() && hit->has_value());
  EXPECT_EQ((**hit).outputs["run"], 8);
  ASSERT_TRUE(ps.cache_drop("k1").ok());
  EXPECT_FALSE(ps.cache_get("k1")->has_value());
}

TEST_P(MetaStoreTest, ModelsListFiltersOrdersAndPages) {
  for (const char* n : {"digits-a", "wine", "digits-b", "digits-c", "cancer"})
    ASSERT_TRUE(store_->registry().create_model(n, "", kAlice).ok());
  auto names = [](const PageOf<Model>& p) {
    std::vector<std::string> out;
    for (auto& m : p.items) out.push_back(m.name);
    return out;
  };
  auto all = store_->registry().list_models(100, "");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(names(*all),
            (std::vector<std::string>{"cancer", "digits-a", "digits-b", "digits-c", "wine"}));
  auto p1 = store_->registry().list_models(2, "", "digits%");
  ASSERT_TRUE(p1.ok());
  EXPECT_EQ(names(*p1), (std::vector<std::string>{"digits-a", "digits-b"}));
  auto p2 = store_->registry().list_models(2, p1->next_page_token, "digits%");
  EXPECT_EQ(names(*p2), (std::vector<std::string>{"digits-c"}));
  EXPECT_TRUE(p2->next_page_token.empty());
  auto desc = store_->registry().list_models(3, "", "", "name DESC");
  EXPECT_EQ(names(*desc), (std::vector<std::string>{"wine", "digits-c", "digits-b"}));
  auto rest = store_->registry().list_models(3, desc->next_page_token, "", "name DESC");
  EXPECT_EQ(names(*rest), (std::vector<std::string>{"digits-a", "cancer"}));
  EXPECT_EQ(store_->registry().list_models(3, "", "", "size").status().code(),
            StatusCode::kInvalidArgument);
}

// Monitoring's records: configurations are versions (the newest in force), a label is kept once
// per (deployment, request id), labels read back in insertion order after a cursor, and alerts
// move through their states and filter by state and deployment.
TEST_P(MetaStoreTest, MonitorConfigLabelsAndAlerts) {
  MonitorStore& m = store_->monitor();
  auto none = m.config();
  ASSERT_TRUE(none.ok()) << none.status().to_string();
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(m.put_config("rules: []\n", kAlice).ok());
  auto v2 = m.put_config("defaults: {history: 5}\n", kAlice);
  ASSERT_TRUE(v2.ok());
  auto now = m.config();
  ASSERT_TRUE(now.ok() && now->has_value());
  EXPECT_EQ((*now)->version, v2->version);
  EXPECT_EQ((*now)->spec_text, "defaults: {history: 5}\n");
  EXPECT_FALSE(m.put_config(std::string(300 << 10, 'x'), kAlice).ok());

  auto added = m.add_feedback("d", {{"r1", json("3")}, {"r2", json(4)}, {"r1", json("9")}});
  ASSERT_TRUE(added.ok()) << added.status().to_string();
  EXPECT_EQ(*added, 2);  // r1 twice in one batch: the first label stays
  EXPECT_EQ(*m.add_feedback("other", {{"r1", json(1.5)}}), 1);  // another deployment's r1
  auto all = m.feedback_after("d", 0, 0, 10);
  ASSERT_TRUE(all.ok()) << all.status().to_string();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].request_id, "r1");
  EXPECT_EQ((*all)[0].label, json("3"));
  EXPECT_EQ((*all)[1].label, json(4));
  auto other = m.feedback_after("other", 0, 0, 10);
  ASSERT_TRUE(other.ok());
  ASSERT_EQ(other->size(), 1u);
  EXPECT_EQ((*other)[0].label, json(1.5));
  auto after = m.feedback_after("d", (*all)[0].id, 0, 10);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->size(), 1u);
  auto recent = m.feedback_after("d", 0, (*all)[1].received_at + 1, 10);
  ASSERT_TRUE(recent.ok());
  EXPECT_TRUE(recent->empty());  // received before `since`

  AlertRecord a;
  a.rule = "drift";
  a.deployment = "d";
  a.severity = "critical";
  a.state = "PENDING";
  a.value = 3;
  a.message = "3 columns";
  a.started_at = 1000;
  auto ins = m.insert_alert(a);
  ASSERT_TRUE(ins.ok()) << ins.status().to_string();
  EXPECT_GT(ins->id, 0);
  AlertRecord f = *ins;
  f.state = "FIRING";
  f.fired_at = 2000;
  ASSERT_TRUE(m.update_alert(f).ok());
  a.deployment = "e";
  auto other_alert = m.insert_alert(a);
  ASSERT_TRUE(other_alert.ok());
  auto firing = m.list_alerts("FIRING", "", 10);
  ASSERT_TRUE(firing.ok());
  ASSERT_EQ(firing->size(), 1u);
  EXPECT_EQ((*firing)[0].fired_at, 2000);
  EXPECT_EQ((*firing)[0].value, 3);
  EXPECT_EQ(m.list_alerts("", "e", 10)->size(), 1u);
  EXPECT_EQ(m.list_alerts("", "", 10)->size(), 2u);
  ASSERT_TRUE(m.delete_alert(other_alert->id).ok());
  EXPECT_EQ(m.list_alerts("", "", 10)->size(), 1u);
}

TEST_P(MetaStoreTest, AuditLogRecordsWhoDidWhat) {
  int64_t run = new_run();
  Principal bob{"bob", Role::kAdmin};
  ASSERT_TRUE(store_->runs().update_run(run, "KILLED", bob).ok());
  auto p = store_->db().list_audit(100, "");
  ASSERT_TRUE(p.ok());
  ASSERT_GE(p->items.size(), 3u);  // experiment, run, update
  EXPECT_EQ(p->items[0].actor, "bob");
  EXPECT_EQ(p->items[0].action, "run.update");
  EXPECT_EQ(p->items[0].target, "run/" + std::to_string(run));
  EXPECT_EQ(p->items[0].detail["status"], "KILLED");
  EXPECT_GT(p->items[0].id, p->items[1].id);  // newest first
  EXPECT_EQ(p->items.back().action, "experiment.create");
  EXPECT_EQ(p->items.back().actor, "alice");
}

TEST_P(MetaStoreTest, TokensAreHashedAndRevocable) {
  auto t = store_->tokens().create_token("ci", Role::kViewer, kAlice);
  ASSERT_TRUE(t.ok());
  std::string token = t->token;
  EXPECT_EQ(t->info.name, "ci");
  EXPECT_EQ(t->info.role, Role::kViewer);
  EXPECT_EQ(token.rfind("dls_", 0), 0u);
  auto who = store_->tokens().authenticate(token);
  ASSERT_TRUE(who.ok());
  EXPECT_EQ(who->name, "ci");
  EXPECT_EQ(who->role, Role::kViewer);
  EXPECT_EQ(store_->tokens().authenticate(token + "x").status().code(),
            StatusCode::kUnauthenticated);
  auto list = store_->tokens().list_tokens();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].id, t->info.id);
  EXPECT_FALSE((*list)[0].revoked);
  EXPECT_EQ(json(*list).dump().find(token), std::string::npos) << "a token was listed in clear";
  ASSERT_TRUE(store_->tokens().revoke_token(t->info.id, kAlice).ok());
  EXPECT_TRUE((*store_->tokens().list_tokens())[0].revoked);
  EXPECT_EQ(store_->tokens().authenticate(token).status().code(), StatusCode::kUnauthenticated);
}

TEST_P(MetaStoreTest, ConcurrentWritersLoseNothing) {
  constexpr int kThreads = 6, kBatches = 20, kPerBatch = 100;
  std::vector<int64_t> runs;
  for (int t = 0; t < kThreads; ++t) runs.push_back(new_run());
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int b = 0; b < kBatches; ++b) {
        std::vector<MetricPoint> pts;
        for (int i = 0; i < kPerBatch; ++i)
          pts.push_back({"m", double(b * kPerBatch + i), b * kPerBatch + i, 0});
        Status st =
            store_->runs().log_batch(runs[t], pts, {}, {{"batch", std::to_string(b)}}, kAlice);
        if (!st.ok()) {
          ++failures;
          ADD_FAILURE() << st.to_string();
        }
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures, 0);
  for (int64_t r : runs) {
    auto h = store_->runs().metric_history(r, "m", kMaxMetricPoints);
    ASSERT_TRUE(h.ok());
    EXPECT_EQ(h->points.size(), size_t{kBatches * kPerBatch});
    EXPECT_FALSE(h->downsampled);
    EXPECT_EQ(store_->runs().get_run(r)->metrics.at("m").step, kBatches * kPerBatch - 1);
  }
}

// SQLite only: sustained writes under readers that never pause keep SQLite's own checkpoint from
// restarting the WAL; the store's TRUNCATE checkpoint bounds it.
TEST(SqliteWal, StaysBoundedUnderConcurrentReaders) {
  auto dir =
      std::filesystem::temp_directory_path() / ("dlsys-wal-test-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::string db = (dir / "meta.db").string();
  SqlOptions options;
  options.wal_checkpoint_bytes = int64_t{1} << 20;
  auto s = MetaStore::open(db, 16, options);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  auto& store = **s;
  auto e = store.runs().ensure_experiment("wal", kAlice);
  ASSERT_TRUE(e.ok());
  constexpr int kWriters = 4, kReaders = 4, kBatches = 140, kPerBatch = 100;
  std::vector<int64_t> runs;
  for (int w = 0; w < kWriters; ++w)
    runs.push_back(store.runs().create_run(e->id, "w", {}, {}, kAlice)->id);
  std::atomic<int> writers_left{kWriters}, failures{0};
  std::atomic<int64_t> max_wal{0}, reads{0};
  auto wal_size = [&] {
    struct stat st;
    return ::stat((db + "-wal").c_str(), &st) == 0 ? int64_t{st.st_size} : int64_t{0};
  };
  std::vector<std::thread> threads;
  for (int r = 0; r < kReaders; ++r)
    threads.emplace_back([&, r] {
      while (writers_left > 0) {
        auto h = store.runs().metric_history(runs[r % kWriters], "m" + std::to_string(r), 200);
        SearchRunsRequest q;
        q.filter = "metrics.m0 > 0.5";
        auto p = store.runs().search_runs(q);
        if (!h.ok() || !p.ok()) ++failures;
        ++reads;
      }
    });
  for (int w = 0; w < kWriters; ++w)
    threads.emplace_back([&, w] {
      for (int b = 0; b < kBatches; ++b) {
        std::vector<MetricPoint> pts;
        for (int i = 0; i < kPerBatch; ++i)
          pts.push_back(
              {"m" + std::to_string(i % 4), (b * kPerBatch + i) % 97 / 97.0, b * kPerBatch + i, 0});
        if (!store.runs().log_batch(runs[w], pts, {}, {}, kAlice).ok()) ++failures;
        int64_t size = wal_size(), seen = max_wal;
        while (size > seen && !max_wal.compare_exchange_weak(seen, size)) {
        }
      }
      --writers_left;
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures, 0);
  EXPECT_GT(reads, 0);
  // Everything written is there.
  for (int64_t r : runs)
    EXPECT_EQ(store.runs().metric_history(r, "m0", 10)->total_points, kBatches * kPerBatch / 4);
  // Past twice the bound every commit checkpoints, so the WAL stays near 2 MiB (2.3-2.6 MiB
  // measured); without the checkpoint it holds every batch (about 35 MiB here).
  EXPECT_LT(max_wal, int64_t{4} << 20) << "the WAL grew to " << max_wal << " bytes";
  EXPECT_GT(store.db().stats().checkpoints, 0);
  s->reset();
  std::filesystem::remove_all(dir);
}

TEST(Utf8, StrictValidation) {
  for (std::string_view ok :
       {"", "ascii", "caf\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xed\x9f\xbf" /* U+D7FF */,
        "\xee\x80\x80" /* U+E000 */, "\xef\xbf\xbf" /* U+FFFF */, "\xf4\x8f\xbf\xbf" /* U+10FFFF */,
        "\xc2\x80", "\xe0\xa0\x80", "\xf0\x90\x80\x80"})
    EXPECT_TRUE(is_valid_utf8(ok)) << ok;
  const std::pair<std::string_view, size_t> bad[] = {
      {"\x80", 0},                // stray continuation
      {"ab\xbf", 2},              // stray continuation
      {"\xc0\xaf", 0},            // overlong '/'
      {"\xc1\xbf", 0},            // overlong
      {"\xe0\x80\xaf", 0},        // overlong 3-byte '/'
      {"\xe0\x9f\xbf", 0},        // overlong 3-byte
      {"\xf0\x80\x80\xaf", 0},    // overlong 4-byte '/'
      {"\xf0\x8f\xbf\xbf", 0},    // overlong 4-byte
      {"x\xed\xa0\x80", 1},       // U+D800, a surrogate
      {"\xed\xbf\xbf", 0},        // U+DFFF
      {"\xf4\x90\x80\x80", 0},    // U+110000
      {"\xf5\x80\x80\x80", 0},    // beyond
      {"\xff", 0},                // never in UTF-8
      {"abc\xe2\x82", 3},         // truncated
      {"\xc3", 0},                // truncated
      {"\xe2\x28\xa1", 0},        // bad second byte
      {"\xf0\x9f\x98", 0},        // truncated 4-byte
      {"ok\xf0\x9f\x98\x41", 2},  // bad fourth byte
  };
  for (auto [s, at] : bad) {
    size_t off = 999;
    EXPECT_FALSE(is_valid_utf8(s, &off)) << ::testing::PrintToString(std::string(s));
    EXPECT_EQ(off, at) << ::testing::PrintToString(std::string(s));
  }
}

// The records' checked reads (what the CLI parses a server's answers with): a malformed answer
// is an error naming the request, the key and the type, never an exception.
TEST(RecordsTest, MalformedAnswersGiveClearErrors) {
  const std::string what = "the server's answer to GET /api/v1/runs/7";
  const json run = {{"id", 7},
                    {"experiment_id", 1},
                    {"name", "r"},
                    {"status", "RUNNING"},
                    {"start_time", 5},
                    {"end_time", nullptr},
                    {"heartbeat_time", 6},
                    {"end_reason", ""},
                    {"created_by", "alice"},
                    {"params", {{"lr", "0.1"}}},
                    {"tags", json::object()},
                    {"metrics", {{"loss", {{"value", 0.5}, {"step", 2}, {"timestamp", 9}}}}}};
  auto ok = from_json<meta::Run>(run, what);
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_EQ(ok->params.at("lr"), "0.1");
  EXPECT_FALSE(ok->end_time.has_value());
  EXPECT_EQ(ok->metrics.at("loss").step, 2);
  EXPECT_EQ(json(*ok), run);  // to_json gives the same representation back

  auto error_of = [&](const json& j) {
    auto r = from_json<meta::Run>(j, what);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << j.dump();
    return r.status().message();
  };
  json bad = run;
  bad["status"] = 3;
  EXPECT_EQ(error_of(bad),
            "the server's answer to GET /api/v1/runs/7: 'status' must be a string, got an integer");
  bad = run;
  bad.erase("id");
  EXPECT_EQ(error_of(bad), "the server's answer to GET /api/v1/runs/7: 'id' is missing");
  bad = run;
  bad["params"]["lr"] = 0.1;
  EXPECT_NE(error_of(bad).find("params['lr']: expected a string"), std::string::npos);
  bad = run;
  bad["metrics"]["loss"]["step"] = "2";
  EXPECT_NE(error_of(bad).find("metrics['loss']: 'step' must be an integer, got a string"),
            std::string::npos);
  bad = run;
  bad["tags"] = json::array();
  EXPECT_NE(error_of(bad).find("'tags' must be an object, got an array"), std::string::npos);
  EXPECT_NE(error_of(json::array()).find("expected an object, got an array"), std::string::npos);

  EXPECT_FALSE(from_json<Experiment>(json{{"id", "1"}, {"name", "e"}}, what).ok());
  EXPECT_FALSE(from_json<MetricHistory>(
                   json{{"run_id", 1}, {"key", "k"}, {"total_points", 1}, {"points", 3}}, what)
                   .ok());
  EXPECT_FALSE(
      from_json<ArtifactInfo>(json{{"path", "a"}, {"sha256", "x"}, {"size", -0.5}}, what).ok());
  auto model = from_json<Model>(json{{"name", "m"}, {"aliases", {{"production", "2"}}}}, what);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("aliases['production']: expected an integer"),
            std::string::npos);
  json version = {{"model", "m"},         {"version", 1},     {"run_id", 2},
                  {"artifact_path", "a"}, {"sha256", "x"},    {"size", 3},
                  {"status", "READY"},    {"aliases", {"p"}}, {"description", ""},
                  {"created_at", 4},      {"created_by", "b"}};
  auto v = from_json<ModelVersion>(version, what);
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  EXPECT_EQ(json(*v), version);
  version["version"] = "1";
  EXPECT_FALSE(from_json<ModelVersion>(version, what).ok());
}

INSTANTIATE_TEST_SUITE_P(Engines, MetaStoreTest, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

// Processes that open one new metadata store in SQLite at once (the ranks of `dlsys train --nproc 4
// --data-dir D`) all get it: the first switch to WAL takes the database's exclusive lock, which
// SQLite does not wait for through its busy handler. Eight processes, started together, three
// times over, each writing four experiments.
TEST(SqliteOpen, ProcessesOpeningANewDatabaseAtOnceAllSucceed) {
  SqlOptions kWal;
  kWal.wal_checkpoint_bytes = 64 << 20;  // the default journal_size_limit pragma as well
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("dlsys-sqlite-open-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  for (int round = 0; round < 3; ++round) {
    const std::string path = (dir / ("meta-" + std::to_string(round) + ".db")).string();
    const auto start = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
    std::vector<pid_t> kids;
    for (int k = 0; k < 8; ++k) {
      pid_t p = ::fork();
      if (p == 0) {
        std::this_thread::sleep_until(start);
        auto db = MetaStore::open(path, 2, kWal);
        Status st = db.status();
        // Each writes too (another process's write holds the lock).
        for (int e = 0; st.ok() && e < 4; ++e)
          st = (*db)->runs().create_experiment(fmt::format("e{}-{}", k, e), "", kAlice).status();
        if (!st.ok()) std::fprintf(stderr, "%s\n", st.to_string().c_str());
        ::_exit(st.ok() ? 0 : 1);
      }
      kids.push_back(p);
    }
    for (pid_t p : kids) {
      int st = 0;
      ::waitpid(p, &st, 0);
      EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "round " << round;
    }
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace dlsys::meta
