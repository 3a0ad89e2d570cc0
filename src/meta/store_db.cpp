#include "meta/store_db.h"

#include <cctype>

#include "core/file_util.h"
#include "core/utf8.h"

namespace dlsys::meta {

namespace {

// Schema versions, oldest first. {ID} becomes the dialect's auto-increment primary key. `sqlite`
// and `postgres`, when set, run after `sql` on that engine only (SQLite cannot drop a NOT NULL
// constraint in place: it copies the table).
struct Migration {
  int64_t version;
  const char* sql;
  const char* sqlite = nullptr;
  const char* postgres = nullptr;
};
const Migration kMigrations[] = {
    {1, R"(
CREATE TABLE experiments (id {ID}, name TEXT NOT NULL UNIQUE, description TEXT NOT NULL DEFAULT '',
  created_at BIGINT NOT NULL, created_by TEXT NOT NULL DEFAULT '');
CREATE TABLE runs (id {ID}, experiment_id BIGINT NOT NULL REFERENCES experiments(id),
  name TEXT NOT NULL, status TEXT NOT NULL, start_time BIGINT NOT NULL, end_time BIGINT,
  created_by TEXT NOT NULL DEFAULT '');
CREATE INDEX runs_by_experiment ON runs(experiment_id, start_time, id);
CREATE INDEX runs_by_start ON runs(start_time, id);
CREATE TABLE run_params (run_id BIGINT NOT NULL REFERENCES runs(id), key TEXT NOT NULL,
  value TEXT NOT NULL, PRIMARY KEY (run_id, key));
CREATE TABLE run_tags (run_id BIGINT NOT NULL REFERENCES runs(id), key TEXT NOT NULL,
  value TEXT NOT NULL, PRIMARY KEY (run_id, key));
CREATE TABLE metrics (run_id BIGINT NOT NULL, key TEXT NOT NULL, step BIGINT NOT NULL,
  ts BIGINT NOT NULL, value DOUBLE PRECISION NOT NULL);
CREATE INDEX metrics_by_series ON metrics(run_id, key, step);
CREATE TABLE latest_metrics (run_id BIGINT NOT NULL, key TEXT NOT NULL, step BIGINT NOT NULL,
  ts BIGINT NOT NULL, value DOUBLE PRECISION NOT NULL, PRIMARY KEY (run_id, key));
CREATE TABLE artifacts (run_id BIGINT NOT NULL REFERENCES runs(id), path TEXT NOT NULL,
  sha256 TEXT NOT NULL, size BIGINT NOT NULL, created_at BIGINT NOT NULL,
  PRIMARY KEY (run_id, path));
CREATE TABLE registered_models (id {ID}, name TEXT NOT NULL UNIQUE,
  description TEXT NOT NULL DEFAULT '', created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL);
CREATE TABLE model_versions (model_id BIGINT NOT NULL REFERENCES registered_models(id),
  version BIGINT NOT NULL, run_id BIGINT NOT NULL REFERENCES runs(id), artifact_path TEXT NOT NULL,
  sha256 TEXT NOT NULL, size BIGINT NOT NULL, status TEXT NOT NULL,
  description TEXT NOT NULL DEFAULT '', created_at BIGINT NOT NULL,
  created_by TEXT NOT NULL DEFAULT '', PRIMARY KEY (model_id, version));
CREATE TABLE model_aliases (model_id BIGINT NOT NULL REFERENCES registered_models(id),
  alias TEXT NOT NULL, version BIGINT NOT NULL, updated_at BIGINT NOT NULL,
  PRIMARY KEY (model_id, alias));
CREATE TABLE lineage_edges (src_kind TEXT NOT NULL, src_id TEXT NOT NULL, dst_kind TEXT NOT NULL,
  dst_id TEXT NOT NULL, relation TEXT NOT NULL, created_at BIGINT NOT NULL,
  PRIMARY KEY (src_kind, src_id, dst_kind, dst_id));
CREATE INDEX lineage_by_dst ON lineage_edges(dst_kind, dst_id);
CREATE TABLE audit_log (id {ID}, ts BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
  target TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '');
CREATE TABLE api_tokens (id {ID}, name TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE,
  role TEXT NOT NULL, created_at BIGINT NOT NULL, created_by TEXT NOT NULL,
  revoked BIGINT NOT NULL DEFAULT 0);
)"},
    // Serving (issue 19): deployments, restored when the server starts.
    {2, R"(
CREATE TABLE deployments (name TEXT PRIMARY KEY, model TEXT NOT NULL, ref TEXT NOT NULL,
  config TEXT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
  created_by TEXT NOT NULL DEFAULT '');
)"},
    // Runs have an end (issue 20): when a run was last heard from, and why the server ended it
    // (a RUNNING run without a heartbeat for the timeout becomes FAILED). A model version may
    // have no run (registered from a file).
    {3, R"(
ALTER TABLE runs ADD COLUMN heartbeat_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN end_reason TEXT NOT NULL DEFAULT '';
UPDATE runs SET heartbeat_at = start_time;
CREATE INDEX runs_running ON runs(heartbeat_at) WHERE status = 'RUNNING';
)",
     R"(
CREATE TABLE model_versions_v3 (model_id BIGINT NOT NULL REFERENCES registered_models(id),
  version BIGINT NOT NULL, run_id BIGINT REFERENCES runs(id), artifact_path TEXT NOT NULL,
  sha256 TEXT NOT NULL, size BIGINT NOT NULL, status TEXT NOT NULL,
  description TEXT NOT NULL DEFAULT '', created_at BIGINT NOT NULL,
  created_by TEXT NOT NULL DEFAULT '', PRIMARY KEY (model_id, version));
INSERT INTO model_versions_v3 SELECT model_id, version, run_id, artifact_path, sha256, size,
  status, description, created_at, created_by FROM model_versions;
DROP TABLE model_versions;
ALTER TABLE model_versions_v3 RENAME TO model_versions;
)",
     R"(
ALTER TABLE model_versions ALTER COLUMN run_id DROP NOT NULL;
)"},
    // The training service (issue 22): the job queue and each job's state (meta/job_queue.h).
    {4, R"(
CREATE TABLE jobs (id {ID}, name TEXT NOT NULL, kind TEXT NOT NULL, owner TEXT NOT NULL,
  spec TEXT NOT NULL, state TEXT NOT NULL, priority BIGINT NOT NULL, threads BIGINT NOT NULL,
  memory_bytes BIGINT NOT NULL, max_retries BIGINT NOT NULL, attempts BIGINT NOT NULL DEFAULT 0,
  not_before BIGINT NOT NULL DEFAULT 0, run_id BIGINT, pid BIGINT NOT NULL DEFAULT 0,
  created_at BIGINT NOT NULL, started_at BIGINT NOT NULL DEFAULT 0,
  ended_at BIGINT NOT NULL DEFAULT 0, heartbeat_at BIGINT NOT NULL DEFAULT 0,
  cancel_requested BIGINT NOT NULL DEFAULT 0, end_reason TEXT NOT NULL DEFAULT '');
CREATE INDEX jobs_queued ON jobs(priority, created_at) WHERE state = 'QUEUED';
CREATE INDEX jobs_owner ON jobs(owner, id);
)"},
    // What each job used, summed over its attempts (JobQueue::add_usage, `dlsys jobs usage`),
    // and which service runs it (several servers share one queue).
    {5, R"(
ALTER TABLE jobs ADD COLUMN cpu_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN core_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN peak_memory_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN runner TEXT NOT NULL DEFAULT '';
)"},
    // Hyperparameter searches and their trials (meta/search_store.h).
    {6, R"(
CREATE TABLE searches (id {ID}, name TEXT NOT NULL, owner TEXT NOT NULL, spec TEXT NOT NULL,
  state TEXT NOT NULL, created_at BIGINT NOT NULL, ended_at BIGINT NOT NULL DEFAULT 0,
  best_trial BIGINT NOT NULL DEFAULT -1, cancel_requested BIGINT NOT NULL DEFAULT 0,
  end_reason TEXT NOT NULL DEFAULT '', model_version BIGINT NOT NULL DEFAULT 0);
CREATE TABLE search_trials (search_id BIGINT NOT NULL REFERENCES searches(id),
  trial BIGINT NOT NULL, params TEXT NOT NULL, job_id BIGINT NOT NULL REFERENCES jobs(id),
  rung BIGINT NOT NULL, state TEXT NOT NULL, results TEXT NOT NULL DEFAULT '[]',
  end_reason TEXT NOT NULL DEFAULT '', PRIMARY KEY (search_id, trial));
)"},
    // Pipelines, their runs, each run's steps, and the step cache (meta/pipeline_store.h).
    {7, R"(
CREATE TABLE pipelines (id {ID}, name TEXT NOT NULL UNIQUE, owner TEXT NOT NULL,
  spec_text TEXT NOT NULL, version BIGINT NOT NULL, created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL);
CREATE TABLE pipeline_runs (id {ID}, pipeline_id BIGINT NOT NULL REFERENCES pipelines(id),
  pipeline_version BIGINT NOT NULL, owner TEXT NOT NULL, spec_text TEXT NOT NULL,
  params TEXT NOT NULL, state TEXT NOT NULL, trigger_kind TEXT NOT NULL, event_id TEXT,
  no_cache BIGINT NOT NULL DEFAULT 0, attempt BIGINT NOT NULL DEFAULT 1,
  created_at BIGINT NOT NULL, ended_at BIGINT NOT NULL DEFAULT 0,
  cancel_requested BIGINT NOT NULL DEFAULT 0, end_reason TEXT NOT NULL DEFAULT '');
CREATE UNIQUE INDEX pipeline_runs_event ON pipeline_runs(pipeline_id, event_id);
CREATE INDEX pipeline_runs_running ON pipeline_runs(id) WHERE state = 'RUNNING';
CREATE TABLE pipeline_steps (run_id BIGINT NOT NULL REFERENCES pipeline_runs(id),
  step TEXT NOT NULL, item BIGINT NOT NULL, state TEXT NOT NULL,
  attempts BIGINT NOT NULL DEFAULT 0, job_id BIGINT NOT NULL DEFAULT 0,
  inputs TEXT NOT NULL, outputs TEXT NOT NULL, cache_key TEXT NOT NULL DEFAULT '',
  cached BIGINT NOT NULL DEFAULT 0, not_before BIGINT NOT NULL DEFAULT 0,
  started_at BIGINT NOT NULL DEFAULT 0, ended_at BIGINT NOT NULL DEFAULT 0,
  end_reason TEXT NOT NULL DEFAULT '', runner TEXT NOT NULL DEFAULT '',
  heartbeat_at BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (run_id, step, item));
CREATE TABLE step_cache (cache_key TEXT PRIMARY KEY, kind TEXT NOT NULL, outputs TEXT NOT NULL,
  run_id BIGINT NOT NULL, step TEXT NOT NULL, created_at BIGINT NOT NULL);
)"},
    // Monitoring: its configuration's versions, delayed labels, alerts (meta/monitor_store.h).
    {8, R"(
CREATE TABLE monitor_configs (version {ID}, spec_text TEXT NOT NULL, owner TEXT NOT NULL,
  created_at BIGINT NOT NULL);
CREATE TABLE monitor_feedback (id {ID}, deployment TEXT NOT NULL, request_id TEXT NOT NULL,
  label TEXT NOT NULL, received_at BIGINT NOT NULL);
CREATE UNIQUE INDEX monitor_feedback_request ON monitor_feedback(deployment, request_id);
CREATE INDEX monitor_feedback_cursor ON monitor_feedback(deployment, id);
CREATE TABLE alerts (id {ID}, rule TEXT NOT NULL, deployment TEXT NOT NULL,
  severity TEXT NOT NULL, state TEXT NOT NULL, value DOUBLE PRECISION NOT NULL,
  message TEXT NOT NULL, started_at BIGINT NOT NULL, fired_at BIGINT NOT NULL,
  resolved_at BIGINT NOT NULL);
CREATE INDEX alerts_state ON alerts(state);
)"},
    // Metric points as chunks: one row per key per logged batch (meta/metric_chunk.h). Rows of
    // `metrics` from before stay where they are and are read with the chunks.
    {9, R"(
CREATE TABLE metric_chunks (id {ID}, run_id BIGINT NOT NULL, key TEXT NOT NULL,
  min_step BIGINT NOT NULL, max_step BIGINT NOT NULL, n BIGINT NOT NULL, points TEXT NOT NULL);
CREATE INDEX metric_chunks_by_series ON metric_chunks(run_id, key, id);
)"},
    // Runs ordered by a metric read a page from this in value order (RunOrder). Params and tags
    // have none: 20 params a run would double the cost of creating runs (seen in bench/ui).
    {10, R"(
CREATE INDEX latest_metrics_by_value ON latest_metrics(key, value, run_id);
)"},
};

std::string dialect_sql(const char* sql, SqlDialect d) {
  std::string s = sql;
  const std::string id = d == SqlDialect::kSqlite ? "INTEGER PRIMARY KEY" : "BIGSERIAL PRIMARY KEY";
  for (size_t p; (p = s.find("{ID}")) != std::string::npos;) s.replace(p, 4, id);
  return s;
}

}  // namespace

Status audit(SqlConnection& c, const Principal& who, const std::string& action,
             const std::string& target, const json& detail) {
  return c.exec("INSERT INTO audit_log (ts, actor, action, target, detail) VALUES ($1,$2,$3,$4,$5)",
                {now_ms(), who.name, action, target, detail.empty() ? "" : detail.dump()});
}

std::string in_list(const std::vector<int64_t>& ids) {
  std::string s;
  for (int64_t id : ids) s += (s.empty() ? "" : ",") + std::to_string(id);
  return s;
}

bool valid_name(const std::string& s, size_t max, bool allow_dot) {
  if (s.empty() || s.size() > max) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' ||
          (allow_dot && c == '.')))
      return false;
  return true;
}

Status check_page_size(int n) {
  if (n < 1 || n > kMaxPageSize)
    return Status::Invalid("page_size {} is out of range: use 1..{}", n, kMaxPageSize);
  return Status::OK();
}

Status bad_token(const std::string& t) {
  return Status::Invalid(
      "page_token '{}' is not one this server issued; pass the "
      "next_page_token of the previous page unchanged",
      t.substr(0, 64));
}

// Parses "<prefix><int>" page tokens.
Result<int64_t> int_token(const std::string& t, const std::string& prefix) {
  if (t.rfind(prefix, 0) != 0) return bad_token(t);
  try {
    size_t used = 0;
    int64_t v = std::stoll(t.substr(prefix.size()), &used);
    if (used != t.size() - prefix.size()) return bad_token(t);
    return v;
  } catch (...) {
    return bad_token(t);
  }
}

Result<std::unique_ptr<StoreDb>> StoreDb::open(const std::string& url, size_t max_connections,
                                               const SqlOptions& options, int64_t schema_version) {
  DLSYS_ASSIGN_OR_RETURN(auto db, SqlDatabase::open(url, max_connections, options));
  std::unique_ptr<StoreDb> store(new StoreDb(std::move(db)));
  DLSYS_RETURN_IF_ERROR(store->migrate(schema_version));
  return store;
}

Status StoreDb::migrate(int64_t target) {
  return tx(true, [&](SqlConnection& c) -> Status {
    if (c.dialect() == SqlDialect::kPostgres)
      DLSYS_RETURN_IF_ERROR(c.exec("SELECT pg_advisory_xact_lock(7215001)", {}));
    DLSYS_RETURN_IF_ERROR(
        c.exec_script("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, "
                      "applied_at BIGINT NOT NULL)"));
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("SELECT MAX(version) FROM schema_migrations", {}));
    int64_t current = rows.empty() || sql_is_null(rows[0][0]) ? 0 : sql_int(rows[0][0]);
    int64_t newest = kMigrations[std::size(kMigrations) - 1].version;
    if (current > newest)
      return Status::Unsupported(
          "the metadata database has schema version {}, newer than this dlsys knows ({}); "
          "upgrade dlsys",
          current, newest);
    for (const Migration& m : kMigrations) {
      if (m.version <= current || (target > 0 && m.version > target)) continue;
      const char* only = c.dialect() == SqlDialect::kSqlite ? m.sqlite : m.postgres;
      for (const char* sql : {m.sql, only}) {
        if (!sql) continue;
        DLSYS_RETURN_IF_ERROR(c.exec_script(dialect_sql(sql, c.dialect()))
                                  .with_context(fmt::format("schema migration {}", m.version)));
      }
      DLSYS_RETURN_IF_ERROR(
          c.exec("INSERT INTO schema_migrations (version, applied_at) "
                 "VALUES ($1, $2)",
                 {m.version, now_ms()}));
    }
    return Status::OK();
  });
}

Result<int64_t> StoreDb::schema_version() {
  int64_t v = 0;
  DLSYS_RETURN_IF_ERROR(tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("SELECT MAX(version) FROM schema_migrations", {}));
    v = sql_int(rows.at(0).at(0));
    return Status::OK();
  }));
  return v;
}

Status check_key(const std::string& what, const std::string& key) {
  if (key.empty()) return Status::Invalid("{} key is empty", what);
  if (key.size() > kMaxKeyLength)
    return Status::Invalid("{} key '{}...' is {} characters; the limit is {}", what,
                           key.substr(0, 32), key.size(), kMaxKeyLength);
  for (char c : key)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' ||
          c == '/' || c == ' '))
      return Status::Invalid(
          "{} key '{}' has the character '{}'; keys may use letters, digits, _ - . / and space",
          what, key, std::isprint(static_cast<unsigned char>(c)) ? std::string(1, c) : "\\x??");
  return Status::OK();
}

Status check_artifact_path(const std::string& path) {
  if (path.empty()) return Status::Invalid("artifact path is empty");
  if (path.size() > 1024) return Status::Invalid("artifact path is over 1024 bytes");
  if (path[0] == '/')
    return Status::Invalid(
        "artifact path '{}' is absolute; use a path inside "
        "the run, e.g. model/model.onnx",
        path);
  for (unsigned char c : path)
    if (c < 0x20 || c == 0x7f || c == '\\')
      return Status::Invalid("artifact path has a control character or backslash at byte {}",
                             path.find(static_cast<char>(c)));
  size_t bad = 0;
  if (!is_valid_utf8(path, &bad))
    return Status::Invalid("artifact path is not valid UTF-8 (byte {}); paths are UTF-8 text", bad);
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    std::string part = path.substr(start, end - start);
    if (part == ".." || part == ".")
      return Status::Invalid("artifact path '{}' has a '{}' component; paths stay inside the run",
                             path, part);
    if (part.empty()) return Status::Invalid("artifact path '{}' has an empty component", path);
    start = end + 1;
  }
  return Status::OK();
}

void to_json(json& j, const AuditRecord& a) {
  j = {{"id", a.id},         {"timestamp", a.timestamp}, {"actor", a.actor},
       {"action", a.action}, {"target", a.target},       {"detail", a.detail}};
}

Result<PageOf<AuditRecord>> StoreDb::list_audit(int page_size, const std::string& page_token) {
  DLSYS_RETURN_IF_ERROR(check_page_size(page_size));
  int64_t before = INT64_MAX;
  if (!page_token.empty()) {
    DLSYS_ASSIGN_OR_RETURN(before, int_token(page_token, "a:"));
  }
  PageOf<AuditRecord> page;
  DLSYS_RETURN_IF_ERROR(tx(false, [&](SqlConnection& c) -> Status {
    page = {};
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("SELECT id, ts, actor, action, target, detail FROM "
                                              "audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2",
                                              {before, int64_t{page_size} + 1}));
    for (size_t i = 0; i < rows.size() && i < static_cast<size_t>(page_size); ++i) {
      auto& r = rows[i];
      std::string detail = sql_text(r[5]);
      // The detail was written by audit() as a JSON object; anything else reads as empty.
      json d = detail.empty() ? json::object() : json::parse(detail, nullptr, false);
      if (!d.is_object()) d = json::object();
      page.items.push_back({sql_int(r[0]), sql_int(r[1]), sql_text(r[2]), sql_text(r[3]),
                            sql_text(r[4]), std::move(d)});
    }
    if (rows.size() > static_cast<size_t>(page_size))
      page.next_page_token = "a:" + std::to_string(sql_int(rows[page_size - 1][0]));
    return Status::OK();
  }));
  return page;
}

}  // namespace dlsys::meta
