#include "api/request_util.h"

namespace dlsys::api {

Result<json> body_object(const Request& req) {
  if (req.body.empty()) return json::object();
  try {
    json j = json::parse(req.body);
    if (!j.is_object()) return Status::Invalid("the request body must be a JSON object");
    return j;
  } catch (const json::parse_error& e) {
    return Status::Invalid("the request body is not valid JSON: {}", e.what());
  }
}

Result<std::string> string_field(const json& obj, const std::string& name, bool required,
                                 const std::string& fallback) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) {
    if (required) return Status::Invalid("field '{}' is required", name);
    return fallback;
  }
  if (!it->is_string()) return Status::Invalid("field '{}' must be a string", name);
  return it->get<std::string>();
}

Result<int64_t> int_field(const json& obj, const std::string& name, bool required,
                          int64_t fallback) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) {
    if (required) return Status::Invalid("field '{}' is required", name);
    return fallback;
  }
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_string()) return parse_int(it->get<std::string>(), "field '" + name + "'");
  return Status::Invalid("field '{}' must be an integer", name);
}

Result<int64_t> parse_int(const std::string& s, const std::string& what) {
  try {
    size_t used = 0;
    long long v = std::stoll(s, &used);
    if (used != s.size()) throw std::invalid_argument("trailing");
    return static_cast<int64_t>(v);
  } catch (...) {
    return Status::Invalid("{} '{}' is not an integer", what, s.substr(0, 64));
  }
}

Result<int> page_size_of(const Request& req) {
  DLSYS_ASSIGN_OR_RETURN(int64_t n, parse_int(req.query_or("page_size", "100"), "page_size"));
  if (n < 1 || n > meta::kMaxPageSize)
    return Status::Invalid("page_size {} is out of range: use 1..{}", n, meta::kMaxPageSize);
  return static_cast<int>(n);
}

}  // namespace dlsys::api
