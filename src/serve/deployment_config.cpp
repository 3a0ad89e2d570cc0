#include "serve/deployment_config.h"

#include <thread>

namespace dlsys::serve {
namespace {

Status read_int(const json& config, const char* key, int64_t lo, int64_t hi, int64_t* out) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return Status::OK();
  if (!it->is_number_integer() || it->get<int64_t>() < lo || it->get<int64_t>() > hi)
    return Status::Invalid("config.{} must be an integer in {}..{}, got {}", key, lo, hi,
                           it->dump().substr(0, 40));
  *out = it->get<int64_t>();
  return Status::OK();
}

}  // namespace

Result<DeploymentConfig> parse_deployment_config(const json& config) {
  if (!config.is_object()) return Status::Invalid("a deployment's config must be a JSON object");
  static const char* kKnown[] = {"max_batch",  "max_delay_us",    "instances",
                                 "threads",    "precision",       "max_queue",
                                 "timeout_ms", "priority_levels", "sample_rate"};
  for (auto it = config.begin(); it != config.end(); ++it) {
    bool known = false;
    for (const char* k : kKnown) known = known || it.key() == k;
    if (!known)
      return Status::Invalid(
          "config.{} is not a deployment setting (known: max_batch, max_delay_us, instances, "
          "threads, precision, max_queue, timeout_ms, priority_levels, sample_rate)",
          it.key().substr(0, 64));
  }
  DeploymentConfig c;
  int64_t cores = std::max<int64_t>(1, std::thread::hardware_concurrency());
  DLSYS_RETURN_IF_ERROR(read_int(config, "max_batch", 1, 1024, &c.max_batch));
  DLSYS_RETURN_IF_ERROR(read_int(config, "max_delay_us", 0, 1000000, &c.max_delay_us));
  DLSYS_RETURN_IF_ERROR(read_int(config, "instances", 1, 64, &c.instances));
  DLSYS_RETURN_IF_ERROR(read_int(config, "threads", 1, std::max<int64_t>(cores, 1), &c.threads));
  DLSYS_RETURN_IF_ERROR(read_int(config, "max_queue", 1, 1 << 20, &c.max_queue));
  DLSYS_RETURN_IF_ERROR(read_int(config, "timeout_ms", 1, 3600 * 1000, &c.timeout_ms));
  DLSYS_RETURN_IF_ERROR(read_int(config, "priority_levels", 1, 16, &c.priority_levels));
  if (auto it = config.find("sample_rate"); it != config.end() && !it->is_null()) {
    if (!it->is_number() || !(it->get<double>() >= 0 && it->get<double>() <= 1))
      return Status::Invalid("config.sample_rate must be a number in 0..1, got {}",
                             it->dump().substr(0, 40));
    c.sample_rate = it->get<double>();
  }
  if (auto it = config.find("precision"); it != config.end() && !it->is_null()) {
    std::string p = it->is_string() ? it->get<std::string>() : "";
    if (p == "fp32" || p == "f32")
      c.precision = Precision::kF32;
    else if (p == "bf16")
      c.precision = Precision::kBF16;
    else
      return Status::Invalid("config.precision must be \"fp32\" or \"bf16\", got {}",
                             it->dump().substr(0, 40));
  }
  return c;
}

json deployment_config_json(const DeploymentConfig& c) {
  return {{"max_batch", c.max_batch},
          {"max_delay_us", c.max_delay_us},
          {"instances", c.instances},
          {"threads", c.threads},
          {"precision", c.precision == Precision::kBF16 ? "bf16" : "fp32"},
          {"max_queue", c.max_queue},
          {"timeout_ms", c.timeout_ms},
          {"priority_levels", c.priority_levels},
          {"sample_rate", c.sample_rate}};
}

}  // namespace dlsys::serve
