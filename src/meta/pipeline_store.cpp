#include "meta/pipeline_store.h"

#include "core/file_util.h"

namespace dlsys::meta {
namespace {

constexpr size_t kMaxSpecBytes = 256 << 10;
constexpr size_t kMaxValueBytes = 1 << 20;  // a step's inputs or outputs: references, not data

const char* kPipelineColumns = "id, name, owner, spec_text, version, created_at, updated_at";
const char* kRunColumns =
    "r.id, r.pipeline_id, p.name, r.pipeline_version, r.owner, r.spec_text, r.params, r.state, "
    "r.trigger_kind, r.event_id, r.no_cache, r.attempt, r.created_at, r.ended_at, "
    "r.cancel_requested, r.end_reason";
const char* kRunFrom = " FROM pipeline_runs r JOIN pipelines p ON p.id = r.pipeline_id ";
const char* kStepColumns =
    "run_id, step, item, state, attempts, job_id, inputs, outputs, cache_key, cached, "
    "not_before, started_at, ended_at, end_reason, runner, heartbeat_at";

Pipeline row_to_pipeline(const SqlRow& r) {
  Pipeline p;
  p.id = sql_int(r[0]);
  p.name = sql_text(r[1]);
  p.owner = sql_text(r[2]);
  p.spec_text = sql_text(r[3]);
  p.version = sql_int(r[4]);
  p.created_at = sql_int(r[5]);
  p.updated_at = sql_int(r[6]);
  return p;
}

Result<PipelineRun> row_to_run(const SqlRow& r) {
  PipelineRun run;
  run.id = sql_int(r[0]);
  run.pipeline_id = sql_int(r[1]);
  run.pipeline = sql_text(r[2]);
  run.pipeline_version = sql_int(r[3]);
  run.owner = sql_text(r[4]);
  run.spec_text = sql_text(r[5]);
  run.params = json::parse(sql_text(r[6]), nullptr, false);
  if (!run.params.is_object())
    return Status::Internal("the stored parameters of pipeline run {} are not a JSON object",
                            run.id);
  run.state = sql_text(r[7]);
  run.trigger = sql_text(r[8]);
  run.event_id = sql_is_null(r[9]) ? "" : sql_text(r[9]);
  run.no_cache = sql_int(r[10]) != 0;
  run.attempt = sql_int(r[11]);
  run.created_at = sql_int(r[12]);
  run.ended_at = sql_int(r[13]);
  run.cancel_requested = sql_int(r[14]) != 0;
  run.end_reason = sql_text(r[15]);
  return run;
}

Result<StepRun> row_to_step(const SqlRow& r) {
  StepRun s;
  s.run_id = sql_int(r[0]);
  s.step = sql_text(r[1]);
  s.item = sql_int(r[2]);
  s.state = sql_text(r[3]);
  s.attempts = sql_int(r[4]);
  s.job_id = sql_int(r[5]);
  s.inputs = json::parse(sql_text(r[6]), nullptr, false);
  s.outputs = json::parse(sql_text(r[7]), nullptr, false);
  if (!s.inputs.is_object() || !s.outputs.is_object())
    return Status::Internal("step '{}' of pipeline run {} is stored malformed", s.step, s.run_id);
  s.cache_key = sql_text(r[8]);
  s.cached = sql_int(r[9]) != 0;
  s.not_before = sql_int(r[10]);
  s.started_at = sql_int(r[11]);
  s.ended_at = sql_int(r[12]);
  s.end_reason = sql_text(r[13]);
  s.runner = sql_text(r[14]);
  s.heartbeat_at = sql_int(r[15]);
  return s;
}

Status check_step(const StepRun& s) {
  static const char* kStates[] = {"PENDING", "RUNNING", "SUCCEEDED",
                                  "FAILED",  "SKIPPED", "CANCELLED"};
  bool known = false;
  for (const char* k : kStates) known = known || s.state == k;
  if (!known) return Status::Invalid("step state '{}' is not a known one", s.state.substr(0, 32));
  if (!s.inputs.is_object() || !s.outputs.is_object())
    return Status::Invalid("step '{}': inputs and outputs must be JSON objects", s.step);
  if (s.inputs.dump().size() > kMaxValueBytes || s.outputs.dump().size() > kMaxValueBytes)
    return Status::Invalid(
        "step '{}': its inputs or outputs are over {} KiB; steps pass references (a dataset or "
        "model version, an artifact), not data",
        s.step, kMaxValueBytes >> 10);
  return Status::OK();
}

SqlParams step_params(const StepRun& s) {
  return {s.run_id,      s.step,          s.item,           s.state,      s.attempts,
          s.job_id,      s.inputs.dump(), s.outputs.dump(), s.cache_key,  int64_t{s.cached},
          s.not_before,  s.started_at,    s.ended_at,       s.end_reason, s.runner,
          s.heartbeat_at};
}

const char* kInsertStep =
    "INSERT INTO pipeline_steps (run_id, step, item, state, attempts, job_id, inputs, outputs, "
    "cache_key, cached, not_before, started_at, ended_at, end_reason, runner, heartbeat_at) "
    "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16) ON CONFLICT DO NOTHING "
    "RETURNING run_id";

Status check_run_state(const std::string& s) {
  if (s.empty() || s == "RUNNING" || s == "SUCCEEDED" || s == "FAILED" || s == "CANCELLED")
    return Status::OK();
  return Status::Invalid(
      "pipeline run state '{}' is not one of RUNNING, SUCCEEDED, FAILED, CANCELLED",
      s.substr(0, 32));
}

}  // namespace

void to_json(json& j, const Pipeline& p) {
  j = {{"id", p.id},
       {"name", p.name},
       {"owner", p.owner},
       {"spec_text", p.spec_text},
       {"version", p.version},
       {"created_at", p.created_at},
       {"updated_at", p.updated_at}};
}

void to_json(json& j, const PipelineRun& r) {
  j = {{"id", r.id},
       {"pipeline_id", r.pipeline_id},
       {"pipeline", r.pipeline},
       {"pipeline_version", r.pipeline_version},
       {"owner", r.owner},
       {"params", r.params},
       {"state", r.state},
       {"trigger", r.trigger},
       {"event_id", r.event_id},
       {"no_cache", r.no_cache},
       {"attempt", r.attempt},
       {"created_at", r.created_at},
       {"ended_at", r.ended_at},
       {"cancel_requested", r.cancel_requested},
       {"end_reason", r.end_reason}};
}

void to_json(json& j, const StepRun& s) {
  j = {{"step", s.step},
       {"runner", s.runner},
       {"heartbeat_at", s.heartbeat_at},
       {"item", s.item},
       {"state", s.state},
       {"attempts", s.attempts},
       {"job_id", s.job_id},
       {"inputs", s.inputs},
       {"outputs", s.outputs},
       {"cache_key", s.cache_key},
       {"cached", s.cached},
       {"not_before", s.not_before},
       {"started_at", s.started_at},
       {"ended_at", s.ended_at},
       {"end_reason", s.end_reason}};
}

Result<Pipeline> PipelineStore::put_pipeline(const std::string& name, const std::string& spec_text,
                                             const Principal& who) {
  if (!valid_name(name, 64, false))
    return Status::Invalid("pipeline name '{}' must be 1..64 letters, digits, '_' or '-'",
                           name.substr(0, 80));
  if (spec_text.size() > kMaxSpecBytes)
    return Status::Invalid("the pipeline spec is {} KiB, over the limit of {} KiB",
                           spec_text.size() >> 10, kMaxSpecBytes >> 10);
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    const int64_t now = now_ms();
    DLSYS_ASSIGN_OR_RETURN(
        auto rows, c.query("SELECT spec_text, version FROM pipelines WHERE name = $1", {name}));
    if (rows.empty()) {
      DLSYS_RETURN_IF_ERROR(
          c.exec("INSERT INTO pipelines (name, owner, spec_text, version, created_at, "
                 "updated_at) VALUES ($1,$2,$3,1,$4,$4)",
                 {name, who.name, spec_text, now}));
    } else if (sql_text(rows[0][0]) != spec_text) {
      DLSYS_RETURN_IF_ERROR(
          c.exec("UPDATE pipelines SET spec_text = $2, version = version + 1, updated_at = $3 "
                 "WHERE name = $1",
                 {name, spec_text, now}));
    } else {
      return Status::OK();  // unchanged: no new version, nothing to audit
    }
    return audit(c, who, "pipeline.put", "pipeline/" + name, json::object());
  }));
  return get_pipeline(name);
}

Result<Pipeline> PipelineStore::get_pipeline(const std::string& name) {
  Result<Pipeline> out = Status::NotFound(
      "pipeline '{}' does not exist; list them with `dlsys pipelines list`, create one with "
      "`dlsys pipelines create SPEC.yaml`",
      name.substr(0, 80));
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query(std::string("SELECT ") + kPipelineColumns +
                                                  " FROM pipelines WHERE name = $1",
                                              {name}));
    if (!rows.empty()) out = row_to_pipeline(rows[0]);
    return Status::OK();
  }));
  return out;
}

Result<std::vector<Pipeline>> PipelineStore::list_pipelines() {
  std::vector<Pipeline> out;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    out.clear();
    DLSYS_ASSIGN_OR_RETURN(
        auto rows,
        c.query(std::string("SELECT ") + kPipelineColumns + " FROM pipelines ORDER BY name", {}));
    for (const auto& r : rows) out.push_back(row_to_pipeline(r));
    return Status::OK();
  }));
  return out;
}

Result<PipelineRun> PipelineStore::create_run(const std::string& name, const json& params,
                                              const std::string& trigger,
                                              const std::string& event_id, bool no_cache,
                                              const Principal& who, bool* created,
                                              const Pipeline* as_read) {
  if (!params.is_object() || params.dump().size() > kMaxValueBytes)
    return Status::Invalid("a pipeline run's parameters must be a JSON object under {} KiB",
                           kMaxValueBytes >> 10);
  if (event_id.size() > kMaxKeyLength)
    return Status::Invalid("an event id must be at most {} characters, got {}", kMaxKeyLength,
                           event_id.size());
  Pipeline p;
  if (as_read) {
    p = *as_read;
  } else {
    DLSYS_ASSIGN_OR_RETURN(p, get_pipeline(name));
  }
  int64_t id = 0;
  bool made = false;
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    made = false;
    if (!event_id.empty()) {
      DLSYS_ASSIGN_OR_RETURN(auto seen,
                             c.query("SELECT id FROM pipeline_runs WHERE pipeline_id = $1 AND "
                                     "event_id = $2",
                                     {p.id, event_id}));
      if (!seen.empty()) {
        id = sql_int(seen[0][0]);
        return Status::OK();
      }
    }
    // The unique index on (pipeline_id, event_id) settles a race between two servers: the
    // loser's insert does nothing and it reads the winner's run.
    DLSYS_ASSIGN_OR_RETURN(
        auto rows,
        c.query("INSERT INTO pipeline_runs (pipeline_id, pipeline_version, owner, spec_text, "
                "params, state, trigger_kind, event_id, no_cache, created_at) VALUES "
                "($1,$2,$3,$4,$5,'RUNNING',$6,$7,$8,$9) ON CONFLICT DO NOTHING RETURNING id",
                {p.id, p.version, who.name, p.spec_text, params.dump(), trigger,
                 event_id.empty() ? SqlValue() : SqlValue(event_id), int64_t{no_cache}, now_ms()}));
    if (rows.empty()) return Status::Unavailable("another server started this event's run");
    id = sql_int(rows[0][0]);
    made = true;
    return audit(c, who, "pipeline.run", "pipeline_run/" + std::to_string(id),
                 {{"pipeline", name}, {"trigger", trigger}, {"event_id", event_id}});
  }));
  if (created) *created = made;
  return get_run(id);
}

Result<PipelineRun> PipelineStore::get_run(int64_t id) {
  Result<PipelineRun> out =
      Status::NotFound("pipeline run {} does not exist; list them with `dlsys pipelines runs`", id);
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(
        auto rows,
        c.query(std::string("SELECT ") + kRunColumns + kRunFrom + "WHERE r.id = $1", {id}));
    if (!rows.empty()) out = row_to_run(rows[0]);
    return Status::OK();
  }));
  return out;
}

Result<PageOf<PipelineRun>> PipelineStore::list_runs(const std::string& pipeline,
                                                     const std::string& state, int page_size,
                                                     const std::string& page_token) {
  DLSYS_RETURN_IF_ERROR(check_page_size(page_size));
  DLSYS_RETURN_IF_ERROR(check_run_state(state));
  int64_t before = INT64_MAX;
  if (!page_token.empty()) {
    DLSYS_ASSIGN_OR_RETURN(before, int_token(page_token, "p:"));
  }
  PageOf<PipelineRun> page;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    page = {};
    DLSYS_ASSIGN_OR_RETURN(
        auto rows, c.query(std::string("SELECT ") + kRunColumns + kRunFrom +
                               "WHERE r.id < $1 AND ($2 = '' OR p.name = $2) AND ($3 = '' OR "
                               "r.state = $3) ORDER BY r.id DESC LIMIT $4",
                           {before, pipeline, state, int64_t{page_size} + 1}));
    for (size_t i = 0; i < rows.size() && i < static_cast<size_t>(page_size); ++i) {
      DLSYS_ASSIGN_OR_RETURN(PipelineRun r, row_to_run(rows[i]));
      page.items.push_back(std::move(r));
    }
    if (rows.size() > static_cast<size_t>(page_size))
      page.next_page_token = "p:" + std::to_string(page.items.back().id);
    return Status::OK();
  }));
  return page;
}

Result<std::vector<PipelineRun>> PipelineStore::running_runs() {
  std::vector<PipelineRun> out;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    out.clear();
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query(std::string("SELECT ") + kRunColumns + kRunFrom +
                                                  "WHERE r.state = 'RUNNING' ORDER BY r.id",
                                              {}));
    for (const auto& r : rows) {
      DLSYS_ASSIGN_OR_RETURN(PipelineRun run, row_to_run(r));
      out.push_back(std::move(run));
    }
    return Status::OK();
  }));
  return out;
}

Result<PipelineRun> PipelineStore::finish_run(int64_t id, const std::string& state,
                                              const std::string& reason) {
  if (state != "SUCCEEDED" && state != "FAILED" && state != "CANCELLED")
    return Status::Invalid("a pipeline run ends SUCCEEDED, FAILED or CANCELLED, not '{}'", state);
  bool changed = false;
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(
        auto rows, c.query("UPDATE pipeline_runs SET state = $2, end_reason = $3, ended_at = $4 "
                           "WHERE id = $1 AND state = 'RUNNING' RETURNING id",
                           {id, state, reason, now_ms()}));
    changed = !rows.empty();
    return Status::OK();
  }));
  if (!changed)
    return Status::FailedPrecondition("pipeline run {} is not RUNNING: it ended already", id);
  return get_run(id);
}

Result<PipelineRun> PipelineStore::change_run(int64_t id, const Principal* who,
                                              const std::string& action,
                                              const std::string& allowed_states) {
  DLSYS_ASSIGN_OR_RETURN(PipelineRun run, get_run(id));
  if (who && who->role != Role::kAdmin && !(who->role == Role::kEditor && who->name == run.owner))
    return Status::PermissionDenied(
        "pipeline run {} belongs to '{}': only its owner (as an editor) or an admin may {} it", id,
        run.owner, action);
  if (allowed_states.find(run.state) == std::string::npos)
    return Status::FailedPrecondition("pipeline run {} is {}: only a {} run can be {}", id,
                                      run.state, allowed_states,
                                      action == "cancel" ? "cancelled" : "retried");
  bool changed = false;
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    changed = false;
    if (action == "cancel") {
      DLSYS_ASSIGN_OR_RETURN(auto rows,
                             c.query("UPDATE pipeline_runs SET cancel_requested = 1, "
                                     "end_reason = 'cancelled by ' || $2 WHERE id = $1 AND "
                                     "state = 'RUNNING' RETURNING id",
                                     {id, who ? who->name : std::string("local")}));
      changed = !rows.empty();
    } else {
      DLSYS_ASSIGN_OR_RETURN(
          auto rows, c.query("UPDATE pipeline_runs SET state = 'RUNNING', attempt = attempt + 1, "
                             "cancel_requested = 0, ended_at = 0, end_reason = '' WHERE id = $1 "
                             "AND state = $2 RETURNING id",
                             {id, run.state}));
      changed = !rows.empty();
      if (changed)
        DLSYS_RETURN_IF_ERROR(
            c.exec("DELETE FROM pipeline_steps WHERE run_id = $1 AND state <> 'SUCCEEDED'", {id}));
    }
    if (!changed) return Status::OK();
    return audit(c, who ? *who : Principal{}, "pipeline." + action,
                 "pipeline_run/" + std::to_string(id), {{"state", run.state}});
  }));
  if (!changed)
    return Status::FailedPrecondition("pipeline run {} changed state before the {}", id, action);
  return get_run(id);
}

Result<PipelineRun> PipelineStore::request_cancel(int64_t id, const Principal& who) {
  return change_run(id, &who, "cancel", "RUNNING");
}

Result<PipelineRun> PipelineStore::retry_run(int64_t id, const Principal& who) {
  return change_run(id, &who, "retry", "FAILED or CANCELLED");
}

Result<std::vector<StepRun>> PipelineStore::steps(int64_t run_id) {
  std::vector<StepRun> out;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    out.clear();
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query(std::string("SELECT ") + kStepColumns +
                                                  " FROM pipeline_steps WHERE run_id = $1 "
                                                  "ORDER BY step, item",
                                              {run_id}));
    for (const auto& r : rows) {
      DLSYS_ASSIGN_OR_RETURN(StepRun s, row_to_step(r));
      out.push_back(std::move(s));
    }
    return Status::OK();
  }));
  return out;
}

Status PipelineStore::insert_step(const StepRun& s) {
  DLSYS_RETURN_IF_ERROR(check_step(s));
  bool inserted = false;
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query(kInsertStep, step_params(s)));
    inserted = !rows.empty();
    return Status::OK();
  }));
  if (!inserted)
    return Status::FailedPrecondition("step '{}' (item {}) of pipeline run {} exists already",
                                      s.step, s.item, s.run_id);
  return Status::OK();
}

Result<int64_t> PipelineStore::start_job_step(StepRun s, const NewJob& j, const Principal& who) {
  s.state = "RUNNING";
  DLSYS_RETURN_IF_ERROR(check_step(s));
  bool inserted = false;
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    inserted = false;
    DLSYS_ASSIGN_OR_RETURN(s.job_id, jobs_.submit_in(c, j, who));
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query(kInsertStep, step_params(s)));
    inserted = !rows.empty();
    // Another runner made the row first: its job stands, this one is rolled back.
    if (!inserted) return Status::FailedPrecondition("exists");
    return Status::OK();
  }));
  return s.job_id;
}

Status PipelineStore::update_step(const StepRun& s, const std::string& expected,
                                  int64_t expected_heartbeat) {
  DLSYS_RETURN_IF_ERROR(check_step(s));
  bool changed = false;
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    SqlParams p = step_params(s);
    p.push_back(expected);
    p.push_back(expected_heartbeat);
    DLSYS_ASSIGN_OR_RETURN(
        auto rows,
        c.query("UPDATE pipeline_steps SET state = $4, attempts = $5, job_id = $6, inputs = $7, "
                "outputs = $8, cache_key = $9, cached = $10, not_before = $11, started_at = $12, "
                "ended_at = $13, end_reason = $14, runner = $15, heartbeat_at = $16 WHERE "
                "run_id = $1 AND step = $2 AND item = $3 AND state = $17 AND ($18 < 0 OR "
                "heartbeat_at = $18) RETURNING run_id",
                p));
    changed = !rows.empty();
    return Status::OK();
  }));
  if (!changed)
    return Status::FailedPrecondition(
        "step '{}' (item {}) of pipeline run {} is no longer {}: another runner changed it", s.step,
        s.item, s.run_id, expected);
  return Status::OK();
}

Result<std::optional<CacheEntry>> PipelineStore::cache_get(const std::string& key) {
  std::optional<CacheEntry> out;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    out.reset();
    DLSYS_ASSIGN_OR_RETURN(auto rows,
                           c.query("SELECT cache_key, kind, outputs, run_id, step, created_at "
                                   "FROM step_cache WHERE cache_key = $1",
                                   {key}));
    if (rows.empty()) return Status::OK();
    CacheEntry e;
    e.key = sql_text(rows[0][0]);
    e.kind = sql_text(rows[0][1]);
    e.outputs = json::parse(sql_text(rows[0][2]), nullptr, false);
    if (!e.outputs.is_object())
      return Status::Internal("the cached outputs of step key {} are stored malformed", key);
    e.run_id = sql_int(rows[0][3]);
    e.step = sql_text(rows[0][4]);
    e.created_at = sql_int(rows[0][5]);
    out = std::move(e);
    return Status::OK();
  }));
  return out;
}

Status PipelineStore::cache_put(const CacheEntry& e) {
  if (e.key.empty() || !e.outputs.is_object())
    return Status::Invalid("a cache entry needs a key and an object of outputs");
  // One statement: two runs finishing the same key race to one row, not to a key violation.
  return db_.tx(true, [&](SqlConnection& c) -> Status {
    return c.exec(
        "INSERT INTO step_cache (cache_key, kind, outputs, run_id, step, created_at) VALUES "
        "($1,$2,$3,$4,$5,$6) ON CONFLICT (cache_key) DO UPDATE SET kind = excluded.kind, "
        "outputs = excluded.outputs, run_id = excluded.run_id, step = excluded.step, "
        "created_at = excluded.created_at",
        {e.key, e.kind, e.outputs.dump(), e.run_id, e.step, now_ms()});
  });
}

Status PipelineStore::cache_drop(const std::string& key) {
  return db_.tx(true, [&](SqlConnection& c) -> Status {
    return c.exec("DELETE FROM step_cache WHERE cache_key = $1", {key});
  });
}

}  // namespace dlsys::meta
