// The SQL layer under the metadata store: one small interface, two engines (SQLite, PostgreSQL).
// The store writes portable SQL with $1, $2, ... placeholders; each engine binds them its way
// and caches prepared statements per connection.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "core/status.h"

namespace dlsys::meta {

enum class SqlDialect { kSqlite, kPostgres };

// NULL, integer, double or text. Integers are int64 in both engines (BIGINT in PostgreSQL).
using SqlValue = std::variant<std::monostate, int64_t, double, std::string>;
using SqlRow = std::vector<SqlValue>;
using SqlParams = std::vector<SqlValue>;

// Accessors that tolerate the engines' type differences (PostgreSQL may return a count as text).
int64_t sql_int(const SqlValue& v);
double sql_double(const SqlValue& v);
std::string sql_text(const SqlValue& v);
bool sql_is_null(const SqlValue& v);

// One database connection. Not thread-safe: one thread at a time (SqlPool hands them out).
class SqlConnection {
 public:
  virtual ~SqlConnection() = default;
  virtual SqlDialect dialect() const = 0;
  // Runs a statement; returns its rows (empty for statements without results).
  virtual Result<std::vector<SqlRow>> query(const std::string& sql, const SqlParams& params) = 0;
  // Runs one statement once per parameter row (inside the caller's transaction).
  virtual Status exec_many(const std::string& sql, const std::vector<SqlParams>& rows) = 0;
  // Runs statements with no parameters, ';'-separated (migrations).
  virtual Status exec_script(const std::string& sql) = 0;
  // Starts a transaction; `write` takes the write lock up front (SQLite BEGIN IMMEDIATE).
  virtual Status begin(bool write) = 0;
  virtual Status commit() = 0;
  virtual void rollback() = 0;
  // False once the connection is broken (the pool then drops it instead of lending it again).
  virtual bool healthy() const { return true; }

  Status exec(const std::string& sql, const SqlParams& params) {
    return query(sql, params).status();
  }
};

// Engine settings with defaults for a server.
struct SqlOptions {
  // SQLite: the write-ahead log's bound. Readers that overlap without pause keep SQLite's
  // automatic checkpoint from ever restarting the WAL, so it would grow without end. When a write
  // commit finds the -wal file above this size, that connection holds off this process's other
  // write transactions and runs a TRUNCATE checkpoint, which waits for the readers still using
  // the WAL: at first wal_checkpoint_wait_ms, doubled after each attempt they outlast, up to
  // wal_checkpoint_max_wait_ms. After a busy attempt the next one comes after a pause of the
  // same length, or at the next commit once the WAL is twice the bound. Also the
  // journal_size_limit. 0 turns the check off.
  int64_t wal_checkpoint_bytes = int64_t{64} << 20;
  int wal_checkpoint_wait_ms = 100;
  int wal_checkpoint_max_wait_ms = 1000;
};

// Counters of an SqlDatabase (SQLite: the WAL checkpoints the store ran).
struct SqlStats {
  int64_t checkpoints = 0;  // WAL truncated
  int64_t busy = 0;         // attempts readers outlasted
};

// Opens connections to one database. `url` is a file path (SQLite) or postgresql://...
class SqlDatabase {
 public:
  // Returns the database at `url`: "postgresql://..." or "postgres://..." selects PostgreSQL,
  // anything else is the path of an SQLite file (created if missing, WAL mode).
  static Result<std::unique_ptr<SqlDatabase>> open(const std::string& url, size_t max_connections,
                                                   const SqlOptions& options = {});
  virtual ~SqlDatabase() = default;
  virtual SqlDialect dialect() const = 0;
  virtual SqlStats stats() const { return {}; }

  // A connection on loan; returned to the pool when destroyed. Thread-safe.
  class Lease {
   public:
    Lease(SqlDatabase* db, std::unique_ptr<SqlConnection> c) : db_(db), c_(std::move(c)) {}
    Lease(Lease&& o) noexcept : db_(std::exchange(o.db_, nullptr)), c_(std::move(o.c_)) {}
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    SqlConnection* operator->() { return c_.get(); }
    SqlConnection& operator*() { return *c_; }
    // Drops the connection instead of pooling it (after a broken connection).
    void discard() { c_.reset(); }

   private:
    SqlDatabase* db_;
    std::unique_ptr<SqlConnection> c_;
  };
  // Returns an idle connection or opens a new one; blocks while max_connections are on loan.
  Result<Lease> acquire();

 protected:
  explicit SqlDatabase(size_t max_connections) : max_(max_connections) {}
  virtual Result<std::unique_ptr<SqlConnection>> connect() = 0;

 private:
  void release(std::unique_ptr<SqlConnection> c);
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<SqlConnection>> idle_;
  size_t open_ = 0;
  size_t max_;
};

// Runs `fn(conn)` in a transaction; commits when it returns OK, rolls back otherwise.
template <typename Fn>
Status with_transaction(SqlConnection& c, bool write, Fn&& fn) {
  DLSYS_RETURN_IF_ERROR(c.begin(write));
  Status st = fn(c);
  if (!st.ok()) {
    c.rollback();
    return st;
  }
  return c.commit();
}

Result<std::unique_ptr<SqlDatabase>> open_sqlite(const std::string& path, size_t max_connections,
                                                 const SqlOptions& options = {});
Result<std::unique_ptr<SqlDatabase>> open_postgres(const std::string& url, size_t max_connections);

}  // namespace dlsys::meta
