// Who may do what: roles, the principal a request acts as, and API tokens. Kept apart from the
// rest of the metadata store so that the router (which only checks tokens) includes this alone.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace dlsys::meta {

using json = nlohmann::json;
class StoreDb;

// What the caller may do. Order matters: a role may do what the roles below it may.
enum class Role { kInference, kViewer, kEditor, kAdmin };
// "inference", "viewer", "editor" or "admin".
const char* role_name(Role r);
// The role named `s`; an error listing the roles otherwise.
Result<Role> parse_role(const std::string& s);

struct Principal {
  std::string name;  // token name, or "local" for in-process and unauthenticated access
  Role role = Role::kAdmin;
};

// An API token as listed: never the token itself, which only its creator sees once.
struct TokenInfo {
  int64_t id = 0;
  std::string name;
  Role role = Role::kViewer;
  int64_t created_at = 0;  // ms since the epoch
  std::string created_by;
  bool revoked = false;
};

// A token just created: its record and the plain token ("dls_" and 48 hex digits).
struct NewToken {
  TokenInfo info;
  std::string token;
};

// The REST representations (docs/api.md): {"id", "name", "role", "created_at", "created_by",
// "revoked"}; a new token is {"id", "name", "role", "token"}.
void to_json(json& j, const TokenInfo& t);
void to_json(json& j, const NewToken& t);

// API tokens. Only a token's SHA-256 is kept; the plain token is shown once, at creation.
// Thread-safe; `db` must outlive it.
class TokenStore {
 public:
  explicit TokenStore(StoreDb& db) : db_(db) {}
  // Creates a token named `name` (1..100 of letters, digits, _ - .) with `role`.
  Result<NewToken> create_token(const std::string& name, Role role, const Principal& who);
  // The principal of a valid, unrevoked token; Unauthenticated otherwise.
  Result<Principal> authenticate(const std::string& token);
  // Every token, revoked ones too, oldest first.
  Result<std::vector<TokenInfo>> list_tokens();
  // Revokes token `id` (NotFound when there is none).
  Status revoke_token(int64_t id, const Principal& who);

 private:
  StoreDb& db_;
};

}  // namespace dlsys::meta
