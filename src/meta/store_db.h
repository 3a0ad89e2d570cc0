// The database layer every part of the metadata store shares: the pooled connection with
// transactions retried when the database is busy, the numbered schema migrations, the audit log
// (each write commits with its audit record) and small checks used by several parts (page
// sizes and tokens, key names, artifact paths).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "meta/auth.h"
#include "meta/sql_db.h"

namespace dlsys::meta {

using json = nlohmann::json;

constexpr int kMaxPageSize = 1000;
constexpr size_t kMaxKeyLength = 250;

// One page of a list: `items` and, when more follow, the token that fetches them.
template <typename T>
struct PageOf {
  std::vector<T> items;
  std::string next_page_token;
};

// One entry of the audit log: who did what to which object, and when.
struct AuditRecord {
  int64_t id = 0;
  int64_t timestamp = 0;  // ms since the epoch
  std::string actor;      // the principal's name
  std::string action;     // "run.create", "model_alias.set", ...
  std::string target;     // "run/7", "model/digits@production", ...
  json detail;            // what the action recorded (an object, maybe empty)
};
// {"id", "timestamp", "actor", "action", "target", "detail"} (docs/api.md).
void to_json(json& j, const AuditRecord& a);

// Reads a record (Run, Experiment, ...) from its REST representation (docs/api.md), as the CLI
// and other clients get it from a server: every field is checked, so a missing key or a wrong
// type is an InvalidArgument naming `what` (e.g. "the server's answer to GET /api/v1/runs/7"),
// the key and the type expected, never an exception. Specialized next to each record.
template <typename T>
Result<T> from_json(const json& j, std::string_view what);

class StoreDb {
 public:
  // Opens the database at `url` (an SQLite path or postgresql://...) and brings its schema to
  // the newest version (migrations run once, under a lock, in a transaction). A
  // `schema_version` above 0 stops there instead (tests build an older database with it; the
  // store's classes expect the newest).
  static Result<std::unique_ptr<StoreDb>> open(const std::string& url, size_t max_connections,
                                               const SqlOptions& options = {},
                                               int64_t schema_version = 0);
  // The schema version after migrations.
  Result<int64_t> schema_version();
  SqlDialect dialect() const { return db_->dialect(); }
  SqlStats stats() const { return db_->stats(); }

  // Runs `fn(conn)` (returning Status) in a transaction on a pooled connection: commits when it
  // returns OK, rolls back otherwise. When the database is busy (kUnavailable) the whole
  // transaction runs again, up to 3 more times, so `fn` must be safe to repeat (reset what it
  // fills at its start).
  template <typename Fn>
  Status tx(bool write, Fn&& fn) {
    for (int attempt = 0;; ++attempt) {
      DLSYS_ASSIGN_OR_RETURN(auto lease, db_->acquire());
      Status st = with_transaction(*lease, write, fn);
      if (st.code() == StatusCode::kUnavailable && attempt < 3) {
        if (!lease->healthy()) lease.discard();
        continue;
      }
      return st;
    }
  }

  // The audit log, newest first.
  Result<PageOf<AuditRecord>> list_audit(int page_size, const std::string& page_token);

 private:
  explicit StoreDb(std::unique_ptr<SqlDatabase> db) : db_(std::move(db)) {}
  Status migrate(int64_t target);

  std::unique_ptr<SqlDatabase> db_;
};

// Appends an audit record (now, `who`, `action` such as "run.create", `target` such as "run/7",
// `detail` unless empty) in the caller's transaction, so it commits with the write it records.
Status audit(SqlConnection& c, const Principal& who, const std::string& action,
             const std::string& target, const json& detail = json::object());

// Checks for names used as keys (metrics, params, tags): 1..250 of [A-Za-z0-9_-./ ].
Status check_key(const std::string& what, const std::string& key);
// Checks an artifact path: relative, no "..", no control characters, ≤ 1024 bytes.
Status check_artifact_path(const std::string& path);
// True when `s` is 1..max of letters, digits, _ and - (and . when allow_dot).
bool valid_name(const std::string& s, size_t max, bool allow_dot);
// page_size must be 1..kMaxPageSize.
Status check_page_size(int n);
// The error for a page token this server did not issue.
Status bad_token(const std::string& t);
// Parses a "<prefix><int>" page token.
Result<int64_t> int_token(const std::string& t, const std::string& prefix);
// "1,2,3" for an SQL IN list (integers only, so nothing is pasted from outside).
std::string in_list(const std::vector<int64_t>& ids);

}  // namespace dlsys::meta
