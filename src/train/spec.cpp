#include "train/spec.h"

#include "core/file_util.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <map>
#include <set>

namespace dlsys::train {

namespace {

int line_of(const YAML::Node& n) {
  return n.Mark().line + 1;
}

std::string where(const std::string& path, const YAML::Node& n, const std::string& field) {
  // A node an override (--set) put in has no place in the file.
  if (line_of(n) <= 0) return fmt::format("{} (--set {}): '{}'", path, field, field);
  return fmt::format("{}:{}: '{}'", path, line_of(n), field);
}

Status check_fields(const std::string& path, const YAML::Node& map, const std::string& section,
                    const std::set<std::string>& allowed) {
  if (!map.IsMap())
    return Status::Invalid("{}:{}: '{}' must be a mapping of fields", path, line_of(map), section);
  for (const auto& kv : map) {
    std::string k = kv.first.as<std::string>();
    if (!allowed.count(k)) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      return Status::Invalid("{}:{}: unknown field '{}' in {}; the fields are: {}", path,
                             line_of(kv.first), k, section, list);
    }
  }
  return Status::OK();
}

template <typename T>
Status get(const std::string& path, const YAML::Node& map, const std::string& field, T* out) {
  YAML::Node n = map[field];
  if (!n) return Status::OK();
  try {
    *out = n.as<T>();
  } catch (const YAML::Exception&) {
    return Status::Invalid("{} has the value '{}', which is not a {}", where(path, n, field),
                           n.IsScalar() ? n.Scalar() : "(not a scalar)",
                           std::is_same_v<T, std::string> ? "string"
                           : std::is_same_v<T, bool>      ? "boolean (true or false)"
                           : std::is_floating_point_v<T>  ? "number"
                                                          : "whole number");
  }
  return Status::OK();
}

std::string relative_to(const std::string& spec, const std::string& p) {
  if (p.empty() || p[0] == '/') return p;
  return (std::filesystem::path(spec).parent_path() / p).lexically_normal().string();
}

// The fields of each mapping of the spec, by its dotted path ("" is the top level): the parser
// refuses any other key (check_fields), and train_spec_fields() lists them for docs/spec.md,
// whose test requires a row for each. A new field is added here, read below, and documented
// there.
const std::map<std::string, std::set<std::string>>& section_fields() {
  static const std::map<std::string, std::set<std::string>> m = {
      {"", {"name", "data", "model", "train"}},
      {"data",
       {"train", "validation", "format", "label_column", "validation_fraction", "feature_scale",
        "split_seed", "dataset", "features", "label", "train_labels", "validation_labels",
        "preprocess", "nulls", "class_names"}},
      {"model", {"input", "layers", "init", "onnx", "freeze"}},
      {"train",
       {"epochs", "batch_size", "seed", "loss", "label_smoothing", "optimizer", "schedule",
        "clip_grad_norm", "target_accuracy", "checkpoint_every", "accumulate_steps", "precision",
        "micro_batches", "bucket_kib", "overlap", "sync_batch_norm"}},
      {"train.optimizer",
       {"name", "lr", "momentum", "nesterov", "weight_decay", "beta1", "beta2", "eps"}},
      {"train.schedule", {"name", "warmup_steps", "step_size", "gamma", "min_lr"}},
  };
  return m;
}

const std::set<std::string>& fields_of(const std::string& section) {
  return section_fields().at(section);
}

// The fields each layer takes (model.layers[].<type>.<field>).
const std::map<std::string, std::set<std::string>>& layer_fields() {
  static const std::map<std::string, std::set<std::string>> m = {
      {"linear", {"out", "bias"}},
      {"conv2d", {"out", "kernel", "stride", "padding", "groups", "bias"}},
      {"batchnorm", {"eps", "momentum"}},
      {"layernorm", {"eps"}},
      {"dropout", {"p"}},
      {"relu", {}},
      {"gelu", {}},
      {"sigmoid", {}},
      {"tanh", {}},
      {"maxpool", {"kernel", "stride", "padding"}},
      {"avgpool", {"kernel", "stride", "padding"}},
      {"global_avg_pool", {}},
      {"mean_pool", {}},
      {"flatten", {}},
      {"embedding", {"vocab", "dim"}},
      {"attention", {"heads"}},
      {"residual", {"layers", "shortcut"}},
  };
  return m;
}

Status parse_layers(const std::string& path, const YAML::Node& layers, int depth,
                    std::vector<LayerSpec>* out) {
  if (depth > 8)
    return Status::Invalid("{}:{}: residual blocks nest too deep", path, line_of(layers));
  for (size_t i = 0; i < layers.size(); ++i) {
    YAML::Node l = layers[i];
    LayerSpec ls;
    ls.line = line_of(l);
    YAML::Node args;
    if (l.IsScalar()) {
      ls.type = l.Scalar();
    } else if (l.IsMap() && l.size() == 1) {
      ls.type = l.begin()->first.as<std::string>();
      args = l.begin()->second;
    } else {
      return Status::Invalid(
          "{}:{}: a layer is a name (relu) or one name with fields ({{linear: {{out: 10}}}})", path,
          ls.line);
    }
    auto it = layer_fields().find(ls.type);
    if (it == layer_fields().end()) {
      std::string names;
      for (const auto& [k, v] : layer_fields()) names += (names.empty() ? "" : ", ") + k;
      return Status::Invalid("{}:{}: unknown layer '{}'; layers: {}", path, ls.line, ls.type,
                             names);
    }
    const std::set<std::string>& fields = it->second;
    if (args && !args.IsNull()) {
      if (fields.empty())
        return Status::Invalid("{}:{}: layer '{}' takes no fields", path, ls.line, ls.type);
      DLSYS_RETURN_IF_ERROR(check_fields(path, args, ls.type, fields));
      DLSYS_RETURN_IF_ERROR(get(path, args, "out", &ls.out));
      DLSYS_RETURN_IF_ERROR(get(path, args, "kernel", &ls.kernel));
      DLSYS_RETURN_IF_ERROR(get(path, args, "stride", &ls.stride));
      DLSYS_RETURN_IF_ERROR(get(path, args, "padding", &ls.padding));
      DLSYS_RETURN_IF_ERROR(get(path, args, "groups", &ls.groups));
      DLSYS_RETURN_IF_ERROR(get(path, args, "bias", &ls.bias));
      DLSYS_RETURN_IF_ERROR(get(path, args, "eps", &ls.eps));
      DLSYS_RETURN_IF_ERROR(get(path, args, "momentum", &ls.momentum));
      DLSYS_RETURN_IF_ERROR(get(path, args, "p", &ls.p));
      DLSYS_RETURN_IF_ERROR(get(path, args, "vocab", &ls.vocab));
      DLSYS_RETURN_IF_ERROR(get(path, args, "dim", &ls.dim));
      DLSYS_RETURN_IF_ERROR(get(path, args, "heads", &ls.heads));
      if (YAML::Node inner = args["layers"]) {
        if (!inner.IsSequence() || inner.size() == 0)
          return Status::Invalid("{}:{}: residual 'layers' must be a non-empty list", path,
                                 line_of(inner));
        DLSYS_RETURN_IF_ERROR(parse_layers(path, inner, depth + 1, &ls.layers));
      }
      if (YAML::Node sc = args["shortcut"]) {
        if (!sc.IsSequence() || sc.size() == 0)
          return Status::Invalid("{}:{}: residual 'shortcut' must be a non-empty list", path,
                                 line_of(sc));
        DLSYS_RETURN_IF_ERROR(parse_layers(path, sc, depth + 1, &ls.shortcut));
      }
    }
    auto need = [&](bool ok, const char* what) -> Status {
      if (ok) return Status::OK();
      return Status::Invalid("{}:{}: {} needs {}", path, ls.line, ls.type, what);
    };
    if (ls.type == "linear")
      DLSYS_RETURN_IF_ERROR(need(ls.out > 0, "'out', a positive size: {linear: {out: N}}"));
    if (ls.type == "conv2d") {
      DLSYS_RETURN_IF_ERROR(
          need(ls.out > 0 && ls.kernel > 0, "'out' and 'kernel': {conv2d: {out: 16, kernel: 3}}"));
      DLSYS_RETURN_IF_ERROR(
          need(ls.groups > 0 && ls.out % ls.groups == 0, "'groups' dividing 'out'"));
      DLSYS_RETURN_IF_ERROR(need(ls.stride >= 0 && ls.padding >= 0, "'stride' and 'padding' >= 0"));
    }
    if (ls.type == "maxpool" || ls.type == "avgpool")
      DLSYS_RETURN_IF_ERROR(
          need(ls.kernel > 0 && ls.stride >= 0 && ls.padding >= 0 && 2 * ls.padding <= ls.kernel,
               "'kernel' > 0, 'stride' >= 0 and 'padding' at most half the kernel"));
    if (ls.type == "dropout") DLSYS_RETURN_IF_ERROR(need(ls.p >= 0 && ls.p < 1, "'p' in [0, 1)"));
    if (ls.type == "batchnorm")
      DLSYS_RETURN_IF_ERROR(need(ls.momentum > 0 && ls.momentum <= 1, "'momentum' in (0, 1]"));
    if (ls.type == "batchnorm" || ls.type == "layernorm")
      DLSYS_RETURN_IF_ERROR(need(ls.eps > 0, "'eps' > 0"));
    if (ls.type == "embedding")
      DLSYS_RETURN_IF_ERROR(need(ls.vocab > 0 && ls.dim > 0,
                                 "'vocab' and 'dim': {embedding: {vocab: 1000, dim: 64}}"));
    if (ls.type == "attention") DLSYS_RETURN_IF_ERROR(need(ls.heads > 0, "'heads' > 0"));
    if (ls.type == "residual")
      DLSYS_RETURN_IF_ERROR(need(!ls.layers.empty(), "'layers': {residual: {layers: [...]}}"));
    out->push_back(ls);
  }
  return Status::OK();
}

// The fields each preprocess step takes, and its shorthand value (`impute: median`).
const std::map<std::string, std::set<std::string>>& preprocess_fields() {
  static const std::map<std::string, std::set<std::string>> m = {
      {"impute", {"columns", "strategy", "value"}},
      {"clip", {"columns", "min", "max"}},
      {"standardize", {"columns"}},
      {"minmax", {"columns"}},
      {"scale", {"columns", "factor"}},
      {"onehot", {"columns"}},
  };
  return m;
}

// data.preprocess, data.nulls, data.class_names.
Status parse_preprocess(const std::string& path, const YAML::Node& data, TrainSpec* s) {
  DLSYS_RETURN_IF_ERROR(get(path, data, "nulls", &s->nulls));
  DLSYS_RETURN_IF_ERROR(get(path, data, "class_names", &s->class_names));
  YAML::Node list = data["preprocess"];
  bool impute = false, onehot = false;
  if (list) {
    if (!list.IsSequence())
      return Status::Invalid(
          "{} must be a list of steps, e.g. [impute: median, standardize, {{onehot: [color]}}]",
          where(path, list, "preprocess"));
    for (size_t i = 0; i < list.size(); ++i) {
      YAML::Node item = list[i];
      PreprocessStep st;
      st.line = line_of(item);
      YAML::Node args;
      if (item.IsScalar()) {
        st.kind = item.Scalar();
      } else if (item.IsMap() && item.size() == 1) {
        st.kind = item.begin()->first.as<std::string>();
        args = item.begin()->second;
      } else {
        return Status::Invalid(
            "{}:{}: a preprocess step is a name (standardize) or one name with fields "
            "({{clip: {{min: -5, max: 5}}}})",
            path, st.line);
      }
      auto it = preprocess_fields().find(st.kind);
      if (it == preprocess_fields().end()) {
        std::string names;
        for (const auto& [k, v] : preprocess_fields()) names += (names.empty() ? "" : ", ") + k;
        return Status::Invalid("{}:{}: unknown preprocess step '{}'; steps: {}", path, st.line,
                               st.kind, names);
      }
      std::string w = fmt::format("preprocess[{}] {}", i, st.kind);
      if (args && args.IsScalar() && !args.IsNull()) {
        // Shorthand: impute: median, scale: 0.0625.
        if (st.kind == "impute") {
          st.strategy = args.Scalar();
        } else if (st.kind == "scale") {
          YAML::Node tmp;
          tmp["factor"] = args;
          DLSYS_RETURN_IF_ERROR(get(path, tmp, "factor", &st.factor));
        } else {
          return Status::Invalid(
              "{}:{}: {} takes a list of columns or fields, not '{}' (e.g. {{{}: [c1, c2]}})", path,
              st.line, w, args.Scalar(), st.kind);
        }
      } else if (args && args.IsSequence()) {
        DLSYS_RETURN_IF_ERROR(get(path, item, st.kind, &st.columns));
      } else if (args && args.IsMap()) {
        DLSYS_RETURN_IF_ERROR(check_fields(path, args, w, it->second));
        DLSYS_RETURN_IF_ERROR(get(path, args, "columns", &st.columns));
        DLSYS_RETURN_IF_ERROR(get(path, args, "strategy", &st.strategy));
        DLSYS_RETURN_IF_ERROR(get(path, args, "value", &st.value));
        DLSYS_RETURN_IF_ERROR(get(path, args, "min", &st.min));
        DLSYS_RETURN_IF_ERROR(get(path, args, "max", &st.max));
        DLSYS_RETURN_IF_ERROR(get(path, args, "factor", &st.factor));
      }
      if (st.kind == "impute" && st.strategy != "mean" && st.strategy != "median" &&
          st.strategy != "constant")
        return Status::Invalid("{}:{}: {} strategy is '{}'; use mean, median or constant", path,
                               st.line, w, st.strategy);
      if (st.kind == "clip" && !(st.min <= st.max))
        return Status::Invalid("{}:{}: {} needs min <= max (got {} and {})", path, st.line, w,
                               st.min, st.max);
      if (st.kind == "clip" && std::isinf(st.min) && std::isinf(st.max))
        return Status::Invalid("{}:{}: {} needs 'min', 'max' or both: {{clip: {{min: 0}}}}", path,
                               st.line, w);
      if (st.kind == "scale" && !std::isfinite(st.factor))
        return Status::Invalid("{}:{}: {} factor must be a finite number", path, st.line, w);
      if (st.kind == "onehot" && st.columns.empty())
        return Status::Invalid("{}:{}: {} needs its columns: {{onehot: [color, size]}}", path,
                               st.line, w);
      if (onehot && st.kind != "onehot")
        return Status::Invalid(
            "{}:{}: {} comes after a onehot step; put onehot steps last (they change the "
            "columns)",
            path, st.line, w);
      impute = impute || st.kind == "impute";
      onehot = onehot || st.kind == "onehot";
      s->preprocess.push_back(std::move(st));
    }
  }
  if (s->nulls.empty()) s->nulls = impute ? "impute" : "error";
  if (s->nulls != "error" && s->nulls != "drop" && s->nulls != "impute")
    return Status::Invalid("{} is '{}'; use error, drop or impute",
                           where(path, data["nulls"], "nulls"), s->nulls);
  if (s->nulls == "impute" && !impute)
    return Status::Invalid(
        "{}: nulls: impute needs an impute step in data.preprocess (e.g. `- impute: median`)",
        where(path, data["nulls"], "nulls"));
  return Status::OK();
}

// The fields of data that read files: a spec trained on a dataset version (data.dataset set by an
// override) drops them.
const char* const kFileDataFields[] = {"train",        "validation",          "format",
                                       "label_column", "validation_fraction", "split_seed",
                                       "train_labels", "validation_labels"};

// A copy of `n` without positions in a file (a node parsed from an override's text would claim
// line 1 of the spec in error messages).
// `*budget` bounds the nodes copied (YAML aliases could make a short value expand without end).
Result<YAML::Node> without_marks(const YAML::Node& n, int* budget) {
  if (--*budget < 0) return Status::Invalid("an override's value has more than 10000 nodes");
  if (n.IsScalar()) return YAML::Node(n.Scalar());
  YAML::Node out(n.IsSequence() ? YAML::NodeType::Sequence : YAML::NodeType::Map);
  if (n.IsSequence()) {
    for (const auto& e : n) {
      DLSYS_ASSIGN_OR_RETURN(YAML::Node c, without_marks(e, budget));
      out.push_back(c);
    }
  } else {
    for (const auto& kv : n) {
      DLSYS_ASSIGN_OR_RETURN(YAML::Node c, without_marks(kv.second, budget));
      out[kv.first.Scalar()] = c;
    }
  }
  return out;
}

// Applies "PATH=VALUE" overrides to the parsed spec (see load_train_spec).
Status apply_overrides(const std::string& path, YAML::Node root,
                       const std::vector<std::string>& overrides) {
  for (const std::string& o : overrides) {
    const size_t eq = o.find('=');
    if (eq == std::string::npos || eq == 0)
      return Status::Invalid("override '{}' must be FIELD=VALUE, e.g. train.optimizer.lr=0.01", o);
    DLSYS_ASSIGN_OR_RETURN(std::string field, resolve_spec_field(o.substr(0, eq)));
    YAML::Node value;
    try {
      value = YAML::Load(o.substr(eq + 1));
    } catch (const YAML::Exception& e) {
      return Status::Invalid("override '{}': the value is not YAML: {}", o, e.msg);
    }
    if (!value.IsScalar() && !value.IsSequence() && !value.IsMap())
      return Status::Invalid("override '{}' has no value (FIELD=VALUE)", o);
    // Walk (and make) the sections down to the field: the sections a field sits in are
    // mappings (train, train.optimizer, ...), never lists.
    std::vector<std::string> parts;
    for (size_t b = 0, e; b <= field.size(); b = e + 1) {
      e = field.find('.', b);
      if (e == std::string::npos) e = field.size();
      parts.push_back(field.substr(b, e - b));
    }
    YAML::Node node = root;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      YAML::Node next = node[parts[i]];
      if (next && !next.IsMap())
        return Status::Invalid("{}:{}: cannot apply override '{}': '{}' is not a mapping", path,
                               line_of(next), o, parts[i]);
      if (!next) {
        node[parts[i]] = YAML::Node(YAML::NodeType::Map);
        next = node[parts[i]];
      }
      node.reset(next);
    }
    int budget = 10000;
    auto copied = without_marks(value, &budget);
    if (!copied.ok()) return copied.status().with_context("override '" + o.substr(0, eq) + "'");
    node[parts.back()] = *copied;
    if (field == "data.dataset")
      for (const char* f : kFileDataFields) node.remove(f);
  }
  return Status::OK();
}

}  // namespace

Result<std::string> resolve_spec_field(const std::string& name) {
  // Settings only: fields inside lists (layers, preprocessing steps) have no single place.
  std::vector<std::string> settings;
  for (const auto& [section, fields] : section_fields())
    for (const std::string& f : fields) {
      // Whole sections (data, model, train, optimizer, schedule) are not single settings.
      const std::string full = section.empty() ? f : section + "." + f;
      if (section_fields().count(full) || full == "data" || full == "model") continue;
      settings.push_back(full);
    }
  std::vector<std::string> matches;
  for (const std::string& full : settings) {
    if (full == name) return full;
    if (full.size() > name.size() &&
        full.compare(full.size() - name.size(), name.size(), name) == 0 &&
        full[full.size() - name.size() - 1] == '.')
      matches.push_back(full);
  }
  if (matches.size() == 1) return matches[0];
  if (matches.size() > 1) {
    std::string list;
    for (const auto& m : matches) list += (list.empty() ? "" : ", ") + m;
    return Status::Invalid("the spec field '{}' is ambiguous: say which of {}", name, list);
  }
  return Status::Invalid(
      "'{}' is not a spec setting; use a field such as train.optimizer.lr, train.epochs or "
      "data.dataset, or its last part when that is unique (lr, epochs, batch_size): docs/spec.md "
      "lists them",
      name);
}

std::vector<std::string> train_spec_fields() {
  std::vector<std::string> out;
  for (const auto& [section, fields] : section_fields())
    for (const std::string& f : fields) out.push_back(section.empty() ? f : section + "." + f);
  for (const auto& [type, fields] : layer_fields()) {
    std::string layer = "model.layers[]." + type;
    out.push_back(layer);
    for (const std::string& f : fields) out.push_back(layer + "." + f);
  }
  for (const auto& [kind, fields] : preprocess_fields()) {
    std::string step = "data.preprocess[]." + kind;
    out.push_back(step);
    for (const std::string& f : fields) out.push_back(step + "." + f);
  }
  return out;
}

Result<TrainSpec> load_train_spec(const std::string& path,
                                  const std::vector<std::string>& overrides) {
  auto text = read_file(path);
  if (!text.ok()) return Status::IOError("cannot read the spec '{}'", path);
  YAML::Node root;
  try {
    root = YAML::Load(*text);
  } catch (const YAML::ParserException& e) {
    return Status::Invalid("{}:{}:{}: YAML syntax error: {}", path, e.mark.line + 1,
                           e.mark.column + 1, e.msg);
  }
  TrainSpec s;
  s.spec_path = path;
  s.spec_text = std::move(text).value();
  if (!overrides.empty()) {
    if (!root.IsMap())
      return Status::Invalid("{}: the spec must be a mapping (name, data, model, train)", path);
    DLSYS_RETURN_IF_ERROR(apply_overrides(path, root, overrides));
    // The spec as trained: what the run keeps (spec.yaml) and what a checkpoint must match.
    YAML::Emitter out;
    out << root;
    std::string header = "# " + path + " with";
    for (const std::string& o : overrides) header += " --set " + o;
    s.spec_text = header + "\n" + out.c_str() + "\n";
  }
  DLSYS_RETURN_IF_ERROR(check_fields(path, root, "the spec", fields_of("")));
  DLSYS_RETURN_IF_ERROR(get(path, root, "name", &s.name));
  {
    YAML::Node without = YAML::Clone(root);
    if (without["train"] && without["train"].IsMap()) {
      without["train"].remove("epochs");
      without["train"].remove("checkpoint_every");  // where to checkpoint is not what is trained
    }
    YAML::Emitter out;
    out << without;
    s.extend_text = out.c_str();
  }

  YAML::Node data = root["data"];
  if (!data) return Status::Invalid("{}: the spec needs a 'data' section (train: FILE.csv)", path);
  DLSYS_RETURN_IF_ERROR(check_fields(path, data, "data", fields_of("data")));
  DLSYS_RETURN_IF_ERROR(parse_preprocess(path, data, &s));
  DLSYS_RETURN_IF_ERROR(get(path, data, "dataset", &s.dataset));
  DLSYS_RETURN_IF_ERROR(get(path, data, "features", &s.features));
  DLSYS_RETURN_IF_ERROR(get(path, data, "label", &s.label));
  DLSYS_RETURN_IF_ERROR(get(path, data, "feature_scale", &s.feature_scale));
  if (!s.dataset.empty()) {
    if (data["train"])
      return Status::Invalid("{}: give data.dataset or data.train (a file), not both",
                             where(path, data["train"], "train"));
    DLSYS_RETURN_IF_ERROR(get(path, data, "validation", &s.dataset_validation));
    // Without a split: train on its train split. Without data.validation: the version's
    // validation split.
    const size_t colon = s.dataset.find(':');
    if (s.dataset_validation.empty())
      s.dataset_validation = s.dataset.substr(0, colon) + ":validation";
    if (colon == std::string::npos) s.dataset += ":train";
  } else {
    DLSYS_RETURN_IF_ERROR(get(path, data, "train", &s.train_path));
    DLSYS_RETURN_IF_ERROR(get(path, data, "validation", &s.validation_path));
    DLSYS_RETURN_IF_ERROR(get(path, data, "format", &s.format));
    DLSYS_RETURN_IF_ERROR(get(path, data, "label_column", &s.label_column));
    DLSYS_RETURN_IF_ERROR(get(path, data, "validation_fraction", &s.validation_fraction));
    DLSYS_RETURN_IF_ERROR(get(path, data, "feature_scale", &s.feature_scale));
    DLSYS_RETURN_IF_ERROR(get(path, data, "split_seed", &s.split_seed));
    if (s.train_path.empty())
      return Status::Invalid(
          "{}:{}: data needs 'train' (the training file) or 'dataset' (a version, e.g. digits@v1)",
          path, line_of(data));
    DLSYS_RETURN_IF_ERROR(get(path, data, "train_labels", &s.train_labels_path));
    DLSYS_RETURN_IF_ERROR(get(path, data, "validation_labels", &s.validation_labels_path));
    if (s.format != "csv" && s.format != "npy" && s.format != "idx")
      return Status::Invalid("{} is '{}'; use csv, npy or idx",
                             where(path, data["format"], "format"), s.format);
    if (s.format == "csv") {
      for (const char* f : {"train_labels", "validation_labels"})
        if (data[f])
          return Status::Invalid(
              "{}: a csv file holds its labels (label_column); {} is for npy "
              "and idx data",
              where(path, data[f], f), f);
    } else {
      if (s.train_labels_path.empty())
        return Status::Invalid(
            "{}:{}: {} data needs 'train_labels', the labels file beside "
            "'train'",
            path, line_of(data), s.format);
      if (s.validation_path.empty() != s.validation_labels_path.empty())
        return Status::Invalid(
            "{}:{}: give both 'validation' and 'validation_labels', or "
            "neither (then validation_fraction of train is held out)",
            path, line_of(data));
      if (data["label_column"])
        return Status::Invalid("{}: label_column is for csv data; {} labels are their own file",
                               where(path, data["label_column"], "label_column"), s.format);
    }
    s.train_path = relative_to(path, s.train_path);
    s.validation_path = relative_to(path, s.validation_path);
    s.train_labels_path = relative_to(path, s.train_labels_path);
    s.validation_labels_path = relative_to(path, s.validation_labels_path);
  }

  YAML::Node model = root["model"];
  if (!model) return Status::Invalid("{}: the spec needs a 'model' section (input, layers)", path);
  DLSYS_RETURN_IF_ERROR(check_fields(path, model, "model", fields_of("model")));
  DLSYS_RETURN_IF_ERROR(get(path, model, "input", &s.input_shape));
  DLSYS_RETURN_IF_ERROR(get(path, model, "init", &s.init));
  DLSYS_RETURN_IF_ERROR(get(path, model, "onnx", &s.onnx_path));
  DLSYS_RETURN_IF_ERROR(get(path, model, "freeze", &s.freeze));
  if (!s.onnx_path.empty()) {
    // Fine-tuning: the model (and its input shape) come from the ONNX file.
    for (const char* f : {"layers", "init"})
      if (model[f])
        return Status::Invalid("{}: a model from 'onnx' has its own layers and weights; drop {}",
                               where(path, model[f], f), f);
    // "models:/NAME@REF" names a registered version (dlsys train fetches it), not a file.
    if (s.onnx_path.rfind("models:/", 0) != 0) s.onnx_path = relative_to(path, s.onnx_path);
  } else {
    if (model["freeze"])
      return Status::Invalid("{}: freeze names parameters of an 'onnx' model to keep fixed",
                             where(path, model["freeze"], "freeze"));
    if (s.input_shape.empty())
      return Status::Invalid(
          "{}:{}: model needs 'input', the shape of one sample, e.g. [64] (or 'onnx', a model "
          "to fine-tune)",
          path, line_of(model));
    if (s.init != "default" && s.init != "kaiming" && s.init != "xavier")
      return Status::Invalid("{} is '{}'; use default, kaiming or xavier",
                             where(path, model["init"], "init"), s.init);
    YAML::Node layers = model["layers"];
    if (!layers || !layers.IsSequence() || layers.size() == 0)
      return Status::Invalid(
          "{}:{}: model needs 'layers', a list such as [{{linear: {{out: 10}}}}]", path,
          line_of(model));
    DLSYS_RETURN_IF_ERROR(parse_layers(path, layers, 0, &s.layers));
  }

  YAML::Node tr = root["train"];
  if (tr) {
    DLSYS_RETURN_IF_ERROR(check_fields(path, tr, "train", fields_of("train")));
    DLSYS_RETURN_IF_ERROR(get(path, tr, "epochs", &s.epochs));
    DLSYS_RETURN_IF_ERROR(get(path, tr, "batch_size", &s.batch_size));
    DLSYS_RETURN_IF_ERROR(get(path, tr, "seed", &s.seed));
    DLSYS_RETURN_IF_ERROR(get(path, tr, "loss", &s.loss));
    DLSYS_RETURN_IF_ERROR(get(path, tr, "label_smoothing", &s.label_smoothing));
    DLSYS_RETURN_IF_ERROR(get(path, tr, "clip_grad_norm", &s.clip_grad_norm));
    DLSYS_RETURN_IF_ERROR(get(path, tr, "target_accuracy", &s.target_accuracy));
    DLSYS_RETURN_IF_ERROR(get(path, tr, "checkpoint_every", &s.checkpoint_every));
    DLSYS_RETURN_IF_ERROR(get(path, tr, "accumulate_steps", &s.accumulate_steps));
    DLSYS_RETURN_IF_ERROR(get(path, tr, "precision", &s.precision));
    DLSYS_RETURN_IF_ERROR(get(path, tr, "micro_batches", &s.micro_batches));
    if (s.micro_batches < 0 || (s.micro_batches & (s.micro_batches - 1)) != 0 ||
        s.micro_batches > 1024)
      return Status::Invalid("{} is {}; use 0 (off) or a power of two up to 1024 (1, 2, 4, 8, ...)",
                             where(path, tr["micro_batches"], "micro_batches"), s.micro_batches);
    DLSYS_RETURN_IF_ERROR(get(path, tr, "bucket_kib", &s.bucket_kib));
    DLSYS_RETURN_IF_ERROR(get(path, tr, "overlap", &s.overlap));
    DLSYS_RETURN_IF_ERROR(get(path, tr, "sync_batch_norm", &s.sync_batch_norm));
    if (s.sync_batch_norm && s.micro_batches > 1 && s.batch_size % s.micro_batches != 0)
      return Status::Invalid(
          "{}: batch_size {} does not split into {} equal micro-batches (micro_batches), which "
          "synchronized batch norm needs: use a multiple of {}",
          where(path, tr["sync_batch_norm"], "sync_batch_norm"), s.batch_size, s.micro_batches,
          s.micro_batches);
    if (s.bucket_kib < 0 || s.bucket_kib > (int64_t{1} << 30))
      return Status::Invalid(
          "{} is {}; use 0 (chosen from the measured link) or a size in KiB (e.g. 1024)",
          where(path, tr["bucket_kib"], "bucket_kib"), s.bucket_kib);
    if (s.micro_batches > 0 && s.accumulate_steps > 1)
      return Status::Invalid("{} and accumulate_steps {} cannot be combined: use a larger batch",
                             where(path, tr["micro_batches"], "micro_batches"), s.accumulate_steps);
    if (s.accumulate_steps < 1)
      return Status::Invalid("{} must be at least 1 (1: a step per batch)",
                             where(path, tr["accumulate_steps"], "accumulate_steps"));
    if (s.precision != "fp32" && s.precision != "bf16")
      return Status::Invalid("{} is '{}'; use fp32 or bf16",
                             where(path, tr["precision"], "precision"), s.precision);
    if (s.checkpoint_every < 0)
      return Status::Invalid("{} must be >= 0",
                             where(path, tr["checkpoint_every"], "checkpoint_every"));
    if (s.epochs < 1)
      return Status::Invalid("{} must be at least 1", where(path, tr["epochs"], "epochs"));
    if (s.batch_size < 1)
      return Status::Invalid("{} must be at least 1", where(path, tr["batch_size"], "batch_size"));
    if (s.loss != "cross_entropy" && s.loss != "mse" && s.loss != "bce_with_logits")
      return Status::Invalid("{} is '{}'; use cross_entropy, mse or bce_with_logits",
                             where(path, tr["loss"], "loss"), s.loss);
    if (YAML::Node o = tr["optimizer"]) {
      DLSYS_RETURN_IF_ERROR(check_fields(path, o, "optimizer", fields_of("train.optimizer")));
      std::string name = "sgd";
      DLSYS_RETURN_IF_ERROR(get(path, o, "name", &name));
      auto kind = parse_optimizer(name);
      if (!kind.ok()) return kind.status().with_context(where(path, o["name"], "optimizer.name"));
      s.optimizer.kind = *kind;
      DLSYS_RETURN_IF_ERROR(get(path, o, "lr", &s.schedule.lr));
      DLSYS_RETURN_IF_ERROR(get(path, o, "momentum", &s.optimizer.momentum));
      DLSYS_RETURN_IF_ERROR(get(path, o, "nesterov", &s.optimizer.nesterov));
      DLSYS_RETURN_IF_ERROR(get(path, o, "weight_decay", &s.optimizer.weight_decay));
      DLSYS_RETURN_IF_ERROR(get(path, o, "beta1", &s.optimizer.beta1));
      DLSYS_RETURN_IF_ERROR(get(path, o, "beta2", &s.optimizer.beta2));
      DLSYS_RETURN_IF_ERROR(get(path, o, "eps", &s.optimizer.eps));
      auto ok = Optimizer::make(s.optimizer);
      if (!ok.ok()) return ok.status().with_context(where(path, o, "optimizer"));
    }
    if (YAML::Node sc = tr["schedule"]) {
      DLSYS_RETURN_IF_ERROR(check_fields(path, sc, "schedule", fields_of("train.schedule")));
      std::string name = "constant";
      DLSYS_RETURN_IF_ERROR(get(path, sc, "name", &name));
      auto kind = parse_schedule(name);
      if (!kind.ok()) return kind.status().with_context(where(path, sc["name"], "schedule.name"));
      s.schedule.kind = *kind;
      DLSYS_RETURN_IF_ERROR(get(path, sc, "warmup_steps", &s.schedule.warmup_steps));
      DLSYS_RETURN_IF_ERROR(get(path, sc, "step_size", &s.schedule.step_size));
      DLSYS_RETURN_IF_ERROR(get(path, sc, "gamma", &s.schedule.gamma));
      DLSYS_RETURN_IF_ERROR(get(path, sc, "min_lr", &s.schedule.min_lr));
    }
    if (!(s.schedule.lr > 0)) return Status::Invalid("{}: optimizer.lr must be > 0", path);
  }
  return s;
}

}  // namespace dlsys::train
