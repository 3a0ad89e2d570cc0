// Helpers handlers use to read JSON bodies, fields and numbers with errors that name the field.
#pragma once

#include <string>

#include "api/http_types.h"

namespace dlsys::api {

// The request body as a JSON object ({} when empty); errors give the parser's line and column.
Result<json> body_object(const Request& req);
// Field `name` of `obj` as a string; `fallback` when absent and not required.
Result<std::string> string_field(const json& obj, const std::string& name, bool required,
                                 const std::string& fallback = "");
// Field `name` of `obj` as an integer.
Result<int64_t> int_field(const json& obj, const std::string& name, bool required,
                          int64_t fallback = 0);
// Parses a decimal integer from a path or query parameter called `what`.
Result<int64_t> parse_int(const std::string& s, const std::string& what);
// page_size from the query (default 100).
Result<int> page_size_of(const Request& req);

}  // namespace dlsys::api
