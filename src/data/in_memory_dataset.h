// In-memory datasets for training on plain files: features [N, ...] as f32 and labels [N]
// (i64 class ids, or f32 targets), read from a CSV, NPY or IDX (MNIST) file through the same
// ingest sources that `dlsys data push` uses (data/ingest.h), so a file the dataset store
// accepts trains the same way whether pushed first or named directly in a spec. Also the
// seeded train/validation split. Errors name the file, the line (or item) and the column.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/loader.h"
#include "tensor/tensor.h"

namespace dlsys::data {

struct InMemoryDataset {
  Tensor features;  // f32 [N, ...]
  Tensor labels;    // i64 [N] (classes) or f32 [N] (targets)
  // The feature columns' names (a CSV header's, or "column N"), one per feature; empty when the
  // features are one tensor column (NPY, IDX).
  std::vector<std::string> feature_names;
  // The categories of each string feature column (FileDatasetOptions::categorical).
  Vocabularies vocabularies;
  int64_t size() const { return features.valid() && features.rank() > 0 ? features.dim(0) : 0; }
};

struct FileDatasetOptions {
  std::string format;       // "csv", "npy" or "idx"; "" picks by the file's extension
  std::string labels_path;  // npy / idx: the labels file beside the features
  // CSV: the label column's index (negative counts from the end); every other column is a
  // feature and must be numeric, or a string column named in `categorical`.
  int label_column = -1;
  std::string header = "auto";  // CSV: "auto", "yes" or "no" (as `dlsys data push --header`)
  // Labels as class ids (each a non-negative integer, i64) or as f32 regression targets.
  bool labels_as_classes = true;
  // A missing value: "error" (naming the line and column), "nan" (a feature becomes NaN, for an
  // impute step; a missing label is still an error) or "drop" (the row is left out).
  std::string nulls = "error";
  // CSV: string columns that are categorical features, coded as in DatasetLoaderOptions
  // (data/loader.h Vocabularies): with `vocabularies` when it has the column (a validation file
  // coded with the training file's categories), else the sorted distinct values of the file.
  std::vector<std::string> categorical;
  Vocabularies vocabularies;
  int64_t* dropped_rows = nullptr;  // receives the rows "drop" left out, when given
};

// Reads the whole file into memory. IDX images (u8) are scaled to [0, 1]; other features are
// converted to f32 as stored. Fails on the first row the source refuses, a missing value, a
// non-numeric feature, or a label that is not a class id when classes are asked for.
Result<InMemoryDataset> read_file_dataset(const std::string& path, const FileDatasetOptions& o);

// Rows [begin, end) of `d` (copies).
InMemoryDataset slice(const InMemoryDataset& d, int64_t begin, int64_t end);
// Splits `d` by a seeded shuffle: round(N * validation_fraction) rows go to `validation`.
Status split(const InMemoryDataset& d, double validation_fraction, uint64_t seed,
             InMemoryDataset* train, InMemoryDataset* validation);

}  // namespace dlsys::data
