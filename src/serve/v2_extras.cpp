#include "serve/v2_extras.h"

#include <algorithm>

namespace dlsys::serve {

bool V2ModelExtras::derives(const std::string& name) const {
  for (const auto& d : derived)
    if (d.name == name) return true;
  return false;
}

int V2ModelExtras::feature_index(const std::string& name) const {
  for (size_t i = 0; i < features.size(); ++i)
    if (features[i].name == name) return static_cast<int>(i);
  return -1;
}

V2ModelExtras v2_model_extras(ModelMetadata metadata, const std::vector<TensorSpec>& inputs,
                              const std::vector<TensorSpec>& outputs) {
  V2ModelExtras x;
  x.metadata = std::move(metadata);
  const ModelMetadata& m = x.metadata;
  if (inputs.size() == 1 && inputs[0].dtype == DType::kF32 && !m.feature_names.empty()) {
    int64_t per_row = 1;
    for (size_t d = 1; d < inputs[0].shape.size(); ++d) per_row *= inputs[0].shape[d];
    bool usable = per_row == static_cast<int64_t>(m.feature_names.size());
    for (const auto& n : m.feature_names) usable = usable && n != inputs[0].name;
    if (usable) {
      for (const auto& n : m.feature_names) x.features.push_back({n, m.is_categorical(n)});
      x.feature_input = 0;
    }
  }
  if (!outputs.empty() && outputs[0].dtype == DType::kF32 && outputs[0].has_shape &&
      outputs[0].shape.size() == 2) {
    const int64_t k = outputs[0].shape[1];
    std::vector<int64_t> prob_shape;
    if (m.task == "classification" && (k > 1 || k < 0)) prob_shape = {-1, k};
    if (m.task == "binary_classification" && k == 1) prob_shape = {-1, 2};
    if (!prob_shape.empty()) {
      x.logits_output = 0;
      V2DerivedOutput all[] = {{"probabilities", "FP32", prob_shape},
                               {"class", "BYTES", {-1}},
                               {"class_id", "INT64", {-1}}};
      for (auto& d : all) {
        bool taken = std::any_of(outputs.begin(), outputs.end(),
                                 [&](const TensorSpec& o) { return o.name == d.name; });
        if (!taken) x.derived.push_back(std::move(d));
      }
    }
  }
  return x;
}

Result<std::vector<V2ExtraOutput>> v2_derived_outputs(const V2ModelExtras& extras,
                                                      const std::vector<std::string>& names,
                                                      const std::vector<Tensor>& outputs) {
  std::vector<V2ExtraOutput> out;
  if (names.empty()) return out;
  if (extras.logits_output >= outputs.size())
    return Status::Internal("the model answered {} outputs; derived outputs read output {}",
                            outputs.size(), extras.logits_output);
  const Tensor& logits = outputs[extras.logits_output];
  std::vector<Prediction> p = predict(extras.metadata, logits);
  const int64_t n = logits.rank() >= 1 ? logits.dim(0) : 0;
  if (static_cast<int64_t>(p.size()) != n || (n > 0 && p[0].class_id < 0))
    return Status::Internal(
        "the model's output of shape {} gives no class scores for a {} model; derived outputs "
        "need f32 [rows, classes] ([rows, 1] for binary_classification)",
        shape_str(logits.shape()), extras.metadata.task);
  for (const std::string& name : names) {
    V2ExtraOutput o;
    o.name = name;
    if (name == "probabilities") {
      const int64_t k = n > 0 ? static_cast<int64_t>(p[0].probabilities.size()) : 0;
      std::vector<float> v;
      v.reserve(static_cast<size_t>(n * k));
      for (const auto& r : p)
        for (double q : r.probabilities) v.push_back(static_cast<float>(q));
      o.tensor = Tensor::from_f32({n, k}, v.data());
    } else if (name == "class_id") {
      std::vector<int64_t> v;
      for (const auto& r : p) v.push_back(r.class_id);
      o.tensor = Tensor::from_i64({n}, v.data());
    } else if (name == "class") {
      o.is_bytes = true;
      o.shape = {n};
      for (const auto& r : p) o.bytes.push_back(r.class_name);
    } else {
      return Status::Internal("'{}' is not a derived output", name);
    }
    out.push_back(std::move(o));
  }
  return out;
}

}  // namespace dlsys::serve
