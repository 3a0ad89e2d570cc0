// The model registry: named models, their numbered versions (each an ONNX artifact of a run)
// and aliases ("production") that point at versions. Thread-safe.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "core/status.h"
#include "meta/auth.h"
#include "meta/store_db.h"

namespace dlsys::meta {

class ModelRegistry {
 public:
  explicit ModelRegistry(StoreDb& db) : db_(db) {}

  Result<json> create_model(const std::string& name, const std::string& description,
                            const Principal& who);
  Result<json> get_model(const std::string& name);  // with aliases and latest version
  // Models by name (or `order_by` "updated_at DESC", ...); `name_like` is an SQL LIKE pattern
  // ("dig%"), empty for all.
  Result<Page> list_models(int page_size, const std::string& page_token,
                           const std::string& name_like = "", const std::string& order_by = "");
  // A new version (1, 2, ...) from a run's artifact; adds the lineage edge run -> version.
  Result<json> create_model_version(const std::string& model, int64_t run_id,
                                    const std::string& artifact_path,
                                    const std::string& description, const Principal& who);
  Result<json> get_model_version(const std::string& model, int64_t version);
  Result<json> list_model_versions(const std::string& model);
  // Status: READY, ARCHIVED.
  Result<json> set_model_version_status(const std::string& model, int64_t version,
                                        const std::string& status, const Principal& who);
  // Points `alias` at `version` (atomically: promote and roll back are alias moves).
  Result<json> set_alias(const std::string& model, const std::string& alias, int64_t version,
                         const Principal& who);
  Status delete_alias(const std::string& model, const std::string& alias, const Principal& who);
  // The version `alias` points at; "latest" is the newest version.
  Result<json> get_version_by_alias(const std::string& model, const std::string& alias);

 private:
  StoreDb& db_;
};

}  // namespace dlsys::meta
