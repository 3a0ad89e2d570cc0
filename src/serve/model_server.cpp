#include "serve/model_server.h"

#include "core/file_util.h"
#include "graph/quantize/quantize.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <future>
#include <random>
#include <set>
#if defined(__GLIBC__)
#include <malloc.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace dlsys::serve {

namespace {

bool all_digits(const std::string& s) {
  if (s.empty() || s.size() > 12) return false;
  for (char c : s)
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// FNV-1a of the routing key, in 0..99: stable across processes and replicas, so a key lands on
// the same side of a canary split on every server.
int64_t bucket_of(const std::string& key) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : key) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return static_cast<int64_t>(h % 100);
}

int64_t random_bucket() {
  thread_local std::minstd_rand rng(std::random_device{}());
  return static_cast<int64_t>(rng() % 100);
}

int64_t memory_of(const std::shared_ptr<ServedVersion>& v) {
  return v ? v->runner->memory_bytes() : 0;
}

}  // namespace

ServedVersion::~ServedVersion() {
  // The batcher's workers call into the runner: stop them (drain) before the runner goes.
  if (batcher) batcher->stop();
  batcher.reset();
  runner.reset();
  if (!temp_file.empty()) {
    std::error_code ec;
    std::filesystem::remove(temp_file, ec);
  }
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
  loader_ = std::thread([this] { load_loop(); });
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
  { std::lock_guard<std::mutex> lock(load_mu_); }
  load_cv_.notify_all();
  if (loader_.joinable()) loader_.join();
  {
    std::lock_guard<std::mutex> lock(plan_mu_);
    plan_stop_ = true;  // loads from now on run on their caller's thread
  }
  plan_cv_.notify_all();
  if (planner_.joinable()) planner_.join();
  std::map<std::string, Slot> slots;
  {
    std::lock_guard<std::mutex> lock(mu_);
    slots.swap(slots_);
  }
  for (auto& [name, slot] : slots) {
    for (auto* v : {&slot.current, &slot.canary, &slot.shadow})
      if (*v) retire(std::move(*v));
    for (auto& w : slot.waiters) w();  // they find the deployment gone
  }
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

Result<std::shared_ptr<ServedVersion>> ModelServer::load(const std::string& deployment,
                                                         const std::string& model, int64_t version,
                                                         const DeploymentConfig& config) {
  auto t0 = std::chrono::steady_clock::now();
  DLSYS_ASSIGN_OR_RETURN(meta::ModelVersion mv,
                         store_.registry().get_model_version(model, version));
  if (mv.status == "ARCHIVED")
    return Status::Invalid("version {} of model '{}' is archived; set it READY to serve it",
                           version, model);
  DLSYS_ASSIGN_OR_RETURN(std::string path, objects_.open_verified(mv.sha256));
  std::string quantized;  // precision int8: the version with int8 weights, removed when the version
                          // is freed
  if (config.int8) {
    quantized = (std::filesystem::temp_directory_path() /
                 fmt::format("dlsys-int8-{}-{}.onnx", mv.sha256.substr(0, 16), random_hex(8)))
                    .string();
    QuantizeOptions qo;
    qo.dynamic = true;
    Status q = quantize_model(path, Tensor(), quantized, qo).status();
    if (!q.ok()) {
      std::error_code ec;
      std::filesystem::remove(quantized, ec);
      return q.with_context(fmt::format(
          "precision int8 (dynamic quantization of MatMul/Gemm weights) for version {} of '{}'; "
          "for a convolutional model register one quantized with `dlsys quantize` and serve it "
          "at fp32",
          version, model));
    }
    path = quantized;
  }
  // Removed when the version is freed, or now if it does not load: add_instance() reads it.
  struct RemoveUnlessKept {
    std::string f;
    ~RemoveUnlessKept() {
      std::error_code ec;
      if (!f.empty()) std::filesystem::remove(f, ec);
    }
  } remove_unless_kept{quantized};
  ModelRunnerOptions ro;
  const bool autoscaled = config.max_instances > 0;
  ro.instances = static_cast<int>(autoscaled ? config.min_instances : config.instances);
  ro.max_instances = static_cast<int>(autoscaled ? config.max_instances : config.instances);
  ro.threads = static_cast<int>(config.threads);
  ro.precision = config.precision;
  ro.max_batch = config.max_batch;
  auto served = std::make_shared<ServedVersion>();
  served->deployment = deployment;
  served->model = model;
  served->version = version;
  served->config = config;
  DLSYS_ASSIGN_OR_RETURN(served->runner, open_and_warm_in_background(path, ro));
  served->inputs = served->runner->inputs();
  served->outputs = served->runner->outputs();
  served->extras = std::make_shared<const V2ModelExtras>(
      v2_model_extras(served->runner->metadata(), served->inputs, served->outputs));
  if (config.cache_mb > 0)
    served->cache = std::make_unique<ResponseCache>(config.cache_mb * (int64_t{1} << 20));
  BatcherOptions bo;
  bo.max_batch = config.max_batch;
  bo.max_delay_us = config.max_delay_us;
  bo.max_queue = config.max_queue;
  bo.instances = ro.instances;
  bo.max_instances = ro.max_instances;
  bo.priority_levels = static_cast<int>(config.priority_levels);
  bo.buckets = served->runner->buckets();
  // A request that finds an idle instance runs on the thread that received it when batches take
  // under 200 us (and max_delay_us is 0): no hand-off for a fast model at low load.
  bo.inline_below_us = 200;
  // Under overload, a request the queue cannot reach before its deadline is refused at once.
  bo.shed_late = true;
  ModelRunner* runner = served->runner.get();
  DLSYS_ASSIGN_OR_RETURN(
      served->batcher, DynamicBatcher::create(
                           bo, [runner](int instance, const std::vector<Tensor>& in, int64_t rows) {
                             return runner->run(instance, in, rows);
                           }));
  if (autoscaled) {
    served->autoscale = std::make_unique<AutoscalePolicy>();
    served->autoscale->min_instances = ro.instances;
    served->autoscale->max_instances = ro.max_instances;
    served->autoscale->threads_per_instance = static_cast<int>(config.threads);
    served->autoscale->cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  served->temp_file = std::move(remove_unless_kept.f);
  served->load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return served;
}

Result<std::unique_ptr<ModelRunner>> ModelServer::open_and_warm_in_background(
    const std::string& path, const ModelRunnerOptions& ro) {
  // On the planner thread, at nice kLoaderNice: opening, planning and warming every bucket
  // takes the cores only when the serving threads leave them idle, so a rollout (or a reload)
  // does not slow the traffic it replaces. The batcher's instance threads are started by the
  // caller afterwards, at the process's priority (Linux threads inherit the nice value of the
  // thread that starts them, and lowering it back needs CAP_SYS_NICE). One long-lived thread,
  // not one per load: a thread per load gives glibc a malloc arena per load, whose freed
  // memory the process keeps.
  auto work = [&path, &ro]() -> Result<std::unique_ptr<ModelRunner>> {
    DLSYS_ASSIGN_OR_RETURN(std::unique_ptr<ModelRunner> runner, ModelRunner::open(path, ro));
    DLSYS_RETURN_IF_ERROR(runner->warm_up());
    return runner;
  };
  std::promise<Result<std::unique_ptr<ModelRunner>>> done;
  auto answer = done.get_future();
  {
    std::lock_guard<std::mutex> lock(plan_mu_);
    if (plan_stop_) return work();  // stopping: on the caller's thread
    if (!planner_.joinable()) planner_ = std::thread([this] { plan_loop(); });
    plan_jobs_.push_back([&] { done.set_value(work()); });
  }
  plan_cv_.notify_one();
  return answer.get();
}

void ModelServer::plan_loop() {
  (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), kLoaderNice);
  (void)::pthread_setname_np(::pthread_self(), "dlsys-load");
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(plan_mu_);
      plan_cv_.wait(lock, [&] { return !plan_jobs_.empty() || plan_stop_; });
      if (plan_jobs_.empty()) return;  // stopping, and every caller was answered
      job = std::move(plan_jobs_.front());
      plan_jobs_.pop_front();
    }
    job();
  }
}

Status ModelServer::apply(const meta::Deployment& d) {
  std::lock_guard<std::mutex> serial(apply_mu_);
  return apply_locked(d);
}

Status ModelServer::apply_locked(const meta::Deployment& d) {
  DLSYS_ASSIGN_OR_RETURN(DeploymentConfig config, parse_deployment_config(d.config));
  // What is loaded now may be reused: a promote makes the canary the primary without a reload,
  // and an update that only changes the canary does not reload the primary.
  std::vector<std::shared_ptr<ServedVersion>> loaded_now;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = slots_.find(d.name); it != slots_.end())
      for (const auto& v : {it->second.current, it->second.canary, it->second.shadow})
        if (v) loaded_now.push_back(v);
  }
  auto obtain = [&](const std::string& model,
                    int64_t version) -> Result<std::shared_ptr<ServedVersion>> {
    for (const auto& v : loaded_now)
      if (v->model == model && v->version == version && same_runtime(v->config, config)) return v;
    return load(d.name, model, version, config);
  };
  Result<int64_t> version = resolve(d);
  Result<std::shared_ptr<ServedVersion>> primary =
      version.ok() ? obtain(d.model, *version)
                   : Result<std::shared_ptr<ServedVersion>>(version.status());
  // A canary or shadow that is the primary itself (after a promote) is not loaded twice.
  auto is_primary = [&](const std::optional<TrafficTarget>& t) {
    return t && version.ok() && t->model == d.model && t->version == *version;
  };
  std::shared_ptr<ServedVersion> canary, shadow;
  if (primary.ok() && config.canary && !is_primary(config.canary)) {
    auto c = obtain(config.canary->model, config.canary->version);
    if (c.ok()) {
      canary = std::move(*c);
    } else {
      primary = c.status().with_context(
          fmt::format("canary {}@{}", config.canary->model, config.canary->version));
    }
  }
  if (primary.ok() && config.shadow && !is_primary(config.shadow)) {
    auto sh = obtain(config.shadow->model, config.shadow->version);
    if (sh.ok()) {
      shadow = std::move(*sh);
    } else {
      primary = sh.status().with_context(
          fmt::format("shadow {}@{}", config.shadow->model, config.shadow->version));
    }
  }
  if (primary.ok() && (canary || shadow) && options_.memory_budget_bytes > 0 &&
      memory_of(*primary) + memory_of(canary) + memory_of(shadow) > options_.memory_budget_bytes)
    primary = Status::Invalid(
        "deployment '{}' needs {} MiB for its versions, more than the serving memory budget of "
        "{} MiB; raise --serve-memory-mb or serve fewer versions",
        d.name, (memory_of(*primary) + memory_of(canary) + memory_of(shadow)) >> 20,
        options_.memory_budget_bytes >> 20);
  else if (primary.ok() && options_.memory_budget_bytes > 0 &&
           memory_of(*primary) > options_.memory_budget_bytes)
    primary = Status::Invalid(
        "version {} of '{}' needs {} MiB, more than the serving memory budget of {} MiB; raise "
        "--serve-memory-mb",
        (*primary)->version, d.model, memory_of(*primary) >> 20,
        options_.memory_budget_bytes >> 20);
  std::vector<std::shared_ptr<ServedVersion>> old;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Slot& slot = slots_[d.name];
    if (!primary.ok()) {
      // What was served stays, with the spec it was served under; a deployment with nothing
      // served yet keeps the new spec (the watcher loads it when its alias moves).
      if (!slot.current) slot.spec = d;
      slot.stored_at = d.updated_at;  // tried: not again until the stored spec changes
      slot.last_error = primary.status().message();
      slot.failed_version = version.ok() ? *version : 0;
      return primary.status();
    }
    slot.spec = d;
    slot.stored_at = d.updated_at;
    slot.last_error.clear();
    slot.failed_version = 0;
    slot.evicted = false;
    slot.last_used_ns = now_ns();
    if (slot.current && slot.current != *primary) ++slot.switches;
    if (slot.shadow != shadow) slot.shadow_stats = std::make_shared<ShadowStats>();
    for (auto* v : {&slot.current, &slot.canary, &slot.shadow})
      if (*v && *v != *primary && *v != canary && *v != shadow) old.push_back(std::move(*v));
    slot.current = std::move(*primary);
    slot.canary = std::move(canary);
    slot.shadow = std::move(shadow);
    slot.canary_weight = slot.canary ? config.canary->weight : 0;
    evict_locked(d.name, &old);
  }
  for (auto& v : old) retire(std::move(v));
  return Status::OK();
}

void ModelServer::evict_locked(const std::string& keep,
                               std::vector<std::shared_ptr<ServedVersion>>* out) {
  if (options_.memory_budget_bytes <= 0) return;
  auto slot_bytes = [](const Slot& s) {
    return memory_of(s.current) + memory_of(s.canary) + memory_of(s.shadow);
  };
  int64_t total = 0;
  for (const auto& [name, slot] : slots_) total += slot_bytes(slot);
  while (total > options_.memory_budget_bytes) {
    Slot* lru = nullptr;
    for (auto& [name, slot] : slots_)
      if (name != keep && slot.current && (!lru || slot.last_used_ns < lru->last_used_ns))
        lru = &slot;
    if (!lru) return;  // only `keep` is loaded, and apply() checked that it fits alone
    total -= slot_bytes(*lru);
    for (auto* v : {&lru->current, &lru->canary, &lru->shadow})
      if (*v) out->push_back(std::move(*v));
    lru->evicted = true;
    ++lru->evictions;
    std::fprintf(
        stderr, "serve: unloaded deployment '%s' to stay within the memory budget (%.1f MiB)\n",
        lru->spec.name.c_str(), static_cast<double>(options_.memory_budget_bytes) / (1 << 20));
  }
}

bool ModelServer::when_loaded(const std::string& name, std::function<void()> ready) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = slots_.find(name);
    if (it == slots_.end() || !it->second.evicted) return false;
    it->second.waiters.push_back(std::move(ready));
    if (it->second.reloading) return true;
    it->second.reloading = true;
  }
  {
    std::lock_guard<std::mutex> lock(load_mu_);
    to_reload_.push_back(name);
  }
  load_cv_.notify_all();
  return true;
}

void ModelServer::load_loop() {
  // Reloads an evicted version when a request asks for it; the heavy part of a load runs at
  // low priority (open_and_warm_in_background), this thread at the process's priority, so the
  // batcher threads it starts are not niced.
  (void)::pthread_setname_np(::pthread_self(), "dlsys-reload");
  for (;;) {
    std::string name;
    {
      std::unique_lock<std::mutex> lock(load_mu_);
      load_cv_.wait(lock, [&] {
        std::lock_guard<std::mutex> w(watch_mu_);
        return !to_reload_.empty() || stopping_;
      });
      {
        std::lock_guard<std::mutex> w(watch_mu_);
        if (stopping_) return;  // stop() answers the waiters
      }
      name = to_reload_.front();
      to_reload_.erase(to_reload_.begin());
    }
    meta::Deployment spec;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = slots_.find(name);
      if (it == slots_.end()) continue;
      spec = it->second.spec;
    }
    auto t0 = std::chrono::steady_clock::now();
    Status st = apply(spec);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::vector<std::function<void()>> waiters;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = slots_.find(name);
      if (it == slots_.end()) continue;
      Slot& slot = it->second;
      slot.reloading = false;
      waiters.swap(slot.waiters);
      if (st.ok()) {
        ++slot.cold_starts;
        slot.last_cold_start_seconds = seconds;
      } else {
        // Requests that wait get the error; the next request tries again.
        slot.evicted = !slot.current;
      }
    }
    if (!st.ok())
      std::fprintf(stderr, "serve: reloading deployment '%s' failed: %s\n", name.c_str(),
                   st.message().c_str());
    for (auto& w : waiters) w();
  }
}

Result<meta::Deployment> ModelServer::store_without_canary(
    const std::string& name, const meta::Principal& who,
    const std::function<Status(meta::Deployment&)>& edit) {
  DLSYS_ASSIGN_OR_RETURN(meta::Deployment d, store_.deployments().get(name));
  DLSYS_ASSIGN_OR_RETURN(DeploymentConfig c, parse_deployment_config(d.config));
  if (!c.canary)
    return Status::Invalid(
        "deployment '{}' has no canary; add one with `dlsys deploy update {} --canary "
        "MODEL@VERSION --weight 10`",
        name, name);
  DLSYS_RETURN_IF_ERROR(edit(d));
  d.config.erase("canary");
  DLSYS_RETURN_IF_ERROR(apply(d));
  return store_.deployments().update(d, who);
}

Result<meta::Deployment> ModelServer::promote(const std::string& name, const meta::Principal& who) {
  return store_without_canary(name, who, [&](meta::Deployment& d) -> Status {
    DLSYS_ASSIGN_OR_RETURN(DeploymentConfig c, parse_deployment_config(d.config));
    if (c.canary->model == d.model && !all_digits(d.ref)) {
      // Promote is an alias move: everything that follows the alias sees it.
      return store_.registry().set_alias(d.model, d.ref, c.canary->version, who).status();
    }
    d.model = c.canary->model;
    d.ref = std::to_string(c.canary->version);
    return Status::OK();
  });
}

Result<meta::Deployment> ModelServer::rollback(const std::string& name,
                                               const meta::Principal& who) {
  return store_without_canary(name, who, [](meta::Deployment&) { return Status::OK(); });
}

Status ModelServer::remove(const std::string& name) {
  std::vector<std::shared_ptr<ServedVersion>> old;
  std::vector<std::function<void()>> waiters;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = slots_.find(name);
    if (it == slots_.end()) return Status::NotFound("deployment '{}' is not served", name);
    for (auto* v : {&it->second.current, &it->second.canary, &it->second.shadow})
      if (*v) old.push_back(std::move(*v));
    waiters.swap(it->second.waiters);
    slots_.erase(it);
  }
  for (auto& v : old) retire(std::move(v));
  for (auto& w : waiters) w();  // they find the deployment gone
  return Status::OK();
}

Result<std::shared_ptr<ServedVersion>> ModelServer::find(const std::string& name, int64_t version,
                                                         const std::string* routing_key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = slots_.find(name);
  if (it == slots_.end())
    return Status::NotFound("no deployment '{}'; list them with GET /api/v1/deployments",
                            name.substr(0, 64));
  Slot& slot = it->second;
  if (slot.evicted)
    return Status::Unavailable(
        "deployment '{}' was unloaded to stay within the serving memory budget and is loading "
        "again; retry in a moment",
        name);
  const auto& cur = slot.current;
  if (!cur)
    return Status::Unavailable("deployment '{}' has no version loaded: {}", name,
                               slot.last_error.empty() ? "it is loading" : slot.last_error);
  slot.last_used_ns = now_ns();
  if (version != 0) {
    for (const auto& v : {slot.current, slot.canary, slot.shadow})
      if (v && v->version == version) return v;
    return Status::NotFound(
        "deployment '{}' serves version {} of '{}'{}, not version {}", name, cur->version,
        cur->model, slot.canary ? fmt::format(" (canary {})", slot.canary->version) : "", version);
  }
  if (routing_key && slot.canary && slot.canary_weight > 0) {
    int64_t b = routing_key->empty() ? random_bucket() : bucket_of(*routing_key);
    if (b < slot.canary_weight) return slot.canary;
  }
  return cur;
}

static bool same_specs(const std::vector<TensorSpec>& a, const std::vector<TensorSpec>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].name != b[i].name || a[i].dtype != b[i].dtype || a[i].shape != b[i].shape)
      return false;
  return true;
}

// Whether columns assembled for `a` mean the same to `b`: the same features in the same order,
// with the same vocabularies.
static bool same_columns(const ServedVersion& a, const ServedVersion& b) {
  const V2ModelExtras &x = *a.extras, &y = *b.extras;
  if (x.features.size() != y.features.size()) return false;
  for (size_t i = 0; i < x.features.size(); ++i)
    if (x.features[i].name != y.features[i].name ||
        x.features[i].categorical != y.features[i].categorical)
      return false;
  return x.metadata.vocabularies == y.metadata.vocabularies;
}

// Whether `request`, parsed against `a`, means the same to `b`: its columns (if it sent them),
// and for derived outputs the same task and class names (the answer's derived outputs are
// computed with `a`'s metadata).
static bool same_meaning(const V2InferRequest& request, const ServedVersion& a,
                         const ServedVersion& b) {
  if (request.columns && !same_columns(a, b)) return false;
  for (const auto& o : request.outputs)
    if (o.derived && (a.extras->metadata.task != b.extras->metadata.task ||
                      a.extras->metadata.class_names != b.extras->metadata.class_names))
      return false;
  return true;
}

Status ModelServer::infer(std::shared_ptr<ServedVersion> v, V2InferRequest& request,
                          InferDone done) {
  const std::string name = v->deployment;
  // Request sampling: decided once; recorded with the answer (an id is generated if none).
  std::shared_ptr<PendingSample> sample =
      sampler_ ? sampler_->begin(v->config.sample_rate, name, request, v->outputs) : nullptr;
  if (v->cache) {
    std::vector<Tensor> inputs;
    for (auto& in : request.inputs) inputs.push_back(in.tensor);
    CacheKey key = cache_key(inputs);
    if (auto hit = v->cache->get(key)) {
      v->latency.observe(0);
      if (sample) sampler_->finish(sample, v->model, v->version, 0, *hit);
      done(v->version, std::move(*hit));
      return Status::OK();
    }
    // Stored by the version that answers (the one asked, unless it was retired meanwhile).
    done = [done = std::move(done), key, cache = v->cache.get(), asked = v->version](
               int64_t version, Result<std::vector<Tensor>> out) {
      // `cache` lives as long as the batcher whose thread calls this (see ServedVersion).
      if (out.ok() && version == asked) cache->put(key, *out);
      done(version, std::move(out));
    };
  }
  // Shadow traffic: a copy of a request to the primary or the canary goes to the shadow.
  std::shared_ptr<ServedVersion> shadow;
  std::shared_ptr<ShadowPair> pair;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = slots_.find(name);
    if (it != slots_.end() && it->second.shadow && it->second.shadow != v) {
      shadow = it->second.shadow;
      pair = std::make_shared<ShadowPair>(it->second.shadow_stats);
    }
  }
  if (pair) {
    done = [done = std::move(done), pair](int64_t version, Result<std::vector<Tensor>> out) {
      pair->served(out);
      done(version, std::move(out));
    };
  }
  // A version retired between find() and submit() refuses with "shutting down": the request
  // goes to the version that replaced it (a few tries: switches are rare).
  Status st;
  for (int attempt = 0;; ++attempt) {
    Request r;
    r.rows = request.batch_rows;
    for (auto& in : request.inputs) r.inputs.push_back(in.tensor);
    int64_t timeout_us = request.timeout_us ? *request.timeout_us : v->config.timeout_ms * 1000;
    // The deadline counts from the request's first byte: the time it waited in the socket and
    // for the I/O thread is part of what its caller waits.
    const Clock::time_point start =
        request.received == Clock::time_point{} ? Clock::now() : request.received;
    // Two waits for the I/O thread fall outside the clock above: the request's bytes waited in
    // the socket before it read them, and the answer waits to be written. The server measures
    // the second (answer_delay_us) and takes the first to be as long: the batcher works to a
    // deadline twice that much earlier (at most a quarter of the timeout). At 2x overload on a
    // shared core, 1x left the client's p99 at 50.7-50.9 ms for a 50 ms timeout (the server's
    // own p99 48.3-48.8); 2x gave 48.1-48.2.
    const int64_t reserve_us =
        std::clamp<int64_t>(2 * request.answer_delay_us, 0, std::max<int64_t>(0, timeout_us) / 4);
    r.deadline = start + std::chrono::microseconds(timeout_us - reserve_us);
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
    st = v->batcher->submit(std::move(r));
    bool retired = st.code() == StatusCode::kUnavailable &&
                   st.message().find("shutting down") != std::string::npos;
    if (!retired || attempt >= 3) break;
    DLSYS_ASSIGN_OR_RETURN(std::shared_ptr<ServedVersion> next, find(name));
    if (!same_specs(next->inputs, v->inputs) || !same_specs(next->outputs, v->outputs) ||
        !same_meaning(request, *v, *next))
      return Status::Unavailable(
          "deployment '{}' switched to version {} with other inputs or outputs while the "
          "request was arriving; send it again",
          name, next->version);
    v = std::move(next);
  }
  if (!st.ok() || !pair) return st;
  // The copy: the least urgent priority, the shadow's own deadline; a refusal (queue full, other
  // inputs) is counted and never delays or fails the served request.
  Request copy;
  copy.rows = request.batch_rows;
  for (auto& in : request.inputs) copy.inputs.push_back(in.tensor);
  copy.priority = static_cast<int>(shadow->config.priority_levels - 1);
  copy.deadline = Clock::now() + std::chrono::milliseconds(shadow->config.timeout_ms);
  copy.done = [pair, hist = &shadow->latency, t0 = Clock::now()](Result<std::vector<Tensor>> out) {
    hist->observe(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count());
    pair->shadow(out);
  };
  std::shared_ptr<ShadowStats> stats;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = slots_.find(name);
    if (it != slots_.end()) stats = it->second.shadow_stats;
  }
  if (!same_specs(shadow->inputs, v->inputs) || (request.columns && !same_columns(*v, *shadow)) ||
      !shadow->batcher->submit(std::move(copy)).ok())
    if (stats) stats->dropped.fetch_add(1, std::memory_order_relaxed);
  return st;
}

size_t ModelServer::retired_pending() {
  std::lock_guard<std::mutex> lock(reap_mu_);
  return retired_.size() + reaping_;
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
      reaping_ = batch.size();
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
#if defined(__GLIBC__)
    // Give freed arenas and weights back to the system (glibc keeps freed heap otherwise).
    malloc_trim(0);
#endif
    std::lock_guard<std::mutex> lock(reap_mu_);
    reaping_ = 0;
  }
}

void ModelServer::follow_store() {
  auto stored = store_.deployments().list();
  if (!stored.ok()) return;  // the database is away: try again next poll
  std::vector<meta::Deployment> changed;
  std::vector<std::string> gone;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::set<std::string> names;
    for (const auto& d : *stored) {
      names.insert(d.name);
      auto it = slots_.find(d.name);
      if (it == slots_.end() || it->second.stored_at != d.updated_at) changed.push_back(d);
    }
    // Only deployments that came from the store (stored_at set) can be gone from it.
    for (const auto& [name, slot] : slots_)
      if (!names.count(name) && slot.stored_at != 0) gone.push_back(name);
  }
  for (const auto& listed : changed) {
    // Decided again under apply_mu_ from a fresh read: a route may have applied a newer spec
    // since the list was taken (it applies before it stores), which must not be undone.
    std::lock_guard<std::mutex> serial(apply_mu_);
    auto fresh = store_.deployments().get(listed.name);
    if (!fresh.ok()) continue;
    const meta::Deployment& d = *fresh;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = slots_.find(d.name);
      if (it != slots_.end() && it->second.stored_at == d.updated_at) continue;
    }
    Status st = apply_locked(d);
    if (!st.ok())
      std::fprintf(stderr, "serve: deployment '%s' changed in the store but is not served: %s\n",
                   d.name.c_str(), st.message().c_str());
  }
  // The list may predate a deployment created since: ask again before removing.
  for (const auto& name : gone) {
    auto still = store_.deployments().get(name);
    if (!still.ok() && still.status().code() == StatusCode::kNotFound) (void)remove(name);
  }
}

void ModelServer::watch_loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(watch_mu_);
      if (watch_cv_.wait_for(lock, options_.poll, [&] { return stopping_; })) return;
    }
    autoscale_step();
    follow_store();
    struct Watched {
      meta::Deployment spec;
      int64_t served, failed;
    };
    std::vector<Watched> watched;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [name, slot] : slots_)
        if (!all_digits(slot.spec.ref) && !slot.evicted)
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

namespace {

json version_state(const ServedVersion& v) {
  BatcherStats st = v.batcher->stats();
  json j = {{"model", v.model},
            {"version", v.version},
            {"load_seconds", v.load_seconds},
            {"memory_bytes", v.runner->memory_bytes()},
            {"instances", v.runner->instances()},
            {"stats",
             {{"queue_depth", st.queue_depth},
              {"done", st.done},
              {"rejected", st.rejected},
              {"expired", st.expired},
              {"failed", st.failed},
              {"batches", st.batches},
              {"queue_us", st.queue_us},
              {"compute_us", st.compute_us}}}};
  if (v.autoscale)
    j["autoscale"] = {{"min_instances", v.autoscale->min_instances},
                      {"max_instances", v.autoscale->max_instances},
                      {"scale_ups", v.autoscale->scale_ups.load()},
                      {"scale_downs", v.autoscale->scale_downs.load()}};
  if (v.cache) {
    CacheStats c = v.cache->stats();
    j["cache"] = {{"hits", c.hits},   {"misses", c.misses},     {"entries", c.entries},
                  {"bytes", c.bytes}, {"capacity", c.capacity}, {"evictions", c.evictions}};
  }
  return j;
}

}  // namespace

void ModelServer::autoscale_step() {
  std::vector<std::shared_ptr<ServedVersion>> scaled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, slot] : slots_)
      for (const auto& v : {slot.current, slot.canary, slot.shadow})
        if (v && v->autoscale) scaled.push_back(v);
  }
  for (const auto& v : scaled) {
    BatcherStats st = v->batcher->stats();
    AutoscaleSample s;
    s.queue_depth = st.queue_depth;
    s.compute_us = st.compute_us;
    s.at_us = std::chrono::duration_cast<std::chrono::microseconds>(
                  std::chrono::steady_clock::now().time_since_epoch())
                  .count();
    s.active = st.active_instances;
    int step = v->autoscale->decide(s);
    if (step > 0) {
      // Open, plan and warm the instance before it takes a batch.
      Status added = v->runner->add_instance();
      if (added.ok())
        v->batcher->set_active(v->runner->instances());
      else
        std::fprintf(stderr, "serve: deployment '%s' could not add an instance: %s\n",
                     v->deployment.c_str(), added.message().c_str());
    } else if (step < 0) {
      // Park the last instance (waits for its batch), then free it.
      v->batcher->set_active(v->runner->instances() - 1);
      (void)v->runner->remove_instance();
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
  if (s.evictions || s.cold_starts)
    j["memory_budget"] = {{"evictions", s.evictions},
                          {"cold_starts", s.cold_starts},
                          {"last_cold_start_seconds", s.last_cold_start_seconds}};
  if (!s.current) {
    j["state"] = s.evicted ? "evicted" : s.last_error.empty() ? "loading" : "failed";
    return j;
  }
  const ServedVersion& v = *s.current;
  j["state"] = "ready";
  j.update(version_state(v));
  j["model"] = s.spec.model;  // the deployment's model (a promoted canary may be another)
  j["config"] = deployment_config_json(v.config);
  if (s.canary) {
    j["canary"] = version_state(*s.canary);
    j["canary"]["weight"] = s.canary_weight;
  }
  if (s.shadow) {
    j["shadow"] = version_state(*s.shadow);
    const ShadowStats& ss = *s.shadow_stats;
    int64_t agreed = ss.agreed.load(), disagreed = ss.disagreed.load();
    j["shadow"]["comparison"] = {
        {"agreed", agreed},
        {"disagreed", disagreed},
        {"failed", ss.failed.load()},
        {"dropped", ss.dropped.load()},
        {"agreement", agreed + disagreed ? json(static_cast<double>(agreed) / (agreed + disagreed))
                                         : json(nullptr)}};
  }
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
    if (!slot.current && !slot.evicted) return false;  // evicted ones load on demand
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
    std::optional<CacheStats> cache;
  };
  struct SlotRow {
    std::string labels;  // deployment only
    int64_t evictions, cold_starts;
    double cold_start_seconds;
    std::shared_ptr<ShadowStats> shadow;  // null without a shadow
  };
  std::vector<SlotRow> slot_rows;
  std::vector<Row> rows;
  std::vector<std::string> names;  // the histograms are snapshots: nothing is read later
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, slot] : slots_) {
      slot_rows.push_back({fmt::format("deployment=\"{}\"", name), slot.evictions, slot.cold_starts,
                           slot.last_cold_start_seconds,
                           slot.shadow ? slot.shadow_stats : nullptr});
      names.push_back(name);
      std::pair<const char*, const std::shared_ptr<ServedVersion>*> roles[] = {
          {"primary", &slot.current}, {"canary", &slot.canary}, {"shadow", &slot.shadow}};
      for (const auto& [role, p] : roles) {
        if (!*p) continue;
        const ServedVersion& v = **p;
        // Deployment and model names are [A-Za-z0-9_.-]: nothing in them needs escaping.
        rows.push_back({fmt::format("deployment=\"{}\",model=\"{}\",version=\"{}\",role=\"{}\"",
                                    name, v.model, v.version, role),
                        v.batcher->stats(), v.latency.snapshot(),
                        v.batcher->queue_time().snapshot(), v.batcher->compute_time().snapshot(),
                        v.runner->memory_bytes(), v.load_seconds, v.config.max_batch,
                        v.cache ? std::optional<CacheStats>(v.cache->stats()) : std::nullopt});
      }
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
    int64_t hits = r.cache ? r.cache->hits : 0;  // answered from the cache: successes too
    std::pair<const char*, int64_t> outcomes[] = {{"success", r.st.done + hits},
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
  family("dlsys_serve_instances", "gauge",
         "Model instances taking batches now (changes with autoscaling).");
  for (const auto& r : rows)
    out += fmt::format("dlsys_serve_instances{{{}}} {}\n", r.labels, r.st.active_instances);
  family("dlsys_serve_model_load_seconds", "gauge",
         "Time to load and warm the version (open, plan every bucket, run once).");
  for (const auto& r : rows)
    out += fmt::format("dlsys_serve_model_load_seconds{{{}}} {:.6f}\n", r.labels, r.load_seconds);
  family("dlsys_serve_cache_requests_total", "counter",
         "Response cache lookups by result (hit, miss), for versions with a cache.");
  for (const auto& r : rows)
    if (r.cache)
      for (const auto& [o, n] :
           {std::pair{"hit", r.cache->hits}, std::pair{"miss", r.cache->misses}})
        out += fmt::format("dlsys_serve_cache_requests_total{{{},result=\"{}\"}} {}\n", r.labels, o,
                           n);
  family("dlsys_serve_cache_bytes", "gauge", "Bytes the response cache holds.");
  for (const auto& r : rows)
    if (r.cache) out += fmt::format("dlsys_serve_cache_bytes{{{}}} {}\n", r.labels, r.cache->bytes);
  family("dlsys_serve_shadow_comparisons_total", "counter",
         "Shadow copies by outcome: agree and disagree (both answered), failed (the shadow "
         "errored), dropped (the shadow's queue refused the copy).");
  for (const auto& sr : slot_rows)
    if (sr.shadow)
      for (const auto& [o, n] : {std::pair{"agree", sr.shadow->agreed.load()},
                                 std::pair{"disagree", sr.shadow->disagreed.load()},
                                 std::pair{"failed", sr.shadow->failed.load()},
                                 std::pair{"dropped", sr.shadow->dropped.load()}})
        out += fmt::format("dlsys_serve_shadow_comparisons_total{{{},outcome=\"{}\"}} {}\n",
                           sr.labels, o, n);
  family("dlsys_serve_evictions_total", "counter",
         "Times the deployment was unloaded to stay within the serving memory budget.");
  for (const auto& sr : slot_rows)
    out += fmt::format("dlsys_serve_evictions_total{{{}}} {}\n", sr.labels, sr.evictions);
  family("dlsys_serve_cold_starts_total", "counter",
         "Reloads of an evicted deployment that a request waited for.");
  for (const auto& sr : slot_rows)
    out += fmt::format("dlsys_serve_cold_starts_total{{{}}} {}\n", sr.labels, sr.cold_starts);
  family("dlsys_serve_cold_start_seconds", "gauge",
         "The last cold start's time: the reload a waiting request saw, load and warm-up.");
  for (const auto& sr : slot_rows)
    out += fmt::format("dlsys_serve_cold_start_seconds{{{}}} {:.6f}\n", sr.labels,
                       sr.cold_start_seconds);
  if (sampler_) out += sampler_->metrics_text(names);  // per deployment, not per version
  return out;
}

}  // namespace dlsys::serve
