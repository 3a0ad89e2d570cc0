#include "monitor/monitor_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace dlsys::monitor {

namespace {

struct Reader {
  std::string file;
  std::string at(const YAML::Node& n, const std::string& field) const {
    return n && n.Mark().line >= 0 ? fmt::format("{}:{}: {}", file, n.Mark().line + 1, field)
                                   : fmt::format("{}: {}", file, field);
  }
  Status fields(const YAML::Node& map, const std::set<std::string>& allowed,
                const std::string& section) const {
    if (!map.IsMap()) return Status::Invalid("{} must be a mapping", at(map, section));
    for (const auto& kv : map) {
      std::string k = kv.first.Scalar();
      if (!allowed.count(k)) {
        std::string names;
        for (const auto& a : allowed) names += (names.empty() ? "" : ", ") + a;
        return Status::Invalid("{} is not a field of {}; the fields are: {}",
                               at(kv.first, section + "." + k), section, names);
      }
    }
    return Status::OK();
  }
  Result<std::string> text(const YAML::Node& n, const std::string& field) const {
    if (!n.IsScalar()) return Status::Invalid("{} must be a text", at(n, field));
    return n.Scalar();
  }
  Result<double> number(const YAML::Node& n, const std::string& field, double lo, double hi) const {
    double v = 0;
    if (!n.IsScalar() || !YAML::convert<double>::decode(n, v) || !std::isfinite(v))
      return Status::Invalid("{} must be a number", at(n, field));
    if (v < lo || v > hi)
      return Status::Invalid("{} is {}; it must be in [{}, {}]", at(n, field), v, lo, hi);
    return v;
  }
  Result<int64_t> duration(const YAML::Node& n, const std::string& field) const {
    if (!n.IsScalar()) return Status::Invalid("{} must be a duration such as 10m", at(n, field));
    return parse_duration(n.Scalar(), at(n, field));
  }
};

Status read_settings(const Reader& r, const YAML::Node& n, const std::string& section,
                     DeploymentSettings* s) {
  DLSYS_RETURN_IF_ERROR(r.fields(
      n, {"windows", "history", "drift", "change", "label_horizon", "reference", "tensors"},
      section));
  if (auto w = n["windows"]) {
    if (!w.IsSequence() || w.size() == 0 || w.size() > 8)
      return Status::Invalid("{} must be a list of 1 to 8 durations",
                             r.at(w, section + ".windows"));
    s->windows_s.clear();
    for (size_t i = 0; i < w.size(); ++i) {
      DLSYS_ASSIGN_OR_RETURN(int64_t d,
                             r.duration(w[i], fmt::format("{}.windows[{}]", section, i)));
      if (d < 1 || d > 30 * 86400)
        return Status::Invalid("{} must be between 1s and 30d",
                               r.at(w[i], fmt::format("{}.windows[{}]", section, i)));
      s->windows_s.push_back(d);
    }
    std::sort(s->windows_s.begin(), s->windows_s.end());
    s->windows_s.erase(std::unique(s->windows_s.begin(), s->windows_s.end()), s->windows_s.end());
  }
  if (auto h = n["history"]) {
    DLSYS_ASSIGN_OR_RETURN(double v, r.number(h, section + ".history", 1, 1000));
    s->history = static_cast<int64_t>(v);
  }
  if (auto d = n["drift"]) {
    const std::string sec = section + ".drift";
    DLSYS_RETURN_IF_ERROR(r.fields(d, {"psi", "ks", "min_count", "false_alarm_rate"}, sec));
    if (d["psi"]) {
      DLSYS_ASSIGN_OR_RETURN(s->drift.psi, r.number(d["psi"], sec + ".psi", 0, 100));
    }
    if (d["ks"]) {
      DLSYS_ASSIGN_OR_RETURN(s->drift.ks, r.number(d["ks"], sec + ".ks", 0, 1));
    }
    if (d["min_count"]) {
      DLSYS_ASSIGN_OR_RETURN(double v, r.number(d["min_count"], sec + ".min_count", 1, 1e9));
      s->drift.min_count = static_cast<int64_t>(v);
    }
    if (d["false_alarm_rate"]) {
      DLSYS_ASSIGN_OR_RETURN(s->drift.false_alarm_rate,
                             r.number(d["false_alarm_rate"], sec + ".false_alarm_rate", 1e-9, 0.5));
    }
  }
  if (auto c = n["change"]) {
    const std::string sec = section + ".change";
    DLSYS_RETURN_IF_ERROR(r.fields(c, {"delta", "lambda", "min_count"}, sec));
    if (c["delta"]) {
      DLSYS_ASSIGN_OR_RETURN(s->change.delta, r.number(c["delta"], sec + ".delta", 0, 1e9));
    }
    if (c["lambda"]) {
      DLSYS_ASSIGN_OR_RETURN(s->change.lambda, r.number(c["lambda"], sec + ".lambda", 1e-9, 1e9));
    }
    if (c["min_count"]) {
      DLSYS_ASSIGN_OR_RETURN(double v, r.number(c["min_count"], sec + ".min_count", 1, 1e9));
      s->change.min_count = static_cast<int64_t>(v);
    }
  }
  if (auto h = n["label_horizon"]) {
    DLSYS_ASSIGN_OR_RETURN(s->label_horizon_s, r.duration(h, section + ".label_horizon"));
  }
  if (auto t = n["tensors"]) {
    DLSYS_ASSIGN_OR_RETURN(s->tensors, r.text(t, section + ".tensors"));
    if (s->tensors != "auto" && s->tensors != "element" && s->tensors != "channel")
      return Status::Invalid(
          "{}: '{}'; a tensor input is summarized per element, per channel or "
          "auto",
          r.at(t, section + ".tensors"), s->tensors);
  }
  if (auto ref = n["reference"]) {
    DLSYS_ASSIGN_OR_RETURN(s->reference, r.text(ref, section + ".reference"));
  }
  return Status::OK();
}

}  // namespace

const DeploymentSettings& MonitorConfig::settings(const std::string& deployment) const {
  auto it = deployments.find(deployment);
  return it == deployments.end() ? defaults : it->second;
}

const std::vector<std::string>& signal_names() {
  static const std::vector<std::string> kNames = {
      "drift",          "multivariate_drift", "accuracy",       "mae",    "accuracy_change",
      "latency_p99_ms", "error_rate",         "rejection_rate", "samples"};
  return kNames;
}

Result<int64_t> parse_duration(const std::string& text, const std::string& where) {
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  const std::string unit = text.substr(i);
  const int64_t mult = unit.empty() || unit == "s" ? 1
                       : unit == "m"               ? 60
                       : unit == "h"               ? 3600
                       : unit == "d"               ? 86400
                                                   : 0;
  if (i == 0 || i > 9 || mult == 0)
    return Status::Invalid(
        "{}: '{}' is not a duration; write a whole number with s, m, h or d (e.g. 10m)", where,
        text.substr(0, 40));
  return std::stoll(text.substr(0, i)) * mult;
}

Result<WebhookUrl> parse_webhook_url(const std::string& url, const std::string& where) {
  auto bad = [&](const char* why) {
    return Status::Invalid(
        "{}: '{}' {}; a webhook is http://HOST[:PORT][/PATH] (put a TLS proxy in front for "
        "https)",
        where, url.substr(0, 200), why);
  };
  if (url.rfind("http://", 0) != 0) return bad("is not an http:// address");
  const std::string rest = url.substr(7);
  const size_t slash = rest.find('/');
  const std::string hostport = rest.substr(0, slash);
  WebhookUrl w;
  w.path = slash == std::string::npos ? "/" : rest.substr(slash);
  const size_t colon = hostport.rfind(':');
  w.host = hostport.substr(0, colon);
  if (w.host.empty()) return bad("has no host");
  for (char c : w.host)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_'))
      return bad("has a host that is not a name or an IPv4 address");
  if (colon != std::string::npos) {
    const std::string port = hostport.substr(colon + 1);
    if (port.empty() || port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](char c) { return std::isdigit(c); }))
      return bad("has a port that is not a number");
    w.port = std::stoi(port);
    if (w.port < 1 || w.port > 65535) return bad("has a port outside 1..65535");
  }
  for (char c : w.path)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f)
      return bad("has a space or control character");
  return w;
}

Result<MonitorConfig> parse_monitor_config(const std::string& yaml_text, const std::string& file) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return Status::Invalid("{}:{}: not valid YAML: {}", file, e.mark.line + 1, e.msg);
  }
  Reader r{file};
  MonitorConfig c;
  if (!root || root.IsNull()) return c;
  DLSYS_RETURN_IF_ERROR(r.fields(root, {"defaults", "deployments", "rules"}, "the document"));
  if (auto d = root["defaults"])
    DLSYS_RETURN_IF_ERROR(read_settings(r, d, "defaults", &c.defaults));
  if (auto ds = root["deployments"]) {
    if (!ds.IsMap())
      return Status::Invalid("{} must be a mapping of deployment names", r.at(ds, "deployments"));
    for (const auto& kv : ds) {
      DeploymentSettings s = c.defaults;
      std::string name = kv.first.Scalar();
      DLSYS_RETURN_IF_ERROR(read_settings(r, kv.second, "deployments." + name, &s));
      c.deployments[name] = std::move(s);
    }
  }
  if (auto rs = root["rules"]) {
    if (!rs.IsSequence()) return Status::Invalid("{} must be a list", r.at(rs, "rules"));
    std::set<std::string> names;
    for (size_t i = 0; i < rs.size(); ++i) {
      const YAML::Node n = rs[i];
      const std::string sec = fmt::format("rules[{}]", i);
      DLSYS_RETURN_IF_ERROR(r.fields(n,
                                     {"name", "deployment", "signal", "column", "window", "above",
                                      "below", "for", "severity", "notify"},
                                     sec));
      AlertRule a;
      for (const char* req : {"name", "deployment", "signal"})
        if (!n[req])
          return Status::Invalid("{} has no '{}'; a rule needs name, deployment and signal",
                                 r.at(n, sec), req);
      DLSYS_ASSIGN_OR_RETURN(a.name, r.text(n["name"], sec + ".name"));
      if (!names.insert(a.name).second)
        return Status::Invalid("{}: a second rule named '{}'", r.at(n["name"], sec + ".name"),
                               a.name);
      DLSYS_ASSIGN_OR_RETURN(a.deployment, r.text(n["deployment"], sec + ".deployment"));
      DLSYS_ASSIGN_OR_RETURN(a.signal, r.text(n["signal"], sec + ".signal"));
      const auto& sig = signal_names();
      if (std::find(sig.begin(), sig.end(), a.signal) == sig.end())
        return Status::Invalid("{}: '{}' is not a signal; the signals are: {}",
                               r.at(n["signal"], sec + ".signal"), a.signal, fmt::join(sig, ", "));
      if (n["column"]) {
        if (a.signal != "drift")
          return Status::Invalid("{}: only a drift rule names a column",
                                 r.at(n["column"], sec + ".column"));
        DLSYS_ASSIGN_OR_RETURN(a.column, r.text(n["column"], sec + ".column"));
      }
      if (n["window"]) {
        DLSYS_ASSIGN_OR_RETURN(a.window_s, r.duration(n["window"], sec + ".window"));
      }
      if (n["above"] && n["below"])
        return Status::Invalid("{}: a rule has one condition, above or below", r.at(n, sec));
      if (n["above"]) {
        DLSYS_ASSIGN_OR_RETURN(a.threshold, r.number(n["above"], sec + ".above", -1e300, 1e300));
      }
      if (n["below"]) {
        a.above = false;
        DLSYS_ASSIGN_OR_RETURN(a.threshold, r.number(n["below"], sec + ".below", -1e300, 1e300));
      }
      if (n["for"]) {
        DLSYS_ASSIGN_OR_RETURN(a.for_s, r.duration(n["for"], sec + ".for"));
      }
      if (n["severity"]) {
        DLSYS_ASSIGN_OR_RETURN(a.severity, r.text(n["severity"], sec + ".severity"));
        if (a.severity != "info" && a.severity != "warning" && a.severity != "critical")
          return Status::Invalid("{}: '{}'; a severity is info, warning or critical",
                                 r.at(n["severity"], sec + ".severity"), a.severity);
      }
      if (auto no = n["notify"]) {
        DLSYS_RETURN_IF_ERROR(r.fields(no, {"webhook", "pipeline", "log"}, sec + ".notify"));
        if (no["webhook"]) {
          DLSYS_ASSIGN_OR_RETURN(a.webhook, r.text(no["webhook"], sec + ".notify.webhook"));
          DLSYS_RETURN_IF_ERROR(
              parse_webhook_url(a.webhook, r.at(no["webhook"], sec + ".notify.webhook")).status());
        }
        if (no["pipeline"]) {
          DLSYS_ASSIGN_OR_RETURN(a.pipeline, r.text(no["pipeline"], sec + ".notify.pipeline"));
        }
        if (auto lg = no["log"]) {
          bool v = true;
          if (!lg.IsScalar() || !YAML::convert<bool>::decode(lg, v))
            return Status::Invalid("{} must be true or false", r.at(lg, sec + ".notify.log"));
          a.log = v;
        }
      }
      // The window must be one of the deployment's.
      if (a.window_s > 0 && a.deployment != "*") {
        const auto& w = c.settings(a.deployment).windows_s;
        if (std::find(w.begin(), w.end(), a.window_s) == w.end())
          return Status::Invalid("{}: {} s is not one of deployment '{}''s windows ({} s)",
                                 r.at(n["window"], sec + ".window"), a.window_s, a.deployment,
                                 fmt::join(w, ", "));
      }
      c.rules.push_back(std::move(a));
    }
  }
  return c;
}

}  // namespace dlsys::monitor
