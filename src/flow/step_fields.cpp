#include "flow/step_fields.h"

#include <fmt/format.h>

#include "jobs/job_spec.h"

namespace dlsys::flow {

Result<std::string> with_text(const nlohmann::json& with, const std::string& key,
                              const std::string& where, bool required) {
  auto it = with.find(key);
  if (it == with.end() || it->is_null()) {
    if (!required) return std::string();
    return Status::Invalid("{}: '{}' has no value", where, key);
  }
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number()) return it->dump();
  return Status::Invalid("{}: '{}' must be text, got {}", where, key, it->dump());
}

Result<int64_t> with_int(const nlohmann::json& with, const std::string& key,
                         const std::string& where, int64_t fallback) {
  auto it = with.find(key);
  if (it == with.end() || it->is_null()) return fallback;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_string()) {
    const std::string t = it->get<std::string>();
    try {
      size_t used = 0;
      int64_t v = std::stoll(t, &used);
      if (used == t.size()) return v;
    } catch (...) {
    }
  }
  return Status::Invalid("{}: '{}' must be a whole number, got {}", where, key, it->dump());
}

Result<meta::ModelVersion> find_model_version(meta::MetaStore& store, const std::string& text,
                                              const std::string& what) {
  DLSYS_ASSIGN_OR_RETURN(jobs::VersionRef ref, jobs::parse_version_ref(text, what));
  if (ref.version > 0) return store.registry().get_model_version(ref.name, ref.version);
  if (!ref.alias.empty()) return store.registry().get_version_by_alias(ref.name, ref.alias);
  DLSYS_ASSIGN_OR_RETURN(auto all, store.registry().list_model_versions(ref.name));
  if (all.empty()) return Status::NotFound("model '{}' has no versions", ref.name);
  return all.back();
}

}  // namespace dlsys::flow
