// The one JSON parser configuration for input that comes from outside (request bodies, API
// answers): nlohmann::json behind a linear pre-scan that enforces a nesting depth and a value
// count before anything is allocated, so that a 130 KB body of 64k nested arrays cannot
// overflow the stack and a 16 MB body of tiny values cannot cost hundreds of MB.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <string_view>

#include "core/status.h"

namespace dlsys {

struct JsonLimits {
  size_t max_depth = 256;       // nested arrays/objects; a few hundred is plenty for any API
  size_t max_values = 1 << 20;  // scalars + arrays + objects in the document
};

// What the pre-scan measured: the deepest nesting, the number of values, and an upper bound
// on the bytes nlohmann::json will allocate for the document.
struct JsonShape {
  size_t depth = 0;
  size_t values = 0;
  size_t string_bytes = 0;
  size_t memory_estimate() const;
};

// Measures `text` without building it. Fails (Invalid) when a limit is exceeded, naming the
// limit and the line and column where it was crossed; malformed JSON is left for the parser to
// report. `what` names the document in errors ("the request body").
Result<JsonShape> scan_json(std::string_view text, const JsonLimits& limits, std::string_view what);

// scan_json, then nlohmann::json::parse. Errors name `what`, the line and the column.
Result<nlohmann::json> parse_json(std::string_view text, const JsonLimits& limits,
                                  std::string_view what, JsonShape* shape = nullptr);

}  // namespace dlsys
