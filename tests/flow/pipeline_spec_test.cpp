// The pipeline spec (flow/pipeline_spec.h): the shipped example parses with the dependencies its
// references imply and a run order; every mistake is refused with the file, the line and the
// field; a cycle is spelled out.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "flow/pipeline_spec.h"

namespace dlsys::flow {
namespace {

std::string example() {
  std::ifstream f(std::string(DLSYS_SOURCE_DIR) + "/examples/pipelines/retrain.yaml");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<std::string> deps(const PipelineSpec& p, const std::string& step) {
  const StepSpec* s = p.step(step);
  EXPECT_NE(s, nullptr) << "no step named " << step;
  return s ? s->depends_on : std::vector<std::string>{"(no such step)"};
}

TEST(PipelineSpec, TheRetrainExampleParsesWithItsDependenciesAndOrder) {
  auto p = parse_pipeline_spec(example(), "retrain.yaml");
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  EXPECT_EQ(p->name, "retrain");
  ASSERT_EQ(p->steps.size(), 8u);
  EXPECT_EQ(p->params["min_gain"], 0.005);
  // References are dependencies; needs adds the ordering-only ones.
  ASSERT_NE(p->step("validate"), nullptr);
  EXPECT_EQ(deps(*p, "validate"), std::vector<std::string>{});
  EXPECT_EQ(deps(*p, "data-ok"), std::vector<std::string>{"validate"});
  EXPECT_EQ(deps(*p, "train"), std::vector<std::string>{"data-ok"});
  EXPECT_EQ(deps(*p, "evaluate"), std::vector<std::string>{"register"});
  EXPECT_EQ(deps(*p, "better"), std::vector<std::string>{"evaluate"});
  EXPECT_EQ(deps(*p, "canary"), (std::vector<std::string>{"better", "register"}));
  EXPECT_EQ(p->order, (std::vector<std::string>{"validate", "data-ok", "train", "register",
                                                "evaluate", "better", "canary", "promote"}));
  ASSERT_EQ(p->triggers.size(), 2u);
  EXPECT_EQ(p->triggers[0].value, "digits");
  EXPECT_EQ(p->triggers[0].param, "data");
  EXPECT_EQ(p->triggers[1].kind_name(), "alert");  // monitoring's drift alert
  EXPECT_EQ(p->triggers[1].value, "digits-drift");
  const StepSpec* train = p->step("train");
  EXPECT_EQ(train->retries, 1);
  EXPECT_EQ(train->timeout_seconds, 1800);
  EXPECT_TRUE(train->cache);
  EXPECT_EQ(p->step("better")->kind, "gate");
  EXPECT_NE(p->step("better")->condition.find(">="), std::string::npos);
  EXPECT_GT(p->step("canary")->line, p->step("better")->line);
}

TEST(PipelineSpec, TheOrderRunsDependenciesFirstWhateverTheFileOrder) {
  auto p = parse_pipeline_spec(
      "name: fan\nparams: {sizes: [16, 32, 64]}\nsteps:\n"
      "  - {name: pick, kind: gate, condition: '${steps.train.outputs.metrics.accuracy} > 0.9'}\n"
      "  - name: train\n    kind: train\n    for_each: ${params.sizes}\n"
      "    with: {dataset: '${steps.push.outputs.dataset}', hyperparameters: {hidden: "
      "'${item}'}}\n"
      "  - {name: push, kind: data.push, with: {file: a.csv, name: a}}\n",
      "fan.yaml");
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  EXPECT_EQ(p->order, (std::vector<std::string>{"push", "train", "pick"}));
  EXPECT_EQ(p->step("train")->for_each, "${params.sizes}");
}

// Each bad spec, and a part of the message it must get (the field, the line, the fix).
TEST(PipelineSpec, MistakesAreRefusedNamingTheFileLineAndField) {
  const std::string push = "  - {name: push, kind: data.push, with: {file: a.csv, name: a}}\n";
  struct Case {
    std::string text, expect;
  };
  const std::vector<Case> cases = {
      {"name: x\nstep: []\n", "x.yaml:2: step is not a field of a pipeline spec"},
      {"name: x\nsteps: []\n", "steps must be a list of steps"},
      {"name: 3x\nsteps:\n" + push, "x.yaml:1: name must be a name"},
      {"steps:\n" + push, "name must be a name"},
      {"name: x\nparams: {a: {b: 1}}\nsteps:\n" + push, "x.yaml:2: params.a must be a number"},
      {"name: x\nsteps:\n  - {name: t, kind: trian}\n", "steps.t.kind must be one of: alias"},
      {"name: x\nsteps:\n  - {name: t, kind: train}\n", "a 'train' step needs with.dataset"},
      {"name: x\nsteps:\n" + push +
           "  - name: t\n    kind: train\n    with:\n"
           "      dataset: a@1\n      epochs: 3\n",
       "x.yaml:8: steps.t.with.epochs is not a field of a 'train' step's with"},
      {"name: x\nsteps:\n" + push + push, "x.yaml:4: steps[1].name: a second step named 'push'"},
      {"name: x\nsteps:\n" + push + "  - {name: t, kind: train, with: {dataset: '${params.ds}'}}\n",
       "x.yaml:4: steps.t.with: no parameter 'ds'"},
      {"name: x\nsteps:\n" + push +
           "  - {name: t, kind: train, with: {dataset: '${steps.pull.outputs.dataset}'}}\n",
       "no step is named 'pull'"},
      {"name: x\nsteps:\n" + push +
           "  - {name: t, kind: train, with: {dataset: '${steps.push.outputs.model}'}}\n",
       "a 'data.push' step has no output 'model' (its outputs: dataset, rows, unchanged, version)"},
      {"name: x\nsteps:\n" + push +
           "  - {name: t, kind: train, with: {dataset: '${steps.push.outputs.dataset'}}\n",
       "'${' without its '}'"},
      {"name: x\nsteps:\n" + push + "  - {name: t, kind: train, with: {dataset: '${push}'}}\n",
       "'${push}' is not a reference"},
      {"name: x\nsteps:\n" + push + "  - {name: t, kind: train, with: {dataset: '${item}'}}\n",
       "${item} is only for a step with for_each"},
      {"name: x\nsteps:\n" + push + "  - {name: g, kind: gate}\n", "a gate needs a condition"},
      {"name: x\nsteps:\n" + push + "  - {name: g, kind: gate, condition: 'true', retries: 2}\n",
       "a gate step is not retried"},
      {"name: x\nsteps:\n" + push +
           "  - {name: t, kind: train, with: {dataset: a}, timeout: soon}\n",
       "steps.t.timeout"},
      {"name: x\nsteps:\n" + push +
           "  - {name: t, kind: train, with: {dataset: a}, needs: [pul]}\n",
       "steps.t.needs: no step is named 'pul'"},
      {"name: x\nsteps:\n" + push + "  - {name: t, kind: train, with: {dataset: a}, needs: [t]}\n",
       "a step cannot need itself"},
      {"name: x\nsteps:\n  - {name: a, kind: notify, with: {url: '${steps.c.outputs.status}'}}\n"
       "  - {name: b, kind: notify, with: {url: u}, needs: [a]}\n"
       "  - {name: c, kind: notify, with: {url: u}, needs: [b]}\n",
       "x.yaml:3: steps: the steps depend on each other in a cycle: a -> c -> b -> a"},
      // x needs m, m needs n, n needs m and x: the path goes back to x, not round m and n.
      {"name: x\nsteps:\n  - {name: x, kind: notify, with: {url: u}, needs: [m]}\n"
       "  - {name: m, kind: notify, with: {url: u}, needs: [n]}\n"
       "  - {name: n, kind: notify, with: {url: u}, needs: [m, x]}\n",
       "cycle: x -> m -> n -> x"},
      {"name: x\nsteps:\n" + push +
           "  - {name: t, kind: train, with: {dataset: '${steps.push.outputs.dataset.}'}}\n",
       "is not a reference"},
      {"name: x\nsteps:\n  - {name: a, kind: command, with: {command: [echo]}, cache: maybe}\n",
       "steps.a.cache must be true or false"},
      {"name: x\nsteps:\n  - [a, b]\n", "steps[0] must be a mapping"},
      {"name: x\nparams: {n: 3}\nsteps:\n  - {name: a, kind: notify, with: {url: u}, for_each: "
       "'${params.n}'}\n",
       "steps.a.for_each: params.n is not a list"},
      {"name: x\nsteps:\n  - {name: a, kind: notify, with: {url: u}, for_each: 'a, b'}\n",
       "must be a non-empty list of values or one ${params.NAME} holding a list"},
      {"name: x\nsteps: [\n", "x.yaml:"},
      {"name: x\nsteps:\n" + push + "triggers:\n  - {every: 1m, cron: '* * * * *'}\n",
       "x.yaml:5: triggers[0] must have exactly one of cron, every, dataset, alias or alert (it "
       "has 2)"},
      {"name: x\nsteps:\n" + push + "triggers:\n  - {cron: '61 * * * *'}\n",
       "x.yaml:5: triggers[0].cron (minute): '61' is outside 0-59"},
      {"name: x\nsteps:\n" + push + "triggers:\n  - {every: 0s}\n", "1 s or more"},
      {"name: x\nsteps:\n" + push + "triggers:\n  - {alias: production}\n", "must be MODEL@ALIAS"},
      {"name: x\nsteps:\n" + push + "triggers:\n  - {dataset: digits, param: data}\n",
       "triggers[0].param must name one of the pipeline's params"},
      {"name: x\nsteps:\n" + push + "triggers:\n  - {datset: digits}\n",
       "triggers[0].datset is not a field of a trigger"},
      {"name: x\nsteps:\n" + push + "triggers: {every: 1m}\n", "triggers must be a list"},
  };
  for (const Case& c : cases) {
    auto p = parse_pipeline_spec(c.text, "x.yaml");
    ASSERT_FALSE(p.ok()) << "accepted:\n" << c.text;
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(p.status().message().find(c.expect), std::string::npos)
        << "for:\n"
        << c.text << "got: " << p.status().message() << "\nwant: " << c.expect;
  }
}

TEST(PipelineSpec, ReferencesAreFoundInsideListsAndMappings) {
  auto refs =
      find_references(nlohmann::json{{"a", "${params.x}-${item}"},
                                     {"b", {"${steps.t.outputs.metrics.accuracy}", 3, true}}},
                      "here");
  ASSERT_TRUE(refs.ok()) << refs.status().to_string();
  ASSERT_EQ(refs->size(), 3u);
  EXPECT_EQ((*refs)[0].kind, Reference::Kind::kParam);
  EXPECT_EQ((*refs)[0].name, "x");
  EXPECT_EQ((*refs)[1].kind, Reference::Kind::kItem);
  EXPECT_EQ((*refs)[2].kind, Reference::Kind::kStepOutput);
  EXPECT_EQ((*refs)[2].name, "t");
  EXPECT_EQ((*refs)[2].key, "metrics.accuracy");
  // "$${" is a literal "${": a shell's variable in a command is not a reference.
  auto literal =
      find_references(nlohmann::json{"sh", "-c", "echo $${HOME} ${params.x} $$ $"}, "here");
  ASSERT_TRUE(literal.ok()) << literal.status().to_string();
  ASSERT_EQ(literal->size(), 1u);
  EXPECT_EQ((*literal)[0].name, "x");
  // A step may be named like a part of the syntax.
  auto named = find_references("${steps.outputs.outputs.dataset}", "here");
  ASSERT_TRUE(named.ok()) << named.status().to_string();
  EXPECT_EQ((*named)[0].name, "outputs");
  EXPECT_EQ((*named)[0].key, "dataset");
}

TEST(PipelineSpec, TriggersAreReadWithTheParamTheirEventGoesTo) {
  auto p = parse_pipeline_spec(
      "name: x\nparams: {data: d, model: m@1}\nsteps:\n  - {name: a, kind: notify, with: {url: "
      "u}}\ntriggers:\n  - {cron: '0 3 * * *'}\n  - {every: 90s}\n  - {dataset: digits, param: "
      "data}\n  - {alias: digits@production, param: model}\n  - {alert: '*'}\n",
      "x.yaml");
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  ASSERT_EQ(p->triggers.size(), 5u);
  EXPECT_STREQ(p->triggers[0].kind_name(), "cron");
  EXPECT_EQ(p->triggers[0].value, "0 3 * * *");
  EXPECT_EQ(p->triggers[1].every_seconds, 90);
  EXPECT_EQ(p->triggers[2].param, "data");
  EXPECT_EQ(p->triggers[3].value, "digits@production");
  EXPECT_EQ(p->triggers[4].kind, TriggerSpec::Kind::kAlert);
  EXPECT_EQ(p->triggers[4].line, 10);
}

}  // namespace
}  // namespace dlsys::flow
