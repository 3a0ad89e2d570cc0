#include "jobs/search_spec.h"

#include <cmath>
#include <filesystem>
#include <random>
#include <set>

#include "core/file_util.h"

namespace dlsys::jobs {

using json = nlohmann::json;

namespace {

constexpr int64_t kMaxTrials = 10000;
constexpr int64_t kMaxEpochs = 1000000;

std::string shown(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

std::string list_of(const std::set<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// Field checks that name `where` ("search.yaml") and the dotted field.
struct Checker {
  std::string where;

  Status fields(const json& j, const std::string& section,
                const std::set<std::string>& allowed) const {
    if (!j.is_object())
      return Status::Invalid("{}: '{}' must be a mapping of fields ({})", where, section,
                             list_of(allowed));
    for (const auto& [k, v] : j.items())
      if (!allowed.count(k))
        return Status::Invalid("{}: '{}' is not a field of {}; the fields are: {}", where,
                               section.empty() ? k : section + "." + k,
                               section.empty() ? "a search spec" : "'" + section + "'",
                               list_of(allowed));
    return Status::OK();
  }
  Result<std::string> text(const json& v, const std::string& field) const {
    if (!v.is_string() || v.get<std::string>().empty())
      return Status::Invalid("{}: '{}' must be non-empty text, got {}", where, field, shown(v));
    return v.get<std::string>();
  }
  Result<int64_t> integer(const json& v, const std::string& field, int64_t lo, int64_t hi) const {
    if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
      return Status::Invalid("{}: '{}' must be a whole number from {} to {}, got {}", where, field,
                             lo, hi, shown(v));
    return v.get<int64_t>();
  }
};

const char* kind_key(ParamSpace::Kind k) {
  switch (k) {
    case ParamSpace::Kind::kChoice:
      return "choice";
    case ParamSpace::Kind::kUniform:
      return "uniform";
    case ParamSpace::Kind::kLogUniform:
      return "log_uniform";
    case ParamSpace::Kind::kInt:
      return "int";
  }
  return "choice";
}

Result<ParamSpace> check_param(const std::string& name, const json& v, const Checker& c) {
  const std::string field = "space." + name;
  if (!v.is_object() || v.size() != 1)
    return Status::Invalid(
        "{}: '{}' must be one of {{choice: [a, b, ...]}}, {{uniform: [low, high]}}, "
        "{{log_uniform: [low, high]}}, {{int: [low, high]}}; got {}",
        c.where, field, shown(v));
  ParamSpace p;
  p.name = name;
  const std::string key = v.begin().key();
  const json& arg = v.begin().value();
  if (key == "choice") {
    p.kind = ParamSpace::Kind::kChoice;
    if (!arg.is_array() || arg.empty() || arg.size() > 1000)
      return Status::Invalid("{}: '{}.choice' must be a list of 1 to 1000 values, got {}", c.where,
                             field, shown(arg));
    for (const json& x : arg) {
      if (!x.is_primitive() || x.is_null())
        return Status::Invalid("{}: '{}.choice' holds {}: choices are numbers, text or booleans",
                               c.where, field, shown(x));
      p.choices.push_back(x);
    }
    return p;
  }
  if (key == "uniform")
    p.kind = ParamSpace::Kind::kUniform;
  else if (key == "log_uniform")
    p.kind = ParamSpace::Kind::kLogUniform;
  else if (key == "int")
    p.kind = ParamSpace::Kind::kInt;
  else
    return Status::Invalid("{}: '{}' has '{}': use choice, uniform, log_uniform or int", c.where,
                           field, key);
  if (!arg.is_array() || arg.size() != 2 || !arg[0].is_number() || !arg[1].is_number())
    return Status::Invalid("{}: '{}.{}' must be [low, high] (two numbers), got {}", c.where, field,
                           key, shown(arg));
  p.low = arg[0].get<double>();
  p.high = arg[1].get<double>();
  if (!std::isfinite(p.low) || !std::isfinite(p.high) || !(p.low < p.high) ||
      !std::isfinite(p.high - p.low))
    return Status::Invalid("{}: '{}.{}' needs finite low < high, got {}", c.where, field, key,
                           shown(arg));
  if (p.kind == ParamSpace::Kind::kLogUniform && p.low <= 0)
    return Status::Invalid("{}: '{}.log_uniform' needs low > 0 (a log scale), got {}", c.where,
                           field, p.low);
  // Whole numbers a double holds exactly (the draws are made in doubles).
  constexpr double kExact = 9007199254740992.0;  // 2^53
  if (p.kind == ParamSpace::Kind::kInt &&
      (!arg[0].is_number_integer() || !arg[1].is_number_integer() || std::fabs(p.low) > kExact ||
       std::fabs(p.high) > kExact))
    return Status::Invalid("{}: '{}.int' needs whole numbers within +-2^53, got {}", c.where, field,
                           shown(arg));
  return p;
}

Result<SearchSpec> check_search(const json& j, const std::string& where) {
  const Checker c{where};
  DLSYS_RETURN_IF_ERROR(c.fields(j, "",
                                 {"name", "trial", "space", "algorithm", "trials", "seed", "metric",
                                  "mode", "parallelism", "epochs", "asha", "register"}));
  SearchSpec s;
  for (const char* required : {"name", "trial", "space"})
    if (!j.contains(required))
      return Status::Invalid(
          "{}: a search spec needs '{}' (name, trial: a train job, space: the hyperparameters "
          "to search; docs/search.md)",
          where, required);
  DLSYS_ASSIGN_OR_RETURN(s.name, c.text(j["name"], "name"));
  if (s.name.size() > 200) return Status::Invalid("{}: 'name' is over 200 characters", where);
  if (!j["trial"].is_object())
    return Status::Invalid("{}: 'trial' must be a train job spec (a mapping: spec, resources...)",
                           where);
  json trial = j["trial"];
  if (!trial.contains("kind")) trial["kind"] = "train";
  DLSYS_ASSIGN_OR_RETURN(s.trial, job_spec_from_json(trial, where + ": 'trial'"));
  if (s.trial.kind != JobKind::kTrain || s.trial.spec.empty())
    return Status::Invalid(
        "{}: 'trial' must be a train job with a training spec (kind: train, spec: FILE.yaml)",
        where);
  if (!s.trial.register_model.empty())
    return Status::Invalid(
        "{}: 'trial.on_success' is not for trials: give the search 'register: {{model: NAME}}' "
        "to register the best trial's model",
        where);
  if (!j["space"].is_object() || j["space"].empty() || j["space"].size() > 32)
    return Status::Invalid("{}: 'space' must map 1 to 32 hyperparameters to their ranges, got {}",
                           where, shown(j["space"]));
  for (const auto& [k, v] : j["space"].items()) {
    if (k == "epochs" || k == "train.epochs")
      return Status::Invalid(
          "{}: 'space.{}': the epochs are the search's budget ('epochs', and 'asha' rungs), not "
          "a hyperparameter to search",
          where, k);
    DLSYS_ASSIGN_OR_RETURN(ParamSpace p, check_param(k, v, c));
    s.space.push_back(std::move(p));
  }
  const std::string algorithm = j.value("algorithm", std::string("random"));
  if (algorithm != "grid" && algorithm != "random")
    return Status::Invalid("{}: 'algorithm' is '{}': use grid or random", where,
                           shown(j["algorithm"]));
  s.grid = algorithm == "grid";
  if (s.grid)
    for (const ParamSpace& p : s.space)
      if (p.kind != ParamSpace::Kind::kChoice)
        return Status::Invalid(
            "{}: 'space.{}' is a range ({}): a grid search needs choice lists (choice: [...]); "
            "use algorithm: random to draw from ranges",
            where, p.name, kind_key(p.kind));
  if (j.contains("trials")) {
    DLSYS_ASSIGN_OR_RETURN(s.trials, c.integer(j["trials"], "trials", s.grid ? 0 : 1, kMaxTrials));
  } else if (!s.grid) {
    return Status::Invalid("{}: a random search needs 'trials' (how many to draw)", where);
  }
  if (j.contains("seed")) {
    DLSYS_ASSIGN_OR_RETURN(int64_t seed, c.integer(j["seed"], "seed", 0, INT64_MAX));
    s.seed = static_cast<uint64_t>(seed);
  }
  if (j.contains("metric")) {
    DLSYS_ASSIGN_OR_RETURN(s.metric, c.text(j["metric"], "metric"));
  }
  const std::string mode = j.value("mode", std::string("max"));
  if (mode != "max" && mode != "min")
    return Status::Invalid("{}: 'mode' is {}: use max (higher is better) or min", where,
                           shown(j["mode"]));
  s.maximize = mode == "max";
  if (j.contains("parallelism")) {
    DLSYS_ASSIGN_OR_RETURN(s.parallelism, c.integer(j["parallelism"], "parallelism", 1, 1000));
  }
  if (j.contains("epochs")) {
    DLSYS_ASSIGN_OR_RETURN(s.epochs, c.integer(j["epochs"], "epochs", 0, kMaxEpochs));
  }
  if (j.contains("asha") && !j["asha"].is_null()) {
    const json& a = j["asha"];
    DLSYS_RETURN_IF_ERROR(c.fields(a, "asha", {"min_epochs", "reduction_factor"}));
    s.asha = true;
    if (s.epochs < 1)
      return Status::Invalid("{}: 'asha' needs 'epochs' (the top rung's budget, e.g. 27)", where);
    if (a.contains("min_epochs")) {
      DLSYS_ASSIGN_OR_RETURN(s.min_epochs,
                             c.integer(a["min_epochs"], "asha.min_epochs", 1, s.epochs));
    }
    if (a.contains("reduction_factor")) {
      DLSYS_ASSIGN_OR_RETURN(s.reduction_factor,
                             c.integer(a["reduction_factor"], "asha.reduction_factor", 2, 100));
    }
  }
  if (s.epochs > 0)
    for (const char* e : {"epochs", "train.epochs"})
      if (s.trial.hyperparameters.contains(e))
        return Status::Invalid(
            "{}: 'trial.hyperparameters.{}': the search's 'epochs' (and 'asha' rungs) set every "
            "trial's epochs; leave it out of the trial",
            where, e);
  if (j.contains("register")) {
    const json& r = j["register"];
    DLSYS_RETURN_IF_ERROR(c.fields(r, "register", {"model", "alias"}));
    if (!r.contains("model"))
      return Status::Invalid("{}: 'register' needs 'model' (the name to register as)", where);
    DLSYS_ASSIGN_OR_RETURN(s.register_model, c.text(r["model"], "register.model"));
    if (r.contains("alias")) {
      DLSYS_ASSIGN_OR_RETURN(s.move_alias, c.text(r["alias"], "register.alias"));
    }
  }
  return s;
}

// Uniform in [0, 1) from 53 bits of the generator: the same on every platform.
double unit(std::mt19937_64& g) {
  return static_cast<double>(g() >> 11) * 0x1.0p-53;
}

}  // namespace

Result<SearchSpec> parse_search_spec(const std::string& text, const std::string& path) {
  DLSYS_ASSIGN_OR_RETURN(
      json j, yaml_text_to_json(text, path,
                                "a search spec is a mapping of fields (name, trial, space, ...)"));
  return check_search(j, path);
}

Result<SearchSpec> load_search_spec(const std::string& path) {
  std::string text;
  DLSYS_ASSIGN_OR_RETURN(text, read_file(path));
  DLSYS_ASSIGN_OR_RETURN(SearchSpec s, parse_search_spec(text, path));
  std::error_code ec;
  const std::filesystem::path folder = std::filesystem::absolute(path, ec).parent_path();
  if (!s.trial.spec.empty() && s.trial.spec[0] != '/')
    s.trial.spec = (folder / s.trial.spec).lexically_normal().string();
  return s;
}

json to_json(const SearchSpec& s) {
  json space = json::object();
  for (const ParamSpace& p : s.space) {
    if (p.kind == ParamSpace::Kind::kChoice)
      space[p.name] = {{"choice", p.choices}};
    else if (p.kind == ParamSpace::Kind::kInt)
      space[p.name] = {{"int", {static_cast<int64_t>(p.low), static_cast<int64_t>(p.high)}}};
    else
      space[p.name] = {{kind_key(p.kind), {p.low, p.high}}};
  }
  json trial = jobs::to_json(s.trial);
  json j = {{"name", s.name},
            {"trial", trial},
            {"space", space},
            {"algorithm", s.grid ? "grid" : "random"},
            {"trials", s.trials},
            {"seed", static_cast<int64_t>(s.seed & INT64_MAX)},
            {"metric", s.metric},
            {"mode", s.maximize ? "max" : "min"},
            {"parallelism", s.parallelism},
            {"epochs", s.epochs}};
  if (s.asha) j["asha"] = {{"min_epochs", s.min_epochs}, {"reduction_factor", s.reduction_factor}};
  if (!s.register_model.empty()) {
    j["register"] = {{"model", s.register_model}};
    if (!s.move_alias.empty()) j["register"]["alias"] = s.move_alias;
  }
  return j;
}

Result<SearchSpec> search_spec_from_json(const json& j, const std::string& what) {
  return check_search(j, what);
}

std::vector<int64_t> rung_epochs(const SearchSpec& s) {
  if (!s.asha) return {s.epochs};
  std::vector<int64_t> out;
  for (int64_t e = s.min_epochs; e < s.epochs; e *= s.reduction_factor) {
    out.push_back(e);
    if (e > s.epochs / s.reduction_factor) break;  // the next would pass the top
  }
  out.push_back(s.epochs);
  return out;
}

std::vector<json> trial_params(const SearchSpec& s) {
  std::vector<json> out;
  if (s.grid) {
    std::vector<size_t> at(s.space.size(), 0);
    while (s.trials == 0 || static_cast<int64_t>(out.size()) < s.trials) {
      json p = json::object();
      for (size_t d = 0; d < s.space.size(); ++d) p[s.space[d].name] = s.space[d].choices[at[d]];
      out.push_back(std::move(p));
      if (static_cast<int64_t>(out.size()) >= kMaxTrials) break;
      // The next combination, the last dimension fastest.
      size_t d = s.space.size();
      while (d > 0) {
        --d;
        if (++at[d] < s.space[d].choices.size()) break;
        at[d] = 0;
        if (d == 0) return out;
      }
    }
    return out;
  }
  std::mt19937_64 g(s.seed);
  for (int64_t t = 0; t < s.trials; ++t) {
    json p = json::object();
    for (const ParamSpace& d : s.space) {
      const double u = unit(g);
      switch (d.kind) {
        case ParamSpace::Kind::kChoice:
          p[d.name] =
              d.choices[std::min(d.choices.size() - 1,
                                 static_cast<size_t>(u * static_cast<double>(d.choices.size())))];
          break;
        case ParamSpace::Kind::kUniform:
          p[d.name] = d.low + u * (d.high - d.low);
          break;
        case ParamSpace::Kind::kLogUniform:
          p[d.name] = std::exp(std::log(d.low) + u * (std::log(d.high) - std::log(d.low)));
          break;
        case ParamSpace::Kind::kInt:
          p[d.name] = static_cast<int64_t>(d.low) +
                      std::min(static_cast<int64_t>(d.high - d.low),
                               static_cast<int64_t>(u * (d.high - d.low + 1)));
          break;
      }
    }
    out.push_back(std::move(p));
  }
  return out;
}

JobSpec trial_job(const SearchSpec& s, const std::string& search_name, int64_t trial,
                  const json& params, int64_t epochs) {
  JobSpec j = s.trial;
  j.name = fmt::format("{}-t{}", search_name, trial);
  j.experiment = search_name;
  for (const auto& [k, v] : params.items()) j.hyperparameters[k] = v;
  if (epochs > 0) j.hyperparameters["epochs"] = epochs;
  return j;
}

}  // namespace dlsys::jobs
