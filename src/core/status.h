// Status and Result<T>: errors as values at module boundaries (LevelDB style).
#pragma once

#include <fmt/format.h>

#include <optional>
#include <string>
#include <utility>
#include <variant>

#include "core/check.h"

namespace dlsys {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // the caller passed something malformed
  kNotFound,            // a named thing does not exist
  kUnsupported,         // valid input that dlsys cannot handle (yet)
  kIOError,             // the file system said no
  kInternal,            // a bug in dlsys or a library it calls
  kAlreadyExists,       // a create met a name that is taken
  kUnauthenticated,     // no valid credentials were presented
  kPermissionDenied,    // the caller is known but may not do this
  kUnavailable,         // a service is down or shutting down; retry later
  kDeadlineExceeded,    // the caller's deadline passed before the work was done
  kFailedPrecondition,  // the object is not in the state the operation needs (a job that ended)
};

// Returns a short lower-case name for `code` ("invalid argument", ...).
const char* status_code_name(StatusCode code);

// Success, or an error code with a message that names what failed, where, and what to do.
class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status OK() { return Status(); }
  template <typename... Args>
  static Status Invalid(fmt::format_string<Args...> f, Args&&... args) {
    return Status(StatusCode::kInvalidArgument, fmt::format(f, std::forward<Args>(args)...));
  }
  template <typename... Args>
  static Status NotFound(fmt::format_string<Args...> f, Args&&... args) {
    return Status(StatusCode::kNotFound, fmt::format(f, std::forward<Args>(args)...));
  }
  template <typename... Args>
  static Status Unsupported(fmt::format_string<Args...> f, Args&&... args) {
    return Status(StatusCode::kUnsupported, fmt::format(f, std::forward<Args>(args)...));
  }
  template <typename... Args>
  static Status IOError(fmt::format_string<Args...> f, Args&&... args) {
    return Status(StatusCode::kIOError, fmt::format(f, std::forward<Args>(args)...));
  }
  template <typename... Args>
  static Status AlreadyExists(fmt::format_string<Args...> f, Args&&... args) {
    return Status(StatusCode::kAlreadyExists, fmt::format(f, std::forward<Args>(args)...));
  }
  template <typename... Args>
  static Status Unauthenticated(fmt::format_string<Args...> f, Args&&... args) {
    return Status(StatusCode::kUnauthenticated, fmt::format(f, std::forward<Args>(args)...));
  }
  template <typename... Args>
  static Status PermissionDenied(fmt::format_string<Args...> f, Args&&... args) {
    return Status(StatusCode::kPermissionDenied, fmt::format(f, std::forward<Args>(args)...));
  }
  template <typename... Args>
  static Status Unavailable(fmt::format_string<Args...> f, Args&&... args) {
    return Status(StatusCode::kUnavailable, fmt::format(f, std::forward<Args>(args)...));
  }
  template <typename... Args>
  static Status DeadlineExceeded(fmt::format_string<Args...> f, Args&&... args) {
    return Status(StatusCode::kDeadlineExceeded, fmt::format(f, std::forward<Args>(args)...));
  }
  template <typename... Args>
  static Status FailedPrecondition(fmt::format_string<Args...> f, Args&&... args) {
    return Status(StatusCode::kFailedPrecondition, fmt::format(f, std::forward<Args>(args)...));
  }
  template <typename... Args>
  static Status Internal(fmt::format_string<Args...> f, Args&&... args) {
    return Status(StatusCode::kInternal, fmt::format(f, std::forward<Args>(args)...));
  }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // Returns a copy whose message is "<prefix>: <message>"; OK stays OK.
  Status with_context(const std::string& prefix) const;
  // "OK" or "<code name>: <message>".
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// A value or an error Status. Accessing value() of an error is a bug: it stops the process with
// the error's message (DLSYS_CHECK, on in release builds too); test ok() first.
template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT: must not be OK

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & {
    check_ok();
    return std::get<T>(v_);
  }
  const T& value() const& {
    check_ok();
    return std::get<T>(v_);
  }
  T&& value() && {
    check_ok();
    return std::get<T>(std::move(v_));
  }
  T* operator->() { return &value(); }
  T& operator*() { return value(); }

 private:
  void check_ok() const {
    DLSYS_CHECK(ok(),
                "Result::value() called on an error ({}): test ok() or use DLSYS_ASSIGN_OR_RETURN",
                std::get<Status>(v_).to_string());
  }
  std::variant<T, Status> v_;
};

#define DLSYS_CONCAT_INNER(a, b) a##b
#define DLSYS_CONCAT(a, b) DLSYS_CONCAT_INNER(a, b)

// Returns from the enclosing function if `expr` (a Status) is not OK.
#define DLSYS_RETURN_IF_ERROR(expr) \
  do {                              \
    ::dlsys::Status _st = (expr);   \
    if (!_st.ok()) return _st;      \
  } while (0)

// `lhs = value of expr` (a Result<T>), or returns its error from the enclosing function.
#define DLSYS_ASSIGN_OR_RETURN(lhs, expr) \
  DLSYS_ASSIGN_OR_RETURN_IMPL(DLSYS_CONCAT(_res_, __LINE__), lhs, expr)
#define DLSYS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()

}  // namespace dlsys
