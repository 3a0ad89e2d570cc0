#include "meta/search_store.h"

#include "core/file_util.h"

namespace dlsys::meta {
namespace {

constexpr size_t kMaxSpecBytes = 64 << 10;

const char* kSearchColumns =
    "id, name, owner, spec, state, created_at, ended_at, best_trial, cancel_requested, "
    "end_reason, model_version";
const char* kTrialColumns = "search_id, trial, params, job_id, rung, state, results, end_reason";

Result<Search> row_to_search(const SqlRow& r) {
  Search s;
  s.id = sql_int(r[0]);
  s.name = sql_text(r[1]);
  s.owner = sql_text(r[2]);
  s.spec = json::parse(sql_text(r[3]), nullptr, false);
  if (!s.spec.is_object())
    return Status::Internal("the stored spec of search {} is not a JSON object", s.id);
  s.state = sql_text(r[4]);
  s.created_at = sql_int(r[5]);
  s.ended_at = sql_int(r[6]);
  s.best_trial = sql_int(r[7]);
  s.cancel_requested = sql_int(r[8]) != 0;
  s.end_reason = sql_text(r[9]);
  s.model_version = sql_int(r[10]);
  return s;
}

Result<SearchTrial> row_to_trial(const SqlRow& r) {
  SearchTrial t;
  t.search_id = sql_int(r[0]);
  t.trial = sql_int(r[1]);
  t.params = json::parse(sql_text(r[2]), nullptr, false);
  t.job_id = sql_int(r[3]);
  t.rung = sql_int(r[4]);
  t.state = sql_text(r[5]);
  json results = json::parse(sql_text(r[6]), nullptr, false);
  if (!t.params.is_object() || !results.is_array())
    return Status::Internal("trial {} of search {} is stored malformed", t.trial, t.search_id);
  for (const json& v : results)
    t.results.push_back(v.is_number() ? std::optional<double>(v.get<double>()) : std::nullopt);
  t.end_reason = sql_text(r[7]);
  return t;
}

json results_json(const std::vector<std::optional<double>>& results) {
  json a = json::array();
  for (const auto& v : results) a.push_back(v ? json(*v) : json());
  return a;
}

Status check_search_state(const std::string& s) {
  if (s.empty() || s == "RUNNING" || s == "SUCCEEDED" || s == "FAILED" || s == "CANCELLED")
    return Status::OK();
  return Status::Invalid("search state '{}' is not one of RUNNING, SUCCEEDED, FAILED, CANCELLED",
                         s.substr(0, 32));
}

}  // namespace

void to_json(json& j, const Search& s) {
  j = {{"id", s.id},
       {"name", s.name},
       {"owner", s.owner},
       {"spec", s.spec},
       {"state", s.state},
       {"created_at", s.created_at},
       {"ended_at", s.ended_at},
       {"best_trial", s.best_trial},
       {"cancel_requested", s.cancel_requested},
       {"end_reason", s.end_reason},
       {"model_version", s.model_version}};
}

void to_json(json& j, const SearchTrial& t) {
  j = {{"search_id", t.search_id},
       {"trial", t.trial},
       {"params", t.params},
       {"job_id", t.job_id},
       {"rung", t.rung},
       {"state", t.state},
       {"results", results_json(t.results)},
       {"end_reason", t.end_reason}};
}

Result<Search> SearchStore::create(const std::string& name, const json& spec,
                                   const Principal& who) {
  if (name.empty() || name.size() > kMaxKeyLength)
    return Status::Invalid("a search name must be 1..{} characters, got {}", kMaxKeyLength,
                           name.size());
  if (!spec.is_object()) return Status::Invalid("a search spec must be a JSON object");
  if (spec.dump().size() > kMaxSpecBytes)
    return Status::Invalid("the search spec is over {} KiB", kMaxSpecBytes >> 10);
  int64_t id = 0;
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto rows,
                           c.query("INSERT INTO searches (name, owner, spec, state, created_at) "
                                   "VALUES ($1,$2,$3,'RUNNING',$4) RETURNING id",
                                   {name, who.name, spec.dump(), now_ms()}));
    id = sql_int(rows.at(0)[0]);
    return audit(c, who, "search.submit", "search/" + std::to_string(id), {{"name", name}});
  }));
  return get(id);
}

Result<Search> SearchStore::get(int64_t id) {
  Result<Search> out =
      Status::NotFound("search {} does not exist; list them with `dlsys search list`", id);
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(
        auto rows,
        c.query(std::string("SELECT ") + kSearchColumns + " FROM searches WHERE id = $1", {id}));
    if (!rows.empty()) out = row_to_search(rows[0]);
    return Status::OK();
  }));
  return out;
}

Result<PageOf<Search>> SearchStore::list(const std::string& state, int page_size,
                                         const std::string& page_token) {
  DLSYS_RETURN_IF_ERROR(check_page_size(page_size));
  DLSYS_RETURN_IF_ERROR(check_search_state(state));
  int64_t before = INT64_MAX;
  if (!page_token.empty()) {
    DLSYS_ASSIGN_OR_RETURN(before, int_token(page_token, "s:"));
  }
  PageOf<Search> page;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    page = {};
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query(std::string("SELECT ") + kSearchColumns +
                                                  " FROM searches WHERE id < $1 AND ($2 = '' OR "
                                                  "state = $2) ORDER BY id DESC LIMIT $3",
                                              {before, state, int64_t{page_size} + 1}));
    for (size_t i = 0; i < rows.size() && i < static_cast<size_t>(page_size); ++i) {
      DLSYS_ASSIGN_OR_RETURN(Search s, row_to_search(rows[i]));
      page.items.push_back(std::move(s));
    }
    if (rows.size() > static_cast<size_t>(page_size))
      page.next_page_token = "s:" + std::to_string(page.items.back().id);
    return Status::OK();
  }));
  return page;
}

Result<std::vector<Search>> SearchStore::running() {
  std::vector<Search> out;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    out.clear();
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query(std::string("SELECT ") + kSearchColumns +
                                                  " FROM searches WHERE state = 'RUNNING' "
                                                  "ORDER BY id",
                                              {}));
    for (const auto& r : rows) {
      DLSYS_ASSIGN_OR_RETURN(Search s, row_to_search(r));
      out.push_back(std::move(s));
    }
    return Status::OK();
  }));
  return out;
}

Result<std::vector<SearchTrial>> SearchStore::trials(int64_t id) {
  std::vector<SearchTrial> out;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    out.clear();
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query(std::string("SELECT ") + kTrialColumns +
                                                  " FROM search_trials WHERE search_id = $1 "
                                                  "ORDER BY trial",
                                              {id}));
    for (const auto& r : rows) {
      DLSYS_ASSIGN_OR_RETURN(SearchTrial t, row_to_trial(r));
      out.push_back(std::move(t));
    }
    return Status::OK();
  }));
  return out;
}

Result<SearchTrial> SearchStore::start_trial(int64_t id, int64_t trial, const json& params,
                                             const NewJob& job) {
  if (!params.is_object()) return Status::Invalid("a trial's params must be a JSON object");
  DLSYS_ASSIGN_OR_RETURN(Search s, get(id));
  if (s.state != "RUNNING")
    return Status::FailedPrecondition("search {} is {}: only a RUNNING one starts trials", id,
                                      s.state);
  SearchTrial t;
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto have, c.query("SELECT trial FROM search_trials WHERE search_id = "
                                              "$1 AND trial = $2",
                                              {id, trial}));
    if (!have.empty()) return Status::AlreadyExists("search {} has a trial {} already", id, trial);
    const Principal owner{s.owner, Role::kEditor};
    DLSYS_ASSIGN_OR_RETURN(int64_t job_id, jobs_.submit_in(c, job, owner));
    // Only into a search still RUNNING and not being cancelled (another server may have ended
    // it since it was read): else nothing, the job's insert included, is kept.
    DLSYS_ASSIGN_OR_RETURN(
        auto added,
        c.query("INSERT INTO search_trials (search_id, trial, params, job_id, rung, state, "
                "results) SELECT CAST($1 AS BIGINT), CAST($2 AS BIGINT), CAST($3 AS TEXT), "
                "CAST($4 AS BIGINT), 0, 'RUNNING', '[]' WHERE EXISTS (SELECT 1 FROM "
                "searches WHERE id = $1 AND state = 'RUNNING' AND cancel_requested = 0) "
                "RETURNING trial",
                {id, trial, params.dump(), job_id}));
    if (added.empty())
      return Status::FailedPrecondition("search {} ended or is being cancelled: no new trial", id);
    t = {id, trial, params, job_id, 0, "RUNNING", {}, ""};
    return Status::OK();
  }));
  return t;
}

Status SearchStore::record_result(int64_t id, int64_t trial, int64_t rung,
                                  std::optional<double> value, bool top, bool failed,
                                  const std::string& reason) {
  return db_.tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("SELECT results FROM search_trials WHERE search_id "
                                              "= $1 AND trial = $2 AND rung = $3 AND state = "
                                              "'RUNNING'",
                                              {id, trial, rung}));
    if (rows.empty())
      return Status::FailedPrecondition("trial {} of search {} is not RUNNING at rung {}", trial,
                                        id, rung);
    json results = json::parse(sql_text(rows[0][0]), nullptr, false);
    if (!results.is_array()) results = json::array();
    if (!failed) results.push_back(value ? json(*value) : json());
    const std::string state = failed ? "FAILED" : top ? "COMPLETED" : "PAUSED";
    return c.exec(
        "UPDATE search_trials SET results = $4, state = $5, end_reason = $6 WHERE "
        "search_id = $1 AND trial = $2 AND rung = $3 AND state = 'RUNNING'",
        {id, trial, rung, results.dump(), state, reason});
  });
}

Status SearchStore::promote(int64_t id, int64_t trial, int64_t rung, const json& job_spec) {
  return db_.tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(
        auto rows, c.query("UPDATE search_trials SET rung = rung + 1, state = 'RUNNING' WHERE "
                           "search_id = $1 AND trial = $2 AND rung = $3 AND state = 'PAUSED' "
                           "AND EXISTS (SELECT 1 FROM searches WHERE id = $1 AND state = "
                           "'RUNNING' AND cancel_requested = 0) RETURNING job_id",
                           {id, trial, rung}));
    if (rows.empty())
      return Status::FailedPrecondition(
          "trial {} of search {} is not PAUSED at rung {} in a running search", trial, id, rung);
    // An error here rolls the trial's move back too.
    return jobs_.rerun_in(c, sql_int(rows[0][0]), job_spec,
                          fmt::format("search {}: promoted to rung {}", id, rung + 1));
  });
}

Result<Search> SearchStore::finish(int64_t id, const std::string& state, int64_t best_trial,
                                   const std::string& reason) {
  if (state != "SUCCEEDED" && state != "FAILED" && state != "CANCELLED")
    return Status::Invalid("a search ends SUCCEEDED, FAILED or CANCELLED, not '{}'", state);
  bool done = false;
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    // A search that ends with success or a cancel has no trial left running (one a racing
    // server started or promoted meanwhile keeps it going); a failure ends it regardless.
    DLSYS_ASSIGN_OR_RETURN(
        auto rows,
        c.query("UPDATE searches SET state = $2, best_trial = $3, end_reason = $4, ended_at = $5 "
                "WHERE id = $1 AND state = 'RUNNING' AND ($2 = 'FAILED' OR NOT EXISTS (SELECT 1 "
                "FROM search_trials WHERE search_id = $1 AND state = 'RUNNING')) RETURNING id",
                {id, state, best_trial, reason, now_ms()}));
    done = !rows.empty();
    if (!done) return Status::OK();
    return c.exec(
        "UPDATE search_trials SET state = 'STOPPED' WHERE search_id = $1 AND "
        "state = 'PAUSED'",
        {id});
  }));
  DLSYS_ASSIGN_OR_RETURN(Search s, get(id));
  if (!done)
    return Status::FailedPrecondition(
        "search {} is {}: only a RUNNING one without running trials finishes", id, s.state);
  return s;
}

Status SearchStore::claim_registration(int64_t id) {
  return db_.tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto rows,
                           c.query("UPDATE searches SET model_version = -1 WHERE id = $1 AND "
                                   "model_version = 0 AND state = 'RUNNING' RETURNING id",
                                   {id}));
    if (rows.empty())
      return Status::FailedPrecondition(
          "search {}: its best model is being registered, or was, by another service", id);
    return Status::OK();
  });
}

Status SearchStore::set_model_version(int64_t id, int64_t version) {
  return db_.tx(true, [&](SqlConnection& c) -> Status {
    return c.exec("UPDATE searches SET model_version = $2 WHERE id = $1", {id, version});
  });
}

Result<Search> SearchStore::cancel(int64_t id, const Principal& who) {
  DLSYS_ASSIGN_OR_RETURN(Search s, get(id));
  if (who.role != Role::kAdmin && !(who.role == Role::kEditor && who.name == s.owner))
    return Status::PermissionDenied(
        "search {} belongs to '{}': only its owner (as an editor) or an admin may cancel it", id,
        s.owner);
  bool done = false;
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto rows,
                           c.query("UPDATE searches SET cancel_requested = 1, end_reason = "
                                   "'cancelled by ' || $2 WHERE id = $1 AND state = 'RUNNING' "
                                   "RETURNING id",
                                   {id, who.name}));
    done = !rows.empty();
    if (!done) return Status::OK();
    return audit(c, who, "search.cancel", "search/" + std::to_string(id), json::object());
  }));
  DLSYS_ASSIGN_OR_RETURN(s, get(id));
  if (!done) return Status::FailedPrecondition("search {} has already ended ({})", id, s.state);
  return s;
}

}  // namespace dlsys::meta
