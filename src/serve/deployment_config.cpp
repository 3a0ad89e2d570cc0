#include "serve/deployment_config.h"

#include <algorithm>
#include <thread>

namespace dlsys::serve {
namespace {

Status read_int(const json& config, const char* key, int64_t lo, int64_t hi, int64_t* out,
                const std::string& where = "config") {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return Status::OK();
  if (!it->is_number_integer() || it->get<int64_t>() < lo || it->get<int64_t>() > hi)
    return Status::Invalid("{}.{} must be an integer in {}..{}, got {}", where, key, lo, hi,
                           it->dump().substr(0, 40));
  *out = it->get<int64_t>();
  return Status::OK();
}

// The settings of a deployment's config and of its canary and shadow: the parser refuses any
// other key, and deployment_config_fields() lists them for docs/spec.md (checked by cli_test).
// A new setting is added here, read in parse_deployment_config, and documented there.
const std::vector<std::string>& known_settings() {
  static const std::vector<std::string> k = {
      "max_batch", "max_delay_us",  "instances",       "threads",    "precision",
      "max_queue", "timeout_ms",    "priority_levels", "cache_mb",   "canary",
      "shadow",    "min_instances", "max_instances",   "sample_rate"};
  return k;
}
const std::vector<std::string>& target_fields(bool weighted) {
  static const std::vector<std::string> canary = {"model", "version", "weight"};
  static const std::vector<std::string> shadow = {"model", "version"};
  return weighted ? canary : shadow;
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

bool contains(const std::vector<std::string>& names, const std::string& n) {
  return std::find(names.begin(), names.end(), n) != names.end();
}

// config.canary / config.shadow: {"model": "digits", "version": 3[, "weight": 10]}.
Result<std::optional<TrafficTarget>> read_target(const json& config, const char* key,
                                                 bool weighted) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::optional<TrafficTarget>();
  if (!it->is_object())
    return Status::Invalid(
        "config.{} must be an object like {{\"model\": \"digits\", "
        "\"version\": 3{}}}, got {}",
        key, weighted ? ", \"weight\": 10" : "", it->dump().substr(0, 60));
  for (auto f = it->begin(); f != it->end(); ++f)
    if (!contains(target_fields(weighted), f.key()))
      return Status::Invalid("config.{}.{} is not a field (known: {})", key, f.key().substr(0, 64),
                             joined(target_fields(weighted)));
  TrafficTarget t;
  auto m = it->find("model");
  if (m == it->end() || !m->is_string() || m->get<std::string>().empty())
    return Status::Invalid("config.{}.model must name a registered model", key);
  t.model = m->get<std::string>();
  const std::string where = std::string("config.") + key;
  DLSYS_RETURN_IF_ERROR(read_int(*it, "version", 1, int64_t{1} << 40, &t.version, where));
  if (t.version == 0)
    return Status::Invalid(
        "config.{}.version must be a version number (canaries and shadows "
        "are pinned versions, not aliases)",
        key);
  if (weighted) {
    t.weight = 10;
    DLSYS_RETURN_IF_ERROR(read_int(*it, "weight", 0, 100, &t.weight, where));
  }
  return std::optional<TrafficTarget>(t);
}

json target_json(const TrafficTarget& t, bool weighted) {
  json j = {{"model", t.model}, {"version", t.version}};
  if (weighted) j["weight"] = t.weight;
  return j;
}

}  // namespace

bool same_runtime(const DeploymentConfig& a, const DeploymentConfig& b) {
  return a.max_batch == b.max_batch && a.max_delay_us == b.max_delay_us &&
         a.instances == b.instances && a.min_instances == b.min_instances &&
         a.max_instances == b.max_instances && a.threads == b.threads &&
         a.precision == b.precision && a.int8 == b.int8 && a.max_queue == b.max_queue &&
         a.timeout_ms == b.timeout_ms && a.priority_levels == b.priority_levels &&
         a.cache_mb == b.cache_mb && a.sample_rate == b.sample_rate;
}

Result<DeploymentConfig> parse_deployment_config(const json& config) {
  if (!config.is_object()) return Status::Invalid("a deployment's config must be a JSON object");
  for (auto it = config.begin(); it != config.end(); ++it)
    if (!contains(known_settings(), it.key()))
      return Status::Invalid("config.{} is not a deployment setting (known: {})",
                             it.key().substr(0, 64), joined(known_settings()));
  DeploymentConfig c;
  int64_t cores = std::max<int64_t>(1, std::thread::hardware_concurrency());
  DLSYS_RETURN_IF_ERROR(read_int(config, "max_batch", 1, 1024, &c.max_batch));
  DLSYS_RETURN_IF_ERROR(read_int(config, "max_delay_us", 0, 1000000, &c.max_delay_us));
  DLSYS_RETURN_IF_ERROR(read_int(config, "instances", 1, 64, &c.instances));
  DLSYS_RETURN_IF_ERROR(read_int(config, "threads", 1, std::max<int64_t>(cores, 1), &c.threads));
  DLSYS_RETURN_IF_ERROR(read_int(config, "max_queue", 1, 1 << 20, &c.max_queue));
  DLSYS_RETURN_IF_ERROR(read_int(config, "timeout_ms", 1, 3600 * 1000, &c.timeout_ms));
  DLSYS_RETURN_IF_ERROR(read_int(config, "priority_levels", 1, 16, &c.priority_levels));
  DLSYS_RETURN_IF_ERROR(read_int(config, "cache_mb", 0, 1 << 20, &c.cache_mb));
  DLSYS_RETURN_IF_ERROR(read_int(config, "min_instances", 1, 64, &c.min_instances));
  DLSYS_RETURN_IF_ERROR(read_int(config, "max_instances", 1, 64, &c.max_instances));
  if (c.min_instances > 0 || c.max_instances > 0) {
    if (c.max_instances == 0)
      return Status::Invalid(
          "config.min_instances needs config.max_instances (autoscaling "
          "between the two)");
    if (c.min_instances == 0) c.min_instances = 1;
    if (c.min_instances > c.max_instances)
      return Status::Invalid("config.min_instances {} is more than config.max_instances {}",
                             c.min_instances, c.max_instances);
    if (config.contains("instances") && !config["instances"].is_null())
      return Status::Invalid(
          "config.instances is fixed; with autoscaling set min_instances and "
          "max_instances instead");
  }
  DLSYS_ASSIGN_OR_RETURN(c.canary, read_target(config, "canary", true));
  DLSYS_ASSIGN_OR_RETURN(c.shadow, read_target(config, "shadow", false));
  if (c.canary && c.shadow && c.canary->model == c.shadow->model &&
      c.canary->version == c.shadow->version)
    return Status::Invalid(
        "config.shadow is the canary's version ({}@{}); a shadow must be another version",
        c.shadow->model, c.shadow->version);
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
    else if (p == "int8")
      c.int8 = true;
    else
      return Status::Invalid("config.precision must be \"fp32\", \"bf16\" or \"int8\", got {}",
                             it->dump().substr(0, 40));
  }
  return c;
}

std::vector<std::string> deployment_config_fields() {
  std::vector<std::string> out;
  for (const std::string& k : known_settings()) {
    out.push_back("config." + k);
    if (k == "canary" || k == "shadow")
      for (const std::string& f : target_fields(k == "canary"))
        out.push_back("config." + k + "." + f);
  }
  return out;
}

json deployment_config_json(const DeploymentConfig& c) {
  json j = {{"max_batch", c.max_batch},
            {"max_delay_us", c.max_delay_us},
            {"instances", c.instances},
            {"threads", c.threads},
            {"precision", c.int8                            ? "int8"
                          : c.precision == Precision::kBF16 ? "bf16"
                                                            : "fp32"},
            {"max_queue", c.max_queue},
            {"timeout_ms", c.timeout_ms},
            {"priority_levels", c.priority_levels},
            {"cache_mb", c.cache_mb},
            {"sample_rate", c.sample_rate}};
  if (c.max_instances > 0) {
    j.erase("instances");
    j["min_instances"] = c.min_instances;
    j["max_instances"] = c.max_instances;
  }
  if (c.canary) j["canary"] = target_json(*c.canary, true);
  if (c.shadow) j["shadow"] = target_json(*c.shadow, false);
  return j;
}

}  // namespace dlsys::serve
