#include "meta/sql_db.h"

#include <cstdlib>

namespace dlsys::meta {

int64_t sql_int(const SqlValue& v) {
  if (auto* i = std::get_if<int64_t>(&v)) return *i;
  if (auto* d = std::get_if<double>(&v)) return static_cast<int64_t>(*d);
  if (auto* s = std::get_if<std::string>(&v)) return std::strtoll(s->c_str(), nullptr, 10);
  return 0;
}

double sql_double(const SqlValue& v) {
  if (auto* d = std::get_if<double>(&v)) return *d;
  if (auto* i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
  if (auto* s = std::get_if<std::string>(&v)) return std::strtod(s->c_str(), nullptr);
  return 0.0;
}

std::string sql_text(const SqlValue& v) {
  if (auto* s = std::get_if<std::string>(&v)) return *s;
  if (auto* i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  if (auto* d = std::get_if<double>(&v)) return fmt::format("{}", *d);
  return "";
}

bool sql_is_null(const SqlValue& v) {
  return std::holds_alternative<std::monostate>(v);
}

SqlDatabase::Lease::~Lease() {
  if (db_) db_->release(std::move(c_));  // null after discard(): the pool forgets it
}

Result<SqlDatabase::Lease> SqlDatabase::acquire() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (!idle_.empty()) {
      auto c = std::move(idle_.back());
      idle_.pop_back();
      return Lease(this, std::move(c));
    }
    if (open_ < max_) break;
    cv_.wait(lock);
  }
  ++open_;
  lock.unlock();
  auto c = connect();
  if (!c.ok()) {
    std::lock_guard<std::mutex> g(mu_);
    --open_;
    cv_.notify_one();
    return c.status();
  }
  return Lease(this, std::move(c).value());
}

void SqlDatabase::release(std::unique_ptr<SqlConnection> c) {
  std::lock_guard<std::mutex> g(mu_);
  if (c && c->healthy())
    idle_.push_back(std::move(c));
  else
    --open_;
  cv_.notify_one();
}

Result<std::unique_ptr<SqlDatabase>> SqlDatabase::open(const std::string& url,
                                                       size_t max_connections,
                                                       const SqlOptions& options) {
  if (url.rfind("postgresql://", 0) == 0 || url.rfind("postgres://", 0) == 0)
    return open_postgres(url, max_connections);
  return open_sqlite(url, max_connections, options);
}

}  // namespace dlsys::meta
