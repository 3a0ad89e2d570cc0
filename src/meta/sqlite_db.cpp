// SQLite engine: WAL mode, one prepared-statement cache per connection, $N placeholders mapped
// to SQLite's parameter indexes, and a bounded WAL (see SqlOptions::wal_checkpoint_bytes).
#include <sqlite3.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "meta/sql_db.h"

namespace dlsys::meta {

namespace {

Status sqlite_error(sqlite3* db, int rc, const std::string& sql) {
  int ext = sqlite3_extended_errcode(db);
  std::string msg = fmt::format("SQLite: {} (in: {})", sqlite3_errmsg(db), sql.substr(0, 120));
  if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY)
    return Status(StatusCode::kAlreadyExists, msg);
  if ((rc & 0xff) == SQLITE_CONSTRAINT) return Status(StatusCode::kInvalidArgument, msg);
  if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED)
    return Status(StatusCode::kUnavailable, msg + "; the database is busy, retry");
  return Status(StatusCode::kIOError, msg);
}

constexpr int kBusyTimeoutMs = 30000;

// Shared by a database's connections: the WAL's bound, and a gate between this process's write
// transactions and its checkpoint. A TRUNCATE checkpoint needs SQLite's write lock; competing
// for it by polling against writers that queue on it back to back, it would rarely win. So a
// checkpoint closes the gate (new write transactions wait), waits for the open ones to end, and
// only then runs; writers wait for one checkpoint at most, a short one (the WAL is bounded).
struct WalGuard {
  std::string wal_path;
  SqlOptions options;
  std::mutex mu;
  std::condition_variable cv;
  int writers = 0;  // write transactions open in this process
  bool checkpointing = false;
  int busy = 0;  // attempts in a row that readers outlasted
  SqlStats stats;
  std::atomic<int64_t> next_attempt_ms{0};  // after a busy attempt, pause

  void enter_write() {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return !checkpointing; });
    ++writers;
  }
  void leave_write() {
    std::lock_guard<std::mutex> lock(mu);
    if (--writers == 0) cv.notify_all();
  }
};

int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct Stmt {
  sqlite3_stmt* stmt = nullptr;
  std::vector<int> param_of_index;  // SQLite index i (1-based) -> our parameter number - 1
};

class SqliteConnection : public SqlConnection {
 public:
  SqliteConnection(sqlite3* db, std::shared_ptr<WalGuard> wal) : db_(db), wal_(std::move(wal)) {}
  ~SqliteConnection() override {
    end_write();
    for (auto& [_, s] : cache_) sqlite3_finalize(s.stmt);
    sqlite3_close_v2(db_);
  }
  SqlDialect dialect() const override { return SqlDialect::kSqlite; }

  Result<std::vector<SqlRow>> query(const std::string& sql, const SqlParams& params) override {
    DLSYS_ASSIGN_OR_RETURN(Stmt * s, prepare(sql));
    sqlite3_reset(s->stmt);
    sqlite3_clear_bindings(s->stmt);
    DLSYS_RETURN_IF_ERROR(bind(*s, params, sql));
    std::vector<SqlRow> rows;
    for (;;) {
      int rc = sqlite3_step(s->stmt);
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) {
        Status st = sqlite_error(db_, rc, sql);
        sqlite3_reset(s->stmt);
        return st;
      }
      int n = sqlite3_column_count(s->stmt);
      SqlRow row(static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) {
        switch (sqlite3_column_type(s->stmt, i)) {
          case SQLITE_INTEGER:
            row[i] = static_cast<int64_t>(sqlite3_column_int64(s->stmt, i));
            break;
          case SQLITE_FLOAT:
            row[i] = sqlite3_column_double(s->stmt, i);
            break;
          case SQLITE_NULL:
            break;
          default: {
            const char* t = reinterpret_cast<const char*>(sqlite3_column_text(s->stmt, i));
            row[i] = std::string(t ? t : "", static_cast<size_t>(sqlite3_column_bytes(s->stmt, i)));
          }
        }
      }
      rows.push_back(std::move(row));
    }
    sqlite3_reset(s->stmt);
    return rows;
  }

  Status exec_many(const std::string& sql, const std::vector<SqlParams>& rows) override {
    DLSYS_ASSIGN_OR_RETURN(Stmt * s, prepare(sql));
    for (const SqlParams& p : rows) {
      sqlite3_reset(s->stmt);
      DLSYS_RETURN_IF_ERROR(bind(*s, p, sql));
      int rc = sqlite3_step(s->stmt);
      if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        Status st = sqlite_error(db_, rc, sql);
        sqlite3_reset(s->stmt);
        return st;
      }
    }
    sqlite3_reset(s->stmt);
    return Status::OK();
  }

  Status exec_script(const std::string& sql) override {
    char* err = nullptr;
    int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
      std::string msg = err ? err : "unknown error";
      sqlite3_free(err);
      return Status::IOError("SQLite: {} (in: {})", msg, sql.substr(0, 120));
    }
    return Status::OK();
  }

  Status begin(bool write) override {
    if (write) {
      wal_->enter_write();
      writing_ = true;
    }
    Status st = exec_script(write ? "BEGIN IMMEDIATE" : "BEGIN");
    if (!st.ok()) end_write();
    return st;
  }
  Status commit() override {
    Status st = exec_script("COMMIT");
    if (!st.ok()) {
      rollback();
      return st;
    }
    if (writing_) {
      end_write();
      bound_wal();
    }
    return st;
  }
  void rollback() override {
    if (!sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    end_write();
  }

 private:
  Result<Stmt*> prepare(const std::string& sql) {
    auto it = cache_.find(sql);
    if (it != cache_.end()) return &it->second;
    Stmt s;
    int rc = sqlite3_prepare_v3(db_, sql.c_str(), static_cast<int>(sql.size()),
                                SQLITE_PREPARE_PERSISTENT, &s.stmt, nullptr);
    if (rc != SQLITE_OK) return sqlite_error(db_, rc, sql);
    int n = sqlite3_bind_parameter_count(s.stmt);
    s.param_of_index.resize(static_cast<size_t>(n) + 1, -1);
    for (int i = 1; i <= n; ++i) {
      const char* name = sqlite3_bind_parameter_name(s.stmt, i);
      if (!name || name[0] != '$') {
        sqlite3_finalize(s.stmt);
        return Status::Internal("SQL placeholders must be $1, $2, ...: {}", sql);
      }
      s.param_of_index[i] = std::atoi(name + 1) - 1;
    }
    return &cache_.emplace(sql, s).first->second;
  }

  Status bind(const Stmt& s, const SqlParams& params, const std::string& sql) {
    for (size_t i = 1; i < s.param_of_index.size(); ++i) {
      int p = s.param_of_index[i];
      if (p < 0 || static_cast<size_t>(p) >= params.size())
        return Status::Internal("SQL parameter ${} has no value: {}", p + 1, sql);
      const SqlValue& v = params[static_cast<size_t>(p)];
      int idx = static_cast<int>(i), rc;
      if (auto* iv = std::get_if<int64_t>(&v))
        rc = sqlite3_bind_int64(s.stmt, idx, *iv);
      else if (auto* dv = std::get_if<double>(&v))
        rc = sqlite3_bind_double(s.stmt, idx, *dv);
      else if (auto* sv = std::get_if<std::string>(&v))
        rc = sqlite3_bind_text64(s.stmt, idx, sv->data(), sv->size(), SQLITE_STATIC, SQLITE_UTF8);
      else
        rc = sqlite3_bind_null(s.stmt, idx);
      if (rc != SQLITE_OK) return sqlite_error(db_, rc, sql);
    }
    return Status::OK();
  }

  // After a write commit: when the -wal file is over the bound, checkpoint and truncate it. The
  // checkpoint needs every reader to have moved past the WAL; it waits for them only briefly
  // (writers queue behind it meanwhile) and on SQLITE_BUSY leaves it to a later commit.
  void end_write() {
    if (!writing_) return;
    writing_ = false;
    wal_->leave_write();
  }

  void bound_wal() {
    WalGuard& g = *wal_;
    const SqlOptions& o = g.options;
    if (o.wal_checkpoint_bytes <= 0) return;
    struct stat st;
    if (::stat(g.wal_path.c_str(), &st) != 0 || st.st_size <= o.wal_checkpoint_bytes) return;
    // Past twice the bound, every commit tries (writers are then slowed, not the WAL let go).
    const bool over_twice = st.st_size > 2 * o.wal_checkpoint_bytes;
    if (!over_twice && steady_ms() < g.next_attempt_ms.load()) return;
    int wait_ms;
    bool drained;
    {
      std::unique_lock<std::mutex> lock(g.mu);
      if (g.checkpointing) return;  // another connection is at it
      g.checkpointing = true;
      // A busy attempt means a reader outlasted the wait: wait longer next time.
      wait_ms =
          std::min(o.wal_checkpoint_max_wait_ms, o.wal_checkpoint_wait_ms << std::min(g.busy, 10));
      // Bounded too: a thread may hold a write transaction on another connection of its own.
      drained =
          g.cv.wait_for(lock, std::chrono::milliseconds(wait_ms), [&] { return g.writers == 0; });
    }
    int rc = SQLITE_BUSY;
    if (drained) {
      sqlite3_busy_timeout(db_, wait_ms);
      rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
      sqlite3_busy_timeout(db_, kBusyTimeoutMs);
    }
    {
      std::lock_guard<std::mutex> lock(g.mu);
      g.checkpointing = false;
      g.busy = rc == SQLITE_OK ? 0 : g.busy + 1;
      ++(rc == SQLITE_OK ? g.stats.checkpoints : g.stats.busy);
      if (rc != SQLITE_OK) g.next_attempt_ms = steady_ms() + wait_ms;
    }
    g.cv.notify_all();
  }

  sqlite3* db_;
  std::shared_ptr<WalGuard> wal_;
  bool writing_ = false;
  std::unordered_map<std::string, Stmt> cache_;
};

class SqliteDatabase : public SqlDatabase {
 public:
  SqliteDatabase(std::string path, size_t max, const SqlOptions& options)
      : SqlDatabase(max), path_(std::move(path)), wal_(std::make_shared<WalGuard>()) {
    wal_->wal_path = path_ + "-wal";
    wal_->options = options;
  }
  SqlDialect dialect() const override { return SqlDialect::kSqlite; }
  SqlStats stats() const override {
    std::lock_guard<std::mutex> lock(wal_->mu);
    return wal_->stats;
  }

 protected:
  Result<std::unique_ptr<SqlConnection>> connect() override {
    sqlite3* db = nullptr;
    int rc =
        sqlite3_open_v2(path_.c_str(), &db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
      std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
      sqlite3_close_v2(db);
      return Status::IOError(
          "cannot open SQLite database '{}': {}; check the --data-dir path "
          "and its permissions",
          path_, msg);
    }
    sqlite3_busy_timeout(db, kBusyTimeoutMs);
    auto c = std::make_unique<SqliteConnection>(db, wal_);
    // WAL: readers never block the writer; NORMAL sync: a commit survives a process kill.
    // journal_size_limit: a WAL restarted by a checkpoint is truncated back to the bound.
    std::string pragmas =
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;";
    if (wal_->options.wal_checkpoint_bytes > 0)
      pragmas += fmt::format(" PRAGMA journal_size_limit={};", wal_->options.wal_checkpoint_bytes);
    // Processes opening one database at once (the ranks of `dlsys train --nproc N --data-dir
    // D`): the switch to WAL takes the database's exclusive lock, and SQLite answers "database
    // is locked" at once rather than through the busy handler; tried again within the timeout.
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(kBusyTimeoutMs);
    for (int wait_ms = 1;; wait_ms = std::min(2 * wait_ms, 50)) {
      Status st = c->exec_script(pragmas);
      if (st.ok()) break;
      if (st.message().find("is locked") == std::string::npos ||
          std::chrono::steady_clock::now() > deadline)
        return st;
      std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
    }
    return std::unique_ptr<SqlConnection>(std::move(c));
  }

 private:
  std::string path_;
  std::shared_ptr<WalGuard> wal_;
};

}  // namespace

Result<std::unique_ptr<SqlDatabase>> open_sqlite(const std::string& path, size_t max_connections,
                                                 const SqlOptions& options) {
  auto db = std::make_unique<SqliteDatabase>(path, max_connections, options);
  // Open one connection now so that a bad path fails here, not on the first request.
  DLSYS_ASSIGN_OR_RETURN(auto lease, db->acquire());
  (void)lease;
  return std::unique_ptr<SqlDatabase>(std::move(db));
}

}  // namespace dlsys::meta
