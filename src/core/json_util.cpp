#include "core/json_util.h"

#include <nlohmann/json.hpp>

namespace dlsys {

std::string json_dump_line(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace dlsys
