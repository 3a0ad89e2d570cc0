// What a model trained by dlsys offers over the Open Inference Protocol beyond its own tensors,
// read from its dlsys metadata (graph/model_metadata.h):
//
// - Columns: a request may send one input per raw feature (named as in dlsys.feature_names,
//   shape [N] or [N, 1]; numbers, or BYTES category names for a feature that was a string
//   column) instead of the model's single input; the codec assembles them into that input,
//   f32 [N, F] in feature order, category names coded with the model's vocabulary.
// - Derived outputs: a classifier's request may ask, by name in "outputs", for
//   "probabilities" (FP32 [N, K]: softmax of the logits; binary_classification: [N, 2]),
//   "class" (BYTES [N]: the predicted class's name from dlsys.class_names, else its id as text)
//   and "class_id" (INT64 [N]), computed from the model's first output after the batch was
//   split per request.
//
// Threading: a V2ModelExtras is immutable once built; share it freely.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "graph/model_metadata.h"
#include "serve/tensor_spec.h"
#include "tensor/tensor.h"

namespace dlsys::serve {

struct V2Feature {
  std::string name;
  bool categorical = false;  // takes category names (BYTES), coded by ModelMetadata::encode
};

// A derived output as the model metadata route lists it.
struct V2DerivedOutput {
  std::string name;            // "probabilities", "class" or "class_id"
  const char* datatype = "";   // "FP32", "BYTES", "INT64"
  std::vector<int64_t> shape;  // -1 for the batch (and a class count the model leaves free)
};

struct V2ModelExtras {
  ModelMetadata metadata;
  // Columns: empty when not offered. `feature_input` is the model input they fill.
  std::vector<V2Feature> features;
  size_t feature_input = 0;
  // Derived outputs: empty when not offered. `logits_output` is the model output they read.
  std::vector<V2DerivedOutput> derived;
  size_t logits_output = 0;

  // Whether `name` is one of the derived outputs offered.
  bool derives(const std::string& name) const;
  // The index of feature `name` in `features`, or -1.
  int feature_index(const std::string& name) const;
};

// What `metadata` lets serving offer for a model with `inputs` and `outputs`:
// columns when the metadata names the features, the model has exactly one input, FP32, whose
// per-row element count equals the number of names (a name equal to the input's own is not
// offered as a column: that name means the tensor form); derived outputs when the task is
// classification and the first output is FP32 [-1, K] (K > 1, or free), or the task is
// binary_classification and it is FP32 [-1, 1]; a derived name that is also a model output's is
// left out (the model's own wins).
V2ModelExtras v2_model_extras(ModelMetadata metadata, const std::vector<TensorSpec>& inputs,
                              const std::vector<TensorSpec>& outputs);

// An output computed by serving: a tensor, or BYTES elements (row-major, with `shape`).
struct V2ExtraOutput {
  std::string name;
  Tensor tensor;  // unset for BYTES
  bool is_bytes = false;
  std::vector<std::string> bytes;
  std::vector<int64_t> shape;
};

// Computes the derived outputs `names` (each one `extras` derives) from one request's
// `outputs` (the model's, in its output order). Internal when the logits do not allow it at run
// time (a classification output with one column).
Result<std::vector<V2ExtraOutput>> v2_derived_outputs(const V2ModelExtras& extras,
                                                      const std::vector<std::string>& names,
                                                      const std::vector<Tensor>& outputs);

}  // namespace dlsys::serve
