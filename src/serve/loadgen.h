// The serving load generator behind `dlsys bench serve` (issue 19), with MLPerf LoadGen's three
// scenarios against a KServe v2 endpoint:
//
//   single-stream  one query at a time, the next when the last returned; the headline is p90.
//   server         Poisson arrivals at a target QPS, scheduled against the clock (a late answer
//                  does not slow the arrivals); latency counts from the *scheduled* arrival, so
//                  client-side lateness is charged to the server's figure, never hidden; the
//                  headline is p99 and whether it met the bound.
//   offline        `concurrency` clients sending back to back; the headline is rows/s.
//
// The pure parts (the arrival schedule, percentiles, the histogram, the result record) are
// plain functions for tests; run_loadgen() does the HTTP work over keep-alive connections
// (serve/loadgen_connection.h) with binary tensors (the protocol's extension): single-stream and
// offline with one thread per connection, server on one thread that sends each arrival on an
// idle connection and reads answers as their sockets become readable (epoll), so that the
// client is not woken once per answer per thread. The model's metadata comes first through
// api::HttpConnection.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/status.h"

namespace dlsys::serve {

enum class Scenario { kSingleStream, kServer, kOffline };

// "single-stream", "server" or "offline"; InvalidArgument names the three otherwise.
Result<Scenario> parse_scenario(const std::string& name);
const char* scenario_name(Scenario s);

// Poisson arrivals: exponential inter-arrival gaps of mean 1/qps from a generator seeded with
// `seed` (the same seed gives the same times). Requires qps > 0.
class PoissonSchedule {
 public:
  PoissonSchedule(double qps, uint64_t seed);
  // Seconds from the start of the run to the next arrival; never decreases.
  double next();

 private:
  std::mt19937_64 rng_;
  std::exponential_distribution<double> gap_;
  double t_ = 0;
};

// Every arrival of PoissonSchedule(qps, seed) before `duration_s`, in order.
std::vector<double> poisson_arrivals(double qps, double duration_s, uint64_t seed);

// The q-quantile (0 < q <= 1) of ascending `sorted` by nearest rank: the smallest value with at
// least q*n values at or below it (MLPerf's definition). 0 when empty.
double percentile(const std::vector<double>& sorted, double q);

// One bucket of a latency histogram: the requests with latency in (previous le, le] ms. The
// last bucket's le is +infinity.
struct HistogramBucket {
  double le_ms = 0;
  int64_t count = 0;
};

// A histogram of latencies (ms) over fixed 1-2-5 bounds from 0.1 ms to 10 s and +inf; buckets
// outside [lowest latency, highest latency] are left out, so a run shows only its range.
std::vector<HistogramBucket> latency_histogram(const std::vector<double>& latencies_ms);

// One request as the generator saw it (for --records and the benches' windows).
struct RequestRecord {
  double scheduled_s = 0;  // from the start of the run (server: the Poisson arrival)
  double sent_s = 0;       // when it was written to the connection
  double latency_ms = 0;   // answer time minus scheduled_s
  int status = 0;          // HTTP status; 0 for a transport error
};

struct LoadgenOptions {
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string model;  // the v2 model name (the deployment's name)
  std::string token;  // sent as "Authorization: Bearer"; empty for none
  Scenario scenario = Scenario::kSingleStream;
  double qps = 100;        // server: mean arrivals per second
  double duration_s = 10;  // how long queries are issued
  int64_t batch = 1;       // rows per query (dimension 0 of every input)
  // offline: client threads; server: connections opened up front (at least 2 x qps x the p99
  // bound, what it expects in flight)
  int concurrency = 4;
  int max_connections = 512;  // server: connections it may grow to
  int64_t timeout_ms = 0;     // the request's "timeout" parameter; 0 leaves the deployment's
  double p99_bound_ms = 25;   // server: the bound p99 is checked against
  uint64_t seed = 1;          // the arrival schedule and the generated inputs
  bool keep_records = false;  // fill LoadgenResult::records
};

struct LoadgenResult {
  Scenario scenario = Scenario::kSingleStream;
  std::string model;
  int64_t batch = 1;
  double target_qps = 0;             // server only
  double seconds = 0;                // the start to the last answer
  int64_t sent = 0, ok = 0;          // ok: 200
  int64_t rejected = 0;              // 503 (queue full or deadline passed)
  int64_t failed = 0;                // any other status, or a transport error
  int64_t late_dispatches = 0;       // server: arrivals sent > 1 ms after their time (client-bound)
  int connections = 0;               // client connections used
  double throughput_rows_per_s = 0;  // ok * batch / seconds
  double achieved_qps = 0;           // sent / seconds; server: sent / duration (the arrival rate)
  // Of the ok answers (ms; server: from the scheduled arrival).
  double mean_ms = 0, p50_ms = 0, p90_ms = 0, p99_ms = 0, max_ms = 0;
  // Of the 503 answers (ms from when each was sent).
  double rejected_p50_ms = 0, rejected_p99_ms = 0;
  bool p99_met = false;  // server: p99_ms <= p99_bound_ms and nothing failed
  double p99_bound_ms = 0;
  std::vector<HistogramBucket> histogram;  // of the ok answers
  std::string first_error;                 // the first failure's message, "" when none
  std::vector<RequestRecord> records;      // in scheduled order, when keep_records
};

// Fills the summary fields of `r` (counts, percentiles, histogram, p99_met) from `records`
// and `seconds`. Exposed for tests.
void summarize(const std::vector<RequestRecord>& records, double seconds, LoadgenResult* r);

// The result as one JSON object (every summary field, the histogram as [{"le_ms", "count"}];
// not the records).
nlohmann::json to_json(const LoadgenResult& r);

// What run_loadgen reports while it runs.
struct LoadgenProgress {
  double elapsed_s = 0;
  int64_t sent = 0, ok = 0, rejected = 0, failed = 0;
  int connections = 0;
};

// Reads the model's metadata (GET /v2/models/NAME), generates one seeded request body of
// `batch` rows in the model's datatypes (binary tensors, free dimensions other than the batch
// set to 1), and runs the scenario for `duration_s`. `progress`, when given, is called about
// every 0.25 s from the calling thread. Errors: the server cannot be reached, the model is
// unknown (the server's message), a datatype the generator cannot make, bad options.
// Failures of individual queries are counted in the result, not returned.
Result<LoadgenResult> run_loadgen(const LoadgenOptions& options,
                                  const std::function<void(const LoadgenProgress&)>& progress = {});

// The request body (binary tensor extension) run_loadgen sends for `metadata` (the answer of
// GET /v2/models/NAME) with `batch` rows; *json_length is its Inference-Header-Content-Length.
// Exposed for tests.
Result<std::string> make_infer_body(const nlohmann::json& metadata, int64_t batch,
                                    int64_t timeout_ms, uint64_t seed, size_t* json_length);

}  // namespace dlsys::serve
