#include "core/json_get.h"

#include <limits>

namespace dlsys {

const char* json_type_phrase(const nlohmann::json& v) {
  switch (v.type()) {
    case nlohmann::json::value_t::null:
      return "null";
    case nlohmann::json::value_t::object:
      return "an object";
    case nlohmann::json::value_t::array:
      return "an array";
    case nlohmann::json::value_t::string:
      return "a string";
    case nlohmann::json::value_t::boolean:
      return "a boolean";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
      return "an integer";
    case nlohmann::json::value_t::number_float:
      return "a number with a fraction";
    default:
      return "a binary value";
  }
}

namespace {

Status wrong_type(std::string_view what, std::string_view key, const char* expected,
                  const nlohmann::json& v) {
  if (key.empty())
    return Status::Invalid("{}: expected {}, got {}", what, expected, json_type_phrase(v));
  return Status::Invalid("{}: '{}' must be {}, got {}", what, key, expected, json_type_phrase(v));
}

template <typename T>
Result<T> read_as(const nlohmann::json& v, std::string_view what, std::string_view key) {
  if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string()) return wrong_type(what, key, "a string", v);
    return v.get<std::string>();
  } else if constexpr (std::is_same_v<T, int64_t>) {
    if (v.is_number_unsigned()) {
      if (v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        return wrong_type(what, key, "an integer below 2^63", v);
      return static_cast<int64_t>(v.get<uint64_t>());
    }
    if (!v.is_number_integer()) return wrong_type(what, key, "an integer", v);
    return v.get<int64_t>();
  } else if constexpr (std::is_same_v<T, double>) {
    if (!v.is_number()) return wrong_type(what, key, "a number", v);
    return v.get<double>();
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) return wrong_type(what, key, "true or false", v);
    return v.get<bool>();
  } else {
    static_assert(std::is_same_v<T, nlohmann::json>,
                  "json_as reads string, int64_t, double, bool, json");
    return v;
  }
}

}  // namespace

template <typename T>
Result<T> json_as(const nlohmann::json& v, std::string_view what) {
  return read_as<T>(v, what, "");
}

template <typename T>
Result<T> json_get(const nlohmann::json& obj, std::string_view key, std::string_view what) {
  if (!obj.is_object()) return wrong_type(what, "", "an object", obj);
  auto it = obj.find(key);
  if (it == obj.end()) return Status::Invalid("{}: '{}' is missing", what, key);
  return read_as<T>(*it, what, key);
}

template <typename T>
Result<std::optional<T>> json_get_optional(const nlohmann::json& obj, std::string_view key,
                                           std::string_view what) {
  if (!obj.is_object()) return wrong_type(what, "", "an object", obj);
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::optional<T>();
  auto r = read_as<T>(*it, what, key);
  if (!r.ok()) return r.status();
  return std::optional<T>(std::move(r).value());
}

#define DLSYS_JSON_GET_INSTANTIATE(T)                                                             \
  template Result<T> json_as<T>(const nlohmann::json&, std::string_view);                         \
  template Result<T> json_get<T>(const nlohmann::json&, std::string_view, std::string_view);      \
  template Result<std::optional<T>> json_get_optional<T>(const nlohmann::json&, std::string_view, \
                                                         std::string_view);
DLSYS_JSON_GET_INSTANTIATE(std::string)
DLSYS_JSON_GET_INSTANTIATE(int64_t)
DLSYS_JSON_GET_INSTANTIATE(double)
DLSYS_JSON_GET_INSTANTIATE(bool)
DLSYS_JSON_GET_INSTANTIATE(nlohmann::json)
#undef DLSYS_JSON_GET_INSTANTIATE

}  // namespace dlsys
