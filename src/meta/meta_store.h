// The metadata store: experiments, runs (params, tags, metric series), artifact records, the
// model registry with aliases, lineage edges, the audit log and API tokens. Written once in
// portable SQL over SqlDatabase, so SQLite and PostgreSQL behave the same (one test suite runs
// against both). Every write and its audit record commit in one transaction.
//
// Reads return the REST API's JSON representation (docs/api.md) so that the server, the
// in-process client and the command line share one shape. Thread-safe: each call borrows its
// own connection from the pool.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "meta/sql_db.h"

namespace dlsys::meta {

using json = nlohmann::json;

// Limits (checked with 400-class errors that name the limit).
constexpr size_t kMaxKeyLength = 250;
constexpr size_t kMaxParamValueLength = 6000;
constexpr size_t kMaxTagValueLength = 5000;
constexpr size_t kMaxMetricsPerBatch = 1000;
constexpr size_t kMaxParamsPerBatch = 100;
constexpr size_t kMaxTagsPerBatch = 100;
constexpr int kMaxPageSize = 1000;
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

// One page of a list: `items` and, when more follow, the token that fetches them.
struct Page {
  json items = json::array();
  std::string next_page_token;
};

struct SearchRunsRequest {
  std::vector<int64_t> experiment_ids;  // empty: all experiments
  std::string filter;    // e.g. "params.lr = '0.1' and metrics.acc > 0.9 and status = 'FINISHED'"
  std::string order_by;  // "start_time DESC" (default), "metrics.acc DESC", "params.lr", "name"
  int page_size = 100;
  std::string page_token;
};

// What the caller may do. Order matters: a role may do what the roles below it may.
enum class Role { kInference, kViewer, kEditor, kAdmin };
const char* role_name(Role r);
Result<Role> parse_role(const std::string& s);

struct Principal {
  std::string name;  // token name, or "local" for in-process and unauthenticated access
  Role role = Role::kAdmin;
};

struct ArtifactRecord {
  std::string path;
  std::string sha256;
  int64_t size = 0;
};

class MetaStore {
 public:
  // Opens the database at `url` (an SQLite path or postgresql://...) and brings its schema to
  // the newest version (migrations run once, under a lock, in a transaction).
  static Result<std::unique_ptr<MetaStore>> open(const std::string& url, size_t max_connections,
                                                 const SqlOptions& options = {});
  // The schema version after migrations.
  Result<int64_t> schema_version();
  SqlDialect dialect() const { return db_->dialect(); }
  SqlStats db_stats() const { return db_->stats(); }

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

  // Model registry.
  Result<json> create_model(const std::string& name, const std::string& description,
                            const Principal& who);
  Result<json> get_model(const std::string& name);  // with aliases and latest version
  // Models by name (or `order_by` "updated_at DESC", ...); `name_like` is an SQL LIKE pattern
  // ("dig%"), empty for all.
  Result<Page> list_models(int page_size, const std::string& page_token,
                           const std::string& name_like = "", const std::string& order_by = "");
  // A new version (1, 2, ...) from a run's artifact; adds the lineage edge run -> version.
  Result<json> create_model_version(const std::string& model, int64_t run_id,
                                    const std::string& artifact_path,
                                    const std::string& description, const Principal& who);
  Result<json> get_model_version(const std::string& model, int64_t version);
  Result<json> list_model_versions(const std::string& model);
  // Status: READY, ARCHIVED.
  Result<json> set_model_version_status(const std::string& model, int64_t version,
                                        const std::string& status, const Principal& who);
  // Points `alias` at `version` (atomically: promote and roll back are alias moves).
  Result<json> set_alias(const std::string& model, const std::string& alias, int64_t version,
                         const Principal& who);
  Status delete_alias(const std::string& model, const std::string& alias, const Principal& who);
  Result<json> get_version_by_alias(const std::string& model, const std::string& alias);

  // Lineage: typed edges between (kind, id) nodes; kinds are dataset_version, run,
  // model_version and deployment.
  Status add_lineage_edge(const std::string& src_kind, const std::string& src_id,
                          const std::string& dst_kind, const std::string& dst_id,
                          const std::string& relation, const Principal& who);
  // {"root":…, "nodes":[…], "edges":[…]}: everything upstream and downstream within `depth`.
  Result<json> lineage(const std::string& kind, const std::string& id, int depth);

  // Audit log, newest first.
  Result<Page> list_audit(int page_size, const std::string& page_token);

  // API tokens. create_token returns the plain token once ("dls_…"); only its SHA-256 is kept.
  Result<json> create_token(const std::string& name, Role role, const Principal& who);
  Result<Principal> authenticate(const std::string& token);
  Result<json> list_tokens();
  Status revoke_token(int64_t id, const Principal& who);

  // Checks for names used as keys (metrics, params, tags): 1..250 of [A-Za-z0-9_-./ ].
  static Status check_key(const std::string& what, const std::string& key);
  // Checks an artifact path: relative, no "..", no control characters, ≤ 1024 bytes.
  static Status check_artifact_path(const std::string& path);

 private:
  explicit MetaStore(std::unique_ptr<SqlDatabase> db) : db_(std::move(db)) {}
  Status migrate();
  // Runs `fn(conn)` in a transaction on a pooled connection, retrying when the database is busy.
  template <typename Fn>
  Status tx(bool write, Fn&& fn);
  Result<json> load_runs(SqlConnection& c, const std::vector<SqlRow>& rows);

  std::unique_ptr<SqlDatabase> db_;
};

}  // namespace dlsys::meta
