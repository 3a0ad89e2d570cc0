#include "monitor/column_sketch.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace dlsys::monitor {

ColumnBins ColumnBins::from_sorted(const std::vector<double>& v, int target) {
  ColumnBins b;
  const size_t n = v.size();
  for (int k = 0; k <= target; ++k) {
    double pos = double(k) / target * double(n - 1);
    size_t lo = static_cast<size_t>(pos);
    size_t hi = std::min(lo + 1, n - 1);
    double e = v[lo] + (v[hi] - v[lo]) * (pos - double(lo));
    if (b.edges.empty() || e > b.edges.back()) b.edges.push_back(e);
  }
  return b;
}

size_t ColumnBins::bin_of(double x) const {
  if (x < edges.front()) return 0;
  if (x > edges.back()) return edges.size() + 1;
  if (x == edges.front()) return 1;
  // The first edge >= x: e_{k-1} < x <= e_k is bin k + 1.
  return static_cast<size_t>(std::lower_bound(edges.begin(), edges.end(), x) - edges.begin()) + 1;
}

std::pair<double, double> ColumnBins::range(size_t k) const {
  const double inf = std::numeric_limits<double>::infinity();
  if (k == 0) return {-inf, edges.front()};
  if (k == 1) return {edges.front(), edges.front()};
  if (k > edges.size()) return {edges.back(), inf};
  return {edges[k - 2], edges[k - 1]};
}

void ColumnSketch::merge(const ColumnSketch& o) {
  if (o.count > 0) {
    if (count == 0) {
      min = o.min;
      max = o.max;
    } else {
      min = std::min(min, o.min);
      max = std::max(max, o.max);
    }
  }
  count += o.count;
  nulls += o.nulls;
  sum += o.sum;
  sumsq += o.sumsq;
  if (bins.size() < o.bins.size()) bins.resize(o.bins.size(), 0);
  for (size_t i = 0; i < o.bins.size(); ++i) bins[i] += o.bins[i];
}

double ColumnSketch::quantile(double q, const ColumnBins& b) const {
  if (count == 0) return std::nan("");
  double target = q * double(count), seen = 0;
  for (size_t k = 0; k < bins.size(); ++k) {
    if (bins[k] == 0) continue;
    if (seen + double(bins[k]) >= target) {
      auto [lo, hi] = b.range(k);
      lo = std::max(lo, min);
      hi = std::min(hi, max);
      double f = (target - seen) / double(bins[k]);
      return lo + (hi - lo) * f;
    }
    seen += double(bins[k]);
  }
  return max;
}

nlohmann::json sketch_to_json(const ColumnSketch& s) {
  nlohmann::json j = {{"count", s.count},
                      {"nulls", s.nulls},
                      {"mean", s.mean()},
                      {"out_of_range", s.out_of_range()},
                      {"bins", s.bins}};
  if (s.count > 0) {
    j["min"] = s.min;
    j["max"] = s.max;
  }
  return j;
}

}  // namespace dlsys::monitor
