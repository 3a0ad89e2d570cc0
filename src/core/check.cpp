#include "core/check.h"

#include <cstdio>
#include <cstdlib>

namespace dlsys::detail {

void check_failed(const char* file, int line, const char* cond, const std::string& hint) {
  std::fprintf(stderr, "dlsys: check failed at %s:%d: %s (%s)\n", file, line, cond, hint.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace dlsys::detail
