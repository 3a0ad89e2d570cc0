// Helpers handlers use to read JSON bodies, fields and numbers with errors that name the field.
#pragma once

#include <string>

#include "api/http_types.h"
#include "core/json_parse.h"

namespace dlsys::api {

// The one JSON configuration for request bodies, on every route: at most 256 levels of nesting
// and 1,048,576 values (each route's body limit bounds the bytes; see router.h).
inline constexpr JsonLimits kBodyJsonLimits{256, 1 << 20};

// The request body as a JSON object ({} when empty), parsed under kBodyJsonLimits (the router
// has already checked the limits and reserved the parsed size: Router::dispatch). Errors give
// the parser's line and column.
Result<json> body_object(const Request& req);
// Field `name` of `obj` as a string; `fallback` when absent and not required.
Result<std::string> string_field(const json& obj, const std::string& name, bool required,
                                 const std::string& fallback = "");
// Field `name` of `obj` as an int64 (a JSON integer, or a string of one); numbers with a
// fraction and integers beyond int64 are errors.
Result<int64_t> int_field(const json& obj, const std::string& name, bool required,
                          int64_t fallback = 0);
// A JSON value as an int64 called `what` in errors (no fractions, no wrap-around past int64).
Result<int64_t> json_int64(const json& v, const std::string& what);
// Parses a decimal integer ("-"? digits, nothing else, within int64) called `what` in errors.
Result<int64_t> parse_int(const std::string& s, const std::string& what);
// Parses a finite decimal number called `what` (no NaN, no infinity, no trailing characters).
Result<double> parse_finite(const std::string& s, const std::string& what);
// page_size from the query (default 100).
Result<int> page_size_of(const Request& req);

}  // namespace dlsys::api
