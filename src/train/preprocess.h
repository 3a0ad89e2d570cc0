// Preprocessing that travels with the model: the steps of `data.preprocess` (train/spec.h),
// fitted on the training split, become the first nodes of the model's graph. The trainer feeds
// raw features to that graph in training and evaluation alike, and the exported ONNX model
// starts with the same nodes, so any runtime that serves it takes raw features and answers as the
// trainer's evaluation did: there is no second implementation to drift (training/serving skew).
//
// Graph form (ONNX ops, constants named "preprocess.*", never trained):
//   impute       Where(IsNaN(x), fill, x)          fill[j] = NaN for columns it does not cover
//   clip         Max(Min(x, hi), lo)                +-inf for columns it does not cover
//   standardize, minmax, scale   Mul(Sub(x, shift), mul)   shift 0 and mul 1 elsewhere
//   onehot       Concat(Gather(x, kept columns), Cast(Equal(Gather(x, [c]), categories))...)
//                in training a string column arrives as its category's code (data/loader.h)
// then a Reshape to the model's input shape when it has more than one dimension.
//
// The exported model takes each string column as strings (string_inputs_to): a STRING input
// named after the column, [batch, 1], and a LabelEncoder (ai.onnx.ml) whose table is the
// vocabulary maps names to those codes (an unknown name to -1: an all-zero onehot block);
// the float input keeps the numeric columns. So ONNX Runtime or any other runtime fed raw
// rows answers as the trainer's evaluation did. The vocabulary also travels in the model's
// metadata (graph/model_metadata.h), which older models (codes in the float input) need.
//
// Threading: a fitted Preprocessor is immutable; apply() may run on many threads.
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/loader.h"
#include "graph/ir.h"
#include "tensor/tensor.h"
#include "train/spec.h"

namespace dlsys::train {

// Calls `visit` with every batch of the training split's raw features, f32 [B, F] (NaN for a
// null), in any order; stops at the first error `visit` returns. Called once per step that
// needs statistics, so it must be repeatable.
using FeatureBatches = std::function<Status(const std::function<Status(const Tensor&)>& visit)>;

// One fitted step (see the banner for what the vectors mean per kind).
struct FittedStep {
  std::string kind;
  std::vector<int> columns;       // the input features it covers
  std::vector<float> fill;        // impute
  std::vector<float> lo, hi;      // clip
  std::vector<float> shift, mul;  // standardize, minmax, scale
  std::vector<float> categories;  // onehot: the sorted categories of columns[0]
  // onehot of a string column: the name of each category (its vocabulary entry), parallel to
  // `categories` (their codes); written into the model as the step's "vocabulary".
  std::vector<std::string> category_names;
};

class Preprocessor {
 public:
  Preprocessor() = default;

  // Fits `steps` on the training features (`features` per sample, named by `names`, which may
  // be empty: then steps name columns by index). `vocabularies` names the string (categorical)
  // features, which arrive as codes (data/loader.h): each must be taken by a onehot step and by
  // no other. A step without columns covers every feature no onehot step takes. Errors name the
  // step (data.preprocess[i]) and the column: an unknown column, onehot of a column with more
  // than 256 categories or non-integer values, a column with no values to take a statistic of,
  // a string column left without onehot.
  static Result<Preprocessor> fit(const std::vector<PreprocessStep>& steps,
                                  const std::vector<std::string>& names, int64_t features,
                                  const FeatureBatches& batches,
                                  const data::Vocabularies& vocabularies = {});

  bool empty() const { return steps_.empty(); }
  int64_t in_features() const { return in_; }
  // Features after the steps (onehot adds one per category, less the column itself).
  int64_t out_features() const { return out_; }
  // The names of the output features ("color=2" for a onehot category); indices as text when
  // the input had no names.
  const std::vector<std::string>& out_names() const { return out_names_; }
  const std::vector<FittedStep>& steps() const { return steps_; }

  // The steps applied to x, f32 [N, in_features()] -> [N, out_features()], in plain C++ (the
  // reference the graph form is tested against; also what fit() uses between passes).
  Result<Tensor> apply(const Tensor& x) const;

  // Prepends the steps to `g`, whose input `input` is the model's ([batch, S...] with
  // numel(S) == out_features()): afterwards `input` is f32 [batch, in_features()] of raw
  // features and the old input is computed from it. Nothing changes when empty().
  Status prepend_to(Graph* g, const std::string& input = "input") const;

  // For the exported model (after prepend_to): each string column becomes a STRING input named
  // after the column, [batch, 1], and a LabelEncoder (ai.onnx.ml opset 2) maps its category
  // names to the codes its onehot step compares. A name outside the training vocabulary (and
  // "", which is how a missing value arrives) maps to -1, which matches no category: an
  // all-zero onehot block, as an unseen category gets in training. `input` then takes only the
  // numeric features, f32 [batch, numeric], in feature order (removed when there are none).
  // Returns the string columns' names, in feature order (empty: `g` is unchanged). Invalid when
  // a string column's name is already a value of `g`.
  Result<std::vector<std::string>> string_inputs_to(Graph* g,
                                                    const std::string& input = "input") const;

  // What the steps are and their fitted values, for the model's metadata ("dlsys.preprocess").
  nlohmann::json to_json() const;

 private:
  std::vector<FittedStep> steps_;
  std::vector<std::string> in_names_, out_names_;
  std::vector<int64_t> kept_;  // the input columns no onehot step takes, in order (fit)
  int64_t in_ = 0, out_ = 0;
};

// True for the constants prepend_to() adds (they are never trained).
bool is_preprocess_constant(const std::string& name);

}  // namespace dlsys::train
