// A pipeline spec (issue 23, docs/pipelines.md): parameters and a DAG of steps, each one of the
// step kinds below, read from YAML (or JSON). Steps pass outputs by reference: a value of a
// step's `with` may hold `${params.NAME}`, `${steps.STEP.outputs.KEY}` or, in a fanned-out step,
// `${item}`; a reference to a step is also a dependency on it (`needs` adds ordering-only ones).
//
// Checked when read, with the file, the line and the field in every error, and what would be
// accepted: unknown fields, kinds, parameters, steps and outputs; a missing required field; a
// dependency cycle (named step by step); a step that references a step it does not depend on
// only through a cycle. So a spec that parses runs without a "no such step" at step 7.
//
// Threading: plain values; parse functions are reentrant.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/status.h"

namespace dlsys::flow {

// One `${...}` reference inside a value.
struct Reference {
  enum class Kind { kParam, kStepOutput, kItem };
  Kind kind = Kind::kParam;
  std::string name;  // the parameter, or the step
  std::string key;   // a step output's key ("model", "metrics.accuracy")
};

// What a step kind takes and gives.
struct StepKindInfo {
  std::string kind;                // "train", "data.push", ...
  std::set<std::string> with;      // the fields of its `with`
  std::set<std::string> required;  // of those, the ones it needs
  std::set<std::string> outputs;   // the keys ${steps.X.outputs.KEY} may name
  bool open_metrics = false;       // also outputs "metrics.<any name>"
  bool retried = true;             // a failure of the step itself is retried (a gate's is not)
};
// Every step kind, by name.
const std::map<std::string, StepKindInfo>& step_kinds();

struct StepSpec {
  std::string name;
  std::string kind;
  int line = 0;  // where it begins in the file
  // Its parameters as written (references unresolved).
  nlohmann::json with = nlohmann::json::object();
  // A gate's condition, e.g. "${steps.evaluate.outputs.accuracy} >= 0.9".
  std::string condition;
  // Fan-out: one instance per item (a literal list, or one `${params.NAME}` holding a list).
  nlohmann::json for_each;         // null: not fanned out
  std::vector<std::string> needs;  // as written
  // Every step it depends on: `needs` and the steps its references name, sorted.
  std::vector<std::string> depends_on;
  int64_t retries = 0;          // attempts after a failure of the step itself
  int64_t timeout_seconds = 0;  // 0: none
  bool cache = true;            // false: never a cache hit (--no-cache for this step)
};

// What starts a run without a person (docs/pipelines.md, "Triggers"). Each fires an event with
// an id (a run per pipeline and event id, however often it fires) and a value, which goes to the
// run's parameter `param` when it names one.
struct TriggerSpec {
  enum class Kind { kCron, kEvery, kDataset, kAlias, kAlert };
  Kind kind = Kind::kCron;
  // cron: the schedule ("0 3 * * *", UTC); dataset: a dataset ("digits": a new version, or
  // "digits@prod": a tag moving); alias: a model alias ("digits@production" moving); alert: the
  // alert's name ("*": any) that POST /api/v1/pipelines/NAME/alerts fires.
  std::string value;
  int64_t every_seconds = 0;  // every: the interval
  std::string param;          // the parameter the event's value goes to ("": none)
  int line = 0;
  // "cron", "every", "dataset", "alias" or "alert".
  const char* kind_name() const;
};

struct PipelineSpec {
  std::string name;
  std::string description;
  // Parameter defaults (a run may override them); scalars or lists of scalars.
  nlohmann::json params = nlohmann::json::object();
  std::vector<StepSpec> steps;  // in the file's order
  std::vector<TriggerSpec> triggers;
  // The steps in an order that runs every dependency first (ties in the file's order).
  std::vector<std::string> order;
  const StepSpec* step(const std::string& name) const;
};

// Parses and checks `text`; `path` names it in errors ("retrain.yaml").
Result<PipelineSpec> parse_pipeline_spec(const std::string& text, const std::string& path);

// A piece of a text value: literal text (`$${` already made `${`), or one reference and the
// text it was written as ("${params.model}").
struct TextPiece {
  std::string text;
  bool is_ref = false;
  Reference ref;
  std::string written;
};
// Splits `s` into its pieces, in order. InvalidArgument as find_references.
Result<std::vector<TextPiece>> split_references(const std::string& s, const std::string& where);

// The `${...}` references in `value` (text, or the texts inside lists and mappings), in order;
// `$${` is a literal `${`, not a reference (the runner writes it as `${`).
// InvalidArgument for a malformed one (an unclosed `${`, an unknown root), naming `where`.
Result<std::vector<Reference>> find_references(const nlohmann::json& value,
                                               const std::string& where);

}  // namespace dlsys::flow
