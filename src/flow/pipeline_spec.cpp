#include "flow/pipeline_spec.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <functional>

#include "flow/cron.h"
#include "jobs/job_spec.h"

namespace dlsys::flow {

using nlohmann::json;

// A step's longest timeout: a year.
constexpr int64_t kMaxTimeoutSeconds = int64_t{366} * 24 * 3600;

const std::map<std::string, StepKindInfo>& step_kinds() {
  static const std::map<std::string, StepKindInfo> kinds = [] {
    std::map<std::string, StepKindInfo> m;
    auto add = [&m](StepKindInfo k) { m[k.kind] = std::move(k); };
    add({"data.push",
         {"file", "name", "split", "shard_rows"},
         {"file", "name"},
         {"dataset", "version", "rows", "unchanged"}});
    add({"data.validate",
         {"dataset", "schema"},
         {"dataset"},
         {"dataset", "report", "ok", "rows", "problems"}});
    add({"train",
         {"spec", "model", "dataset", "split", "hyperparameters", "threads", "memory"},
         {"dataset"},
         {"run", "job", "model_file"},
         true});
    add({"search", {"search", "dataset"}, {"search"}, {"search_id", "best_run", "model"}, true});
    add({"evaluate",
         {"model", "dataset", "split", "compare", "label"},
         {"model", "dataset"},
         {"run", "model", "rows", "baseline", "baseline_model"},
         true});
    add({"gate", {}, {}, {"passed", "explanation"}, false, false});
    add({"register", {"run", "name", "alias"}, {"run", "name"}, {"model", "version"}});
    add({"alias", {"model", "alias"}, {"model", "alias"}, {"model"}});
    add({"deploy",
         {"deployment", "model", "weight", "alias", "config"},
         {"deployment", "model"},
         {"deployment", "version", "weight", "promoted", "created"}});
    add({"predict", {"model", "dataset", "output"}, {"model", "dataset", "output"}, {"dataset"}});
    add({"command",
         {"command", "files", "dataset", "threads", "memory", "env"},
         {"command"},
         {"run", "job", "artifacts"},
         true});
    add({"notify", {"url", "message"}, {"url"}, {"status"}});
    return m;
  }();
  return kinds;
}

const StepSpec* PipelineSpec::step(const std::string& name) const {
  for (const StepSpec& s : steps)
    if (s.name == name) return &s;
  return nullptr;
}

namespace {

std::string list_of(const std::set<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out.empty() ? "(none)" : out;
}

std::string shown(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

// A step or parameter name: letters, digits, '_' and '-', starting with a letter.
bool valid_name(const std::string& s) {
  if (s.empty() || s.size() > 64 || !std::isalpha(static_cast<unsigned char>(s[0]))) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
  return true;
}

// Where a field is: "retrain.yaml:12: steps[2].with.model".
struct Where {
  std::string path;
  YAML::Node root;
  int line_of(const YAML::Node& n) const { return n ? n.Mark().line + 1 : 0; }
  std::string at(const YAML::Node& n, const std::string& field) const {
    const int line = line_of(n);
    return line > 0 ? fmt::format("{}:{}: {}", path, line, field)
                    : fmt::format("{}: {}", path, field);
  }
};

// The node of `key` in mapping `map` (null when absent), without yaml-cpp inserting it.
YAML::Node child(const YAML::Node& map, const std::string& key) {
  if (!map || !map.IsMap()) return YAML::Node();
  for (const auto& kv : map)
    if (kv.first.IsScalar() && kv.first.Scalar() == key) return kv.second;
  return YAML::Node();
}

Status check_fields(const json& j, const std::set<std::string>& allowed, const YAML::Node& node,
                    const std::string& section, const std::string& what, const Where& w) {
  for (const auto& [k, v] : j.items())
    if (!allowed.count(k))
      return Status::Invalid("{} is not a field of {}; the fields are: {}",
                             w.at(child(node, k), section.empty() ? k : section + "." + k), what,
                             list_of(allowed));
  return Status::OK();
}

bool is_scalar(const json& v) {
  return v.is_string() || v.is_number() || v.is_boolean();
}

// Every step `from` depends on, directly or not.
std::set<std::string> ancestors(const std::map<std::string, std::vector<std::string>>& deps,
                                const std::string& from) {
  std::set<std::string> seen;
  std::vector<std::string> pending = {from};
  while (!pending.empty()) {
    std::string s = pending.back();
    pending.pop_back();
    auto it = deps.find(s);
    if (it == deps.end()) continue;
    for (const std::string& d : it->second)
      if (seen.insert(d).second) pending.push_back(d);
  }
  return seen;
}

}  // namespace

Result<std::vector<TextPiece>> split_references(const std::string& s, const std::string& where) {
  std::vector<TextPiece> out;
  std::string literal;
  auto flush = [&] {
    if (!literal.empty()) out.push_back({literal, false, {}, ""});
    literal.clear();
  };
  for (size_t b = 0; b < s.size();) {
    // "$${" is a literal "${" (a shell's ${HOME} in a command): not a reference.
    if (s.compare(b, 3, "$${") == 0) {
      literal += "${";
      b += 3;
      continue;
    }
    if (s.compare(b, 2, "${") != 0) {
      literal += s[b++];
      continue;
    }
    const size_t e = s.find('}', b);
    if (e == std::string::npos)
      return Status::Invalid("{}: '${{' without its '}}' in \"{}\"", where, s);
    const std::string ref = s.substr(b + 2, e - b - 2);
    std::vector<std::string> parts;
    for (size_t p = 0, q; p <= ref.size(); p = q + 1) {
      q = ref.find('.', p);
      if (q == std::string::npos) q = ref.size();
      parts.push_back(ref.substr(p, q - p));
    }
    Reference r;
    if (parts.size() == 1 && parts[0] == "item") {
      r.kind = Reference::Kind::kItem;
    } else if (parts.size() == 2 && parts[0] == "params" && !parts[1].empty()) {
      r.kind = Reference::Kind::kParam;
      r.name = parts[1];
    } else if (parts.size() >= 4 && parts[0] == "steps" && parts[2] == "outputs" &&
               std::none_of(parts.begin() + 1, parts.end(),
                            [](const std::string& x) { return x.empty(); })) {
      r.kind = Reference::Kind::kStepOutput;
      r.name = parts[1];
      r.key = ref.substr(parts[0].size() + parts[1].size() + parts[2].size() + 3);
    } else {
      return Status::Invalid(
          "{}: '${{{}}}' is not a reference; write ${{params.NAME}}, "
          "${{steps.STEP.outputs.KEY}} or ${{item}}",
          where, ref);
    }
    flush();
    out.push_back({"", true, std::move(r), s.substr(b, e + 1 - b)});
    b = e + 1;
  }
  flush();
  return out;
}

Result<std::vector<Reference>> find_references(const json& value, const std::string& where) {
  std::vector<Reference> out;
  std::function<Status(const json&)> walk = [&](const json& v) -> Status {
    if (v.is_array() || v.is_object()) {
      for (const auto& item : v) DLSYS_RETURN_IF_ERROR(walk(item));
      return Status::OK();
    }
    if (!v.is_string()) return Status::OK();
    DLSYS_ASSIGN_OR_RETURN(auto pieces, split_references(v.get<std::string>(), where));
    for (auto& p : pieces)
      if (p.is_ref) out.push_back(std::move(p.ref));
    return Status::OK();
  };
  DLSYS_RETURN_IF_ERROR(walk(value));
  return out;
}

const char* TriggerSpec::kind_name() const {
  switch (kind) {
    case Kind::kCron:
      return "cron";
    case Kind::kEvery:
      return "every";
    case Kind::kDataset:
      return "dataset";
    case Kind::kAlias:
      return "alias";
    case Kind::kAlert:
      return "alert";
  }
  return "";
}

namespace {

// `triggers`: a list of mappings, each one of cron/every/dataset/alias/alert and maybe `param`.
Status parse_triggers(const json& doc, const Where& w, PipelineSpec* p) {
  if (!doc.contains("triggers")) return Status::OK();
  const YAML::Node tnode = child(w.root, "triggers");
  const json& ts = doc["triggers"];
  if (!ts.is_array())
    return Status::Invalid(
        "{} must be a list, e.g. '- {{every: 10m}}', '- {{cron: \"0 3 * * *\"}}', '- {{dataset: "
        "digits, param: data}}', '- {{alias: digits@production}}', '- {{alert: drift}}'",
        w.at(tnode, "triggers"));
  static const std::set<std::string> kFields = {"cron",  "every", "dataset",
                                                "alias", "alert", "param"};
  for (size_t i = 0; i < ts.size(); ++i) {
    const json& t = ts[i];
    const YAML::Node n = tnode[i];
    const std::string at = fmt::format("triggers[{}]", i);
    if (!t.is_object()) return Status::Invalid("{} must be a mapping", w.at(n, at));
    DLSYS_RETURN_IF_ERROR(check_fields(t, kFields, n, at, "a trigger", w));
    TriggerSpec tr;
    tr.line = w.line_of(n);
    int kinds = 0;
    for (const char* k : {"cron", "every", "dataset", "alias", "alert"}) {
      if (!t.contains(k)) continue;
      ++kinds;
      const std::string field = w.at(child(n, k), at + "." + k);
      if (!t[k].is_string() || t[k].get<std::string>().empty())
        return Status::Invalid("{} must be text, got {}", field, shown(t[k]));
      tr.value = t[k];
      const std::string kind = k;
      if (kind == "cron") {
        tr.kind = TriggerSpec::Kind::kCron;
        DLSYS_RETURN_IF_ERROR(parse_cron(tr.value, field).status());
      } else if (kind == "every") {
        tr.kind = TriggerSpec::Kind::kEvery;
        DLSYS_ASSIGN_OR_RETURN(tr.every_seconds, jobs::parse_duration_seconds(tr.value, field));
        if (tr.every_seconds < 1)
          return Status::Invalid("{}: the interval must be 1 s or more", field);
      } else if (kind == "dataset") {
        tr.kind = TriggerSpec::Kind::kDataset;
      } else if (kind == "alias") {
        tr.kind = TriggerSpec::Kind::kAlias;
        if (tr.value.find('@') == std::string::npos)
          return Status::Invalid("{} must be MODEL@ALIAS (e.g. digits@production), got '{}'", field,
                                 tr.value);
      } else {
        tr.kind = TriggerSpec::Kind::kAlert;
      }
    }
    if (kinds != 1)
      return Status::Invalid(
          "{} must have exactly one of cron, every, dataset, alias or alert (it has {})",
          w.at(n, at), kinds);
    if (t.contains("param")) {
      const std::string field = w.at(child(n, "param"), at + ".param");
      if (!t["param"].is_string() || !p->params.contains(t["param"].get<std::string>()))
        return Status::Invalid(
            "{} must name one of the pipeline's params (it receives the event: a dataset "
            "version, a model version, the time, the alert), got {}",
            field, shown(t["param"]));
      tr.param = t["param"];
    }
    p->triggers.push_back(std::move(tr));
  }
  return Status::OK();
}

}  // namespace

Result<PipelineSpec> parse_pipeline_spec(const std::string& text, const std::string& path) {
  DLSYS_ASSIGN_OR_RETURN(
      json doc,
      jobs::yaml_text_to_json(text, path, "a pipeline spec is a mapping: name, params, steps"));
  Where w{path, YAML::Load(text)};  // parsed above: only for the lines of fields
  static const std::set<std::string> kTop = {"name", "description", "params", "steps", "triggers"};
  DLSYS_RETURN_IF_ERROR(check_fields(doc, kTop, w.root, "", "a pipeline spec", w));
  PipelineSpec p;
  if (!doc.contains("name") || !doc["name"].is_string() || !valid_name(doc["name"]))
    return Status::Invalid(
        "{} must be a name of letters, digits, '_' and '-', starting with a letter (e.g. "
        "retrain), got {}",
        w.at(child(w.root, "name"), "name"), doc.contains("name") ? shown(doc["name"]) : "nothing");
  p.name = doc["name"];
  if (doc.contains("description")) {
    if (!doc["description"].is_string())
      return Status::Invalid("{} must be text", w.at(child(w.root, "description"), "description"));
    p.description = doc["description"];
  }
  if (doc.contains("params")) {
    const json& params = doc["params"];
    const YAML::Node pnode = child(w.root, "params");
    if (!params.is_object())
      return Status::Invalid("{} must be a mapping of parameter names to default values",
                             w.at(pnode, "params"));
    for (const auto& [k, v] : params.items()) {
      const std::string field = "params." + k;
      if (!valid_name(k))
        return Status::Invalid("{}: '{}' is not a parameter name (letters, digits, '_', '-')",
                               w.at(child(pnode, k), field), k);
      bool ok = is_scalar(v);
      if (v.is_array()) ok = std::all_of(v.begin(), v.end(), is_scalar);
      if (!ok)
        return Status::Invalid("{} must be a number, text, true/false or a list of those, got {}",
                               w.at(child(pnode, k), field), shown(v));
    }
    p.params = params;
  }
  const YAML::Node snode = child(w.root, "steps");
  if (!doc.contains("steps") || !doc["steps"].is_array() || doc["steps"].empty())
    return Status::Invalid(
        "{} must be a list of steps, each with a name and a kind (e.g. '- {{name: train, kind: "
        "train, with: {{...}}}}')",
        w.at(snode, "steps"));
  static const std::set<std::string> kStep = {
      "name", "kind", "with", "condition", "needs", "for_each", "retries", "timeout", "cache"};
  const auto& kinds = step_kinds();
  std::set<std::string> kind_names;
  for (const auto& [k, info] : kinds) kind_names.insert(k);
  for (size_t i = 0; i < doc["steps"].size(); ++i) {
    const json& js = doc["steps"][i];
    const YAML::Node n = snode[i];
    const std::string at = fmt::format("steps[{}]", i);
    if (!js.is_object())
      return Status::Invalid("{} must be a mapping (name, kind, with, ...)", w.at(n, at));
    DLSYS_RETURN_IF_ERROR(check_fields(js, kStep, n, at, "a step", w));
    StepSpec s;
    s.line = w.line_of(n);
    if (!js.contains("name") || !js["name"].is_string() || !valid_name(js["name"]))
      return Status::Invalid(
          "{} needs a name of letters, digits, '_' and '-', starting with a letter, got {}",
          w.at(n, at + ".name"), js.contains("name") ? shown(js["name"]) : "nothing");
    s.name = js["name"];
    const std::string sat = "steps." + s.name;
    if (p.step(s.name))
      return Status::Invalid("{}: a second step named '{}': step names are unique",
                             w.at(child(n, "name"), at + ".name"), s.name);
    if (!js.contains("kind") || !js["kind"].is_string() || !kinds.count(js["kind"]))
      return Status::Invalid("{} must be one of: {}; got {}", w.at(child(n, "kind"), sat + ".kind"),
                             list_of(kind_names), js.contains("kind") ? shown(js["kind"]) : "none");
    s.kind = js["kind"];
    const StepKindInfo& info = kinds.at(s.kind);
    if (js.contains("with")) {
      if (!js["with"].is_object())
        return Status::Invalid("{} must be a mapping of the step's parameters",
                               w.at(child(n, "with"), sat + ".with"));
      DLSYS_RETURN_IF_ERROR(check_fields(js["with"], info.with, child(n, "with"), sat + ".with",
                                         "a '" + s.kind + "' step's with", w));
      s.with = js["with"];
    }
    for (const std::string& r : info.required)
      if (!s.with.contains(r))
        return Status::Invalid("{}: a '{}' step needs with.{} (its fields: {})",
                               w.at(n, sat + ".with"), s.kind, r, list_of(info.with));
    if (s.kind == "gate") {
      if (!js.contains("condition") || !js["condition"].is_string() ||
          js["condition"].get<std::string>().empty())
        return Status::Invalid(
            "{}: a gate needs a condition, e.g. \"${{steps.evaluate.outputs.metrics.accuracy}} "
            ">= ${{steps.evaluate.outputs.baseline.accuracy}} + 0.005\"",
            w.at(n, sat + ".condition"));
      s.condition = js["condition"];
    } else if (js.contains("condition")) {
      return Status::Invalid("{}: only a gate step has a condition",
                             w.at(child(n, "condition"), sat + ".condition"));
    }
    if (js.contains("needs")) {
      const json& needs = js["needs"];
      bool ok = needs.is_array() && std::all_of(needs.begin(), needs.end(),
                                                [](const json& x) { return x.is_string(); });
      if (!ok)
        return Status::Invalid("{} must be a list of step names",
                               w.at(child(n, "needs"), sat + ".needs"));
      for (const json& x : needs) s.needs.push_back(x);
    }
    if (js.contains("for_each")) {
      const json& fe = js["for_each"];
      bool ok = (fe.is_array() && !fe.empty() && std::all_of(fe.begin(), fe.end(), is_scalar)) ||
                fe.is_string();
      if (!ok)
        return Status::Invalid(
            "{} must be a non-empty list of values or one ${{params.NAME}} holding a list, got {}",
            w.at(child(n, "for_each"), sat + ".for_each"), shown(fe));
      s.for_each = fe;
    }
    if (js.contains("retries")) {
      const json& r = js["retries"];
      if (!r.is_number_integer() || r.get<int64_t>() < 0 || r.get<int64_t>() > 100)
        return Status::Invalid("{} must be a whole number from 0 to 100, got {}",
                               w.at(child(n, "retries"), sat + ".retries"), shown(r));
      if (!info.retried && r.get<int64_t>() > 0)
        return Status::Invalid("{}: a {} step is not retried (its failure is its answer)",
                               w.at(child(n, "retries"), sat + ".retries"), s.kind);
      s.retries = r;
    }
    if (js.contains("timeout")) {
      const json& t = js["timeout"];
      const std::string field = w.at(child(n, "timeout"), sat + ".timeout");
      if (t.is_number_integer() && t.get<int64_t>() > 0) {
        s.timeout_seconds = t;
      } else if (t.is_string()) {
        DLSYS_ASSIGN_OR_RETURN(s.timeout_seconds, jobs::parse_duration_seconds(t, field));
      } else {
        return Status::Invalid("{} must be seconds or a duration (90s, 30m, 2h), got {}", field,
                               shown(t));
      }
      if (s.timeout_seconds > kMaxTimeoutSeconds)
        return Status::Invalid("{} is {} s, over the limit of {} s (a year)", field,
                               s.timeout_seconds, kMaxTimeoutSeconds);
    }
    if (js.contains("cache")) {
      if (!js["cache"].is_boolean())
        return Status::Invalid("{} must be true or false", w.at(child(n, "cache"), sat + ".cache"));
      s.cache = js["cache"];
    }
    p.steps.push_back(std::move(s));
  }

  // References and dependencies, now that every step is known.
  std::map<std::string, std::vector<std::string>> deps;
  for (size_t i = 0; i < p.steps.size(); ++i) {
    StepSpec& s = p.steps[i];
    const YAML::Node n = snode[i];
    const std::string sat = "steps." + s.name;
    std::set<std::string> on;
    for (const std::string& d : s.needs) {
      if (d == s.name)
        return Status::Invalid("{}: a step cannot need itself",
                               w.at(child(n, "needs"), sat + ".needs"));
      if (!p.step(d))
        return Status::Invalid("{}: no step is named '{}'", w.at(child(n, "needs"), sat + ".needs"),
                               d);
      on.insert(d);
    }
    struct Place {
      const json* value;
      std::string field;
      bool items_allowed;
    };
    const json condition = s.condition;
    const std::vector<Place> places = {{&s.with, "with", !s.for_each.is_null()},
                                       {&condition, "condition", !s.for_each.is_null()},
                                       {&s.for_each, "for_each", false}};
    for (const Place& pl : places) {
      const std::string where = w.at(child(n, pl.field), sat + "." + pl.field);
      DLSYS_ASSIGN_OR_RETURN(std::vector<Reference> refs, find_references(*pl.value, where));
      for (const Reference& r : refs) {
        switch (r.kind) {
          case Reference::Kind::kItem:
            if (!pl.items_allowed)
              return Status::Invalid("{}: ${{item}} is only for a step with for_each", where);
            break;
          case Reference::Kind::kParam:
            if (!p.params.contains(r.name))
              return Status::Invalid("{}: no parameter '{}' (params: {})", where, r.name, [&] {
                std::set<std::string> names;
                for (const auto& [k, v] : p.params.items()) names.insert(k);
                return list_of(names);
              }());
            break;
          case Reference::Kind::kStepOutput: {
            const StepSpec* from = p.step(r.name);
            if (!from) return Status::Invalid("{}: no step is named '{}'", where, r.name);
            if (from->name == s.name)
              return Status::Invalid("{}: a step cannot use its own outputs", where);
            const StepKindInfo& fk = kinds.at(from->kind);
            const bool metric =
                fk.open_metrics && r.key.rfind("metrics.", 0) == 0 && r.key.size() > 8;
            const std::string head = r.key.substr(0, r.key.find('.'));
            // baseline.<metric> of an evaluate step: the compared version's metrics.
            const bool nested = fk.outputs.count(head) && head == "baseline";
            if (!fk.outputs.count(r.key) && !metric && !nested)
              return Status::Invalid("{}: a '{}' step has no output '{}' (its outputs: {}{})",
                                     where, from->kind, r.key, list_of(fk.outputs),
                                     fk.open_metrics ? ", metrics.<name>" : "");
            on.insert(r.name);
            break;
          }
        }
      }
    }
    if (s.for_each.is_string()) {
      // One parameter holding a list, nothing else.
      const std::string fe = s.for_each;
      const std::string where = w.at(child(n, "for_each"), sat + ".for_each");
      const bool one = fe.size() > 10 && fe.rfind("${params.", 0) == 0 && fe.back() == '}' &&
                       fe.find('}') == fe.size() - 1;
      if (!one)
        return Status::Invalid(
            "{} must be a non-empty list of values or one ${{params.NAME}} holding a list, got {}",
            where, shown(s.for_each));
      const std::string param = fe.substr(9, fe.size() - 10);
      if (!p.params.at(param).is_array())
        return Status::Invalid("{}: params.{} is not a list (it is {})", where, param,
                               shown(p.params.at(param)));
    }
    s.depends_on.assign(on.begin(), on.end());
    deps[s.name] = s.depends_on;
  }

  // An order that runs dependencies first (Kahn's, ties in the file's order); what is left
  // over lies on a cycle, which the error spells out.
  std::set<std::string> done;
  while (p.order.size() < p.steps.size()) {
    bool progressed = false;
    for (const StepSpec& s : p.steps) {
      if (done.count(s.name)) continue;
      if (std::all_of(s.depends_on.begin(), s.depends_on.end(),
                      [&](const std::string& d) { return done.count(d) > 0; })) {
        p.order.push_back(s.name);
        done.insert(s.name);
        progressed = true;
        break;
      }
    }
    if (progressed) continue;
    // A cycle: walk dependencies from a step left over until one repeats.
    std::string at;
    for (const StepSpec& s : p.steps)
      if (!done.count(s.name) && ancestors(deps, s.name).count(s.name)) {
        at = s.name;
        break;
      }
    std::vector<std::string> path = {at};
    std::string cur = at;
    do {
      // Back to the start when it is a direct dependency; else on to a step that leads back to
      // it and is not on the path yet (so the path never loops short of the start).
      const std::vector<std::string>& ds = deps[cur];
      if (std::find(ds.begin(), ds.end(), at) != ds.end()) {
        cur = at;
      } else {
        for (const std::string& d : ds)
          if (!done.count(d) && ancestors(deps, d).count(at) &&
              std::find(path.begin(), path.end(), d) == path.end()) {
            cur = d;
            break;
          }
      }
      path.push_back(cur);
    } while (cur != at && path.size() <= p.steps.size() + 1);
    std::string shown_path;
    for (const std::string& step : path) shown_path += (shown_path.empty() ? "" : " -> ") + step;
    return Status::Invalid(
        "{}: the steps depend on each other in a cycle: {} (each needs the next, through needs "
        "or a reference to its outputs); remove one of these dependencies",
        w.at(snode, "steps"), shown_path);
  }
  DLSYS_RETURN_IF_ERROR(parse_triggers(doc, w, &p));
  return p;
}

}  // namespace dlsys::flow
