// `dlsys predict MODEL DATASET --output NAME`: batch prediction. A registered model version
// (name@version, name@alias) predicts every row of a dataset version (name@version[:split]) on
// the engine, in batches, shard by shard; the predictions become a new version of the dataset
// NAME with lineage (model version -> output, input version -> output). What the predict job of
// the training service runs (docs/jobs.md).
//
// Resumable by shard: the work folder (--work, default a folder named after the three) keeps the
// model file, the predictions of each finished shard (parts/part-N.csv, each written atomically)
// and state.json naming what it predicts; run again with the same folder, a prediction that was
// killed goes on with the shards it had not finished and reads no finished shard again.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "api/client.h"
#include "cli/client_options.h"
#include "cli/commands.h"
#include "cli/dataset_cache.h"
#include "cli/engine_options.h"
#include "cli/model_fetch.h"
#include "cli/tabular_input.h"
#include "core/file_util.h"
#include "core/json_get.h"
#include "core/sha256.h"
#include "data/export.h"
#include "graph/model_metadata.h"
#include "graph/session.h"

namespace dlsys::cli {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

struct PredictArgs : ClientArgs {
  std::string model, dataset, output, work, message;
  int64_t batch = 4096;
  int threads = 0;
  int64_t run_id = 0;
};

// The input version, readable locally: the data directory's store, or the cache of a server's.
struct Input {
  std::unique_ptr<data::DatasetStore> store;
  data::VersionInfo version;
  std::string split;
  std::string label;  // as the server names it: "digits@v3"
};

Result<Input> open_input(Connection& c, const std::string& text) {
  DLSYS_ASSIGN_OR_RETURN(data::VersionRef ref, data::parse_version_ref(text));
  Input in;
  in.split = ref.split;
  if (c.backend) {
    DLSYS_ASSIGN_OR_RETURN(in.store, data::DatasetStore::open(c.data_dir + "/datasets"));
    DLSYS_ASSIGN_OR_RETURN(in.version, in.store->resolve(ref));
    in.label = in.version.label();
    return in;
  }
  const std::string dir = cache_dir_of(c.client->where());
  DLSYS_ASSIGN_OR_RETURN(in.store, data::DatasetStore::open(dir + "/datasets"));
  DLSYS_ASSIGN_OR_RETURN(
      in.version, cache_server_version(*c.client, *in.store, dir + "/index", ref, &in.label));
  return in;
}

// Predicts one shard's rows in batches of `batch` and returns them as CSV lines: the kept
// input columns, then the prediction columns (`header`: their names).
Result<std::string> predict_rows(Session& s, const data::RowBatch& rows, int64_t batch,
                                 const std::vector<int>& kept, const std::string& scratch,
                                 std::string* header) {
  const ModelMetadata meta = ModelMetadata::read(s.graph());
  std::string out;
  for (int64_t start = 0; start < rows.rows; start += batch) {
    const int64_t end = std::min(rows.rows, start + batch), n = end - start;
    DLSYS_RETURN_IF_ERROR(write_file_atomic(scratch, data::csv_text(rows, true, start, end)));
    DLSYS_ASSIGN_OR_RETURN(auto inputs, read_rows(scratch, s.graph()));
    std::vector<Tensor> outputs;
    DLSYS_RETURN_IF_ERROR(s.run(inputs, &outputs));
    const std::vector<Prediction> p = predict(meta, outputs.at(0));
    if (static_cast<int64_t>(p.size()) != n)
      return Status::Invalid(
          "the model gave {} predictions for {} rows: its first output is not "
          "one row per input row",
          p.size(), n);
    if (header->empty()) {
      for (int c : kept) *header += data::csv_field(rows.schema.columns[c].name) + ",";
      if (!p.empty() && p[0].class_id >= 0) {
        *header += "prediction,prediction_id,probability";
      } else {
        const size_t n = p.empty() ? 1 : p[0].values.size();
        for (size_t k = 0; k < n; ++k)
          *header += (k ? "," : "") +
                     (n == 1 ? std::string("prediction") : "prediction_" + std::to_string(k));
      }
    }
    for (int64_t r = 0; r < n; ++r) {
      for (int c : kept) out += data::csv_field(rows.value_text(start + r, c)) + ",";
      const Prediction& q = p[r];
      if (q.class_id >= 0) {
        out +=
            fmt::format("{},{},{:.9g}", data::csv_field(q.class_name), q.class_id, q.probability);
      } else {
        for (size_t k = 0; k < q.values.size(); ++k)
          out += fmt::format("{}{:.9g}", k ? "," : "", q.values[k]);
      }
      out += '\n';
    }
  }
  return out;
}

std::string part_path(const std::string& work, int64_t shard) {
  return fmt::format("{}/parts/part-{:05d}.csv", work, shard);
}

Status run_predict(Connection& c, const PredictArgs& a) {
  const auto t0 = std::chrono::steady_clock::now();
  if (a.batch < 1) return Status::Invalid("--batch {} must be 1 or more", a.batch);
  DLSYS_RETURN_IF_ERROR(data::DatasetStore::check_name(a.output).with_context("--output"));
  DLSYS_ASSIGN_OR_RETURN(Input in, open_input(c, a.dataset));
  std::string work = a.work;
  if (work.empty()) {
    work = data_dir_or_default(c.backend ? c.data_dir : "") + "/predict/" + a.output;
  }
  DLSYS_RETURN_IF_ERROR(make_dirs(work + "/parts"));
  DLSYS_ASSIGN_OR_RETURN(ModelFile m, fetch_model_version(*c.client, a.model, work));
  // What the folder predicts: a folder of another prediction is not mixed into this one.
  const json state = {{"model", m.label()},
                      {"input", in.version.id},
                      {"split", in.split},
                      {"output", a.output},
                      {"batch", a.batch}};
  const std::string state_path = work + "/state.json";
  if (auto old = read_file(state_path); old.ok()) {
    json was = json::parse(*old, nullptr, false);
    if (was != state)
      return Status::FailedPrecondition(
          "the work folder {} holds another prediction ({}); give another --work or remove it",
          work, old->substr(0, 200));
  } else {
    DLSYS_RETURN_IF_ERROR(write_file_atomic(state_path, state.dump(2)));
  }
  EngineOptions eo;
  eo.model = m.path;
  eo.threads = a.threads;
  DLSYS_ASSIGN_OR_RETURN(std::unique_ptr<Session> session, open_session(eo));
  // Input columns that are not the model's features (ids, labels) go along with the predictions.
  const ModelMetadata meta = ModelMetadata::read(session->graph());
  DLSYS_ASSIGN_OR_RETURN(data::Schema schema,
                         data::Schema::from_json(in.version.manifest.at("schema")));
  std::vector<int> kept;
  {
    int index = 0;
    for (const auto& col : schema.columns) {
      if (col.name.rfind("__", 0) == 0) continue;
      const bool feature = std::find(meta.feature_names.begin(), meta.feature_names.end(),
                                     col.name) != meta.feature_names.end();
      if (!meta.feature_names.empty() && !feature && col.name.rfind("prediction", 0) != 0)
        kept.push_back(index);
      ++index;
    }
  }
  const int64_t shards = static_cast<int64_t>(in.version.manifest.at("shards").size());
  int64_t done_before = 0, rows = 0;
  std::string header;
  const bool tty = ::isatty(STDERR_FILENO) && !a.json && !a.quiet;
  Status st = data::for_each_shard(
      *in.store, in.version, in.split, {},
      [&](int64_t shard) {
        const bool done = fs::exists(part_path(work, shard));
        done_before += done;
        return !done;
      },
      [&](int64_t shard, const data::RowBatch& b) -> Status {
        std::string head;
        DLSYS_ASSIGN_OR_RETURN(std::string lines, predict_rows(*session, b, a.batch, kept,
                                                               work + "/input.csv", &head));
        if (!head.empty()) header = head;
        rows += b.rows;
        if (tty)
          std::fprintf(stderr, "\rpredict %s: shard %lld of %lld", in.label.c_str(),
                       static_cast<long long>(shard + 1), static_cast<long long>(shards));
        // The shard is done once its part is in place (written whole, then renamed).
        return write_file_atomic(part_path(work, shard), head + "\n" + lines);
      });
  if (tty) std::fprintf(stderr, "\n");
  DLSYS_RETURN_IF_ERROR(st.with_context("predicting " + in.label + " with " + m.label()));
  ::unlink((work + "/input.csv").c_str());
  // Every part, in shard order, as one CSV (the header once). A part's first line is its header,
  // empty for a shard without rows (of the split).
  std::string all, body;
  for (int64_t shard = 0; shard < shards; ++shard) {
    DLSYS_ASSIGN_OR_RETURN(std::string part, read_file(part_path(work, shard)));
    const size_t nl = part.find('\n');
    if (nl == std::string::npos)
      return Status::Internal("{} has no header line", part_path(work, shard));
    if (nl == 0) continue;
    if (all.empty()) all = part.substr(0, nl + 1);
    body += part.substr(nl + 1);
  }
  if (body.empty()) return Status::Invalid("{} has no rows to predict", in.label);
  all += body;
  const std::string csv = work + "/predictions.csv";
  DLSYS_RETURN_IF_ERROR(write_file_atomic(csv, all));
  const std::string message = a.message.empty()
                                  ? fmt::format("predictions of {} on {}{}", m.label(), in.label,
                                                in.split.empty() ? "" : ":" + in.split)
                                  : a.message;
  const std::string target = fmt::format(
      "/api/v1/datasets/{}/versions?format=csv&split=1,0,0&header=yes&filename=predictions.csv"
      "&message={}",
      enc(a.output), enc(message));
  DLSYS_ASSIGN_OR_RETURN(json pushed, c.client->send_file("POST", target, csv, nullptr));
  DLSYS_ASSIGN_OR_RETURN(std::string out_label,
                         json_get<std::string>(pushed, "label", answer_to("POST", target)));
  DLSYS_ASSIGN_OR_RETURN(const int64_t total_rows,
                         json_get<int64_t>(pushed, "rows", answer_to("POST", target)));
  // Lineage: the model version and the input version -> the predictions (and the job's run).
  std::vector<json> edges = {
      {{"src", {{"kind", "model_version"}, {"id", m.name + "/" + std::to_string(m.version)}}},
       {"dst", {{"kind", "dataset_version"}, {"id", out_label}}},
       {"relation", "predicted"}},
      {{"src", {{"kind", "dataset_version"}, {"id", in.label}}},
       {"dst", {{"kind", "dataset_version"}, {"id", out_label}}},
       {"relation", in.split.empty() ? "input" : in.split}}};
  if (a.run_id > 0)
    edges.push_back({{"src", {{"kind", "run"}, {"id", std::to_string(a.run_id)}}},
                     {"dst", {{"kind", "dataset_version"}, {"id", out_label}}},
                     {"relation", "produced"}});
  for (const json& e : edges)
    DLSYS_RETURN_IF_ERROR(c.client->call("POST", "/api/v1/lineage", e).status());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (a.run_id > 0) {
    const json metrics = json::array(
        {{{"key", "predict.rows"}, {"value", total_rows}, {"step", 0}, {"timestamp", now_ms()}},
         {{"key", "predict.rows_per_second"},
          {"value", static_cast<double>(rows) / std::max(seconds, 1e-9)},
          {"step", 0},
          {"timestamp", now_ms()}}});
    DLSYS_RETURN_IF_ERROR(
        c.client
            ->call("POST", fmt::format("/api/v1/runs/{}/log-batch", a.run_id),
                   {{"metrics", metrics},
                    // What a pipeline's predict step gives as its output.
                    {"tags", json::array({{{"key", "predict.output"}, {"value", out_label}}})}})
            .status());
  }
  const json report = {{"model", m.label()},
                       {"input", in.label + (in.split.empty() ? "" : ":" + in.split)},
                       {"output", out_label},
                       {"rows", total_rows},
                       {"shards", shards},
                       {"shards_done_before", done_before},
                       {"rows_predicted_now", rows},
                       {"seconds", seconds},
                       {"unchanged", pushed.value("unchanged", false)},
                       {"work", work}};
  if (a.json) {
    print_json(report);
    return Status::OK();
  }
  std::printf("predicted %lld rows of %s with %s in %.2f s: %lld shard%s",
              static_cast<long long>(total_rows), report["input"].get<std::string>().c_str(),
              m.label().c_str(), seconds, static_cast<long long>(shards), shards == 1 ? "" : "s");
  if (done_before > 0)
    std::printf(" (%lld done before, not read again)", static_cast<long long>(done_before));
  std::printf(
      "\npredictions: %s%s\n", out_label.c_str(),
      pushed.value("unchanged", false) ? " (unchanged: the same predictions as before)" : "");
  return Status::OK();
}

}  // namespace

void add_predict(CLI::App& app, int* rc) {
  auto a = std::make_shared<PredictArgs>();
  CLI::App* c = app.add_subcommand(
      "predict",
      "Batch prediction: a registered model version over a dataset version, written as a new "
      "dataset version with lineage");
  c->footer(
      "Resumable: run it again with the same --work folder and it goes on with the shards it "
      "had not finished. Kept with the predictions: the input's columns that are not the "
      "model's features (ids, labels). docs/jobs.md (predict jobs).");
  add_client_options(c, a.get());
  c->add_option("model", a->model, "The model version: name@version, name@alias or name")
      ->required();
  c->add_option("dataset", a->dataset, "The input: name@version[:split], e.g. digits@3:test")
      ->required();
  c->add_option("--output,-o", a->output, "The dataset the predictions become a version of")
      ->required();
  c->add_option("--batch", a->batch, "Rows per engine run")->capture_default_str();
  c->add_option("--threads", a->threads, "Engine threads (0: all cores)")->capture_default_str();
  c->add_option("--work", a->work,
                "Folder for the model file and finished shards (default "
                "DATA_DIR/predict/<output>)");
  c->add_option("--message,-m", a->message, "The new version's message");
  c->add_option("--run-id", a->run_id, "Record into this run (a predict job's)");
  c->callback([a, rc] {
    auto conn = connect(*a);
    if (!conn.ok()) {
      *rc = fail(conn.status().message());
      return;
    }
    Status st = with_where(run_predict(*conn, *a), *conn);
    *rc = st.ok() ? 0 : fail(st.message());
  });
}

}  // namespace dlsys::cli
