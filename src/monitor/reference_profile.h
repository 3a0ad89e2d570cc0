// The reference a deployment's traffic is compared with: per monitored column, the bins its
// sketches use (column_sketch.h) and the reference's own counts in them. By default it is built
// from the training split of the dataset version in the served model's lineage
// (dataset_version -> run -> model_version), from a uniform sample of its rows (seeded), so
// building it reads the version once and holds at most `max_values` numbers.
//
// Columns are the model's features by name (scalar dataset columns), or, for a tensor column,
// one column per element ("image[12]") or per channel ("image[c=0]": the mean of the channel's
// elements; dimension 0 of a row is the channel). The label column, when there is one, is the
// reference of the "__prediction" column (class ids for a classifier, values for a regression).
//
// Threading: a finished ReferenceProfile is immutable; share it.
#pragma once

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/dataset_store.h"
#include "monitor/column_sketch.h"
#include "monitor/projection.h"

namespace dlsys::monitor {

struct ReferenceColumn {
  std::string name;
  ColumnBins bins;
  std::vector<int64_t> counts;  // the reference sample's values per bin
  int64_t nulls = 0;
  double mean = 0;
};

struct ReferenceProfile {
  std::string source;  // "digits@v2:train"
  int64_t rows = 0;    // rows read
  std::vector<ReferenceColumn> columns;
  // The multivariate signal (projection.h): its scores are the columns from `projection_first`
  // on ("__pc1", ...); empty when not asked for or too few feature columns.
  Projection projection;
  int projection_first = -1;
  // The column named `name`, or -1.
  int index_of(const std::string& name) const;
};

// Rows in, a profile out: a reservoir of whole rows (every column sampled on the same rows).
class ReferenceBuilder {
 public:
  ReferenceBuilder(std::vector<std::string> columns, int64_t max_values = int64_t{20} << 20,
                   uint64_t seed = 0, int bins = 20);
  // Adds `rows` rows of values, row-major [rows, columns] (NaN: missing).
  void add(const double* values, int64_t rows);
  // `k` principal components of the feature columns (names not starting with "__") become
  // columns "__pc1".."__pck" of the profile, when there are at least `min_columns` of them.
  void set_projection(int k, size_t min_columns = 8) {
    projection_k_ = k;
    projection_min_columns_ = min_columns;
  }
  ReferenceProfile finish(std::string source) const;

 private:
  std::vector<std::string> names_;
  int64_t capacity_;  // rows the reservoir holds
  int bins_;
  int projection_k_ = 0;
  size_t projection_min_columns_ = 8;
  std::mt19937_64 rng_;
  int64_t rows_ = 0;
  std::vector<double> sample_;  // [min(rows_, capacity_), columns]
};

// How a tensor column becomes columns: per element, or per channel when it has more elements
// than `max_elements`.
struct TensorColumns {
  int64_t max_elements = 256;
  int projection_components = 4;  // the multivariate signal's components (0: none)
};

// Builds the profile of `split` of version `v`: `features` are the dataset columns the model
// reads, in order (empty: every column but `label`); `label` (may be empty) gives
// "__prediction", its values mapped through `class_names` (a label whose text is a class name
// becomes that class's id) when given. Errors name the version and the column.
Result<ReferenceProfile> profile_dataset(const data::DatasetStore& store,
                                         const data::VersionInfo& v, const std::string& split,
                                         std::vector<std::string> features,
                                         const std::string& label,
                                         const std::vector<std::string>& class_names,
                                         const TensorColumns& tensors = {});

}  // namespace dlsys::monitor
