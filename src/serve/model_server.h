// ModelServer: the deployments one dlsys server serves. Each deployment serves one model
// version at a time (a `ServedVersion`: a ModelRunner and its DynamicBatcher); a deployment
// that follows an alias rolls to the version the alias points at:
//
//   1. a watcher thread notices the alias moved (it polls the registry every `poll`),
//   2. the new version is loaded and warmed beside the old one (every batch bucket planned), on
//      the planner thread at nice +10 so that the serving threads keep the cores they need,
//   3. the deployment's current version is switched (one pointer swap under a mutex): new
//      requests go to the new version,
//   4. the old version is retired: its batcher stops taking requests and drains what it
//      queued, on the reaper thread, and then its memory is freed.
//
// A request that picked the old version just before the switch and finds its batcher stopped
// is handed to the current version instead, so no request fails because of a switch.
//
// Besides the version it serves (the primary), a deployment may load two more (config.canary,
// config.shadow; see deployment_config.h): a canary answers `weight` percent of the requests
// (sticky per routing key: the same X-Request-Key always lands on the same side), and a shadow
// gets a copy of every request, its answers compared with the served ones (ShadowStats) and
// never returned. promote() makes the canary the primary (an alias move when the deployment
// follows an alias of the canary's model), rollback() drops it; neither reloads anything.
//
// Autoscaling: a version with config.max_instances > 0 starts at min_instances; at each poll
// the watcher feeds its batcher's queue depth and busy time to its AutoscalePolicy and adds
// (open, plan, warm, then activate) or removes (park, then free) one instance.
//
// Replicas: servers sharing one metadata database follow each other: each poll, the watcher
// applies stored deployments that are new or whose updated_at changed, and removes deleted ones.
//
// Memory: with a budget (ModelServerOptions::memory_budget_bytes), after a load the least
// recently used deployments are unloaded (evicted) until the loaded versions fit; an evicted
// deployment is loaded again when a request arrives (when_loaded()), and its cold start is
// measured. Unloaded memory goes back to the system (the reaper trims the heap).
//
// Threading: every public method is thread-safe. Callbacks (`InferDone`) run on a batcher
// thread and must not block. Lifetime: the MetaStore and ArtifactStore outlive the server;
// stop() (or the destructor) stops the watcher, drains every version and joins.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/status.h"
#include "meta/artifact_store.h"
#include "meta/meta_store.h"
#include "serve/autoscaler.h"
#include "serve/batcher.h"
#include "serve/deployment_config.h"
#include "serve/latency_histogram.h"
#include "serve/model_runner.h"
#include "serve/request_sampler.h"
#include "serve/response_cache.h"
#include "serve/shadow.h"
#include "serve/v2_codec.h"

namespace dlsys::serve {

// One loaded model version of a deployment.
struct ServedVersion {
  std::string deployment;
  std::string model;
  int64_t version = 0;
  DeploymentConfig config;
  std::vector<TensorSpec> inputs, outputs;
  // The columns and derived outputs its dlsys metadata offers (serve/v2_extras.h); shared with
  // requests in flight, which must not hold the version itself.
  std::shared_ptr<const V2ModelExtras> extras;
  // Declared before the batcher: the batcher's callbacks observe into it, so it must outlive
  // the batcher's threads (members are destroyed in reverse order, after ~ServedVersion stops
  // the batcher).
  LatencyHistogram latency;
  std::unique_ptr<ResponseCache> cache;  // null unless config.cache_mb > 0
  // Null unless config.max_instances > 0; fed and acted on by the watcher thread only.
  std::unique_ptr<AutoscalePolicy> autoscale;
  std::string temp_file;  // a file the runner reads (int8: the quantized copy); removed at the end
  std::unique_ptr<ModelRunner> runner;
  std::unique_ptr<DynamicBatcher> batcher;
  double load_seconds = 0;  // open + warm-up
  ~ServedVersion();
};

struct ModelServerOptions {
  std::chrono::milliseconds poll{500};  // how often aliases are checked
  int64_t memory_budget_bytes = 0;      // across every loaded version (memory_bytes()); 0: none
  // Request sampling's log root (DATA_DIR/samples); "" turns sampling off whatever the
  // deployments' sample_rate says.
  std::string sample_dir;
};

class ModelServer {
 public:
  ModelServer(meta::MetaStore& store, meta::ArtifactStore& objects, ModelServerOptions options);
  ~ModelServer();
  ModelServer(const ModelServer&) = delete;
  ModelServer& operator=(const ModelServer&) = delete;

  // Loads every stored deployment (one that fails to load is reported in status(), not fatal)
  // and starts the alias watcher.
  Status start();
  // Stops the watcher and drains and unloads every version. Idempotent.
  void stop();

  // Creates or changes a deployment (after it was stored): resolves its ref, loads and warms
  // that version and switches to it. Errors (unknown version, a model that cannot be served
  // batched, a bad config) leave whatever was served before in place.
  Status apply(const meta::Deployment& d);
  // Stops serving `name` (drains first).
  Status remove(const std::string& name);

  // The version of `name` a request goes to now. Version 0 without `routing_key`: the primary
  // (metadata requests). Version 0 with one: the primary, or the canary for its share of
  // requests, chosen by a hash of *routing_key when it is not empty (the same key always gets the
  // same side, on every server) and at random when it is. Another version: that one, which must
  // be loaded (primary, canary or shadow). NotFound names what exists; an evicted deployment is
  // Unavailable (call when_loaded()).
  Result<std::shared_ptr<ServedVersion>> find(const std::string& name, int64_t version = 0,
                                              const std::string* routing_key = nullptr);
  // When `name` was evicted to stay within the memory budget: starts loading it again (once,
  // however many requests wait), calls `ready` on the loader thread when that ends (loaded or
  // not: call find() again) and returns true. Otherwise returns false and does not call `ready`.
  bool when_loaded(const std::string& name, std::function<void()> ready);

  // Makes the canary of `name` its primary (the canary's ServedVersion keeps serving; nothing is
  // reloaded): when the deployment follows an alias of the canary's model, the alias is moved to
  // the canary's version (as `who`); otherwise the deployment is pinned to it. The stored
  // deployment loses its canary. InvalidArgument when there is no canary.
  Result<meta::Deployment> promote(const std::string& name, const meta::Principal& who);
  // Drops the canary of `name` (and unloads it); the stored deployment loses its canary.
  Result<meta::Deployment> rollback(const std::string& name, const meta::Principal& who);

  // Called with the version that answered (it differs from the one the request was parsed
  // against when that one was retired meanwhile) and its outputs, or the error.
  using InferDone = std::function<void(int64_t version, Result<std::vector<Tensor>>)>;
  // Queues `request`, parsed against `v` (from find()), on `v`; when `v` was retired meanwhile,
  // on the deployment's current version if its inputs and outputs are the same (else 503: send
  // it again). `done` is called once, on a
  // batcher thread; it must not hold a reference to a ServedVersion (the last reference dropped
  // on a batcher thread would stop that batcher from inside it). Refusals (queue full, too many
  // rows, a priority out of range) come back as the Status, and `done` is not called then.
  // With a response cache, a repeated request is answered from it at once (on the calling
  // thread). With a shadow, a copy goes to the shadow version after `request` was accepted.
  Status infer(std::shared_ptr<ServedVersion> v, V2InferRequest& request, InferDone done);

  // Versions retired and not yet unloaded (drained and freed by the reaper); for tests.
  size_t retired_pending();

  // A deployment's state for `dlsys deploy show` and GET /api/v1/deployments/{name}: the
  // version served, whether it is ready, its last load error, batcher statistics.
  json status(const std::string& name);
  // Every deployment's state.
  json status_all();
  // True when every stored deployment is being served (GET /v2/health/ready).
  bool all_ready();
  // The serving metrics in Prometheus text format, labelled by deployment and version only
  // (a version's series go when it is unloaded): requests by outcome (success, rejected,
  // timeout, error), request latency histogram, batches and their sizes, queue depth, queue and
  // compute time histograms (and their sums under the older counter names), memory held and
  // load time.
  std::string metrics_text();

 private:
  struct Slot {
    meta::Deployment spec;
    std::shared_ptr<ServedVersion> current;         // the primary
    std::shared_ptr<ServedVersion> canary, shadow;  // null unless configured
    int64_t canary_weight = 0;
    std::shared_ptr<ShadowStats> shadow_stats = std::make_shared<ShadowStats>();
    std::string last_error;
    int64_t switches = 0;
    int64_t failed_version = 0;  // the version whose load failed last (0: none)
    // The stored deployment's updated_at when this server last applied it (loaded or not): the
    // watcher applies a stored deployment again only when it changed (another server sharing
    // the metadata database, a replica, changed it).
    int64_t stored_at = 0;
    // Memory budget: when the deployment was last asked for (steady clock, ns); evicted
    // deployments have no versions loaded and reload on demand.
    int64_t last_used_ns = 0;
    bool evicted = false;
    bool reloading = false;
    std::vector<std::function<void()>> waiters;  // called when a reload ends
    int64_t evictions = 0, cold_starts = 0;
    double last_cold_start_seconds = 0;
  };
  Result<std::shared_ptr<ServedVersion>> load(const std::string& deployment,
                                              const std::string& model, int64_t version,
                                              const DeploymentConfig& config);
  Result<int64_t> resolve(const meta::Deployment& d);
  Status apply_locked(const meta::Deployment& d);  // apply() with apply_mu_ held
  // Unloads the least recently used deployments other than `keep` until the loaded versions
  // fit the budget. Called with mu_ held; what it unloads goes to `out` (retired by the caller).
  void evict_locked(const std::string& keep, std::vector<std::shared_ptr<ServedVersion>>* out);
  Result<meta::Deployment> store_without_canary(
      const std::string& name, const meta::Principal& who,
      const std::function<Status(meta::Deployment&)>& edit);
  void retire(std::shared_ptr<ServedVersion> v);
  void watch_loop();
  // Applies stored deployments that are new or changed since this server applied them, and
  // removes those deleted: replicas sharing one metadata database follow each other's changes.
  void follow_store();
  void autoscale_step();
  void reap_loop();
  // Reloads queued deployments (to_reload_) on the loader_ thread.
  void load_loop();
  // ModelRunner::open and warm_up on the planner_ thread at nice kLoaderNice (every load:
  // deployments created, alias moves, reloads); returns when it is done.
  Result<std::unique_ptr<ModelRunner>> open_and_warm_in_background(const std::string& path,
                                                                   const ModelRunnerOptions& ro);
  void plan_loop();  // the planner_ thread: runs plan_jobs_ in order
  static constexpr int kLoaderNice = 10;

  meta::MetaStore& store_;
  meta::ArtifactStore& objects_;
  ModelServerOptions options_;

  std::mutex mu_;  // guards slots_
  std::map<std::string, Slot> slots_;
  std::mutex apply_mu_;  // one load/switch at a time

  std::mutex reap_mu_;
  std::condition_variable reap_cv_;
  std::vector<std::shared_ptr<ServedVersion>> retired_;
  size_t reaping_ = 0;  // versions the reaper is draining now
  std::mutex watch_mu_;
  std::condition_variable watch_cv_;
  bool stopping_ = false;
  std::mutex load_mu_;
  std::condition_variable load_cv_;
  std::vector<std::string> to_reload_;  // evicted deployments a request is waiting for
  std::thread watcher_, reaper_, loader_;
  // The planner thread (started by the first load) and its queue; stop() ends it last.
  std::thread planner_;
  std::mutex plan_mu_;
  std::condition_variable plan_cv_;
  std::deque<std::function<void()>> plan_jobs_;
  bool plan_stop_ = false;
  std::atomic<bool> started_{false};
  std::shared_ptr<RequestSampler> sampler_;  // null without options_.sample_dir
};

}  // namespace dlsys::serve
