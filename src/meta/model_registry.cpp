#include "meta/model_registry.h"

#include <cctype>
#include <map>

#include "core/file_util.h"
#include "core/json_get.h"

namespace dlsys::meta {

namespace {

Status check_model_name(const std::string& name) {
  if (!valid_name(name, kMaxKeyLength, true))
    return Status::Invalid("model name '{}' must be 1..{} of letters, digits, _ - .",
                           name.substr(0, 64), kMaxKeyLength);
  return Status::OK();
}

Status check_alias(const std::string& alias) {
  if (!valid_name(alias, 64, false))
    return Status::Invalid("alias '{}' must be 1..64 of [A-Za-z0-9_-]", alias.substr(0, 64));
  if (alias == "latest")
    return Status::Invalid("alias 'latest' is reserved: it always means the newest version");
  return Status::OK();
}

Result<int64_t> model_id(SqlConnection& c, const std::string& name, bool lock) {
  std::string sql = "SELECT id FROM registered_models WHERE name = $1";
  if (lock && c.dialect() == SqlDialect::kPostgres) sql += " FOR UPDATE";
  DLSYS_ASSIGN_OR_RETURN(auto rows, c.query(sql, {name}));
  if (rows.empty())
    return Status::NotFound(
        "model '{}' is not registered; create it with "
        "POST /api/v1/models or `dlsys models register`",
        name);
  return sql_int(rows[0][0]);
}

const char* kVersionColumns =
    "v.version, v.run_id, v.artifact_path, v.sha256, v.size, v.status, v.description, "
    "v.created_at, v.created_by";

ModelVersion version_of(const std::string& model, const SqlRow& r) {
  ModelVersion v;
  v.model = model;
  v.version = sql_int(r[0]);
  if (!sql_is_null(r[1])) v.run_id = sql_int(r[1]);
  v.artifact_path = sql_text(r[2]);
  v.sha256 = sql_text(r[3]);
  v.size = sql_int(r[4]);
  v.status = sql_text(r[5]);
  v.description = sql_text(r[6]);
  v.created_at = sql_int(r[7]);
  v.created_by = sql_text(r[8]);
  return v;
}

}  // namespace

void to_json(json& j, const Model& m) {
  j = {{"name", m.name},
       {"description", m.description},
       {"created_at", m.created_at},
       {"updated_at", m.updated_at},
       {"aliases", m.aliases.empty() ? json::object() : json(m.aliases)},
       {"latest_version", m.latest_version ? json(*m.latest_version) : json(nullptr)},
       {"version_count", m.version_count}};
}

void to_json(json& j, const ModelVersion& v) {
  j = {{"model", v.model},
       {"version", v.version},
       {"run_id", v.run_id ? json(*v.run_id) : json(nullptr)},
       {"artifact_path", v.artifact_path},
       {"sha256", v.sha256},
       {"size", v.size},
       {"status", v.status},
       {"description", v.description},
       {"created_at", v.created_at},
       {"created_by", v.created_by},
       {"aliases", v.aliases.empty() ? json::array() : json(v.aliases)}};
}

template <>
Result<Model> from_json<Model>(const json& j, std::string_view what) {
  Model m;
  DLSYS_ASSIGN_OR_RETURN(m.name, json_get<std::string>(j, "name", what));
  DLSYS_ASSIGN_OR_RETURN(m.description, json_get_or<std::string>(j, "description", "", what));
  DLSYS_ASSIGN_OR_RETURN(m.created_at, json_get_or<int64_t>(j, "created_at", 0, what));
  DLSYS_ASSIGN_OR_RETURN(m.updated_at, json_get_or<int64_t>(j, "updated_at", 0, what));
  DLSYS_ASSIGN_OR_RETURN(std::optional<json> aliases, json_get_optional<json>(j, "aliases", what));
  if (aliases) {
    if (!aliases->is_object())
      return Status::Invalid("{}: 'aliases' must be an object, got {}", what,
                             json_type_phrase(*aliases));
    for (auto& [k, v] : aliases->items()) {
      DLSYS_ASSIGN_OR_RETURN(m.aliases[k],
                             json_as<int64_t>(v, fmt::format("{}: aliases['{}']", what, k)));
    }
  }
  DLSYS_ASSIGN_OR_RETURN(m.latest_version, json_get_optional<int64_t>(j, "latest_version", what));
  DLSYS_ASSIGN_OR_RETURN(m.version_count, json_get_or<int64_t>(j, "version_count", 0, what));
  return m;
}

template <>
Result<ModelVersion> from_json<ModelVersion>(const json& j, std::string_view what) {
  ModelVersion v;
  DLSYS_ASSIGN_OR_RETURN(v.model, json_get<std::string>(j, "model", what));
  DLSYS_ASSIGN_OR_RETURN(v.version, json_get<int64_t>(j, "version", what));
  DLSYS_ASSIGN_OR_RETURN(v.run_id, json_get_optional<int64_t>(j, "run_id", what));
  DLSYS_ASSIGN_OR_RETURN(v.artifact_path, json_get<std::string>(j, "artifact_path", what));
  DLSYS_ASSIGN_OR_RETURN(v.sha256, json_get<std::string>(j, "sha256", what));
  DLSYS_ASSIGN_OR_RETURN(v.size, json_get<int64_t>(j, "size", what));
  DLSYS_ASSIGN_OR_RETURN(v.status, json_get<std::string>(j, "status", what));
  DLSYS_ASSIGN_OR_RETURN(v.description, json_get_or<std::string>(j, "description", "", what));
  DLSYS_ASSIGN_OR_RETURN(v.created_at, json_get_or<int64_t>(j, "created_at", 0, what));
  DLSYS_ASSIGN_OR_RETURN(v.created_by, json_get_or<std::string>(j, "created_by", "", what));
  DLSYS_ASSIGN_OR_RETURN(std::optional<json> aliases, json_get_optional<json>(j, "aliases", what));
  if (aliases) {
    if (!aliases->is_array())
      return Status::Invalid("{}: 'aliases' must be an array, got {}", what,
                             json_type_phrase(*aliases));
    for (size_t i = 0; i < aliases->size(); ++i) {
      DLSYS_ASSIGN_OR_RETURN(
          std::string a,
          json_as<std::string>((*aliases)[i], fmt::format("{}: aliases[{}]", what, i)));
      v.aliases.push_back(std::move(a));
    }
  }
  return v;
}

Result<Model> ModelRegistry::create_model(const std::string& name, const std::string& description,
                                          const Principal& who) {
  DLSYS_RETURN_IF_ERROR(check_model_name(name));
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    int64_t now = now_ms();
    Status st = c.exec(
        "INSERT INTO registered_models (name, description, created_at, updated_at) "
        "VALUES ($1,$2,$3,$3)",
        {name, description, now});
    if (st.code() == StatusCode::kAlreadyExists)
      return Status::AlreadyExists("model '{}' is already registered", name);
    DLSYS_RETURN_IF_ERROR(st);
    return audit(c, who, "model.create", "model/" + name);
  }));
  return get_model(name);
}

Result<Model> ModelRegistry::get_model(const std::string& name) {
  Model out;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("SELECT id, name, description, created_at, "
                                              "updated_at FROM registered_models WHERE name = $1",
                                              {name}));
    if (rows.empty()) return Status::NotFound("model '{}' is not registered", name);
    int64_t id = sql_int(rows[0][0]);
    out = {};
    out.name = sql_text(rows[0][1]);
    out.description = sql_text(rows[0][2]);
    out.created_at = sql_int(rows[0][3]);
    out.updated_at = sql_int(rows[0][4]);
    DLSYS_ASSIGN_OR_RETURN(auto al, c.query("SELECT alias, version FROM model_aliases WHERE "
                                            "model_id = $1 ORDER BY alias",
                                            {id}));
    for (auto& a : al) out.aliases[sql_text(a[0])] = sql_int(a[1]);
    DLSYS_ASSIGN_OR_RETURN(auto lv, c.query("SELECT MAX(version), COUNT(*) FROM model_versions "
                                            "WHERE model_id = $1",
                                            {id}));
    if (!sql_is_null(lv[0][0])) out.latest_version = sql_int(lv[0][0]);
    out.version_count = sql_int(lv[0][1]);
    return Status::OK();
  }));
  return out;
}

Result<PageOf<Model>> ModelRegistry::list_models(int page_size, const std::string& page_token,
                                                 const std::string& name_like,
                                                 const std::string& order_by) {
  DLSYS_RETURN_IF_ERROR(check_page_size(page_size));
  // Name order pages by key ("m:<last name>"); updated_at order by offset ("o:<n>").
  bool by_update = false;
  std::string dir = "ASC";
  if (!order_by.empty()) {
    std::string o = order_by;
    for (char& ch : o) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (o == "name" || o == "name asc") {
    } else if (o == "name desc") {
      dir = "DESC";
    } else if (o == "updated_at" || o == "updated_at asc") {
      by_update = true;
    } else if (o == "updated_at desc") {
      by_update = true;
      dir = "DESC";
    } else {
      return Status::Invalid("order_by '{}': order models by name or updated_at, then ASC or DESC",
                             order_by);
    }
  }
  bool keyset = !by_update && dir == "ASC";
  std::string after;
  int64_t offset = 0;
  if (!page_token.empty()) {
    if (keyset) {
      if (page_token.rfind("m:", 0) != 0) return bad_token(page_token);
      after = page_token.substr(2);
    } else {
      DLSYS_ASSIGN_OR_RETURN(offset, int_token(page_token, "o:"));
      if (offset < 0) return bad_token(page_token);
    }
  }
  if (name_like.size() > kMaxKeyLength)
    return Status::Invalid("name filter is over {} characters", kMaxKeyLength);
  std::vector<std::string> names;
  bool more = false;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    std::string sql = "SELECT name FROM registered_models WHERE name > $1";
    SqlParams params = {after};
    if (!name_like.empty()) {
      sql += " AND name LIKE $2";
      params.push_back(name_like);
    }
    sql += by_update ? " ORDER BY updated_at " + dir + ", name" : " ORDER BY name " + dir;
    sql += fmt::format(" LIMIT {} OFFSET {}", page_size + 1, offset);
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query(sql, params));
    more = rows.size() > static_cast<size_t>(page_size);
    for (size_t i = 0; i < rows.size() && i < static_cast<size_t>(page_size); ++i)
      names.push_back(sql_text(rows[i][0]));
    return Status::OK();
  }));
  PageOf<Model> page;
  for (auto& n : names) {
    DLSYS_ASSIGN_OR_RETURN(Model m, get_model(n));
    page.items.push_back(std::move(m));
  }
  if (more)
    page.next_page_token = keyset ? "m:" + names.back() : fmt::format("o:{}", offset + page_size);
  return page;
}

Status check_version_file_name(const std::string& artifact_path) {
  DLSYS_RETURN_IF_ERROR(check_artifact_path(artifact_path));
  if (artifact_path.size() < 5 || artifact_path.substr(artifact_path.size() - 5) != ".onnx")
    return Status::Invalid("model versions are ONNX files: '{}' does not end in .onnx",
                           artifact_path);
  return Status::OK();
}

Result<int64_t> ModelRegistry::insert_version(SqlConnection& c, const std::string& model,
                                              std::optional<int64_t> run_id,
                                              const std::string& artifact_path,
                                              const SqlValue& sha256, const SqlValue& size,
                                              const std::string& description,
                                              const Principal& who) {
  DLSYS_ASSIGN_OR_RETURN(int64_t mid, model_id(c, model, true));
  DLSYS_ASSIGN_OR_RETURN(auto mv, c.query("SELECT MAX(version) FROM model_versions WHERE "
                                          "model_id = $1",
                                          {mid}));
  const int64_t version = sql_is_null(mv[0][0]) ? 1 : sql_int(mv[0][0]) + 1;
  const int64_t now = now_ms();
  const SqlValue run = run_id ? SqlValue(*run_id) : SqlValue();
  DLSYS_RETURN_IF_ERROR(c.exec(
      "INSERT INTO model_versions (model_id, version, run_id, artifact_path, sha256, size, "
      "status, description, created_at, created_by) VALUES ($1,$2,$3,$4,$5,$6,'READY',$7,$8,$9)",
      {mid, version, run, artifact_path, sha256, size, description, now, who.name}));
  DLSYS_RETURN_IF_ERROR(
      c.exec("UPDATE registered_models SET updated_at = $1 WHERE id = $2", {now, mid}));
  const std::string vid = model + "/" + std::to_string(version);
  if (run_id)
    DLSYS_RETURN_IF_ERROR(c.exec(
        "INSERT INTO lineage_edges (src_kind, src_id, dst_kind, dst_id, relation, created_at) "
        "VALUES ('run', $1, 'model_version', $2, 'produced', $3) ON CONFLICT DO NOTHING",
        {std::to_string(*run_id), vid, now}));
  DLSYS_RETURN_IF_ERROR(audit(c, who, "model_version.create", "model_version/" + vid,
                              {{"run_id", run_id ? json(*run_id) : json(nullptr)},
                               {"artifact_path", artifact_path},
                               {"sha256", sql_text(sha256)}}));
  return version;
}

Result<ModelVersion> ModelRegistry::create_model_version(const std::string& model, int64_t run_id,
                                                         const std::string& artifact_path,
                                                         const std::string& description,
                                                         const Principal& who) {
  DLSYS_RETURN_IF_ERROR(check_version_file_name(artifact_path));
  int64_t version = 0;
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_RETURN_IF_ERROR(model_id(c, model, true).status());
    DLSYS_ASSIGN_OR_RETURN(auto art, c.query("SELECT sha256, size FROM artifacts WHERE run_id = $1 "
                                             "AND path = $2",
                                             {run_id, artifact_path}));
    if (art.empty())
      return Status::NotFound(
          "run {} has no artifact '{}'; upload it first (PUT "
          "/api/v1/runs/{}/artifacts/{})",
          run_id, artifact_path, run_id, artifact_path);
    DLSYS_ASSIGN_OR_RETURN(version, insert_version(c, model, run_id, artifact_path, art[0][0],
                                                   art[0][1], description, who));
    return Status::OK();
  }));
  return get_model_version(model, version);
}

Result<ModelVersion> ModelRegistry::create_file_version(const std::string& model,
                                                        const std::string& file_name,
                                                        const std::string& sha256, int64_t size,
                                                        const std::string& description,
                                                        const Principal& who) {
  DLSYS_RETURN_IF_ERROR(check_version_file_name(file_name));
  if (sha256.size() != 64 || sha256.find_first_not_of("0123456789abcdef") != std::string::npos)
    return Status::Invalid("'{}' is not a SHA-256 (64 lower-case hex digits)",
                           sha256.substr(0, 80));
  if (size < 0) return Status::Invalid("file size {} is negative", size);
  int64_t version = 0;
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(
        version, insert_version(c, model, std::nullopt, file_name, sha256, size, description, who));
    return Status::OK();
  }));
  return get_model_version(model, version);
}

Result<ModelVersion> ModelRegistry::get_model_version(const std::string& model, int64_t version) {
  ModelVersion out;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(int64_t mid, model_id(c, model, false));
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query(std::string("SELECT ") + kVersionColumns +
                                                  " FROM model_versions v WHERE v.model_id = $1 "
                                                  "AND v.version = $2",
                                              {mid, version}));
    if (rows.empty()) return Status::NotFound("model '{}' has no version {}", model, version);
    out = version_of(model, rows[0]);
    DLSYS_ASSIGN_OR_RETURN(auto al, c.query("SELECT alias FROM model_aliases WHERE model_id = $1 "
                                            "AND version = $2 ORDER BY alias",
                                            {mid, version}));
    for (auto& a : al) out.aliases.push_back(sql_text(a[0]));
    return Status::OK();
  }));
  return out;
}

Result<std::vector<ModelVersion>> ModelRegistry::list_model_versions(const std::string& model) {
  std::vector<ModelVersion> out;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    out.clear();
    DLSYS_ASSIGN_OR_RETURN(int64_t mid, model_id(c, model, false));
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query(std::string("SELECT ") + kVersionColumns +
                                                  " FROM model_versions v WHERE v.model_id = $1 "
                                                  "ORDER BY v.version",
                                              {mid}));
    std::map<int64_t, size_t> index;
    for (auto& r : rows) {
      index[sql_int(r[0])] = out.size();
      out.push_back(version_of(model, r));
    }
    DLSYS_ASSIGN_OR_RETURN(auto al, c.query("SELECT alias, version FROM model_aliases WHERE "
                                            "model_id = $1 ORDER BY alias",
                                            {mid}));
    for (auto& a : al) {
      auto it = index.find(sql_int(a[1]));
      if (it != index.end()) out[it->second].aliases.push_back(sql_text(a[0]));
    }
    return Status::OK();
  }));
  return out;
}

Result<ModelVersion> ModelRegistry::set_model_version_status(const std::string& model,
                                                             int64_t version,
                                                             const std::string& status,
                                                             const Principal& who) {
  if (status != "READY" && status != "ARCHIVED")
    return Status::Invalid("model version status '{}' is not one of READY, ARCHIVED", status);
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(int64_t mid, model_id(c, model, true));
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("UPDATE model_versions SET status = $1 WHERE "
                                              "model_id = $2 AND version = $3 RETURNING version",
                                              {status, mid, version}));
    if (rows.empty()) return Status::NotFound("model '{}' has no version {}", model, version);
    return audit(c, who, "model_version.update",
                 "model_version/" + model + "/" + std::to_string(version), {{"status", status}});
  }));
  return get_model_version(model, version);
}

void to_json(json& j, const AliasMove& a) {
  j = {{"model", a.model},
       {"alias", a.alias},
       {"version", a.version},
       {"previous_version", a.previous_version ? json(*a.previous_version) : json(nullptr)}};
}

Result<AliasMove> ModelRegistry::set_alias(const std::string& model, const std::string& alias,
                                           int64_t version, const Principal& who) {
  DLSYS_RETURN_IF_ERROR(check_alias(alias));
  AliasMove out;
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(int64_t mid, model_id(c, model, true));
    DLSYS_ASSIGN_OR_RETURN(auto v, c.query("SELECT status FROM model_versions WHERE model_id = $1 "
                                           "AND version = $2",
                                           {mid, version}));
    if (v.empty()) return Status::NotFound("model '{}' has no version {}", model, version);
    if (sql_text(v[0][0]) == "ARCHIVED")
      return Status::Invalid(
          "version {} of '{}' is archived; set its status to READY before "
          "pointing an alias at it",
          version, model);
    DLSYS_ASSIGN_OR_RETURN(auto prev, c.query("SELECT version FROM model_aliases WHERE model_id = "
                                              "$1 AND alias = $2",
                                              {mid, alias}));
    json previous = prev.empty() ? json(nullptr) : json(sql_int(prev[0][0]));
    int64_t now = now_ms();
    DLSYS_RETURN_IF_ERROR(c.exec(
        "INSERT INTO model_aliases (model_id, alias, version, updated_at) VALUES ($1,$2,$3,$4) "
        "ON CONFLICT (model_id, alias) DO UPDATE SET version = excluded.version, "
        "updated_at = excluded.updated_at",
        {mid, alias, version, now}));
    DLSYS_RETURN_IF_ERROR(
        c.exec("UPDATE registered_models SET updated_at = $1 WHERE id = $2", {now, mid}));
    out = {model, alias, version, std::nullopt};
    if (!prev.empty()) out.previous_version = sql_int(prev[0][0]);
    return audit(c, who, "model_alias.set", "model/" + model + "@" + alias,
                 {{"version", version}, {"previous_version", previous}});
  }));
  return out;
}

Status ModelRegistry::delete_alias(const std::string& model, const std::string& alias,
                                   const Principal& who) {
  DLSYS_RETURN_IF_ERROR(check_alias(alias));
  return db_.tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(int64_t mid, model_id(c, model, true));
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("DELETE FROM model_aliases WHERE model_id = $1 AND "
                                              "alias = $2 RETURNING version",
                                              {mid, alias}));
    if (rows.empty()) return Status::NotFound("model '{}' has no alias '{}'", model, alias);
    return audit(c, who, "model_alias.delete", "model/" + model + "@" + alias,
                 {{"version", sql_int(rows[0][0])}});
  });
}

Result<ModelVersion> ModelRegistry::get_version_by_alias(const std::string& model,
                                                         const std::string& alias) {
  int64_t version = 0;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(int64_t mid, model_id(c, model, false));
    std::vector<SqlRow> rows;
    if (alias == "latest") {
      DLSYS_ASSIGN_OR_RETURN(rows, c.query("SELECT MAX(version) FROM model_versions WHERE "
                                           "model_id = $1",
                                           {mid}));
      if (sql_is_null(rows[0][0])) rows.clear();
    } else {
      DLSYS_ASSIGN_OR_RETURN(rows, c.query("SELECT version FROM model_aliases WHERE model_id = $1 "
                                           "AND alias = $2",
                                           {mid, alias}));
    }
    if (rows.empty()) return Status::NotFound("model '{}' has no alias '{}'", model, alias);
    version = sql_int(rows[0][0]);
    return Status::OK();
  }));
  return get_model_version(model, version);
}

}  // namespace dlsys::meta
