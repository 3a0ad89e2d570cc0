// The model registry: named models, their numbered versions (each an ONNX file: a run's
// artifact, or a file registered on its own) and aliases ("production") that point at versions.
// Thread-safe.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "meta/auth.h"
#include "meta/store_db.h"

namespace dlsys::meta {

// A registered model with its aliases and the newest version.
struct Model {
  std::string name;
  std::string description;
  int64_t created_at = 0;                  // ms since the epoch
  int64_t updated_at = 0;                  // the last new version or alias move
  std::map<std::string, int64_t> aliases;  // alias -> version
  std::optional<int64_t> latest_version;   // none before the first version
  int64_t version_count = 0;
};

// One version of a model: an ONNX file, a run's artifact or one registered without a run.
struct ModelVersion {
  std::string model;
  int64_t version = 0;            // 1, 2, ...
  std::optional<int64_t> run_id;  // none for a file registered without a run
  std::string artifact_path;      // the artifact's path in the run, or the file's name
  std::string sha256;
  int64_t size = 0;
  std::string status;  // READY or ARCHIVED
  std::string description;
  int64_t created_at = 0;  // ms since the epoch
  std::string created_by;
  std::vector<std::string> aliases;  // the aliases pointing at this version, by name
};

// An alias moved (promote, roll back) or created: where it points now and where it pointed.
struct AliasMove {
  std::string model;
  std::string alias;
  int64_t version = 0;
  std::optional<int64_t> previous_version;  // none when the alias is new
};

// The REST representations (docs/api.md) and their checked reads (from_json in store_db.h).
// An AliasMove is {"model", "alias", "version", "previous_version" (null when new)}.
void to_json(json& j, const AliasMove& a);
void to_json(json& j, const Model& m);
void to_json(json& j, const ModelVersion& v);
template <>
Result<Model> from_json<Model>(const json& j, std::string_view what);
template <>
Result<ModelVersion> from_json<ModelVersion>(const json& j, std::string_view what);

// Checks the name of a version's file: a valid artifact path ending in .onnx.
Status check_version_file_name(const std::string& path);

class ModelRegistry {
 public:
  explicit ModelRegistry(StoreDb& db) : db_(db) {}

  Result<Model> create_model(const std::string& name, const std::string& description,
                             const Principal& who);
  Result<Model> get_model(const std::string& name);  // with aliases and latest version
  // Models by name (or `order_by` "updated_at DESC", ...); `name_like` is an SQL LIKE pattern
  // ("dig%"), empty for all.
  Result<PageOf<Model>> list_models(int page_size, const std::string& page_token,
                                    const std::string& name_like = "",
                                    const std::string& order_by = "");
  // A new version (1, 2, ...) from a run's artifact; adds the lineage edge run -> version.
  Result<ModelVersion> create_model_version(const std::string& model, int64_t run_id,
                                            const std::string& artifact_path,
                                            const std::string& description, const Principal& who);
  // A new version whose file belongs to the version alone (no run, no lineage edge): the bytes
  // are already in the ArtifactStore as `sha256`; `file_name` (e.g. "model.onnx", ending in
  // .onnx) names it.
  Result<ModelVersion> create_file_version(const std::string& model, const std::string& file_name,
                                           const std::string& sha256, int64_t size,
                                           const std::string& description, const Principal& who);
  Result<ModelVersion> get_model_version(const std::string& model, int64_t version);
  Result<std::vector<ModelVersion>> list_model_versions(const std::string& model);
  // Status: READY, ARCHIVED.
  Result<ModelVersion> set_model_version_status(const std::string& model, int64_t version,
                                                const std::string& status, const Principal& who);
  // Points `alias` at `version` (atomically: promote and roll back are alias moves).
  Result<AliasMove> set_alias(const std::string& model, const std::string& alias, int64_t version,
                              const Principal& who);
  Status delete_alias(const std::string& model, const std::string& alias, const Principal& who);
  // The version `alias` points at; "latest" is the newest version.
  Result<ModelVersion> get_version_by_alias(const std::string& model, const std::string& alias);

 private:
  // Inserts version MAX+1 of `model` in the caller's transaction; returns its number.
  Result<int64_t> insert_version(SqlConnection& c, const std::string& model,
                                 std::optional<int64_t> run_id, const std::string& artifact_path,
                                 const SqlValue& sha256, const SqlValue& size,
                                 const std::string& description, const Principal& who);

  StoreDb& db_;
};

}  // namespace dlsys::meta
