// A column of served traffic summarized in a window, as a fixed-size mergeable sketch: counts,
// nulls, moments, and a histogram over bins fixed by the column's reference (the training data),
// so that a window's memory is bounded by its bins, not by the rows it saw, and two windows (or
// two servers' windows) add.
//
// The bins come from the reference's quantiles: edges e_0 < e_1 < ... < e_m (repeated quantiles
// of a discrete column merged). Bin 0 holds values below e_0 (lower than anything the reference
// had), bin 1 the value e_0 itself (the reference's minimum: the zeros of a binary or sparse
// column are a bin of their own), bins 2..m+1 the ranges (e_0, e_1], ..., (e_{m-1}, e_m], and the
// last bin values above e_m. A constant column (m = 0) has three bins: below, the value, above.
// The first and last bins are the out-of-range counts.
//
// Threading: plain values; no sharing.
#pragma once

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

namespace dlsys::monitor {

struct ColumnBins {
  std::vector<double> edges;  // strictly increasing; at least one

  // From the sorted, non-empty values of a reference: the edges at `target` equal-frequency
  // quantiles (fewer where values repeat).
  static ColumnBins from_sorted(const std::vector<double>& sorted, int target = 20);
  size_t size() const { return edges.size() + 2; }
  // The bin of finite `x` (see the banner).
  size_t bin_of(double x) const;
  // The range of bin `k` for display: below/above bins are open on one side (+-inf).
  std::pair<double, double> range(size_t k) const;
};

struct ColumnSketch {
  int64_t count = 0;  // finite values
  int64_t nulls = 0;  // NaN (a missing value)
  double sum = 0, sumsq = 0, min = 0, max = 0;
  std::vector<int64_t> bins;  // ColumnBins::size() entries

  explicit ColumnSketch(size_t n_bins = 0) : bins(n_bins, 0) {}
  void add(double x, const ColumnBins& b) {
    if (x != x) {
      ++nulls;
      return;
    }
    if (count == 0) min = max = x;
    if (x < min) min = x;
    if (x > max) max = x;
    ++count;
    sum += x;
    sumsq += x * x;
    ++bins[b.bin_of(x)];
  }
  // Adds `o` (same bins).
  void merge(const ColumnSketch& o);
  double mean() const { return count ? sum / count : 0; }
  int64_t out_of_range() const { return count ? bins.front() + bins.back() : 0; }
  // The q-quantile (0..1), interpolated inside its bin (out-of-range bins use min and max).
  double quantile(double q, const ColumnBins& b) const;
};

// {"count","nulls","mean","min","max","out_of_range","bins":[..]} (min, max absent when empty).
nlohmann::json sketch_to_json(const ColumnSketch& s);

}  // namespace dlsys::monitor
