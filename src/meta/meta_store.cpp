#include "meta/meta_store.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <deque>
#include <map>
#include <set>
#include <tuple>

#include "core/file_util.h"
#include "core/sha256.h"
#include "core/utf8.h"
#include "meta/run_filter.h"

namespace dlsys::meta {

namespace {

// Schema versions, oldest first. {ID} becomes the dialect's auto-increment primary key.
struct Migration {
  int64_t version;
  const char* sql;
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
};

std::string dialect_sql(const char* sql, SqlDialect d) {
  std::string s = sql;
  const std::string id = d == SqlDialect::kSqlite ? "INTEGER PRIMARY KEY" : "BIGSERIAL PRIMARY KEY";
  for (size_t p; (p = s.find("{ID}")) != std::string::npos;) s.replace(p, 4, id);
  return s;
}

Status audit(SqlConnection& c, const Principal& who, const std::string& action,
             const std::string& target, const json& detail = json::object()) {
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

const char* kRunColumns =
    "runs.id, runs.experiment_id, runs.name, runs.status, runs.start_time, runs.end_time, "
    "runs.created_by";

bool terminal_status(const std::string& s) {
  return s == "FINISHED" || s == "FAILED" || s == "KILLED";
}

}  // namespace

const char* role_name(Role r) {
  switch (r) {
    case Role::kInference:
      return "inference";
    case Role::kViewer:
      return "viewer";
    case Role::kEditor:
      return "editor";
    case Role::kAdmin:
      return "admin";
  }
  return "viewer";
}

Result<Role> parse_role(const std::string& s) {
  if (s == "admin") return Role::kAdmin;
  if (s == "editor") return Role::kEditor;
  if (s == "viewer") return Role::kViewer;
  if (s == "inference") return Role::kInference;
  return Status::Invalid("unknown role '{}': use admin, editor, viewer or inference", s);
}

template <typename Fn>
Status MetaStore::tx(bool write, Fn&& fn) {
  for (int attempt = 0;; ++attempt) {
    DLSYS_ASSIGN_OR_RETURN(auto lease, db_->acquire());
    Status st = with_transaction(*lease, write, fn);
    if (st.code() == StatusCode::kUnavailable && attempt < 3) {
      if (!lease->healthy()) lease.discard();
      continue;
    }
    return st;
  }
}

Result<std::unique_ptr<MetaStore>> MetaStore::open(const std::string& url, size_t max_connections,
                                                   const SqlOptions& options) {
  DLSYS_ASSIGN_OR_RETURN(auto db, SqlDatabase::open(url, max_connections, options));
  std::unique_ptr<MetaStore> store(new MetaStore(std::move(db)));
  DLSYS_RETURN_IF_ERROR(store->migrate());
  return store;
}

Status MetaStore::migrate() {
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
      if (m.version <= current) continue;
      DLSYS_RETURN_IF_ERROR(c.exec_script(dialect_sql(m.sql, c.dialect()))
                                .with_context(fmt::format("schema migration {}", m.version)));
      DLSYS_RETURN_IF_ERROR(
          c.exec("INSERT INTO schema_migrations (version, applied_at) "
                 "VALUES ($1, $2)",
                 {m.version, now_ms()}));
    }
    return Status::OK();
  });
}

Result<int64_t> MetaStore::schema_version() {
  int64_t v = 0;
  DLSYS_RETURN_IF_ERROR(tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("SELECT MAX(version) FROM schema_migrations", {}));
    v = sql_int(rows.at(0).at(0));
    return Status::OK();
  }));
  return v;
}

Status MetaStore::check_key(const std::string& what, const std::string& key) {
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

Status MetaStore::check_artifact_path(const std::string& path) {
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

// ---- experiments ----

static json experiment_json(const SqlRow& r) {
  return {{"id", sql_int(r[0])},
          {"name", sql_text(r[1])},
          {"description", sql_text(r[2])},
          {"created_at", sql_int(r[3])},
          {"created_by", sql_text(r[4])}};
}

Result<json> MetaStore::create_experiment(const std::string& name, const std::string& description,
                                          const Principal& who) {
  if (!valid_name(name, kMaxKeyLength, true))
    return Status::Invalid("experiment name '{}' must be 1..{} of letters, digits, _ - .",
                           name.substr(0, 64), kMaxKeyLength);
  json out;
  DLSYS_RETURN_IF_ERROR(tx(true, [&](SqlConnection& c) -> Status {
    auto rows = c.query(
        "INSERT INTO experiments (name, description, created_at, created_by) VALUES ($1,$2,$3,$4) "
        "RETURNING id, name, description, created_at, created_by",
        {name, description, now_ms(), who.name});
    if (rows.status().code() == StatusCode::kAlreadyExists)
      return Status::AlreadyExists("experiment '{}' already exists", name);
    if (!rows.ok()) return rows.status();
    out = experiment_json(rows->at(0));
    return audit(c, who, "experiment.create",
                 "experiment/" + std::to_string(sql_int(rows->at(0)[0])));
  }));
  return out;
}

// The experiment matching `condition` ("id = $1" or "name = $1") on `key`, or NotFound(`missing`).
static Result<json> find_experiment(SqlConnection& c, const char* condition, SqlValue key,
                                    const std::string& missing) {
  DLSYS_ASSIGN_OR_RETURN(auto rows, c.query(std::string("SELECT id, name, description, created_at, "
                                                        "created_by FROM experiments WHERE ") +
                                                condition,
                                            {std::move(key)}));
  if (rows.empty()) return Status::NotFound("{}", missing);
  return experiment_json(rows[0]);
}

Result<json> MetaStore::get_experiment(int64_t id) {
  json out;
  DLSYS_RETURN_IF_ERROR(tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(
        out, find_experiment(c, "id = $1", id, fmt::format("experiment {} does not exist", id)));
    return Status::OK();
  }));
  return out;
}

Result<json> MetaStore::get_experiment_by_name(const std::string& name) {
  json out;
  DLSYS_RETURN_IF_ERROR(tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(
        out,
        find_experiment(c, "name = $1", name, fmt::format("experiment '{}' does not exist", name)));
    return Status::OK();
  }));
  return out;
}

Result<json> MetaStore::ensure_experiment(const std::string& name, const Principal& who) {
  auto e = get_experiment_by_name(name);
  if (e.ok() || e.status().code() != StatusCode::kNotFound) return e;
  auto created = create_experiment(name, "", who);
  if (created.status().code() == StatusCode::kAlreadyExists) return get_experiment_by_name(name);
  return created;
}

Result<Page> MetaStore::list_experiments(int page_size, const std::string& page_token) {
  DLSYS_RETURN_IF_ERROR(check_page_size(page_size));
  int64_t after = 0;
  if (!page_token.empty()) {
    DLSYS_ASSIGN_OR_RETURN(after, int_token(page_token, "e:"));
  }
  Page page;
  DLSYS_RETURN_IF_ERROR(tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("SELECT id, name, description, created_at, "
                                              "created_by FROM experiments WHERE id > $1 "
                                              "ORDER BY id LIMIT $2",
                                              {after, int64_t{page_size} + 1}));
    for (size_t i = 0; i < rows.size() && i < static_cast<size_t>(page_size); ++i)
      page.items.push_back(experiment_json(rows[i]));
    if (rows.size() > static_cast<size_t>(page_size))
      page.next_page_token = "e:" + std::to_string(sql_int(rows[page_size - 1][0]));
    return Status::OK();
  }));
  return page;
}

// ---- runs ----

Result<json> MetaStore::load_runs(SqlConnection& c, const std::vector<SqlRow>& rows) {
  json out = json::array();
  if (rows.empty()) return out;
  std::vector<int64_t> ids;
  std::map<int64_t, size_t> index;
  for (const SqlRow& r : rows) {
    int64_t id = sql_int(r[0]);
    index[id] = ids.size();
    ids.push_back(id);
    json run = {{"id", id},
                {"experiment_id", sql_int(r[1])},
                {"name", sql_text(r[2])},
                {"status", sql_text(r[3])},
                {"start_time", sql_int(r[4])},
                {"end_time", sql_is_null(r[5]) ? json(nullptr) : json(sql_int(r[5]))},
                {"created_by", sql_text(r[6])},
                {"params", json::object()},
                {"tags", json::object()},
                {"metrics", json::object()}};
    out.push_back(std::move(run));
  }
  // Params, tags and latest metrics in one statement (one round trip on PostgreSQL).
  std::string in = in_list(ids);
  DLSYS_ASSIGN_OR_RETURN(
      auto rows2,
      c.query(
          "SELECT 0, run_id, key, value, CAST(NULL AS DOUBLE PRECISION), CAST(NULL AS BIGINT), "
          "CAST(NULL AS BIGINT) FROM run_params WHERE run_id IN (" +
              in +
              ") "
              "UNION ALL SELECT 1, run_id, key, value, NULL, NULL, NULL FROM run_tags WHERE "
              "run_id IN (" +
              in +
              ") "
              "UNION ALL SELECT 2, run_id, key, NULL, value, step, ts FROM latest_metrics WHERE "
              "run_id IN (" +
              in + ")",
          {}));
  for (auto& r : rows2) {
    json& run = out[index[sql_int(r[1])]];
    int64_t kind = sql_int(r[0]);
    if (kind == 0)
      run["params"][sql_text(r[2])] = sql_text(r[3]);
    else if (kind == 1)
      run["tags"][sql_text(r[2])] = sql_text(r[3]);
    else
      run["metrics"][sql_text(r[2])] = {
          {"value", sql_double(r[4])}, {"step", sql_int(r[5])}, {"timestamp", sql_int(r[6])}};
  }
  return out;
}

static Status check_kvs(const std::vector<KeyValue>& kvs, const char* what, size_t max_value,
                        size_t max_count) {
  if (kvs.size() > max_count)
    return Status::Invalid("{} {}s in one request; the limit is {}", kvs.size(), what, max_count);
  for (const KeyValue& kv : kvs) {
    DLSYS_RETURN_IF_ERROR(MetaStore::check_key(what, kv.key));
    if (kv.value.size() > max_value)
      return Status::Invalid("{} '{}' has a value of {} characters; the limit is {}", what, kv.key,
                             kv.value.size(), max_value);
  }
  return Status::OK();
}

Result<json> MetaStore::create_run(int64_t experiment_id, const std::string& name,
                                   const std::vector<KeyValue>& params,
                                   const std::vector<KeyValue>& tags, const Principal& who) {
  if (name.size() > kMaxKeyLength)
    return Status::Invalid("run name is {} characters; the limit is {}", name.size(),
                           kMaxKeyLength);
  DLSYS_RETURN_IF_ERROR(check_kvs(params, "param", kMaxParamValueLength, kMaxParamsPerBatch));
  DLSYS_RETURN_IF_ERROR(check_kvs(tags, "tag", kMaxTagValueLength, kMaxTagsPerBatch));
  int64_t id = 0;
  DLSYS_RETURN_IF_ERROR(tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto e,
                           c.query("SELECT id FROM experiments WHERE id = $1", {experiment_id}));
    if (e.empty())
      return Status::NotFound("experiment {} does not exist; create it first", experiment_id);
    DLSYS_ASSIGN_OR_RETURN(
        auto rows, c.query("INSERT INTO runs (experiment_id, name, status, start_time, created_by) "
                           "VALUES ($1,$2,'RUNNING',$3,$4) RETURNING id",
                           {experiment_id, name, now_ms(), who.name}));
    id = sql_int(rows.at(0).at(0));
    std::vector<SqlParams> p, t;
    std::set<std::string> seen;
    for (auto& kv : params) {
      if (!seen.insert(kv.key).second) return Status::Invalid("param '{}' is given twice", kv.key);
      p.push_back({id, kv.key, kv.value});
    }
    for (auto& kv : tags) t.push_back({id, kv.key, kv.value});
    DLSYS_RETURN_IF_ERROR(
        c.exec_many("INSERT INTO run_params (run_id, key, value) VALUES ($1,$2,$3)", p));
    DLSYS_RETURN_IF_ERROR(c.exec_many(
        "INSERT INTO run_tags (run_id, key, value) VALUES ($1,$2,$3) ON CONFLICT (run_id, key) "
        "DO UPDATE SET value = excluded.value",
        t));
    return audit(c, who, "run.create", "run/" + std::to_string(id),
                 {{"experiment_id", experiment_id}});
  }));
  return get_run(id);
}

Result<json> MetaStore::get_run(int64_t id) {
  json out;
  DLSYS_RETURN_IF_ERROR(tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(
        auto rows,
        c.query(std::string("SELECT ") + kRunColumns + " FROM runs WHERE id = $1", {id}));
    if (rows.empty()) return Status::NotFound("run {} does not exist", id);
    DLSYS_ASSIGN_OR_RETURN(json runs, load_runs(c, rows));
    out = runs[0];
    return Status::OK();
  }));
  return out;
}

Result<json> MetaStore::update_run(int64_t id, const std::string& status, const Principal& who) {
  if (status != "RUNNING" && !terminal_status(status))
    return Status::Invalid("run status '{}' is not one of RUNNING, FINISHED, FAILED, KILLED",
                           status);
  DLSYS_RETURN_IF_ERROR(tx(true, [&](SqlConnection& c) -> Status {
    SqlValue end = terminal_status(status) ? SqlValue(now_ms()) : SqlValue();
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("UPDATE runs SET status = $1, end_time = $2 WHERE "
                                              "id = $3 RETURNING id",
                                              {status, end, id}));
    if (rows.empty()) return Status::NotFound("run {} does not exist", id);
    return audit(c, who, "run.update", "run/" + std::to_string(id), {{"status", status}});
  }));
  return get_run(id);
}

Status MetaStore::log_batch(int64_t run_id, const std::vector<MetricPoint>& metrics,
                            const std::vector<KeyValue>& params, const std::vector<KeyValue>& tags,
                            const Principal& who) {
  if (metrics.size() > kMaxMetricsPerBatch)
    return Status::Invalid("{} metrics in one batch; the limit is {}: split the batch",
                           metrics.size(), kMaxMetricsPerBatch);
  DLSYS_RETURN_IF_ERROR(check_kvs(params, "param", kMaxParamValueLength, kMaxParamsPerBatch));
  DLSYS_RETURN_IF_ERROR(check_kvs(tags, "tag", kMaxTagValueLength, kMaxTagsPerBatch));
  const std::string* last_key = nullptr;
  for (size_t i = 0; i < metrics.size(); ++i) {
    const MetricPoint& m = metrics[i];
    if (m.key.empty()) return Status::Invalid("metric {} of the batch has an empty key", i);
    // Consecutive points usually share a key: check each distinct run of keys once.
    if (!last_key || m.key != *last_key)
      DLSYS_RETURN_IF_ERROR(check_key("metric", m.key).with_context(fmt::format("metric {}", i)));
    last_key = &m.key;
    if (!std::isfinite(m.value))
      return Status::Invalid("metric '{}' at step {} is not a finite number", m.key, m.step);
  }
  int64_t now = now_ms();
  return tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto r, c.query("SELECT id FROM runs WHERE id = $1", {run_id}));
    if (r.empty()) return Status::NotFound("run {} does not exist", run_id);
    if (!params.empty()) {
      DLSYS_ASSIGN_OR_RETURN(auto have, c.query("SELECT key, value FROM run_params WHERE "
                                                "run_id = $1",
                                                {run_id}));
      std::map<std::string, std::string> existing;
      for (auto& h : have) existing[sql_text(h[0])] = sql_text(h[1]);
      std::vector<SqlParams> rows;
      for (const KeyValue& kv : params) {
        auto it = existing.find(kv.key);
        if (it != existing.end()) {
          if (it->second != kv.value)
            return Status::Invalid(
                "param '{}' of run {} is already '{}'; params are written "
                "once: log a new run or a tag instead",
                kv.key, run_id, it->second.substr(0, 100));
          continue;
        }
        existing[kv.key] = kv.value;
        rows.push_back({run_id, kv.key, kv.value});
      }
      DLSYS_RETURN_IF_ERROR(
          c.exec_many("INSERT INTO run_params (run_id, key, value) VALUES ($1,$2,$3)", rows));
    }
    if (!tags.empty()) {
      std::vector<SqlParams> rows;
      for (const KeyValue& kv : tags) rows.push_back({run_id, kv.key, kv.value});
      DLSYS_RETURN_IF_ERROR(c.exec_many(
          "INSERT INTO run_tags (run_id, key, value) VALUES ($1,$2,$3) ON CONFLICT (run_id, key) "
          "DO UPDATE SET value = excluded.value",
          rows));
    }
    if (!metrics.empty()) {
      std::vector<SqlParams> rows;
      rows.reserve(metrics.size());
      std::map<std::string, const MetricPoint*> latest;
      for (const MetricPoint& m : metrics) {
        rows.push_back({run_id, m.key, m.step, m.timestamp ? m.timestamp : now, m.value});
        auto& l = latest[m.key];
        if (!l || m.step >= l->step) l = &m;
      }
      DLSYS_RETURN_IF_ERROR(c.exec_many(
          "INSERT INTO metrics (run_id, key, step, ts, value) VALUES ($1,$2,$3,$4,$5)", rows));
      rows.clear();
      for (auto& [key, m] : latest)
        rows.push_back({run_id, key, m->step, m->timestamp ? m->timestamp : now, m->value});
      DLSYS_RETURN_IF_ERROR(c.exec_many(
          "INSERT INTO latest_metrics (run_id, key, step, ts, value) VALUES ($1,$2,$3,$4,$5) "
          "ON CONFLICT (run_id, key) DO UPDATE SET step = excluded.step, ts = excluded.ts, "
          "value = excluded.value WHERE excluded.step >= latest_metrics.step",
          rows));
    }
    // One audit record per batch, not per metric point (that would double every write).
    return audit(c, who, "run.log", "run/" + std::to_string(run_id),
                 {{"params", params.size()}, {"tags", tags.size()}, {"metrics", metrics.size()}});
  });
}

Result<json> MetaStore::metric_history(int64_t run_id, const std::string& key, int max_points) {
  DLSYS_RETURN_IF_ERROR(check_key("metric", key));
  if (max_points < 0 || max_points > kMaxMetricPoints)
    return Status::Invalid("max_points {} is out of range: use 1..{} (0 or none: {})", max_points,
                           kMaxMetricPoints, kDefaultMaxMetricPoints);
  const int64_t limit = max_points == 0 ? kDefaultMaxMetricPoints : max_points;
  struct Point {
    int64_t step, ts;
    double value;
    bool operator<(const Point& o) const {
      return std::tie(step, ts, value) < std::tie(o.step, o.ts, o.value);
    }
    bool operator==(const Point& o) const {
      return step == o.step && ts == o.ts && value == o.value;
    }
  };
  std::vector<Point> points;
  int64_t total = 0;
  bool downsampled = false;
  DLSYS_RETURN_IF_ERROR(tx(false, [&](SqlConnection& c) -> Status {
    points.clear();
    DLSYS_ASSIGN_OR_RETURN(auto r, c.query("SELECT id FROM runs WHERE id = $1", {run_id}));
    if (r.empty()) return Status::NotFound("run {} does not exist", run_id);
    // A short series is returned as it is. Counting stops at limit + 1 (the real count of a
    // longer one comes from the buckets below): no pass over a long series just to count it.
    DLSYS_ASSIGN_OR_RETURN(auto n, c.query("SELECT COUNT(*) FROM (SELECT 1 FROM metrics WHERE "
                                           "run_id = $1 AND key = $2 LIMIT $3) AS s",
                                           {run_id, key, limit + 1}));
    if (sql_int(n.at(0).at(0)) <= limit) {
      // LIMIT too: on PostgreSQL, points logged since the count may be visible here.
      DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("SELECT step, ts, value FROM metrics WHERE "
                                                "run_id = $1 AND key = $2 ORDER BY step, ts "
                                                "LIMIT $3",
                                                {run_id, key, limit}));
      downsampled = false;
      total = static_cast<int64_t>(rows.size());
      for (auto& row : rows)
        points.push_back({sql_int(row[0]), sql_int(row[1]), sql_double(row[2])});
      return Status::OK();
    }
    // Two index lookups (one MIN or MAX per query is what SQLite answers from the index).
    DLSYS_ASSIGN_OR_RETURN(auto st, c.query("SELECT (SELECT MIN(step) FROM metrics WHERE "
                                            "run_id = $1 AND key = $2), (SELECT MAX(step) FROM "
                                            "metrics WHERE run_id = $1 AND key = $2)",
                                            {run_id, key}));
    downsampled = true;
    // Buckets of consecutive steps, at most limit / 3 of them (each keeps up to 3 points).
    // Normally bucket = (step - first) / width, exact. When the steps span more than int64
    // (last - first overflows), bucket = step / width - first / width, which never overflows
    // (width >= 3) and makes up to 3 more buckets (truncation toward zero), so fewer are asked.
    const int64_t first = sql_int(st.at(0).at(0)), last = sql_int(st.at(0).at(1));
    const __int128 span = static_cast<__int128>(last) - first + 1;
    const bool exact = span <= INT64_MAX;
    const int64_t buckets = std::max<int64_t>(1, limit / 3 - (exact ? 0 : 3));
    __int128 w = (span + buckets - 1) / buckets;
    if (!exact) w = std::max<__int128>(w, 3);
    const int64_t width = static_cast<int64_t>(std::min<__int128>(w, INT64_MAX));
    const int64_t offset = exact ? first : first / width;
    const std::string bucket = exact ? "(step - CAST($3 AS BIGINT)) / CAST($4 AS BIGINT)"
                                     : "step / CAST($4 AS BIGINT) - CAST($3 AS BIGINT)";
    // g: per bucket (GROUP BY in the database) its minimum and maximum value and its first and
    // last step. p adds the first step holding the minimum and the first holding the maximum
    // (index range scans of the bucket's steps that stop at the first match). The result has one
    // row per bucket: those steps with their timestamps (where several points share such a
    // step: the earliest for the minimum and maximum, the latest for the last step) and the last
    // point's value, and the bucket's count. Everything after g is scalar subqueries on the
    // (run_id, key, step) index, so neither engine's plan depends on its estimate of the number of
    // buckets. MATERIALIZED: each bucket's subqueries run once, not again inside every later
    // subquery that names them.
    const char* series = "x.run_id = $1 AND x.key = $2";
    std::string sql = fmt::format(
        "WITH g AS MATERIALIZED (SELECT MIN(value) AS lo, MAX(value) AS hi, MIN(step) AS fs, "
        "MAX(step) AS ls, COUNT(*) AS n FROM metrics WHERE run_id = $1 AND key = $2 GROUP BY {0}), "
        "p AS MATERIALIZED (SELECT lo, hi, ls, n, "
        "(SELECT x.step FROM metrics x WHERE {1} AND x.step BETWEEN g.fs AND g.ls AND "
        "x.value = g.lo ORDER BY x.step LIMIT 1) AS lo_step, "
        "(SELECT x.step FROM metrics x WHERE {1} AND x.step BETWEEN g.fs AND g.ls AND "
        "x.value = g.hi ORDER BY x.step LIMIT 1) AS hi_step FROM g), "
        "q AS MATERIALIZED (SELECT lo, hi, ls, n, lo_step, hi_step, "
        "(SELECT MIN(x.ts) FROM metrics x WHERE {1} AND x.step = p.lo_step AND x.value = p.lo) "
        "AS lo_ts, "
        "(SELECT MIN(x.ts) FROM metrics x WHERE {1} AND x.step = p.hi_step AND x.value = p.hi) "
        "AS hi_ts, "
        "(SELECT MAX(x.ts) FROM metrics x WHERE {1} AND x.step = p.ls) AS ls_ts FROM p) "
        "SELECT lo_step, lo_ts, lo, hi_step, hi_ts, hi, ls, ls_ts, "
        "(SELECT MAX(x.value) FROM metrics x WHERE {1} AND x.step = q.ls AND x.ts = q.ls_ts), n "
        "FROM q",
        bucket, series);
    // PostgreSQL estimates as many buckets as rows and would spend a second compiling the plan.
    if (c.dialect() == SqlDialect::kPostgres)
      DLSYS_RETURN_IF_ERROR(c.exec_script("SET LOCAL jit = off"));
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query(sql, {run_id, key, offset, width}));
    total = 0;
    for (auto& row : rows) {
      total += sql_int(row[9]);
      for (int k = 0; k < 3; ++k)
        points.push_back(
            {sql_int(row[3 * k]), sql_int(row[3 * k + 1]), sql_double(row[3 * k + 2])});
    }
    std::sort(points.begin(), points.end());
    points.erase(std::unique(points.begin(), points.end()), points.end());
    // Only with limit < 3 (or the overflow case) can the buckets give more: keep the latest.
    if (points.size() > static_cast<size_t>(limit))
      points.erase(points.begin(), points.end() - limit);
    return Status::OK();
  }));
  json out = json::array();
  for (const Point& p : points)
    out.push_back({{"step", p.step}, {"timestamp", p.ts}, {"value", p.value}});
  return json{{"run_id", run_id},
              {"key", key},
              {"total_points", total},
              {"downsampled", downsampled},
              {"points", std::move(out)}};
}

Result<Page> MetaStore::search_runs(const SearchRunsRequest& req) {
  DLSYS_RETURN_IF_ERROR(check_page_size(req.page_size));
  SqlParams params;
  DLSYS_ASSIGN_OR_RETURN(std::string where, compile_run_filter(req.filter, &params));
  DLSYS_ASSIGN_OR_RETURN(RunOrder order, parse_run_order(req.order_by, &params));
  if (!req.experiment_ids.empty())
    where += (where.empty() ? "" : " AND ") +
             ("runs.experiment_id IN (" + in_list(req.experiment_ids) + ")");
  int64_t offset = 0;
  if (!req.page_token.empty()) {
    if (order.keyset) {
      // "k:<start_time>:<id>" of the last run of the previous page.
      const std::string& t = req.page_token;
      size_t colon = t.find(':', 2);
      if (t.rfind("k:", 0) != 0 || colon == std::string::npos) return bad_token(t);
      DLSYS_ASSIGN_OR_RETURN(int64_t start, int_token(t.substr(0, colon), "k:"));
      DLSYS_ASSIGN_OR_RETURN(int64_t id, int_token("k:" + t.substr(colon + 1), "k:"));
      size_t a = params.size() + 1;
      params.push_back(start);
      params.push_back(id);
      where +=
          (where.empty() ? "" : " AND ") +
          fmt::format("(runs.start_time < ${0} OR (runs.start_time = ${0} AND runs.id < ${1}))", a,
                      a + 1);
    } else {
      DLSYS_ASSIGN_OR_RETURN(offset, int_token(req.page_token, "o:"));
      if (offset < 0) return bad_token(req.page_token);
    }
  }
  std::string sql = std::string("SELECT ") + kRunColumns + " FROM runs" + order.join +
                    (where.empty() ? "" : " WHERE " + where) + " ORDER BY " + order.sql +
                    fmt::format(" LIMIT {} OFFSET {}", req.page_size + 1, offset);
  Page page;
  DLSYS_RETURN_IF_ERROR(tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query(sql, params));
    bool more = rows.size() > static_cast<size_t>(req.page_size);
    if (more) rows.resize(static_cast<size_t>(req.page_size));
    DLSYS_ASSIGN_OR_RETURN(page.items, load_runs(c, rows));
    if (more) {
      const SqlRow& last = rows.back();
      page.next_page_token = order.keyset
                                 ? fmt::format("k:{}:{}", sql_int(last[4]), sql_int(last[0]))
                                 : fmt::format("o:{}", offset + req.page_size);
    }
    return Status::OK();
  }));
  return page;
}

// ---- artifacts ----

Status MetaStore::record_artifact(int64_t run_id, const ArtifactRecord& a, const Principal& who) {
  DLSYS_RETURN_IF_ERROR(check_artifact_path(a.path));
  return tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto r, c.query("SELECT id FROM runs WHERE id = $1", {run_id}));
    if (r.empty()) return Status::NotFound("run {} does not exist", run_id);
    DLSYS_RETURN_IF_ERROR(c.exec(
        "INSERT INTO artifacts (run_id, path, sha256, size, created_at) VALUES ($1,$2,$3,$4,$5) "
        "ON CONFLICT (run_id, path) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size, "
        "created_at = excluded.created_at",
        {run_id, a.path, a.sha256, a.size, now_ms()}));
    return audit(c, who, "artifact.put", "run/" + std::to_string(run_id) + "/" + a.path,
                 {{"sha256", a.sha256}, {"size", a.size}});
  });
}

Result<ArtifactRecord> MetaStore::get_artifact(int64_t run_id, const std::string& path) {
  DLSYS_RETURN_IF_ERROR(check_artifact_path(path));
  ArtifactRecord out;
  DLSYS_RETURN_IF_ERROR(tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("SELECT path, sha256, size FROM artifacts WHERE "
                                              "run_id = $1 AND path = $2",
                                              {run_id, path}));
    if (rows.empty()) return Status::NotFound("run {} has no artifact '{}'", run_id, path);
    out = {sql_text(rows[0][0]), sql_text(rows[0][1]), sql_int(rows[0][2])};
    return Status::OK();
  }));
  return out;
}

Result<json> MetaStore::list_artifacts(int64_t run_id, const std::string& prefix) {
  json out = json::array();
  DLSYS_RETURN_IF_ERROR(tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto r, c.query("SELECT id FROM runs WHERE id = $1", {run_id}));
    if (r.empty()) return Status::NotFound("run {} does not exist", run_id);
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("SELECT path, sha256, size, created_at FROM "
                                              "artifacts WHERE run_id = $1 ORDER BY path",
                                              {run_id}));
    for (auto& row : rows) {
      std::string p = sql_text(row[0]);
      if (p.rfind(prefix, 0) != 0) continue;
      out.push_back({{"path", p},
                     {"sha256", sql_text(row[1])},
                     {"size", sql_int(row[2])},
                     {"created_at", sql_int(row[3])}});
    }
    return Status::OK();
  }));
  return out;
}

// ---- model registry ----

namespace {

Status check_model_name(const std::string& name) {
  if (!valid_name(name, kMaxKeyLength, true))
    return Status::Invalid("model name '{}' must be 1..{} of letters, digits, _ - .",
                           name.substr(0, 64), kMaxKeyLength);
  return Status::OK();
}

Status check_alias(const std::string& alias) {
  if (!valid_name(alias, 64, false))
    return Status::Invalid("alias '{}' must be 1..64 of [A-Za-z0-9_-]", alias.substr(0, 64));
  if (alias == "latest")
    return Status::Invalid("alias 'latest' is reserved: it always means the newest version");
  return Status::OK();
}

Result<int64_t> model_id(SqlConnection& c, const std::string& name, bool lock) {
  std::string sql = "SELECT id FROM registered_models WHERE name = $1";
  if (lock && c.dialect() == SqlDialect::kPostgres) sql += " FOR UPDATE";
  DLSYS_ASSIGN_OR_RETURN(auto rows, c.query(sql, {name}));
  if (rows.empty())
    return Status::NotFound(
        "model '{}' is not registered; create it with "
        "POST /api/v1/models or `dlsys models register`",
        name);
  return sql_int(rows[0][0]);
}

const char* kVersionColumns =
    "v.version, v.run_id, v.artifact_path, v.sha256, v.size, v.status, v.description, "
    "v.created_at, v.created_by";

json version_json(const std::string& model, const SqlRow& r) {
  return {{"model", model},
          {"version", sql_int(r[0])},
          {"run_id", sql_int(r[1])},
          {"artifact_path", sql_text(r[2])},
          {"sha256", sql_text(r[3])},
          {"size", sql_int(r[4])},
          {"status", sql_text(r[5])},
          {"description", sql_text(r[6])},
          {"created_at", sql_int(r[7])},
          {"created_by", sql_text(r[8])},
          {"aliases", json::array()}};
}

}  // namespace

Result<json> MetaStore::create_model(const std::string& name, const std::string& description,
                                     const Principal& who) {
  DLSYS_RETURN_IF_ERROR(check_model_name(name));
  DLSYS_RETURN_IF_ERROR(tx(true, [&](SqlConnection& c) -> Status {
    int64_t now = now_ms();
    Status st = c.exec(
        "INSERT INTO registered_models (name, description, created_at, updated_at) "
        "VALUES ($1,$2,$3,$3)",
        {name, description, now});
    if (st.code() == StatusCode::kAlreadyExists)
      return Status::AlreadyExists("model '{}' is already registered", name);
    DLSYS_RETURN_IF_ERROR(st);
    return audit(c, who, "model.create", "model/" + name);
  }));
  return get_model(name);
}

Result<json> MetaStore::get_model(const std::string& name) {
  json out;
  DLSYS_RETURN_IF_ERROR(tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("SELECT id, name, description, created_at, "
                                              "updated_at FROM registered_models WHERE name = $1",
                                              {name}));
    if (rows.empty()) return Status::NotFound("model '{}' is not registered", name);
    int64_t id = sql_int(rows[0][0]);
    out = {{"name", sql_text(rows[0][1])},
           {"description", sql_text(rows[0][2])},
           {"created_at", sql_int(rows[0][3])},
           {"updated_at", sql_int(rows[0][4])},
           {"aliases", json::object()}};
    DLSYS_ASSIGN_OR_RETURN(auto al, c.query("SELECT alias, version FROM model_aliases WHERE "
                                            "model_id = $1 ORDER BY alias",
                                            {id}));
    for (auto& a : al) out["aliases"][sql_text(a[0])] = sql_int(a[1]);
    DLSYS_ASSIGN_OR_RETURN(auto lv, c.query("SELECT MAX(version), COUNT(*) FROM model_versions "
                                            "WHERE model_id = $1",
                                            {id}));
    out["latest_version"] = sql_is_null(lv[0][0]) ? json(nullptr) : json(sql_int(lv[0][0]));
    out["version_count"] = sql_int(lv[0][1]);
    return Status::OK();
  }));
  return out;
}

Result<Page> MetaStore::list_models(int page_size, const std::string& page_token,
                                    const std::string& name_like, const std::string& order_by) {
  DLSYS_RETURN_IF_ERROR(check_page_size(page_size));
  // Name order pages by key ("m:<last name>"); updated_at order by offset ("o:<n>").
  bool by_update = false;
  std::string dir = "ASC";
  if (!order_by.empty()) {
    std::string o = order_by;
    for (char& ch : o) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (o == "name" || o == "name asc") {
    } else if (o == "name desc") {
      dir = "DESC";
    } else if (o == "updated_at" || o == "updated_at asc") {
      by_update = true;
    } else if (o == "updated_at desc") {
      by_update = true;
      dir = "DESC";
    } else {
      return Status::Invalid("order_by '{}': order models by name or updated_at, then ASC or DESC",
                             order_by);
    }
  }
  bool keyset = !by_update && dir == "ASC";
  std::string after;
  int64_t offset = 0;
  if (!page_token.empty()) {
    if (keyset) {
      if (page_token.rfind("m:", 0) != 0) return bad_token(page_token);
      after = page_token.substr(2);
    } else {
      DLSYS_ASSIGN_OR_RETURN(offset, int_token(page_token, "o:"));
      if (offset < 0) return bad_token(page_token);
    }
  }
  if (name_like.size() > kMaxKeyLength)
    return Status::Invalid("name filter is over {} characters", kMaxKeyLength);
  std::vector<std::string> names;
  bool more = false;
  DLSYS_RETURN_IF_ERROR(tx(false, [&](SqlConnection& c) -> Status {
    std::string sql = "SELECT name FROM registered_models WHERE name > $1";
    SqlParams params = {after};
    if (!name_like.empty()) {
      sql += " AND name LIKE $2";
      params.push_back(name_like);
    }
    sql += by_update ? " ORDER BY updated_at " + dir + ", name" : " ORDER BY name " + dir;
    sql += fmt::format(" LIMIT {} OFFSET {}", page_size + 1, offset);
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query(sql, params));
    more = rows.size() > static_cast<size_t>(page_size);
    for (size_t i = 0; i < rows.size() && i < static_cast<size_t>(page_size); ++i)
      names.push_back(sql_text(rows[i][0]));
    return Status::OK();
  }));
  Page page;
  for (auto& n : names) {
    DLSYS_ASSIGN_OR_RETURN(json m, get_model(n));
    page.items.push_back(std::move(m));
  }
  if (more)
    page.next_page_token = keyset ? "m:" + names.back() : fmt::format("o:{}", offset + page_size);
  return page;
}

Result<json> MetaStore::create_model_version(const std::string& model, int64_t run_id,
                                             const std::string& artifact_path,
                                             const std::string& description, const Principal& who) {
  DLSYS_RETURN_IF_ERROR(check_artifact_path(artifact_path));
  if (artifact_path.size() < 5 || artifact_path.substr(artifact_path.size() - 5) != ".onnx")
    return Status::Invalid("model versions are ONNX files: '{}' does not end in .onnx",
                           artifact_path);
  int64_t version = 0;
  DLSYS_RETURN_IF_ERROR(tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(int64_t mid, model_id(c, model, true));
    DLSYS_ASSIGN_OR_RETURN(auto art, c.query("SELECT sha256, size FROM artifacts WHERE run_id = $1 "
                                             "AND path = $2",
                                             {run_id, artifact_path}));
    if (art.empty())
      return Status::NotFound(
          "run {} has no artifact '{}'; upload it first (PUT "
          "/api/v1/runs/{}/artifacts/{})",
          run_id, artifact_path, run_id, artifact_path);
    DLSYS_ASSIGN_OR_RETURN(auto mv, c.query("SELECT MAX(version) FROM model_versions WHERE "
                                            "model_id = $1",
                                            {mid}));
    version = sql_is_null(mv[0][0]) ? 1 : sql_int(mv[0][0]) + 1;
    int64_t now = now_ms();
    DLSYS_RETURN_IF_ERROR(c.exec(
        "INSERT INTO model_versions (model_id, version, run_id, artifact_path, sha256, size, "
        "status, description, created_at, created_by) VALUES ($1,$2,$3,$4,$5,$6,'READY',$7,$8,$9)",
        {mid, version, run_id, artifact_path, art[0][0], art[0][1], description, now, who.name}));
    DLSYS_RETURN_IF_ERROR(
        c.exec("UPDATE registered_models SET updated_at = $1 WHERE id = $2", {now, mid}));
    std::string vid = model + "/" + std::to_string(version);
    DLSYS_RETURN_IF_ERROR(c.exec(
        "INSERT INTO lineage_edges (src_kind, src_id, dst_kind, dst_id, relation, created_at) "
        "VALUES ('run', $1, 'model_version', $2, 'produced', $3) ON CONFLICT DO NOTHING",
        {std::to_string(run_id), vid, now}));
    return audit(c, who, "model_version.create", "model_version/" + vid,
                 {{"run_id", run_id}, {"artifact_path", artifact_path}});
  }));
  return get_model_version(model, version);
}

Result<json> MetaStore::get_model_version(const std::string& model, int64_t version) {
  json out;
  DLSYS_RETURN_IF_ERROR(tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(int64_t mid, model_id(c, model, false));
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query(std::string("SELECT ") + kVersionColumns +
                                                  " FROM model_versions v WHERE v.model_id = $1 "
                                                  "AND v.version = $2",
                                              {mid, version}));
    if (rows.empty()) return Status::NotFound("model '{}' has no version {}", model, version);
    out = version_json(model, rows[0]);
    DLSYS_ASSIGN_OR_RETURN(auto al, c.query("SELECT alias FROM model_aliases WHERE model_id = $1 "
                                            "AND version = $2 ORDER BY alias",
                                            {mid, version}));
    for (auto& a : al) out["aliases"].push_back(sql_text(a[0]));
    return Status::OK();
  }));
  return out;
}

Result<json> MetaStore::list_model_versions(const std::string& model) {
  json out = json::array();
  DLSYS_RETURN_IF_ERROR(tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(int64_t mid, model_id(c, model, false));
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query(std::string("SELECT ") + kVersionColumns +
                                                  " FROM model_versions v WHERE v.model_id = $1 "
                                                  "ORDER BY v.version",
                                              {mid}));
    std::map<int64_t, size_t> index;
    for (auto& r : rows) {
      index[sql_int(r[0])] = out.size();
      out.push_back(version_json(model, r));
    }
    DLSYS_ASSIGN_OR_RETURN(auto al, c.query("SELECT alias, version FROM model_aliases WHERE "
                                            "model_id = $1 ORDER BY alias",
                                            {mid}));
    for (auto& a : al) {
      auto it = index.find(sql_int(a[1]));
      if (it != index.end()) out[it->second]["aliases"].push_back(sql_text(a[0]));
    }
    return Status::OK();
  }));
  return out;
}

Result<json> MetaStore::set_model_version_status(const std::string& model, int64_t version,
                                                 const std::string& status, const Principal& who) {
  if (status != "READY" && status != "ARCHIVED")
    return Status::Invalid("model version status '{}' is not one of READY, ARCHIVED", status);
  DLSYS_RETURN_IF_ERROR(tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(int64_t mid, model_id(c, model, true));
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("UPDATE model_versions SET status = $1 WHERE "
                                              "model_id = $2 AND version = $3 RETURNING version",
                                              {status, mid, version}));
    if (rows.empty()) return Status::NotFound("model '{}' has no version {}", model, version);
    return audit(c, who, "model_version.update",
                 "model_version/" + model + "/" + std::to_string(version), {{"status", status}});
  }));
  return get_model_version(model, version);
}

Result<json> MetaStore::set_alias(const std::string& model, const std::string& alias,
                                  int64_t version, const Principal& who) {
  DLSYS_RETURN_IF_ERROR(check_alias(alias));
  json out;
  DLSYS_RETURN_IF_ERROR(tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(int64_t mid, model_id(c, model, true));
    DLSYS_ASSIGN_OR_RETURN(auto v, c.query("SELECT status FROM model_versions WHERE model_id = $1 "
                                           "AND version = $2",
                                           {mid, version}));
    if (v.empty()) return Status::NotFound("model '{}' has no version {}", model, version);
    if (sql_text(v[0][0]) == "ARCHIVED")
      return Status::Invalid(
          "version {} of '{}' is archived; set its status to READY before "
          "pointing an alias at it",
          version, model);
    DLSYS_ASSIGN_OR_RETURN(auto prev, c.query("SELECT version FROM model_aliases WHERE model_id = "
                                              "$1 AND alias = $2",
                                              {mid, alias}));
    json previous = prev.empty() ? json(nullptr) : json(sql_int(prev[0][0]));
    int64_t now = now_ms();
    DLSYS_RETURN_IF_ERROR(c.exec(
        "INSERT INTO model_aliases (model_id, alias, version, updated_at) VALUES ($1,$2,$3,$4) "
        "ON CONFLICT (model_id, alias) DO UPDATE SET version = excluded.version, "
        "updated_at = excluded.updated_at",
        {mid, alias, version, now}));
    DLSYS_RETURN_IF_ERROR(
        c.exec("UPDATE registered_models SET updated_at = $1 WHERE id = $2", {now, mid}));
    out = {
        {"model", model}, {"alias", alias}, {"version", version}, {"previous_version", previous}};
    return audit(c, who, "model_alias.set", "model/" + model + "@" + alias,
                 {{"version", version}, {"previous_version", previous}});
  }));
  return out;
}

Status MetaStore::delete_alias(const std::string& model, const std::string& alias,
                               const Principal& who) {
  DLSYS_RETURN_IF_ERROR(check_alias(alias));
  return tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(int64_t mid, model_id(c, model, true));
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("DELETE FROM model_aliases WHERE model_id = $1 AND "
                                              "alias = $2 RETURNING version",
                                              {mid, alias}));
    if (rows.empty()) return Status::NotFound("model '{}' has no alias '{}'", model, alias);
    return audit(c, who, "model_alias.delete", "model/" + model + "@" + alias,
                 {{"version", sql_int(rows[0][0])}});
  });
}

Result<json> MetaStore::get_version_by_alias(const std::string& model, const std::string& alias) {
  int64_t version = 0;
  DLSYS_RETURN_IF_ERROR(tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(int64_t mid, model_id(c, model, false));
    std::vector<SqlRow> rows;
    if (alias == "latest") {
      DLSYS_ASSIGN_OR_RETURN(rows, c.query("SELECT MAX(version) FROM model_versions WHERE "
                                           "model_id = $1",
                                           {mid}));
      if (sql_is_null(rows[0][0])) rows.clear();
    } else {
      DLSYS_ASSIGN_OR_RETURN(rows, c.query("SELECT version FROM model_aliases WHERE model_id = $1 "
                                           "AND alias = $2",
                                           {mid, alias}));
    }
    if (rows.empty()) return Status::NotFound("model '{}' has no alias '{}'", model, alias);
    version = sql_int(rows[0][0]);
    return Status::OK();
  }));
  return get_model_version(model, version);
}

// ---- lineage ----

namespace {

Status check_kind(const std::string& kind) {
  static const std::set<std::string> kKinds = {"dataset_version", "run", "model_version",
                                               "deployment"};
  if (!kKinds.count(kind))
    return Status::Invalid(
        "lineage kind '{}' is not one of dataset_version, run, model_version, "
        "deployment",
        kind);
  return Status::OK();
}

}  // namespace

Status MetaStore::add_lineage_edge(const std::string& src_kind, const std::string& src_id,
                                   const std::string& dst_kind, const std::string& dst_id,
                                   const std::string& relation, const Principal& who) {
  DLSYS_RETURN_IF_ERROR(check_kind(src_kind));
  DLSYS_RETURN_IF_ERROR(check_kind(dst_kind));
  if (src_id.empty() || dst_id.empty() || src_id.size() > 512 || dst_id.size() > 512)
    return Status::Invalid("lineage ids must be 1..512 characters");
  if (src_kind == dst_kind && src_id == dst_id)
    return Status::Invalid("a lineage edge cannot point from {}/{} to itself", src_kind, src_id);
  DLSYS_RETURN_IF_ERROR(check_key("relation", relation));
  return tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_RETURN_IF_ERROR(c.exec(
        "INSERT INTO lineage_edges (src_kind, src_id, dst_kind, dst_id, relation, created_at) "
        "VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (src_kind, src_id, dst_kind, dst_id) DO UPDATE "
        "SET relation = excluded.relation",
        {src_kind, src_id, dst_kind, dst_id, relation, now_ms()}));
    return audit(c, who, "lineage.add", src_kind + "/" + src_id + " -> " + dst_kind + "/" + dst_id,
                 {{"relation", relation}});
  });
}

Result<json> MetaStore::lineage(const std::string& kind, const std::string& id, int depth) {
  DLSYS_RETURN_IF_ERROR(check_kind(kind));
  if (depth < 1 || depth > 100) return Status::Invalid("depth {} is out of range 1..100", depth);
  json nodes = json::array(), edges = json::array();
  DLSYS_RETURN_IF_ERROR(tx(false, [&](SqlConnection& c) -> Status {
    std::set<std::pair<std::string, std::string>> seen = {{kind, id}};
    std::set<std::tuple<std::string, std::string, std::string, std::string>> seen_edges;
    nodes.push_back({{"kind", kind}, {"id", id}, {"direction", "root"}});
    for (int dir = 0; dir < 2; ++dir) {
      bool down = dir == 0;
      std::deque<std::tuple<std::string, std::string, int>> q = {{kind, id, 0}};
      while (!q.empty() && seen.size() < 10000) {
        auto [k, i, d] = q.front();
        q.pop_front();
        if (d >= depth) continue;
        DLSYS_ASSIGN_OR_RETURN(
            auto rows,
            c.query(down ? "SELECT src_kind, src_id, dst_kind, dst_id, relation FROM lineage_edges "
                           "WHERE src_kind = $1 AND src_id = $2"
                         : "SELECT src_kind, src_id, dst_kind, dst_id, relation FROM lineage_edges "
                           "WHERE dst_kind = $1 AND dst_id = $2",
                    {k, i}));
        for (auto& r : rows) {
          auto key =
              std::make_tuple(sql_text(r[0]), sql_text(r[1]), sql_text(r[2]), sql_text(r[3]));
          if (seen_edges.insert(key).second)
            edges.push_back({{"src", {{"kind", std::get<0>(key)}, {"id", std::get<1>(key)}}},
                             {"dst", {{"kind", std::get<2>(key)}, {"id", std::get<3>(key)}}},
                             {"relation", sql_text(r[4])}});
          std::string nk = down ? std::get<2>(key) : std::get<0>(key);
          std::string ni = down ? std::get<3>(key) : std::get<1>(key);
          if (seen.insert({nk, ni}).second) {
            nodes.push_back(
                {{"kind", nk}, {"id", ni}, {"direction", down ? "downstream" : "upstream"}});
            q.emplace_back(nk, ni, d + 1);
          }
        }
      }
    }
    return Status::OK();
  }));
  return json{{"root", {{"kind", kind}, {"id", id}}}, {"nodes", nodes}, {"edges", edges}};
}

// ---- audit ----

Result<Page> MetaStore::list_audit(int page_size, const std::string& page_token) {
  DLSYS_RETURN_IF_ERROR(check_page_size(page_size));
  int64_t before = INT64_MAX;
  if (!page_token.empty()) {
    DLSYS_ASSIGN_OR_RETURN(before, int_token(page_token, "a:"));
  }
  Page page;
  DLSYS_RETURN_IF_ERROR(tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("SELECT id, ts, actor, action, target, detail FROM "
                                              "audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2",
                                              {before, int64_t{page_size} + 1}));
    for (size_t i = 0; i < rows.size() && i < static_cast<size_t>(page_size); ++i) {
      auto& r = rows[i];
      std::string detail = sql_text(r[5]);
      page.items.push_back(
          {{"id", sql_int(r[0])},
           {"timestamp", sql_int(r[1])},
           {"actor", sql_text(r[2])},
           {"action", sql_text(r[3])},
           {"target", sql_text(r[4])},
           {"detail", detail.empty() ? json::object() : json::parse(detail, nullptr, false)}});
    }
    if (rows.size() > static_cast<size_t>(page_size))
      page.next_page_token = "a:" + std::to_string(sql_int(rows[page_size - 1][0]));
    return Status::OK();
  }));
  return page;
}

// ---- tokens ----

Result<json> MetaStore::create_token(const std::string& name, Role role, const Principal& who) {
  if (!valid_name(name, 100, true))
    return Status::Invalid("token name '{}' must be 1..100 of letters, digits, _ - .",
                           name.substr(0, 64));
  std::string token = "dls_" + random_hex(24);
  json out;
  DLSYS_RETURN_IF_ERROR(tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("INSERT INTO api_tokens (name, token_hash, role, "
                                              "created_at, created_by) VALUES ($1,$2,$3,$4,$5) "
                                              "RETURNING id",
                                              {name, sha256_hex(token),
                                               std::string(role_name(role)), now_ms(), who.name}));
    int64_t id = sql_int(rows.at(0).at(0));
    out = {{"id", id}, {"name", name}, {"role", role_name(role)}, {"token", token}};
    return audit(c, who, "token.create", "token/" + std::to_string(id),
                 {{"name", name}, {"role", role_name(role)}});
  }));
  return out;
}

Result<Principal> MetaStore::authenticate(const std::string& token) {
  Principal p;
  DLSYS_RETURN_IF_ERROR(tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("SELECT name, role FROM api_tokens WHERE "
                                              "token_hash = $1 AND revoked = 0",
                                              {sha256_hex(token)}));
    if (rows.empty())
      return Status::Unauthenticated(
          "the API token is unknown or revoked; create one with "
          "`dlsys tokens create --role R`");
    p.name = sql_text(rows[0][0]);
    DLSYS_ASSIGN_OR_RETURN(p.role, parse_role(sql_text(rows[0][1])));
    return Status::OK();
  }));
  return p;
}

Result<json> MetaStore::list_tokens() {
  json out = json::array();
  DLSYS_RETURN_IF_ERROR(tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("SELECT id, name, role, created_at, created_by, "
                                              "revoked FROM api_tokens ORDER BY id",
                                              {}));
    for (auto& r : rows)
      out.push_back({{"id", sql_int(r[0])},
                     {"name", sql_text(r[1])},
                     {"role", sql_text(r[2])},
                     {"created_at", sql_int(r[3])},
                     {"created_by", sql_text(r[4])},
                     {"revoked", sql_int(r[5]) != 0}});
    return Status::OK();
  }));
  return out;
}

Status MetaStore::revoke_token(int64_t id, const Principal& who) {
  return tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("UPDATE api_tokens SET revoked = 1 WHERE id = $1 "
                                              "RETURNING id",
                                              {id}));
    if (rows.empty()) return Status::NotFound("token {} does not exist", id);
    return audit(c, who, "token.revoke", "token/" + std::to_string(id));
  });
}

}  // namespace dlsys::meta
