// ModelServer: the deployments one dlsys server serves. Each deployment serves one model
// version at a time (a `ServedVersion`: a ModelRunner and its DynamicBatcher); a deployment
// that follows an alias rolls to the version the alias points at:
//
//   1. a watcher thread notices the alias moved (it polls the registry every `poll`),
//   2. the new version is loaded and warmed beside the old one (every batch bucket planned),
//   3. the deployment's current version is switched (one pointer swap under a mutex): new
//      requests go to the new version,
//   4. the old version is retired: its batcher stops taking requests and drains what it
//      queued, on the reaper thread, and then its memory is freed.
//
// A request that picked the old version just before the switch and finds its batcher stopped
// is handed to the current version instead, so no request fails because of a switch.
//
// Threading: every public method is thread-safe. Callbacks (`InferDone`) run on a batcher
// thread and must not block. Lifetime: the MetaStore and ArtifactStore outlive the server;
// stop() (or the destructor) stops the watcher, drains every version and joins.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
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
#include "serve/batcher.h"
#include "serve/deployment_config.h"
#include "serve/latency_histogram.h"
#include "serve/model_runner.h"
#include "serve/request_sampler.h"
#include "serve/v2_codec.h"

namespace dlsys::serve {

// One loaded model version of a deployment.
struct ServedVersion {
  std::string deployment;
  std::string model;
  int64_t version = 0;
  DeploymentConfig config;
  std::vector<TensorSpec> inputs, outputs;
  // Declared before the batcher: the batcher's callbacks observe into it, so it must outlive
  // the batcher's threads (members are destroyed in reverse order, after ~ServedVersion stops
  // the batcher).
  LatencyHistogram latency;
  std::unique_ptr<ModelRunner> runner;
  std::unique_ptr<DynamicBatcher> batcher;
  double load_seconds = 0;  // open + warm-up
  ~ServedVersion();
};

struct ModelServerOptions {
  std::chrono::milliseconds poll{500};  // how often aliases are checked
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

  // The version of `name` requests go to now (version 0: the current one; otherwise that
  // version, which must be the one loaded). NotFound names what exists.
  Result<std::shared_ptr<ServedVersion>> find(const std::string& name, int64_t version = 0);

  // Called with the version that answered (it differs from the one the request was parsed
  // against when that one was retired meanwhile) and its outputs, or the error.
  using InferDone = std::function<void(int64_t version, Result<std::vector<Tensor>>)>;
  // Queues `request`, parsed against `v` (from find()), on `v`; when `v` was retired meanwhile,
  // on the deployment's current version if its inputs and outputs are the same (else 503: send
  // it again). `done` is called once, on a
  // batcher thread; it must not hold a reference to a ServedVersion (the last reference dropped
  // on a batcher thread would stop that batcher from inside it). Refusals (queue full, too many
  // rows, a priority out of range) come back as the Status, and `done` is not called then.
  Status infer(std::shared_ptr<ServedVersion> v, V2InferRequest& request, InferDone done);

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
    std::shared_ptr<ServedVersion> current;
    std::string last_error;
    int64_t switches = 0;
    int64_t failed_version = 0;  // the version whose load failed last (0: none)
  };
  Result<std::shared_ptr<ServedVersion>> load(const meta::Deployment& d, int64_t version,
                                              const DeploymentConfig& config);
  Result<int64_t> resolve(const meta::Deployment& d);
  void retire(std::shared_ptr<ServedVersion> v);
  void watch_loop();
  void reap_loop();

  meta::MetaStore& store_;
  meta::ArtifactStore& objects_;
  ModelServerOptions options_;

  std::mutex mu_;  // guards slots_
  std::map<std::string, Slot> slots_;
  std::mutex apply_mu_;  // one load/switch at a time

  std::mutex reap_mu_;
  std::condition_variable reap_cv_;
  std::vector<std::shared_ptr<ServedVersion>> retired_;
  std::mutex watch_mu_;
  std::condition_variable watch_cv_;
  bool stopping_ = false;
  std::thread watcher_, reaper_;
  std::atomic<bool> started_{false};
  std::shared_ptr<RequestSampler> sampler_;  // null without options_.sample_dir
};

}  // namespace dlsys::serve
