// DLSYS_CHECK: the one way to state a programmer's invariant. Unlike assert() it stays on in
// release builds (-DNDEBUG), because a broken invariant in an engine or a server must stop the
// process with a message, never run on with corrupt state. For errors a caller or a user can
// cause (bad input, a missing file, a refused connection) return a Status instead
// (docs/engineering.md).
#pragma once

#include <fmt/format.h>

#include <string>

namespace dlsys::detail {

// Prints "dlsys: check failed at FILE:LINE: COND (HINT)" to stderr and aborts.
[[noreturn]] void check_failed(const char* file, int line, const char* cond,
                               const std::string& hint);

}  // namespace dlsys::detail

// DLSYS_CHECK(cond, "hint with {} placeholders", args...): if `cond` is false, stops the
// process naming the place, the condition and the hint. The hint says the likely mistake
// ("op registered twice: check the register_*_ops functions"), not just what failed.
#define DLSYS_CHECK(cond, ...)                                                              \
  do {                                                                                      \
    if (!(cond)) [[unlikely]]                                                               \
      ::dlsys::detail::check_failed(__FILE__, __LINE__, #cond, ::fmt::format(__VA_ARGS__)); \
  } while (0)
