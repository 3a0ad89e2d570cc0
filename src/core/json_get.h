// Checked reads from JSON that came from outside the process: a request body, a server's answer,
// a file. nlohmann's get<T>() throws on a missing key or a wrong type, and an exception that
// escapes a handler or a client ends in std::terminate; these return a Status instead, whose
// message names the document, the key and the type expected ("the server's answer to POST
// /api/runs: 'id' must be an integer, got a string").
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/status.h"

namespace dlsys {

// The JSON types json_as<T> reads: std::string, int64_t, double, bool, and nlohmann::json
// itself (any value). int64_t accepts integers only (3.0 is refused); double accepts any number.
template <typename T>
Result<T> json_as(const nlohmann::json& v, std::string_view what);

// Reads `obj[key]` as T. Fails when `obj` is not an object, the key is missing, or the value has
// another type. `what` names the document in the error ("the server's answer").
template <typename T>
Result<T> json_get(const nlohmann::json& obj, std::string_view key, std::string_view what);

// Like json_get, but a missing key or a null value gives std::nullopt (a wrong type still fails).
template <typename T>
Result<std::optional<T>> json_get_optional(const nlohmann::json& obj, std::string_view key,
                                           std::string_view what);

// Like json_get_optional, but a missing key or null gives `fallback`.
template <typename T>
Result<T> json_get_or(const nlohmann::json& obj, std::string_view key, T fallback,
                      std::string_view what) {
  auto r = json_get_optional<T>(obj, key, what);
  if (!r.ok()) return r.status();
  return r->has_value() ? std::move(**r) : std::move(fallback);
}

// Returns "a string", "an integer", "an object", ... for error messages.
const char* json_type_phrase(const nlohmann::json& v);

}  // namespace dlsys
