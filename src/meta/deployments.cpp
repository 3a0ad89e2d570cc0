#include "meta/deployments.h"

#include "core/file_util.h"
#include "meta/store_db.h"

namespace dlsys::meta {
namespace {

constexpr size_t kMaxConfigBytes = 16 << 10;

Status check(const Deployment& d) {
  if (!valid_name(d.name, 64, false))
    return Status::Invalid("deployment name '{}' must be 1..64 of [A-Za-z0-9_-]",
                           d.name.substr(0, 64));
  if (!valid_name(d.model, kMaxKeyLength, true))
    return Status::Invalid("model name '{}' must be 1..{} of letters, digits, _ - .",
                           d.model.substr(0, 64), kMaxKeyLength);
  if (!valid_name(d.ref, 64, false))
    return Status::Invalid("'{}' is neither an alias nor a version number of model '{}'",
                           d.ref.substr(0, 64), d.model);
  if (!d.config.is_object())
    return Status::Invalid("the configuration of deployment '{}' must be a JSON object", d.name);
  if (d.config.dump().size() > kMaxConfigBytes)
    return Status::Invalid("the configuration of deployment '{}' is over {} KiB", d.name,
                           kMaxConfigBytes >> 10);
  return Status::OK();
}

Status model_exists(SqlConnection& c, const std::string& model) {
  DLSYS_ASSIGN_OR_RETURN(auto rows,
                         c.query("SELECT id FROM registered_models WHERE name = $1", {model}));
  if (rows.empty())
    return Status::NotFound(
        "model '{}' is not registered; register it with `dlsys models register` first", model);
  return Status::OK();
}

Result<Deployment> row_to_deployment(const SqlRow& r) {
  Deployment d;
  d.name = sql_text(r[0]);
  d.model = sql_text(r[1]);
  d.ref = sql_text(r[2]);
  d.config = json::parse(sql_text(r[3]), nullptr, false);
  if (!d.config.is_object())
    return Status::Internal("the stored configuration of deployment '{}' is not a JSON object",
                            d.name);
  d.created_at = sql_int(r[4]);
  d.updated_at = sql_int(r[5]);
  d.created_by = sql_text(r[6]);
  return d;
}

const char* kColumns = "name, model, ref, config, created_at, updated_at, created_by";

}  // namespace

void to_json(json& j, const Deployment& d) {
  j = {{"name", d.name},
       {"model", d.model},
       {"ref", d.ref},
       {"config", d.config},
       {"created_at", d.created_at},
       {"updated_at", d.updated_at},
       {"created_by", d.created_by}};
}

Result<Deployment> DeploymentStore::create(const Deployment& in, const Principal& who) {
  DLSYS_RETURN_IF_ERROR(check(in));
  Deployment d = in;
  d.created_at = d.updated_at = now_ms();
  d.created_by = who.name;
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_RETURN_IF_ERROR(model_exists(c, d.model));
    DLSYS_ASSIGN_OR_RETURN(auto rows,
                           c.query("SELECT name FROM deployments WHERE name = $1", {d.name}));
    if (!rows.empty())
      return Status::AlreadyExists(
          "deployment '{}' exists; change it with `dlsys deploy update` or delete it first",
          d.name);
    DLSYS_RETURN_IF_ERROR(c.exec(
        "INSERT INTO deployments (name, model, ref, config, created_at, updated_at, "
        "created_by) VALUES ($1,$2,$3,$4,$5,$6,$7)",
        {d.name, d.model, d.ref, d.config.dump(), d.created_at, d.updated_at, d.created_by}));
    return audit(c, who, "deployment.create", "deployment/" + d.name,
                 {{"model", d.model}, {"ref", d.ref}});
  }));
  return d;
}

Result<Deployment> DeploymentStore::get(const std::string& name) {
  Result<Deployment> out = Status::NotFound(
      "deployment '{}' does not exist; list them with "
      "`dlsys deploy list`",
      name.substr(0, 64));
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(
        auto rows,
        c.query(std::string("SELECT ") + kColumns + " FROM deployments WHERE name = $1", {name}));
    if (!rows.empty()) out = row_to_deployment(rows[0]);
    return Status::OK();
  }));
  return out;
}

Result<std::vector<Deployment>> DeploymentStore::list() {
  std::vector<Deployment> out;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    out.clear();
    DLSYS_ASSIGN_OR_RETURN(
        auto rows,
        c.query(std::string("SELECT ") + kColumns + " FROM deployments ORDER BY name", {}));
    for (const auto& r : rows) {
      DLSYS_ASSIGN_OR_RETURN(Deployment d, row_to_deployment(r));
      out.push_back(std::move(d));
    }
    return Status::OK();
  }));
  return out;
}

Result<Deployment> DeploymentStore::update(const Deployment& d, const Principal& who) {
  DLSYS_RETURN_IF_ERROR(check(d));
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_RETURN_IF_ERROR(model_exists(c, d.model));
    DLSYS_ASSIGN_OR_RETURN(auto rows,
                           c.query("UPDATE deployments SET model = $1, ref = $2, config = $3, "
                                   "updated_at = $4 WHERE name = $5 RETURNING name",
                                   {d.model, d.ref, d.config.dump(), now_ms(), d.name}));
    if (rows.empty())
      return Status::NotFound(
          "deployment '{}' does not exist; create it with `dlsys deploy "
          "create`",
          d.name);
    return audit(c, who, "deployment.update", "deployment/" + d.name,
                 {{"model", d.model}, {"ref", d.ref}});
  }));
  return get(d.name);
}

Status DeploymentStore::remove(const std::string& name, const Principal& who) {
  return db_.tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(
        auto rows, c.query("DELETE FROM deployments WHERE name = $1 RETURNING name", {name}));
    if (rows.empty()) return Status::NotFound("deployment '{}' does not exist", name.substr(0, 64));
    return audit(c, who, "deployment.delete", "deployment/" + name);
  });
}

}  // namespace dlsys::meta
