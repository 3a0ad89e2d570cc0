#include "flow/gate_condition.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <set>

namespace dlsys::flow {

using nlohmann::json;

namespace {

constexpr size_t kMaxLength = 4096;
constexpr int kMaxDepth = 64;

// Character classes (std::isspace and friends take an unsigned char).
struct Chars {
  static bool space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }
  static bool digit(char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; }
  static bool word(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_'; }
};

// A value compactly: numbers with up to 6 significant digits (integers whole), strings quoted.
std::string compact(const json& v) {
  if (v.is_number_float()) return fmt::format("{:.6g}", v.get<double>());
  return v.dump(-1, ' ', false, json::error_handler_t::replace);
}

const char* type_name(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  return v.is_array() ? "a list" : "a mapping";
}

struct Token {
  // kOp: an operator, a parenthesis, and, or, not (told apart by `text`).
  enum class Kind { kEnd, kLiteral, kValue, kOp };
  Kind kind = Kind::kEnd;
  std::string text;   // as written; for a value piece, its reference
  json value;         // a literal's or a value piece's value
  size_t offset = 0;  // in the condition as written
};

// An operand: its value and, for one straight from a value piece, the reference it came from.
struct Operand {
  json v;
  std::string ref;
};

// Tokenizes the pieces, then parses and evaluates in one recursive descent, one function per
// precedence level. `live` false is the right side of a short-circuited and/or: parsed (so its
// syntax is checked) but not evaluated, so neither its types nor its nulls are errors.
class Evaluator {
 public:
  explicit Evaluator(const std::string& where) : where_(where) {}

  Status tokenize(const std::vector<ConditionPiece>& pieces) {
    std::vector<size_t> starts;
    for (const ConditionPiece& p : pieces) {
      starts.push_back(written_.size());
      written_ += !p.is_value ? p.text : (p.ref.empty() ? compact(p.value) : p.ref);
      if (written_.size() > kMaxLength)
        return Status::Invalid("{}: the condition is longer than {} characters", where_,
                               kMaxLength);
    }
    for (size_t i = 0; i < pieces.size(); ++i) {
      const ConditionPiece& p = pieces[i];
      if (!p.is_value) {
        DLSYS_RETURN_IF_ERROR(lex(p.text, starts[i]));
        continue;
      }
      Token t{Token::Kind::kValue, p.ref.empty() ? compact(p.value) : p.ref, p.value, starts[i]};
      if (p.value.is_array() || p.value.is_object()) {
        const std::string v = compact(p.value);
        return error(t.offset,
                     fmt::format("{} is {} ({}{}), not a number, string, boolean or null", t.text,
                                 type_name(p.value), v.substr(0, 60), v.size() > 60 ? "..." : ""),
                     "refer to one element or field of it");
      }
      toks_.push_back(std::move(t));
    }
    toks_.push_back(Token{Token::Kind::kEnd, "", json(), written_.size()});
    return Status::OK();
  }

  Result<bool> evaluate() {
    if (toks_.size() == 1)
      return Status::Invalid("{}: the condition is empty; write e.g. \"${{x}} >= 0.9\"", where_);
    DLSYS_ASSIGN_OR_RETURN(Operand r, parse_or(true));
    const Token& t = toks_[pos_];
    if (at(")")) return error(t.offset, "a ')' without a matching '('");
    if (t.kind != Token::Kind::kEnd)
      return error(t.offset, fmt::format("an unexpected '{}' after a complete condition", t.text),
                   "join conditions with 'and' or 'or'");
    if (!r.v.is_boolean())
      return Status::Invalid(
          "{}: the condition is {} ({}), not true or false; compare it, e.g. '... >= 0.9'", where_,
          shown(r), type_name(r.v));
    return r.v.get<bool>();
  }

 private:
  using Level = Result<Operand> (Evaluator::*)(bool live);

  Status lex(const std::string& text, size_t base);

  // Precedence levels, loosest first.
  Result<Operand> parse_or(bool live) { return binary(live, "or", "or", &Evaluator::parse_and); }
  Result<Operand> parse_and(bool live) { return binary(live, "and", "and", &Evaluator::parse_not); }
  Result<Operand> parse_not(bool live) {
    return at("not") ? prefix(live, &Evaluator::parse_not) : parse_comparison(live);
  }
  Result<Operand> parse_comparison(bool live);
  Result<Operand> parse_sum(bool live) { return binary(live, "+", "-", &Evaluator::parse_term); }
  Result<Operand> parse_term(bool live) { return binary(live, "*", "/", &Evaluator::parse_unary); }
  Result<Operand> parse_unary(bool live) {
    return at("-") ? prefix(live, &Evaluator::parse_unary) : parse_primary(live);
  }
  Result<Operand> parse_primary(bool live);

  // `a (op b)*`, left-associative, for op `op1` or `op2`; `next` parses the operands.
  Result<Operand> binary(bool live, const char* op1, const char* op2, Level next) {
    DLSYS_ASSIGN_OR_RETURN(Operand a, (this->*next)(live));
    while (at(op1) || at(op2)) {
      const Token& op = take();
      const bool logic = op.text == "or" || op.text == "and";
      if (logic && live) DLSYS_RETURN_IF_ERROR(need_boolean(a, op));
      // Short-circuit: `true or ...` and `false and ...` are decided by the left side.
      const bool decided = logic && live && a.v.get<bool>() == (op.text == "or");
      DLSYS_ASSIGN_OR_RETURN(Operand b, (this->*next)(live && !decided));
      if (!live || decided) continue;
      if (logic) {
        DLSYS_RETURN_IF_ERROR(need_boolean(b, op));
        a = Operand{b.v, ""};
      } else {
        DLSYS_ASSIGN_OR_RETURN(a, arithmetic(op, a, b));
      }
    }
    return a;
  }

  // `not a` or `-a`, counted as a level of nesting.
  Result<Operand> prefix(bool live, Level self) {
    const Token& op = take();
    DLSYS_RETURN_IF_ERROR(enter(op));
    DLSYS_ASSIGN_OR_RETURN(Operand a, (this->*self)(live));
    --depth_;
    if (!live) return a;
    if (op.text == "not") {
      DLSYS_RETURN_IF_ERROR(need_boolean(a, op));
      return Operand{json(!a.v.get<bool>()), ""};
    }
    DLSYS_RETURN_IF_ERROR(need_number(a, op));
    return Operand{json(-a.v.get<double>()), ""};
  }
  Result<Operand> arithmetic(const Token& op, const Operand& a, const Operand& b) {
    DLSYS_RETURN_IF_ERROR(need_number(a, op));
    DLSYS_RETURN_IF_ERROR(need_number(b, op));
    const double x = a.v.get<double>(), y = b.v.get<double>();
    if (op.text == "/" && y == 0)
      return error(op.offset, fmt::format("division by zero ({} / {})", shown(a), shown(b)));
    const double r =
        op.text == "+" ? x + y : (op.text == "-" ? x - y : (op.text == "*" ? x * y : x / y));
    if (!std::isfinite(r)) return error(op.offset, fmt::format("'{}' overflows", op.text));
    return Operand{json(r), ""};
  }
  Status need_boolean(const Operand& a, const Token& op) const {
    if (a.v.is_boolean()) return Status::OK();
    return error(
        op.offset,
        fmt::format("'{}' needs true or false, not {} ({})", op.text, shown(a), type_name(a.v)),
        "compare it, e.g. '... >= 0.9'");
  }
  Status need_number(const Operand& a, const Token& op) const {
    if (a.v.is_number()) return Status::OK();
    if (a.v.is_null() && !a.ref.empty())
      return Status::Invalid(
          "{}: '{}' (offset {}): {} has no value (null); compare with '== null' first, e.g. \"{} "
          "== null or ...\"",
          where_, op.text, op.offset, a.ref, a.ref);
    return error(op.offset,
                 fmt::format("'{}' needs numbers, not {} ({})", op.text, shown(a), type_name(a.v)));
  }
  Status enter(const Token& t) {
    if (++depth_ <= kMaxDepth) return Status::OK();
    return error(t.offset, fmt::format("nesting deeper than {} ('(', 'not', '-')", kMaxDepth));
  }
  bool at(const char* op) const {
    return toks_[pos_].kind == Token::Kind::kOp && toks_[pos_].text == op;
  }
  const Token& take() {  // never moves past the end token
    const Token& t = toks_[pos_];
    if (t.kind != Token::Kind::kEnd) ++pos_;
    return t;
  }
  // `at "<text there>" (offset N)`, or the end of the condition.
  std::string place(size_t offset) const {
    if (offset >= written_.size())
      return fmt::format("at the end of the condition (offset {})", written_.size());
    std::string s = written_.substr(offset, 40);
    for (char& c : s)
      if (Chars::space(c)) c = ' ';
    return fmt::format("at \"{}{}\" (offset {})", s, offset + 40 < written_.size() ? "..." : "",
                       offset);
  }
  Status error(size_t offset, const std::string& what, const std::string& hint = "") const {
    return Status::Invalid("{}: {} {}{}{}", where_, what, place(offset), hint.empty() ? "" : ": ",
                           hint);
  }
  static std::string shown(const Operand& a) {
    return a.ref.empty() ? compact(a.v) : fmt::format("{} = {}", a.ref, compact(a.v));
  }

  const std::string& where_;
  std::string written_;  // the condition as written (references as written)
  std::vector<Token> toks_;
  size_t pos_ = 0;
  int depth_ = 0;
};

Status Evaluator::lex(const std::string& text, size_t base) {
  const size_t n = text.size();
  for (size_t i = 0;;) {
    while (i < n && Chars::space(text[i])) ++i;
    if (i == n) break;
    const char c = text[i];
    const size_t at = base + i;
    const std::string two = text.substr(i, 2);
    Token t{Token::Kind::kLiteral, "", json(), at};
    size_t j = i;
    if (Chars::digit(c)) {
      auto digits = [&] {
        const size_t from = j;
        while (j < n && Chars::digit(text[j])) ++j;
        return j > from;
      };
      bool ok = digits();
      if (j < n && text[j] == '.') ++j, ok = digits();
      if (ok && j < n && (text[j] == 'e' || text[j] == 'E')) {
        if (++j < n && (text[j] == '+' || text[j] == '-')) ++j;
        ok = digits();
      }
      if (!ok || (j < n && (Chars::word(text[j]) || text[j] == '.')))
        return error(at, "a malformed number", "write e.g. 3, 0.005 or 1e-3");
      t.value = std::strtod(text.substr(i, j - i).c_str(), nullptr);
      if (!std::isfinite(t.value.get<double>())) return error(at, "a number out of range");
    } else if (c == '"' || c == '\'') {
      std::string s;
      for (++j; j < n && text[j] != c; ++j) {
        const bool escape = text[j] == '\\' && j + 1 < n;  // \n, \t; \<other> is that character
        if (escape) ++j;
        s += !escape ? text[j] : (text[j] == 'n' ? '\n' : (text[j] == 't' ? '\t' : text[j]));
      }
      if (j++ == n) return error(at, fmt::format("a string opened with {} is not closed", c));
      t.value = s;
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      while (j < n && (Chars::word(text[j]) || text[j] == '.')) ++j;
      const std::string word = text.substr(i, j - i);
      std::string lower = word;
      for (char& l : lower) l = static_cast<char>(std::tolower(static_cast<unsigned char>(l)));
      static const std::set<std::string> kKeywords = {"true", "false", "null", "and", "or", "not"};
      if (kKeywords.count(lower) && lower != word)
        return error(at, fmt::format("an unknown word '{}'", word),
                     fmt::format("did you mean '{}'?", lower));
      if (!kKeywords.count(word))
        return error(at, fmt::format("an unknown word '{}'", word),
                     "a condition holds numbers, quoted strings, true, false, null, and, or, not "
                     "and references ${...} (a string needs quotes)");
      if (word == "and" || word == "or" || word == "not") t.kind = Token::Kind::kOp;
      t.value = word == "null" ? json() : json(word == "true");
    } else if (two == "<=" || two == ">=" || two == "==" || two == "!=") {
      t.kind = Token::Kind::kOp;
      j += 2;
    } else if (std::string("+-*/<>()").find(c) != std::string::npos) {
      t.kind = Token::Kind::kOp;
      ++j;
    } else if (two == "&&" || two == "||") {
      return error(at, fmt::format("'{}' is not an operator", two),
                   fmt::format("use '{}'", two == "&&" ? "and" : "or"));
    } else if (c == '=' || c == '!') {
      return error(at, fmt::format("a lone '{}'", c),
                   c == '=' ? "use '==' to compare" : "use 'not' (or '!=' to compare)");
    } else if (c == '.' && i + 1 < n && Chars::digit(text[i + 1])) {
      return error(at, "a number without a leading digit", "write e.g. 0.5, not .5");
    } else {
      return error(at, two == "${" ? std::string("a reference left unresolved")
                                   : fmt::format("an unexpected character '{}'", c));
    }
    t.text = text.substr(i, j - i);
    toks_.push_back(std::move(t));
    i = j;
  }
  return Status::OK();
}

Result<Operand> Evaluator::parse_comparison(bool live) {
  static const std::set<std::string> kComparisons = {"<", "<=", ">", ">=", "==", "!="};
  auto comparison = [&] {
    return toks_[pos_].kind == Token::Kind::kOp && kComparisons.count(toks_[pos_].text) > 0;
  };
  DLSYS_ASSIGN_OR_RETURN(Operand a, parse_sum(live));
  if (!comparison()) return a;
  const Token& op = take();
  DLSYS_ASSIGN_OR_RETURN(Operand b, parse_sum(live));
  if (comparison())
    return error(
        toks_[pos_].offset,
        fmt::format("comparisons do not chain: '{}' follows '{}'", toks_[pos_].text, op.text),
        "write e.g. 'a < b and b < c'");
  if (!live) return Operand{};
  if (op.text == "==" || op.text == "!=") {
    const bool equal =
        a.v.is_number() && b.v.is_number() ? a.v.get<double>() == b.v.get<double>() : a.v == b.v;
    return Operand{json(equal == (op.text == "==")), ""};
  }
  DLSYS_RETURN_IF_ERROR(need_number(a, op));
  DLSYS_RETURN_IF_ERROR(need_number(b, op));
  const double x = a.v.get<double>(), y = b.v.get<double>();
  const bool r =
      op.text == "<" ? x < y : (op.text == "<=" ? x <= y : (op.text == ">" ? x > y : x >= y));
  return Operand{json(r), ""};
}

Result<Operand> Evaluator::parse_primary(bool live) {
  const Token& t = take();
  if (t.kind == Token::Kind::kLiteral || t.kind == Token::Kind::kValue)
    return Operand{t.value, t.kind == Token::Kind::kValue ? t.text : ""};
  if (t.text == "(") {
    DLSYS_RETURN_IF_ERROR(enter(t));
    DLSYS_ASSIGN_OR_RETURN(Operand inner, parse_or(live));
    if (!at(")"))
      return error(toks_[pos_].offset,
                   fmt::format("the '(' at offset {} is not closed: expected ')'", t.offset));
    take();
    --depth_;
    return inner;
  }
  // Not an operand: step back to it, and name the token before it.
  if (t.kind != Token::Kind::kEnd) --pos_;
  const std::string what =
      pos_ == 0 ? std::string("expected an operand")
                : fmt::format("expected an operand after '{}'", toks_[pos_ - 1].text);
  return error(t.offset, what, t.text == "not" ? "a 'not' here needs parentheses: (not ...)" : "");
}

// The text as written with whitespace runs (outside strings) collapsed, values compact.
std::string explain(const std::vector<ConditionPiece>& pieces) {
  std::string out;
  bool space = false;
  auto put = [&](const std::string& s) {
    if (space && !out.empty()) out += ' ';
    space = false;
    out += s;
  };
  for (const ConditionPiece& p : pieces) {
    if (p.is_value) {
      put(compact(p.value));
      continue;
    }
    char quote = 0;
    for (size_t i = 0; i < p.text.size(); ++i) {
      const char c = p.text[i];
      if (quote == 0 && Chars::space(c)) {
        space = true;
      } else if (quote != 0 && c == '\\' && i + 1 < p.text.size()) {
        put(p.text.substr(i++, 2));
      } else {
        if (c == '"' || c == '\'') quote = quote == 0 ? c : (quote == c ? 0 : quote);
        put(std::string(1, c));
      }
    }
  }
  return out;
}

}  // namespace

Result<GateResult> evaluate_condition(const std::vector<ConditionPiece>& pieces,
                                      const std::string& where) {
  Evaluator e(where);
  DLSYS_RETURN_IF_ERROR(e.tokenize(pieces));
  DLSYS_ASSIGN_OR_RETURN(bool passed, e.evaluate());
  GateResult r;
  r.passed = passed;
  r.explanation = explain(pieces) + (passed ? " -> true" : " -> false");
  return r;
}

Result<GateResult> evaluate_condition(const std::string& text, const std::string& where) {
  return evaluate_condition(std::vector<ConditionPiece>{ConditionPiece{text, json(), false, ""}},
                            where);
}

}  // namespace dlsys::flow
