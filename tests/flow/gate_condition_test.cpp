// A gate's condition (flow/gate_condition.h): precedence and associativity, every comparison,
// the issue's example with resolved references, short-circuit past a missing (null) output,
// string equality, a value never re-tokenized, every error naming the condition and the place
// with a hint, the length and nesting limits, and the explanation.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "flow/gate_condition.h"

namespace dlsys::flow {
namespace {

using nlohmann::json;

const char kWhere[] = "retrain.yaml:40: steps[5].condition";
const char kAcc[] = "${steps.evaluate.outputs.metrics.accuracy}";
const char kBase[] = "${steps.evaluate.outputs.baseline.accuracy}";

ConditionPiece text(const std::string& t) {
  return ConditionPiece{t, json(), false, ""};
}
ConditionPiece value(const json& v, const std::string& ref) {
  return ConditionPiece{"", v, true, ref};
}

// The outcome of `pieces`, which must evaluate.
bool passes(const std::vector<ConditionPiece>& pieces) {
  auto r = evaluate_condition(pieces, kWhere);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() && r->passed;
}
bool passes(const std::string& condition) {
  auto r = evaluate_condition(condition, kWhere);
  EXPECT_TRUE(r.ok()) << condition << ": " << r.status().to_string();
  return r.ok() && r->passed;
}

// The error message of `pieces`, which must fail; it always names the condition.
std::string error_of(const std::vector<ConditionPiece>& pieces) {
  auto r = evaluate_condition(pieces, kWhere);
  EXPECT_FALSE(r.ok()) << "evaluated to " << (r.ok() ? r->explanation : "");
  if (r.ok()) return "";
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message().rfind(std::string(kWhere) + ": ", 0), 0u) << r.status().message();
  return r.status().message();
}
std::string error_of(const std::string& condition) {
  return error_of({text(condition)});
}

#define EXPECT_HAS(haystack, needle) \
  EXPECT_NE((haystack).find(needle), std::string::npos) << "'" << (needle) << "' in: " << (haystack)

TEST(GateCondition, ArithmeticPrecedenceAndLeftAssociativity) {
  EXPECT_TRUE(passes("1 + 2 * 3 == 7"));
  EXPECT_TRUE(passes("2 * 3 + 1 == 7"));
  EXPECT_TRUE(passes("(1 + 2) * 3 == 9"));
  EXPECT_TRUE(passes("10 - 2 - 3 == 5"));
  EXPECT_TRUE(passes("8 / 4 / 2 == 1"));
  EXPECT_TRUE(passes("8 / (4 / 2) == 4"));
  EXPECT_TRUE(passes("-2 * -3 == 6"));
  EXPECT_TRUE(passes("2 - -3 == 5"));
  EXPECT_TRUE(passes("-(1 + 2) == -3"));
  EXPECT_TRUE(passes("1e-3 == 0.001 and 2.5E2 == 250 and 1e+2 == 100"));
  EXPECT_TRUE(passes("1 == 1.0"));
}

TEST(GateCondition, LogicPrecedence) {
  EXPECT_TRUE(passes("true or true and false")) << "and binds tighter than or";
  EXPECT_FALSE(passes("false and true or false"));
  EXPECT_FALSE(passes("not false and false")) << "not binds tighter than and";
  EXPECT_TRUE(passes("not (false and false)"));
  EXPECT_TRUE(passes("not 1 > 2")) << "comparisons bind tighter than not";
  EXPECT_TRUE(passes("not not true"));
  EXPECT_TRUE(passes("1 < 2 and 3 > 2 or 1 == 2"));
  EXPECT_TRUE(passes("(1 < 2) == true"));
}

TEST(GateCondition, EveryComparison) {
  EXPECT_TRUE(passes("1 < 2"));
  EXPECT_FALSE(passes("2 < 2"));
  EXPECT_TRUE(passes("2 <= 2"));
  EXPECT_FALSE(passes("3 <= 2"));
  EXPECT_TRUE(passes("3 > 2"));
  EXPECT_FALSE(passes("2 > 2"));
  EXPECT_TRUE(passes("2 >= 2"));
  EXPECT_FALSE(passes("1 >= 2"));
  EXPECT_TRUE(passes("2 == 2"));
  EXPECT_FALSE(passes("2 == 3"));
  EXPECT_TRUE(passes("2 != 3"));
  EXPECT_FALSE(passes("2 != 2"));
  EXPECT_TRUE(passes("1>=1"));
}

TEST(GateCondition, TheIssuesExampleWithResolvedReferences) {
  auto gain = [](double accuracy, double baseline) {
    return std::vector<ConditionPiece>{value(accuracy, kAcc), text(" >= "), value(baseline, kBase),
                                       text(" + 0.005")};
  };
  auto r = evaluate_condition(gain(0.9861, 0.9722), kWhere);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_TRUE(r->passed);
  EXPECT_EQ(r->explanation, "0.9861 >= 0.9722 + 0.005 -> true");
  r = evaluate_condition(gain(0.975, 0.9722), kWhere);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_FALSE(r->passed);
  EXPECT_EQ(r->explanation, "0.975 >= 0.9722 + 0.005 -> false");
  EXPECT_TRUE(passes({value(true, "${steps.validate.outputs.ok}")}));
  EXPECT_TRUE(passes({value(60000, "${steps.validate.outputs.rows}"), text(">= 1000")}));
}

TEST(GateCondition, ShortCircuitPastANull) {
  auto guarded = [](const json& baseline) {
    return std::vector<ConditionPiece>{value(baseline, kBase), text(" == null or "),
                                       value(0.99, kAcc), text(" >= "), value(baseline, kBase)};
  };
  EXPECT_TRUE(passes(guarded(nullptr))) << "no baseline: the right side is not evaluated";
  EXPECT_TRUE(passes(guarded(0.98)));
  EXPECT_FALSE(passes(guarded(0.995)));
  EXPECT_FALSE(passes({text("false and "), value(nullptr, kBase), text(" > 1")}));
  EXPECT_TRUE(passes({text("true or 1 / 0 > 1")})) << "nor divided";
  // Unguarded, the error names the reference and says how to guard it.
  const std::string e = error_of({value(0.99, kAcc), text(" >= "), value(nullptr, kBase)});
  EXPECT_HAS(e, std::string(kBase) + " has no value (null); compare with '== null' first");
  EXPECT_HAS(e, std::string("e.g. \"") + kBase + " == null or ...\"");
  EXPECT_HAS(error_of({value(nullptr, kBase), text(" + 1 > 0")}), "has no value (null)");
  // A skipped side is still parsed.
  EXPECT_HAS(error_of("true or 1 >"), "expected an operand after '>'");
}

TEST(GateCondition, EqualityOfAnyTwoValues) {
  EXPECT_TRUE(passes("\"abc\" == 'abc'"));
  EXPECT_TRUE(passes("\"a\" != \"b\""));
  EXPECT_TRUE(passes("'it\\'s' == \"it's\""));
  EXPECT_TRUE(
      passes({value("digits@7", "${steps.register.outputs.model}"), text(" == 'digits@7'")}));
  EXPECT_FALSE(passes("\"1\" == 1"));
  EXPECT_TRUE(passes("null == null"));
  EXPECT_TRUE(passes("true == true and true != false"));
  EXPECT_TRUE(passes("true != null and 0 != null and '' != null"));
  EXPECT_FALSE(passes("true == 1"));
}

TEST(GateCondition, AValuePieceIsNeverReTokenized) {
  const std::string ref = "${params.note}";
  EXPECT_TRUE(passes({value("1 or true", ref), text(" == \"1 or true\"")}));
  EXPECT_FALSE(passes({value("1 or true", ref), text(" == 1")}));
  const std::string e = error_of({value("1 or true", ref)});
  EXPECT_HAS(e, "not true or false");
  EXPECT_HAS(e, "a string");
  EXPECT_HAS(error_of({value("true", ref)}), "not true or false") << "the string, not the boolean";
}

TEST(GateCondition, SyntaxErrorsNameThePlaceWithAHint) {
  std::string e = error_of("1 >= and true");
  EXPECT_HAS(e, "expected an operand after '>=' at \"and true\" (offset 5)");
  EXPECT_HAS(error_of("1 >="), "expected an operand after '>=' at the end of the condition");
  e = error_of("1 >= 2 3");
  EXPECT_HAS(e, "unexpected '3' after a complete condition");
  EXPECT_HAS(e, "(offset 7)");
  EXPECT_HAS(e, "'and' or 'or'");
  EXPECT_HAS(error_of("(1 >= 2"), "the '(' at offset 0 is not closed: expected ')' at the end");
  EXPECT_HAS(error_of("1 >= 2)"), "a ')' without a matching '('");
  e = error_of("accuracy >= 0.9");
  EXPECT_HAS(e, "unknown word 'accuracy'");
  EXPECT_HAS(e, "true, false, null, and, or, not");
  EXPECT_HAS(error_of("True"), "did you mean 'true'?");
  EXPECT_HAS(error_of("1 < 2 AND 2 < 3"), "did you mean 'and'?");
  EXPECT_HAS(error_of("1 = 1"), "a lone '=' at \"= 1\" (offset 2): use '=='");
  EXPECT_HAS(error_of("true && false"), "use 'and'");
  EXPECT_HAS(error_of("true || false"), "use 'or'");
  EXPECT_HAS(error_of("!true"), "use 'not'");
  EXPECT_HAS(error_of("1 < 2 < 3"), "comparisons do not chain");
  EXPECT_HAS(error_of("'abc' == 'abc"), "not closed");
  EXPECT_HAS(error_of("1.2.3 > 1"), "malformed number");
  EXPECT_HAS(error_of("   "), "the condition is empty");
  EXPECT_HAS(error_of("1 == not true"), "needs parentheses");
}

TEST(GateCondition, TypeErrorsAndDivisionByZero) {
  EXPECT_HAS(error_of("1 / 0 > 1"), "division by zero");
  EXPECT_HAS(error_of("1 / (2 - 2) > 1"), "division by zero");
  EXPECT_HAS(error_of("1 + 2"), "not true or false");
  EXPECT_HAS(error_of("1 and true"), "'and' needs true or false");
  EXPECT_HAS(error_of("not 1"), "'not' needs true or false");
  EXPECT_HAS(error_of("\"a\" + 1 > 0"), "'+' needs numbers");
  EXPECT_HAS(error_of("\"a\" < \"b\""), "'<' needs numbers");
  EXPECT_HAS(error_of("null > 1"), "'>' needs numbers");
  EXPECT_HAS(error_of("-true == 1"), "'-' needs numbers");
  const std::string e =
      error_of({value(json::array({1, 2}), "${steps.train.outputs.metrics}"), text(" == 1")});
  EXPECT_HAS(e, "${steps.train.outputs.metrics} is a list");
  EXPECT_HAS(error_of({value(json::object(), "${params.m}")}), "${params.m} is a mapping");
}

TEST(GateCondition, LengthAndNestingLimits) {
  std::string deep = std::string(64, '(') + "true" + std::string(64, ')');
  EXPECT_TRUE(passes(deep));
  deep = std::string(65, '(') + "true" + std::string(65, ')');
  EXPECT_HAS(error_of(deep), "nesting deeper than 64");
  std::string nots;
  for (int i = 0; i < 1000; ++i) nots += "not ";
  EXPECT_HAS(error_of(nots + "true"), "nesting deeper than 64") << "an error, not a stack overflow";
  EXPECT_HAS(error_of(std::string(2000, '-') + "1 < 0"), "nesting deeper than 64");
  std::string sum = "0";
  while (sum.size() < 4080) sum += " + 1";
  EXPECT_TRUE(passes(sum + " > 0")) << "long but flat is fine";
  EXPECT_HAS(error_of(sum + " + 1 + 1 + 1 + 1 > 0"), "longer than 4096 characters");
}

TEST(GateCondition, Explanation) {
  auto r = evaluate_condition("  1 +   2\n ==\t3  ", kWhere);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->explanation, "1 + 2 == 3 -> true");
  r = evaluate_condition("'a  b' != \"a  b\"", kWhere);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->explanation, "'a  b' != \"a  b\" -> false") << "whitespace in strings is kept";
  r = evaluate_condition({value(0.97222222, kAcc), text(" > 0.9 and "), value("digits@7", "${m}"),
                          text(" == 'digits@7' and "), value(60000, "${rows}"), text(" > 0 or "),
                          value(nullptr, kBase), text(" == null")},
                         kWhere);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->explanation,
            "0.972222 > 0.9 and \"digits@7\" == 'digits@7' and 60000 > 0 or null == null -> true");
}

}  // namespace
}  // namespace dlsys::flow
