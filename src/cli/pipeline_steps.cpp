#include "cli/pipeline_steps.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "cli/engine_options.h"
#include "cli/tabular_input.h"
#include "core/file_util.h"
#include "data/export.h"
#include "data/ingest.h"
#include "data/push.h"
#include "data/schema.h"
#include "graph/model_metadata.h"
#include "graph/session.h"
#include "jobs/job_spec.h"
#include "serve/deployment_config.h"

namespace dlsys::cli {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

std::string where_of(const flow::StepCall& c) {
  return fmt::format("pipeline '{}' run {}: steps.{}.with", c.run->pipeline, c.run->id,
                     c.step->name);
}

Result<json> push_step(api::Services& s, const flow::StepCall& c) {
  const std::string where = where_of(c);
  DLSYS_ASSIGN_OR_RETURN(std::string file, flow::with_text(c.with, "file", where));
  DLSYS_ASSIGN_OR_RETURN(std::string name, flow::with_text(c.with, "name", where));
  DLSYS_ASSIGN_OR_RETURN(std::string split, flow::with_text(c.with, "split", where, false));
  if (!fs::path(file).is_absolute()) file = (fs::path(c.work_dir) / file).string();
  data::PushOptions po;
  po.message = fmt::format("pushed by pipeline '{}' run {} step '{}'", c.run->pipeline, c.run->id,
                           c.step->name);
  po.author = c.who.name;
  if (!split.empty())
    DLSYS_RETURN_IF_ERROR(data::parse_split_fractions(split, &po).with_context(where + ".split"));
  if (c.with.contains("shard_rows") && c.with["shard_rows"].is_number_integer())
    po.shard_rows = c.with["shard_rows"];
  data::IngestOptions io;
  DLSYS_ASSIGN_OR_RETURN(auto src, data::open_source(file, "", io));
  DLSYS_ASSIGN_OR_RETURN(data::PushResult r, data::push(s.datasets(), name, *src, po));
  return json{{"dataset", r.version.label()},
              {"version", r.version.number},
              {"rows", r.rows},
              {"unchanged", r.unchanged}};
}

// The version's statistics against a schema file's rules (or, without one, its null counts):
// each column's problems, and whether there are none.
Result<json> validate_step(api::Services& s, const flow::StepCall& c) {
  const std::string where = where_of(c);
  DLSYS_ASSIGN_OR_RETURN(std::string ref_text, flow::with_text(c.with, "dataset", where));
  DLSYS_ASSIGN_OR_RETURN(std::string schema_path, flow::with_text(c.with, "schema", where, false));
  DLSYS_ASSIGN_OR_RETURN(data::VersionRef ref, data::parse_version_ref(ref_text));
  DLSYS_ASSIGN_OR_RETURN(data::VersionInfo v, s.datasets().resolve(ref));
  const json stats = v.manifest.value("stats", json::object());
  json report = json::object();
  int64_t problems = 0;
  auto problem = [&](const std::string& column, const std::string& what) {
    report[column]["problems"].push_back(what);
    ++problems;
  };
  for (auto it = stats.begin(); it != stats.end(); ++it)
    report[it.key()]["problems"] = json::array();
  if (!schema_path.empty()) {
    if (!fs::path(schema_path).is_absolute())
      schema_path = (fs::path(c.work_dir) / schema_path).string();
    DLSYS_ASSIGN_OR_RETURN(data::SchemaFile sf, data::read_schema_file(schema_path));
    for (const data::ColumnSchema& col : sf.schema.columns) {
      auto st = stats.find(col.name);
      if (st == stats.end()) {
        problem(col.name, "the column is missing");
        continue;
      }
      const std::string type = st->value("type", "");
      if (type != data::column_type_name(col.type))
        problem(col.name,
                fmt::format("type {}, the schema says {}", type, data::column_type_name(col.type)));
      if (col.rules.not_null && st->value("nulls", int64_t{0}) > 0)
        problem(col.name,
                fmt::format("{} nulls, the schema says not_null", st->value("nulls", int64_t{0})));
      if (col.rules.min && st->contains("min") && (*st)["min"].get<double>() < *col.rules.min)
        problem(col.name,
                fmt::format("min {} is below {}", (*st)["min"].get<double>(), *col.rules.min));
      if (col.rules.max && st->contains("max") && (*st)["max"].get<double>() > *col.rules.max)
        problem(col.name,
                fmt::format("max {} is above {}", (*st)["max"].get<double>(), *col.rules.max));
    }
  }
  const int64_t rows = v.manifest.value("rows", int64_t{0});
  if (rows == 0) problem("__rows", "the version has no rows");
  return json{{"dataset", v.label()},
              {"ok", problems == 0},
              {"rows", rows},
              {"problems", problems},
              {"report", report}};
}

Result<json> evaluate_step(api::Services& s, const flow::StepCall& c) {
  const std::string where = where_of(c);
  DLSYS_ASSIGN_OR_RETURN(std::string model_text, flow::with_text(c.with, "model", where));
  DLSYS_ASSIGN_OR_RETURN(std::string data_text, flow::with_text(c.with, "dataset", where));
  DLSYS_ASSIGN_OR_RETURN(std::string split, flow::with_text(c.with, "split", where, false));
  DLSYS_ASSIGN_OR_RETURN(std::string compare, flow::with_text(c.with, "compare", where, false));
  DLSYS_ASSIGN_OR_RETURN(std::string label, flow::with_text(c.with, "label", where, false));
  meta::MetaStore& store = s.store();
  DLSYS_ASSIGN_OR_RETURN(meta::ModelVersion mv,
                         flow::find_model_version(store, model_text, where + ".model"));
  DLSYS_ASSIGN_OR_RETURN(data::VersionRef dref, data::parse_version_ref(data_text));
  DLSYS_ASSIGN_OR_RETURN(data::VersionInfo dv, s.datasets().resolve(dref));
  if (split.empty()) split = dref.split;
  const std::string scratch = fmt::format("{}/pipelines/evaluate-{}-{}-{}", s.options().data_dir,
                                          c.run->id, c.step->name, c.item);
  DLSYS_RETURN_IF_ERROR(make_dirs(scratch));
  DLSYS_ASSIGN_OR_RETURN(Evaluation e, evaluate_model(s.objects().object_path(mv.sha256),
                                                      s.datasets(), dv, split, label, scratch));
  json out = {{"model", fmt::format("{}@{}", mv.model, mv.version)}, {"rows", e.rows}};
  for (auto it = e.metrics.begin(); it != e.metrics.end(); ++it)
    out["metrics." + it.key()] = it.value();
  // The version compared with: its metrics on the same rows as baseline.NAME. No such version
  // (no model at `production` yet) gives no baseline: a gate can test `== null`.
  json baseline = json::object();
  if (!compare.empty()) {
    auto cv = flow::find_model_version(store, compare, where + ".compare");
    if (cv.ok()) {
      DLSYS_ASSIGN_OR_RETURN(Evaluation b, evaluate_model(s.objects().object_path(cv->sha256),
                                                          s.datasets(), dv, split, label, scratch));
      baseline = b.metrics;
      out["baseline_model"] = fmt::format("{}@{}", cv->model, cv->version);
      for (auto it = b.metrics.begin(); it != b.metrics.end(); ++it)
        out["baseline." + it.key()] = it.value();
    } else if (cv.status().code() != StatusCode::kNotFound) {
      return cv.status();
    } else {
      out["baseline_model"] = nullptr;
    }
  }
  std::error_code ec;
  fs::remove_all(scratch, ec);
  // A tracked run of its own: the metrics, and lineage from the model and data versions.
  DLSYS_ASSIGN_OR_RETURN(meta::Experiment ex,
                         store.runs().ensure_experiment("pipeline-" + c.run->pipeline, c.who));
  DLSYS_ASSIGN_OR_RETURN(
      meta::Run run,
      store.runs().create_run(ex.id, fmt::format("evaluate {}", out["model"].get<std::string>()),
                              {{"model", out["model"]},
                               {"dataset", dv.label()},
                               {"split", split},
                               {"compare", compare}},
                              {{"pipeline", c.run->pipeline},
                               {"pipeline_run", std::to_string(c.run->id)},
                               {"step", c.step->name}},
                              c.who));
  std::vector<meta::MetricPoint> points;
  for (auto it = e.metrics.begin(); it != e.metrics.end(); ++it)
    points.push_back({it.key(), it.value().get<double>(), 0, 0});
  for (auto it = baseline.begin(); it != baseline.end(); ++it)
    points.push_back({"baseline." + it.key(), it.value().get<double>(), 0, 0});
  DLSYS_RETURN_IF_ERROR(store.runs().log_batch(run.id, points, {}, {}, c.who));
  DLSYS_RETURN_IF_ERROR(store.runs().update_run(run.id, "FINISHED", c.who).status());
  const std::string rid = std::to_string(run.id);
  DLSYS_RETURN_IF_ERROR(store.lineage().add_edge("model_version",
                                                 mv.model + "/" + std::to_string(mv.version), "run",
                                                 rid, "evaluated", c.who));
  DLSYS_RETURN_IF_ERROR(
      store.lineage().add_edge("dataset_version", dv.label(), "run", rid, "input", c.who));
  out["run"] = run.id;
  return out;
}

// Serves the version: as a canary at `weight` percent (1..99), or as the deployment's version
// (100, the default: the canary's promotion when it is that version; a deployment that follows
// an alias has the alias moved). A deployment that does not exist yet is created serving the
// version (nothing to canary against), following `alias` when given (set to the version).
Result<json> deploy_step(api::Services& s, serve::ModelServer& models, const flow::StepCall& c) {
  const std::string where = where_of(c);
  DLSYS_ASSIGN_OR_RETURN(std::string name, flow::with_text(c.with, "deployment", where));
  DLSYS_ASSIGN_OR_RETURN(std::string model_text, flow::with_text(c.with, "model", where));
  DLSYS_ASSIGN_OR_RETURN(std::string alias, flow::with_text(c.with, "alias", where, false));
  int64_t weight = 100;
  if (c.with.contains("weight") && !c.with["weight"].is_null()) {
    if (!c.with["weight"].is_number_integer() || c.with["weight"].get<int64_t>() < 1 ||
        c.with["weight"].get<int64_t>() > 100)
      return Status::Invalid("{}.weight must be a whole percent from 1 to 100, got {}", where,
                             c.with["weight"].dump());
    weight = c.with["weight"];
  }
  meta::MetaStore& store = s.store();
  DLSYS_ASSIGN_OR_RETURN(meta::ModelVersion mv,
                         flow::find_model_version(store, model_text, where + ".model"));
  json config =
      c.with.contains("config") && c.with["config"].is_object() ? c.with["config"] : json::object();
  auto existing = store.deployments().get(name);
  if (!existing.ok() && existing.status().code() != StatusCode::kNotFound) return existing.status();
  json out = {{"deployment", name}, {"version", mv.version}, {"weight", weight}};
  if (!existing.ok()) {
    // The first version of a deployment has nothing to canary against: it serves all traffic.
    out["created"] = true;
    out["weight"] = 100;
    meta::Deployment d;
    d.name = name;
    d.model = mv.model;
    d.ref = std::to_string(mv.version);
    d.config = config;
    if (!alias.empty()) {
      // It follows the alias, which names this version: a later promotion moves the alias.
      DLSYS_RETURN_IF_ERROR(
          store.registry().set_alias(mv.model, alias, mv.version, c.who).status());
      d.ref = alias;
    }
    DLSYS_RETURN_IF_ERROR(serve::parse_deployment_config(d.config).status());
    DLSYS_ASSIGN_OR_RETURN(meta::Deployment stored, store.deployments().create(d, c.who));
    Status st = models.apply(stored);
    if (!st.ok()) {
      (void)store.deployments().remove(name, c.who);
      (void)models.remove(name);
      return st;
    }
    return out;
  }
  meta::Deployment before = *existing;
  meta::Deployment d = before;
  if (!config.empty())
    for (auto it = config.begin(); it != config.end(); ++it) d.config[it.key()] = it.value();
  // Checked before any of it is read: an error names the field.
  DLSYS_RETURN_IF_ERROR(
      serve::parse_deployment_config(d.config).status().with_context(where + ".config"));
  const json canary = d.config.value("canary", json());
  if (weight == 100 && canary.is_object() && canary.value("version", int64_t{0}) == mv.version &&
      canary.value("model", "") == mv.model) {
    DLSYS_RETURN_IF_ERROR(models.promote(name, c.who).status());
    out["promoted"] = true;
    return out;
  }
  if (weight == 100) {
    d.model = mv.model;
    // A deployment that follows an alias of this model keeps following it: the alias moves.
    if (!d.ref.empty() && !std::all_of(d.ref.begin(), d.ref.end(), ::isdigit) &&
        d.model == before.model) {
      DLSYS_RETURN_IF_ERROR(
          store.registry().set_alias(mv.model, d.ref, mv.version, c.who).status());
      d.config.erase("canary");
    } else {
      d.ref = std::to_string(mv.version);
      d.config.erase("canary");
    }
  } else {
    d.config["canary"] = {{"model", mv.model}, {"version", mv.version}, {"weight", weight}};
  }
  if (d.model == before.model && d.ref == before.ref && d.config == before.config) return out;
  DLSYS_RETURN_IF_ERROR(serve::parse_deployment_config(d.config).status());
  d.updated_at = before.updated_at;
  DLSYS_RETURN_IF_ERROR(models.apply(d));
  auto stored = store.deployments().update(d, c.who);
  if (!stored.ok()) {
    (void)models.apply(before);
    return stored.status();
  }
  return out;
}

}  // namespace

Result<Evaluation> evaluate_model(const std::string& model_path, const data::DatasetStore& store,
                                  const data::VersionInfo& v, const std::string& split,
                                  const std::string& label, const std::string& scratch_dir) {
  EngineOptions eo;
  eo.model = model_path;
  eo.threads = 1;
  DLSYS_ASSIGN_OR_RETURN(std::unique_ptr<Session> session, open_session(eo));
  const ModelMetadata meta = ModelMetadata::read(session->graph());
  DLSYS_ASSIGN_OR_RETURN(data::Schema schema, data::Schema::from_json(v.manifest.at("schema")));
  // The label: named, or the one column that is neither a feature nor the store's own.
  std::string label_name = label;
  if (label_name.empty()) {
    std::vector<std::string> others;
    for (const auto& col : schema.columns)
      if (col.name.rfind("__", 0) != 0 &&
          std::find(meta.feature_names.begin(), meta.feature_names.end(), col.name) ==
              meta.feature_names.end())
        others.push_back(col.name);
    if (others.size() != 1 || meta.feature_names.empty())
      return Status::Invalid(
          "cannot tell the label column of {} ({} columns are not the model's features); name it "
          "with `label:`",
          v.label(), others.size());
    label_name = others[0];
  }
  const int label_col = schema.index(label_name);
  if (label_col < 0)
    return Status::Invalid("{} has no column '{}' to evaluate against", v.label(), label_name);
  int64_t rows = 0, correct = 0;
  double se = 0, ae = 0;
  const std::string csv = scratch_dir + "/rows.csv";
  Status st = data::for_each_shard(
      store, v, split, {}, nullptr, [&](int64_t, const data::RowBatch& b) -> Status {
        for (int64_t start = 0; start < b.rows; start += 4096) {
          const int64_t end = std::min(b.rows, start + 4096);
          DLSYS_RETURN_IF_ERROR(write_file_atomic(csv, data::csv_text(b, true, start, end)));
          DLSYS_ASSIGN_OR_RETURN(auto inputs, read_rows(csv, session->graph()));
          std::vector<Tensor> outputs;
          DLSYS_RETURN_IF_ERROR(session->run(inputs, &outputs));
          const std::vector<Prediction> p = predict(meta, outputs.at(0));
          if (static_cast<int64_t>(p.size()) != end - start)
            return Status::Invalid("the model gave {} predictions for {} rows", p.size(),
                                   end - start);
          for (int64_t r = start; r < end; ++r) {
            const Prediction& q = p[static_cast<size_t>(r - start)];
            const std::string truth = b.value_text(r, label_col);
            if (q.class_id >= 0) {
              correct += truth == q.class_name || truth == std::to_string(q.class_id);
            } else {
              char* endp = nullptr;
              const double y = std::strtod(truth.c_str(), &endp);
              if (truth.empty() || *endp != '\0')
                return Status::Invalid("row {}: label '{}' is not a number", r, truth);
              const double d = (q.values.empty() ? 0.0 : q.values[0]) - y;
              se += d * d;
              ae += std::fabs(d);
            }
            ++rows;
          }
        }
        return Status::OK();
      });
  DLSYS_RETURN_IF_ERROR(st.with_context("evaluating " + model_path + " on " + v.label()));
  if (rows == 0)
    return Status::Invalid("{}{} has no rows to evaluate on", v.label(),
                           split.empty() ? "" : ":" + split);
  Evaluation e;
  e.rows = rows;
  if (meta.is_classifier() || correct > 0)
    e.metrics["accuracy"] = static_cast<double>(correct) / static_cast<double>(rows);
  else
    e.metrics = {{"mse", se / static_cast<double>(rows)}, {"mae", ae / static_cast<double>(rows)}};
  return e;
}

void add_pipeline_step_handlers(api::Services& services, serve::ModelServer& models,
                                flow::PipelineServiceOptions* o) {
  api::Services* s = &services;
  serve::ModelServer* m = &models;
  o->handlers["data.push"] = [s](const flow::StepCall& c) { return push_step(*s, c); };
  o->handlers["data.validate"] = [s](const flow::StepCall& c) { return validate_step(*s, c); };
  o->handlers["evaluate"] = [s](const flow::StepCall& c) { return evaluate_step(*s, c); };
  o->handlers["deploy"] = [s, m](const flow::StepCall& c) { return deploy_step(*s, *m, c); };
  o->dataset_version = [s](const std::string& text) -> Result<flow::DatasetVersion> {
    DLSYS_ASSIGN_OR_RETURN(data::VersionRef ref, data::parse_version_ref(text));
    DLSYS_ASSIGN_OR_RETURN(data::VersionInfo v, s->datasets().resolve(ref));
    return flow::DatasetVersion{v.label(), v.id};
  };
  o->objects = &services.objects();
}

}  // namespace dlsys::cli
