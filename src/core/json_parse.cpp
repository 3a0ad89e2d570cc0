#include "core/json_parse.h"

namespace dlsys {

namespace {

// Bytes nlohmann::json allocates, at most, per value: an array slot (16 B, doubled by vector
// growth), an object member's map node and key, a container's own vector or map (measured with
// glibc malloc: docs/security.md).
constexpr size_t kBytesPerItem = 128;

}  // namespace

size_t JsonShape::memory_estimate() const {
  return values * kBytesPerItem + string_bytes;
}

Result<JsonShape> scan_json(std::string_view text, const JsonLimits& limits,
                            std::string_view what) {
  JsonShape s;
  size_t depth = 0, line = 1, col = 0;
  bool in_string = false, escape = false, in_scalar = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    ++col;
    if (c == '\n') line += 1, col = 0;
    if (in_string) {
      ++s.string_bytes;
      if (escape)
        escape = false;
      else if (c == '\\')
        escape = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    bool scalar_char = !(c == '[' || c == ']' || c == '{' || c == '}' || c == ',' || c == ':' ||
                         c == '"' || c == ' ' || c == '\t' || c == '\n' || c == '\r');
    if (scalar_char) {
      if (!in_scalar) ++s.values;  // a number, true, false or null starts
      in_scalar = true;
      continue;
    }
    in_scalar = false;
    if (c == '"') {
      in_string = true;
      ++s.values;  // object keys count too: each is a string the map holds
    } else if (c == '[' || c == '{') {
      ++s.values;
      if (++depth > s.depth) s.depth = depth;
      if (depth > limits.max_depth)
        return Status::Invalid(
            "{} nests arrays and objects deeper than {} levels (line {}, column {}); the server "
            "accepts at most {}",
            what, limits.max_depth, line, col, limits.max_depth);
    } else if (c == ']' || c == '}') {
      if (depth > 0) --depth;
    }
    if (s.values > limits.max_values)
      return Status::Invalid(
          "{} holds more than {} values (line {}, column {}); split it into smaller requests", what,
          limits.max_values, line, col);
  }
  return s;
}

Result<nlohmann::json> parse_json(std::string_view text, const JsonLimits& limits,
                                  std::string_view what, JsonShape* shape) {
  DLSYS_ASSIGN_OR_RETURN(JsonShape s, scan_json(text, limits, what));
  if (shape) *shape = s;
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    // Syntax errors and numbers beyond a double ("1e999": out_of_range.406) alike. e.what()
    // reads "[json.exception.parse_error.101] parse error at line 1, column 9: ...".
    std::string msg = e.what();
    size_t at = msg.find("] ");
    return Status::Invalid("{} is not valid JSON: {}", what,
                           at == std::string::npos ? msg : msg.substr(at + 2));
  }
}

}  // namespace dlsys
