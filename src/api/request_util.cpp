#include "api/request_util.h"

#include <charconv>
#include <cmath>
#include <limits>

#include "meta/store_db.h"

namespace dlsys::api {

Result<json> body_object(const Request& req) {
  if (req.body.empty()) return json::object();
  DLSYS_ASSIGN_OR_RETURN(json j, parse_json(req.body, kBodyJsonLimits, "the request body"));
  if (!j.is_object()) return Status::Invalid("the request body must be a JSON object");
  return j;
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

Result<int64_t> json_int64(const json& v, const std::string& what) {
  if (v.is_number_unsigned()) {
    if (v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return Status::Invalid("{} {} is beyond the largest integer, 2^63-1", what,
                             v.get<uint64_t>());
    return static_cast<int64_t>(v.get<uint64_t>());
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float())
    return Status::Invalid("{} must be an integer, not {}", what, v.dump().substr(0, 40));
  return Status::Invalid("{} must be an integer", what);
}

Result<int64_t> int_field(const json& obj, const std::string& name, bool required,
                          int64_t fallback) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) {
    if (required) return Status::Invalid("field '{}' is required", name);
    return fallback;
  }
  if (it->is_string()) return parse_int(it->get<std::string>(), "field '" + name + "'");
  return json_int64(*it, "field '" + name + "'");
}

Result<int64_t> parse_int(const std::string& s, const std::string& what) {
  int64_t v = 0;
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, v);
  if (s.empty() || s[0] == '+' || ec == std::errc::invalid_argument || p != end)
    return Status::Invalid("{} '{}' is not an integer", what, s.substr(0, 64));
  if (ec == std::errc::result_out_of_range)
    return Status::Invalid("{} '{}' is out of the range of a 64-bit integer", what,
                           s.substr(0, 64));
  return v;
}

Result<double> parse_finite(const std::string& s, const std::string& what) {
  double v = 0;
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, v);
  if (s.empty() || ec != std::errc() || p != end || !std::isfinite(v))
    return Status::Invalid("{} '{}' is not a finite number", what, s.substr(0, 64));
  return v;
}

Result<int> page_size_of(const Request& req) {
  DLSYS_ASSIGN_OR_RETURN(int64_t n, parse_int(req.query_or("page_size", "100"), "page_size"));
  if (n < 1 || n > meta::kMaxPageSize)
    return Status::Invalid("page_size {} is out of range: use 1..{}", n, meta::kMaxPageSize);
  return static_cast<int>(n);
}

}  // namespace dlsys::api
