// Inputs people have: rows of features in a CSV, TSV, JSONL or JSON file, turned into a model's
// input tensor; and the predictions of a classifier read back as classes and probabilities.
//
// Columns are matched by name to the features the model was trained on (its
// "dlsys.feature_names" metadata, written by the trainer): other columns, such as the label,
// are ignored, and a missing one is an error that names it. A model without names takes every
// numeric column in file order, and the count must match its input. Missing values become NaN
// (a model trained with an impute step fills them).
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "core/status.h"
#include "graph/ir.h"
#include "tensor/tensor.h"

namespace dlsys::cli {

// True for the paths read_input_file reads as rows (.csv, .tsv, .jsonl, .json).
bool is_tabular_path(const std::string& path);

// Reads `path` as the value of `input` of `model`: a .npy as stored, or rows of a tabular file
// as f32 [rows, features] (features: the input's per-sample element count). A .json file holds
// an array of rows, each an object {column: value} or an array of numbers. Errors name the
// file, the line or row, and the column.
Result<Tensor> read_input_file(const std::string& path, const Graph& model, const ValueInfo& input);

// One row's prediction of a model whose metadata says what its output is ("dlsys.task"):
// classification: softmax probabilities, the top class (its name from "dlsys.class_names");
// binary_classification: the sigmoid probability of the positive class; otherwise the values.
struct Prediction {
  int64_t class_id = -1;  // -1: not a classifier
  std::string class_name;
  double probability = 0;             // of class_id
  std::vector<double> probabilities;  // per class
  std::vector<double> values;         // the model's output row as it is
};

// The predictions for `output` ([N, ...]) of `model`.
std::vector<Prediction> predictions(const Graph& model, const Tensor& output);

// {"row": i, "class": name, "class_id": k, "probability": p, "probabilities": [...]} per row
// (or {"row": i, "values": [...]} for a model that is not a classifier).
nlohmann::json predictions_json(const std::vector<Prediction>& p);
// Prints a table: row, class, probability (or row and values).
void print_predictions(const std::vector<Prediction>& p);

}  // namespace dlsys::cli
