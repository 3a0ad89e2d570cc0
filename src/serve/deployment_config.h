// A deployment's serving configuration: what `dlsys deploy create` and POST /api/v1/deployments
// accept, stored as the deployment's "config" object (meta/deployments.h) and read back here
// with every field checked ("config.max_batch must be an integer in 1..1024, got 0").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "meta/deployments.h"
#include "ops/attribute.h"

namespace dlsys::serve {

using json = nlohmann::json;

// Another model version that takes part of a deployment's traffic: a canary answers `weight`
// percent of the requests; a shadow gets a copy of every request and its answers are compared
// with the served ones, never returned. Pinned versions only (an alias would move under them).
struct TrafficTarget {
  std::string model;
  int64_t version = 0;
  int64_t weight = 0;  // canary only: percent of requests, 0..100
};

struct DeploymentConfig {
  int64_t max_batch = 32;       // rows per batch
  int64_t max_delay_us = 2000;  // how long a batch waits to fill
  int64_t instances = 1;        // model instances (each its own plans and threads)
  // Autoscaling (serve/autoscaler.h) when max_instances > 0: starts at min_instances and adds or
  // removes instances between the two by queue depth and busy time; `instances` is then unused.
  int64_t min_instances = 0, max_instances = 0;
  int64_t threads = 1;                    // intra-op threads per instance
  Precision precision = Precision::kF32;  // the engine's float precision (fp32 or bf16)
  // "int8": the version's MatMul/Gemm weights are quantized to int8 when it loads (dynamic
  // quantization: activations are quantized per batch at run time, so no calibration data is
  // needed); the rest runs at `precision`.
  bool int8 = false;
  int64_t max_queue = 256;      // requests waiting; more get 503
  int64_t timeout_ms = 1000;    // a request's deadline unless it sets its own
  int64_t priority_levels = 2;  // request parameter "priority": 0 (most urgent) .. levels-1
  int64_t cache_mb = 0;         // response cache per version, LRU by bytes; 0: off
  std::optional<TrafficTarget> canary;
  std::optional<TrafficTarget> shadow;
  double sample_rate = 0;  // fraction of requests recorded for monitoring (request_sampler.h)
};

// True when `a` and `b` load and run a version the same way (every setting but the canary and
// the shadow, which belong to the deployment): a version loaded under `a` can keep serving under
// `b` without a reload.
bool same_runtime(const DeploymentConfig& a, const DeploymentConfig& b);

// Reads and checks `config` (an object; absent fields keep their defaults, unknown fields are
// refused so that a typo is not silently ignored).
Result<DeploymentConfig> parse_deployment_config(const json& config);
// Every setting parse_deployment_config accepts, as a dotted path ("config.max_batch",
// "config.canary.weight"), from the same lists it refuses unknown keys against, so docs/spec.md
// (a table row per path, checked by cli_test) cannot fall behind it.
std::vector<std::string> deployment_config_fields();
// The object form, every field present.
json deployment_config_json(const DeploymentConfig& c);

}  // namespace dlsys::serve
