// `dlsys monitor` and `dlsys alerts` (issue 24, docs/monitoring.md): what a server's monitor
// sees of its deployments (drift per column with its history, live quality, labels), its
// configuration (settings and alert rules), delayed labels, and the alerts.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "api/request_util.h"
#include "cli/client_options.h"
#include "cli/commands.h"
#include "core/file_util.h"
#include "monitor/monitor_config.h"

namespace dlsys::cli {
namespace {

using nlohmann::json;

struct MonitorArgs : ClientArgs {
  std::string deployment, file, window, state;
  int64_t history = 12;
  int limit = 50;
};

// A bar per value, 0 .. the limit and beyond ("▁" .. "█"); "·" where there is no decision.
std::string sparkline(const std::vector<double>& values, const std::vector<double>& limits) {
  static const char* kBars[] = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
  std::string out;
  for (size_t i = 0; i < values.size(); ++i) {
    if (std::isnan(values[i]) || limits[i] <= 0) {
      out += "·";
      continue;
    }
    // Half the bars below the drift limit, half above (up to 4x it).
    double r = values[i] / limits[i];
    int k = r < 1 ? static_cast<int>(r * 4) : std::min(7, 4 + static_cast<int>((r - 1) * 4 / 3));
    out += kBars[std::clamp(k, 0, 7)];
  }
  return out;
}

std::string when(int64_t ms) {
  if (ms <= 0) return "-";
  std::time_t t = ms / 1000;
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", std::gmtime(&t));
  return buf;
}

Status show(api::ApiClient& c, const MonitorArgs& a) {
  std::string target =
      "/api/v1/monitor/deployments/" + a.deployment + "?history=" + std::to_string(a.history);
  if (!a.window.empty()) target += "&window=" + a.window;
  DLSYS_ASSIGN_OR_RETURN(json r, c.call("GET", target));
  if (a.json) {
    std::printf("%s\n", r.dump().c_str());
    return Status::OK();
  }
  std::printf("deployment %s: %s@%lld, %lld requests sampled\n", a.deployment.c_str(),
              r.value("model", "").c_str(), static_cast<long long>(r.value("version", int64_t{0})),
              static_cast<long long>(r.value("samples", int64_t{0})));
  if (r.contains("error")) {
    std::printf("no reference to compare with: %s\n", r["error"].get<std::string>().c_str());
    return Status::OK();
  }
  const json& ref = r["reference"];
  std::printf("reference: %s (%lld rows, %lld columns); windows of %lld s, oldest first\n",
              ref.value("source", "").c_str(),
              static_cast<long long>(ref.value("rows", int64_t{0})),
              static_cast<long long>(ref.value("columns", int64_t{0})),
              static_cast<long long>(r.value("window_s", int64_t{0})));
  const json& windows = r["windows"];
  if (windows.empty()) {
    std::printf("no samples in any window yet\n");
    return Status::OK();
  }
  std::string counts;
  for (const auto& w : windows) counts += std::to_string(w.value("samples", int64_t{0})) + " ";
  std::printf("samples per window: %s\n", counts.c_str());
  // Per column: the PSI history as bars, then the figures of the newest window judged (the ones
  // still filling are not).
  size_t newest = windows.size() - 1;
  while (newest > 0 && !windows[newest].value("judged", true)) --newest;
  if (!windows[newest].value("judged", true)) {
    std::printf("no window has been judged yet (a window is judged once it has ended)\n");
    return Status::OK();
  }
  const json& judged = windows[newest];
  const size_t ncols = judged["columns"].size();
  std::printf("%-16s %-*s %8s %8s %8s %8s  %s\n", "COLUMN", static_cast<int>(windows.size()), "PSI",
              "psi", "limit", "ks", "mean", "drift (newest judged window)");
  int drifted = 0, features = 0, components = 0, components_drifted = 0;
  bool prediction_drift = false;
  std::vector<std::string> lines;
  for (size_t c = 0; c < ncols; ++c) {
    std::vector<double> v, lim;
    for (const auto& w : windows) {
      const json& col = w["columns"][c];
      v.push_back(col["decided"].get<bool>() ? col["psi"].get<double>() : NAN);
      lim.push_back(col["psi_limit"].get<double>());
    }
    const json& last = judged["columns"][c];
    const bool drift = last["drift"].get<bool>();
    const std::string name = last["column"].get<std::string>();
    if (name.rfind("__pc", 0) == 0) {
      ++components;
      components_drifted += drift;
    } else if (name == "__prediction") {
      prediction_drift = drift;
    } else {
      ++features;
      drifted += drift;
    }
    std::string line = fmt::format("{:<16} {} {:8.4f} {:8.4f} {:8.4f} {:8.3f}  {}",
                                   last["column"].get<std::string>(), sparkline(v, lim),
                                   last["psi"].get<double>(), last["psi_limit"].get<double>(),
                                   last["ks"].get<double>(), last["mean"].get<double>(),
                                   !last["decided"].get<bool>() ? "too few values"
                                   : drift                      ? "DRIFT"
                                                                : "ok");
    lines.push_back(line);
  }
  for (const auto& l : lines) std::printf("%s\n", l.c_str());
  std::printf("%d of %d feature columns drifted in the window at %s (%lld requests)", drifted,
              features, when(judged["start"].get<int64_t>() * 1000).c_str(),
              static_cast<long long>(judged.value("samples", int64_t{0})));
  if (components > 0)
    std::printf("; %d of %d projection components", components_drifted, components);
  std::printf("%s\n", prediction_drift ? "; the predictions drifted" : "");
  const json latency = judged.value("latency", json::object());
  for (const auto& [version, l] : latency.items())
    std::printf("version %s: %lld requests sampled, p99 latency %.2f ms\n", version.c_str(),
                static_cast<long long>(l.value("samples", int64_t{0})), l.value("p99_ms", 0.0));
  for (const auto& q : r["quality"]) {
    if (q.value("labels", int64_t{0}) == 0) continue;
    std::printf("window %s: %lld labels, %s %.4f\n", when(q["start"].get<int64_t>() * 1000).c_str(),
                static_cast<long long>(q["labels"].get<int64_t>()),
                q.contains("accuracy") ? "accuracy" : "mae",
                q.contains("accuracy") ? q["accuracy"].get<double>() : q.value("mae", 0.0));
  }
  const json& l = r["labels"];
  std::printf("labels: %lld joined, %lld unmatched, %lld waiting for their sample\n",
              static_cast<long long>(l.value("joined", int64_t{0})),
              static_cast<long long>(l.value("unmatched", int64_t{0})),
              static_cast<long long>(l.value("waiting_for_sample", int64_t{0})));
  for (const auto& al : r["alerts"])
    std::printf("alert %s %s since %s: %s\n", al.value("rule", "").c_str(),
                al.value("state", "").c_str(), when(al.value("started_at", int64_t{0})).c_str(),
                al.value("message", "").c_str());
  return Status::OK();
}

Status list(api::ApiClient& c, const MonitorArgs& a) {
  DLSYS_ASSIGN_OR_RETURN(json r, c.call("GET", "/api/v1/monitor"));
  if (a.json) {
    std::printf("%s\n", r.dump().c_str());
    return Status::OK();
  }
  std::printf("%-20s %-20s %10s %8s %10s %8s\n", "DEPLOYMENT", "MODEL", "SAMPLES", "LABELS",
              "DRIFTED", "FIRING");
  for (const auto& d : r["deployments"]) {
    std::string drifted = d.contains("window")
                              ? std::to_string(d["window"]["drifted"].get<int64_t>())
                          : d.contains("error") ? "no ref"
                                                : "-";
    std::printf("%-20s %-20s %10lld %8lld %10s %8lld\n", d.value("deployment", "").c_str(),
                fmt::format("{}@{}", d.value("model", ""), d.value("version", int64_t{0})).c_str(),
                static_cast<long long>(d.value("samples", int64_t{0})),
                static_cast<long long>(d.value("labels", int64_t{0})), drifted.c_str(),
                static_cast<long long>(d.value("alerts_firing", int64_t{0})));
  }
  return Status::OK();
}

Status config_apply(api::ApiClient& c, const MonitorArgs& a) {
  DLSYS_ASSIGN_OR_RETURN(std::string text, read_file(a.file));
  DLSYS_RETURN_IF_ERROR(monitor::parse_monitor_config(text, a.file).status());
  DLSYS_ASSIGN_OR_RETURN(json r, c.call("PUT", "/api/v1/monitor/config", {{"spec_text", text}}));
  if (a.json)
    std::printf("%s\n", r.dump().c_str());
  else
    std::printf("monitoring configuration v%lld in force\n",
                static_cast<long long>(r.value("version", int64_t{0})));
  return Status::OK();
}

Status config_show(api::ApiClient& c, const MonitorArgs& a) {
  DLSYS_ASSIGN_OR_RETURN(json r, c.call("GET", "/api/v1/monitor/config"));
  if (a.json)
    std::printf("%s\n", r.dump().c_str());
  else if (r.value("version", int64_t{0}) == 0)
    std::printf("no configuration stored: the defaults apply (docs/monitoring.md)\n");
  else
    std::printf("# v%lld by %s\n%s", static_cast<long long>(r["version"].get<int64_t>()),
                r.value("owner", "").c_str(), r.value("spec_text", "").c_str());
  return Status::OK();
}

// Labels from a CSV file "id,label" (a header line is skipped) or JSON lines {"id", "label"}.
Status feedback(api::ApiClient& c, const MonitorArgs& a) {
  std::ifstream in(a.file);
  if (!in) return Status::NotFound("cannot open '{}'", a.file);
  const std::string target = "/api/v1/deployments/" + a.deployment + "/feedback";
  json batch = json::array();
  int64_t sent = 0, added = 0, line_no = 0;
  auto flush = [&]() -> Status {
    if (batch.empty()) return Status::OK();
    DLSYS_ASSIGN_OR_RETURN(json r, c.call("POST", target, {{"labels", batch}}));
    sent += static_cast<int64_t>(batch.size());
    added += r.value("new", int64_t{0});
    batch = json::array();
    return Status::OK();
  };
  std::string line;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();  // a file written on Windows
    if (line.empty()) continue;
    if (line[0] == '{') {
      json j = json::parse(line, nullptr, false);
      if (!j.is_object() || !j.contains("id") || !j.contains("label"))
        return Status::Invalid("{}:{}: a JSON line needs \"id\" and \"label\"", a.file, line_no);
      batch.push_back({{"id", j["id"]}, {"label", j["label"]}});
    } else {
      size_t comma = line.find(',');
      if (comma == std::string::npos)
        return Status::Invalid("{}:{}: expected ID,LABEL", a.file, line_no);
      std::string id = line.substr(0, comma), label = line.substr(comma + 1);
      if (line_no == 1 && id == "id") continue;  // the header
      json lj = json::parse(label, nullptr, false);
      batch.push_back({{"id", id}, {"label", lj.is_number() ? lj : json(label)}});
    }
    if (batch.size() == 10000) DLSYS_RETURN_IF_ERROR(flush());
  }
  DLSYS_RETURN_IF_ERROR(flush());
  if (a.json)
    std::printf("%s\n", json{{"sent", sent}, {"new", added}}.dump().c_str());
  else
    std::printf("%lld labels sent to %s, %lld new (%lld repeated a labelled request)\n",
                static_cast<long long>(sent), a.deployment.c_str(), static_cast<long long>(added),
                static_cast<long long>(sent - added));
  return Status::OK();
}

Status alerts(api::ApiClient& c, const MonitorArgs& a) {
  std::string target = "/api/v1/alerts?limit=" + std::to_string(a.limit);
  if (!a.state.empty()) {
    std::string s = a.state;
    std::transform(s.begin(), s.end(), s.begin(), ::toupper);
    target += "&state=" + s;
  }
  if (!a.deployment.empty()) target += "&deployment=" + a.deployment;
  DLSYS_ASSIGN_OR_RETURN(json r, c.call("GET", target));
  if (a.json) {
    std::printf("%s\n", r.dump().c_str());
    return Status::OK();
  }
  std::printf("%-5s %-20s %-16s %-9s %-8s %-19s %-19s %s\n", "ID", "RULE", "DEPLOYMENT", "STATE",
              "SEVERITY", "STARTED", "FIRED", "MESSAGE");
  for (const auto& al : r["alerts"])
    std::printf("%-5lld %-20s %-16s %-9s %-8s %-19s %-19s %s\n",
                static_cast<long long>(al.value("id", int64_t{0})), al.value("rule", "").c_str(),
                al.value("deployment", "").c_str(), al.value("state", "").c_str(),
                al.value("severity", "").c_str(), when(al.value("started_at", int64_t{0})).c_str(),
                when(al.value("fired_at", int64_t{0})).c_str(), al.value("message", "").c_str());
  return Status::OK();
}

}  // namespace

void add_monitor(CLI::App& app, int* rc) {
  CLI::App* cmd = app.add_subcommand(
      "monitor",
      "Monitoring of served traffic: drift against the training data, live quality from "
      "delayed labels, the alert rules (docs/monitoring.md)");
  cmd->require_subcommand(1);
  auto a = std::make_shared<MonitorArgs>();
  auto server = [rc, a](auto fn) {
    return [rc, a, fn] {
      *rc = with_client(
          *a, [&](api::ApiClient& c) { return fn(c, *a); }, true);
    };
  };
  CLI::App* ls = cmd->add_subcommand("list",
                                     "Every monitored deployment: samples, labels, "
                                     "drifted columns, alerts firing");
  add_client_options(ls, a.get());
  ls->callback(server(list));
  CLI::App* sh = cmd->add_subcommand(
      "show",
      "A deployment's drift per column with its history (one bar per window), live "
      "quality and alerts");
  add_client_options(sh, a.get());
  sh->add_option("deployment", a->deployment, "The deployment")->required();
  sh->add_option("--window", a->window, "The window length (e.g. 5m; default the shortest)");
  sh->add_option("--history", a->history, "Windows to show")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  sh->callback(server(show));
  CLI::App* cf = cmd->add_subcommand("config", "The monitoring configuration (settings, rules)");
  cf->require_subcommand(1);
  CLI::App* ap = cf->add_subcommand("apply", "Check a configuration file and put it in force");
  add_client_options(ap, a.get());
  ap->add_option("file", a->file, "The YAML file")->required()->check(CLI::ExistingFile);
  ap->callback(server(config_apply));
  CLI::App* cs = cf->add_subcommand("show", "Print the configuration in force");
  add_client_options(cs, a.get());
  cs->callback(server(config_show));
  CLI::App* fb = cmd->add_subcommand(
      "feedback",
      "Send delayed labels: a CSV of ID,LABEL or JSON lines {\"id\", \"label\"} (the "
      "ids the inference answers carried)");
  add_client_options(fb, a.get());
  fb->add_option("deployment", a->deployment, "The deployment")->required();
  fb->add_option("file", a->file, "The labels")->required()->check(CLI::ExistingFile);
  fb->callback(server(feedback));

  CLI::App* al = app.add_subcommand("alerts", "Alerts of the monitoring rules");
  al->require_subcommand(1);
  CLI::App* al_ls = al->add_subcommand("list", "Alerts, newest first");
  add_client_options(al_ls, a.get());
  al_ls->add_option("--state", a->state, "pending, firing or resolved");
  al_ls->add_option("--deployment", a->deployment, "Only this deployment's");
  al_ls->add_option("--limit", a->limit, "How many")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  al_ls->callback(server(alerts));
}

}  // namespace dlsys::cli
