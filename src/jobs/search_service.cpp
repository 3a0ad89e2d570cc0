#include "jobs/search_service.h"

#include <cstdio>

#include "jobs/run_model.h"
#include "jobs/search_policy.h"
#include "jobs/search_spec.h"

namespace dlsys::jobs {

namespace {

bool ended(const std::string& job_state) {
  return job_state == "SUCCEEDED" || job_state == "FAILED" || job_state == "CANCELLED";
}

const meta::Principal kSearchService{"search-service", meta::Role::kAdmin};

}  // namespace

Result<int> SearchService::tick() {
  DLSYS_ASSIGN_OR_RETURN(auto searches, store_.searches().running());
  int queued = 0;
  for (const meta::Search& s : searches) {
    auto n = drive(s);
    if (n.ok()) {
      queued += *n;
      continue;
    }
    // Another service changed it first: it goes on there (or here, at the next tick).
    if (n.status().code() == StatusCode::kFailedPrecondition) continue;
    // The database away: every search would fail alike; the loop reports it.
    if (n.status().code() == StatusCode::kUnavailable) return n.status();
    std::fprintf(stderr, "search %lld: %s\n", static_cast<long long>(s.id),
                 n.status().message().c_str());
    // Its spec or a trial's job is refused: the search cannot go on. Another error (a row
    // unreadable, a file missing) is reported and the search tried again next tick; either way
    // the other searches go on.
    if (n.status().code() == StatusCode::kInvalidArgument) fail_search(s, n.status().message());
  }
  return queued;
}

void SearchService::fail_search(const meta::Search& s, const std::string& reason) {
  // Its trials' jobs stop with it: none goes on training for a search that has ended.
  if (auto trials = store_.searches().trials(s.id); trials.ok())
    for (const auto& t : *trials)
      if (t.state == "RUNNING") (void)store_.jobs().cancel(t.job_id, kSearchService);
  (void)store_.searches().finish(s.id, "FAILED", -1, reason);
}

Result<int64_t> SearchService::register_best(const meta::Search& s, const SearchSpec& spec,
                                             const meta::SearchTrial& best) {
  int64_t version = s.model_version;
  if (version > 0) return version;  // a tick that stopped before finishing the search
  if (version == 0) {
    // Of two services ending the search, one registers.
    DLSYS_RETURN_IF_ERROR(store_.searches().claim_registration(s.id));
  }
  DLSYS_ASSIGN_OR_RETURN(meta::Job job, store_.jobs().get(best.job_id));
  // A service that stopped after registering but before recording it: the version is there.
  if (auto versions = store_.registry().list_model_versions(spec.register_model); versions.ok())
    for (const auto& v : *versions)
      if (v.run_id == job.run_id && job.run_id > 0) version = v.version;
  if (version <= 0) {
    DLSYS_ASSIGN_OR_RETURN(
        version,
        register_run_model(store_, options_.objects, options_.validate_model,
                           {job.run_id, s.owner, spec.register_model, spec.move_alias,
                            fmt::format("the best trial ({}) of search {}", best.trial, s.id)}));
  }
  DLSYS_RETURN_IF_ERROR(store_.searches().set_model_version(s.id, version));
  return version;
}

std::optional<double> SearchService::metric_of(int64_t run_id, const std::string& metric) {
  if (run_id <= 0) return std::nullopt;
  auto run = store_.runs().get_run(run_id);
  if (!run.ok()) return std::nullopt;
  auto it = run->metrics.find(metric);
  if (it == run->metrics.end()) return std::nullopt;
  return it->second.value;
}

Result<int> SearchService::drive(const meta::Search& s) {
  DLSYS_ASSIGN_OR_RETURN(SearchSpec spec,
                         search_spec_from_json(s.spec, fmt::format("search {}", s.id)));
  const std::vector<int64_t> rungs = rung_epochs(spec);
  DLSYS_ASSIGN_OR_RETURN(auto trials, store_.searches().trials(s.id));
  // Trials whose job ended: their rung's result.
  bool changed = false;
  for (meta::SearchTrial& t : trials) {
    if (t.state != "RUNNING") continue;
    DLSYS_ASSIGN_OR_RETURN(meta::Job job, store_.jobs().get(t.job_id));
    if (!ended(job.state)) {
      if (s.cancel_requested && !job.cancel_requested) {
        auto c = store_.jobs().cancel(job.id, kSearchService);
        if (!c.ok() && c.status().code() != StatusCode::kFailedPrecondition) return c.status();
      }
      continue;
    }
    const bool failed = job.state != "SUCCEEDED";
    const bool top = t.rung + 1 >= static_cast<int64_t>(rungs.size());
    std::optional<double> value = failed ? std::nullopt : metric_of(job.run_id, spec.metric);
    Status st = store_.searches().record_result(
        s.id, t.trial, t.rung, value, top, failed,
        failed ? fmt::format("job {} {}: {}", job.id, job.state, job.end_reason) : "");
    if (!st.ok()) return st;
    changed = true;
  }
  if (changed) {
    DLSYS_ASSIGN_OR_RETURN(trials, store_.searches().trials(s.id));
  }
  if (s.cancel_requested) {
    for (const auto& t : trials)
      if (t.state == "RUNNING") return 0;  // its job is stopping
    DLSYS_RETURN_IF_ERROR(store_.searches()
                              .finish(s.id, "CANCELLED", best_trial(spec, trials), s.end_reason)
                              .status());
    return 0;
  }
  const std::vector<nlohmann::json> params = trial_params(spec);
  SearchStep step = decide_search(spec, static_cast<int64_t>(params.size()), trials);
  int queued = 0;
  for (const SearchAction& a : step.actions) {
    if (a.kind == SearchAction::Kind::kStart) {
      JobSpec js = trial_job(spec, s.name, a.trial, params[a.trial], rungs.front());
      js.owner = s.owner;
      meta::NewJob nj{js.name,       job_kind_name(js.kind), to_json(js),
                      js.priority,   js.resources.threads,   js.resources.memory_bytes,
                      js.max_retries};
      auto t = store_.searches().start_trial(s.id, a.trial, params[a.trial], nj);
      if (!t.ok() && t.status().code() == StatusCode::kAlreadyExists) continue;
      DLSYS_RETURN_IF_ERROR(t.status());
    } else {
      const auto& t = *std::find_if(trials.begin(), trials.end(),
                                    [&](const meta::SearchTrial& x) { return x.trial == a.trial; });
      JobSpec js = trial_job(spec, s.name, a.trial, t.params, rungs[a.rung + 1]);
      js.owner = s.owner;
      DLSYS_RETURN_IF_ERROR(store_.searches().promote(s.id, a.trial, a.rung, to_json(js)));
    }
    ++queued;
  }
  if (!step.done) return queued;
  // Done: the best trial, its model registered when asked.
  if (step.best_trial < 0) {
    std::string why = "no trial reported the metric '" + spec.metric + "'";
    for (const auto& t : trials)
      if (t.state == "FAILED") {
        why = fmt::format("every trial failed; trial {}: {}", t.trial, t.end_reason);
        break;
      }
    DLSYS_RETURN_IF_ERROR(store_.searches().finish(s.id, "FAILED", -1, why).status());
    return 0;
  }
  std::string reason;
  if (!spec.register_model.empty()) {
    const auto& best = *std::find_if(trials.begin(), trials.end(),
                                     [&](const auto& x) { return x.trial == step.best_trial; });
    auto v = register_best(s, spec, best);
    // Another service registers it: it ends the search too.
    if (!v.ok() && v.status().code() == StatusCode::kFailedPrecondition) return 0;
    if (!v.ok()) {
      DLSYS_RETURN_IF_ERROR(
          store_.searches()
              .finish(s.id, "FAILED", step.best_trial,
                      "registering the best trial's model: " + v.status().message())
              .status());
      return 0;
    }
    reason = fmt::format("registered as {}@{}", spec.register_model, *v);
  }
  DLSYS_RETURN_IF_ERROR(
      store_.searches().finish(s.id, "SUCCEEDED", step.best_trial, reason).status());
  return 0;
}

}  // namespace dlsys::jobs
