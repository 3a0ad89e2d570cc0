// The condition of a pipeline `gate` step (issue 23, docs/pipelines.md), e.g.
// `${steps.evaluate.outputs.metrics.accuracy} >= ${steps.evaluate.outputs.baseline.accuracy} +
// 0.005`: true passes the gate, false stops its branch. By the time it is evaluated the runner
// has resolved every `${...}`: the condition comes as pieces, text to tokenize and the values the
// references resolved to, each one operand that is never re-tokenized (a string "1 or 1" stays a
// string).
//
// The language:
//   literals     numbers (int or decimal, optional exponent: 3, 0.005, 1e-3), strings in double
//                or single quotes (\n, \t; a backslash before any other character is that
//                character: \' \" \\), true, false, null
//   value piece  a JSON bool, number, string or null is that; a list or mapping is an error
//   arithmetic   + - * / and unary minus, on numbers only; division by zero is an error
//   comparison   < <= > >= on numbers; == != on any two values: equal JSON values (1 == 1.0,
//                "a" == 'a', null == null; 1 != "1"); a comparison does not chain (a < b < c)
//   logic        and, or, not: operands must be booleans; `and`/`or` short-circuit, so
//                `${x} == null or ${x} >= 1` is fine when x has no value
//   grouping     ( ... )
// Precedence, loosest first: or, and, not, comparisons, + -, * /, unary minus; the binary
// arithmetic operators associate to the left. The whole condition must be a boolean. At most
// 4096 characters (as written, references as written) and 64 levels of nesting ('(', 'not',
// unary '-').
//
// Every error is InvalidArgument and names `where`, the problem and the place (the character
// offset in the condition as written and the text there), with a hint when one helps: a lone
// '=' (use '=='), '&&'/'||' (use and/or), an unknown word (the keywords), a null in arithmetic
// or an ordering (the reference that had no value, and '== null' to guard it).
//
// Threading: pure functions, reentrant.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "core/status.h"

namespace dlsys::flow {

// One piece of a condition: text to tokenize, or a value a reference resolved to (inserted as
// one operand, never re-tokenized, so a string value "1 or 1" stays a string).
struct ConditionPiece {
  std::string text;
  nlohmann::json value;
  bool is_value = false;
  // The reference as written, e.g. "${steps.evaluate.outputs.metrics.accuracy}", for errors.
  std::string ref;
};

struct GateResult {
  bool passed = false;
  // The condition with the values substituted and the outcome, e.g.
  // "0.9861 >= 0.9722 + 0.005 -> true": the text as written with whitespace collapsed (outside
  // strings), values compact (numbers with up to 6 significant digits, integers whole, strings
  // quoted).
  std::string explanation;
};

// Evaluates `pieces`; `where` names the condition in errors (e.g. "retrain.yaml:40:
// steps[5].condition").
Result<GateResult> evaluate_condition(const std::vector<ConditionPiece>& pieces,
                                      const std::string& where);
// Convenience for tests and for conditions without references: one text piece.
Result<GateResult> evaluate_condition(const std::string& text, const std::string& where);

}  // namespace dlsys::flow
