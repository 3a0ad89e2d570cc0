#include "train/preprocess.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>

namespace dlsys::train {

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int kMaxCategories = 256;

// Per-column statistics over the non-null values of one pass.
struct ColumnStats {
  int64_t count = 0;
  double sum = 0, sumsq = 0;
  double min = HUGE_VAL, max = -HUGE_VAL;
  std::vector<float> values;        // median
  std::map<float, int64_t> counts;  // onehot categories
  bool too_many = false;
};

std::string column_label(const std::vector<std::string>& names, int c) {
  if (c < static_cast<int>(names.size()) && !names[c].empty()) return fmt::format("'{}'", names[c]);
  return fmt::format("{}", c);
}

// The columns a step covers, as indices.
Result<std::vector<int>> resolve_columns(const PreprocessStep& st, const std::string& where,
                                         const std::vector<std::string>& names, int64_t features) {
  std::vector<int> out;
  if (st.columns.empty()) {
    for (int c = 0; c < features; ++c) out.push_back(c);
    return out;
  }
  for (const std::string& col : st.columns) {
    auto it = std::find(names.begin(), names.end(), col);
    if (it != names.end()) {
      out.push_back(static_cast<int>(it - names.begin()));
      continue;
    }
    char* end = nullptr;
    long v = std::strtol(col.c_str(), &end, 10);
    if (!col.empty() && *end == '\0' && v >= 0 && v < features) {
      out.push_back(static_cast<int>(v));
      continue;
    }
    std::string known;
    for (size_t i = 0; i < names.size() && i < 40; ++i)
      known += (known.empty() ? "" : ", ") + names[i];
    return Status::Invalid(
        "{}: no feature column '{}'; the features are {}", where, col,
        names.empty() ? fmt::format("numbered 0..{} (the data has no column names)", features - 1)
                      : known);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

bool needs_stats(const PreprocessStep& st) {
  return st.kind == "standardize" || st.kind == "minmax" || st.kind == "onehot" ||
         (st.kind == "impute" && st.strategy != "constant");
}

// Applies one numeric step (not onehot) in place to x [n, f].
void apply_numeric(const FittedStep& s, float* x, int64_t n, int64_t f) {
  for (int64_t r = 0; r < n; ++r) {
    float* row = x + r * f;
    if (s.kind == "impute") {
      for (int64_t j = 0; j < f; ++j)
        if (std::isnan(row[j])) row[j] = s.fill[j];
    } else if (s.kind == "clip") {
      // Min then Max, as the graph computes it.
      for (int64_t j = 0; j < f; ++j) row[j] = std::max(std::min(row[j], s.hi[j]), s.lo[j]);
    } else {
      for (int64_t j = 0; j < f; ++j) row[j] = (row[j] - s.shift[j]) * s.mul[j];
    }
  }
}

Tensor vector_constant(const std::vector<float>& v) {
  return Tensor::from_f32({static_cast<int64_t>(v.size())}, v.data());
}

}  // namespace

bool is_preprocess_constant(const std::string& name) {
  return name.rfind("preprocess.", 0) == 0;
}

Result<Preprocessor> Preprocessor::fit(const std::vector<PreprocessStep>& steps,
                                       const std::vector<std::string>& names, int64_t features,
                                       const FeatureBatches& batches,
                                       const data::Vocabularies& vocabularies) {
  Preprocessor p;
  p.in_ = features;
  p.in_names_ = names;
  if (p.in_names_.empty())
    for (int64_t c = 0; c < features; ++c) p.in_names_.push_back(fmt::format("{}", c));
  // The columns onehot steps take (other steps skip them unless named), and the string ones.
  std::vector<bool> taken(features, false), strings(features, false);
  for (size_t i = 0; i < steps.size(); ++i)
    if (steps[i].kind == "onehot") {
      DLSYS_ASSIGN_OR_RETURN(
          std::vector<int> cols,
          resolve_columns(steps[i], fmt::format("data.preprocess[{}] onehot", i), names, features));
      for (int c : cols) taken[c] = true;
    }
  for (int64_t c = 0; c < features && c < static_cast<int64_t>(names.size()); ++c)
    strings[c] = vocabularies.count(names[c]) > 0;
  for (int64_t c = 0; c < features; ++c)
    if (strings[c] && !taken[c])
      return Status::Invalid(
          "column '{}' holds strings (category names); add `- onehot: [{}]` to data.preprocess, "
          "or leave it out of data.features",
          names[c], names[c]);
  for (size_t i = 0; i < steps.size(); ++i) {
    const PreprocessStep& st = steps[i];
    const std::string where = fmt::format("data.preprocess[{}] {}", i, st.kind);
    FittedStep fs;
    fs.kind = st.kind;
    DLSYS_ASSIGN_OR_RETURN(fs.columns, resolve_columns(st, where, names, features));
    if (st.kind != "onehot") {
      if (st.columns.empty())
        fs.columns.erase(
            std::remove_if(fs.columns.begin(), fs.columns.end(), [&](int c) { return taken[c]; }),
            fs.columns.end());
      for (int c : fs.columns)
        if (strings[c])
          return Status::Invalid(
              "{}: column '{}' holds category names; only onehot takes it (drop it from the "
              "step's columns)",
              where, names[c]);
    }
    std::vector<ColumnStats> stats(features);
    if (needs_stats(st)) {
      std::vector<bool> covered(features, false);
      for (int c : fs.columns) covered[c] = true;
      const bool median = st.kind == "impute" && st.strategy == "median";
      const bool onehot = st.kind == "onehot";
      // One pass over the training split with the steps fitted so far applied.
      DLSYS_RETURN_IF_ERROR(batches([&](const Tensor& raw) -> Status {
        DLSYS_ASSIGN_OR_RETURN(Tensor x, p.apply(raw));
        const int64_t n = x.dim(0);
        const float* d = x.data_as<float>();
        for (int64_t r = 0; r < n; ++r)
          for (int c : fs.columns) {
            float v = d[r * features + c];
            if (std::isnan(v)) continue;
            ColumnStats& s = stats[c];
            ++s.count;
            s.sum += v;
            s.sumsq += double(v) * v;
            s.min = std::min<double>(s.min, v);
            s.max = std::max<double>(s.max, v);
            if (median) s.values.push_back(v);
            if (onehot && !s.too_many) {
              ++s.counts[v];
              s.too_many = s.counts.size() > kMaxCategories;
            }
          }
        return Status::OK();
      }));
      for (int c : fs.columns)
        if (stats[c].count == 0)
          return Status::Invalid(
              "{}: column {} has no values in the training split (every row is null)", where,
              column_label(names, c));
    }
    if (st.kind == "impute") {
      fs.fill.assign(features, kNaN);
      for (int c : fs.columns) {
        ColumnStats& s = stats[c];
        if (st.strategy == "constant") {
          fs.fill[c] = static_cast<float>(st.value);
        } else if (st.strategy == "mean") {
          fs.fill[c] = static_cast<float>(s.sum / s.count);
        } else {
          // The median as NumPy's: the mean of the two middle values of an even count.
          std::vector<float>& v = s.values;
          size_t mid = v.size() / 2;
          std::nth_element(v.begin(), v.begin() + mid, v.end());
          double m = v[mid];
          if (v.size() % 2 == 0) m = (m + *std::max_element(v.begin(), v.begin() + mid)) / 2;
          fs.fill[c] = static_cast<float>(m);
          v.clear();
          v.shrink_to_fit();
        }
      }
    } else if (st.kind == "clip") {
      fs.lo.assign(features, -INFINITY);
      fs.hi.assign(features, INFINITY);
      for (int c : fs.columns) {
        fs.lo[c] = static_cast<float>(st.min);
        fs.hi[c] = static_cast<float>(st.max);
      }
    } else if (st.kind == "onehot") {
      for (int c : fs.columns) {
        ColumnStats& s = stats[c];
        if (s.too_many)
          return Status::Invalid(
              "{}: column {} has more than {} distinct values in the training split; onehot is "
              "for categories (standardize or minmax a numeric column)",
              where, column_label(names, c), kMaxCategories);
        for (const auto& [v, n] : s.counts)
          if (v != std::floor(v))
            return Status::Invalid(
                "{}: column {} holds {}, which is not a category code (a whole number); onehot "
                "is for integer-coded categories",
                where, column_label(names, c), v);
      }
    } else {
      fs.shift.assign(features, 0.0f);
      fs.mul.assign(features, 1.0f);
      for (int c : fs.columns) {
        ColumnStats& s = stats[c];
        if (st.kind == "scale") {
          fs.mul[c] = static_cast<float>(st.factor);
        } else if (st.kind == "standardize") {
          double mean = s.sum / s.count;
          double var = std::max(0.0, s.sumsq / s.count - mean * mean);
          double sd = std::sqrt(var);
          fs.shift[c] = static_cast<float>(mean);
          fs.mul[c] = sd > 0 ? static_cast<float>(1.0 / sd) : 1.0f;
        } else {  // minmax
          double range = s.max - s.min;
          fs.shift[c] = static_cast<float>(s.min);
          fs.mul[c] = range > 0 ? static_cast<float>(1.0 / range) : 1.0f;
        }
      }
    }
    if (st.kind == "onehot") {
      // One fitted step per column, each with its sorted categories.
      for (int c : fs.columns) {
        FittedStep one;
        one.kind = "onehot";
        one.columns = {c};
        const std::vector<std::string>* vocab = nullptr;
        if (strings[c]) vocab = &vocabularies.at(names[c]);
        for (const auto& [v, n] : stats[c].counts) {
          if (!vocab) {
            one.categories.push_back(v);
          } else if (v >= 0 && v < static_cast<float>(vocab->size())) {
            one.categories.push_back(v);
            one.category_names.push_back((*vocab)[static_cast<size_t>(v)]);
          }
        }
        p.steps_.push_back(std::move(one));
      }
    } else {
      p.steps_.push_back(std::move(fs));
    }
  }
  // The output features: the columns no onehot step takes, in order, then each onehot block.
  std::vector<bool> categorical(features, false);
  for (const FittedStep& s : p.steps_)
    if (s.kind == "onehot") categorical[s.columns[0]] = true;
  for (int64_t c = 0; c < features; ++c)
    if (!categorical[c]) p.kept_.push_back(c);
  for (int64_t c : p.kept_) p.out_names_.push_back(p.in_names_[c]);
  for (const FittedStep& s : p.steps_)
    if (s.kind == "onehot")
      for (size_t k = 0; k < s.categories.size(); ++k)
        p.out_names_.push_back(fmt::format(
            "{}={}", p.in_names_[s.columns[0]],
            s.category_names.empty() ? fmt::format("{}", s.categories[k]) : s.category_names[k]));
  p.out_ = static_cast<int64_t>(p.out_names_.size());
  return p;
}

Result<Tensor> Preprocessor::apply(const Tensor& x) const {
  if (x.dtype() != DType::kF32 || x.rank() < 1)
    return Status::Invalid("preprocessing takes f32 features [N, {}]", in_);
  const int64_t n = x.dim(0);
  if (x.numel() != n * in_)
    return Status::Invalid("preprocessing takes {} features per sample, got {}", in_,
                           n > 0 ? x.numel() / n : 0);
  Tensor y = x.clone();
  float* d = y.data_as<float>();
  bool onehot = false;
  for (const FittedStep& s : steps_) {
    if (s.kind == "onehot") {
      onehot = true;
      break;
    }
    apply_numeric(s, d, n, in_);
  }
  if (!onehot) return y.view({n, in_});
  Tensor out = Tensor::zeros(DType::kF32, {n, out_});
  float* o = out.data_as<float>();
  for (int64_t r = 0; r < n; ++r) {
    const float* row = d + r * in_;
    float* orow = o + r * out_;
    int64_t k = 0;
    for (int64_t c : kept_) orow[k++] = row[c];
    for (const FittedStep& s : steps_) {
      if (s.kind != "onehot") continue;
      for (float v : s.categories) orow[k++] = row[s.columns[0]] == v ? 1.0f : 0.0f;
    }
  }
  return out;
}

Status Preprocessor::prepend_to(Graph* g, const std::string& input) const {
  if (empty()) return Status::OK();
  auto in = std::find_if(g->inputs.begin(), g->inputs.end(),
                         [&](const ValueInfo& v) { return v.name == input; });
  if (in == g->inputs.end())
    return Status::Internal("preprocessing: the model has no input '{}'", input);
  int64_t model_numel = 1;
  std::vector<int64_t> model_shape = {-1};
  for (size_t d = 1; d < in->dims.size(); ++d) {
    model_numel *= in->dims[d].value;
    model_shape.push_back(in->dims[d].value);
  }
  if (model_numel != out_)
    return Status::Invalid(
        "data.preprocess makes {} features per sample ({} in, {}), but the model's input takes "
        "{}; set model.input to [{}]",
        out_, in_, out_ == in_ ? "none added" : "onehot adds categories", model_numel, out_);
  const std::string body = "preprocess.body";
  for (Node& n : g->nodes)
    for (std::string& i : n.inputs)
      if (i == input) i = body;
  std::vector<Node> pre;
  std::string cur = input;
  int k = 0;
  auto value = [&](const std::string& what) { return fmt::format("preprocess.{}.{}", k, what); };
  auto node = [&](const std::string& op, std::vector<std::string> ins, const std::string& out,
                  AttributeMap attrs = {}) {
    Node n;
    n.name = fmt::format("preprocess.{}.{}", k, op);
    n.op_type = op;
    n.inputs = std::move(ins);
    n.outputs = {out};
    n.attrs = std::move(attrs);
    pre.push_back(std::move(n));
  };
  std::vector<std::string> onehot_blocks;
  for (const FittedStep& s : steps_) {
    if (s.kind == "impute") {
      g->initializers[value("fill")] = vector_constant(s.fill);
      node("IsNaN", {cur}, value("isnan"));
      node("Where", {value("isnan"), value("fill"), cur}, value("out"));
    } else if (s.kind == "clip") {
      g->initializers[value("hi")] = vector_constant(s.hi);
      g->initializers[value("lo")] = vector_constant(s.lo);
      node("Min", {cur, value("hi")}, value("min"));
      node("Max", {value("min"), value("lo")}, value("out"));
    } else if (s.kind == "onehot") {
      int64_t col = s.columns[0];
      g->initializers[value("column")] = Tensor::from_i64({1}, &col);
      g->initializers[value("categories")] = vector_constant(s.categories);
      node("Gather", {cur, value("column")}, value("value"), {{"axis", Attribute::of_int(1)}});
      node("Equal", {value("value"), value("categories")}, value("equal"));
      node("Cast", {value("equal")}, value("out"),
           {{"to", Attribute::of_int(dtype_to_onnx(DType::kF32))}});
      onehot_blocks.push_back(value("out"));
      ++k;
      continue;  // the numeric features stay `cur`
    } else {
      bool shift = std::any_of(s.shift.begin(), s.shift.end(), [](float v) { return v != 0; });
      std::string x = cur;
      if (shift) {
        g->initializers[value("shift")] = vector_constant(s.shift);
        node("Sub", {cur, value("shift")}, value("centered"));
        x = value("centered");
      }
      g->initializers[value("mul")] = vector_constant(s.mul);
      node("Mul", {x, value("mul")}, value("out"));
    }
    cur = value("out");
    ++k;
  }
  if (!onehot_blocks.empty()) {
    std::vector<std::string> parts;
    if (!kept_.empty()) {
      g->initializers["preprocess.kept"] =
          Tensor::from_i64({static_cast<int64_t>(kept_.size())}, kept_.data());
      Node n;
      n.name = "preprocess.kept.Gather";
      n.op_type = "Gather";
      n.inputs = {cur, "preprocess.kept"};
      n.outputs = {"preprocess.kept.out"};
      n.attrs["axis"] = Attribute::of_int(1);
      pre.push_back(std::move(n));
      parts.push_back("preprocess.kept.out");
    }
    parts.insert(parts.end(), onehot_blocks.begin(), onehot_blocks.end());
    Node n;
    n.name = "preprocess.Concat";
    n.op_type = "Concat";
    n.inputs = parts;
    n.outputs = {"preprocess.features"};
    n.attrs["axis"] = Attribute::of_int(1);
    pre.push_back(std::move(n));
    cur = "preprocess.features";
  }
  // The model's own input shape.
  Node last;
  if (model_shape.size() > 2) {
    g->initializers["preprocess.shape"] =
        Tensor::from_i64({static_cast<int64_t>(model_shape.size())}, model_shape.data());
    last.op_type = "Reshape";
    last.inputs = {cur, "preprocess.shape"};
  } else {
    last.op_type = "Identity";
    last.inputs = {cur};
  }
  last.name = "preprocess.out";
  last.outputs = {body};
  pre.push_back(std::move(last));
  g->nodes.insert(g->nodes.begin(), pre.begin(), pre.end());
  in->dims = {in->dims.empty() ? Dim{-1, "batch"} : in->dims[0], Dim{in_, ""}};
  in->dtype = DType::kF32;
  in->has_shape = true;
  return Status::OK();
}

Result<std::vector<std::string>> Preprocessor::string_inputs_to(Graph* g,
                                                                const std::string& input) const {
  std::vector<const FittedStep*> strings;  // onehot steps over string columns, by column
  for (const FittedStep& s : steps_)
    if (s.kind == "onehot" && !s.category_names.empty()) strings.push_back(&s);
  std::sort(strings.begin(), strings.end(),
            [](const FittedStep* a, const FittedStep* b) { return a->columns[0] < b->columns[0]; });
  std::vector<std::string> names;
  if (strings.empty()) return names;
  auto in = std::find_if(g->inputs.begin(), g->inputs.end(),
                         [&](const ValueInfo& v) { return v.name == input; });
  if (in == g->inputs.end())
    return Status::Internal("preprocessing: the model has no input '{}'", input);
  // Every value name of the graph: a string column's input must not take one of them.
  std::set<std::string> used = {input};
  for (const ValueInfo& v : g->inputs) used.insert(v.name);
  for (const ValueInfo& v : g->outputs) used.insert(v.name);
  for (const auto& [name, t] : g->initializers) used.insert(name);
  for (const Node& n : g->nodes) used.insert(n.outputs.begin(), n.outputs.end());
  std::vector<bool> is_string(static_cast<size_t>(in_), false);
  for (const FittedStep* s : strings) {
    const std::string& col = in_names_[s->columns[0]];
    if (used.count(col))
      return Status::Invalid(
          "string column '{}' would become the model's input of that name, but the model "
          "already has a value '{}'; rename the column",
          col, col);
    is_string[s->columns[0]] = true;
    names.push_back(col);
  }
  // The raw features [batch, in_] again: Concat(numeric input, codes...) in that order, then a
  // Gather back to feature order.
  std::vector<int64_t> numeric, order(static_cast<size_t>(in_));
  for (int64_t c = 0; c < in_; ++c)
    if (!is_string[c]) numeric.push_back(c);
  int64_t at = 0;
  for (int64_t c : numeric) order[c] = at++;
  for (const FittedStep* s : strings) order[s->columns[0]] = at++;
  const std::string raw = "preprocess.raw";
  for (Node& n : g->nodes)
    for (std::string& i : n.inputs)
      if (i == input) i = raw;
  const Dim batch = in->dims.empty() ? Dim{-1, "batch"} : in->dims[0];
  std::vector<Node> pre;
  std::vector<std::string> parts;
  if (!numeric.empty()) parts.push_back(input);
  std::vector<ValueInfo> string_inputs;
  for (const FittedStep* s : strings) {
    const std::string& col = in_names_[s->columns[0]];
    Node n;
    n.name = "preprocess.encode." + col;
    n.op_type = "LabelEncoder";
    n.domain = "ai.onnx.ml";
    n.inputs = {col};
    n.outputs = {"preprocess.code." + col};
    Attribute keys, values;
    keys.kind = Attribute::Kind::kStrings;
    keys.strings = s->category_names;
    values.kind = Attribute::Kind::kFloats;
    values.floats = s->categories;
    n.attrs["keys_strings"] = std::move(keys);
    n.attrs["values_floats"] = std::move(values);
    n.attrs["default_float"] = Attribute::of_float(-1.0f);
    parts.push_back(n.outputs[0]);
    pre.push_back(std::move(n));
    string_inputs.push_back(ValueInfo{col, DType::kString, true, {batch, Dim{1, ""}}});
  }
  bool identity = true;
  for (int64_t c = 0; c < in_; ++c) identity = identity && order[c] == c;
  Node concat;
  concat.name = "preprocess.raw.Concat";
  concat.op_type = "Concat";
  concat.inputs = parts;
  concat.outputs = {identity ? raw : "preprocess.raw.permuted"};
  concat.attrs["axis"] = Attribute::of_int(1);
  pre.push_back(std::move(concat));
  if (!identity) {
    g->initializers["preprocess.raw.order"] = Tensor::from_i64({in_}, order.data());
    Node gather;
    gather.name = "preprocess.raw.Gather";
    gather.op_type = "Gather";
    gather.inputs = {"preprocess.raw.permuted", "preprocess.raw.order"};
    gather.outputs = {raw};
    gather.attrs["axis"] = Attribute::of_int(1);
    pre.push_back(std::move(gather));
  }
  g->nodes.insert(g->nodes.begin(), pre.begin(), pre.end());
  if (numeric.empty()) {
    g->inputs.erase(in);
  } else {
    in->dims = {batch, Dim{static_cast<int64_t>(numeric.size()), ""}};
  }
  g->inputs.insert(g->inputs.end(), string_inputs.begin(), string_inputs.end());
  return names;
}

nlohmann::json Preprocessor::to_json() const {
  nlohmann::json steps = nlohmann::json::array();
  auto sub = [&](const std::vector<float>& v, const std::vector<int>& cols) {
    nlohmann::json a = nlohmann::json::array();
    for (int c : cols) a.push_back(v[c]);
    return a;
  };
  for (const FittedStep& s : steps_) {
    nlohmann::json j = {{"kind", s.kind}};
    nlohmann::json cols = nlohmann::json::array();
    for (int c : s.columns) cols.push_back(in_names_[c]);
    j["columns"] = cols;
    if (s.kind == "impute") j["fill"] = sub(s.fill, s.columns);
    if (s.kind == "clip") {
      j["min"] = sub(s.lo, s.columns);
      j["max"] = sub(s.hi, s.columns);
    }
    if (!s.shift.empty()) {
      j["shift"] = sub(s.shift, s.columns);
      j["mul"] = sub(s.mul, s.columns);
    }
    if (s.kind == "onehot") j["categories"] = s.categories;
    if (!s.category_names.empty()) j["vocabulary"] = s.category_names;
    steps.push_back(std::move(j));
  }
  return {{"input_features", in_names_}, {"output_features", out_names_}, {"steps", steps}};
}

}  // namespace dlsys::train
