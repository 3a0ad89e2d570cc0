#include "graph/model_metadata.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>

namespace dlsys {

namespace {

using nlohmann::json;

json parse_entry(const Graph& g, const char* key) {
  auto it = g.metadata.find(key);
  if (it == g.metadata.end()) return json();
  return json::parse(it->second, nullptr, false);
}

std::vector<std::string> string_array(const json& j) {
  std::vector<std::string> out;
  if (!j.is_array()) return out;
  for (const json& s : j) out.push_back(s.is_string() ? s.get<std::string>() : s.dump());
  return out;
}

}  // namespace

ModelMetadata ModelMetadata::read(const Graph& g) {
  ModelMetadata m;
  if (auto it = g.metadata.find("dlsys.task"); it != g.metadata.end()) m.task = it->second;
  m.feature_names = string_array(parse_entry(g, "dlsys.feature_names"));
  m.class_names = string_array(parse_entry(g, "dlsys.class_names"));
  m.string_inputs = string_array(parse_entry(g, "dlsys.string_inputs"));
  json pre = parse_entry(g, "dlsys.preprocess");
  if (pre.is_object() && pre.contains("steps") && pre["steps"].is_array())
    for (const json& s : pre["steps"]) {
      if (!s.is_object() || s.value("kind", "") != "onehot" || !s.contains("vocabulary")) continue;
      const json &cols = s["columns"], &cats = s["categories"], &vocab = s["vocabulary"];
      if (!cols.is_array() || cols.size() != 1 || !cols[0].is_string() || !cats.is_array() ||
          !vocab.is_array() || cats.size() != vocab.size())
        continue;
      auto& v = m.vocabularies[cols[0].get<std::string>()];
      for (size_t i = 0; i < cats.size(); ++i)
        if (vocab[i].is_string() && cats[i].is_number())
          v.emplace(vocab[i].get<std::string>(), cats[i].get<float>());
    }
  return m;
}

std::optional<float> ModelMetadata::encode(const std::string& name, std::string_view text) const {
  auto it = vocabularies.find(name);
  if (it == vocabularies.end()) return std::nullopt;
  auto c = it->second.find(text);
  return c == it->second.end() ? -1.0f : c->second;
}

bool ModelMetadata::takes_string(const std::string& name) const {
  return std::find(string_inputs.begin(), string_inputs.end(), name) != string_inputs.end();
}

std::vector<std::string> ModelMetadata::float_features() const {
  std::vector<std::string> out;
  for (const std::string& f : feature_names)
    if (!takes_string(f)) out.push_back(f);
  return out;
}

Status to_codes_form(Graph* g) {
  ModelMetadata m = ModelMetadata::read(*g);
  if (m.string_inputs.empty()) return Status::OK();
  const std::string raw = "preprocess.raw";
  auto concat = std::find_if(g->nodes.begin(), g->nodes.end(),
                             [](const Node& n) { return n.name == "preprocess.raw.Concat"; });
  if (concat == g->nodes.end() || m.feature_names.empty())
    return Status::Invalid(
        "the model names string inputs (dlsys.string_inputs) but lacks the nodes that rebuild "
        "its features from them (preprocess.raw.Concat): was it edited after training?");
  // The float input: Concat's first part when it is a graph input, else a new "input".
  std::string name = "input";
  Dim batch{-1, "batch"};
  for (auto it = g->inputs.begin(); it != g->inputs.end();) {
    if (it->dtype == DType::kString && m.takes_string(it->name)) {
      if (!it->dims.empty()) batch = it->dims[0];
      it = g->inputs.erase(it);
    } else if (it->name == concat->inputs[0]) {
      name = it->name;
      if (!it->dims.empty()) batch = it->dims[0];
      it = g->inputs.erase(it);
    } else {
      ++it;
    }
  }
  g->nodes.erase(std::remove_if(g->nodes.begin(), g->nodes.end(),
                                [](const Node& n) {
                                  return n.name.rfind("preprocess.encode.", 0) == 0 ||
                                         n.name == "preprocess.raw.Concat" ||
                                         n.name == "preprocess.raw.Gather";
                                }),
                 g->nodes.end());
  g->initializers.erase("preprocess.raw.order");
  for (Node& n : g->nodes)
    for (std::string& i : n.inputs)
      if (i == raw) i = name;
  ValueInfo in{
      name, DType::kF32, true, {batch, Dim{static_cast<int64_t>(m.feature_names.size()), ""}}};
  g->inputs.insert(g->inputs.begin(), in);
  g->metadata.erase("dlsys.string_inputs");
  return Status::OK();
}

std::vector<Prediction> predict(const ModelMetadata& m, const Tensor& output) {
  std::vector<Prediction> out;
  if (output.dtype() != DType::kF32 || output.rank() < 1) return out;
  const int64_t n = output.dim(0), k = n > 0 ? output.numel() / n : 0;
  const float* p = output.data_as<float>();
  for (int64_t r = 0; r < n; ++r) {
    Prediction pr;
    pr.values.assign(p + r * k, p + (r + 1) * k);
    if (m.task == "classification" && k > 1) {
      double mx = *std::max_element(pr.values.begin(), pr.values.end()), sum = 0;
      for (double v : pr.values) sum += std::exp(v - mx);
      for (double v : pr.values) pr.probabilities.push_back(std::exp(v - mx) / sum);
      pr.class_id = std::max_element(pr.values.begin(), pr.values.end()) - pr.values.begin();
      pr.probability = pr.probabilities[pr.class_id];
    } else if (m.task == "binary_classification" && k == 1) {
      double q = 1 / (1 + std::exp(-pr.values[0]));
      pr.probabilities = {1 - q, q};
      pr.class_id = q >= 0.5 ? 1 : 0;
      pr.probability = pr.probabilities[pr.class_id];
    }
    if (pr.class_id >= 0)
      pr.class_name = pr.class_id < static_cast<int64_t>(m.class_names.size())
                          ? m.class_names[pr.class_id]
                          : std::to_string(pr.class_id);
    out.push_back(std::move(pr));
  }
  return out;
}

}  // namespace dlsys
