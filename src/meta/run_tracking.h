// Run tracking: experiments, runs (status, params, tags), metric series with their latest values
// and bounded histories, run search, and the records of run artifacts (the bytes live in the
// ArtifactStore). Thread-safe: each call borrows its own connection from the pool.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/file_util.h"
#include "core/status.h"
#include "meta/auth.h"
#include "meta/store_db.h"

namespace dlsys::meta {

// Limits (checked with 400-class errors that name the limit).
constexpr size_t kMaxParamValueLength = 6000;
constexpr size_t kMaxTagValueLength = 5000;
// Points of one log_batch: as a list of point objects ("metrics", MLflow's limit), and in all
// (the columnar "series" form of the REST route, docs/api.md).
constexpr size_t kMaxMetricsPerBatch = 1000;
constexpr size_t kMaxPointsPerBatch = 100000;
constexpr size_t kMaxParamsPerBatch = 100;
constexpr size_t kMaxTagsPerBatch = 100;
// Points a metric history returns: the default (max_points 0) and the most a caller may ask.
constexpr int kDefaultMaxMetricPoints = 1000;
constexpr int kMaxMetricPoints = 100000;
// metric_histories: runs and keys per call, the points per series it returns by default and at
// most, and the most points one answer may hold (runs x keys x max_points: 1,000 runs x 20 keys
// x 100 points, or 1,000 runs x 2 keys x 1,000 points).
constexpr size_t kMaxHistoryRuns = 1000;
constexpr size_t kMaxHistoryKeys = 20;
constexpr int kDefaultHistoryPoints = 200;
constexpr int kMaxHistoryPoints = 1000;
constexpr int64_t kMaxHistoryAnswerPoints = 2000000;
// Runs one search may name by id (SearchRunsRequest::run_ids).
constexpr size_t kMaxSearchRunIds = 1000;

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
  std::vector<int64_t> run_ids;  // only these runs (at most kMaxSearchRunIds); empty: any
};

// The steps of a metric series a history covers: both ends included, an unset end is open.
struct StepRange {
  std::optional<int64_t> min_step;
  std::optional<int64_t> max_step;
};

struct ArtifactRecord {
  std::string path;
  std::string sha256;
  int64_t size = 0;
};

// An experiment: a named group of runs.
struct Experiment {
  int64_t id = 0;
  std::string name;
  std::string description;
  int64_t created_at = 0;  // ms since the epoch
  std::string created_by;  // the principal that created it
};

// The latest point of one metric series (the one with the highest step).
struct LatestMetric {
  double value = 0;
  int64_t step = 0;
  int64_t timestamp = 0;  // ms since the epoch
};

// A run with its params, tags and the latest value of each metric.
struct Run {
  int64_t id = 0;
  int64_t experiment_id = 0;
  std::string name;
  std::string status;               // RUNNING, FINISHED, FAILED or KILLED
  int64_t start_time = 0;           // ms since the epoch
  std::optional<int64_t> end_time;  // set when the status became terminal
  int64_t heartbeat_time = 0;       // when the run was last heard from (ms since the epoch)
  std::string end_reason;           // why the server ended it ("no heartbeat for 312 s ..."), or ""
  std::string created_by;
  std::map<std::string, std::string> params;  // written once
  std::map<std::string, std::string> tags;
  std::map<std::string, LatestMetric> metrics;
};

struct HistoryPoint {
  int64_t step = 0;
  int64_t timestamp = 0;  // ms since the epoch
  double value = 0;
};

// A metric series as metric_history returns it.
struct MetricHistory {
  int64_t run_id = 0;
  std::string key;
  int64_t total_points = 0;  // points in the series; more than points.size() when downsampled
  bool downsampled = false;
  std::vector<HistoryPoint> points;  // in step order
};

// An artifact record as listed: the record and when it was recorded.
struct ArtifactInfo {
  std::string path;
  std::string sha256;
  int64_t size = 0;
  int64_t created_at = 0;  // ms since the epoch
};

// The REST representations (docs/api.md); `json j = run;` works through these.
void to_json(json& j, const Experiment& e);
void to_json(json& j, const Run& r);
void to_json(json& j, const MetricHistory& h);
void to_json(json& j, const ArtifactInfo& a);
// Checked reads of the same (see from_json in store_db.h).
template <>
Result<Experiment> from_json<Experiment>(const json& j, std::string_view what);
template <>
Result<Run> from_json<Run>(const json& j, std::string_view what);
template <>
Result<MetricHistory> from_json<MetricHistory>(const json& j, std::string_view what);
template <>
Result<ArtifactInfo> from_json<ArtifactInfo>(const json& j, std::string_view what);

// When a RUNNING run counts as abandoned, and the clock run times are taken from.
struct RunLiveness {
  // A RUNNING run not heard from (created, heartbeat, logged to, artifact stored, status set)
  // for longer than this is marked FAILED by the next sweep. 0: runs never time out.
  int64_t timeout_ms = 0;
  // Milliseconds since the epoch for every time this class writes and for the sweep; null is
  // the wall clock (tests inject one to move time without sleeping).
  std::function<int64_t()> clock;
  // Reads sweep at most once in this long (by `clock`), so a busy read path pays for one index
  // read a second, not one per request; 0: every read sweeps.
  int64_t read_sweep_interval_ms = 1000;
};

class RunTracking {
 public:
  explicit RunTracking(StoreDb& db) : db_(db) {}

  // Sets the timeout and clock; call it before the store is used (it is not synchronized with
  // calls in flight). get_run and search_runs sweep first when a timeout is set (at most once
  // per read_sweep_interval_ms).
  void set_liveness(RunLiveness liveness) { liveness_ = std::move(liveness); }
  const RunLiveness& liveness() const { return liveness_; }

  // Experiments. Names are unique (409 on a second create).
  Result<Experiment> create_experiment(const std::string& name, const std::string& description,
                                       const Principal& who);
  Result<Experiment> get_experiment(int64_t id);
  Result<Experiment> get_experiment_by_name(const std::string& name);
  // Returns the experiment called `name`, creating it if missing.
  Result<Experiment> ensure_experiment(const std::string& name, const Principal& who);
  Result<PageOf<Experiment>> list_experiments(int page_size, const std::string& page_token);

  // Runs. A new run is RUNNING; params and tags may be given at creation.
  Result<Run> create_run(int64_t experiment_id, const std::string& name,
                         const std::vector<KeyValue>& params, const std::vector<KeyValue>& tags,
                         const Principal& who);
  // The run with its params, tags and latest metric values.
  Result<Run> get_run(int64_t id);
  // Sets status (RUNNING, FINISHED, FAILED, KILLED); a terminal status sets end_time. Clears
  // end_reason and counts as a heartbeat.
  Result<Run> update_run(int64_t id, const std::string& status, const Principal& who);
  // Records that the run's process is alive (heartbeat_time = now, whatever the status; a run
  // already ended stays ended). Not audited: it changes nothing a user wrote, and a training
  // process sends one every few tens of seconds. Returns the run.
  Result<Run> heartbeat(int64_t id);
  // Marks FAILED every RUNNING run whose last heartbeat is more than liveness().timeout_ms old,
  // with end_time now and end_reason "no heartbeat for N s (the run timeout is T s)", audited as
  // actor "system". Returns their ids in id order; nothing when no timeout is set.
  Result<std::vector<int64_t>> fail_stale_runs();
  // Logs metrics, params and tags in one transaction (a heartbeat too). Params are write-once:
  // the same value again is accepted, a different one is a 400.
  Status log_batch(int64_t run_id, const std::vector<MetricPoint>& metrics,
                   const std::vector<KeyValue>& params, const std::vector<KeyValue>& tags,
                   const Principal& who);
  // The series of `key` in step order, at most max_points points (0: kDefaultMaxMetricPoints;
  // above kMaxMetricPoints is an error). A longer series is downsampled in the database: up to
  // max_points / 3 buckets of consecutive steps, each giving its minimum, its maximum and its
  // last point (highest step, then latest timestamp), so a one-point spike survives. `range`
  // limits the steps first (a chart zoomed in asks for the steps it shows, at full detail).
  Result<MetricHistory> metric_history(int64_t run_id, const std::string& key, int max_points,
                                       const StepRange& range = {});
  // The histories of every (run, key) pair, run by run in the order given and key by key, each
  // downsampled exactly as metric_history does it, in one read of the points (a comparison of
  // many runs). At most kMaxHistoryRuns runs and kMaxHistoryKeys keys; max_points 0 is
  // kDefaultHistoryPoints, at most kMaxHistoryPoints; runs x keys x max_points at most
  // kMaxHistoryAnswerPoints. A pair without points has an empty
  // history; a run that does not exist is NotFound.
  Result<std::vector<MetricHistory>> metric_histories(const std::vector<int64_t>& run_ids,
                                                      const std::vector<std::string>& keys,
                                                      int max_points, const StepRange& range = {});
  // The metric keys the most of `run_ids` logged, at most `n` (1..kMaxHistoryKeys), by how many
  // of the runs logged each (most first), then by key (byte order); keys starting with
  // `skip_prefix` (when not empty) are left out. A comparison asks for its default charts with
  // these while it reads the runs. Run ids that do not exist count for nothing.
  Result<std::vector<std::string>> common_metric_keys(const std::vector<int64_t>& run_ids, int n,
                                                      const std::string& skip_prefix);
  Result<PageOf<Run>> search_runs(const SearchRunsRequest& req);

  // Artifact records (the bytes live in the ArtifactStore). Re-recording a path replaces it;
  // recording is a heartbeat.
  Status record_artifact(int64_t run_id, const ArtifactRecord& a, const Principal& who);
  Result<ArtifactRecord> get_artifact(int64_t run_id, const std::string& path);
  // The run's artifacts whose path starts with `prefix`, by path.
  Result<std::vector<ArtifactInfo>> list_artifacts(int64_t run_id, const std::string& prefix);

 private:
  Result<std::vector<Run>> load_runs(SqlConnection& c, const std::vector<SqlRow>& rows);
  int64_t now() const { return liveness_.clock ? liveness_.clock() : now_ms(); }
  // fail_stale_runs before a read; a failure is left to the next sweep (the read goes on).
  void sweep_before_read();

  StoreDb& db_;
  RunLiveness liveness_;
  std::atomic<int64_t> last_read_sweep_{INT64_MIN};
};

}  // namespace dlsys::meta
