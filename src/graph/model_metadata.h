// What a model trained by dlsys says about itself, and what its readers (`dlsys run`, serving)
// do with it. The trainer writes ONNX metadata_props (Graph::metadata; docs/formats.md, "Model
// metadata"):
//   dlsys.task           "classification", "binary_classification" or "regression"
//   dlsys.feature_names  JSON array: the name of each raw input feature, in input order
//   dlsys.class_names    JSON array: the name of each class, by class id
//   dlsys.preprocess     JSON: the preprocessing steps in the model's graph (train/preprocess.h);
//                        a onehot step over a string column carries its "vocabulary": the
//                        category names, parallel to its "categories" (the codes it compares)
//   dlsys.string_inputs  JSON array: the string columns the model takes as STRING inputs of the
//                        same name, [batch, 1] (its float input then holds the other features,
//                        in feature order). Absent in older models: their float input holds
//                        every feature, a string column as its code.
// A model without them (not trained by dlsys) reads as an empty ModelMetadata: every reader
// then falls back to plain tensors.
//
// Threading: a ModelMetadata is immutable once read; share it freely.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "graph/ir.h"
#include "tensor/tensor.h"

namespace dlsys {

struct ModelMetadata {
  std::string task;
  std::vector<std::string> feature_names;
  std::vector<std::string> class_names;
  // Per string (categorical) feature: category name -> the code the model's onehot compares.
  std::map<std::string, std::map<std::string, float, std::less<>>> vocabularies;
  // The features the model takes as STRING inputs named after them (dlsys.string_inputs).
  std::vector<std::string> string_inputs;

  // Reads what `g` carries; malformed entries are skipped (they are only hints for readers).
  static ModelMetadata read(const Graph& g);

  bool is_classifier() const { return task == "classification" || task == "binary_classification"; }
  // Whether feature `name` was a string column (its values are category names).
  bool is_categorical(const std::string& name) const { return vocabularies.count(name) > 0; }
  // The value the model takes for category `text` of feature `name`: its code, or -1 for a
  // category the training split did not have (the onehot step then gives all zeros, as it does
  // for an unseen code). std::nullopt when `name` is not categorical.
  std::optional<float> encode(const std::string& name, std::string_view text) const;
  // Whether feature `name` goes to the model as a STRING input of that name.
  bool takes_string(const std::string& name) const;
  // The features the model's float input holds, in order: every feature but string_inputs.
  std::vector<std::string> float_features() const;
};

// Rewrites a model that takes string columns as STRING inputs (string_inputs, as the trainer
// exports it: LabelEncoders, a Concat and a Gather rebuilding the features in front of the
// rest) into the older form: one f32 input [batch, features] holding every feature, a string
// column as its code (ModelMetadata::encode), named as the float input was ("input" when the
// model had none). The LabelEncoders' tables are the vocabulary `encode` codes with, so both
// forms answer alike. For readers that carry only numbers (serving's batches). Unchanged for a
// model without string_inputs; Invalid when the graph lacks the nodes the trainer writes.
Status to_codes_form(Graph* g);

// One row's prediction, from the model's first output and its metadata:
// classification: softmax probabilities and the top class (named from dlsys.class_names, else
// its id as text); binary_classification ([N, 1] logits): the sigmoid probability of class 1;
// otherwise (regression, or no metadata) only the values.
struct Prediction {
  int64_t class_id = -1;  // -1: not a classifier
  std::string class_name;
  double probability = 0;             // of class_id
  std::vector<double> probabilities;  // per class
  std::vector<double> values;         // the model's output row as it is
};

// The predictions for `output` (f32 [N, ...]); empty for another dtype.
std::vector<Prediction> predict(const ModelMetadata& m, const Tensor& output);

}  // namespace dlsys
