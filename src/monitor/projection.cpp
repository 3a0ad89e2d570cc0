#include "monitor/projection.h"

#include <algorithm>
#include <cmath>
#include <random>

namespace dlsys::monitor {

void Projection::project(const double* row, double* out) const {
  const size_t d = columns.size();
  for (size_t j = 0; j < components.size(); ++j) {
    double s = 0;
    for (size_t i = 0; i < d; ++i) {
      const double x = row[columns[i]];
      if (!std::isnan(x)) s += (x - mean[i]) * inv_std[i] * components[j][i];
    }
    out[j] = s;
  }
}

Projection fit_projection(const std::vector<double>& sample, size_t stride,
                          const std::vector<int>& columns, int k, int64_t max_rows, uint64_t seed) {
  Projection p;
  const size_t d = columns.size();
  const size_t all = stride ? sample.size() / stride : 0;
  if (d < 2 || all < 2 || k < 1) return p;
  // The rows used, standardized: [n, d].
  const size_t n = std::min(all, static_cast<size_t>(max_rows));
  std::vector<double> x(n * d);
  for (size_t r = 0; r < n; ++r) {
    const size_t src = r * all / n;
    for (size_t i = 0; i < d; ++i) {
      const double v = sample[src * stride + columns[i]];
      x[r * d + i] = v;
    }
  }
  p.columns = columns;
  p.mean.assign(d, 0);
  p.inv_std.assign(d, 0);
  for (size_t i = 0; i < d; ++i) {
    double s = 0, ss = 0, m = 0;
    for (size_t r = 0; r < n; ++r)
      if (!std::isnan(x[r * d + i])) {
        s += x[r * d + i];
        ++m;
      }
    const double mean = m > 0 ? s / m : 0;
    for (size_t r = 0; r < n; ++r) {
      double& v = x[r * d + i];
      v = std::isnan(v) ? 0 : v - mean;
      ss += v * v;
    }
    const double sd = std::sqrt(ss / double(n));
    p.mean[i] = mean;
    p.inv_std[i] = sd > 1e-12 ? 1 / sd : 0;  // a constant column contributes nothing
    for (size_t r = 0; r < n; ++r) x[r * d + i] *= p.inv_std[i];
  }
  // Power iteration on X^T X, deflating X by each component found.
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  std::vector<double> v(d), w(d), xr(n);
  for (int c = 0; c < k && c < static_cast<int>(d); ++c) {
    for (double& e : v) e = normal(rng);
    double lambda = 0;
    for (int it = 0; it < 100; ++it) {
      double norm = 0;
      for (double e : v) norm += e * e;
      norm = std::sqrt(norm);
      if (norm < 1e-300) break;
      for (double& e : v) e /= norm;
      // w = X^T (X v)
      for (size_t r = 0; r < n; ++r) {
        double s = 0;
        for (size_t i = 0; i < d; ++i) s += x[r * d + i] * v[i];
        xr[r] = s;
      }
      std::fill(w.begin(), w.end(), 0);
      for (size_t r = 0; r < n; ++r)
        for (size_t i = 0; i < d; ++i) w[i] += x[r * d + i] * xr[r];
      double next = 0, diff = 0;
      for (size_t i = 0; i < d; ++i) next += w[i] * v[i];
      v.swap(w);
      if (std::fabs(next - lambda) <= 1e-9 * std::fabs(next)) {
        lambda = next;
        break;
      }
      lambda = next;
      (void)diff;
    }
    double norm = 0;
    for (double e : v) norm += e * e;
    norm = std::sqrt(norm);
    if (norm < 1e-300 || lambda <= 1e-12) break;  // nothing left to explain
    for (double& e : v) e /= norm;
    p.components.push_back(v);
    // Deflate: X <- X - (X v) v^T.
    for (size_t r = 0; r < n; ++r) {
      double s = 0;
      for (size_t i = 0; i < d; ++i) s += x[r * d + i] * v[i];
      for (size_t i = 0; i < d; ++i) x[r * d + i] -= s * v[i];
    }
  }
  return p;
}

}  // namespace dlsys::monitor
