#include "flow/step_fields.h"

#include <fmt/format.h>

namespace dlsys::flow {

Result<std::string> with_text(const nlohmann::json& with, const std::string& key,
                              const std::string& where, bool required) {
  auto it = with.find(key);
  if (it == with.end() || it->is_null()) {
    if (!required) return std::string();
    return Status::Invalid("{}: '{}' has no value", where, key);
  }
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number()) return it->dump();
  return Status::Invalid("{}: '{}' must be text, got {}", where, key, it->dump());
}

Result<int64_t> with_int(const nlohmann::json& with, const std::string& key,
                         const std::string& where, int64_t fallback) {
  auto it = with.find(key);
  if (it == with.end() || it->is_null()) return fallback;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_string()) {
    const std::string t = it->get<std::string>();
    try {
      size_t used = 0;
      int64_t v = std::stoll(t, &used);
      if (used == t.size()) return v;
    } catch (...) {
    }
  }
  return Status::Invalid("{}: '{}' must be a whole number, got {}", where, key, it->dump());
}

}  // namespace dlsys::flow
