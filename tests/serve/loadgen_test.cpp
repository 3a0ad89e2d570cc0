// The load generator behind `dlsys bench serve`: the Poisson schedule, percentiles against a
// brute-force reference, the histogram, the generated request bodies, and each scenario for
// about a second against a real server on loopback with a deployed model.
#include "serve/loadgen.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "../api/server_fixture.h"
#include "serve/model_server.h"
#include "serve/serve_routes.h"
#include "testing/onnx_builder.h"

namespace dlsys::serve {
namespace {

using nlohmann::json;

TEST(LoadgenSchedule, SeededPoissonRateIsWithinToleranceAndTimesAreMonotone) {
  const double qps = 1000, seconds = 20;
  std::vector<double> t = poisson_arrivals(qps, seconds, 42);
  // 20,000 expected; the count's standard deviation is sqrt(20000) = 141, so 3% is over 4 sd.
  EXPECT_NEAR(static_cast<double>(t.size()), qps * seconds, 0.03 * qps * seconds);
  ASSERT_FALSE(t.empty());
  EXPECT_GT(t.front(), 0);
  EXPECT_LT(t.back(), seconds);
  for (size_t i = 1; i < t.size(); ++i) ASSERT_GE(t[i], t[i - 1]) << "arrival " << i;
  // Exponential gaps: mean 1/qps, and their standard deviation equals their mean.
  double sum = 0, sq = 0;
  for (size_t i = 1; i < t.size(); ++i) {
    double g = t[i] - t[i - 1];
    sum += g;
    sq += g * g;
  }
  double n = static_cast<double>(t.size() - 1), mean = sum / n;
  EXPECT_NEAR(mean, 1.0 / qps, 0.03 / qps);
  EXPECT_NEAR(std::sqrt(sq / n - mean * mean), 1.0 / qps, 0.05 / qps);
  // The seed decides the times.
  EXPECT_EQ(poisson_arrivals(qps, 1, 42), poisson_arrivals(qps, 1, 42));
  EXPECT_NE(poisson_arrivals(qps, 1, 42), poisson_arrivals(qps, 1, 43));
  PoissonSchedule s(50, 7);
  double last = 0;
  for (int i = 0; i < 1000; ++i) {
    double now = s.next();
    ASSERT_GE(now, last);
    last = now;
  }
  EXPECT_TRUE(poisson_arrivals(0, 10, 1).empty());
}

TEST(LoadgenStats, PercentilesMatchANearestRankReference) {
  // 1..100: the q-quantile by nearest rank is 100q.
  std::vector<double> hundred;
  for (int i = 1; i <= 100; ++i) hundred.push_back(i);
  EXPECT_EQ(percentile(hundred, 0.50), 50);
  EXPECT_EQ(percentile(hundred, 0.90), 90);
  EXPECT_EQ(percentile(hundred, 0.99), 99);
  EXPECT_EQ(percentile(hundred, 1.0), 100);
  EXPECT_EQ(percentile({7.5}, 0.99), 7.5);
  EXPECT_EQ(percentile({}, 0.5), 0);
  // Random samples against the definition, checked by counting.
  std::mt19937 rng(3);
  std::lognormal_distribution<double> lat(0.0, 1.0);
  for (int n : {2, 3, 10, 37, 1000}) {
    std::vector<double> v(static_cast<size_t>(n));
    for (auto& x : v) x = lat(rng);
    std::sort(v.begin(), v.end());
    for (double q : {0.1, 0.5, 0.9, 0.99}) {
      double got = percentile(v, q);
      // The smallest sample with at least q*n samples at or below it.
      double want = v.back();
      for (double c : v) {
        double at_or_below = static_cast<double>(
            std::count_if(v.begin(), v.end(), [&](double x) { return x <= c; }));
        if (at_or_below >= q * n) {
          want = c;
          break;
        }
      }
      EXPECT_EQ(got, want) << "n=" << n << " q=" << q;
    }
  }
}

TEST(LoadgenStats, HistogramCountsEveryLatencyInItsBucketAndTrimsEmptyEnds) {
  auto h = latency_histogram({0.3, 0.5, 0.51, 3, 3, 4.9, 12000});
  ASSERT_EQ(h.size(), 15u);  // 0.5, 1, 2, 5, ... 5000, 10000 and +inf
  EXPECT_EQ(h[0].le_ms, 0.5);
  EXPECT_EQ(h[0].count, 2);  // 0.3 and 0.5 (upper bounds are inclusive)
  EXPECT_EQ(h[1].le_ms, 1);
  EXPECT_EQ(h[1].count, 1);
  EXPECT_EQ(h[3].le_ms, 5);
  EXPECT_EQ(h[3].count, 3);
  EXPECT_TRUE(std::isinf(h.back().le_ms));
  EXPECT_EQ(h.back().count, 1);
  int64_t total = 0;
  for (const auto& b : h) total += b.count;
  EXPECT_EQ(total, 7);
  EXPECT_TRUE(latency_histogram({}).empty());
}

TEST(LoadgenStats, SummaryClassifiesAnswersAndChecksTheBound) {
  LoadgenResult r;
  r.batch = 2;
  r.p99_bound_ms = 10;
  std::vector<RequestRecord> recs = {{0.0, 0.0, 1.0, 200},
                                     {0.1, 0.1, 3.0, 200},
                                     {0.2, 0.25, 60, 503},
                                     {0.3, 0.3, 2, 400},
                                     {0.4, 0.4, 1, 0}};
  summarize(recs, 2.0, &r);
  EXPECT_EQ(r.sent, 5);
  EXPECT_EQ(r.ok, 2);
  EXPECT_EQ(r.rejected, 1);
  EXPECT_EQ(r.failed, 2);
  EXPECT_DOUBLE_EQ(r.throughput_rows_per_s, 2.0);  // 2 ok x 2 rows / 2 s
  EXPECT_EQ(r.p99_ms, 3.0);
  EXPECT_NEAR(r.rejected_p50_ms, 10.0, 1e-9);  // 60 ms from its arrival, sent 50 ms late
  EXPECT_FALSE(r.p99_met) << "failed requests make the run miss its bound";
  recs.resize(3);
  summarize(recs, 2.0, &r);
  EXPECT_TRUE(r.p99_met);
  r.p99_bound_ms = 2;
  summarize(recs, 2.0, &r);
  EXPECT_FALSE(r.p99_met);
  json j = to_json(r);
  EXPECT_EQ(j["ok"], 2);
  EXPECT_EQ(j["histogram"].size(), 3u);  // 1, 2 (empty, inside the range) and 5
}

TEST(LoadgenBody, BinaryTensorsOfTheModelsDatatypesAndShapes) {
  json meta = {{"inputs",
                {{{"name", "x"}, {"datatype", "FP32"}, {"shape", {-1, 4}}},
                 {{"name", "ids"}, {"datatype", "INT64"}, {"shape", {-1, -1}}},
                 {{"name", "m"}, {"datatype", "BOOL"}, {"shape", {-1, 2, 3}}}}}};
  size_t jl = 0;
  auto body = make_infer_body(meta, 3, 50, 1, &jl);
  ASSERT_TRUE(body.ok()) << body.status().to_string();
  json head = json::parse(body->substr(0, jl));
  EXPECT_EQ(head["inputs"][0]["shape"], json({3, 4}));
  EXPECT_EQ(head["inputs"][0]["parameters"]["binary_data_size"], 3 * 4 * 4);
  EXPECT_EQ(head["inputs"][1]["shape"], json({3, 1}));  // a free dim other than the batch: 1
  EXPECT_EQ(head["inputs"][1]["parameters"]["binary_data_size"], 3 * 8);
  EXPECT_EQ(head["inputs"][2]["parameters"]["binary_data_size"], 3 * 6);
  EXPECT_EQ(head["parameters"]["binary_data_output"], true);
  EXPECT_EQ(head["parameters"]["timeout"], 50000);  // microseconds
  EXPECT_EQ(body->size(), jl + 48 + 24 + 18);
  // The seed decides the bytes.
  size_t jl2 = 0;
  EXPECT_EQ(*make_infer_body(meta, 3, 50, 1, &jl2), *body);
  EXPECT_NE(*make_infer_body(meta, 3, 50, 2, &jl2), *body);

  json fixed = {{"inputs", {{{"name", "x"}, {"datatype", "FP32"}, {"shape", {1, 4}}}}}};
  auto bad = make_infer_body(fixed, 2, 0, 1, &jl);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("fixed at 1, not 2"), std::string::npos);
  json str = {{"inputs", {{{"name", "s"}, {"datatype", "BYTES"}, {"shape", {-1}}}}}};
  bad = make_infer_body(str, 1, 0, 1, &jl);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("cannot make datatype BYTES"), std::string::npos);
  EXPECT_FALSE(make_infer_body(json::object(), 1, 0, 1, &jl).ok());
}

// Each scenario for about a second against a real server with the tiny MLP deployed.
class LoadgenServerTest : public api::ServerFixture {
 protected:
  void SetUp() override {
    Start(
        false, 16 << 20,
        [this](api::Router& r) {
          models_ = std::make_unique<ModelServer>(backend_->store(), backend_->objects(),
                                                  ModelServerOptions{});
          add_serve_routes(r, *models_, backend_->store());
          ASSERT_TRUE(models_->start().ok());
        },
        [this](api::ServerOptions& so) {
          so.extra_metrics = [this] { return models_->metrics_text(); };
        });
    local_ = api::connect_local(*backend_);
    auto run = local_->call("POST", "/api/v1/runs", {{"experiment", "loadgen"}});
    ASSERT_TRUE(run.ok()) << run.status().to_string();
    std::string f = (dir_ / "m.onnx").string();
    ASSERT_TRUE(write_file_atomic(f, testing::tiny_mlp().bytes()).ok());
    ASSERT_TRUE(local_->upload("/api/v1/runs/1/artifacts/model.onnx", f).ok());
    ASSERT_TRUE(local_->call("POST", "/api/v1/models", {{"name", "mlp"}}).ok());
    ASSERT_TRUE(local_->call("POST", "/api/v1/models/mlp/versions", {{"run_id", 1}}).ok());
    Deploy("mlp", {{"max_batch", 8}, {"max_delay_us", 200}});
  }
  void TearDown() override {
    conn_.reset();
    if (server_) server_->shutdown();
    if (thread_.joinable()) thread_.join();
    models_.reset();
    ServerFixture::TearDown();
  }
  void Deploy(const std::string& name, const json& config) {
    auto r = Req("POST", "/api/v1/deployments",
                 json{{"name", name}, {"model", "mlp"}, {"ref", "1"}, {"config", config}}.dump());
    ASSERT_EQ(r.status, 201) << r.body;
  }
  LoadgenOptions Options(Scenario s, const std::string& model = "mlp") {
    LoadgenOptions o;
    o.port = server_->port();
    o.model = model;
    o.scenario = s;
    o.duration_s = 1.0;
    return o;
  }
  static void ExpectConsistent(const LoadgenResult& r) {
    EXPECT_LE(r.p50_ms, r.p90_ms);
    EXPECT_LE(r.p90_ms, r.p99_ms);
    EXPECT_LE(r.p99_ms, r.max_ms);
    int64_t in_histogram = 0;
    for (const auto& b : r.histogram) in_histogram += b.count;
    EXPECT_EQ(in_histogram, r.ok);
    EXPECT_EQ(r.sent, r.ok + r.rejected + r.failed);
  }

  std::unique_ptr<ModelServer> models_;
  std::unique_ptr<api::ApiClient> local_;
};

// CPU seconds the calling thread has used.
double ThreadCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_THREAD, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

TEST_F(LoadgenServerTest, SingleStreamSendsOneQueryAtATime) {
  LoadgenOptions o = Options(Scenario::kSingleStream);
  o.keep_records = true;
  double cpu0 = ThreadCpuSeconds();
  auto r = run_loadgen(o);
  // The calling thread only waits for the clients (it must not spin: the client would take
  // CPU from the server it measures).
  EXPECT_LT(ThreadCpuSeconds() - cpu0, 0.2);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_GT(r->sent, 10);
  EXPECT_EQ(r->ok, r->sent) << r->first_error;
  EXPECT_EQ(r->failed, 0);
  EXPECT_EQ(r->connections, 1);
  EXPECT_NEAR(r->seconds, 1.0, 0.5);
  ExpectConsistent(*r);
  // One at a time: each query is sent after the previous one's answer.
  ASSERT_EQ(r->records.size(), static_cast<size_t>(r->sent));
  for (size_t i = 1; i < r->records.size(); ++i) {
    const auto& prev = r->records[i - 1];
    ASSERT_GE(r->records[i].sent_s, prev.scheduled_s + prev.latency_ms / 1e3 - 1e-6) << i;
  }
}

TEST_F(LoadgenServerTest, OfflineCountsRowsFromEveryClient) {
  LoadgenOptions o = Options(Scenario::kOffline);
  o.concurrency = 3;
  o.batch = 2;
  auto r = run_loadgen(o);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_GT(r->ok, 10);
  EXPECT_EQ(r->ok, r->sent) << r->first_error;
  EXPECT_EQ(r->connections, 3);
  EXPECT_NEAR(r->throughput_rows_per_s, 2.0 * static_cast<double>(r->ok) / r->seconds, 1e-6);
  ExpectConsistent(*r);
  // The server saw rows, not requests: 2 per query.
  std::string m = Req("GET", "/metrics").body;
  EXPECT_NE(m.find("dlsys_serve_batch_size_sum{deployment=\"mlp\",model=\"mlp\",version=\"1\",role="
                   "\"primary\"} " +
                   std::to_string(2 * r->ok) + "\n"),
            std::string::npos)
      << m;
}

TEST_F(LoadgenServerTest, ServerSendsEveryScheduledArrivalAtItsTime) {
  LoadgenOptions o = Options(Scenario::kServer);
  o.qps = 200;
  o.seed = 5;
  o.p99_bound_ms = 1000;  // a loaded test machine: the check here is the bookkeeping
  o.keep_records = true;
  auto r = run_loadgen(o);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  std::vector<double> schedule = poisson_arrivals(200, 1.0, 5);
  ASSERT_EQ(r->sent, static_cast<int64_t>(schedule.size()));
  EXPECT_EQ(r->ok, r->sent) << r->first_error;
  ASSERT_EQ(r->records.size(), schedule.size());
  for (size_t i = 0; i < schedule.size(); ++i) {
    EXPECT_EQ(r->records[i].scheduled_s, schedule[i]);
    // Never before its time; latency counts from the schedule, so a late send is charged.
    EXPECT_GE(r->records[i].sent_s, schedule[i]);
    EXPECT_GE(r->records[i].latency_ms, (r->records[i].sent_s - r->records[i].scheduled_s) * 1e3);
  }
  EXPECT_EQ(r->p99_met, r->p99_ms <= 1000);
  ExpectConsistent(*r);
  json j = to_json(*r);
  EXPECT_EQ(j["scenario"], "server");
  EXPECT_EQ(j["target_qps"], 200.0);
}

TEST_F(LoadgenServerTest, DeadlineRejectionsAndFailuresAreCountedApart) {
  // A batch that waits 300 ms to fill, and queries with a 1 ms deadline: every one is answered
  // 503 by the batcher at its deadline, less the time answers lately waited to be written (at
  // most a quarter of the timeout: serve/v2_codec.h, answer_delay_us).
  Deploy("slow", {{"max_batch", 8}, {"max_delay_us", 300000}});
  LoadgenOptions o = Options(Scenario::kSingleStream, "slow");
  o.duration_s = 0.3;
  o.timeout_ms = 1;
  auto r = run_loadgen(o);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_GT(r->rejected, 0);
  EXPECT_EQ(r->rejected, r->sent);
  EXPECT_EQ(r->ok, 0);
  EXPECT_GE(r->rejected_p50_ms, 0.75);
  // More rows than max_batch: every query is a 400, a failure with the server's message.
  o = Options(Scenario::kOffline);
  o.duration_s = 0.3;
  o.batch = 9;
  o.concurrency = 2;
  r = run_loadgen(o);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_GT(r->failed, 0);
  EXPECT_EQ(r->failed, r->sent);
  EXPECT_NE(r->first_error.find("HTTP 400"), std::string::npos) << r->first_error;
  EXPECT_FALSE(r->p99_met);
  // An unknown model stops before any query, with the server's answer.
  auto none = run_loadgen(Options(Scenario::kSingleStream, "nope"));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound) << none.status().to_string();
  EXPECT_NE(none.status().message().find("HTTP 404"), std::string::npos);
}

}  // namespace
}  // namespace dlsys::serve
