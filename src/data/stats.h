// Column statistics of a dataset version and drift between two sets of statistics.
//
// StatsBuilder streams over the rows of a push once: exact count, nulls, min, max, mean and
// standard deviation, plus a uniform row sample (reservoir, seeded) of up to `sample_size` rows
// from which quantiles, the histogram and string top values are computed. Statistics are exact
// when the version has no more rows than the sample.
//
// Drift compares a reference (the older version) with a current set: per numeric column the
// Kolmogorov-Smirnov statistic D (largest gap between the two CDFs, read off 101 quantiles)
// and the Population Stability Index over the reference's deciles; per string column the PSI
// over the reference's top values plus "other".
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "data/row_batch.h"

namespace dlsys::data {

class StatsBuilder {
 public:
  explicit StatsBuilder(const Schema& schema, int64_t sample_size = 10000, uint64_t seed = 0);
  // Adds every row of `batch` (same schema as the constructor's).
  void add(const RowBatch& batch);
  // {"<column>": {...}, ...} for every column not starting with "__".
  json finish() const;
  int64_t rows() const { return rows_; }

 private:
  struct Moments {
    int64_t count = 0, nulls = 0;
    double min = 0, max = 0, shift = 0, sum = 0, sumsq = 0;
    void add(double v);
  };
  void take_sample_row(const RowBatch& b, int64_t r, int64_t slot);

  Schema schema_;
  int64_t sample_size_;
  std::mt19937_64 rng_;
  int64_t rows_ = 0;
  double w_ = 1;           // Algorithm L state
  int64_t next_take_ = 0;  // global index of the next row the reservoir takes
  std::vector<Moments> moments_;
  std::vector<std::vector<double>> num_sample_;       // per column, per sample slot (NaN: null)
  std::vector<std::vector<std::string>> str_sample_;  // per string column
  std::vector<std::vector<uint8_t>> str_null_;
  int64_t sample_rows_ = 0;
};

struct DriftThresholds {
  double psi = 0.2;  // PSI at or above: drift (0.1-0.2 is usually read as "moderate")
  double ks = 0.1;   // KS D at or above: drift
};

// Per-column drift between `reference` and `current` (both StatsBuilder::finish() outputs):
// {"<column>": {"psi":..,"ks":..,"drift":bool}, ...}, plus "__summary": {"columns_drifted":[..]}.
// Columns present in only one side are listed under "__summary" as added / removed.
json compute_drift(const json& reference, const json& current, const DriftThresholds& t);

}  // namespace dlsys::data
