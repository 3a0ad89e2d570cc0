// PostgreSQL engine through libpq: text-format parameters, statements prepared once per
// connection, SQLSTATEs mapped to dlsys status codes.
#include <libpq-fe.h>

#include <unordered_map>

#include "meta/sql_db.h"

namespace dlsys::meta {

namespace {

// PostgreSQL type OIDs (pg_type.h) of the columns the store reads.
constexpr Oid kInt8 = 20, kInt2 = 21, kInt4 = 23, kFloat4 = 700, kFloat8 = 701, kNumeric = 1700;

Status pg_error(PGconn* conn, PGresult* res, const std::string& sql) {
  const char* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  std::string msg = res ? PQresultErrorMessage(res) : PQerrorMessage(conn);
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  msg = fmt::format("PostgreSQL: {} (in: {})", msg, sql.substr(0, 120));
  std::string s = state ? state : "";
  if (s == "23505") return Status(StatusCode::kAlreadyExists, msg);
  if (s.rfind("23", 0) == 0 || s.rfind("22", 0) == 0)
    return Status(StatusCode::kInvalidArgument, msg);
  if (s == "40001" || s == "40P01" || s.rfind("08", 0) == 0 || PQstatus(conn) != CONNECTION_OK)
    return Status(StatusCode::kUnavailable, msg + "; retry");
  return Status(StatusCode::kIOError, msg);
}

class PgConnection : public SqlConnection {
 public:
  explicit PgConnection(PGconn* c) : conn_(c) {}
  ~PgConnection() override { PQfinish(conn_); }
  SqlDialect dialect() const override { return SqlDialect::kPostgres; }
  bool healthy() const override { return PQstatus(conn_) == CONNECTION_OK; }

  Result<std::vector<SqlRow>> query(const std::string& sql, const SqlParams& params) override {
    DLSYS_ASSIGN_OR_RETURN(std::string name, prepare(sql));
    std::vector<std::string> text(params.size());
    std::vector<const char*> values(params.size(), nullptr);
    for (size_t i = 0; i < params.size(); ++i) {
      if (sql_is_null(params[i])) continue;
      text[i] = sql_text(params[i]);
      values[i] = text[i].c_str();
    }
    PGresult* res = PQexecPrepared(conn_, name.c_str(), static_cast<int>(params.size()),
                                   values.data(), nullptr, nullptr, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
      Status err = pg_error(conn_, res, sql);
      PQclear(res);
      return err;
    }
    std::vector<SqlRow> rows;
    int nr = PQntuples(res), nc = PQnfields(res);
    rows.reserve(static_cast<size_t>(nr));
    for (int r = 0; r < nr; ++r) {
      SqlRow row(static_cast<size_t>(nc));
      for (int c = 0; c < nc; ++c) {
        if (PQgetisnull(res, r, c)) continue;
        const char* v = PQgetvalue(res, r, c);
        Oid t = PQftype(res, c);
        if (t == kInt8 || t == kInt4 || t == kInt2)
          row[c] = static_cast<int64_t>(std::strtoll(v, nullptr, 10));
        else if (t == kFloat8 || t == kFloat4 || t == kNumeric)
          row[c] = std::strtod(v, nullptr);
        else
          row[c] = std::string(v, static_cast<size_t>(PQgetlength(res, r, c)));
      }
      rows.push_back(std::move(row));
    }
    PQclear(res);
    return rows;
  }

  // Pipelined (libpq 14+): every row is sent before the first result is read, so a batch costs
  // one round trip instead of one per row.
  Status exec_many(const std::string& sql, const std::vector<SqlParams>& rows) override {
    if (rows.size() <= 1) {
      for (const SqlParams& p : rows) DLSYS_RETURN_IF_ERROR(exec(sql, p));
      return Status::OK();
    }
    DLSYS_ASSIGN_OR_RETURN(std::string name, prepare(sql));
    if (PQenterPipelineMode(conn_) != 1)
      return Status::Internal("PostgreSQL: cannot enter pipeline mode: {}", PQerrorMessage(conn_));
    Status out = Status::OK();
    std::vector<std::string> text;
    std::vector<const char*> values;
    for (const SqlParams& p : rows) {
      text.assign(p.size(), std::string());
      values.assign(p.size(), nullptr);
      for (size_t i = 0; i < p.size(); ++i) {
        if (sql_is_null(p[i])) continue;
        text[i] = sql_text(p[i]);
        values[i] = text[i].c_str();
      }
      if (PQsendQueryPrepared(conn_, name.c_str(), static_cast<int>(p.size()), values.data(),
                              nullptr, nullptr, 0) != 1) {
        out = Status::Unavailable("PostgreSQL: sending a pipelined statement failed: {}",
                                  PQerrorMessage(conn_));
        break;
      }
    }
    PQpipelineSync(conn_);
    // Drain every result up to the sync point, keeping the first error.
    for (;;) {
      PGresult* res = PQgetResult(conn_);
      if (!res) {  // end of one statement's results
        if (PQstatus(conn_) != CONNECTION_OK) break;
        continue;
      }
      ExecStatusType st = PQresultStatus(res);
      if (st == PGRES_PIPELINE_SYNC) {
        PQclear(res);
        break;
      }
      if (out.ok() && st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK &&
          st != PGRES_PIPELINE_ABORTED)
        out = pg_error(conn_, res, sql);
      PQclear(res);
      if (PQstatus(conn_) != CONNECTION_OK) break;
    }
    PQexitPipelineMode(conn_);
    return out;
  }

  Status exec_script(const std::string& sql) override {
    PGresult* res = PQexec(conn_, sql.c_str());
    ExecStatusType st = PQresultStatus(res);
    Status out = Status::OK();
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) out = pg_error(conn_, res, sql);
    PQclear(res);
    return out;
  }

  // Reads run without BEGIN/COMMIT: under READ COMMITTED each statement takes its own snapshot
  // inside a transaction too, so the two extra round trips would buy nothing.
  Status begin(bool write) override {
    in_tx_ = write;
    return write ? exec_script("BEGIN") : Status::OK();
  }
  Status commit() override {
    if (!in_tx_) return Status::OK();
    in_tx_ = false;
    return exec_script("COMMIT");
  }
  void rollback() override {
    if (!in_tx_) return;
    in_tx_ = false;
    PQclear(PQexec(conn_, "ROLLBACK"));
  }

 private:
  Result<std::string> prepare(const std::string& sql) {
    auto it = cache_.find(sql);
    if (it != cache_.end()) return it->second;
    std::string name = "s" + std::to_string(cache_.size());
    PGresult* res = PQprepare(conn_, name.c_str(), sql.c_str(), 0, nullptr);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
      Status err = pg_error(conn_, res, sql);
      PQclear(res);
      return err;
    }
    PQclear(res);
    cache_.emplace(sql, name);
    return name;
  }

  PGconn* conn_;
  bool in_tx_ = false;
  std::unordered_map<std::string, std::string> cache_;
};

void ignore_notice(void*, const char*) {}

class PgDatabase : public SqlDatabase {
 public:
  PgDatabase(std::string url, size_t max) : SqlDatabase(max), url_(std::move(url)) {}
  SqlDialect dialect() const override { return SqlDialect::kPostgres; }

 protected:
  Result<std::unique_ptr<SqlConnection>> connect() override {
    PGconn* c = PQconnectdb(url_.c_str());
    if (PQstatus(c) != CONNECTION_OK) {
      std::string msg = PQerrorMessage(c);
      while (!msg.empty() && msg.back() == '\n') msg.pop_back();
      PQfinish(c);
      return Status::Unavailable(
          "cannot connect to PostgreSQL at '{}': {}; check that the server runs and the URL "
          "(postgresql://user@host:port/db)",
          redact(url_), msg);
    }
    PQsetNoticeProcessor(c, ignore_notice, nullptr);
    return std::unique_ptr<SqlConnection>(std::make_unique<PgConnection>(c));
  }

 private:
  // Drops a password from a URL before it goes into an error message.
  static std::string redact(const std::string& url) {
    size_t at = url.find('@'), scheme = url.find("://");
    if (at == std::string::npos || scheme == std::string::npos) return url;
    size_t colon = url.find(':', scheme + 3);
    if (colon == std::string::npos || colon > at) return url;
    return url.substr(0, colon) + ":***" + url.substr(at);
  }
  std::string url_;
};

}  // namespace

Result<std::unique_ptr<SqlDatabase>> open_postgres(const std::string& url, size_t max_connections) {
  auto db = std::make_unique<PgDatabase>(url, max_connections);
  DLSYS_ASSIGN_OR_RETURN(auto lease, db->acquire());
  (void)lease;
  return std::unique_ptr<SqlDatabase>(std::move(db));
}

}  // namespace dlsys::meta
