// A multivariate drift signal: a low-rank projection of a row's feature columns fitted on the
// reference (principal components of the standardized columns, by power iteration with
// deflation), whose scores are monitored as columns of their own ("__pc1", "__pc2", ...). A
// change in how features move together (an image's pixels, an embedding's dimensions) moves the
// scores' distributions even where each feature's own distribution is unchanged, which no
// per-column test sees.
//
// Threading: immutable once fitted; project() is const.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dlsys::monitor {

struct Projection {
  std::vector<int> columns;                     // the reference columns it reads
  std::vector<double> mean, inv_std;            // per column read
  std::vector<std::vector<double>> components;  // k rows of columns.size(), unit length
  bool empty() const { return components.empty(); }
  // The k scores of one row, given as values by reference column index (`row[columns[i]]`);
  // a missing value (NaN) counts as the column's mean.
  void project(const double* row, double* out) const;
};

// Fits `k` components on `sample` (row-major, `stride` values a row) over `columns`, using at
// most `max_rows` of its rows (evenly spaced). Empty when there are fewer than 2 columns or rows.
Projection fit_projection(const std::vector<double>& sample, size_t stride,
                          const std::vector<int>& columns, int k, int64_t max_rows = 2000,
                          uint64_t seed = 0);

}  // namespace dlsys::monitor
