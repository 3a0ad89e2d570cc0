#include "serve/model_server.h"

#include <fmt/format.h>

#include <cctype>

namespace dlsys::serve {

namespace {

bool all_digits(const std::string& s) {
  if (s.empty() || s.size() > 12) return false;
  for (char c : s)
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

std::vector<TensorSpec> specs_of(const std::vector<TensorMeta>& metas) {
  std::vector<TensorSpec> out;
  for (const auto& m : metas) out.push_back({m.name, m.dtype, m.shape});
  return out;
}

}  // namespace

ServedVersion::~ServedVersion() {
  // The batcher's workers call into the runner: stop them (drain) before the runner goes.
  if (batcher) batcher->stop();
}

ModelServer::ModelServer(meta::MetaStore& store, meta::ArtifactStore& objects,
                         ModelServerOptions options)
    : store_(store), objects_(objects), options_(options) {
  if (!options_.sample_dir.empty())
    sampler_ = std::make_shared<RequestSampler>(RequestSamplerOptions{.dir = options_.sample_dir});
}

ModelServer::~ModelServer() {
  stop();
}

Status ModelServer::start() {
  if (started_.exchange(true)) return Status::OK();
  reaper_ = std::thread([this] { reap_loop(); });
  watcher_ = std::thread([this] { watch_loop(); });
  DLSYS_ASSIGN_OR_RETURN(std::vector<meta::Deployment> all, store_.deployments().list());
  for (const auto& d : all) {
    Status st = apply(d);
    if (!st.ok())
      std::fprintf(stderr, "serve: deployment '%s' is not served: %s\n", d.name.c_str(),
                   st.message().c_str());
  }
  return Status::OK();
}

void ModelServer::stop() {
  {
    std::lock_guard<std::mutex> lock(watch_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  watch_cv_.notify_all();
  if (watcher_.joinable()) watcher_.join();
  std::map<std::string, Slot> slots;
  {
    std::lock_guard<std::mutex> lock(mu_);
    slots.swap(slots_);
  }
  for (auto& [name, slot] : slots)
    if (slot.current) retire(std::move(slot.current));
  { std::lock_guard<std::mutex> lock(reap_mu_); }
  reap_cv_.notify_all();
  if (reaper_.joinable()) reaper_.join();
  // Anything retired after the reaper left (not expected) drains here.
  {
    std::lock_guard<std::mutex> lock(reap_mu_);
    retired_.clear();
  }
  if (sampler_) sampler_->stop();  // every batcher drained: write the last samples
}

Result<int64_t> ModelServer::resolve(const meta::Deployment& d) {
  if (all_digits(d.ref)) {
    int64_t v = std::stoll(d.ref);
    DLSYS_RETURN_IF_ERROR(store_.registry().get_model_version(d.model, v).status());
    return v;
  }
  DLSYS_ASSIGN_OR_RETURN(meta::ModelVersion mv,
                         store_.registry().get_version_by_alias(d.model, d.ref));
  return mv.version;
}

Result<std::shared_ptr<ServedVersion>> ModelServer::load(const meta::Deployment& d, int64_t version,
                                                         const DeploymentConfig& config) {
  auto t0 = std::chrono::steady_clock::now();
  DLSYS_ASSIGN_OR_RETURN(meta::ModelVersion mv,
                         store_.registry().get_model_version(d.model, version));
  if (mv.status == "ARCHIVED")
    return Status::Invalid("version {} of model '{}' is archived; set it READY to serve it",
                           version, d.model);
  DLSYS_ASSIGN_OR_RETURN(std::string path, objects_.open_verified(mv.sha256));
  ModelRunnerOptions ro;
  ro.instances = static_cast<int>(config.instances);
  ro.threads = static_cast<int>(config.threads);
  ro.precision = config.precision;
  ro.max_batch = config.max_batch;
  auto served = std::make_shared<ServedVersion>();
  served->deployment = d.name;
  served->model = d.model;
  served->version = version;
  served->config = config;
  DLSYS_ASSIGN_OR_RETURN(served->runner, ModelRunner::open(path, ro));
  DLSYS_RETURN_IF_ERROR(served->runner->warm_up());
  served->inputs = specs_of(served->runner->inputs());
  served->outputs = specs_of(served->runner->outputs());
  BatcherOptions bo;
  bo.max_batch = config.max_batch;
  bo.max_delay_us = config.max_delay_us;
  bo.max_queue = config.max_queue;
  bo.instances = static_cast<int>(config.instances);
  bo.priority_levels = static_cast<int>(config.priority_levels);
  bo.buckets = served->runner->buckets();
  ModelRunner* runner = served->runner.get();
  DLSYS_ASSIGN_OR_RETURN(
      served->batcher, DynamicBatcher::create(
                           bo, [runner](int instance, const std::vector<Tensor>& in, int64_t rows) {
                             return runner->run(instance, in, rows);
                           }));
  served->load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return served;
}

Status ModelServer::apply(const meta::Deployment& d) {
  std::lock_guard<std::mutex> serial(apply_mu_);
  DLSYS_ASSIGN_OR_RETURN(DeploymentConfig config, parse_deployment_config(d.config));
  Result<int64_t> version = resolve(d);
  Result<std::shared_ptr<ServedVersion>> loaded =
      version.ok() ? load(d, *version, config)
                   : Result<std::shared_ptr<ServedVersion>>(version.status());
  std::shared_ptr<ServedVersion> old;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Slot& slot = slots_[d.name];
    if (!loaded.ok()) {
      // What was served stays, with the spec it was served under; a deployment with nothing
      // served yet keeps the new spec (the watcher loads it when its alias moves).
      if (!slot.current) slot.spec = d;
      slot.last_error = loaded.status().message();
      slot.failed_version = version.ok() ? *version : 0;
      return loaded.status();
    }
    slot.spec = d;
    slot.last_error.clear();
    slot.failed_version = 0;
    old = std::move(slot.current);
    slot.current = std::move(*loaded);
    if (old) ++slot.switches;
  }
  if (old) retire(std::move(old));
  return Status::OK();
}

Status ModelServer::remove(const std::string& name) {
  std::shared_ptr<ServedVersion> old;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = slots_.find(name);
    if (it == slots_.end()) return Status::NotFound("deployment '{}' is not served", name);
    old = std::move(it->second.current);
    slots_.erase(it);
  }
  if (old) retire(std::move(old));
  return Status::OK();
}

Result<std::shared_ptr<ServedVersion>> ModelServer::find(const std::string& name, int64_t version) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = slots_.find(name);
  if (it == slots_.end())
    return Status::NotFound("no deployment '{}'; list them with GET /api/v1/deployments",
                            name.substr(0, 64));
  const auto& cur = it->second.current;
  if (!cur)
    return Status::Unavailable(
        "deployment '{}' has no version loaded: {}", name,
        it->second.last_error.empty() ? "it is loading" : it->second.last_error);
  if (version != 0 && cur->version != version)
    return Status::NotFound("deployment '{}' serves version {} of '{}', not version {}", name,
                            cur->version, cur->model, version);
  return cur;
}

static bool same_specs(const std::vector<TensorSpec>& a, const std::vector<TensorSpec>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].name != b[i].name || a[i].dtype != b[i].dtype || a[i].shape != b[i].shape)
      return false;
  return true;
}

Status ModelServer::infer(std::shared_ptr<ServedVersion> v, V2InferRequest& request,
                          InferDone done) {
  const std::string name = v->deployment;
  // Request sampling: decided once; recorded with the answer (an id is generated if none).
  std::shared_ptr<PendingSample> sample =
      sampler_ ? sampler_->begin(v->config.sample_rate, name, request, v->outputs) : nullptr;
  // A version retired between find() and submit() refuses with "shutting down": the request
  // goes to the version that replaced it (a few tries: switches are rare).
  for (int attempt = 0;; ++attempt) {
    Request r;
    r.rows = request.batch_rows;
    for (auto& in : request.inputs) r.inputs.push_back(in.tensor);
    int64_t timeout_us = request.timeout_us ? *request.timeout_us : v->config.timeout_ms * 1000;
    r.deadline = Clock::now() + std::chrono::microseconds(timeout_us);
    r.priority = static_cast<int>(request.priority.value_or(0));
    if (r.priority >= v->config.priority_levels)
      return Status::Invalid("parameter priority {} is out of range 0..{} for deployment '{}'",
                             r.priority, v->config.priority_levels - 1, name);
    // Raw pointer: the histogram outlives the batcher's threads (see ServedVersion).
    r.done = [done, version = v->version, hist = &v->latency, t0 = Clock::now(), sample,
              sampler = sample ? sampler_ : nullptr,
              model = sample ? v->model : std::string()](Result<std::vector<Tensor>> out) {
      const int64_t us =
          std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
      hist->observe(us);
      if (sampler && out.ok()) sampler->finish(sample, model, version, us, *out);
      done(version, std::move(out));
    };
    Status st = v->batcher->submit(std::move(r));
    bool retired = st.code() == StatusCode::kUnavailable &&
                   st.message().find("shutting down") != std::string::npos;
    if (!retired || attempt >= 3) return st;
    DLSYS_ASSIGN_OR_RETURN(std::shared_ptr<ServedVersion> next, find(name));
    if (!same_specs(next->inputs, v->inputs) || !same_specs(next->outputs, v->outputs))
      return Status::Unavailable(
          "deployment '{}' switched to version {} with other inputs or outputs while the "
          "request was arriving; send it again",
          name, next->version);
    v = std::move(next);
  }
}

void ModelServer::retire(std::shared_ptr<ServedVersion> v) {
  {
    std::lock_guard<std::mutex> lock(reap_mu_);
    retired_.push_back(std::move(v));
  }
  reap_cv_.notify_all();
}

void ModelServer::reap_loop() {
  for (;;) {
    std::vector<std::shared_ptr<ServedVersion>> batch;
    {
      std::unique_lock<std::mutex> lock(reap_mu_);
      reap_cv_.wait(lock, [&] {
        std::lock_guard<std::mutex> w(watch_mu_);
        return !retired_.empty() || stopping_;
      });
      batch.swap(retired_);
      if (batch.empty()) {
        std::lock_guard<std::mutex> w(watch_mu_);
        if (stopping_) return;
      }
    }
    // Drain first (requests still queued on the old version finish), then free. In-flight
    // requests hold their own reference, so the memory goes when the last one is answered.
    for (auto& v : batch)
      if (v->batcher) v->batcher->stop();
    batch.clear();
  }
}

void ModelServer::watch_loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(watch_mu_);
      if (watch_cv_.wait_for(lock, options_.poll, [&] { return stopping_; })) return;
    }
    struct Watched {
      meta::Deployment spec;
      int64_t served, failed;
    };
    std::vector<Watched> watched;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [name, slot] : slots_)
        if (!all_digits(slot.spec.ref))
          watched.push_back(
              {slot.spec, slot.current ? slot.current->version : 0, slot.failed_version});
    }
    for (const auto& [d, served, failed] : watched) {
      Result<int64_t> want = resolve(d);
      // A version that failed to load is not tried again on every poll; the next alias move is.
      if (!want.ok() || *want == served || *want == failed) continue;
      Status st = apply(d);
      if (!st.ok())
        std::fprintf(stderr, "serve: deployment '%s' stays on version %lld: %s\n", d.name.c_str(),
                     static_cast<long long>(served), st.message().c_str());
    }
  }
}

json ModelServer::status(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = slots_.find(name);
  if (it == slots_.end()) return json{{"name", name}, {"state", "not loaded"}};
  const Slot& s = it->second;
  json j = {{"name", name}, {"model", s.spec.model}, {"ref", s.spec.ref}, {"switches", s.switches}};
  if (!s.last_error.empty()) j["last_error"] = s.last_error;
  if (!s.current) {
    j["state"] = s.last_error.empty() ? "loading" : "failed";
    return j;
  }
  const ServedVersion& v = *s.current;
  BatcherStats st = v.batcher->stats();
  j["state"] = "ready";
  j["version"] = v.version;
  j["load_seconds"] = v.load_seconds;
  j["memory_bytes"] = v.runner->memory_bytes();
  j["config"] = deployment_config_json(v.config);
  j["stats"] = {{"queue_depth", st.queue_depth}, {"done", st.done},
                {"rejected", st.rejected},       {"expired", st.expired},
                {"failed", st.failed},           {"batches", st.batches},
                {"queue_us", st.queue_us},       {"compute_us", st.compute_us}};
  return j;
}

json ModelServer::status_all() {
  std::vector<std::string> names;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, slot] : slots_) names.push_back(name);
  }
  json out = json::array();
  for (const auto& n : names) out.push_back(status(n));
  return out;
}

bool ModelServer::all_ready() {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [name, slot] : slots_)
    if (!slot.current) return false;
  return true;
}

std::string ModelServer::metrics_text() {
  // Families first, then one sample line per (deployment, version): Prometheus wants each
  // family's lines together.
  struct Row {
    std::string labels;
    BatcherStats st;
    LatencyHistogram::Snapshot latency, queue, compute;
    int64_t memory;
    double load_seconds;
    int64_t max_batch;
  };
  std::vector<Row> rows;
  std::vector<std::string> names;  // the histograms are snapshots: nothing is read later
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, slot] : slots_) {
      if (!slot.current) continue;
      const ServedVersion& v = *slot.current;
      // Deployment names are [A-Za-z0-9_-]: nothing in them needs escaping.
      rows.push_back({fmt::format("deployment=\"{}\",version=\"{}\"", name, v.version),
                      v.batcher->stats(), v.latency.snapshot(), v.batcher->queue_time().snapshot(),
                      v.batcher->compute_time().snapshot(), v.runner->memory_bytes(),
                      v.load_seconds, v.config.max_batch});
      names.push_back(name);
    }
  }
  std::string out;
  auto family = [&](const char* name, const char* type, const char* help) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  };
  family("dlsys_serve_requests_total", "counter",
         "Inference requests by outcome: success, rejected (queue full, too many rows), timeout "
         "(deadline passed in the queue), error.");
  for (const auto& r : rows) {
    std::pair<const char*, int64_t> outcomes[] = {{"success", r.st.done},
                                                  {"rejected", r.st.rejected},
                                                  {"timeout", r.st.expired},
                                                  {"error", r.st.failed}};
    for (const auto& [o, n] : outcomes)
      out += fmt::format("dlsys_serve_requests_total{{{},outcome=\"{}\"}} {}\n", r.labels, o, n);
  }
  family("dlsys_serve_request_duration_seconds", "histogram",
         "Time from a request's arrival at the batcher to its answer (queue and compute).");
  for (const auto& r : rows)
    append_histogram(&out, "dlsys_serve_request_duration_seconds", r.labels, r.latency);
  family("dlsys_serve_batch_size", "histogram", "Real rows per batch run.");
  for (const auto& r : rows) {
    uint64_t cum = 0, sum = 0;
    for (int64_t le = 1;; le *= 2) {
      int64_t top = std::min(le, r.max_batch);
      for (int64_t k = le / 2 + 1; k <= top && k < static_cast<int64_t>(r.st.batch_rows.size());
           ++k) {
        cum += static_cast<uint64_t>(r.st.batch_rows[k]);
        sum += static_cast<uint64_t>(r.st.batch_rows[k] * k);
      }
      out += fmt::format("dlsys_serve_batch_size_bucket{{{},le=\"{}\"}} {}\n", r.labels, top, cum);
      if (top >= r.max_batch) break;
    }
    out += fmt::format("dlsys_serve_batch_size_bucket{{{},le=\"+Inf\"}} {}\n", r.labels, cum);
    out += fmt::format("dlsys_serve_batch_size_sum{{{}}} {}\n", r.labels, sum);
    out += fmt::format("dlsys_serve_batch_size_count{{{}}} {}\n", r.labels, cum);
  }
  family("dlsys_serve_queue_depth", "gauge", "Requests waiting in the batcher's queue now.");
  for (const auto& r : rows)
    out += fmt::format("dlsys_serve_queue_depth{{{}}} {}\n", r.labels, r.st.queue_depth);
  // Queue and compute time: histograms, and their _sum again under the counter names they had
  // before (docs/serving.md), from the same snapshot so the two agree in every scrape.
  family("dlsys_serve_queue_duration_seconds", "histogram",
         "Per request that ran: arrival at the batcher to its batch starting.");
  for (const auto& r : rows)
    append_histogram(&out, "dlsys_serve_queue_duration_seconds", r.labels, r.queue);
  family("dlsys_serve_compute_duration_seconds", "histogram",
         "Per batch run: the model's wall time on one instance.");
  for (const auto& r : rows)
    append_histogram(&out, "dlsys_serve_compute_duration_seconds", r.labels, r.compute);
  family("dlsys_serve_queue_seconds_total", "counter",
         "Time requests that ran spent queued, summed (= dlsys_serve_queue_duration_seconds_sum).");
  for (const auto& r : rows)
    out += fmt::format("dlsys_serve_queue_seconds_total{{{}}} {:.6f}\n", r.labels,
                       r.queue.sum_us / 1e6);
  family("dlsys_serve_compute_seconds_total", "counter",
         "Time batches spent running, summed (= dlsys_serve_compute_duration_seconds_sum).");
  for (const auto& r : rows)
    out += fmt::format("dlsys_serve_compute_seconds_total{{{}}} {:.6f}\n", r.labels,
                       r.compute.sum_us / 1e6);
  family("dlsys_serve_model_memory_bytes", "gauge",
         "Weights and activation arenas a loaded version holds (ModelRunner::memory_bytes).");
  for (const auto& r : rows)
    out += fmt::format("dlsys_serve_model_memory_bytes{{{}}} {}\n", r.labels, r.memory);
  family("dlsys_serve_model_load_seconds", "gauge",
         "Time to load and warm the version (open, plan every bucket, run once).");
  for (const auto& r : rows)
    out += fmt::format("dlsys_serve_model_load_seconds{{{}}} {:.6f}\n", r.labels, r.load_seconds);
  if (sampler_) out += sampler_->metrics_text(names);  // per deployment, not per version
  return out;
}

}  // namespace dlsys::serve
