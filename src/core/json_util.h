// Small helpers around nlohmann::json shared by the command line and (later) the API.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <string>

namespace dlsys {

// Serializes `j` on one line (no trailing newline); non-finite numbers become null.
std::string json_dump_line(const nlohmann::json& j);

}  // namespace dlsys
