// A deployment's serving configuration: what `dlsys deploy create` and POST /api/v1/deployments
// accept, stored as the deployment's "config" object (meta/deployments.h) and read back here
// with every field checked ("config.max_batch must be an integer in 1..1024, got 0").
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/status.h"
#include "meta/deployments.h"
#include "ops/attribute.h"

namespace dlsys::serve {

using json = nlohmann::json;

struct DeploymentConfig {
  int64_t max_batch = 32;       // rows per batch
  int64_t max_delay_us = 2000;  // how long a batch waits to fill
  int64_t instances = 1;        // model instances (each its own plans and threads)
  int64_t threads = 1;          // intra-op threads per instance
  Precision precision = Precision::kF32;
  int64_t max_queue = 256;      // requests waiting; more get 503
  int64_t timeout_ms = 1000;    // a request's deadline unless it sets its own
  int64_t priority_levels = 2;  // request parameter "priority": 0 (most urgent) .. levels-1
  double sample_rate = 0;       // fraction of requests recorded for monitoring (request_sampler.h)
};

// Reads and checks `config` (an object; absent fields keep their defaults, unknown fields are
// refused so that a typo is not silently ignored).
Result<DeploymentConfig> parse_deployment_config(const json& config);
// The object form, every field present.
json deployment_config_json(const DeploymentConfig& c);

}  // namespace dlsys::serve
