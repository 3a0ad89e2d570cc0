#include "jobs/job_spec.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "core/file_util.h"
#include "core/utf8.h"

namespace dlsys::jobs {

using json = nlohmann::json;

namespace {

constexpr size_t kMaxName = 250;
constexpr int64_t kMaxThreads = 1024;
constexpr int64_t kMaxRetries = 100;

// Where each field was written: "job.yaml:12: 'resources.threads'" for a parsed file, "the
// server's job 7: 'resources.threads'" for stored JSON.
struct Locator {
  std::string source;
  std::map<std::string, int> lines;  // dotted field -> 1-based line (YAML only)

  std::string at(const std::string& field) const {
    auto it = lines.find(field);
    if (it == lines.end()) return fmt::format("{}: '{}'", source, field);
    return fmt::format("{}:{}: '{}'", source, it->second, field);
  }
};

// A YAML scalar as the JSON value it reads as: quoted text stays a string; plain text is a
// number, a bool or null when it reads fully as one.
json scalar_to_json(const YAML::Node& n) {
  const std::string& s = n.Scalar();
  if (n.Tag() == "!") return s;  // quoted
  if (s == "~" || s == "null" || s.empty()) return nullptr;
  if (s == "true" || s == "True") return true;
  if (s == "false" || s == "False") return false;
  int64_t i = 0;
  auto r = std::from_chars(s.data(), s.data() + s.size(), i);
  if (r.ec == std::errc() && r.ptr == s.data() + s.size()) return i;
  double d = 0;
  auto rd = std::from_chars(s.data(), s.data() + s.size(), d);
  if (rd.ec == std::errc() && rd.ptr == s.data() + s.size() && std::isfinite(d)) return d;
  return s;
}

json yaml_to_json(const YAML::Node& n, const std::string& prefix, Locator* loc) {
  if (n.IsMap()) {
    json j = json::object();
    for (const auto& kv : n) {
      std::string k = kv.first.Scalar();
      std::string field = prefix.empty() ? k : prefix + "." + k;
      loc->lines.emplace(field, kv.first.Mark().line + 1);
      j[k] = yaml_to_json(kv.second, field, loc);
    }
    return j;
  }
  if (n.IsSequence()) {
    json j = json::array();
    for (const auto& item : n) j.push_back(yaml_to_json(item, prefix, loc));
    return j;
  }
  if (n.IsScalar()) return scalar_to_json(n);
  return nullptr;
}

// A value as JSON text for an error message (never throws: bytes that are not UTF-8 become
// U+FFFD, though parse_job_spec refuses such text first and stored specs are built from it).
std::string shown(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

std::string list_of(const std::set<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

Status check_fields(const json& j, const std::string& section, const std::set<std::string>& allowed,
                    const Locator& loc) {
  if (!j.is_object())
    return Status::Invalid("{} must be a mapping of fields ({})", loc.at(section),
                           list_of(allowed));
  for (const auto& [k, v] : j.items()) {
    if (!allowed.count(k))
      return Status::Invalid("{} is not a field of {}; the fields are: {}",
                             loc.at(section.empty() ? k : section + "." + k),
                             section.empty() ? "a job spec" : "'" + section + "'",
                             list_of(allowed));
  }
  return Status::OK();
}

Result<std::string> get_string(const json& j, const std::string& key, const std::string& field,
                               const Locator& loc) {
  const json& v = j.at(key);
  if (!v.is_string() || v.get<std::string>().empty())
    return Status::Invalid("{} must be non-empty text, got {}", loc.at(field), shown(v));
  return v.get<std::string>();
}

Result<int64_t> get_int(const json& j, const std::string& key, const std::string& field, int64_t lo,
                        int64_t hi, const Locator& loc) {
  const json& v = j.at(key);
  if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
    return Status::Invalid("{} must be a whole number from {} to {}, got {}", loc.at(field), lo, hi,
                           shown(v));
  return v.get<int64_t>();
}

// A number of bytes or seconds given as a number or as text with a unit.
template <typename Parse>
Result<int64_t> get_amount(const json& j, const std::string& key, const std::string& field,
                           Parse parse, const Locator& loc) {
  const json& v = j.at(key);
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return v.get<int64_t>();
  if (v.is_string()) return parse(v.get<std::string>(), loc.at(field));
  return Status::Invalid("{} must be a non-negative number or text with a unit, got {}",
                         loc.at(field), shown(v));
}

// `text` (YAML or JSON, a mapping) as JSON, each field's line recorded in `loc` (whose source
// names the file in errors); `what` says what the mapping should be when it is not one.
Result<json> parse_yaml_map(const std::string& text, const std::string& what, Locator* loc) {
  const std::string& path = loc->source;
  size_t bad = 0;
  if (!is_valid_utf8(text, &bad)) {
    int line = 1 + static_cast<int>(std::count(text.begin(), text.begin() + bad, '\n'));
    return Status::Invalid("{}:{}: byte {} is not UTF-8 text: save the spec as UTF-8", path, line,
                           bad);
  }
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return Status::Invalid("{}:{}: not valid YAML or JSON: {}", path, e.mark.line + 1, e.msg);
  }
  if (!root.IsMap()) return Status::Invalid("{}: {}", path, what);
  return yaml_to_json(root, "", loc);
}

Result<JobSpec> check_spec(const json& j, const Locator& loc) {
  static const std::set<std::string> kTop = {"kind",
                                             "name",
                                             "spec",
                                             "model",
                                             "dataset",
                                             "split",
                                             "hyperparameters",
                                             "command",
                                             "output_dataset",
                                             "resources",
                                             "priority",
                                             "max_retries",
                                             "max_run_time",
                                             "owner",
                                             "on_success",
                                             "working_dir",
                                             "experiment",
                                             "distributed"};
  DLSYS_RETURN_IF_ERROR(check_fields(j, "", kTop, loc));
  JobSpec s;
  if (!j.contains("kind"))
    return Status::Invalid("{}: a job spec needs 'kind': train, command or predict", loc.source);
  std::string kind;
  DLSYS_ASSIGN_OR_RETURN(kind, get_string(j, "kind", "kind", loc));
  if (kind == "train")
    s.kind = JobKind::kTrain;
  else if (kind == "command")
    s.kind = JobKind::kCommand;
  else if (kind == "predict")
    s.kind = JobKind::kPredict;
  else
    return Status::Invalid("{} is '{}'; the kinds are train, command and predict", loc.at("kind"),
                           kind);
  // Fields that belong to other kinds are errors, not ignored.
  const std::map<std::string, std::set<JobKind>> kFor = {
      {"spec", {JobKind::kTrain}},
      {"model", {JobKind::kTrain, JobKind::kPredict}},
      {"dataset", {JobKind::kTrain, JobKind::kCommand, JobKind::kPredict}},
      {"split", {JobKind::kTrain, JobKind::kCommand, JobKind::kPredict}},
      {"hyperparameters", {JobKind::kTrain, JobKind::kCommand}},
      {"command", {JobKind::kCommand}},
      {"working_dir", {JobKind::kCommand}},
      {"output_dataset", {JobKind::kPredict}},
      {"on_success", {JobKind::kTrain, JobKind::kCommand}}};
  for (const auto& [field, kinds] : kFor)
    if (j.contains(field) && !kinds.count(s.kind)) {
      std::string ok;
      for (JobKind k : kinds) ok += std::string(ok.empty() ? "" : ", ") + job_kind_name(k);
      return Status::Invalid("{} does not apply to a {} job (it is for: {})", loc.at(field), kind,
                             ok);
    }
  s.name = kind;
  if (j.contains("name")) {
    DLSYS_ASSIGN_OR_RETURN(s.name, get_string(j, "name", "name", loc));
    if (s.name.size() > kMaxName)
      return Status::Invalid("{} is {} characters; at most {}", loc.at("name"), s.name.size(),
                             kMaxName);
  }
  if (j.contains("spec")) {
    DLSYS_ASSIGN_OR_RETURN(s.spec, get_string(j, "spec", "spec", loc));
  }
  if (j.contains("experiment")) {
    DLSYS_ASSIGN_OR_RETURN(s.experiment, get_string(j, "experiment", "experiment", loc));
    if (s.experiment.size() > kMaxName)
      return Status::Invalid("{} is {} characters; at most {}", loc.at("experiment"),
                             s.experiment.size(), kMaxName);
  }
  if (j.contains("model")) {
    std::string m;
    DLSYS_ASSIGN_OR_RETURN(m, get_string(j, "model", "model", loc));
    DLSYS_ASSIGN_OR_RETURN(s.model, parse_version_ref(m, loc.at("model")));
    s.has_model = true;
  }
  if (j.contains("dataset")) {
    std::string d;
    DLSYS_ASSIGN_OR_RETURN(d, get_string(j, "dataset", "dataset", loc));
    DLSYS_ASSIGN_OR_RETURN(s.dataset, parse_version_ref(d, loc.at("dataset")));
    s.has_dataset = true;
  }
  if (j.contains("split")) {
    DLSYS_ASSIGN_OR_RETURN(s.split, get_string(j, "split", "split", loc));
  }
  if (j.contains("split") && !s.has_dataset)
    return Status::Invalid("{} needs 'dataset' (the split of which dataset version?)",
                           loc.at("split"));
  if (j.contains("hyperparameters")) {
    const json& h = j.at("hyperparameters");
    if (!h.is_object())
      return Status::Invalid("{} must be a mapping of names to values (lr: 0.01)",
                             loc.at("hyperparameters"));
    for (const auto& [k, v] : h.items())
      if (!(v.is_number() || v.is_string() || v.is_boolean()))
        return Status::Invalid("{} must be a number, text or true/false, got {}",
                               loc.at("hyperparameters." + k), shown(v));
    s.hyperparameters = h;
  }
  if (j.contains("command")) {
    const json& c = j.at("command");
    if (!c.is_array() || c.empty())
      return Status::Invalid(
          "{} must be a list: the program and its arguments ([python3, "
          "train.py, --epochs, 3])",
          loc.at("command"));
    for (const json& a : c) {
      // Plain YAML reads `true` or `3` as a bool or a number: in a command they are words.
      if (!a.is_string() && !a.is_number() && !a.is_boolean())
        return Status::Invalid("{} has {}; every item must be text or a number", loc.at("command"),
                               shown(a));
      s.command.push_back(a.is_string() ? a.get<std::string>() : a.dump());
    }
  }
  if (j.contains("working_dir")) {
    DLSYS_ASSIGN_OR_RETURN(s.working_dir, get_string(j, "working_dir", "working_dir", loc));
  }
  if (j.contains("output_dataset")) {
    DLSYS_ASSIGN_OR_RETURN(s.output_dataset,
                           get_string(j, "output_dataset", "output_dataset", loc));
  }
  if (j.contains("resources")) {
    const json& r = j.at("resources");
    DLSYS_RETURN_IF_ERROR(check_fields(r, "resources", {"threads", "memory"}, loc));
    if (r.contains("threads")) {
      DLSYS_ASSIGN_OR_RETURN(s.resources.threads,
                             get_int(r, "threads", "resources.threads", 1, kMaxThreads, loc));
    }
    if (r.contains("memory")) {
      DLSYS_ASSIGN_OR_RETURN(s.resources.memory_bytes,
                             get_amount(r, "memory", "resources.memory", parse_bytes, loc));
    }
  }
  if (j.contains("distributed")) {
    const json& d = j.at("distributed");
    DLSYS_RETURN_IF_ERROR(check_fields(d, "distributed", {"workers", "zero", "min_workers"}, loc));
    if (d.contains("workers")) {
      DLSYS_ASSIGN_OR_RETURN(s.workers, get_int(d, "workers", "distributed.workers", 1, 64, loc));
      if ((s.workers & (s.workers - 1)) != 0)
        return Status::Invalid(
            "{} is {}: data-parallel training runs on a power of two of workers (1, 2, 4, ...)",
            loc.at("distributed.workers"), s.workers);
    }
    if (d.contains("zero")) {
      DLSYS_ASSIGN_OR_RETURN(s.zero, get_int(d, "zero", "distributed.zero", 0, 1, loc));
    }
    if (d.contains("min_workers")) {
      DLSYS_ASSIGN_OR_RETURN(s.min_workers,
                             get_int(d, "min_workers", "distributed.min_workers", 1, 64, loc));
      if (s.min_workers > s.workers)
        return Status::Invalid("{} is {}, more than distributed.workers ({})",
                               loc.at("distributed.min_workers"), s.min_workers, s.workers);
    }
  }
  if (j.contains("priority")) {
    DLSYS_ASSIGN_OR_RETURN(s.priority, get_int(j, "priority", "priority", -1000000, 1000000, loc));
  }
  if (j.contains("max_retries")) {
    DLSYS_ASSIGN_OR_RETURN(s.max_retries,
                           get_int(j, "max_retries", "max_retries", 0, kMaxRetries, loc));
  }
  if (j.contains("max_run_time")) {
    DLSYS_ASSIGN_OR_RETURN(s.max_run_seconds, get_amount(j, "max_run_time", "max_run_time",
                                                         parse_duration_seconds, loc));
  }
  if (j.contains("owner")) {
    DLSYS_ASSIGN_OR_RETURN(s.owner, get_string(j, "owner", "owner", loc));
  }
  if (j.contains("on_success")) {
    const json& o = j.at("on_success");
    DLSYS_RETURN_IF_ERROR(check_fields(o, "on_success", {"register", "alias"}, loc));
    if (o.contains("register")) {
      DLSYS_ASSIGN_OR_RETURN(s.register_model,
                             get_string(o, "register", "on_success.register", loc));
    }
    if (o.contains("alias")) {
      DLSYS_ASSIGN_OR_RETURN(s.move_alias, get_string(o, "alias", "on_success.alias", loc));
      if (s.register_model.empty())
        return Status::Invalid("{} needs 'register': the alias of which model?",
                               loc.at("on_success.alias"));
    }
  }
  // What each kind needs.
  switch (s.kind) {
    case JobKind::kTrain:
      if (s.spec.empty())
        return Status::Invalid(
            "{}: a train job needs 'spec' (a training spec YAML, e.g. examples/digits/mlp.yaml; "
            "with 'model', a registered version to fine-tune, a fine-tuning spec such as "
            "examples/digits/finetune.yaml, whose model.onnx the version replaces)",
            loc.source);
      break;
    case JobKind::kCommand:
      if (s.workers > 0)
        return Status::Invalid("{}: 'distributed' is for train jobs (a command runs as written)",
                               loc.at("distributed"));
      if (s.command.empty())
        return Status::Invalid("{}: a command job needs 'command': [program, arguments...]",
                               loc.source);
      break;
    case JobKind::kPredict:
      if (s.workers > 0)
        return Status::Invalid("{}: 'distributed' is for train jobs", loc.at("distributed"));
      if (!s.has_model || !s.has_dataset || s.output_dataset.empty())
        return Status::Invalid(
            "{}: a predict job needs 'model' (name@version), 'dataset' (name@version) and "
            "'output_dataset' (where the predictions go)",
            loc.source);
      break;
  }
  return s;
}

}  // namespace

std::string VersionRef::str() const {
  if (version > 0) return fmt::format("{}@{}", name, version);
  if (!alias.empty()) return name + "@" + alias;
  return name;
}

Result<VersionRef> parse_version_ref(const std::string& text, const std::string& what) {
  VersionRef r;
  size_t at = text.find('@');
  r.name = text.substr(0, at);
  auto bad = [&](const std::string& why) {
    return Status::Invalid(
        "{} is '{}': {}; write name, name@3 (a version) or name@production "
        "(an alias)",
        what, text, why);
  };
  if (r.name.empty()) return bad("the name is empty");
  if (r.name.size() > kMaxName) return bad("the name is too long");
  if (at == std::string::npos) return r;
  std::string v = text.substr(at + 1);
  if (v.empty()) return bad("nothing after '@'");
  if (v.find('@') != std::string::npos) return bad("more than one '@'");
  if (std::isdigit(static_cast<unsigned char>(v[0]))) {
    auto res = std::from_chars(v.data(), v.data() + v.size(), r.version);
    if (res.ec != std::errc() || res.ptr != v.data() + v.size() || r.version < 1)
      return bad("a version is a number from 1");
  } else {
    r.alias = v;
  }
  return r;
}

const char* job_kind_name(JobKind k) {
  switch (k) {
    case JobKind::kTrain:
      return "train";
    case JobKind::kCommand:
      return "command";
    case JobKind::kPredict:
      return "predict";
  }
  return "?";
}

Result<int64_t> parse_bytes(const std::string& text, const std::string& what) {
  double v = 0;
  const char* end = text.data() + text.size();
  auto r = std::from_chars(text.data(), end, v);
  if (r.ec != std::errc() || !(v >= 0) || !std::isfinite(v))
    return Status::Invalid("{} is '{}': write bytes as 2GiB, 512MiB, 1.5G or a number", what, text);
  std::string unit(r.ptr, end);
  static const std::map<std::string, double> kUnits = {{"", 1},
                                                       {"B", 1},
                                                       {"k", 1e3},
                                                       {"K", 1e3},
                                                       {"KB", 1e3},
                                                       {"M", 1e6},
                                                       {"MB", 1e6},
                                                       {"G", 1e9},
                                                       {"GB", 1e9},
                                                       {"T", 1e12},
                                                       {"TB", 1e12},
                                                       {"Ki", 1024.0},
                                                       {"KiB", 1024.0},
                                                       {"Mi", 1048576.0},
                                                       {"MiB", 1048576.0},
                                                       {"Gi", 1073741824.0},
                                                       {"GiB", 1073741824.0},
                                                       {"Ti", 1099511627776.0},
                                                       {"TiB", 1099511627776.0}};
  auto u = kUnits.find(unit);
  if (u == kUnits.end())
    return Status::Invalid("{} is '{}': unknown unit '{}' (use B, K, M, G, T, KiB, MiB, GiB, TiB)",
                           what, text, unit);
  double bytes = v * u->second;
  if (bytes > 9.2e18) return Status::Invalid("{} is '{}': too large", what, text);
  return static_cast<int64_t>(bytes);
}

Result<int64_t> parse_duration_seconds(const std::string& text, const std::string& what) {
  double v = 0;
  const char* end = text.data() + text.size();
  auto r = std::from_chars(text.data(), end, v);
  if (r.ec != std::errc() || !(v >= 0) || !std::isfinite(v))
    return Status::Invalid("{} is '{}': write a duration as 90s, 30m, 2h, 1d or seconds", what,
                           text);
  std::string unit(r.ptr, end);
  static const std::map<std::string, double> kUnits = {{"", 1},     {"s", 1},    {"m", 60},
                                                       {"min", 60}, {"h", 3600}, {"d", 86400}};
  auto u = kUnits.find(unit);
  if (u == kUnits.end())
    return Status::Invalid("{} is '{}': unknown unit '{}' (use s, m, h or d)", what, text, unit);
  double s = v * u->second;
  if (s > 1e12) return Status::Invalid("{} is '{}': too long", what, text);
  return static_cast<int64_t>(std::ceil(s));
}

Result<json> yaml_text_to_json(const std::string& text, const std::string& path,
                               const std::string& what) {
  Locator loc{path, {}};
  return parse_yaml_map(text, what, &loc);
}

Result<JobSpec> parse_job_spec(const std::string& text, const std::string& path) {
  Locator loc{path, {}};
  DLSYS_ASSIGN_OR_RETURN(
      json j, parse_yaml_map(text, "a job spec is a mapping of fields (kind: train, ...)", &loc));
  return check_spec(j, loc);
}

Result<JobSpec> load_job_spec(const std::string& path) {
  std::string text;
  DLSYS_ASSIGN_OR_RETURN(text, read_file(path));
  DLSYS_ASSIGN_OR_RETURN(JobSpec s, parse_job_spec(text, path));
  // Paths in the file are relative to its folder, as a training spec's data paths are.
  std::error_code ec;
  const std::filesystem::path folder = std::filesystem::absolute(path, ec).parent_path();
  auto resolve = [&folder](const std::string& p) {
    if (p.empty() || p[0] == '/') return p;
    return (folder / p).lexically_normal().string();
  };
  s.spec = resolve(s.spec);
  if (s.kind == JobKind::kCommand)
    s.working_dir =
        s.working_dir.empty() ? folder.lexically_normal().string() : resolve(s.working_dir);
  return s;
}

json to_json(const JobSpec& s) {
  json j = {{"kind", job_kind_name(s.kind)},
            {"name", s.name},
            {"resources", {{"threads", s.resources.threads}, {"memory", s.resources.memory_bytes}}},
            {"priority", s.priority},
            {"max_retries", s.max_retries},
            {"max_run_time", s.max_run_seconds}};
  if (s.workers > 0) {
    j["distributed"] = {{"workers", s.workers}, {"zero", s.zero}};
    if (s.min_workers > 0) j["distributed"]["min_workers"] = s.min_workers;
  }
  if (!s.spec.empty()) j["spec"] = s.spec;
  if (!s.experiment.empty()) j["experiment"] = s.experiment;
  if (s.has_model) j["model"] = s.model.str();
  if (s.has_dataset) j["dataset"] = s.dataset.str();
  if (!s.split.empty()) j["split"] = s.split;
  if (s.kind != JobKind::kPredict) j["hyperparameters"] = s.hyperparameters;
  if (!s.command.empty()) j["command"] = s.command;
  if (!s.working_dir.empty()) j["working_dir"] = s.working_dir;
  if (!s.output_dataset.empty()) j["output_dataset"] = s.output_dataset;
  if (!s.owner.empty()) j["owner"] = s.owner;
  if (!s.register_model.empty()) {
    j["on_success"] = {{"register", s.register_model}};
    if (!s.move_alias.empty()) j["on_success"]["alias"] = s.move_alias;
  }
  return j;
}

Result<JobSpec> job_spec_from_json(const json& j, const std::string& what) {
  return check_spec(j, Locator{what, {}});
}

}  // namespace dlsys::jobs
