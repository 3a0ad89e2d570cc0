// `dlsys server`: the API server over a data directory (SQLite + objects/ by default, or
// PostgreSQL with --meta), until SIGTERM/SIGINT, which drain in-flight requests first.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <thread>

#include "api/http_server.h"
#include "api/services.h"
#include "api/web_routes.h"
#include "cli/commands.h"
#include "cli/pipeline_steps.h"
#include "flow/pipeline_routes.h"
#include "flow/pipeline_service.h"
#include "graph/model_metadata.h"
#include "graph/onnx_import.h"
#include "jobs/job_routes.h"
#include "jobs/job_service.h"
#include "jobs/k8s_executor.h"
#include "jobs/search_routes.h"
#include "jobs/search_service.h"
#include "monitor/monitor_routes.h"
#include "monitor/monitor_service.h"
#include "serve/model_server.h"
#include "serve/serve_routes.h"

namespace dlsys::cli {

Status validate_onnx_model(const std::string& path) {
  return import_onnx_file(path).status();
}

namespace {

struct ServerArgs {
  std::string data_dir, host = "127.0.0.1", meta, access_log = "-";
  std::optional<std::string> web_dir;  // unset: api::default_web_dir()
  int port = 8080, workers = 8, io_threads = 1, io_spin_us = 50;
  int64_t max_body_mb = 16, max_upload_mb = 8192, max_connections = 10000, memory_budget_mb = 1024;
  int64_t serve_memory_mb = 0;
  int64_t job_threads = 0, job_memory_mb = 0, job_stop_grace_s = 10, job_heartbeat_timeout_s = 8;
  double core_hour_price = 0;
  bool no_jobs = false, no_monitor = false;
  int64_t monitor_interval_ms = 2000;
  // Where jobs run: "local" (child processes) or "kubernetes" (a Job per attempt, docs/deploy.md).
  std::string job_executor = "local", kubectl = "kubectl", k8s_server_url;
  // mount "": the data directory's own path; server_url "": this server's URL once it listens.
  jobs::K8sJobOptions k8s = [] {
    jobs::K8sJobOptions o;
    o.mount.clear();
    o.server_url.clear();
    return o;
  }();
  int64_t k8s_poll_ms = 2000;
  int64_t run_timeout_s = api::kDefaultRunTimeoutMs / 1000;
  bool auth = false;
};

bool is_loopback(const std::string& host) {
  return host == "127.0.0.1" || host == "::1" || host == "localhost" || host.rfind("127.", 0) == 0;
}

int run_server(const ServerArgs& a) {
  api::ServicesOptions bo;
  bo.data_dir = a.data_dir;
  bo.meta_url = a.meta;
  bo.auth = a.auth || !is_loopback(a.host);
  bo.db_connections = static_cast<size_t>(a.workers) + 2;
  bo.model_validator = validate_onnx_model;
  bo.run_timeout_ms = a.run_timeout_s * 1000;
  bo.max_upload_bytes = a.max_upload_mb << 20;  // a staged dataset push, all its files together
  auto backend = api::Services::open(bo);
  if (!backend.ok()) return fail(backend.status().message());
  api::ServerOptions so;
  so.host = a.host == "localhost" ? "127.0.0.1" : a.host;
  so.port = a.port;
  so.workers = a.workers;
  so.io_threads = a.io_threads;
  so.spin_us = a.io_spin_us;
  so.max_body = static_cast<uint64_t>(a.max_body_mb) << 20;
  so.max_upload = static_cast<uint64_t>(a.max_upload_mb) << 20;
  std::FILE* log = nullptr;
  if (a.access_log == "-")
    log = stdout;
  else if (a.access_log != "off") {
    log = std::fopen(a.access_log.c_str(), "a");
    if (!log) return fail(fmt::format("cannot open --access-log '{}' for appending", a.access_log));
  }
  so.access_log = log;
  so.max_connections = static_cast<size_t>(a.max_connections);
  so.memory_budget = static_cast<uint64_t>(a.memory_budget_mb) << 20;
  api::Services* be = backend->get();
  // Housekeeping: runs whose process stopped without ending them become FAILED (reads of runs
  // sweep too), and temporary files of requests that died are removed. Often enough that a run
  // is failed within a fifth of the timeout after it expires.
  so.housekeeping = [be] {
    (void)be->store().runs().fail_stale_runs();
    be->sweep_temp_files();
  };
  if (a.run_timeout_s > 0)
    so.housekeeping_interval = std::min(
        so.housekeeping_interval, std::chrono::seconds(std::max<int64_t>(1, a.run_timeout_s / 5)));
  // Serving: the deployments stored in this data directory are loaded before the server listens
  // (one that fails to load is reported and left out; GET /v2/health/ready says so).
  serve::ModelServerOptions mo;
  mo.memory_budget_bytes = a.serve_memory_mb << 20;
  mo.sample_dir = be->options().data_dir + "/samples";  // request sampling (docs/formats.md)
  serve::ModelServer models(be->store(), be->objects(), mo);
  serve::add_serve_routes(be->router(), models, be->store());
  Status started = models.start();
  if (!started.ok()) return fail(started.message());
  // The training service: jobs queued in the metadata store run as child processes of this
  // server within --job-threads and --job-memory-mb (docs/jobs.md).
  jobs::JobServiceOptions jo;
  jo.work_dir = be->options().data_dir + "/jobs";
  jo.data_dir = be->options().data_dir;
  jo.objects = &be->objects();
  jo.validate_model = validate_onnx_model;
  if (bo.auth) jo.tokens = &be->store().tokens();
  jo.scheduler.threads =
      a.job_threads > 0
          ? a.job_threads
          : std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()));
  jo.scheduler.memory_bytes = a.job_memory_mb << 20;
  jo.stop_grace = std::chrono::seconds(a.job_stop_grace_s);
  jo.heartbeat_timeout = std::chrono::seconds(a.job_heartbeat_timeout_s);
  // Kubernetes: each attempt a Job that mounts the data directory's volume at the same path, so
  // that its log, heartbeat and checkpoints are where this server reads them.
  std::unique_ptr<jobs::KubernetesExecutor> k8s_executor;
  if (a.job_executor == "kubernetes") {
    jobs::KubernetesExecutorOptions ko;
    ko.job = a.k8s;
    std::error_code ec;
    if (ko.job.mount.empty())
      ko.job.mount = std::filesystem::absolute(be->options().data_dir, ec).string();
    ko.job.checkpoint_every = jo.checkpoint_every;
    ko.job.stop_grace_seconds = std::max<int64_t>(1, a.job_stop_grace_s);
    ko.kubectl = a.kubectl;
    ko.poll_interval = std::chrono::milliseconds(a.k8s_poll_ms);
    // kubectl's files (a manifest with a token, its answers) stay on this server's own disk (the
    // system's temp folder), not on the volume the job pods mount.
    k8s_executor = std::make_unique<jobs::KubernetesExecutor>(ko);
    jo.executor = k8s_executor.get();
  }
  // Pipelines (docs/pipelines.md): their job steps are jobs of this service, which tells the
  // runner as soon as one has settled.
  std::unique_ptr<jobs::JobService> job_service;
  std::unique_ptr<flow::PipelineService> pipelines;
  if (!a.no_jobs) {
    flow::PipelineServiceOptions po;
    add_pipeline_step_handlers(*be, models, &po);
    po.validate_model = validate_onnx_model;
    po.wake_jobs = [&job_service] {
      if (job_service) job_service->wake();
    };
    pipelines = std::make_unique<flow::PipelineService>(be->store(), std::move(po));
    jo.on_attempt_settled = [p = pipelines.get()](int64_t) { p->wake(); };
  }
  if (!a.no_jobs) job_service = std::make_unique<jobs::JobService>(be->store(), jo);
  jobs::JobRoutesOptions jro;
  jro.work_dir = jo.work_dir;
  jro.validate = check_job_spec;
  jro.core_hour_price = a.core_hour_price;
  // A command job runs any program as the server's user: with tokens required, only admins
  // may submit one (an editor's would hold the server's files).
  jro.command_jobs_need_admin = bo.auth;
  if (job_service) jro.wake = [svc = job_service.get()] { svc->wake(); };
  jobs::add_job_routes(be->router(), be->store(), jro);
  // Hyperparameter searches: their trials are jobs of this service (docs/search.md).
  jobs::SearchRoutesOptions sro;
  sro.validate = check_search_trial;
  sro.wake = jro.wake;
  jobs::add_search_routes(be->router(), be->store(), sro);
  if (pipelines) {
    flow::add_pipeline_routes(be->router(), *pipelines, be->store(),
                              flow::PipelineRoutesOptions{jo.work_dir, bo.auth});
  }
  std::unique_ptr<jobs::SearchService> search_service;
  if (job_service)
    search_service = std::make_unique<jobs::SearchService>(
        be->store(), jobs::SearchServiceOptions{&be->objects(), validate_onnx_model});
  // Monitoring (docs/monitoring.md): the request samples of every sampling deployment against
  // the training data in its model's lineage, delayed labels, alert rules.
  std::unique_ptr<monitor::MonitorService> monitor;
  if (!a.no_monitor) {
    monitor::MonitorServiceOptions mon;
    mon.sample_root = mo.sample_dir;
    mon.datasets = &be->datasets();
    mon.interval = std::chrono::milliseconds(a.monitor_interval_ms);
    mon.model_facts = [be](const std::string& model,
                           int64_t version) -> Result<monitor::ModelFacts> {
      DLSYS_ASSIGN_OR_RETURN(meta::ModelVersion mv,
                             be->store().registry().get_model_version(model, version));
      DLSYS_ASSIGN_OR_RETURN(Graph g, import_onnx_file(be->objects().object_path(mv.sha256)));
      const ModelMetadata m = ModelMetadata::read(g);
      return monitor::ModelFacts{m.float_features(), m.class_names, m.task};
    };
    mon.request_counts = [&models](const std::string& name) {
      const nlohmann::json st = models.status(name);
      std::map<int64_t, monitor::RequestCounts> out;
      auto add = [&out](const nlohmann::json& v) {
        auto stats = v.find("stats");
        if (stats == v.end() || !v.contains("version")) return;
        monitor::RequestCounts c;
        c.failed = stats->value("failed", int64_t{0}) + stats->value("expired", int64_t{0});
        c.rejected = stats->value("rejected", int64_t{0});
        c.requests = stats->value("done", int64_t{0}) + c.failed + c.rejected;
        out[v["version"].get<int64_t>()] = c;
      };
      add(st);
      for (const char* side : {"canary", "shadow"})
        if (st.contains(side)) add(st[side]);
      return out;
    };
    if (pipelines)
      mon.fire_pipeline = [p = pipelines.get()](const std::string& pipeline,
                                                const std::string& alert,
                                                const std::string& event_id) {
        return p->fire_alert(pipeline, alert, event_id).status();
      };
    monitor = std::make_unique<monitor::MonitorService>(be->store(), std::move(mon));
  }
  monitor::add_monitor_routes(be->router(), be->store(), monitor.get());
  // The web UI (web/): its files from --web-dir, else where the build or install put them.
  const std::string web_dir = a.web_dir ? *a.web_dir : api::default_web_dir();
  if (a.web_dir && !std::filesystem::is_regular_file(*a.web_dir + "/index.html"))
    return fail(
        fmt::format("--web-dir {} holds no index.html: name the directory `vite build` "
                    "wrote (the build's web/), or leave the option out",
                    *a.web_dir));
  api::add_web_routes(be->router(), web_dir);
  so.extra_metrics = [&models, m = monitor.get()] {
    return models.metrics_text() + (m ? m->metrics_text() : std::string());
  };
  api::HttpServer server((*backend)->router(), so);
  Status st = server.listen();
  if (!st.ok()) return fail(st.message());
  std::atomic<bool> stopping{false};
  std::thread job_thread;
  if (job_service) {
    // Train jobs record their runs in this server (known once it listens: --port 0).
    const std::string url =
        fmt::format("http://{}:{}", so.host == "0.0.0.0" ? "127.0.0.1" : so.host, server.port());
    job_service->set_server_url(url);
    if (k8s_executor) k8s_executor->set_default_server_url(url);
    // Servers sharing one database tell their jobs apart by host and port.
    job_service->set_runner(fmt::format("{}:{}", job_service->runner(), server.port()));
    // The pipeline runner is known by the same name: restarted on the same port, it runs the
    // steps it had in hand again at once.
    if (pipelines) pipelines->set_runner(job_service->runner());
    Status rec = job_service->recover();
    if (!rec.ok()) return fail(rec.with_context("recovering the job queue").message());
    job_thread = std::thread([&stopping, svc = job_service.get(), searches = search_service.get()] {
      while (!stopping.load()) {
        auto r = svc->tick();
        if (!r.ok()) std::fprintf(stderr, "jobs: %s\n", r.status().message().c_str());
        // Searches read the jobs that ended and queue trials: started at once (wake), not at
        // the next second.
        auto q = searches->tick();
        if (!q.ok()) std::fprintf(stderr, "searches: %s\n", q.status().message().c_str());
        if (q.ok() && *q > 0) svc->wake();
        svc->wait(std::chrono::seconds(1));
      }
    });
  }
  if (pipelines) pipelines->start();
  if (monitor) monitor->start();
  std::printf(
      "dlsys server on http://%s:%d  data: %s  meta: %s  auth: %s  connections: %zu  jobs: %s  "
      "ui: %s\n",
      so.host.c_str(), server.port(), (*backend)->options().data_dir.c_str(),
      a.meta.empty() ? "sqlite (meta.db)" : "postgresql",
      bo.auth ? "tokens required" : "off (loopback)", server.max_connections(),
      !job_service   ? "off"
      : k8s_executor ? "kubernetes"
                     : "local",
      web_dir.empty() ? "not built (--web-dir)" : "/");
  std::fflush(stdout);
  server.run();
  if (monitor) monitor->stop();
  // Inline steps in flight end first (they use the stores and the model server).
  if (pipelines) pipelines->stop();
  if (job_service) {
    stopping.store(true);
    job_service->wake();
    job_thread.join();
    // Running jobs are asked to stop (train jobs checkpoint) and go back to the queue.
    Status js = job_service->shutdown(jo.stop_grace);
    if (!js.ok()) std::fprintf(stderr, "jobs: %s\n", js.message().c_str());
  }
  models.stop();
  std::printf("dlsys server stopped\n");
  if (log && log != stdout) std::fclose(log);
  return 0;
}

}  // namespace

void add_server(CLI::App& app, int* rc) {
  auto a = std::make_shared<ServerArgs>();
  CLI::App* c = app.add_subcommand(
      "server",
      "Run the dlsys API server: tracking, model registry, artifacts and deployments under "
      "/api/v1, and inference (KServe v2) under /v2");
  c->add_option("--data-dir", a->data_dir, "State directory (default $DLSYS_HOME or ~/.dlsys)");
  c->add_option("--host", a->host, "Address to bind; a non-loopback address turns on --auth")
      ->capture_default_str();
  c->add_option("--port", a->port, "Port (0 picks a free one)")->capture_default_str();
  c->add_option("--meta", a->meta,
                "Metadata database: postgresql://user@host:port/db (default SQLite in the data "
                "directory)");
  c->add_flag("--auth", a->auth, "Require API tokens (create them with `dlsys tokens create`)");
  c->add_option("--workers", a->workers, "Handler threads")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  c->add_option("--io-threads", a->io_threads, "Socket I/O threads")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  c->add_option("--io-spin-us", a->io_spin_us,
                "How long an I/O thread polls for the next request before it sleeps (lower "
                "latency for back-to-back requests, at up to this much CPU per burst); 0: never")
      ->capture_default_str()
      ->check(CLI::Range(0, 10000));
  c->add_option("--max-body-mb", a->max_body_mb, "Largest JSON body; larger gets 413")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{4096}));
  c->add_option("--max-upload-mb", a->max_upload_mb,
                "Largest upload: an artifact, a pushed file, all files of one staged dataset push")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  c->add_option("--max-connections", a->max_connections,
                "Open connections at most (also capped by `ulimit -n` less a reserve); idle "
                "keep-alive connections are closed first when it is reached")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  c->add_option("--memory-budget-mb", a->memory_budget_mb,
                "Memory that requests in flight may hold (bodies and parsed JSON); past it, 503")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{16}, int64_t{1} << 20));
  c->add_option("--serve-memory-mb", a->serve_memory_mb,
                "Memory all loaded model versions may hold; past it the least recently used "
                "deployments are unloaded and load again on their next request (0: no limit)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 24));
  c->add_option("--run-timeout-s", a->run_timeout_s,
                "A RUNNING run not heard from for this long (no heartbeat, metric or artifact) is "
                "marked FAILED with the reason; 0: never")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  c->add_option("--job-threads", a->job_threads,
                "Cores the training service's jobs may use together (default: all of them)")
      ->check(CLI::Range(int64_t{0}, int64_t{4096}));
  c->add_option("--job-memory-mb", a->job_memory_mb,
                "Memory the running jobs may declare together (0: memory is not packed)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  c->add_option("--job-stop-grace-s", a->job_stop_grace_s,
                "Seconds between SIGTERM and SIGKILL when a job is cancelled, runs out of time or "
                "the server stops")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{3600}));
  c->add_option("--core-hour-price", a->core_hour_price,
                "Price of a core-hour for `dlsys jobs usage` (a job is charged its threads x its "
                "run time)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e9));
  c->add_option("--job-heartbeat-timeout-s", a->job_heartbeat_timeout_s,
                "A job that touched its heartbeat file and then not for this long is hung: killed "
                "and retried (dlsys train touches it every step: raise it for steps longer than "
                "this)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{86400}));
  c->add_option("--web-dir", a->web_dir,
                "The web UI's built files (default: web/ beside this program, or "
                "$DLSYS_WEB_DIR); the UI is at /");
  c->add_flag("--no-monitor", a->no_monitor,
              "Do not follow request samples, labels and alert rules on this server (another "
              "server sharing the metadata database does)");
  c->add_option("--monitor-interval-ms", a->monitor_interval_ms,
                "How often the monitor reads new samples and labels and checks the alert rules")
      ->check(CLI::Range(100, 600000));
  c->add_flag("--no-jobs", a->no_jobs,
              "Do not run jobs here (another server on the same metadata store runs them; "
              "submitting still works)");
  c->add_option("--job-executor", a->job_executor,
                "Where jobs run: local (child processes of this server) or kubernetes (a Job per "
                "attempt, applied with kubectl; docs/deploy.md)")
      ->capture_default_str()
      ->check(CLI::IsMember({"local", "kubernetes"}));
  c->add_option("--kubectl", a->kubectl, "The kubectl the kubernetes executor runs")
      ->capture_default_str();
  c->add_option("--k8s-image", a->k8s.image, "The image job pods run (it holds dlsys)")
      ->capture_default_str();
  c->add_option("--k8s-namespace", a->k8s.namespace_, "The namespace of the jobs' Jobs")
      ->capture_default_str();
  c->add_option("--k8s-claim", a->k8s.claim,
                "The PersistentVolumeClaim of this server's data directory, which pods mount")
      ->capture_default_str();
  c->add_option("--k8s-mount", a->k8s.mount,
                "Where pods mount it (default: the data directory's own path, as this server "
                "sees it)");
  c->add_option("--k8s-server-url", a->k8s.server_url,
                "This server as pods reach it, e.g. http://dlsys (the Service of "
                "deploy/k8s/server.yaml; default: the address it listens on)");
  c->add_option("--k8s-poll-ms", a->k8s_poll_ms,
                "How often the kubernetes executor lists its Jobs (one kubectl call for all)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{50}, int64_t{600000}));
  c->add_option("--access-log", a->access_log,
                "Access log file, '-' for stdout, 'off' (lines are written within 100 ms)")
      ->capture_default_str();
  c->callback([a, rc] { *rc = run_server(*a); });
}

}  // namespace dlsys::cli
