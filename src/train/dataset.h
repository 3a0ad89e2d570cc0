// In-memory datasets for training until the dataset manager lands: features [N, ...] as f32 and
// labels [N] (i64 class ids, or f32 targets), read from CSV, NPY or IDX (MNIST) files, and a
// seeded train/validation split. Readers reject malformed input with the file, line and column.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"
#include "tensor/tensor.h"

namespace dlsys::train {

struct Dataset {
  Tensor features;  // f32 [N, ...]
  Tensor labels;    // i64 [N] (classes) or f32 [N] / [N, K] (targets)
  int64_t size() const { return features.valid() && features.rank() > 0 ? features.dim(0) : 0; }
};

struct CsvOptions {
  int label_column = -1;          // index of the label column; negative counts from the end
  bool header = false;            // skip the first line; also skipped when it is not numeric
  bool labels_as_classes = true;  // i64 labels (each must be an integer); false: f32 targets
};

// Reads a numeric CSV (RFC 4180 quoting; no missing values) into features and labels.
Result<Dataset> read_csv(const std::string& path, const CsvOptions& options);
// Reads features (any numeric dtype, converted to f32) and labels (integer: i64; float: f32)
// from two .npy files with the same first dimension.
Result<Dataset> read_npy(const std::string& features_path, const std::string& labels_path);
// Reads MNIST-format IDX files: images (u8, [N, rows, cols], scaled to [0, 1]) and labels.
Result<Dataset> read_idx(const std::string& images_path, const std::string& labels_path);

// Rows [begin, end) of `d` (copies).
Dataset slice(const Dataset& d, int64_t begin, int64_t end);
// Splits `d` by a seeded shuffle: round(N * validation_fraction) rows go to `validation`.
Status split(const Dataset& d, double validation_fraction, uint64_t seed, Dataset* train,
             Dataset* validation);

}  // namespace dlsys::train
