#include "meta/auth.h"

#include "core/file_util.h"
#include "core/sha256.h"
#include "meta/store_db.h"

namespace dlsys::meta {

const char* role_name(Role r) {
  switch (r) {
    case Role::kInference:
      return "inference";
    case Role::kViewer:
      return "viewer";
    case Role::kEditor:
      return "editor";
    case Role::kAdmin:
      return "admin";
  }
  return "viewer";
}

Result<Role> parse_role(const std::string& s) {
  if (s == "admin") return Role::kAdmin;
  if (s == "editor") return Role::kEditor;
  if (s == "viewer") return Role::kViewer;
  if (s == "inference") return Role::kInference;
  return Status::Invalid("unknown role '{}': use admin, editor, viewer or inference", s);
}
void to_json(json& j, const TokenInfo& t) {
  j = {{"id", t.id},
       {"name", t.name},
       {"role", role_name(t.role)},
       {"created_at", t.created_at},
       {"created_by", t.created_by},
       {"revoked", t.revoked}};
}

void to_json(json& j, const NewToken& t) {
  j = {{"id", t.info.id},
       {"name", t.info.name},
       {"role", role_name(t.info.role)},
       {"token", t.token}};
}

Result<NewToken> TokenStore::create_token(const std::string& name, Role role,
                                          const Principal& who) {
  if (!valid_name(name, 100, true))
    return Status::Invalid("token name '{}' must be 1..100 of letters, digits, _ - .",
                           name.substr(0, 64));
  NewToken out;
  out.token = "dls_" + random_hex(24);
  const std::string& token = out.token;
  const int64_t now = now_ms();
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(
        auto rows, c.query("INSERT INTO api_tokens (name, token_hash, role, "
                           "created_at, created_by) VALUES ($1,$2,$3,$4,$5) "
                           "RETURNING id",
                           {name, sha256_hex(token), std::string(role_name(role)), now, who.name}));
    int64_t id = sql_int(rows.at(0).at(0));
    out.info = {id, name, role, now, who.name, false};
    return audit(c, who, "token.create", "token/" + std::to_string(id),
                 {{"name", name}, {"role", role_name(role)}});
  }));
  return out;
}

Result<Principal> TokenStore::authenticate(const std::string& token) {
  Principal p;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("SELECT name, role FROM api_tokens WHERE "
                                              "token_hash = $1 AND revoked = 0",
                                              {sha256_hex(token)}));
    if (rows.empty())
      return Status::Unauthenticated(
          "the API token is unknown or revoked; create one with "
          "`dlsys tokens create --role R`");
    p.name = sql_text(rows[0][0]);
    DLSYS_ASSIGN_OR_RETURN(p.role, parse_role(sql_text(rows[0][1])));
    return Status::OK();
  }));
  return p;
}

Result<std::vector<TokenInfo>> TokenStore::list_tokens() {
  std::vector<TokenInfo> out;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    out.clear();
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("SELECT id, name, role, created_at, created_by, "
                                              "revoked FROM api_tokens ORDER BY id",
                                              {}));
    for (auto& r : rows) {
      TokenInfo t{sql_int(r[0]), sql_text(r[1]), Role::kViewer,
                  sql_int(r[3]), sql_text(r[4]), sql_int(r[5]) != 0};
      DLSYS_ASSIGN_OR_RETURN(t.role, parse_role(sql_text(r[2])));
      out.push_back(std::move(t));
    }
    return Status::OK();
  }));
  return out;
}

Status TokenStore::revoke_token(int64_t id, const Principal& who) {
  return db_.tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("UPDATE api_tokens SET revoked = 1 WHERE id = $1 "
                                              "RETURNING id",
                                              {id}));
    if (rows.empty()) return Status::NotFound("token {} does not exist", id);
    return audit(c, who, "token.revoke", "token/" + std::to_string(id));
  });
}
}  // namespace dlsys::meta
