#include "meta/run_filter.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>

namespace dlsys::meta {

namespace {

struct Token {
  enum Kind { kIdent, kString, kNumber, kOp, kEnd } kind;
  std::string text;
  size_t pos;
};

// Splits the filter into identifiers (with dots and backquoted parts), strings, numbers and
// comparison operators.
Result<std::vector<Token>> tokenize(const std::string& s) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
      continue;
    }
    size_t start = i;
    if (c == '\'' || c == '"') {
      std::string v;
      ++i;
      while (i < s.size() && s[i] != c) v += s[i++];
      if (i >= s.size())
        return Status::Invalid("filter: the string starting at position {} is not closed", start);
      ++i;
      out.push_back({Token::kString, v, start});
    } else if (std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '+' || c == '.') {
      while (i < s.size() && (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '.' ||
                              s[i] == '-' || s[i] == '+'))
        ++i;
      out.push_back({Token::kNumber, s.substr(start, i - start), start});
    } else if (c == '=' || c == '!' || c == '<' || c == '>') {
      ++i;
      if (i < s.size() && s[i] == '=') ++i;
      std::string op = s.substr(start, i - start);
      if (op == "!") return Status::Invalid("filter: '!' at position {} must be '!='", start);
      if (op == "==") op = "=";
      out.push_back({Token::kOp, op, start});
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == '`') {
      std::string v;
      while (i < s.size()) {
        if (s[i] == '`') {
          size_t close = s.find('`', i + 1);
          if (close == std::string::npos)
            return Status::Invalid("filter: the backquote at position {} is not closed", i);
          v += s.substr(i + 1, close - i - 1);
          i = close + 1;
        } else if (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '_' || s[i] == '.' ||
                   s[i] == '-' || s[i] == '/') {
          v += s[i++];
        } else {
          break;
        }
      }
      out.push_back({Token::kIdent, v, start});
    } else {
      return Status::Invalid("filter: unexpected character '{}' at position {}", c, i);
    }
  }
  out.push_back({Token::kEnd, "", s.size()});
  return out;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string placeholder(SqlParams* params, SqlValue v) {
  params->push_back(std::move(v));
  return "$" + std::to_string(params->size());
}

Status out_of_int64(const Token& t) {
  return Status::Invalid("filter: the integer '{}' at position {} is out of the 64-bit range",
                         t.text, t.pos);
}

// A decimal number, strictly: the whole token, finite (no NaN or Infinity spellings, no hex),
// within the range of a double; written as an integer (digits only), within int64.
Result<double> parse_number(const Token& t) {
  const char* b = t.text.data();
  const char* e = b + t.text.size();
  if (b != e && *b == '+' && !(e - b > 1 && b[1] == '-')) ++b;  // from_chars takes '-', not '+'
  const char* digits = b != e && *b == '-' ? b + 1 : b;
  if (digits != e && std::all_of(digits, e, [](char c) { return c >= '0' && c <= '9'; })) {
    int64_t i = 0;
    auto [end, ec] = std::from_chars(b, e, i);
    if (ec != std::errc() || end != e) return out_of_int64(t);
  }
  double v = 0;
  auto [end, ec] = std::from_chars(b, e, v);
  if (ec == std::errc::result_out_of_range)
    return Status::Invalid("filter: the number '{}' at position {} is out of range", t.text, t.pos);
  if (b == e || ec != std::errc() || end != e || !std::isfinite(v))
    return Status::Invalid("filter: '{}' at position {} is not a finite decimal number", t.text,
                           t.pos);
  return v;
}

// A time in ms: an integer within int64 (a decimal such as 1.7e12 is taken when it is in range;
// its fraction is dropped).
Result<int64_t> parse_time(const Token& t) {
  const char* b = t.text.data();
  const char* e = b + t.text.size();
  if (b != e && *b == '+' && !(e - b > 1 && b[1] == '-')) ++b;
  int64_t i = 0;
  auto [end, ec] = std::from_chars(b, e, i);
  if (ec == std::errc() && end == e) return i;
  if (ec == std::errc::result_out_of_range && end == e) return out_of_int64(t);
  DLSYS_ASSIGN_OR_RETURN(double v, parse_number(t));
  // 2^63 is exactly representable; anything at or beyond it does not fit.
  if (!(v > -9223372036854775808.0 && v < 9223372036854775808.0))
    return Status::Invalid(
        "filter: the number '{}' at position {} is out of the 64-bit integer "
        "range",
        t.text, t.pos);
  return static_cast<int64_t>(v);
}

}  // namespace

Result<std::string> compile_run_filter(const std::string& filter, SqlParams* params) {
  if (filter.size() > 10000) return Status::Invalid("filter is over 10000 characters");
  DLSYS_ASSIGN_OR_RETURN(auto toks, tokenize(filter));
  std::string sql;
  size_t i = 0;
  while (toks[i].kind != Token::kEnd) {
    if (!sql.empty()) {
      if (toks[i].kind != Token::kIdent || lower(toks[i].text) != "and")
        return Status::Invalid("filter: expected 'and' at position {}, found '{}'", toks[i].pos,
                               toks[i].text);
      ++i;
      sql += " AND ";
    }
    const Token& lhs = toks[i];
    if (lhs.kind != Token::kIdent)
      return Status::Invalid(
          "filter: expected a field (params.K, metrics.K, tags.K, status, "
          "name, start_time, end_time) at position {}",
          lhs.pos);
    const Token& op = toks[i + 1];
    std::string op_text = op.kind == Token::kOp ? op.text : lower(op.text);
    if (op.kind != Token::kOp && !(op.kind == Token::kIdent && op_text == "like"))
      return Status::Invalid(
          "filter: expected an operator (= != < <= > >= like) after '{}' at "
          "position {}",
          lhs.text, op.pos);
    if (op_text == "like") op_text = "LIKE";
    const Token& rhs = toks[i + 2];
    if (rhs.kind != Token::kString && rhs.kind != Token::kNumber)
      return Status::Invalid("filter: expected a quoted string or a number at position {}",
                             rhs.pos);
    i += 3;
    size_t dot = lhs.text.find('.');
    std::string scope = lower(dot == std::string::npos ? lhs.text : lhs.text.substr(0, dot));
    std::string key = dot == std::string::npos ? "" : lhs.text.substr(dot + 1);
    bool string_op = op_text == "=" || op_text == "!=" || op_text == "LIKE";
    if (scope == "params" || scope == "param" || scope == "tags" || scope == "tag") {
      if (key.empty()) return Status::Invalid("filter: '{}' needs a key, e.g. params.lr", lhs.text);
      if (!string_op)
        return Status::Invalid("filter: {} values are strings; use = != or like (position {})",
                               scope, op.pos);
      std::string table = scope[0] == 'p' ? "run_params" : "run_tags";
      std::string k = placeholder(params, key);
      std::string v = placeholder(params, rhs.text);
      sql += fmt::format(
          "EXISTS (SELECT 1 FROM {0} f WHERE f.run_id = runs.id AND f.key = {1} "
          "AND f.value {2} {3})",
          table, k, op_text == "!=" ? "<>" : op_text, v);
    } else if (scope == "metrics" || scope == "metric") {
      if (key.empty())
        return Status::Invalid("filter: '{}' needs a key, e.g. metrics.accuracy", lhs.text);
      if (op_text == "LIKE") return Status::Invalid("filter: like does not apply to metrics");
      DLSYS_ASSIGN_OR_RETURN(double v, parse_number(rhs));
      std::string k = placeholder(params, key);
      std::string p = placeholder(params, v);
      sql += fmt::format(
          "EXISTS (SELECT 1 FROM latest_metrics f WHERE f.run_id = runs.id AND "
          "f.key = {0} AND f.value {1} {2})",
          k, op_text == "!=" ? "<>" : op_text, p);
    } else if (scope == "status" || scope == "name") {
      if (!string_op)
        return Status::Invalid("filter: {} is a string; use = != or like (position {})", scope,
                               op.pos);
      sql += fmt::format("runs.{} {} {}", scope, op_text == "!=" ? "<>" : op_text,
                         placeholder(params, rhs.text));
    } else if (scope == "start_time" || scope == "end_time") {
      if (op_text == "LIKE") return Status::Invalid("filter: like does not apply to {}", scope);
      DLSYS_ASSIGN_OR_RETURN(int64_t v, parse_time(rhs));
      sql += fmt::format("runs.{} {} {}", scope, op_text == "!=" ? "<>" : op_text,
                         placeholder(params, v));
    } else {
      return Status::Invalid(
          "filter: unknown field '{}' at position {}; use params.K, "
          "metrics.K, tags.K, status, name, start_time or end_time",
          lhs.text, lhs.pos);
    }
  }
  return sql;
}

Result<RunOrder> parse_run_order(const std::string& order_by, SqlParams* params) {
  RunOrder out;
  std::string s = order_by;
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  if (s.empty() || lower(s) == "start_time desc") {
    out.sql = "runs.start_time DESC, runs.id DESC";
    out.keyset = true;
    return out;
  }
  std::string dir = "ASC";
  size_t sp = s.find_last_of(' ');
  if (sp != std::string::npos) {
    std::string d = lower(s.substr(sp + 1));
    if (d != "asc" && d != "desc")
      return Status::Invalid("order_by '{}': the direction must be ASC or DESC", order_by);
    dir = d == "asc" ? "ASC" : "DESC";
    s = s.substr(0, sp);
    while (!s.empty() && s.back() == ' ') s.pop_back();
  }
  if (!s.empty() && s.front() == '`') s.erase(0, 1);
  size_t dot = s.find('.');
  std::string scope = lower(dot == std::string::npos ? s : s.substr(0, dot));
  std::string key = dot == std::string::npos ? "" : s.substr(dot + 1);
  if (!key.empty() && key.front() == '`') key.erase(0, 1);
  if (!key.empty() && key.back() == '`') key.pop_back();
  if (scope == "start_time" || scope == "end_time" || scope == "name" || scope == "status") {
    out.sql = fmt::format("runs.{} {}, runs.id {}", scope, dir, dir);
  } else if ((scope == "metrics" || scope == "params" || scope == "tags") && !key.empty()) {
    std::string table = scope == "metrics"  ? "latest_metrics"
                        : scope == "params" ? "run_params"
                                            : "run_tags";
    out.key_placeholder = placeholder(params, key);
    // Only latest_metrics has an index by value (migration 10): params and tags sort in one
    // statement.
    if (scope == "metrics") out.key_table = table;
    out.dir = dir;
    out.join = fmt::format(" LEFT JOIN {} o ON o.run_id = runs.id AND o.key = {}", table,
                           out.key_placeholder);
    // Runs without the key sort last in both engines.
    out.sql = fmt::format("(o.value IS NULL), o.value {}, runs.id {}", dir, dir);
  } else {
    return Status::Invalid(
        "order_by '{}': order by start_time, end_time, name, status, "
        "metrics.K, params.K or tags.K, then ASC or DESC",
        order_by);
  }
  return out;
}

}  // namespace dlsys::meta
