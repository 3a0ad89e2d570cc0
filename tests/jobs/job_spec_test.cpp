// The training-service job spec: every field parsed from YAML and JSON, kind-specific needs,
// and errors that name the file, the line and the field (with what would be accepted).
#include <gtest/gtest.h>

#include "jobs/job_spec.h"

namespace dlsys::jobs {
namespace {

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

TEST(JobSpec, EveryFieldOfATrainJobIsRead) {
  auto s = parse_job_spec(R"(kind: train
name: digits-mlp
spec: examples/digits/mlp.yaml
dataset: digits@3
split: train
hyperparameters: {lr: 0.05, epochs: 4, optimizer: adam, shuffle: true}
resources: {threads: 2, memory: 1.5GiB}
priority: 10
max_retries: 3
max_run_time: 30m
owner: alice
on_success: {register: digits, alias: staging}
)",
                          "job.yaml");
  ASSERT_TRUE(s.ok()) << s.status().message();
  const JobSpec& j = s.value();
  EXPECT_EQ(j.kind, JobKind::kTrain);
  EXPECT_EQ(j.name, "digits-mlp");
  EXPECT_EQ(j.spec, "examples/digits/mlp.yaml");
  ASSERT_TRUE(j.has_dataset);
  EXPECT_EQ(j.dataset.name, "digits");
  EXPECT_EQ(j.dataset.version, 3);
  EXPECT_EQ(j.split, "train");
  EXPECT_DOUBLE_EQ(j.hyperparameters["lr"].get<double>(), 0.05);
  EXPECT_EQ(j.hyperparameters["epochs"].get<int64_t>(), 4);
  EXPECT_EQ(j.hyperparameters["optimizer"], "adam");
  EXPECT_EQ(j.hyperparameters["shuffle"], true);
  EXPECT_EQ(j.resources.threads, 2);
  EXPECT_EQ(j.resources.memory_bytes, 1610612736);
  EXPECT_EQ(j.priority, 10);
  EXPECT_EQ(j.max_retries, 3);
  EXPECT_EQ(j.max_run_seconds, 1800);
  EXPECT_EQ(j.owner, "alice");
  EXPECT_EQ(j.register_model, "digits");
  EXPECT_EQ(j.move_alias, "staging");
  // JSON round trip: the stored form reads back to the same spec.
  auto back = job_spec_from_json(to_json(j), "stored job");
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(to_json(back.value()), to_json(j));
}

TEST(JobSpec, CommandAndPredictJobsAndJsonInput) {
  auto c = parse_job_spec(
      R"({"kind": "command", "command": ["python3", "train.py", "--epochs", 3],
          "dataset": "digits", "resources": {"threads": 1, "memory": 536870912}})",
      "job.json");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->kind, JobKind::kCommand);
  EXPECT_EQ(c->name, "command");
  EXPECT_EQ(c->command, (std::vector<std::string>{"python3", "train.py", "--epochs", "3"}));
  EXPECT_EQ(c->dataset.name, "digits");
  EXPECT_EQ(c->dataset.version, 0);  // the newest
  EXPECT_EQ(c->resources.memory_bytes, 536870912);
  auto p = parse_job_spec(
      "kind: predict\nmodel: digits@production\ndataset: digits@2\noutput_dataset: preds\n",
      "predict.yaml");
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(p->model.name, "digits");
  EXPECT_EQ(p->model.alias, "production");
  EXPECT_EQ(p->output_dataset, "preds");
  // A quoted number stays text: a name, not a version.
  auto q = parse_job_spec("kind: command\nname: '42'\ncommand: [true]\n", "q.yaml");
  ASSERT_TRUE(q.ok()) << q.status().message();
  EXPECT_EQ(q->name, "42");
}

// Each bad spec fails with the file, the line and the field it names.
TEST(JobSpec, ErrorsNameTheFileTheLineAndTheField) {
  struct Case {
    std::string text, want;
  };
  const std::vector<Case> cases = {
      {"kind: train\nspec: a.yaml\nprority: 3\n",
       "job.yaml:3: 'prority' is not a field of a job spec; the fields are:"},
      {"kind: train\nspec: a.yaml\nresources: {threads: 0}\n",
       "job.yaml:3: 'resources.threads' must be a whole number from 1 to 1024, got 0"},
      {"kind: train\nspec: a.yaml\nresources:\n  memory: 2 gigs\n",
       "job.yaml:4: 'resources.memory' is '2 gigs': unknown unit ' gigs'"},
      {"kind: train\nspec: a.yaml\nmax_run_time: 5 weeks\n",
       "job.yaml:3: 'max_run_time' is '5 weeks': unknown unit ' weeks'"},
      {"kind: training\n", "job.yaml:1: 'kind' is 'training'; the kinds are train, command"},
      {"spec: a.yaml\n", "job.yaml: a job spec needs 'kind'"},
      {"kind: train\n", "a train job needs 'spec'"},
      {"kind: train\nspec: a.yaml\ndistributed: {workers: 3}\n",
       "job.yaml:3: 'distributed.workers' is 3: data-parallel training runs on a power of two"},
      {"kind: train\nspec: a.yaml\ndistributed: {workers: 2, zero: 2}\n",
       "job.yaml:3: 'distributed.zero' must be a whole number from 0 to 1, got 2"},
      {"kind: train\nspec: a.yaml\ndistributed: {gpus: 2}\n", "'distributed.gpus' is not a field"},
      {"kind: train\nspec: a.yaml\ndistributed: {workers: 2, min_workers: 4}\n",
       "job.yaml:3: 'distributed.min_workers' is 4, more than distributed.workers (2)"},
      {"kind: command\ncommand: [ls]\ndistributed: {workers: 2}\n",
       "'distributed' is for train jobs"},
      {"kind: train\nmodel: digits@1\n", "a train job needs 'spec'"},
      {"kind: command\ncommand: python3 train.py\n",
       "job.yaml:2: 'command' must be a list: the program and its arguments"},
      {"kind: train\nspec: a.yaml\ncommand: [ls]\n",
       "job.yaml:3: 'command' does not apply to a train job (it is for: command)"},
      {"kind: predict\nmodel: digits@1\ndataset: digits@0\noutput_dataset: p\n",
       "job.yaml:3: 'dataset' is 'digits@0': a version is a number from 1"},
      {"kind: predict\nmodel: digits@1\n", "a predict job needs 'model'"},
      {"kind: train\nspec: a.yaml\nsplit: train\n", "job.yaml:3: 'split' needs 'dataset'"},
      {"kind: train\nspec: a.yaml\non_success: {alias: production}\n",
       "job.yaml:3: 'on_success.alias' needs 'register'"},
      {"kind: train\nspec: a.yaml\nhyperparameters: {layers: [1, 2]}\n",
       "job.yaml:3: 'hyperparameters.layers' must be a number, text or true/false"},
      {"kind: train\nspec: a.yaml\nmax_retries: 1000\n",
       "job.yaml:3: 'max_retries' must be a whole number from 0 to 100"},
      {"kind: train\n  spec: [\n", "job.yaml:"},  // YAML syntax error, with its line
      {"- kind: train\n", "job.yaml: a job spec is a mapping of fields"},
  };
  for (const Case& c : cases) {
    auto r = parse_job_spec(c.text, "job.yaml");
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << c.text;
    EXPECT_TRUE(contains(r.status().message(), c.want))
        << "spec:\n"
        << c.text << "\nmessage: " << r.status().message() << "\nwanted: " << c.want;
  }
  // Bytes that are not UTF-8 (found by fuzz_job_spec: they made the error message throw).
  auto nu = parse_job_spec("kind: command\ncommand: [ls]\npriority: \xde 3\n", "job.yaml");
  ASSERT_FALSE(nu.ok());
  EXPECT_TRUE(contains(nu.status().message(), "job.yaml:3: byte 38 is not UTF-8 text"))
      << nu.status().message();
  // From stored JSON the error names the source and the field (no line).
  auto r = job_spec_from_json(nlohmann::json{{"kind", "train"}, {"spec", 7}}, "job 12");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(contains(r.status().message(), "job 12: 'spec' must be non-empty text, got 7"))
      << r.status().message();
}

TEST(JobSpec, UnitsOfBytesAndDurations) {
  EXPECT_EQ(parse_bytes("64k", "m").value(), 64000);
  EXPECT_EQ(parse_bytes("512MiB", "m").value(), 536870912);
  EXPECT_EQ(parse_bytes("1.5G", "m").value(), 1500000000);
  EXPECT_EQ(parse_bytes("100", "m").value(), 100);
  EXPECT_FALSE(parse_bytes("-1G", "m").ok());
  EXPECT_FALSE(parse_bytes("G", "m").ok());
  EXPECT_EQ(parse_duration_seconds("90s", "t").value(), 90);
  EXPECT_EQ(parse_duration_seconds("1.5m", "t").value(), 90);
  EXPECT_EQ(parse_duration_seconds("2h", "t").value(), 7200);
  EXPECT_EQ(parse_duration_seconds("1d", "t").value(), 86400);
  EXPECT_EQ(parse_duration_seconds("45", "t").value(), 45);
  EXPECT_FALSE(parse_duration_seconds("soon", "t").ok());
  auto ref = parse_version_ref("model@", "'model'");
  ASSERT_FALSE(ref.ok());
  EXPECT_TRUE(contains(ref.status().message(), "nothing after '@'")) << ref.status().message();
}

}  // namespace
}  // namespace dlsys::jobs
