#include "flow/pipeline_service.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "api/client.h"
#include "core/file_util.h"
#include "flow/cron.h"
#include "flow/gate_condition.h"
#include "flow/step_cache_key.h"
#include "flow/step_fields.h"
#include "jobs/job_spec.h"
#include "jobs/run_model.h"
#include "jobs/search_spec.h"

namespace dlsys::flow {
namespace fs = std::filesystem;
using meta::PipelineRun;
using meta::StepRun;

namespace {

const meta::Principal kRunner{"pipelines", meta::Role::kAdmin};
// The most instances one step fans out to.
constexpr size_t kMaxFanOut = 1000;
// The largest file a step's cache key reads (a pushed file, a command's code).
constexpr uintmax_t kMaxHashedBytes = uintmax_t{4} << 30;

bool is_job_kind(const std::string& k) {
  return k == "train" || k == "predict" || k == "command";
}
// Kinds whose result is reused from the cache: the ones that compute something. A gate is
// cheap, and the rest act on the world (an alias, a deployment, a webhook): always run.
bool is_cacheable(const std::string& k) {
  return k == "data.push" || k == "data.validate" || k == "train" || k == "search" ||
         k == "evaluate" || k == "register" || k == "predict" || k == "command";
}

std::string key_of(int64_t run, const std::string& step, int64_t item) {
  return fmt::format("{}/{}/{}", run, step, item);
}

std::string where_of(const PipelineRun& run, const StepSpec& st, const std::string& field) {
  return fmt::format("pipeline '{}' run {}: steps.{}.{}", run.pipeline, run.id, st.name, field);
}

// What references resolve against: the run's parameters, the outputs of the steps that
// finished, and the instance's item.
struct Scope {
  const json* params = nullptr;
  const std::map<std::string, std::vector<StepRun>>* steps = nullptr;
  const PipelineSpec* spec = nullptr;
  json item;
};

json output_of(const StepRun& r, const std::string& key) {
  auto it = r.outputs.find(key);
  return it == r.outputs.end() ? json() : *it;
}

Result<json> reference_value(const Reference& ref, const Scope& s, const std::string& where) {
  switch (ref.kind) {
    case Reference::Kind::kParam: {
      auto it = s.params->find(ref.name);
      if (it == s.params->end())
        return Status::Invalid("{}: the run has no parameter '{}'", where, ref.name);
      return *it;
    }
    case Reference::Kind::kItem:
      return s.item;
    case Reference::Kind::kStepOutput: {
      auto it = s.steps->find(ref.name);
      if (it == s.steps->end() || it->second.empty())
        return Status::Internal("{}: step '{}' has not run", where, ref.name);
      const StepSpec* from = s.spec->step(ref.name);
      // Fan-in: a fanned-out step's output is the list of its instances' outputs.
      if (from && !from->for_each.is_null()) {
        json all = json::array();
        for (const StepRun& r : it->second)
          if (r.item >= 0) all.push_back(output_of(r, ref.key));
        return all;
      }
      return output_of(it->second.front(), ref.key);  // null: the step did not give it
    }
  }
  return json();
}

std::string as_text(const json& v) {
  return v.is_string() ? v.get<std::string>() : v.dump();
}

// `v` with every reference replaced: a string that is one reference becomes its value (a
// number stays a number), one with text around references becomes text.
Result<json> resolve(const json& v, const Scope& s, const std::string& where) {
  if (v.is_object()) {
    json out = json::object();
    for (auto it = v.begin(); it != v.end(); ++it) {
      DLSYS_ASSIGN_OR_RETURN(out[it.key()], resolve(it.value(), s, where + "." + it.key()));
    }
    return out;
  }
  if (v.is_array()) {
    json out = json::array();
    for (size_t i = 0; i < v.size(); ++i) {
      DLSYS_ASSIGN_OR_RETURN(json x, resolve(v[i], s, fmt::format("{}[{}]", where, i)));
      out.push_back(std::move(x));
    }
    return out;
  }
  if (!v.is_string()) return v;
  DLSYS_ASSIGN_OR_RETURN(auto pieces, split_references(v.get<std::string>(), where));
  if (pieces.size() == 1 && pieces[0].is_ref) return reference_value(pieces[0].ref, s, where);
  std::string text;
  for (const auto& p : pieces) {
    if (!p.is_ref) {
      text += p.text;
      continue;
    }
    DLSYS_ASSIGN_OR_RETURN(json x, reference_value(p.ref, s, where));
    if (x.is_null())
      return Status::Invalid("{}: {} has no value (the step did not give that output)", where,
                             p.written);
    text += as_text(x);
  }
  return json(text);
}

Result<std::vector<ConditionPiece>> condition_pieces(const std::string& cond, const Scope& s,
                                                     const std::string& where) {
  DLSYS_ASSIGN_OR_RETURN(auto pieces, split_references(cond, where));
  std::vector<ConditionPiece> out;
  for (const auto& p : pieces) {
    if (!p.is_ref) {
      out.push_back({p.text, json(), false, ""});
      continue;
    }
    DLSYS_ASSIGN_OR_RETURN(json x, reference_value(p.ref, s, where));
    out.push_back({"", std::move(x), true, p.written});
  }
  return out;
}

std::string absolute_in(const std::string& dir, const std::string& path) {
  if (path.empty() || fs::path(path).is_absolute() || dir.empty()) return path;
  return (fs::path(dir) / path).lexically_normal().string();
}

}  // namespace

struct PipelineService::InFlight {
  std::string key;
  PipelineRun run;
  std::shared_ptr<const PipelineSpec> spec;
  StepCall call;
  StepHandler fn;
  int64_t attempt = 0;
  // Under mu_: when a worker took it (0: queued), whether it ended, or was given up (a timeout,
  // a cancel: a queued one is not run, a running one's result is dropped).
  int64_t started_ms = 0;
  bool done = false, abandoned = false;
  Result<json> result = json::object();
};

PipelineService::PipelineService(meta::MetaStore& store, PipelineServiceOptions options)
    : store_(store), options_(std::move(options)) {
  if (options_.work_dir.empty()) {
    std::error_code ec;
    options_.work_dir = fs::current_path(ec).string();
  }
  if (options_.runner.empty()) {
    char host[256] = {0};
    ::gethostname(host, sizeof host - 1);
    options_.runner = fmt::format("{}:{}", host, static_cast<long long>(::getpid()));
  }
}

PipelineService::~PipelineService() {
  stop();
}

void PipelineService::start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (runner_.joinable()) return;
  stopping_ = false;
  for (int i = 0; i < std::max(1, options_.workers); ++i)
    workers_.emplace_back([this] { worker_loop(); });
  runner_ = std::thread([this] { runner_loop(); });
}

void PipelineService::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    // Steps no worker took: left RUNNING in the store, begun again by the next start.
    for (auto& f : queue_) f->abandoned = true;
    queue_.clear();
  }
  cv_.notify_all();
  work_cv_.notify_all();
  if (runner_.joinable()) runner_.join();
  for (auto& w : workers_) w.join();
  workers_.clear();
}

void PipelineService::wake() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    woken_ = true;
  }
  cv_.notify_all();
}

void PipelineService::runner_loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, options_.poll, [this] { return woken_ || stopping_; });
      if (stopping_) return;
      woken_ = false;
    }
    Result<int> r = 0;
    try {
      r = tick();
    } catch (const std::exception& e) {
      r = Status::Internal("the runner's pass failed: {}", e.what());
    }
    if (!r.ok()) std::fprintf(stderr, "pipelines: %s\n", r.status().message().c_str());
    Result<int> t = 0;
    try {
      t = fire_triggers();
    } catch (const std::exception& e) {
      t = Status::Internal("{}", e.what());
    }
    if (!t.ok()) std::fprintf(stderr, "pipelines: triggers: %s\n", t.status().message().c_str());
  }
}

void PipelineService::worker_loop() {
  for (;;) {
    std::shared_ptr<InFlight> f;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_ || queue_.empty()) return;
      f = queue_.front();
      queue_.pop_front();
      if (f->abandoned) continue;  // timed out or cancelled while it waited
      f->started_ms = now_ms();
    }
    f->call.run = &f->run;
    // A handler's exception is its step's failure, not the server's end.
    Result<json> r = json::object();
    try {
      r = f->fn(f->call);
    } catch (const std::exception& e) {
      r = Status::Internal("the step's handler failed: {}", e.what());
    } catch (...) {
      r = Status::Internal("the step's handler failed with an unknown exception");
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      f->result = std::move(r);
      f->done = true;
      woken_ = true;
    }
    cv_.notify_all();
  }
}

Result<meta::PipelineRun> PipelineService::start_run(const std::string& name, const json& overrides,
                                                     const std::string& trigger,
                                                     const std::string& event_id, bool no_cache,
                                                     const meta::Principal& who, bool* created) {
  DLSYS_ASSIGN_OR_RETURN(meta::Pipeline p, store_.pipelines().get_pipeline(name));
  DLSYS_ASSIGN_OR_RETURN(PipelineSpec spec, parse_pipeline_spec(p.spec_text, name + ".yaml"));
  json params = spec.params;
  if (!overrides.is_null() && !overrides.is_object())
    return Status::Invalid("a run's parameters are an object of NAME: VALUE");
  if (overrides.is_object())
    for (auto it = overrides.begin(); it != overrides.end(); ++it) {
      if (!params.contains(it.key())) {
        std::string known;
        for (auto k = params.begin(); k != params.end(); ++k)
          known += (known.empty() ? "" : ", ") + k.key();
        return Status::Invalid("pipeline '{}' has no parameter '{}' (its parameters: {})", name,
                               it.key(), known.empty() ? "none" : known);
      }
      const json& v = it.value();
      auto scalar = [](const json& x) { return x.is_primitive() && !x.is_null(); };
      if (!(scalar(v) || (v.is_array() && std::all_of(v.begin(), v.end(), scalar))))
        return Status::Invalid(
            "parameter '{}': a value is a number, text, true/false or a list of those, got {}",
            it.key(), v.dump().substr(0, 80));
      params[it.key()] = it.value();
    }
  // The spec the parameters were checked against is the one the run gets.
  DLSYS_ASSIGN_OR_RETURN(
      PipelineRun run,
      store_.pipelines().create_run(name, params, trigger, event_id, no_cache, who, created, &p));
  wake();
  return run;
}

Result<int> PipelineService::tick() {
  DLSYS_ASSIGN_OR_RETURN(std::vector<PipelineRun> runs, store_.pipelines().running_runs());
  int changed = 0;
  std::set<int64_t> live;
  for (const PipelineRun& run : runs) {
    live.insert(run.id);
    Result<int> r = 0;
    try {
      r = drive(run);
    } catch (const std::exception& e) {
      r = Status::Internal("{}", e.what());
    }
    if (r.ok()) {
      changed += *r;
    } else if (r.status().code() == StatusCode::kUnavailable) {
      return r.status();
    } else {
      std::fprintf(stderr, "pipelines: run %lld: %s\n", static_cast<long long>(run.id),
                   r.status().message().c_str());
    }
  }
  for (auto it = specs_.begin(); it != specs_.end();)
    it = live.count(it->first) ? std::next(it) : specs_.erase(it);
  return changed;
}

namespace {

// Whether a dependency lets a step start: not yet, yes, or no (the reason it is skipped).
struct Readiness {
  bool waiting = false;
  std::string skip_reason;
};

Readiness readiness(const StepSpec& st, const std::map<std::string, std::vector<StepRun>>& rows,
                    const PipelineSpec& spec) {
  Readiness out;
  for (const std::string& d : st.depends_on) {
    auto it = rows.find(d);
    if (it == rows.end() || it->second.empty()) return {true, ""};
    for (const StepRun& r : it->second)
      if (r.state == "PENDING" || r.state == "RUNNING") return {true, ""};
    for (const StepRun& r : it->second) {
      if (!out.skip_reason.empty()) break;
      if (r.state == "FAILED" || r.state == "CANCELLED")
        out.skip_reason = fmt::format("step '{}' {}", d,
                                      r.state == "FAILED" ? "failed"
                                                          : "was "
                                                            "cancelled");
      else if (r.state == "SKIPPED")
        out.skip_reason = r.end_reason;  // the first cause, passed down the branch
      else if (spec.step(d)->kind == "gate" && output_of(r, "passed") == json(false))
        out.skip_reason =
            fmt::format("gate '{}' did not pass: {}", d, as_text(output_of(r, "explanation")));
    }
  }
  return out;
}

}  // namespace

struct PipelineService::Pass {
  const PipelineRun* run = nullptr;
  std::shared_ptr<const PipelineSpec> spec;
  std::map<std::string, std::vector<StepRun>> rows;
  int changed = 0;
  Scope scope(const json& item) const { return {&run->params, &rows, spec.get(), item}; }
  // The item of instance `index` of fanned-out step `st` (null for -1 or one out of range).
  json item_of(const StepSpec& st, int64_t index) const {
    if (index < 0) return json();
    auto fe = resolve(st.for_each, scope(json()), where_of(*run, st, "for_each"));
    if (!fe.ok() || !fe->is_array() || index >= static_cast<int64_t>(fe->size())) return json();
    return (*fe)[static_cast<size_t>(index)];
  }
};

Status PipelineService::save(Pass& p, StepRun& r, const std::string& expected, bool* won,
                             int64_t heartbeat) {
  Status st = expected.empty() ? store_.pipelines().insert_step(r)
                               : store_.pipelines().update_step(r, expected, heartbeat);
  if (won) *won = st.ok();
  if (st.code() == StatusCode::kFailedPrecondition) return Status::OK();  // another runner's
  if (st.ok()) ++p.changed;
  return st;
}

Status PipelineService::fail(Pass& p, const StepSpec& st, StepRun& r, const std::string& expected,
                             const std::string& reason) {
  const bool retry = st.kind != "gate" && r.attempts > 0 && r.attempts <= st.retries;
  r.state = retry ? "PENDING" : "FAILED";
  r.end_reason =
      retry ? fmt::format("attempt {} failed (retrying): {}", r.attempts, reason) : reason;
  r.ended_at = retry ? 0 : now_ms();
  r.not_before =
      retry ? now_ms() + (options_.retry_backoff_ms << std::min<int64_t>(10, r.attempts - 1)) : 0;
  return save(p, r, expected);
}

Result<int> PipelineService::drive(const PipelineRun& run) {
  auto& pipes = store_.pipelines();
  Pass p;
  p.run = &run;
  p.spec = specs_[run.id];
  if (!p.spec) {
    auto parsed = parse_pipeline_spec(run.spec_text, run.pipeline + ".yaml");
    if (!parsed.ok()) {
      auto ended = pipes.finish_run(run.id, "FAILED",
                                    "its spec does not parse: " + parsed.status().message());
      if (!ended.ok() && ended.status().code() != StatusCode::kFailedPrecondition)
        return ended.status();
      return 1;
    }
    p.spec = specs_[run.id] = std::make_shared<const PipelineSpec>(std::move(*parsed));
  }
  DLSYS_ASSIGN_OR_RETURN(std::vector<StepRun> all, pipes.steps(run.id));
  for (StepRun& r : all) p.rows[r.step].push_back(std::move(r));
  if (run.cancel_requested) return cancel(p);
  const int64_t now = now_ms();
  bool active = false;
  for (const std::string& name : p.spec->order) {
    const StepSpec& st = *p.spec->step(name);
    std::vector<StepRun>& inst = p.rows[name];
    if (inst.empty()) {
      Readiness ready = readiness(st, p.rows, *p.spec);
      if (ready.waiting) {
        active = true;
        continue;
      }
      StepRun r = StepRun::of(run.id, name, -1, "SKIPPED");
      r.ended_at = now;
      std::vector<json> items = {json()};
      if (!ready.skip_reason.empty()) {
        r.end_reason = ready.skip_reason;
      } else if (!st.for_each.is_null()) {
        auto fe = resolve(st.for_each, p.scope(json()), where_of(run, st, "for_each"));
        if (fe.ok() && !fe->is_array())
          fe = Status::Invalid("{}: for_each must give a list, got {}",
                               where_of(run, st, "for_each"), fe->dump());
        if (fe.ok() && fe->size() > kMaxFanOut)
          fe = Status::Invalid("{}: for_each gave {} items; a step fans out to at most {}",
                               where_of(run, st, "for_each"), fe->size(), kMaxFanOut);
        if (!fe.ok()) {
          r.state = "FAILED";
          r.end_reason = fe.status().message();
        } else if (fe->empty()) {
          // Nothing to fan out over: the step succeeds with no instances (fan-in gives []).
          r.state = "SUCCEEDED";
          r.end_reason = "for_each gave no items";
        } else {
          items.assign(fe->begin(), fe->end());
          r.state.clear();
        }
      } else {
        r.state.clear();
      }
      if (!r.state.empty()) {  // skipped, or decided without running
        DLSYS_RETURN_IF_ERROR(save(p, r, ""));
        inst.push_back(r);
        continue;
      }
      for (size_t i = 0; i < items.size(); ++i) {
        StepRun ri =
            StepRun::of(run.id, name, st.for_each.is_null() ? -1 : static_cast<int64_t>(i), "");
        DLSYS_RETURN_IF_ERROR(begin_step(p, st, items[i], ri, ""));
        // The vector may have been read through p.rows by begin_step: push after.
        p.rows[name].push_back(ri);
      }
    } else {
      // Polled below: the rows read from the store, not the ones begun in this pass (a row
      // another runner inserted first is only this runner's copy).
      const size_t existing = inst.size();
      // A fan-out step's instances that are missing (a retry forgot the failed ones; a pass
      // stopped after some): begun now, so that none is lost from the fan-in.
      if (!st.for_each.is_null() &&
          std::all_of(inst.begin(), inst.end(), [](const StepRun& r) { return r.item >= 0; })) {
        Readiness ready = readiness(st, p.rows, *p.spec);
        auto fe = resolve(st.for_each, p.scope(json()), where_of(run, st, "for_each"));
        if (!ready.waiting && ready.skip_reason.empty() && fe.ok() && fe->is_array() &&
            fe->size() <= kMaxFanOut) {
          std::set<int64_t> have;
          for (const StepRun& r : inst) have.insert(r.item);
          for (size_t i = 0; i < fe->size(); ++i) {
            if (have.count(static_cast<int64_t>(i))) continue;
            StepRun ri = StepRun::of(run.id, name, static_cast<int64_t>(i), "");
            DLSYS_RETURN_IF_ERROR(begin_step(p, st, (*fe)[i], ri, ""));
            p.rows[name].push_back(ri);
          }
        }
      }
      for (size_t k = 0; k < existing; ++k) {
        StepRun& r = inst[k];
        if (r.state == "PENDING" && r.not_before <= now) {
          DLSYS_RETURN_IF_ERROR(begin_step(p, st, p.item_of(st, r.item), r, "PENDING"));
        } else if (r.state == "RUNNING") {
          DLSYS_RETURN_IF_ERROR(poll_step(p, st, r));
        }
      }
    }
    for (const StepRun& r : p.rows[name])
      if (r.state == "PENDING" || r.state == "RUNNING") active = true;
  }
  if (active) return p.changed;
  // Nothing can move: the run ends.
  std::string failed;
  for (const auto& [name, inst] : p.rows)
    for (const StepRun& r : inst)
      if ((r.state == "FAILED" || r.state == "CANCELLED") && failed.empty())
        failed = fmt::format("step '{}'{} {}: {}", name,
                             r.item >= 0 ? fmt::format(" (item {})", r.item) : "",
                             r.state == "FAILED" ? "failed" : "was cancelled", r.end_reason);
  auto ended = pipes.finish_run(run.id, failed.empty() ? "SUCCEEDED" : "FAILED", failed);
  if (!ended.ok() && ended.status().code() != StatusCode::kFailedPrecondition)
    return ended.status();
  return p.changed + 1;
}

void PipelineService::record_lineage(const PipelineRun& run, const StepSpec& st, const StepRun& r) {
  const std::string me = std::to_string(run.id);
  const meta::Principal who{run.owner, meta::Role::kEditor};
  auto node = [&](const std::string& key, const json& v) -> std::pair<std::string, std::string> {
    if (key == "run" && v.is_number_integer()) return {"run", std::to_string(v.get<int64_t>())};
    if (!v.is_string()) return {};
    const std::string text = v;
    if (key == "dataset") return {"dataset_version", text.substr(0, text.find(':'))};
    if (key == "model" || key == "compare") {
      auto ref = jobs::parse_version_ref(text, key);
      if (ref.ok() && ref->version > 0)
        return {"model_version", fmt::format("{}/{}", ref->name, ref->version)};
    }
    return {};
  };
  auto edge = [&](const std::string& sk, const std::string& sid, const std::string& dk,
                  const std::string& did, const std::string& rel) {
    Status e = store_.lineage().add_edge(sk, sid, dk, did, rel, who);
    if (!e.ok())
      std::fprintf(stderr, "pipelines: lineage of run %s step %s: %s\n", me.c_str(),
                   st.name.c_str(), e.message().c_str());
  };
  // What the step read, and what it made (a cached result's outputs were made by the run
  // that first computed them: read here, not made).
  for (const char* key : {"dataset", "model", "compare"}) {
    auto [kind, id] = node(key, r.inputs.value(key, json()));
    if (!kind.empty()) edge(kind, id, "pipeline_run", me, "input");
  }
  if (st.kind == "gate" || st.kind == "notify") return;
  for (const char* key : {"dataset", "model", "run"}) {
    auto [kind, id] = node(key, r.outputs.value(key, json()));
    if (kind.empty()) continue;
    if (r.cached || st.kind == "alias" || st.kind == "deploy")
      edge(kind, id, "pipeline_run", me, "input");
    else
      edge("pipeline_run", me, kind, id, "produced");
  }
}

void PipelineService::pin_versions(json* with) {
  if (with->contains("dataset") && (*with)["dataset"].is_string() && options_.dataset_version) {
    const std::string text = (*with)["dataset"];
    // "digits@prod:train": the version is pinned, the split kept.
    const size_t colon = text.find(':', text.find('@') == std::string::npos ? 0 : text.find('@'));
    const std::string ref = text.substr(0, colon);
    auto v = options_.dataset_version(ref);
    if (v.ok())
      (*with)["dataset"] = v->label + (colon == std::string::npos ? "" : text.substr(colon));
  }
  for (const char* field : {"model", "compare"}) {
    if (!with->contains(field) || !(*with)[field].is_string()) continue;
    // Left as written when it names no version (yet): the step says what is missing.
    auto v = find_model_version(store_, (*with)[field].get<std::string>(), field);
    if (v.ok()) (*with)[field] = fmt::format("{}@{}", v->model, v->version);
  }
}

Status PipelineService::begin_step(Pass& p, const StepSpec& st, const json& item, StepRun& r,
                                   const std::string& expected, int64_t expected_heartbeat) {
  const PipelineRun& run = *p.run;
  const Scope scope = p.scope(item);
  r.attempts += 1;
  r.started_at = now_ms();
  r.ended_at = 0;
  r.not_before = 0;
  r.state = "RUNNING";
  // Resolve: an error here is the spec's or an output's, not a passing one: never retried.
  auto failed_now = [&](const std::string& why) {
    r.attempts = st.retries + 1;
    return fail(p, st, r, expected, why);
  };
  if (st.kind == "gate") {
    auto pieces = condition_pieces(st.condition, scope, where_of(run, st, "condition"));
    Result<GateResult> g = pieces.ok() ? evaluate_condition(*pieces, where_of(run, st, "condition"))
                                       : Result<GateResult>(pieces.status());
    if (!g.ok()) return failed_now(g.status().message());
    r.inputs = {{"condition", st.condition}};
    r.outputs = {{"passed", g->passed}, {"explanation", g->explanation}};
    r.state = "SUCCEEDED";
    r.ended_at = now_ms();
    r.end_reason = g->passed ? "passed: " + g->explanation : "did not pass: " + g->explanation;
    return save(p, r, expected);
  }
  auto with = resolve(st.with, scope, where_of(run, st, "with"));
  if (!with.ok()) return failed_now(with.status().message());
  // Versions named by a moving reference ("digits", "digits@prod", "m@production") are pinned
  // to the one they name now: what the step runs on is what its cache key says.
  pin_versions(&*with);
  r.inputs = *with;
  // The cache: a hit is used only when every output it names still exists. A registration that
  // moves an alias acts on the world: always run.
  r.cache_key.clear();
  r.cached = false;
  const bool moves_alias = st.kind == "register" && with->contains("alias") &&
                           !(*with)["alias"].is_null() && (*with)["alias"] != "";
  if (is_cacheable(st.kind) && st.cache && !moves_alias) {
    auto in = cache_inputs(st, *with);
    if (!in.ok()) return failed_now(in.status().message());
    auto key = step_cache_key(*in);
    if (!key.ok()) return failed_now(key.status().message());
    r.cache_key = *key;
    if (!run.no_cache) {
      DLSYS_ASSIGN_OR_RETURN(auto hit, store_.pipelines().cache_get(*key));
      if (hit) {
        Status there = outputs_exist(hit->outputs);
        if (there.ok()) {
          r.outputs = hit->outputs;
          r.cached = true;
          r.state = "SUCCEEDED";
          r.ended_at = now_ms();
          r.end_reason = fmt::format("cache hit: the result of step '{}' of pipeline run {}",
                                     hit->step, hit->run_id);
          bool won = false;
          DLSYS_RETURN_IF_ERROR(save(p, r, expected, &won));
          if (won) record_lineage(run, st, r);
          return Status::OK();
        }
        if (there.code() != StatusCode::kNotFound) return there;
        DLSYS_RETURN_IF_ERROR(store_.pipelines().cache_drop(*key));
        r.end_reason = "cache miss: " + there.message();
      }
    }
  }
  const meta::Principal owner{run.owner, meta::Role::kEditor};
  if (is_job_kind(st.kind)) {
    const std::string where = where_of(run, st, "with");
    jobs::JobSpec js;
    js.name = fmt::format("{}-{}{}", run.pipeline, st.name,
                          r.item >= 0 ? fmt::format("-{}", r.item) : "");
    js.experiment = "pipeline-" + run.pipeline;
    js.max_retries = st.retries;
    js.max_run_seconds = st.timeout_seconds;
    js.owner = run.owner;
    auto version_of = [&](const std::string& key, jobs::VersionRef* out, bool* has) -> Status {
      DLSYS_ASSIGN_OR_RETURN(std::string t, with_text(*with, key, where, false));
      if (t.empty()) return Status::OK();
      DLSYS_ASSIGN_OR_RETURN(*out, jobs::parse_version_ref(t, where + "." + key));
      *has = true;
      return Status::OK();
    };
    Status built = [&]() -> Status {
      DLSYS_RETURN_IF_ERROR(version_of("dataset", &js.dataset, &js.has_dataset));
      DLSYS_ASSIGN_OR_RETURN(js.split, with_text(*with, "split", where, false));
      DLSYS_ASSIGN_OR_RETURN(js.resources.threads, with_int(*with, "threads", where, 1));
      if (with->contains("memory") && !(*with)["memory"].is_null()) {
        DLSYS_ASSIGN_OR_RETURN(js.resources.memory_bytes,
                               jobs::parse_bytes(as_text((*with)["memory"]), where + ".memory"));
      }
      if (st.kind == "train") {
        js.kind = jobs::JobKind::kTrain;
        DLSYS_ASSIGN_OR_RETURN(js.spec, with_text(*with, "spec", where, false));
        js.spec = absolute_in(options_.work_dir, js.spec);
        DLSYS_RETURN_IF_ERROR(version_of("model", &js.model, &js.has_model));
        if (with->contains("hyperparameters")) js.hyperparameters = (*with)["hyperparameters"];
      } else if (st.kind == "predict") {
        js.kind = jobs::JobKind::kPredict;
        DLSYS_RETURN_IF_ERROR(version_of("model", &js.model, &js.has_model));
        DLSYS_ASSIGN_OR_RETURN(js.output_dataset, with_text(*with, "output", where));
      } else {
        js.kind = jobs::JobKind::kCommand;
        const json& cmd = (*with)["command"];
        if (!cmd.is_array() || cmd.empty())
          return Status::Invalid("{}.command must be a list: the program and its arguments", where);
        // Its environment: `env VAR=value ... program args` (env(1) sets them for the program).
        if (with->contains("env") && (*with)["env"].is_object() && !(*with)["env"].empty()) {
          js.command.push_back("env");
          for (auto it = (*with)["env"].begin(); it != (*with)["env"].end(); ++it)
            js.command.push_back(it.key() + "=" + as_text(it.value()));
        }
        for (const json& a : cmd) js.command.push_back(as_text(a));
        js.working_dir = options_.work_dir;
      }
      // The service's own checks of a job spec, as a submission gets them.
      return jobs::job_spec_from_json(jobs::to_json(js), where).status();
    }();
    if (!built.ok()) return failed_now(built.message());
    meta::NewJob j{js.name,
                   jobs::job_kind_name(js.kind),
                   jobs::to_json(js),
                   0,
                   js.resources.threads,
                   js.resources.memory_bytes,
                   js.max_retries};
    auto id = store_.pipelines().start_job_step(r, j, owner);
    if (!id.ok()) {
      if (id.status().code() == StatusCode::kFailedPrecondition) return Status::OK();
      return id.status();
    }
    r.job_id = *id;
    ++p.changed;
    if (options_.wake_jobs) options_.wake_jobs();
    return Status::OK();
  }
  if (st.kind == "search") {
    // A hyperparameter search (the server's search service runs its trials as jobs), named for
    // the run and step: a step started again after a restart finds it instead of another.
    const std::string where = where_of(run, st, "with");
    auto spec = [&]() -> Result<jobs::SearchSpec> {
      DLSYS_ASSIGN_OR_RETURN(std::string path, with_text(*with, "search", where));
      DLSYS_ASSIGN_OR_RETURN(jobs::SearchSpec sp,
                             jobs::load_search_spec(absolute_in(options_.work_dir, path)));
      DLSYS_ASSIGN_OR_RETURN(std::string data, with_text(*with, "dataset", where, false));
      if (!data.empty()) {
        DLSYS_ASSIGN_OR_RETURN(sp.trial.dataset, jobs::parse_version_ref(data, where + ".dataset"));
        sp.trial.has_dataset = true;
      }
      sp.trial.owner = run.owner;
      sp.name = fmt::format("{}-p{}-{}{}", sp.name, run.id, st.name,
                            r.item >= 0 ? fmt::format("-{}", r.item) : "");
      return sp;
    }();
    if (!spec.ok()) return failed_now(spec.status().message());
    int64_t id = 0;
    DLSYS_ASSIGN_OR_RETURN(auto page, store_.searches().list("", 1000, ""));
    for (const meta::Search& x : page.items)
      if (x.name == spec->name && x.owner == run.owner) id = x.id;
    if (id == 0) {
      DLSYS_ASSIGN_OR_RETURN(meta::Search created,
                             store_.searches().create(spec->name, jobs::to_json(*spec), owner));
      id = created.id;
    }
    r.outputs = {{"search_id", id}};
    if (options_.wake_jobs) options_.wake_jobs();
    return save(p, r, expected);
  }
  // Inline: here (gate, register, alias, notify) or a handler of the server's.
  StepHandler fn;
  if (st.kind == "register" || st.kind == "alias" || st.kind == "notify") {
    fn = [this](const StepCall& c) { return run_builtin(c); };
  } else if (auto h = options_.handlers.find(st.kind); h != options_.handlers.end()) {
    fn = h->second;
  } else {
    return failed_now(
        fmt::format("this server runs no '{}' steps (it was started without them)", st.kind));
  }
  r.runner = options_.runner;
  r.heartbeat_at = now_ms();
  bool won = false;
  DLSYS_RETURN_IF_ERROR(save(p, r, expected, &won, expected_heartbeat));
  if (!won) return Status::OK();  // another runner began it
  auto f = std::make_shared<InFlight>();
  f->key = key_of(run.id, st.name, r.item);
  f->run = run;
  f->spec = p.spec;
  f->call.step = f->spec->step(st.name);
  f->call.item = r.item;
  f->call.with = *with;
  f->call.who = owner;
  f->call.work_dir = options_.work_dir;
  f->fn = std::move(fn);
  f->attempt = r.attempts;
  {
    std::lock_guard<std::mutex> lock(mu_);
    inflight_[f->key] = f;
    queue_.push_back(f);
  }
  work_cv_.notify_one();
  return Status::OK();
}

Status PipelineService::poll_step(Pass& p, const StepSpec& st, StepRun& r) {
  const PipelineRun& run = *p.run;
  const int64_t now = now_ms();
  auto succeed = [&](json outputs) -> Status {
    StepRun before = r;
    r.outputs = std::move(outputs);
    r.state = "SUCCEEDED";
    r.ended_at = now_ms();
    if (r.end_reason.rfind("cache miss", 0) != 0) r.end_reason.clear();
    Status saved = save(p, r, "RUNNING");
    if (saved.code() == StatusCode::kInvalidArgument) {
      // Its outputs cannot be kept (over the size of references): the step fails, saying so.
      r = before;
      r.attempts = st.retries + 1;
      return fail(p, st, r, "RUNNING", "its outputs cannot be recorded: " + saved.message());
    }
    DLSYS_RETURN_IF_ERROR(saved);
    record_lineage(run, st, r);
    if (!r.cache_key.empty())
      return store_.pipelines().cache_put({r.cache_key, st.kind, r.outputs, run.id, st.name});
    return Status::OK();
  };
  if (r.job_id > 0) {
    DLSYS_ASSIGN_OR_RETURN(meta::Job job, store_.jobs().get(r.job_id));
    if (job.state == "QUEUED" || job.state == "RUNNING") return Status::OK();
    // Settled: the service ended the job's run after recording what the attempt left.
    if (job.run_id > 0 && now - job.ended_at < options_.settle_grace_ms) {
      auto jr = store_.runs().get_run(job.run_id);
      if (jr.ok() && jr->status == "RUNNING") return Status::OK();
    }
    if (job.state == "SUCCEEDED") {
      auto out = job_outputs(st, job);
      if (!out.ok()) {
        r.attempts = st.retries + 1;
        return fail(p, st, r, "RUNNING", out.status().message());
      }
      return succeed(std::move(*out));
    }
    r.state = job.state == "CANCELLED" ? "CANCELLED" : "FAILED";
    r.ended_at = now_ms();
    r.end_reason =
        fmt::format("job {} {}: {}", job.id, job.state == "CANCELLED" ? "was cancelled" : "failed",
                    job.end_reason.empty() ? "(no reason recorded)" : job.end_reason);
    return save(p, r, "RUNNING");
  }
  if (st.kind == "search") {
    const int64_t id = r.outputs.value("search_id", int64_t{0});
    DLSYS_ASSIGN_OR_RETURN(meta::Search x, store_.searches().get(id));
    if (x.state == "RUNNING") return Status::OK();
    if (x.state != "SUCCEEDED") {
      r.state = x.state == "CANCELLED" ? "CANCELLED" : "FAILED";
      r.ended_at = now_ms();
      r.end_reason = fmt::format("search {} {}: {}", id,
                                 x.state == "CANCELLED" ? "was cancelled" : "failed", x.end_reason);
      return save(p, r, "RUNNING");
    }
    json out = {{"search_id", id}};
    DLSYS_ASSIGN_OR_RETURN(auto trials, store_.searches().trials(id));
    for (const meta::SearchTrial& t : trials) {
      if (t.trial != x.best_trial) continue;
      DLSYS_ASSIGN_OR_RETURN(meta::Job job, store_.jobs().get(t.job_id));
      out["best_run"] = job.run_id;
      if (auto best = store_.runs().get_run(job.run_id); best.ok())
        for (const auto& [key, m] : best->metrics)
          if (key.rfind("job.", 0) != 0) out["metrics." + key] = m.value;
    }
    if (x.model_version > 0) {
      auto spec = jobs::search_spec_from_json(x.spec, "search");
      if (spec.ok() && !spec->register_model.empty())
        out["model"] = fmt::format("{}@{}", spec->register_model, x.model_version);
    }
    return succeed(std::move(out));
  }
  // An inline step: on a worker of this service, or lost with the process that ran it.
  const std::string key = key_of(run.id, st.name, r.item);
  std::shared_ptr<InFlight> f;
  bool done = false;
  int64_t started = 0;
  Result<json> result = json::object();
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = inflight_.find(key);
    if (it != inflight_.end() && it->second->attempt == r.attempts) f = it->second;
    if (f) {
      done = f->done;
      started = f->started_ms;
      if (done) result = std::move(f->result);
    }
  }
  if (!f) {
    // Begun by a runner that is gone: this one's earlier life (run it again at once), or another
    // whose lease ran out (take it over). Not counted as an attempt.
    if (r.runner != options_.runner && now - r.heartbeat_at < options_.lease_ms)
      return Status::OK();  // another runner has it
    r.attempts -= 1;
    return begin_step(p, st, p.item_of(st, r.item), r, "RUNNING", r.heartbeat_at);
  }
  auto forget = [&] {
    std::lock_guard<std::mutex> lock(mu_);
    f->abandoned = true;
    auto it = inflight_.find(key);
    if (it != inflight_.end() && it->second == f) inflight_.erase(it);
  };
  if (!done) {
    // The clock runs from when a worker took it, not while it waited for one.
    if (st.timeout_seconds > 0 && started > 0 && now - started > st.timeout_seconds * 1000) {
      forget();  // its worker finishes it; the result is dropped
      return fail(p, st, r, "RUNNING",
                  fmt::format("ran longer than its timeout ({} s)", st.timeout_seconds));
    }
    if (now - r.heartbeat_at > options_.lease_ms / 3) {
      StepRun h = r;
      h.heartbeat_at = now;
      bool won = false;
      DLSYS_RETURN_IF_ERROR(save(p, h, "RUNNING", &won, r.heartbeat_at));
      if (won) r = h;
    }
    return Status::OK();
  }
  // Forgotten only once its end is recorded: a database that is away now leaves it for the
  // next pass, not for a second run.
  Status st_saved = !result.ok()           ? fail(p, st, r, "RUNNING", result.status().message())
                    : !result->is_object() ? fail(p, st, r, "RUNNING",
                                                  "its handler gave outputs that are not an object")
                                           : succeed(*result);
  if (st_saved.code() == StatusCode::kUnavailable) {
    std::lock_guard<std::mutex> lock(mu_);
    f->result = std::move(result);
    return st_saved;
  }
  forget();
  return st_saved;
}

Result<int> PipelineService::cancel(Pass& p) {
  bool running = false;
  for (auto& [name, inst] : p.rows)
    for (StepRun& r : inst) {
      if (r.state == "PENDING") {
        r.state = "CANCELLED";
        r.ended_at = now_ms();
        r.end_reason = "the run was cancelled";
        DLSYS_RETURN_IF_ERROR(save(p, r, "PENDING"));
      } else if (r.state == "RUNNING" && r.job_id > 0) {
        DLSYS_ASSIGN_OR_RETURN(meta::Job job, store_.jobs().get(r.job_id));
        if (job.state == "QUEUED" || job.state == "RUNNING") {
          running = true;
          if (!job.cancel_requested) {
            auto c = store_.jobs().cancel(job.id, kRunner);
            if (!c.ok() && c.status().code() != StatusCode::kFailedPrecondition) return c.status();
            if (options_.wake_jobs) options_.wake_jobs();
          }
          continue;
        }
        // A job that finished before the cancel reached it keeps its result (a retry of the
        // run reads its outputs).
        auto out = job.state == "SUCCEEDED" ? job_outputs(*p.spec->step(name), job)
                                            : Result<json>(Status::FailedPrecondition("cancelled"));
        r.state = out.ok() ? "SUCCEEDED" : "CANCELLED";
        r.ended_at = now_ms();
        if (out.ok())
          r.outputs = std::move(*out);
        else
          r.end_reason = "the run was cancelled";
        DLSYS_RETURN_IF_ERROR(save(p, r, "RUNNING"));
      } else if (r.state == "RUNNING" && r.outputs.contains("search_id")) {
        const int64_t id = r.outputs.value("search_id", int64_t{0});
        DLSYS_ASSIGN_OR_RETURN(meta::Search x, store_.searches().get(id));
        if (x.state == "RUNNING") {
          running = true;
          if (!x.cancel_requested) {
            auto c = store_.searches().cancel(id, kRunner);
            if (!c.ok() && c.status().code() != StatusCode::kFailedPrecondition) return c.status();
            if (options_.wake_jobs) options_.wake_jobs();
          }
          continue;
        }
        r.state = "CANCELLED";
        r.ended_at = now_ms();
        r.end_reason = "the run was cancelled";
        DLSYS_RETURN_IF_ERROR(save(p, r, "RUNNING"));
      } else if (r.state == "RUNNING") {
        // An inline step is not interrupted: it ends, then counts as cancelled.
        const std::string key = key_of(p.run->id, name, r.item);
        bool busy = false;
        {
          // One that waits for a worker is not run; one a worker runs ends first.
          std::lock_guard<std::mutex> lock(mu_);
          auto it = inflight_.find(key);
          busy = it != inflight_.end() && !it->second->done && it->second->started_ms > 0;
          if (!busy && it != inflight_.end()) {
            it->second->abandoned = true;
            inflight_.erase(it);
          }
        }
        if (busy) {
          running = true;
          continue;
        }
        r.state = "CANCELLED";
        r.ended_at = now_ms();
        r.end_reason = "the run was cancelled";
        DLSYS_RETURN_IF_ERROR(save(p, r, "RUNNING"));
      }
    }
  if (running) return p.changed;
  auto ended = store_.pipelines().finish_run(
      p.run->id, "CANCELLED", p.run->end_reason.empty() ? "cancelled" : p.run->end_reason);
  if (!ended.ok() && ended.status().code() != StatusCode::kFailedPrecondition)
    return ended.status();
  return p.changed + 1;
}

Result<json> PipelineService::job_outputs(const StepSpec& st, const meta::Job& job) {
  json out = {{"job", job.id}};
  if (job.run_id <= 0) return out;
  out["run"] = job.run_id;
  DLSYS_ASSIGN_OR_RETURN(meta::Run run, store_.runs().get_run(job.run_id));
  for (const auto& [key, m] : run.metrics)
    if (key.rfind("job.", 0) != 0) out["metrics." + key] = m.value;
  if (st.kind == "train") {
    if (store_.runs().get_artifact(job.run_id, "model.onnx").ok()) out["model_file"] = "model.onnx";
  } else if (st.kind == "command") {
    DLSYS_ASSIGN_OR_RETURN(auto arts, store_.runs().list_artifacts(job.run_id, "output/"));
    json paths = json::array();
    for (const auto& a : arts) paths.push_back(a.path);
    out["artifacts"] = paths;
  } else if (st.kind == "predict") {
    auto it = run.tags.find("predict.output");
    if (it == run.tags.end())
      return Status::Internal("predict job {} did not record the dataset version it wrote", job.id);
    out["dataset"] = it->second;
  }
  return out;
}

Result<StepCacheInputs> PipelineService::cache_inputs(const StepSpec& st, const json& with) {
  StepCacheInputs in;
  in.kind = st.kind;
  in.params = with;
  const std::string where = "steps." + st.name + ".with";
  // Dataset versions by their content id, model versions by their file's SHA-256, a run's model
  // by its artifact's: a re-pushed or re-registered input is another key.
  for (const char* field : {"dataset"}) {
    if (!with.contains(field) || !with[field].is_string()) continue;
    const std::string ref = with[field];
    std::string id = ref;
    if (options_.dataset_version) {
      DLSYS_ASSIGN_OR_RETURN(DatasetVersion v, options_.dataset_version(ref));
      id = v.id;
    }
    in.inputs.push_back(fmt::format("dataset {} {}", ref, id));
  }
  for (const char* field : {"model", "compare"}) {
    if (!with.contains(field) || !with[field].is_string()) continue;
    const std::string text = with[field];
    if (!jobs::parse_version_ref(text, field).ok()) continue;  // its text is in the parameters
    auto v = find_model_version(store_, text, where + "." + field);
    in.inputs.push_back(v.ok() ? fmt::format("{} {}@{} {}", field, v->model, v->version, v->sha256)
                               : fmt::format("{} {} absent", field, text));
  }
  if (with.contains("run")) {
    auto run_id = with_int(with, "run", where, 0);
    if (run_id.ok() && *run_id > 0) {
      auto a = store_.runs().get_artifact(*run_id, "model.onnx");
      in.inputs.push_back(fmt::format("run {} {}", *run_id, a.ok() ? a->sha256 : "no model"));
    }
  }
  // Code and files read by content: a train spec, a command's files, a pushed file.
  // Read by content on the runner's thread: regular files only, of a bounded size.
  auto add_file = [&](const std::string& path) -> Status {
    if (path.empty()) return Status::OK();
    const std::string abs = absolute_in(options_.work_dir, path);
    std::error_code ec;
    const auto status = fs::status(abs, ec);
    if (ec || !fs::exists(status))
      return Status::NotFound("{}: '{}' does not exist (relative paths are the server's: {})",
                              where, path, options_.work_dir);
    if (!fs::is_regular_file(status))
      return Status::Invalid(
          "{}: '{}' is not a regular file, so the step cache cannot hash it; give a file, or "
          "set cache: false on the step",
          where, path);
    if (fs::file_size(abs, ec) > kMaxHashedBytes)
      return Status::Invalid(
          "{}: '{}' is over {} GiB, more than the step cache hashes; set cache: false on the step",
          where, path, kMaxHashedBytes >> 30);
    in.code_files.push_back(abs);
    return Status::OK();
  };
  if (st.kind == "train" && with.contains("spec") && with["spec"].is_string())
    DLSYS_RETURN_IF_ERROR(add_file(with["spec"]));
  if (st.kind == "data.push" && with.contains("file") && with["file"].is_string())
    DLSYS_RETURN_IF_ERROR(add_file(with["file"]));
  if (st.kind == "search" && with.contains("search") && with["search"].is_string())
    DLSYS_RETURN_IF_ERROR(add_file(with["search"]));
  if (st.kind == "command" && with.contains("files")) {
    if (!with["files"].is_array())
      return Status::Invalid("{}.files must be a list of the files the command runs", where);
    for (const json& f : with["files"]) DLSYS_RETURN_IF_ERROR(add_file(as_text(f)));
  }
  return in;
}

Status PipelineService::outputs_exist(const json& outputs) {
  auto object_there = [&](const std::string& sha, const std::string& what) -> Status {
    if (!options_.objects) return Status::OK();
    std::error_code ec;
    if (!fs::exists(options_.objects->object_path(sha), ec))
      return Status::NotFound("{} is gone from the artifact store", what);
    return Status::OK();
  };
  auto run_there = [&](int64_t run) -> Status {
    auto r = store_.runs().get_run(run);
    if (!r.ok()) return Status::NotFound("run {} is gone", run);
    return Status::OK();
  };
  int64_t run_id = 0;
  if (outputs.contains("run") && outputs["run"].is_number_integer()) {
    run_id = outputs["run"];
    DLSYS_RETURN_IF_ERROR(run_there(run_id));
  }
  auto artifact_there = [&](const std::string& path) -> Status {
    auto a = store_.runs().get_artifact(run_id, path);
    if (!a.ok()) return Status::NotFound("artifact '{}' of run {} is gone", path, run_id);
    return object_there(a->sha256, fmt::format("artifact '{}' of run {}", path, run_id));
  };
  if (outputs.contains("model_file") && outputs["model_file"].is_string())
    DLSYS_RETURN_IF_ERROR(artifact_there(outputs["model_file"]));
  if (outputs.contains("artifacts") && outputs["artifacts"].is_array())
    for (const json& a : outputs["artifacts"])
      if (a.is_string()) DLSYS_RETURN_IF_ERROR(artifact_there(a));
  if (outputs.contains("dataset") && outputs["dataset"].is_string() && options_.dataset_version) {
    auto there = options_.dataset_version(outputs["dataset"]);
    if (!there.ok())
      return Status::NotFound("dataset version {} is gone ({})",
                              outputs["dataset"].get<std::string>(), there.status().message());
  }
  if (outputs.contains("model") && outputs["model"].is_string()) {
    const std::string m = outputs["model"];
    auto ref = jobs::parse_version_ref(m, "model");
    if (ref.ok() && ref->version > 0) {
      auto v = store_.registry().get_model_version(ref->name, ref->version);
      if (!v.ok()) return Status::NotFound("model version {} is gone", m);
      DLSYS_RETURN_IF_ERROR(object_there(v->sha256, "the file of model version " + m));
    }
  }
  return Status::OK();
}

Result<json> PipelineService::run_builtin(const StepCall& c) {
  const std::string where =
      fmt::format("pipeline '{}' run {}: steps.{}.with", c.run->pipeline, c.run->id, c.step->name);
  const std::string kind = c.step->kind;
  if (kind == "register") {
    DLSYS_ASSIGN_OR_RETURN(int64_t run_id, with_int(c.with, "run", where, 0));
    DLSYS_ASSIGN_OR_RETURN(std::string name, with_text(c.with, "name", where));
    DLSYS_ASSIGN_OR_RETURN(std::string alias, with_text(c.with, "alias", where, false));
    if (run_id <= 0) return Status::Invalid("{}: 'run' must be a run id, got {}", where, run_id);
    // Once per run: a version already registered from it (a step that ran again after a
    // restart) is the one given.
    int64_t version = 0;
    if (auto all = store_.registry().list_model_versions(name); all.ok())
      for (const auto& v : *all)
        if (v.run_id && *v.run_id == run_id) version = v.version;
    if (version == 0) {
      jobs::RunModelRegistration reg{run_id, c.run->owner, name, alias,
                                     fmt::format("registered by pipeline '{}' run {} step '{}'",
                                                 c.run->pipeline, c.run->id, c.step->name)};
      DLSYS_ASSIGN_OR_RETURN(version, jobs::register_run_model(store_, options_.objects,
                                                               options_.validate_model, reg));
    } else if (!alias.empty()) {
      DLSYS_RETURN_IF_ERROR(store_.registry().set_alias(name, alias, version, c.who).status());
    }
    return json{{"model", fmt::format("{}@{}", name, version)}, {"version", version}};
  }
  if (kind == "alias") {
    DLSYS_ASSIGN_OR_RETURN(std::string model, with_text(c.with, "model", where));
    DLSYS_ASSIGN_OR_RETURN(std::string alias, with_text(c.with, "alias", where));
    DLSYS_ASSIGN_OR_RETURN(meta::ModelVersion v,
                           find_model_version(store_, model, where + ".model"));
    DLSYS_RETURN_IF_ERROR(store_.registry().set_alias(v.model, alias, v.version, c.who).status());
    return json{{"model", fmt::format("{}@{}", v.model, v.version)}};
  }
  if (kind == "notify") {
    DLSYS_ASSIGN_OR_RETURN(std::string url, with_text(c.with, "url", where));
    DLSYS_ASSIGN_OR_RETURN(std::string message, with_text(c.with, "message", where, false));
    // http://host:port/path: the client connects to the origin and POSTs to the path.
    const size_t scheme = url.find("://");
    const size_t slash =
        scheme == std::string::npos ? std::string::npos : url.find('/', scheme + 3);
    if (url.rfind("http://", 0) != 0)
      return Status::Invalid("{}.url must be an http:// URL, got '{}'", where, url.substr(0, 200));
    const std::string origin = slash == std::string::npos ? url : url.substr(0, slash);
    const std::string path = slash == std::string::npos ? "/" : url.substr(slash);
    auto client = api::connect_http(origin, "");
    if (!client.ok()) {
      // The client's message speaks of a dlsys server; keep only its cause.
      std::string cause = client.status().message();
      if (size_t at = cause.find(origin); at != std::string::npos)
        cause = cause.substr(at + origin.size());
      if (cause.rfind(": ", 0) == 0) cause = cause.substr(2);
      cause = cause.substr(0, cause.find(';'));
      return Status::Unavailable("notifying {}: nothing answers there ({})", url.substr(0, 200),
                                 cause);
    }
    json body = {{"pipeline", c.run->pipeline},
                 {"run", c.run->id},
                 {"step", c.step->name},
                 {"message", message},
                 {"owner", c.run->owner}};
    DLSYS_RETURN_IF_ERROR((*client)
                              ->call("POST", path, body)
                              .status()
                              .with_context("notifying " + url.substr(0, 200)));
    return json{{"status", 200}};
  }
  return Status::Internal("no built-in step of kind '{}'", kind);
}

Result<int> PipelineService::fire_triggers() {
  const int64_t now = now_ms();
  if (now - triggers_at_ < 1000) return 0;
  triggers_at_ = now;
  DLSYS_ASSIGN_OR_RETURN(std::vector<meta::Pipeline> all, store_.pipelines().list_pipelines());
  int started = 0;
  for (const meta::Pipeline& p : all) {
    // Parsed once per pipeline version, not on every pass.
    auto& [version, spec] = pipeline_specs_[p.id];
    if (!spec || version != p.version) {
      auto parsed = parse_pipeline_spec(p.spec_text, p.name + ".yaml");
      spec =
          std::make_shared<const PipelineSpec>(parsed.ok() ? std::move(*parsed) : PipelineSpec{});
      version = p.version;
    }
    if (spec->triggers.empty()) continue;
    // One triggered run at a time.
    DLSYS_ASSIGN_OR_RETURN(auto running, store_.pipelines().list_runs(p.name, "RUNNING", 100, ""));
    bool busy = std::any_of(running.items.begin(), running.items.end(),
                            [](const PipelineRun& r) { return r.trigger != "manual"; });
    const meta::Principal owner{p.owner, meta::Role::kEditor};
    for (size_t i = 0; i < spec->triggers.size(); ++i) {
      const TriggerSpec& t = spec->triggers[i];
      const std::string key = fmt::format("{}#{}", p.name, i);
      std::string event, value;
      bool timed = false;
      if (t.kind == TriggerSpec::Kind::kCron) {
        auto cron = parse_cron(t.value, key);
        if (!cron.ok()) continue;
        const int64_t minute = now / 60000 * 60;
        auto seen = trigger_slot_.find(key);
        const int64_t from = seen == trigger_slot_.end() ? minute : seen->second + 60;
        trigger_slot_[key] = minute;
        // The latest due minute since the last look (none missed while the server was down).
        for (int64_t m = minute; m >= from && m > minute - 3600 && event.empty(); m -= 60)
          if (cron->matches(m)) {
            event = fmt::format("cron:{}", m);
            value = std::to_string(m);
          }
        timed = true;
      } else if (t.kind == TriggerSpec::Kind::kEvery) {
        const int64_t slot = now / 1000 / t.every_seconds;
        auto seen = trigger_slot_.find(key);
        if (seen == trigger_slot_.end() || seen->second != slot) {
          event = fmt::format("every:{}:{}", t.every_seconds, slot);
          value = std::to_string(slot * t.every_seconds);
        }
        trigger_slot_[key] = slot;
        timed = true;
      } else if (t.kind == TriggerSpec::Kind::kDataset) {
        if (!options_.dataset_version) continue;
        auto v = options_.dataset_version(t.value);
        if (!v.ok()) continue;  // no version yet
        value = v->label;
        event = fmt::format("dataset:{}={}", t.value, v->label);
      } else if (t.kind == TriggerSpec::Kind::kAlias) {
        const size_t at = t.value.find('@');
        auto v =
            store_.registry().get_version_by_alias(t.value.substr(0, at), t.value.substr(at + 1));
        if (!v.ok()) continue;  // not set yet
        value = fmt::format("{}@{}", v->model, v->version);
        event = fmt::format("alias:{}={}", t.value, value);
      }
      if (event.empty() || busy) continue;  // nothing new, or a run goes on (a slot is lost)
      if (!timed && trigger_event_[key] == event) continue;  // started before
      json params = json::object();
      if (!t.param.empty()) params[t.param] = value;
      bool created = false;
      auto run = start_run(p.name, params, t.kind_name(), event, false, owner, &created);
      if (!run.ok()) {
        std::fprintf(stderr, "pipelines: trigger %s of '%s' (%s): %s\n", t.kind_name(),
                     p.name.c_str(), event.c_str(), run.status().message().c_str());
        continue;
      }
      trigger_event_[key] = event;
      if (created) {
        ++started;
        busy = true;
      }
    }
  }
  return started;
}

Result<meta::PipelineRun> PipelineService::fire_alert(const std::string& pipeline,
                                                      const std::string& alert,
                                                      const std::string& event_id, bool* created) {
  DLSYS_ASSIGN_OR_RETURN(meta::Pipeline p, store_.pipelines().get_pipeline(pipeline));
  DLSYS_ASSIGN_OR_RETURN(PipelineSpec spec, parse_pipeline_spec(p.spec_text, p.name + ".yaml"));
  for (const TriggerSpec& t : spec.triggers) {
    if (t.kind != TriggerSpec::Kind::kAlert || (t.value != "*" && t.value != alert)) continue;
    json params = json::object();
    if (!t.param.empty()) params[t.param] = alert;
    return start_run(p.name, params, "alert", "alert:" + event_id, false,
                     meta::Principal{p.owner, meta::Role::kEditor}, created);
  }
  return Status::NotFound(
      "pipeline '{}' has no alert trigger for '{}'; add '- {{alert: {}}}' (or '*') to its "
      "triggers",
      pipeline, alert.substr(0, 80), alert.substr(0, 80));
}

}  // namespace dlsys::flow
