// `dlsys jobs`: the training service's commands (docs/jobs.md): validate a job spec, submit it,
// list, show, follow the log of and cancel jobs, on a running server (/api/v1/jobs) or on a data
// directory in process (queued there; a `dlsys server` on that directory runs them).
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "cli/client_options.h"
#include "cli/commands.h"
#include "core/file_util.h"
#include "core/json_get.h"
#include "jobs/job_process.h"
#include "jobs/job_routes.h"
#include "jobs/job_spec.h"
#include "jobs/k8s_job.h"
#include "train/spec.h"

namespace dlsys::cli {

Status check_job_spec(const jobs::JobSpec& j) {
  if (j.kind != jobs::JobKind::kTrain || j.spec.empty()) return Status::OK();
  // The server reads the file a submitter names: a regular file of a spec's size, nothing else.
  std::error_code ec;
  const auto st = std::filesystem::status(j.spec, ec);
  if (ec || !std::filesystem::is_regular_file(st))
    return Status::Invalid("the job's training spec '{}' is not a file the server can read",
                           j.spec);
  if (std::filesystem::file_size(j.spec, ec) > (1u << 20) || ec)
    return Status::Invalid("the job's training spec '{}' is larger than 1 MiB", j.spec);
  // Read as the service will run it (the checkpoint interval aside, which any spec takes).
  auto spec = train::load_train_spec(j.spec, jobs::train_overrides(j, 0));
  if (!spec.ok())
    return Status::Invalid("the job's training spec, with its dataset and hyperparameters: {}",
                           spec.status().message());
  return Status::OK();
}

namespace {

using nlohmann::json;

struct JobsArgs : ClientArgs {
  std::string spec, state, owner, by = "owner", since, target;
  jobs::K8sJobOptions k8s;
  int64_t id = 0;
  int limit = 50;
  bool follow = false, wait = false;
};

std::string summary(const jobs::JobSpec& s) {
  std::string what;
  switch (s.kind) {
    case jobs::JobKind::kTrain:
      what = s.spec.empty() ? "fine-tunes " + s.model.str() : "trains " + s.spec;
      break;
    case jobs::JobKind::kCommand: {
      for (const std::string& a : s.command) what += (what.empty() ? "runs " : " ") + a;
      break;
    }
    case jobs::JobKind::kPredict:
      what = "predicts with " + s.model.str() + " into dataset " + s.output_dataset;
      break;
  }
  if (s.has_dataset) what += " on " + s.dataset.str() + (s.split.empty() ? "" : ":" + s.split);
  return what;
}

int validate(const JobsArgs& a) {
  auto s = jobs::load_job_spec(a.spec);
  if (!s.ok()) return fail(s.status().message() + " (docs/jobs.md describes the fields)");
  if (Status st = check_job_spec(*s); !st.ok()) return fail(st.message());
  if (a.json) {
    std::printf("%s\n", jobs::to_json(*s).dump().c_str());
    return 0;
  }
  std::printf("%s: a %s job '%s' that %s\n", a.spec.c_str(), jobs::job_kind_name(s->kind),
              s->name.c_str(), summary(*s).c_str());
  std::printf("  resources: %lld thread%s, memory %s; priority %lld, retries %lld, %s\n",
              static_cast<long long>(s->resources.threads), s->resources.threads == 1 ? "" : "s",
              s->resources.memory_bytes
                  ? human_bytes(static_cast<double>(s->resources.memory_bytes)).c_str()
                  : "unlimited",
              static_cast<long long>(s->priority), static_cast<long long>(s->max_retries),
              s->max_run_seconds ? ("at most " + std::to_string(s->max_run_seconds) + " s").c_str()
                                 : "no time limit");
  return 0;
}

// Connects as the other client commands do; a data directory in process gets the job routes
// too (a server adds them itself).
Result<Connection> connect_jobs(const ClientArgs& a) {
  DLSYS_ASSIGN_OR_RETURN(Connection c, connect(a));
  if (c.backend) {
    jobs::JobRoutesOptions o;
    o.work_dir = c.backend->options().data_dir + "/jobs";
    o.validate = check_job_spec;
    jobs::add_job_routes(c.backend->router(), c.backend->store(), o);
  }
  return c;
}

template <typename Fn>
int with_jobs(const JobsArgs& a, Fn&& fn) {
  auto c = connect_jobs(a);
  if (!c.ok()) return fail(c.status().message());
  Status st = with_where(fn(*c), *c);
  if (!st.ok()) return fail(st.message());
  return 0;
}

bool ended(const std::string& state) {
  return state == "SUCCEEDED" || state == "FAILED" || state == "CANCELLED";
}

std::string ms_text(const json& j, const char* key) {
  auto v = j.find(key);
  if (v == j.end() || !v->is_number() || v->get<int64_t>() == 0) return "-";
  return format_time_ms(*v);
}

// Prints the log of job `id` from `*offset`; with `follow`, until the job has ended and all its
// log is printed. Returns the job's state when it stopped.
Result<std::string> print_log(api::ApiClient& c, int64_t id, bool follow) {
  int64_t offset = 0;
  const std::string base = "/api/v1/jobs/" + std::to_string(id) + "/log?offset=";
  while (true) {
    const std::string target = base + std::to_string(offset);
    DLSYS_ASSIGN_OR_RETURN(json j, c.call("GET", target));
    const std::string what = answer_to("GET", target);
    DLSYS_ASSIGN_OR_RETURN(std::string text, json_get<std::string>(j, "text", what));
    DLSYS_ASSIGN_OR_RETURN(int64_t next, json_get<int64_t>(j, "offset", what));
    DLSYS_ASSIGN_OR_RETURN(int64_t size, json_get<int64_t>(j, "size", what));
    DLSYS_ASSIGN_OR_RETURN(std::string state, json_get<std::string>(j, "state", what));
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    offset = next;
    if (offset < size) continue;  // more is there now
    if (!follow || ended(state)) return state;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));  // a poll of a remote file
  }
}

Status submit(Connection& c, const JobsArgs& a) {
  DLSYS_ASSIGN_OR_RETURN(jobs::JobSpec s, jobs::load_job_spec(a.spec));
  DLSYS_RETURN_IF_ERROR(check_job_spec(s));
  DLSYS_ASSIGN_OR_RETURN(json j, c.client->call("POST", "/api/v1/jobs", jobs::to_json(s)));
  const std::string what = answer_to("POST", "/api/v1/jobs");
  DLSYS_ASSIGN_OR_RETURN(int64_t id, json_get<int64_t>(j, "id", what));
  if (a.json && !a.wait) {
    print_json(j);
    return Status::OK();
  }
  if (!a.json)
    std::printf("job %lld queued: a %s job '%s' that %s\n", static_cast<long long>(id),
                jobs::job_kind_name(s.kind), s.name.c_str(), summary(s).c_str());
  if (c.backend) {
    note(a.quiet, fmt::format("queued in data directory {}: a `dlsys server --data-dir {}` runs "
                              "it",
                              c.data_dir, c.data_dir));
    return Status::OK();
  }
  if (!a.wait) {
    std::printf("follow it: dlsys jobs logs %lld -f   cancel it: dlsys jobs cancel %lld\n",
                static_cast<long long>(id), static_cast<long long>(id));
    return Status::OK();
  }
  DLSYS_ASSIGN_OR_RETURN(std::string state, print_log(*c.client, id, true));
  DLSYS_ASSIGN_OR_RETURN(json done, c.client->call("GET", "/api/v1/jobs/" + std::to_string(id)));
  if (a.json) print_json(done);
  if (state != "SUCCEEDED")
    return Status::Invalid("job {} {}: {}", id, state,
                           done.value("end_reason", std::string("(no reason recorded)")));
  return Status::OK();
}

Status list(Connection& c, const JobsArgs& a) {
  std::string target = "/api/v1/jobs?page_size=" + std::to_string(a.limit);
  if (!a.state.empty()) target += "&state=" + enc(a.state);
  if (!a.owner.empty()) target += "&owner=" + enc(a.owner);
  DLSYS_ASSIGN_OR_RETURN(json page, c.client->call("GET", target));
  DLSYS_ASSIGN_OR_RETURN(json list, json_list(page, "jobs", answer_to("GET", target)));
  if (a.json) {
    print_json(list);
    return Status::OK();
  }
  std::vector<std::vector<std::string>> rows = {{"ID", "NAME", "KIND", "OWNER", "STATE", "ATTEMPTS",
                                                 "PRIORITY", "THREADS", "CREATED", "REASON"}};
  for (const json& j : list)
    rows.push_back({std::to_string(j.value("id", int64_t{0})), j.value("name", ""),
                    j.value("kind", ""), j.value("owner", ""),
                    j.value("state", "") +
                        (j.value("cancel_requested", false) && j.value("state", "") == "RUNNING"
                             ? " (cancelling)"
                             : ""),
                    std::to_string(j.value("attempts", int64_t{0})),
                    std::to_string(j.value("priority", int64_t{0})),
                    std::to_string(j.value("threads", int64_t{0})), ms_text(j, "created_at"),
                    j.value("end_reason", "")});
  print_table(rows);
  if (list.empty())
    std::printf("(no jobs%s)\n", a.state.empty() && a.owner.empty() ? "" : " that match");
  return Status::OK();
}

Status show(Connection& c, const JobsArgs& a) {
  DLSYS_ASSIGN_OR_RETURN(json j, c.client->call("GET", "/api/v1/jobs/" + std::to_string(a.id)));
  if (a.json) {
    print_json(j);
    return Status::OK();
  }
  std::printf("job %lld '%s': %s %s job of %s\n", static_cast<long long>(j.value("id", int64_t{0})),
              j.value("name", "").c_str(), j.value("state", "").c_str(),
              j.value("kind", "").c_str(), j.value("owner", "").c_str());
  if (j.value("cancel_requested", false) && j.value("state", "") == "RUNNING")
    std::printf("cancel requested: stopping\n");
  std::printf("priority %lld, %lld thread(s), memory %s, attempts %lld of %lld\n",
              static_cast<long long>(j.value("priority", int64_t{0})),
              static_cast<long long>(j.value("threads", int64_t{0})),
              j.value("memory_bytes", int64_t{0})
                  ? human_bytes(static_cast<double>(j.value("memory_bytes", int64_t{0}))).c_str()
                  : "unlimited",
              static_cast<long long>(j.value("attempts", int64_t{0})),
              static_cast<long long>(1 + j.value("max_retries", int64_t{0})));
  std::printf("created %s  started %s  ended %s  last heartbeat %s\n",
              ms_text(j, "created_at").c_str(), ms_text(j, "started_at").c_str(),
              ms_text(j, "ended_at").c_str(), ms_text(j, "heartbeat_at").c_str());
  if (!j.value("end_reason", "").empty())
    std::printf("reason: %s\n", j.value("end_reason", "").c_str());
  if (j.contains("spec")) std::printf("spec: %s\n", j["spec"].dump().c_str());
  return Status::OK();
}

Status cancel(Connection& c, const JobsArgs& a) {
  const std::string target = "/api/v1/jobs/" + std::to_string(a.id) + "/cancel";
  DLSYS_ASSIGN_OR_RETURN(json j, c.client->call("POST", target, json::object()));
  if (a.json) {
    print_json(j);
    return Status::OK();
  }
  if (j.value("state", "") == "CANCELLED")
    std::printf("job %lld cancelled\n", static_cast<long long>(a.id));
  else
    std::printf("job %lld is stopping (SIGTERM, then SIGKILL after the server's grace)\n",
                static_cast<long long>(a.id));
  return Status::OK();
}

Status usage(Connection& c, const JobsArgs& a) {
  int64_t since_ms = 0;
  if (!a.since.empty()) {
    DLSYS_ASSIGN_OR_RETURN(int64_t seconds, jobs::parse_duration_seconds(a.since, "--since"));
    since_ms = now_ms() - seconds * 1000;
  }
  const std::string target =
      "/api/v1/jobs/usage?by=" + enc(a.by) + "&since_ms=" + std::to_string(since_ms);
  DLSYS_ASSIGN_OR_RETURN(json j, c.client->call("GET", target));
  if (a.json) {
    print_json(j);
    return Status::OK();
  }
  DLSYS_ASSIGN_OR_RETURN(json list, json_list(j, "usage", answer_to("GET", target)));
  const double price = j.value("core_hour_price", 0.0);
  std::vector<std::vector<std::string>> rows = {{a.by == "model" ? "MODEL VERSION"
                                                 : a.by == "run" ? "RUN"
                                                                 : "OWNER",
                                                 "JOBS", "ATTEMPTS", "CORE-HOURS", "CPU-HOURS",
                                                 "PEAK MEMORY", "COST"}};
  for (const json& u : list)
    rows.push_back({u.value("key", ""), std::to_string(u.value("jobs", int64_t{0})),
                    std::to_string(u.value("attempts", int64_t{0})),
                    fmt::format("{:.4f}", u.value("core_seconds", 0.0) / 3600),
                    fmt::format("{:.4f}", u.value("cpu_seconds", 0.0) / 3600),
                    human_bytes(static_cast<double>(u.value("peak_memory_bytes", int64_t{0}))),
                    price > 0 ? fmt::format("{:.4f}", u.value("cost", 0.0)) : "-"});
  print_table(rows);
  if (list.empty()) std::printf("(no jobs%s)\n", a.since.empty() ? "" : " in that time");
  if (price == 0)
    std::printf(
        "cost: no price set (dlsys server --core-hour-price P charges threads x run "
        "time)\n");
  return Status::OK();
}

// `jobs render`: a queued job (by id, from the server) or a spec file (as job 0 of --owner).
Status render(const JobsArgs& a) {
  meta::Job job;
  jobs::JobSpec spec;
  const bool is_id =
      !a.target.empty() && a.target.find_first_not_of("0123456789") == std::string::npos;
  if (is_id) {
    DLSYS_ASSIGN_OR_RETURN(Connection c, connect_jobs(a));
    const std::string target = "/api/v1/jobs/" + a.target;
    DLSYS_ASSIGN_OR_RETURN(json j, c.client->call("GET", target));
    const std::string what = answer_to("GET", target);
    DLSYS_ASSIGN_OR_RETURN(job.id, json_get<int64_t>(j, "id", what));
    DLSYS_ASSIGN_OR_RETURN(job.name, json_get<std::string>(j, "name", what));
    DLSYS_ASSIGN_OR_RETURN(job.owner, json_get<std::string>(j, "owner", what));
    DLSYS_ASSIGN_OR_RETURN(job.spec, json_get<json>(j, "spec", what));
    DLSYS_ASSIGN_OR_RETURN(job.threads, json_get<int64_t>(j, "threads", what));
    DLSYS_ASSIGN_OR_RETURN(job.memory_bytes, json_get<int64_t>(j, "memory_bytes", what));
    DLSYS_ASSIGN_OR_RETURN(job.max_retries, json_get<int64_t>(j, "max_retries", what));
    DLSYS_ASSIGN_OR_RETURN(job.run_id, json_get<int64_t>(j, "run_id", what));
    job.attempts = std::max<int64_t>(1, j.value("attempts", int64_t{0}));
    DLSYS_ASSIGN_OR_RETURN(spec, jobs::job_spec_from_json(job.spec, "job " + a.target));
  } else {
    DLSYS_ASSIGN_OR_RETURN(spec, jobs::load_job_spec(a.target));
    DLSYS_RETURN_IF_ERROR(check_job_spec(spec));
    job.name = spec.name;
    job.kind = jobs::job_kind_name(spec.kind);
    job.owner = a.owner.empty() ? "local" : a.owner;
    job.spec = jobs::to_json(spec);
    job.threads = spec.resources.threads;
    job.memory_bytes = spec.resources.memory_bytes;
    job.max_retries = spec.max_retries;
    job.attempts = 1;
  }
  DLSYS_ASSIGN_OR_RETURN(std::string yaml, jobs::render_k8s_job(job, spec, a.k8s));
  std::fwrite(yaml.data(), 1, yaml.size(), stdout);
  return Status::OK();
}

}  // namespace

void add_jobs(CLI::App& app, int* rc) {
  CLI::App* jobs_cmd = app.add_subcommand(
      "jobs", "The training service: submit, list, show, follow and cancel jobs (docs/jobs.md)");
  jobs_cmd->require_subcommand(1);
  auto a = std::make_shared<JobsArgs>();
  CLI::App* v = jobs_cmd->add_subcommand(
      "validate", "Check a job spec (YAML or JSON, docs/jobs.md) and print what it runs");
  v->add_option("spec", a->spec, "The job spec file")->required();
  v->add_flag("--json", a->json, "Print the spec as the service stores it (JSON)");
  v->callback([a, rc] { *rc = validate(*a); });

  CLI::App* sub = jobs_cmd->add_subcommand("submit", "Queue a job (a YAML or JSON spec)");
  add_client_options(sub, a.get());
  sub->add_option("spec", a->spec, "The job spec file")->required()->check(CLI::ExistingFile);
  sub->add_flag("--wait", a->wait,
                "Follow the job's log until it ends; the exit code says whether it succeeded");
  sub->callback([a, rc] { *rc = with_jobs(*a, [&](Connection& c) { return submit(c, *a); }); });

  CLI::App* ls = jobs_cmd->add_subcommand("list", "List jobs, newest first");
  add_client_options(ls, a.get());
  ls->add_option("--state", a->state, "queued, running, succeeded, failed or cancelled");
  ls->add_option("--owner", a->owner, "Only this owner's jobs");
  ls->add_option("--limit", a->limit, "Jobs to list")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  ls->callback([a, rc] { *rc = with_jobs(*a, [&](Connection& c) { return list(c, *a); }); });

  CLI::App* sh = jobs_cmd->add_subcommand("show", "Show a job: state, attempts, times, reason");
  add_client_options(sh, a.get());
  sh->add_option("id", a->id, "Job id")->required();
  sh->callback([a, rc] { *rc = with_jobs(*a, [&](Connection& c) { return show(c, *a); }); });

  CLI::App* lg = jobs_cmd->add_subcommand("logs", "Print a job's output (every attempt's)");
  add_client_options(lg, a.get());
  lg->add_option("id", a->id, "Job id")->required();
  lg->add_flag("-f,--follow", a->follow, "Keep printing until the job ends");
  lg->callback([a, rc] {
    *rc = with_jobs(*a,
                    [&](Connection& c) { return print_log(*c.client, a->id, a->follow).status(); });
  });

  CLI::App* us = jobs_cmd->add_subcommand(
      "usage",
      "What jobs used: core-hours, CPU-hours, peak memory and cost, by owner, run or "
      "model version");
  add_client_options(us, a.get());
  us->add_option("--by", a->by, "owner, run or model")
      ->capture_default_str()
      ->check(CLI::IsMember({"owner", "run", "model"}));
  us->add_option("--since", a->since, "Only jobs created in this past time: 90m, 24h, 7d");
  us->callback([a, rc] { *rc = with_jobs(*a, [&](Connection& c) { return usage(c, *a); }); });

  CLI::App* rd = jobs_cmd->add_subcommand(
      "render", "Print a job as a Kubernetes batch/v1 Job manifest (docs/deploy.md)");
  add_client_options(rd, a.get());
  rd->add_option("job", a->target, "A job id (read from the server) or a job spec file")
      ->required();
  rd->add_option("--owner", a->owner, "With a spec file: the owner to label it with");
  rd->add_option("--image", a->k8s.image, "The image holding dlsys")->capture_default_str();
  rd->add_option("--namespace", a->k8s.namespace_, "The namespace")->capture_default_str();
  rd->add_option("--claim", a->k8s.claim, "The shared data directory's PersistentVolumeClaim")
      ->capture_default_str();
  rd->add_option("--mount", a->k8s.mount, "Where pods mount it")->capture_default_str();
  rd->add_option("--server-url", a->k8s.server_url, "The dlsys server as pods reach it")
      ->capture_default_str();
  rd->callback([a, rc] {
    Status st = render(*a);
    *rc = st.ok() ? 0 : fail(st.message());
  });

  CLI::App* cn = jobs_cmd->add_subcommand(
      "cancel", "Cancel a job: a queued one at once, a running one with SIGTERM then SIGKILL");
  add_client_options(cn, a.get());
  cn->add_option("id", a->id, "Job id")->required();
  cn->callback([a, rc] { *rc = with_jobs(*a, [&](Connection& c) { return cancel(c, *a); }); });
}

}  // namespace dlsys::cli
