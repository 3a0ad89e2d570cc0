#include "meta/run_tracking.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <tuple>

#include "core/file_util.h"
#include "core/json_get.h"
#include "meta/metric_chunk.h"
#include "meta/run_filter.h"

namespace dlsys::meta {

namespace {

const char* kRunColumns =
    "runs.id, runs.experiment_id, runs.name, runs.status, runs.start_time, runs.end_time, "
    "runs.created_by, runs.heartbeat_at, runs.end_reason";

Status check_step_range(const StepRange& r) {
  if (r.min_step && r.max_step && *r.min_step > *r.max_step)
    return Status::Invalid("min_step {} is above max_step {}: give the lower step first",
                           *r.min_step, *r.max_step);
  return Status::OK();
}

bool terminal_status(const std::string& s) {
  return s == "FINISHED" || s == "FAILED" || s == "KILLED";
}

// The object at obj[key]: missing or null gives an empty object, another type an error.
Result<json> object_field(const json& obj, const char* key, std::string_view what) {
  DLSYS_ASSIGN_OR_RETURN(std::optional<json> v, json_get_optional<json>(obj, key, what));
  if (!v) return json::object();
  if (!v->is_object())
    return Status::Invalid("{}: '{}' must be an object, got {}", what, key, json_type_phrase(*v));
  return std::move(*v);
}

Status string_map(const json& obj, const char* key, std::string_view what,
                  std::map<std::string, std::string>* out) {
  DLSYS_ASSIGN_OR_RETURN(json m, object_field(obj, key, what));
  for (auto& [k, v] : m.items()) {
    DLSYS_ASSIGN_OR_RETURN((*out)[k],
                           json_as<std::string>(v, fmt::format("{}: {}['{}']", what, key, k)));
  }
  return Status::OK();
}

}  // namespace

// ---- records ----

void to_json(json& j, const Experiment& e) {
  j = {{"id", e.id},
       {"name", e.name},
       {"description", e.description},
       {"created_at", e.created_at},
       {"created_by", e.created_by}};
}

void to_json(json& j, const Run& r) {
  json metrics = json::object();
  for (const auto& [k, m] : r.metrics)
    metrics[k] = {{"value", m.value}, {"step", m.step}, {"timestamp", m.timestamp}};
  j = {{"id", r.id},
       {"experiment_id", r.experiment_id},
       {"name", r.name},
       {"status", r.status},
       {"start_time", r.start_time},
       {"end_time", r.end_time ? json(*r.end_time) : json(nullptr)},
       {"heartbeat_time", r.heartbeat_time},
       {"end_reason", r.end_reason},
       {"created_by", r.created_by},
       {"params", r.params.empty() ? json::object() : json(r.params)},
       {"tags", r.tags.empty() ? json::object() : json(r.tags)},
       {"metrics", std::move(metrics)}};
}

void to_json(json& j, const MetricHistory& h) {
  json points = json::array();
  for (const HistoryPoint& p : h.points)
    points.push_back({{"step", p.step}, {"timestamp", p.timestamp}, {"value", p.value}});
  j = {{"run_id", h.run_id},
       {"key", h.key},
       {"total_points", h.total_points},
       {"downsampled", h.downsampled},
       {"points", std::move(points)}};
}

void to_json(json& j, const ArtifactInfo& a) {
  j = {{"path", a.path}, {"sha256", a.sha256}, {"size", a.size}, {"created_at", a.created_at}};
}

template <>
Result<Experiment> from_json<Experiment>(const json& j, std::string_view what) {
  Experiment e;
  DLSYS_ASSIGN_OR_RETURN(e.id, json_get<int64_t>(j, "id", what));
  DLSYS_ASSIGN_OR_RETURN(e.name, json_get<std::string>(j, "name", what));
  DLSYS_ASSIGN_OR_RETURN(e.description, json_get_or<std::string>(j, "description", "", what));
  DLSYS_ASSIGN_OR_RETURN(e.created_at, json_get_or<int64_t>(j, "created_at", 0, what));
  DLSYS_ASSIGN_OR_RETURN(e.created_by, json_get_or<std::string>(j, "created_by", "", what));
  return e;
}

template <>
Result<Run> from_json<Run>(const json& j, std::string_view what) {
  Run r;
  DLSYS_ASSIGN_OR_RETURN(r.id, json_get<int64_t>(j, "id", what));
  DLSYS_ASSIGN_OR_RETURN(r.experiment_id, json_get<int64_t>(j, "experiment_id", what));
  DLSYS_ASSIGN_OR_RETURN(r.name, json_get_or<std::string>(j, "name", "", what));
  DLSYS_ASSIGN_OR_RETURN(r.status, json_get<std::string>(j, "status", what));
  DLSYS_ASSIGN_OR_RETURN(r.start_time, json_get_or<int64_t>(j, "start_time", 0, what));
  DLSYS_ASSIGN_OR_RETURN(r.end_time, json_get_optional<int64_t>(j, "end_time", what));
  DLSYS_ASSIGN_OR_RETURN(r.heartbeat_time, json_get_or<int64_t>(j, "heartbeat_time", 0, what));
  DLSYS_ASSIGN_OR_RETURN(r.end_reason, json_get_or<std::string>(j, "end_reason", "", what));
  DLSYS_ASSIGN_OR_RETURN(r.created_by, json_get_or<std::string>(j, "created_by", "", what));
  DLSYS_RETURN_IF_ERROR(string_map(j, "params", what, &r.params));
  DLSYS_RETURN_IF_ERROR(string_map(j, "tags", what, &r.tags));
  DLSYS_ASSIGN_OR_RETURN(json metrics, object_field(j, "metrics", what));
  for (auto& [k, v] : metrics.items()) {
    std::string where = fmt::format("{}: metrics['{}']", what, k);
    LatestMetric& m = r.metrics[k];
    DLSYS_ASSIGN_OR_RETURN(m.value, json_get<double>(v, "value", where));
    DLSYS_ASSIGN_OR_RETURN(m.step, json_get_or<int64_t>(v, "step", 0, where));
    DLSYS_ASSIGN_OR_RETURN(m.timestamp, json_get_or<int64_t>(v, "timestamp", 0, where));
  }
  return r;
}

template <>
Result<MetricHistory> from_json<MetricHistory>(const json& j, std::string_view what) {
  MetricHistory h;
  DLSYS_ASSIGN_OR_RETURN(h.run_id, json_get<int64_t>(j, "run_id", what));
  DLSYS_ASSIGN_OR_RETURN(h.key, json_get<std::string>(j, "key", what));
  DLSYS_ASSIGN_OR_RETURN(h.total_points, json_get<int64_t>(j, "total_points", what));
  DLSYS_ASSIGN_OR_RETURN(h.downsampled, json_get_or<bool>(j, "downsampled", false, what));
  DLSYS_ASSIGN_OR_RETURN(json points, json_get<json>(j, "points", what));
  if (!points.is_array())
    return Status::Invalid("{}: 'points' must be an array, got {}", what, json_type_phrase(points));
  for (size_t i = 0; i < points.size(); ++i) {
    std::string where = fmt::format("{}: points[{}]", what, i);
    HistoryPoint p;
    DLSYS_ASSIGN_OR_RETURN(p.step, json_get<int64_t>(points[i], "step", where));
    DLSYS_ASSIGN_OR_RETURN(p.timestamp, json_get_or<int64_t>(points[i], "timestamp", 0, where));
    DLSYS_ASSIGN_OR_RETURN(p.value, json_get<double>(points[i], "value", where));
    h.points.push_back(p);
  }
  return h;
}

template <>
Result<ArtifactInfo> from_json<ArtifactInfo>(const json& j, std::string_view what) {
  ArtifactInfo a;
  DLSYS_ASSIGN_OR_RETURN(a.path, json_get<std::string>(j, "path", what));
  DLSYS_ASSIGN_OR_RETURN(a.sha256, json_get<std::string>(j, "sha256", what));
  DLSYS_ASSIGN_OR_RETURN(a.size, json_get<int64_t>(j, "size", what));
  DLSYS_ASSIGN_OR_RETURN(a.created_at, json_get_or<int64_t>(j, "created_at", 0, what));
  return a;
}

// ---- experiments ----

static Experiment experiment_of(const SqlRow& r) {
  return {sql_int(r[0]), sql_text(r[1]), sql_text(r[2]), sql_int(r[3]), sql_text(r[4])};
}

Result<Experiment> RunTracking::create_experiment(const std::string& name,
                                                  const std::string& description,
                                                  const Principal& who) {
  if (!valid_name(name, kMaxKeyLength, true))
    return Status::Invalid("experiment name '{}' must be 1..{} of letters, digits, _ - .",
                           name.substr(0, 64), kMaxKeyLength);
  Experiment out;
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    auto rows = c.query(
        "INSERT INTO experiments (name, description, created_at, created_by) VALUES ($1,$2,$3,$4) "
        "RETURNING id, name, description, created_at, created_by",
        {name, description, now(), who.name});
    if (rows.status().code() == StatusCode::kAlreadyExists)
      return Status::AlreadyExists("experiment '{}' already exists", name);
    if (!rows.ok()) return rows.status();
    out = experiment_of(rows->at(0));
    return audit(c, who, "experiment.create",
                 "experiment/" + std::to_string(sql_int(rows->at(0)[0])));
  }));
  return out;
}

// The experiment matching `condition` ("id = $1" or "name = $1") on `key`, or NotFound(`missing`).
static Result<Experiment> find_experiment(SqlConnection& c, const char* condition, SqlValue key,
                                          const std::string& missing) {
  DLSYS_ASSIGN_OR_RETURN(auto rows, c.query(std::string("SELECT id, name, description, created_at, "
                                                        "created_by FROM experiments WHERE ") +
                                                condition,
                                            {std::move(key)}));
  if (rows.empty()) return Status::NotFound("{}", missing);
  return experiment_of(rows[0]);
}

Result<Experiment> RunTracking::get_experiment(int64_t id) {
  Experiment out;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(
        out, find_experiment(c, "id = $1", id, fmt::format("experiment {} does not exist", id)));
    return Status::OK();
  }));
  return out;
}

Result<Experiment> RunTracking::get_experiment_by_name(const std::string& name) {
  Experiment out;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(
        out,
        find_experiment(c, "name = $1", name, fmt::format("experiment '{}' does not exist", name)));
    return Status::OK();
  }));
  return out;
}

Result<Experiment> RunTracking::ensure_experiment(const std::string& name, const Principal& who) {
  auto e = get_experiment_by_name(name);
  if (e.ok() || e.status().code() != StatusCode::kNotFound) return e;
  auto created = create_experiment(name, "", who);
  if (created.status().code() == StatusCode::kAlreadyExists) return get_experiment_by_name(name);
  return created;
}

Result<PageOf<Experiment>> RunTracking::list_experiments(int page_size,
                                                         const std::string& page_token) {
  DLSYS_RETURN_IF_ERROR(check_page_size(page_size));
  int64_t after = 0;
  if (!page_token.empty()) {
    DLSYS_ASSIGN_OR_RETURN(after, int_token(page_token, "e:"));
  }
  PageOf<Experiment> page;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    page = {};
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("SELECT id, name, description, created_at, "
                                              "created_by FROM experiments WHERE id > $1 "
                                              "ORDER BY id LIMIT $2",
                                              {after, int64_t{page_size} + 1}));
    for (size_t i = 0; i < rows.size() && i < static_cast<size_t>(page_size); ++i)
      page.items.push_back(experiment_of(rows[i]));
    if (rows.size() > static_cast<size_t>(page_size))
      page.next_page_token = "e:" + std::to_string(sql_int(rows[page_size - 1][0]));
    return Status::OK();
  }));
  return page;
}

// ---- runs ----

Result<std::vector<Run>> RunTracking::load_runs(SqlConnection& c, const std::vector<SqlRow>& rows) {
  std::vector<Run> out;
  if (rows.empty()) return out;
  std::vector<int64_t> ids;
  std::map<int64_t, size_t> index;
  for (const SqlRow& r : rows) {
    int64_t id = sql_int(r[0]);
    index[id] = ids.size();
    ids.push_back(id);
    Run run;
    run.id = id;
    run.experiment_id = sql_int(r[1]);
    run.name = sql_text(r[2]);
    run.status = sql_text(r[3]);
    run.start_time = sql_int(r[4]);
    if (!sql_is_null(r[5])) run.end_time = sql_int(r[5]);
    run.created_by = sql_text(r[6]);
    run.heartbeat_time = sql_int(r[7]);
    run.end_reason = sql_text(r[8]);
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
    Run& run = out[index[sql_int(r[1])]];
    int64_t kind = sql_int(r[0]);
    if (kind == 0)
      run.params[sql_text(r[2])] = sql_text(r[3]);
    else if (kind == 1)
      run.tags[sql_text(r[2])] = sql_text(r[3]);
    else
      run.metrics[sql_text(r[2])] = {sql_double(r[4]), sql_int(r[5]), sql_int(r[6])};
  }
  return out;
}

static Status check_kvs(const std::vector<KeyValue>& kvs, const char* what, size_t max_value,
                        size_t max_count) {
  if (kvs.size() > max_count)
    return Status::Invalid("{} {}s in one request; the limit is {}", kvs.size(), what, max_count);
  for (const KeyValue& kv : kvs) {
    DLSYS_RETURN_IF_ERROR(check_key(what, kv.key));
    if (kv.value.size() > max_value)
      return Status::Invalid("{} '{}' has a value of {} characters; the limit is {}", what, kv.key,
                             kv.value.size(), max_value);
  }
  return Status::OK();
}

Result<Run> RunTracking::create_run(int64_t experiment_id, const std::string& name,
                                    const std::vector<KeyValue>& params,
                                    const std::vector<KeyValue>& tags, const Principal& who) {
  if (name.size() > kMaxKeyLength)
    return Status::Invalid("run name is {} characters; the limit is {}", name.size(),
                           kMaxKeyLength);
  DLSYS_RETURN_IF_ERROR(check_kvs(params, "param", kMaxParamValueLength, kMaxParamsPerBatch));
  DLSYS_RETURN_IF_ERROR(check_kvs(tags, "tag", kMaxTagValueLength, kMaxTagsPerBatch));
  int64_t id = 0;
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto e,
                           c.query("SELECT id FROM experiments WHERE id = $1", {experiment_id}));
    if (e.empty())
      return Status::NotFound("experiment {} does not exist; create it first", experiment_id);
    DLSYS_ASSIGN_OR_RETURN(
        auto rows, c.query("INSERT INTO runs (experiment_id, name, status, start_time, created_by, "
                           "heartbeat_at) VALUES ($1,$2,'RUNNING',$3,$4,$3) RETURNING id",
                           {experiment_id, name, now(), who.name}));
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

void RunTracking::sweep_before_read() {
  if (liveness_.timeout_ms <= 0) return;
  const int64_t t = now();
  int64_t last = last_read_sweep_.load();
  // One reader sweeps per interval; the others go on (a clock moved back sweeps again).
  if (last != INT64_MIN && t >= last && t - last < liveness_.read_sweep_interval_ms) return;
  if (!last_read_sweep_.compare_exchange_strong(last, t)) return;
  (void)fail_stale_runs();
}

Result<Run> RunTracking::get_run(int64_t id) {
  sweep_before_read();
  Run out;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(
        auto rows,
        c.query(std::string("SELECT ") + kRunColumns + " FROM runs WHERE id = $1", {id}));
    if (rows.empty()) return Status::NotFound("run {} does not exist", id);
    DLSYS_ASSIGN_OR_RETURN(std::vector<Run> runs, load_runs(c, rows));
    out = std::move(runs[0]);
    return Status::OK();
  }));
  return out;
}

Result<Run> RunTracking::update_run(int64_t id, const std::string& status, const Principal& who) {
  if (status != "RUNNING" && !terminal_status(status))
    return Status::Invalid("run status '{}' is not one of RUNNING, FINISHED, FAILED, KILLED",
                           status);
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    const int64_t t = now();
    SqlValue end = terminal_status(status) ? SqlValue(t) : SqlValue();
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("UPDATE runs SET status = $1, end_time = $2, "
                                              "end_reason = '', heartbeat_at = $3 WHERE id = $4 "
                                              "RETURNING id",
                                              {status, end, t, id}));
    if (rows.empty()) return Status::NotFound("run {} does not exist", id);
    return audit(c, who, "run.update", "run/" + std::to_string(id), {{"status", status}});
  }));
  return get_run(id);
}

Result<Run> RunTracking::heartbeat(int64_t id) {
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(
        auto rows,
        c.query("UPDATE runs SET heartbeat_at = $1 WHERE id = $2 RETURNING id", {now(), id}));
    if (rows.empty()) return Status::NotFound("run {} does not exist", id);
    return Status::OK();
  }));
  return get_run(id);
}

Result<std::vector<int64_t>> RunTracking::fail_stale_runs() {
  std::vector<int64_t> failed;
  const int64_t timeout = liveness_.timeout_ms;
  if (timeout <= 0) return failed;
  const int64_t t = now();
  const int64_t cutoff = t - timeout;
  // The common case, nothing stale, is one read of the partial index runs_running.
  const char* stale_sql =
      "SELECT id, heartbeat_at FROM runs WHERE status = 'RUNNING' AND heartbeat_at < $1 ORDER BY "
      "id";
  std::vector<SqlRow> stale;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(stale, c.query(stale_sql, {cutoff}));
    return Status::OK();
  }));
  if (stale.empty()) return failed;
  const Principal system{"system", Role::kAdmin};
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    failed.clear();
    // Again inside the write transaction: a heartbeat or an end may have come in between.
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query(stale_sql, {cutoff}));
    for (const SqlRow& r : rows) {
      const int64_t id = sql_int(r[0]);
      const std::string reason = fmt::format("no heartbeat for {} s (the run timeout is {} s)",
                                             (t - sql_int(r[1])) / 1000, timeout / 1000);
      DLSYS_ASSIGN_OR_RETURN(auto done, c.query("UPDATE runs SET status = 'FAILED', end_time = $1, "
                                                "end_reason = $2 WHERE id = $3 AND status = "
                                                "'RUNNING' AND heartbeat_at < $4 RETURNING id",
                                                {t, reason, id, cutoff}));
      if (done.empty()) continue;
      failed.push_back(id);
      DLSYS_RETURN_IF_ERROR(audit(c, system, "run.update", "run/" + std::to_string(id),
                                  {{"status", "FAILED"}, {"end_reason", reason}}));
    }
    return Status::OK();
  }));
  return failed;
}

Status RunTracking::log_batch(int64_t run_id, const std::vector<MetricPoint>& metrics,
                              const std::vector<KeyValue>& params,
                              const std::vector<KeyValue>& tags, const Principal& who) {
  if (metrics.size() > kMaxPointsPerBatch)
    return Status::Invalid("{} metric points in one batch; the limit is {}: split the batch",
                           metrics.size(), kMaxPointsPerBatch);
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
  const int64_t now = this->now();
  return db_.tx(true, [&](SqlConnection& c) -> Status {
    // The run exists, and was heard from.
    DLSYS_ASSIGN_OR_RETURN(
        auto r,
        c.query("UPDATE runs SET heartbeat_at = $1 WHERE id = $2 RETURNING id", {now, run_id}));
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
      // One chunk per key (metric_chunk.h), its points in the order logged.
      std::map<std::string, std::vector<HistoryPoint>> chunks;
      std::map<std::string, const MetricPoint*> latest;
      for (const MetricPoint& m : metrics) {
        chunks[m.key].push_back({m.step, m.timestamp ? m.timestamp : now, m.value});
        auto& l = latest[m.key];
        if (!l || m.step >= l->step) l = &m;
      }
      std::vector<SqlParams> rows;
      for (auto& [key, pts] : chunks) {
        int64_t lo = pts[0].step, hi = pts[0].step;
        for (const HistoryPoint& p : pts) lo = std::min(lo, p.step), hi = std::max(hi, p.step);
        rows.push_back(
            {run_id, key, lo, hi, static_cast<int64_t>(pts.size()), encode_metric_chunk(pts)});
      }
      DLSYS_RETURN_IF_ERROR(c.exec_many(
          "INSERT INTO metric_chunks (run_id, key, min_step, max_step, n, points) VALUES "
          "($1,$2,$3,$4,$5,$6)",
          rows));
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

namespace {

// Whether the database holds metric rows from before chunks (read_history skips their query
// when it does not).
Result<bool> has_legacy_metric_rows(SqlConnection& c) {
  DLSYS_ASSIGN_OR_RETURN(auto r, c.query("SELECT 1 FROM metrics LIMIT 1", {}));
  return !r.empty();
}

// Points decoded at once while a series is read: chunks are fetched in groups of at most this
// many points (one chunk alone may hold kMaxPointsPerBatch), and rows from before chunks in
// pages of this many.
constexpr int64_t kPointsPerRead = 262144;

// Calls fn(point) for every row of the series from before chunks with a step in lo..hi, a page
// at a time in step order (a page ends before its last step, which the next page reads whole).
template <typename Fn>
Status for_each_legacy_point(SqlConnection& c, int64_t run_id, const std::string& key, int64_t lo,
                             int64_t hi, Fn&& fn) {
  int64_t from = lo;
  for (;;) {
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("SELECT step, ts, value FROM metrics WHERE run_id = "
                                              "$1 AND key = $2 AND step BETWEEN $3 AND $4 ORDER "
                                              "BY step LIMIT $5",
                                              {run_id, key, from, hi, kPointsPerRead}));
    if (static_cast<int64_t>(rows.size()) < kPointsPerRead) {
      for (const SqlRow& r : rows) fn(HistoryPoint{sql_int(r[0]), sql_int(r[1]), sql_double(r[2])});
      return Status::OK();
    }
    const int64_t last = sql_int(rows.back()[0]);
    if (sql_int(rows.front()[0]) == last) {
      // One step holds a whole page: read that step alone, then go on after it.
      DLSYS_ASSIGN_OR_RETURN(auto same, c.query("SELECT step, ts, value FROM metrics WHERE "
                                                "run_id = $1 AND key = $2 AND step = $3",
                                                {run_id, key, last}));
      for (const SqlRow& r : same) fn(HistoryPoint{sql_int(r[0]), sql_int(r[1]), sql_double(r[2])});
      if (last == hi) return Status::OK();
      from = last + 1;
      continue;
    }
    for (const SqlRow& r : rows)
      if (sql_int(r[0]) != last) fn(HistoryPoint{sql_int(r[0]), sql_int(r[1]), sql_double(r[2])});
    from = last;
  }
}

// The history of one series, read in two passes (metric_chunk.h) in the caller's transaction.
// Pass 1 counts: the rows from before chunks and the chunks wholly inside lo..hi by aggregates
// (no decoding), a chunk across an end of the range by its points. Pass 2 decodes the chunks
// overlapping lo..hi that pass 1 saw (ids up to the highest it saw), in groups of at most
// kPointsPerRead points, and the rows again a page at a time: memory is bounded by the answer
// and one group, never the series.
Result<MetricHistory> read_history(SqlConnection& c, int64_t run_id, const std::string& key,
                                   int64_t limit, int64_t lo, int64_t hi, bool legacy_rows) {
  HistoryDownsampler d(limit, lo, hi);
  if (legacy_rows) {
    DLSYS_ASSIGN_OR_RETURN(auto agg, c.query("SELECT COUNT(*), MIN(step), MAX(step) FROM metrics "
                                             "WHERE run_id = $1 AND key = $2 AND step BETWEEN $3 "
                                             "AND $4",
                                             {run_id, key, lo, hi}));
    if (sql_int(agg.at(0).at(0)) > 0)
      d.count_span(sql_int(agg[0][0]), sql_int(agg[0][1]), sql_int(agg[0][2]));
  }
  std::vector<HistoryPoint> pts;
  auto decode = [&](const SqlRow& row) -> Status {
    pts.clear();
    const int64_t id = sql_int(row[0]);
    return decode_metric_chunk(sql_text(row[1]), sql_int(row[2]), sql_int(row[3]), sql_int(row[4]),
                               &pts)
        .with_context(fmt::format("run {} metric '{}' chunk {}", run_id, key, id));
  };
  DLSYS_ASSIGN_OR_RETURN(auto inside,
                         c.query("SELECT COUNT(*), SUM(n), MIN(min_step), MAX(max_step), MAX(id) "
                                 "FROM metric_chunks WHERE run_id = $1 AND key = $2 AND min_step "
                                 ">= $3 AND max_step <= $4",
                                 {run_id, key, lo, hi}));
  int64_t seen = 0;  // the highest chunk id of pass 1
  if (sql_int(inside.at(0).at(0)) > 0) {
    d.count_span(sql_int(inside[0][1]), sql_int(inside[0][2]), sql_int(inside[0][3]));
    seen = sql_int(inside[0][4]);
  }
  // Chunks across an end of the range (none without a range), one at a time.
  if (lo != INT64_MIN || hi != INT64_MAX) {
    DLSYS_ASSIGN_OR_RETURN(auto across, c.query("SELECT id FROM metric_chunks WHERE run_id = $1 "
                                                "AND key = $2 AND max_step >= $3 AND min_step "
                                                "<= $4 AND (min_step < $3 OR max_step > $4)",
                                                {run_id, key, lo, hi}));
    for (const SqlRow& a : across) {
      DLSYS_ASSIGN_OR_RETURN(auto one, c.query("SELECT id, points, n, min_step, max_step FROM "
                                               "metric_chunks WHERE id = $1",
                                               {sql_int(a[0])}));
      if (one.empty()) continue;
      DLSYS_RETURN_IF_ERROR(decode(one[0]));
      for (const HistoryPoint& p : pts) d.count(p);
      seen = std::max(seen, sql_int(a[0]));
    }
  }
  if (d.total() == 0) return d.finish(run_id, key);
  if (legacy_rows) {
    DLSYS_RETURN_IF_ERROR(
        for_each_legacy_point(c, run_id, key, lo, hi, [&](const HistoryPoint& p) { d.keep(p); }));
  }
  const char* filter =
      "run_id = $1 AND key = $2 AND id > $3 AND id <= $4 AND max_step >= $5 AND min_step <= $6";
  int64_t after = 0;
  for (;;) {
    // The next chunks' ids and sizes (no points), then their points up to kPointsPerRead.
    DLSYS_ASSIGN_OR_RETURN(auto ids, c.query(fmt::format("SELECT id, n FROM metric_chunks WHERE {} "
                                                         "ORDER BY id LIMIT 1024",
                                                         filter),
                                             {run_id, key, after, seen, lo, hi}));
    if (ids.empty()) break;
    int64_t points = 0, upto = after;
    for (const SqlRow& r : ids) {
      if (points > 0 && points + sql_int(r[1]) > kPointsPerRead) break;
      points += sql_int(r[1]);
      upto = sql_int(r[0]);
    }
    DLSYS_ASSIGN_OR_RETURN(auto rows,
                           c.query(fmt::format("SELECT id, points, n, min_step, max_step FROM "
                                               "metric_chunks WHERE {} ORDER BY id",
                                               filter),
                                   {run_id, key, after, upto, lo, hi}));
    for (const SqlRow& row : rows) {
      DLSYS_RETURN_IF_ERROR(decode(row));
      for (const HistoryPoint& p : pts) d.keep(p);
    }
    after = upto;
  }
  return d.finish(run_id, key);
}

}  // namespace

Result<MetricHistory> RunTracking::metric_history(int64_t run_id, const std::string& key,
                                                  int max_points, const StepRange& range) {
  DLSYS_RETURN_IF_ERROR(check_key("metric", key));
  if (max_points < 0 || max_points > kMaxMetricPoints)
    return Status::Invalid("max_points {} is out of range: use 1..{} (0 or none: {})", max_points,
                           kMaxMetricPoints, kDefaultMaxMetricPoints);
  const int64_t limit = max_points == 0 ? kDefaultMaxMetricPoints : max_points;
  DLSYS_RETURN_IF_ERROR(check_step_range(range));
  const int64_t lo = range.min_step.value_or(INT64_MIN), hi = range.max_step.value_or(INT64_MAX);
  MetricHistory out;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto r, c.query("SELECT id FROM runs WHERE id = $1", {run_id}));
    if (r.empty()) return Status::NotFound("run {} does not exist", run_id);
    DLSYS_ASSIGN_OR_RETURN(bool legacy, has_legacy_metric_rows(c));
    DLSYS_ASSIGN_OR_RETURN(out, read_history(c, run_id, key, limit, lo, hi, legacy));
    return Status::OK();
  }));
  return out;
}

Result<std::vector<MetricHistory>> RunTracking::metric_histories(
    const std::vector<int64_t>& run_ids, const std::vector<std::string>& keys, int max_points,
    const StepRange& range) {
  if (run_ids.size() > kMaxHistoryRuns)
    return Status::Invalid("{} runs asked; at most {} runs' histories at once: ask in parts",
                           run_ids.size(), kMaxHistoryRuns);
  if (keys.empty()) return Status::Invalid("no metric keys asked: name at least one in 'keys'");
  if (keys.size() > kMaxHistoryKeys)
    return Status::Invalid("{} keys asked; at most {} at once", keys.size(), kMaxHistoryKeys);
  for (const std::string& k : keys) DLSYS_RETURN_IF_ERROR(check_key("metric", k));
  if (max_points < 0 || max_points > kMaxHistoryPoints)
    return Status::Invalid("max_points {} is out of range: use 1..{} (0 or none: {})", max_points,
                           kMaxHistoryPoints, kDefaultHistoryPoints);
  DLSYS_RETURN_IF_ERROR(check_step_range(range));
  const int64_t limit = max_points == 0 ? kDefaultHistoryPoints : max_points;
  const int64_t most = static_cast<int64_t>(run_ids.size() * keys.size()) * limit;
  if (most > kMaxHistoryAnswerPoints)
    return Status::Invalid(
        "{} runs x {} keys x {} points is up to {} points in one answer; the limit is {}: ask "
        "for fewer keys or points per series",
        run_ids.size(), keys.size(), limit, most, kMaxHistoryAnswerPoints);
  const int64_t lo = range.min_step.value_or(INT64_MIN), hi = range.max_step.value_or(INT64_MAX);
  std::vector<MetricHistory> out;
  if (run_ids.empty()) return out;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    out.clear();
    DLSYS_ASSIGN_OR_RETURN(
        auto have, c.query("SELECT id FROM runs WHERE id IN (" + in_list(run_ids) + ")", {}));
    std::set<int64_t> found;
    for (auto& row : have) found.insert(sql_int(row[0]));
    for (int64_t id : run_ids)
      if (!found.count(id)) return Status::NotFound("run {} does not exist", id);
    out.reserve(run_ids.size() * keys.size());
    DLSYS_ASSIGN_OR_RETURN(bool legacy, has_legacy_metric_rows(c));
    for (int64_t id : run_ids)
      for (const std::string& k : keys) {
        DLSYS_ASSIGN_OR_RETURN(MetricHistory h, read_history(c, id, k, limit, lo, hi, legacy));
        out.push_back(std::move(h));
      }
    return Status::OK();
  }));
  return out;
}

Result<std::vector<std::string>> RunTracking::common_metric_keys(
    const std::vector<int64_t>& run_ids, int n, const std::string& skip_prefix) {
  if (run_ids.size() > kMaxHistoryRuns)
    return Status::Invalid("{} runs asked; at most {} at once: ask in parts", run_ids.size(),
                           kMaxHistoryRuns);
  if (n < 1 || n > static_cast<int>(kMaxHistoryKeys))
    return Status::Invalid("{} keys asked; ask for 1..{}", n, kMaxHistoryKeys);
  std::vector<std::string> out;
  if (run_ids.empty()) return out;
  // Every key with its count (a run logs tens of keys, not thousands), ordered here by bytes: the
  // same order on SQLite and PostgreSQL whatever the database's collation.
  std::vector<std::pair<int64_t, std::string>> counted;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    counted.clear();
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("SELECT key, COUNT(*) FROM latest_metrics WHERE "
                                              "run_id IN (" +
                                                  in_list(run_ids) + ") GROUP BY key",
                                              {}));
    for (auto& row : rows) {
      std::string key = sql_text(row[0]);
      if (!skip_prefix.empty() && key.compare(0, skip_prefix.size(), skip_prefix) == 0) continue;
      counted.emplace_back(sql_int(row[1]), std::move(key));
    }
    return Status::OK();
  }));
  std::sort(counted.begin(), counted.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  for (size_t i = 0; i < counted.size() && static_cast<int>(i) < n; ++i)
    out.push_back(std::move(counted[i].second));
  return out;
}

Result<PageOf<Run>> RunTracking::search_runs(const SearchRunsRequest& req) {
  DLSYS_RETURN_IF_ERROR(check_page_size(req.page_size));
  sweep_before_read();
  SqlParams params;
  DLSYS_ASSIGN_OR_RETURN(std::string where, compile_run_filter(req.filter, &params));
  DLSYS_ASSIGN_OR_RETURN(RunOrder order, parse_run_order(req.order_by, &params));
  if (!req.experiment_ids.empty())
    where += (where.empty() ? "" : " AND ") +
             ("runs.experiment_id IN (" + in_list(req.experiment_ids) + ")");
  if (req.run_ids.size() > kMaxSearchRunIds)
    return Status::Invalid("{} run_ids in one search; at most {}: ask in parts", req.run_ids.size(),
                           kMaxSearchRunIds);
  if (!req.run_ids.empty())
    where += (where.empty() ? "" : " AND ") + ("runs.id IN (" + in_list(req.run_ids) + ")");
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
  const int64_t want = req.page_size + 1;
  PageOf<Run> page;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    page = {};
    std::vector<SqlRow> rows;
    if (order.key_table.empty()) {
      DLSYS_ASSIGN_OR_RETURN(
          rows, c.query(std::string("SELECT ") + kRunColumns + " FROM runs" + order.join +
                            (where.empty() ? "" : " WHERE " + where) + " ORDER BY " + order.sql +
                            fmt::format(" LIMIT {} OFFSET {}", want, offset),
                        params));
    } else {
      // The same order as order.sql in two reads: the runs with the key, by value on the key
      // table's index; then, when the page goes past them, the runs without it by id.
      const std::string and_where = where.empty() ? "" : " AND " + where;
      DLSYS_ASSIGN_OR_RETURN(
          rows, c.query(fmt::format("SELECT {} FROM {} o JOIN runs ON runs.id = o.run_id WHERE "
                                    "o.key = {}{} ORDER BY o.value {}, o.run_id {} LIMIT {} "
                                    "OFFSET {}",
                                    kRunColumns, order.key_table, order.key_placeholder, and_where,
                                    order.dir, order.dir, want, offset),
                        params));
      if (static_cast<int64_t>(rows.size()) < want) {
        // How many runs have the key: the offset and the rows read tell, unless the offset is
        // past them all.
        int64_t with_key = offset + static_cast<int64_t>(rows.size());
        if (rows.empty() && offset > 0) {
          DLSYS_ASSIGN_OR_RETURN(
              auto n, c.query(fmt::format("SELECT COUNT(*) FROM {} o JOIN runs ON runs.id = "
                                          "o.run_id WHERE o.key = {}{}",
                                          order.key_table, order.key_placeholder, and_where),
                              params));
          with_key = sql_int(n.at(0).at(0));
        }
        DLSYS_ASSIGN_OR_RETURN(
            auto rest,
            c.query(fmt::format("SELECT {} FROM runs WHERE NOT EXISTS (SELECT 1 FROM {} o WHERE "
                                "o.run_id = runs.id AND o.key = {}){} ORDER BY runs.id {} LIMIT "
                                "{} OFFSET {}",
                                kRunColumns, order.key_table, order.key_placeholder, and_where,
                                order.dir, want - static_cast<int64_t>(rows.size()),
                                std::max<int64_t>(0, offset - with_key)),
                    params));
        for (auto& r : rest) rows.push_back(std::move(r));
      }
    }
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

Status RunTracking::record_artifact(int64_t run_id, const ArtifactRecord& a, const Principal& who) {
  DLSYS_RETURN_IF_ERROR(check_artifact_path(a.path));
  return db_.tx(true, [&](SqlConnection& c) -> Status {
    const int64_t t = now();
    DLSYS_ASSIGN_OR_RETURN(
        auto r,
        c.query("UPDATE runs SET heartbeat_at = $1 WHERE id = $2 RETURNING id", {t, run_id}));
    if (r.empty()) return Status::NotFound("run {} does not exist", run_id);
    DLSYS_RETURN_IF_ERROR(c.exec(
        "INSERT INTO artifacts (run_id, path, sha256, size, created_at) VALUES ($1,$2,$3,$4,$5) "
        "ON CONFLICT (run_id, path) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size, "
        "created_at = excluded.created_at",
        {run_id, a.path, a.sha256, a.size, t}));
    return audit(c, who, "artifact.put", "run/" + std::to_string(run_id) + "/" + a.path,
                 {{"sha256", a.sha256}, {"size", a.size}});
  });
}

Result<ArtifactRecord> RunTracking::get_artifact(int64_t run_id, const std::string& path) {
  DLSYS_RETURN_IF_ERROR(check_artifact_path(path));
  ArtifactRecord out;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("SELECT path, sha256, size FROM artifacts WHERE "
                                              "run_id = $1 AND path = $2",
                                              {run_id, path}));
    if (rows.empty()) return Status::NotFound("run {} has no artifact '{}'", run_id, path);
    out = {sql_text(rows[0][0]), sql_text(rows[0][1]), sql_int(rows[0][2])};
    return Status::OK();
  }));
  return out;
}

Result<std::vector<ArtifactInfo>> RunTracking::list_artifacts(int64_t run_id,
                                                              const std::string& prefix) {
  std::vector<ArtifactInfo> out;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    out.clear();
    DLSYS_ASSIGN_OR_RETURN(auto r, c.query("SELECT id FROM runs WHERE id = $1", {run_id}));
    if (r.empty()) return Status::NotFound("run {} does not exist", run_id);
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("SELECT path, sha256, size, created_at FROM "
                                              "artifacts WHERE run_id = $1 ORDER BY path",
                                              {run_id}));
    for (auto& row : rows) {
      std::string p = sql_text(row[0]);
      if (p.rfind(prefix, 0) != 0) continue;
      out.push_back({p, sql_text(row[1]), sql_int(row[2]), sql_int(row[3])});
    }
    return Status::OK();
  }));
  return out;
}

}  // namespace dlsys::meta
