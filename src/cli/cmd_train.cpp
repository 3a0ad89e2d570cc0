// `dlsys train SPEC.yaml [--out DIR] [--json]`: trains the spec's model, shows progress (a bar
// on a terminal, one JSON object per line with --json), writes the run directory (metrics.jsonl,
// spec.yaml, model.onnx) and, with --server or --data-dir, records the run in the tracking
// server: params, per-epoch metrics and the model artifact.
#include <unistd.h>

#include <cstdio>
#include <variant>

#include "api/client.h"
#include "api/run_logger.h"
#include "api/services.h"
#include "cli/commands.h"
#include "core/json_util.h"
#include "train/trainer.h"

namespace dlsys::cli {
namespace {

struct TrainArgs {
  std::string spec, out, server, data_dir, experiment, token, resume;
  bool json = false;
  int64_t epochs = 0, log_every = 10, checkpoint_every = -1;
  int threads = 0;
};

void progress_bar(const train::TrainEvent& e) {
  if (const auto* s = std::get_if<train::StepEvent>(&e)) {
    int64_t total = s->total_steps;
    int width = 24, fill = static_cast<int>(width * (s->step + 1) / std::max<int64_t>(1, total));
    std::fprintf(stderr,
                 "\repoch %lld [%s%s] step %lld/%lld  loss %.4f  %.0f samples/s  ETA %.0fs   ",
                 static_cast<long long>(s->epoch), std::string(fill, '#').c_str(),
                 std::string(width - fill, '.').c_str(), static_cast<long long>(s->step + 1),
                 static_cast<long long>(total), s->loss, s->samples_per_s, s->eta_s);
  } else if (const auto* v = std::get_if<train::EvalEvent>(&e)) {
    std::fprintf(stderr, "\repoch %lld: train loss %.4f  val loss %.4f",
                 static_cast<long long>(v->epoch), v->train_loss, v->metrics.val_loss);
    if (v->metrics.val_accuracy)
      std::fprintf(stderr, "  val accuracy %.4f", *v->metrics.val_accuracy);
    std::fprintf(stderr, "%40s\n", "");
  }
}

int run_train(const TrainArgs& a) {
  auto spec = train::load_train_spec(a.spec);
  if (!spec.ok()) return fail(spec.status().message());
  if (a.epochs > 0) spec->epochs = a.epochs;
  if (a.checkpoint_every >= 0) spec->checkpoint_every = a.checkpoint_every;
  std::string out = a.out.empty() ? "runs/" + spec->name : a.out;
  if (!a.resume.empty()) {
    if (!a.out.empty() && a.out != a.resume)
      return fail("--resume DIR continues the run in DIR; drop --out or make it the same folder");
    out = a.resume;
  }

  // Tracking, when a server or a data directory is named.
  std::unique_ptr<api::Services> backend;
  std::unique_ptr<api::ApiClient> client;
  std::unique_ptr<api::RunLogger> logger;
  std::string server = a.server;
  if (server.empty() && a.data_dir.empty())
    if (const char* s = std::getenv("DLSYS_SERVER")) server = s;
  if (!server.empty() || !a.data_dir.empty()) {
    if (!server.empty()) {
      auto c = api::connect_http(server, a.token);
      if (!c.ok()) return fail(c.status().message());
      client = std::move(c).value();
    } else {
      api::ServicesOptions bo;
      bo.data_dir = a.data_dir;
      bo.db_connections = 2;
      auto b = api::Services::open(bo);
      if (!b.ok()) return fail(b.status().message());
      backend = std::move(b).value();
      client = api::connect_local(*backend);
    }
    std::map<std::string, std::string> params = {{"epochs", std::to_string(spec->epochs)},
                                                 {"batch_size", std::to_string(spec->batch_size)},
                                                 {"lr", fmt::format("{}", spec->schedule.lr)},
                                                 {"seed", std::to_string(spec->seed)},
                                                 {"loss", spec->loss},
                                                 {"layers", std::to_string(spec->layers.size())}};
    auto l = api::RunLogger::start(*client, a.experiment.empty() ? spec->name : a.experiment,
                                   spec->name, params, {{"spec", a.spec}});
    if (!l.ok()) return fail(l.status().with_context("tracking").message());
    logger = std::move(l).value();
  }

  train::TrainOptions o;
  o.out_dir = out;
  o.threads = a.threads;
  o.resume = !a.resume.empty();
  o.datasets_dir = (a.data_dir.empty() ? api::default_data_dir() : a.data_dir) + "/datasets";
  o.step_event_every = a.log_every;
  bool tty = isatty(STDERR_FILENO);
  o.on_event = [&](const train::TrainEvent& e) {
    const auto* eval = std::get_if<train::EvalEvent>(&e);
    if (a.json) {
      std::printf("%s\n", json_dump_line(train::to_json(e)).c_str());
      std::fflush(stdout);
    } else if (tty || eval) {
      progress_bar(e);
    }
    if (logger && eval) {
      (void)logger->log_metric("train_loss", eval->train_loss, eval->step);
      (void)logger->log_metric("val_loss", eval->metrics.val_loss, eval->step);
      if (eval->metrics.val_accuracy)
        (void)logger->log_metric("val_accuracy", *eval->metrics.val_accuracy, eval->step);
      (void)logger->flush();
    }
  };
  auto r = train::train_model(*spec, o);
  if (!r.ok()) {
    if (logger) (void)logger->finish("FAILED");
    return fail(r.status().message());
  }
  if (logger) {
    Status st = logger->log_artifact("model.onnx", r->model_path);
    // Lineage: the dataset versions this run read.
    for (const std::string& d : {r->dataset, r->validation_dataset}) {
      if (!st.ok() || d.empty()) continue;
      auto e =
          client->call("POST", "/api/v1/lineage",
                       {{"src", {{"kind", "dataset_version"}, {"id", d.substr(0, d.find(':'))}}},
                        {"dst", {{"kind", "run"}, {"id", std::to_string(logger->run_id())}}},
                        {"relation", d.substr(d.find(':') + 1)}});
      if (!e.ok()) st = e.status();
    }
    if (st.ok()) st = logger->finish("FINISHED");
    if (!st.ok()) return fail(st.with_context("tracking").message());
  }
  if (!a.json) {
    std::printf("trained %s: %lld epochs, %lld steps in %.1f s", spec->name.c_str(),
                static_cast<long long>(r->epochs), static_cast<long long>(r->steps), r->seconds);
    if (spec->loss == "cross_entropy") std::printf(", validation accuracy %.4f", r->val_accuracy);
    std::printf("\nmodel: %s\n", r->model_path.c_str());
    if (a.threads == 0 && r->threads == 1)
      std::printf("threads: 1 (a small model: %.0f MFLOP per step; --threads N to choose)\n",
                  r->step_flops / 1e6);
    if (logger)
      std::printf("tracked as run %lld (%s)\n", static_cast<long long>(logger->run_id()),
                  client->where().c_str());
  }
  return 0;
}

}  // namespace

void add_train(CLI::App& app, int* rc) {
  auto a = std::make_shared<TrainArgs>();
  CLI::App* c = app.add_subcommand("train", "Train the model of a YAML spec and export it as ONNX");
  c->footer(
      "Every field of the spec, with its type, default and an example: docs/spec.md. Examples: "
      "examples/digits/*.yaml.");
  c->add_option("spec", a->spec, "Training spec, e.g. examples/digits/mlp.yaml")
      ->required()
      ->check(CLI::ExistingFile);
  c->add_option("--out", a->out, "Run directory (default runs/<spec name>)");
  c->add_flag("--json", a->json, "One JSON object per line: step, eval and done events");
  c->add_option("--epochs", a->epochs, "Override train.epochs");
  c->add_option("--resume", a->resume, "Continue the run in DIR from its newest checkpoint");
  c->add_option("--checkpoint-every", a->checkpoint_every,
                "Steps between checkpoints (overrides train.checkpoint_every; 0: only at the end)");
  c->add_option("--log-every", a->log_every, "Steps between step events")->capture_default_str();
  c->add_option("--threads", a->threads,
                "Threads (default: 1 for a model under 100 MFLOP per step, else all cores)");
  c->add_option("--server", a->server, "Record the run in this tracking server (or $DLSYS_SERVER)");
  c->add_option("--data-dir", a->data_dir, "Record the run in this data directory (no server)");
  c->add_option("--experiment", a->experiment, "Experiment to record in (default: the spec name)");
  c->add_option("--token", a->token, "API token for --server");
  c->callback([a, rc] { *rc = run_train(*a); });
}

}  // namespace dlsys::cli
