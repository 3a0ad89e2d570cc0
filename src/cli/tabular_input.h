// Inputs people have: rows of features in a CSV, TSV, JSONL or JSON file, turned into a model's
// input tensor; and the predictions of a classifier read back as classes and probabilities.
//
// Columns are matched by name to the features the model was trained on (its
// "dlsys.feature_names" metadata, written by the trainer): other columns, such as the label,
// are ignored, and a missing one is an error that names it. A model without names takes every
// numeric column in file order, and the count must match its input. Missing values become NaN
// (a model trained with an impute step fills them). A feature that was a string column in
// training takes category names: a model that takes them as STRING inputs (ModelMetadata::
// string_inputs, what the trainer exports) gets the names themselves, one [rows, 1] input per
// string column, and its float input the other features; an older model gets them coded with
// the vocabulary it carries. Either way an unknown name (or a null) gives all zeros in its
// onehot block, as an unseen category does.
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "graph/ir.h"
#include "graph/model_metadata.h"
#include "tensor/tensor.h"

namespace dlsys::cli {

// True for the paths read_input_file reads as rows (.csv, .tsv, .jsonl, .json).
bool is_tabular_path(const std::string& path);

// Reads `path` as the value of `input` of `model`: a .npy as stored, or rows of a tabular file
// as f32 [rows, features] (features: the input's per-sample element count). A .json file holds
// an array of rows, each an object {column: value} or an array of numbers. Errors name the
// file, the line or row, and the column.
Result<Tensor> read_input_file(const std::string& path, const Graph& model, const ValueInfo& input);
// Reads the rows of tabular `path` into every input they fill: the one input of a
// single-input model, or the float input and each STRING input of a model with string_inputs.
Result<std::map<std::string, Tensor>> read_rows(const std::string& path, const Graph& model);

// {"row": i, "class": name, "class_id": k, "probability": p, "probabilities": [...]} per row
// (or {"row": i, "values": [...]} for a model that is not a classifier).
nlohmann::json predictions_json(const std::vector<Prediction>& p);
// Prints a table: row, class, probability (or row and values).
void print_predictions(const std::vector<Prediction>& p);

}  // namespace dlsys::cli
