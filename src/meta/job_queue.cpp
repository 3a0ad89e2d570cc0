#include "meta/job_queue.h"

#include <algorithm>
#include <optional>

#include "core/file_util.h"

namespace dlsys::meta {
namespace {

constexpr size_t kMaxSpecBytes = 64 << 10;

const char* kColumns =
    "id, name, kind, owner, spec, state, priority, threads, memory_bytes, max_retries, attempts, "
    "not_before, run_id, pid, created_at, started_at, ended_at, heartbeat_at, cancel_requested, "
    "end_reason, cpu_ms, core_ms, peak_memory_bytes, runner";

Result<Job> row_to_job(const SqlRow& r) {
  Job j;
  j.id = sql_int(r[0]);
  j.name = sql_text(r[1]);
  j.kind = sql_text(r[2]);
  j.owner = sql_text(r[3]);
  j.spec = json::parse(sql_text(r[4]), nullptr, false);
  if (!j.spec.is_object())
    return Status::Internal("the stored spec of job {} is not a JSON object", j.id);
  j.state = sql_text(r[5]);
  j.priority = sql_int(r[6]);
  j.threads = sql_int(r[7]);
  j.memory_bytes = sql_int(r[8]);
  j.max_retries = sql_int(r[9]);
  j.attempts = sql_int(r[10]);
  j.not_before = sql_int(r[11]);
  j.run_id = sql_is_null(r[12]) ? 0 : sql_int(r[12]);
  j.pid = sql_int(r[13]);
  j.created_at = sql_int(r[14]);
  j.started_at = sql_int(r[15]);
  j.ended_at = sql_int(r[16]);
  j.heartbeat_at = sql_int(r[17]);
  j.cancel_requested = sql_int(r[18]) != 0;
  j.end_reason = sql_text(r[19]);
  j.cpu_ms = sql_int(r[20]);
  j.core_ms = sql_int(r[21]);
  j.peak_memory_bytes = sql_int(r[22]);
  j.runner = sql_text(r[23]);
  return j;
}

Result<std::vector<Job>> rows_to_jobs(const std::vector<SqlRow>& rows) {
  std::vector<Job> out;
  for (const auto& r : rows) {
    DLSYS_ASSIGN_OR_RETURN(Job j, row_to_job(r));
    out.push_back(std::move(j));
  }
  return out;
}

Status check(const NewJob& j) {
  if (j.name.empty() || j.name.size() > kMaxKeyLength)
    return Status::Invalid("a job name must be 1..{} characters, got {}", kMaxKeyLength,
                           j.name.size());
  if (!valid_name(j.kind, 32, false))
    return Status::Invalid("job kind '{}' must be 1..32 of [A-Za-z0-9_-]", j.kind.substr(0, 32));
  if (!j.spec.is_object()) return Status::Invalid("a job spec must be a JSON object");
  if (j.spec.dump().size() > kMaxSpecBytes)
    return Status::Invalid("the job spec is over {} KiB", kMaxSpecBytes >> 10);
  if (j.threads < 1) return Status::Invalid("a job needs at least 1 thread, got {}", j.threads);
  if (j.memory_bytes < 0 || j.max_retries < 0)
    return Status::Invalid("memory_bytes ({}) and max_retries ({}) must not be negative",
                           j.memory_bytes, j.max_retries);
  return Status::OK();
}

Status check_state(const std::string& s) {
  if (s.empty() || s == "QUEUED" || s == "RUNNING" || s == "SUCCEEDED" || s == "FAILED" ||
      s == "CANCELLED")
    return Status::OK();
  return Status::Invalid(
      "job state '{}' is not one of QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED",
      s.substr(0, 32));
}

}  // namespace

void to_json(json& j, const Job& job) {
  j = {{"id", job.id},
       {"name", job.name},
       {"kind", job.kind},
       {"owner", job.owner},
       {"spec", job.spec},
       {"state", job.state},
       {"priority", job.priority},
       {"threads", job.threads},
       {"memory_bytes", job.memory_bytes},
       {"max_retries", job.max_retries},
       {"attempts", job.attempts},
       {"not_before", job.not_before},
       {"run_id", job.run_id},
       {"pid", job.pid},
       {"created_at", job.created_at},
       {"started_at", job.started_at},
       {"ended_at", job.ended_at},
       {"heartbeat_at", job.heartbeat_at},
       {"cancel_requested", job.cancel_requested},
       {"end_reason", job.end_reason},
       {"cpu_seconds", static_cast<double>(job.cpu_ms) / 1000.0},
       {"core_seconds", static_cast<double>(job.core_ms) / 1000.0},
       {"peak_memory_bytes", job.peak_memory_bytes},
       {"runner", job.runner}};
}

void to_json(json& j, const JobUsage& u) {
  j = {{"key", u.key},
       {"jobs", u.jobs},
       {"attempts", u.attempts},
       {"core_seconds", static_cast<double>(u.core_ms) / 1000.0},
       {"cpu_seconds", static_cast<double>(u.cpu_ms) / 1000.0},
       {"peak_memory_bytes", u.peak_memory_bytes}};
}

Result<int64_t> JobQueue::submit_in(SqlConnection& c, const NewJob& j, const Principal& who) {
  DLSYS_RETURN_IF_ERROR(check(j));
  DLSYS_ASSIGN_OR_RETURN(
      auto rows,
      c.query("INSERT INTO jobs (name, kind, owner, spec, state, priority, threads, "
              "memory_bytes, max_retries, created_at) VALUES ($1,$2,$3,$4,'QUEUED',$5,$6,$7,$8,"
              "$9) RETURNING id",
              {j.name, j.kind, who.name, j.spec.dump(), j.priority, j.threads, j.memory_bytes,
               j.max_retries, now_ms()}));
  const int64_t id = sql_int(rows.at(0)[0]);
  DLSYS_RETURN_IF_ERROR(audit(c, who, "job.submit", "job/" + std::to_string(id),
                              {{"name", j.name}, {"kind", j.kind}}));
  return id;
}

Result<Job> JobQueue::submit(const NewJob& j, const Principal& who) {
  DLSYS_RETURN_IF_ERROR(check(j));
  int64_t id = 0;
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(id, submit_in(c, j, who));
    return Status::OK();
  }));
  return get(id);
}

Status JobQueue::rerun_in(SqlConnection& c, int64_t id, const json& spec,
                          const std::string& reason) {
  if (!spec.is_object() || spec.dump().size() > kMaxSpecBytes)
    return Status::Invalid("job {}: a spec must be a JSON object under {} KiB", id,
                           kMaxSpecBytes >> 10);
  DLSYS_ASSIGN_OR_RETURN(auto rows,
                         c.query("UPDATE jobs SET state = 'QUEUED', spec = $2, attempts = 0, "
                                 "not_before = 0, started_at = 0, ended_at = 0, pid = 0, "
                                 "cancel_requested = 0, end_reason = $3 WHERE id = $1 AND "
                                 "state = 'SUCCEEDED' RETURNING id",
                                 {id, spec.dump(), reason}));
  if (rows.empty())
    return Status::FailedPrecondition("job {} is not SUCCEEDED: only a finished job runs again",
                                      id);
  return Status::OK();
}

Result<Job> JobQueue::get(int64_t id) {
  Result<Job> out =
      Status::NotFound("job {} does not exist; list the jobs with `dlsys jobs list`", id);
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(
        auto rows, c.query(std::string("SELECT ") + kColumns + " FROM jobs WHERE id = $1", {id}));
    if (!rows.empty()) out = row_to_job(rows[0]);
    return Status::OK();
  }));
  return out;
}

Result<PageOf<Job>> JobQueue::list(const std::string& state, const std::string& owner,
                                   int page_size, const std::string& page_token) {
  DLSYS_RETURN_IF_ERROR(check_page_size(page_size));
  DLSYS_RETURN_IF_ERROR(check_state(state));
  int64_t before = INT64_MAX;
  if (!page_token.empty()) {
    DLSYS_ASSIGN_OR_RETURN(before, int_token(page_token, "j:"));
  }
  PageOf<Job> page;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    page = {};
    DLSYS_ASSIGN_OR_RETURN(auto rows,
                           c.query(std::string("SELECT ") + kColumns +
                                       " FROM jobs WHERE id < $1 AND ($2 = '' OR state = $2) AND "
                                       "($3 = '' OR owner = $3) ORDER BY id DESC LIMIT $4",
                                   {before, state, owner, int64_t{page_size} + 1}));
    for (size_t i = 0; i < rows.size() && i < static_cast<size_t>(page_size); ++i) {
      DLSYS_ASSIGN_OR_RETURN(Job j, row_to_job(rows[i]));
      page.items.push_back(std::move(j));
    }
    if (rows.size() > static_cast<size_t>(page_size))
      page.next_page_token = "j:" + std::to_string(page.items.back().id);
    return Status::OK();
  }));
  return page;
}

Result<std::vector<Job>> JobQueue::runnable(int64_t now) {
  std::vector<Job> out;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto rows,
                           c.query(std::string("SELECT ") + kColumns +
                                       " FROM jobs WHERE state = 'QUEUED' AND not_before <= $1 "
                                       "ORDER BY priority DESC, created_at, id",
                                   {now}));
    DLSYS_ASSIGN_OR_RETURN(out, rows_to_jobs(rows));
    return Status::OK();
  }));
  return out;
}

Result<std::vector<Job>> JobQueue::running() {
  std::vector<Job> out;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query(std::string("SELECT ") + kColumns +
                                                  " FROM jobs WHERE state = 'RUNNING' "
                                                  "ORDER BY started_at, id",
                                              {}));
    DLSYS_ASSIGN_OR_RETURN(out, rows_to_jobs(rows));
    return Status::OK();
  }));
  return out;
}

Result<std::map<std::string, double>> JobQueue::usage_by_owner(int64_t since, int64_t now) {
  std::map<std::string, double> out;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    out.clear();
    // Each attempt's span clipped to [since, now]: the end is ended_at, or now while it runs.
    DLSYS_ASSIGN_OR_RETURN(
        auto rows,
        c.query("SELECT owner, SUM(threads * (CASE WHEN state = 'RUNNING' THEN $2 ELSE ended_at "
                "END - CASE WHEN started_at > $1 THEN started_at ELSE $1 END)) FROM jobs "
                "WHERE started_at > 0 AND (state = 'RUNNING' OR ended_at > $1) GROUP BY owner",
                {since, now}));
    for (const auto& r : rows) out[sql_text(r[0])] = static_cast<double>(sql_int(r[1])) / 1000.0;
    return Status::OK();
  }));
  return out;
}

Status JobQueue::add_usage(int64_t id, int64_t cpu_ms, int64_t core_ms, int64_t peak_bytes) {
  if (cpu_ms < 0 || core_ms < 0 || peak_bytes < 0)
    return Status::Invalid("job {}: usage must not be negative", id);
  return db_.tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(
        auto rows,
        c.query("UPDATE jobs SET cpu_ms = cpu_ms + $2, core_ms = core_ms + $3, peak_memory_bytes = "
                "CASE WHEN peak_memory_bytes < $4 THEN $4 ELSE peak_memory_bytes END WHERE id = $1 "
                "RETURNING id",
                {id, cpu_ms, core_ms, peak_bytes}));
    if (rows.empty()) return Status::NotFound("no job {}; `dlsys jobs list` lists them", id);
    return Status::OK();
  });
}

Result<std::vector<JobUsage>> JobQueue::usage(const std::string& by, int64_t since_ms) {
  std::string key, from = " FROM jobs j", where = " WHERE j.created_at >= $1";
  if (by == "owner") {
    key = "j.owner";
  } else if (by == "run") {
    key = "CAST(j.run_id AS TEXT)";
    where += " AND j.run_id IS NOT NULL";
  } else if (by == "model") {
    // The model versions registered from a job's run.
    key = "m.name || '@' || CAST(v.version AS TEXT)";
    from +=
        " JOIN model_versions v ON v.run_id = j.run_id JOIN registered_models m ON "
        "m.id = v.model_id";
  } else {
    return Status::Invalid("usage by '{}': use owner, run or model", by);
  }
  std::vector<JobUsage> out;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    out.clear();
    DLSYS_ASSIGN_OR_RETURN(
        auto rows, c.query("SELECT " + key +
                               ", COUNT(*), SUM(j.attempts), SUM(j.core_ms), SUM(j.cpu_ms), "
                               "MAX(j.peak_memory_bytes)" +
                               from + where + " GROUP BY " + key + " ORDER BY " + key,
                           {since_ms}));
    for (const auto& r : rows) {
      JobUsage u;
      u.key = sql_text(r[0]);
      u.jobs = sql_int(r[1]);
      u.attempts = sql_int(r[2]);
      u.core_ms = sql_int(r[3]);
      u.cpu_ms = sql_int(r[4]);
      u.peak_memory_bytes = sql_int(r[5]);
      out.push_back(std::move(u));
    }
    return Status::OK();
  }));
  return out;
}

namespace {

// The WHERE conditions of `g` (job_queue.h), its values appended to `params`.
std::string guard_sql(const AttemptGuard& g, SqlParams& params) {
  std::string sql;
  if (!g.runner.empty() || g.started_at != 0) {
    params.push_back(g.runner);
    sql += fmt::format(" AND runner = ${}", params.size());
    params.push_back(g.started_at);
    sql += fmt::format(" AND started_at = ${}", params.size());
  }
  if (g.stale_before > 0) {
    params.push_back(g.stale_before);
    sql += fmt::format(" AND heartbeat_at < ${}", params.size());
  }
  return sql;
}

}  // namespace

Result<Job> JobQueue::transition(int64_t id, const std::string& update, SqlParams params,
                                 const std::string& not_done, const AttemptGuard& guard,
                                 const Principal* who, const json& audit_detail) {
  // The guard's conditions join the update's own WHERE (its last clause).
  const std::string sql = update + guard_sql(guard, params) + " RETURNING " + kColumns;
  std::optional<Job> changed;
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    changed.reset();
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query(sql, params));
    if (rows.empty()) return Status::OK();
    DLSYS_ASSIGN_OR_RETURN(Job j, row_to_job(rows[0]));
    changed = std::move(j);
    // The audit record commits with the change it records.
    if (!who) return Status::OK();
    return audit(c, *who, "job.cancel", "job/" + std::to_string(id), audit_detail);
  }));
  if (changed) return *changed;
  DLSYS_ASSIGN_OR_RETURN(Job j, get(id));  // NotFound, or the state that refused the change
  return Status::FailedPrecondition("job {} is {}: {}", id, j.state, not_done);
}

Result<Job> JobQueue::start(int64_t id, int64_t pid, int64_t now, const std::string& runner) {
  return transition(id,
                    "UPDATE jobs SET state = 'RUNNING', attempts = attempts + 1, pid = $2, "
                    "started_at = $3, heartbeat_at = $3, end_reason = '', runner = $4 "
                    "WHERE id = $1 AND state = 'QUEUED'",
                    {id, pid, now, runner}, "only a QUEUED job starts");
}

Status JobQueue::heartbeat(int64_t id, int64_t now, const AttemptGuard& guard) {
  return transition(id, "UPDATE jobs SET heartbeat_at = $2 WHERE id = $1 AND state = 'RUNNING'",
                    {id, now}, "only a RUNNING job's current attempt heartbeats", guard)
      .status();
}

Result<Job> JobQueue::adopt(int64_t id, const std::string& runner, int64_t now,
                            const AttemptGuard& guard) {
  return transition(id,
                    "UPDATE jobs SET runner = $2, heartbeat_at = $3 WHERE id = $1 AND state = "
                    "'RUNNING'",
                    {id, runner, now}, "only a RUNNING job's current attempt is adopted", guard);
}

Status JobQueue::set_pid(int64_t id, int64_t pid) {
  return transition(id, "UPDATE jobs SET pid = $2 WHERE id = $1 AND state = 'RUNNING'", {id, pid},
                    "only a RUNNING job has a process")
      .status();
}

Status JobQueue::set_run(int64_t id, int64_t run_id) {
  return transition(id, "UPDATE jobs SET run_id = $2 WHERE id = $1", {id, run_id},
                    "it does not exist")
      .status();
}

Result<Job> JobQueue::finish(int64_t id, bool succeeded, const std::string& reason, int64_t now,
                             const AttemptGuard& guard) {
  return transition(id,
                    "UPDATE jobs SET state = $2, end_reason = $3, ended_at = $4, pid = 0 "
                    "WHERE id = $1 AND state = 'RUNNING'",
                    {id, std::string(succeeded ? "SUCCEEDED" : "FAILED"), reason, now},
                    "only a RUNNING job's current attempt finishes", guard);
}

Result<Job> JobQueue::retry_or_fail(int64_t id, const std::string& reason, int64_t now,
                                    int64_t backoff_ms, const AttemptGuard& guard) {
  // One statement decides: attempts so far <= max_retries means another attempt is allowed.
  return transition(id,
                    "UPDATE jobs SET end_reason = $2, pid = 0, "
                    "state = CASE WHEN attempts <= max_retries THEN 'QUEUED' ELSE 'FAILED' END, "
                    "not_before = CASE WHEN attempts <= max_retries THEN $3 ELSE not_before END, "
                    "ended_at = CASE WHEN attempts <= max_retries THEN 0 ELSE $4 END, "
                    "started_at = CASE WHEN attempts <= max_retries THEN 0 ELSE started_at END "
                    "WHERE id = $1 AND state = 'RUNNING'",
                    {id, reason, now + std::max<int64_t>(0, backoff_ms), now},
                    "only a RUNNING job's current attempt is retried", guard);
}

Result<Job> JobQueue::requeue_interrupted(int64_t id, const std::string& reason,
                                          const AttemptGuard& guard) {
  return transition(
      id,
      "UPDATE jobs SET state = 'QUEUED', attempts = attempts - 1, pid = 0, started_at = 0, "
      "end_reason = $2 WHERE id = $1 AND state = 'RUNNING'",
      {id, reason}, "only a RUNNING job's current attempt is requeued", guard);
}

Result<Job> JobQueue::cancel(int64_t id, const Principal& who) {
  DLSYS_ASSIGN_OR_RETURN(Job j, get(id));
  if (who.role != Role::kAdmin && !(who.role == Role::kEditor && who.name == j.owner))
    return Status::PermissionDenied(
        "job {} belongs to '{}': only its owner (as an editor) or an admin may cancel it", id,
        j.owner);
  if (j.state == "QUEUED")
    return transition(id,
                      "UPDATE jobs SET state = 'CANCELLED', ended_at = $2, "
                      "end_reason = 'cancelled by ' || $3 WHERE id = $1 AND state = 'QUEUED'",
                      {id, now_ms(), who.name}, "it left the queue before the cancel", {}, &who,
                      {{"state", j.state}});
  if (j.state == "RUNNING")
    return transition(id,
                      "UPDATE jobs SET cancel_requested = 1, end_reason = 'cancelled by ' || $2 "
                      "WHERE id = $1 AND state = 'RUNNING'",
                      {id, who.name}, "it ended before the cancel", {}, &who, {{"state", j.state}});
  return Status::FailedPrecondition("job {} has already ended ({})", id, j.state);
}

Result<Job> JobQueue::mark_cancelled(int64_t id, int64_t now, const AttemptGuard& guard) {
  return transition(id,
                    "UPDATE jobs SET state = 'CANCELLED', ended_at = $2, pid = 0 "
                    "WHERE id = $1 AND state = 'RUNNING' AND cancel_requested = 1",
                    {id, now}, "only a RUNNING job asked to cancel becomes CANCELLED", guard);
}

}  // namespace dlsys::meta
