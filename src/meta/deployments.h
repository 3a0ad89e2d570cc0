// Deployments as stored: a name, the model and the version reference it serves ("production",
// an alias it follows, or "3", a pinned version), and its serving configuration as an object
// that the serving layer checks and reads (serve/deployment_config.h). The server restores every
// deployment from here when it starts. Thread-safe; `db` must outlive the store.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "meta/auth.h"

namespace dlsys::meta {

class StoreDb;

struct Deployment {
  std::string name;   // 1..64 of [A-Za-z0-9_-]
  std::string model;  // a registered model
  std::string ref;    // an alias ("production") or a version number ("3")
  json config;        // an object: batching, instances, canary, shadow, ... (see serve/)
  int64_t created_at = 0;
  int64_t updated_at = 0;
  std::string created_by;
};

// {"name", "model", "ref", "config", "created_at", "updated_at", "created_by"} (docs/api.md).
void to_json(json& j, const Deployment& d);

class DeploymentStore {
 public:
  explicit DeploymentStore(StoreDb& db) : db_(db) {}

  // Creates `d` (its times and creator are set here). AlreadyExists when the name is taken;
  // NotFound when the model is not registered.
  Result<Deployment> create(const Deployment& d, const Principal& who);
  // The deployment `name`; NotFound names how to list them.
  Result<Deployment> get(const std::string& name);
  // Every deployment, by name.
  Result<std::vector<Deployment>> list();
  // Replaces the model, ref and config of `d.name`; NotFound when it does not exist.
  Result<Deployment> update(const Deployment& d, const Principal& who);
  // Deletes `name`; NotFound when it does not exist.
  Status remove(const std::string& name, const Principal& who);

 private:
  StoreDb& db_;
};

}  // namespace dlsys::meta
