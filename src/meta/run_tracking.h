// Run tracking: experiments, runs (status, params, tags), metric series with their latest values
// and bounded histories, run search, and the records of run artifacts (the bytes live in the
// ArtifactStore). Thread-safe: each call borrows its own connection from the pool.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "meta/auth.h"
#include "meta/store_db.h"

namespace dlsys::meta {

// Limits (checked with 400-class errors that name the limit).
constexpr size_t kMaxParamValueLength = 6000;
constexpr size_t kMaxTagValueLength = 5000;
constexpr size_t kMaxMetricsPerBatch = 1000;
constexpr size_t kMaxParamsPerBatch = 100;
constexpr size_t kMaxTagsPerBatch = 100;
// Points a metric history returns: the default (max_points 0) and the most a caller may ask.
constexpr int kDefaultMaxMetricPoints = 1000;
constexpr int kMaxMetricPoints = 100000;

struct MetricPoint {
  std::string key;
  double value = 0;
  int64_t step = 0;
  int64_t timestamp = 0;  // ms since the epoch; 0 means "now"
};

struct KeyValue {
  std::string key;
  std::string value;
};

struct SearchRunsRequest {
  std::vector<int64_t> experiment_ids;  // empty: all experiments
  std::string filter;    // e.g. "params.lr = '0.1' and metrics.acc > 0.9 and status = 'FINISHED'"
  std::string order_by;  // "start_time DESC" (default), "metrics.acc DESC", "params.lr", "name"
  int page_size = 100;
  std::string page_token;
};

struct ArtifactRecord {
  std::string path;
  std::string sha256;
  int64_t size = 0;
};

class RunTracking {
 public:
  explicit RunTracking(StoreDb& db) : db_(db) {}

  // Experiments. Names are unique (409 on a second create).
  Result<json> create_experiment(const std::string& name, const std::string& description,
                                 const Principal& who);
  Result<json> get_experiment(int64_t id);
  Result<json> get_experiment_by_name(const std::string& name);
  // Returns the experiment called `name`, creating it if missing.
  Result<json> ensure_experiment(const std::string& name, const Principal& who);
  Result<Page> list_experiments(int page_size, const std::string& page_token);

  // Runs. A new run is RUNNING; params and tags may be given at creation.
  Result<json> create_run(int64_t experiment_id, const std::string& name,
                          const std::vector<KeyValue>& params, const std::vector<KeyValue>& tags,
                          const Principal& who);
  // The run with its params, tags and latest metric values.
  Result<json> get_run(int64_t id);
  // Sets status (RUNNING, FINISHED, FAILED, KILLED); a terminal status sets end_time.
  Result<json> update_run(int64_t id, const std::string& status, const Principal& who);
  // Logs metrics, params and tags in one transaction. Params are write-once: the same value
  // again is accepted, a different one is a 400.
  Status log_batch(int64_t run_id, const std::vector<MetricPoint>& metrics,
                   const std::vector<KeyValue>& params, const std::vector<KeyValue>& tags,
                   const Principal& who);
  // The series of `key` in step order, at most max_points points (0: kDefaultMaxMetricPoints;
  // above kMaxMetricPoints is an error). A longer series is downsampled in the database: up to
  // max_points / 3 buckets of consecutive steps, each giving its minimum, its maximum and its
  // last point (highest step, then latest timestamp), so a one-point spike survives.
  // {"run_id", "key", "total_points" (the real count), "downsampled", "points"}.
  Result<json> metric_history(int64_t run_id, const std::string& key, int max_points);
  Result<Page> search_runs(const SearchRunsRequest& req);

  // Artifact records (the bytes live in the ArtifactStore). Re-recording a path replaces it.
  Status record_artifact(int64_t run_id, const ArtifactRecord& a, const Principal& who);
  Result<ArtifactRecord> get_artifact(int64_t run_id, const std::string& path);
  Result<json> list_artifacts(int64_t run_id, const std::string& prefix);

 private:
  Result<json> load_runs(SqlConnection& c, const std::vector<SqlRow>& rows);

  StoreDb& db_;
};

}  // namespace dlsys::meta
