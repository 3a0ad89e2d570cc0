#include "monitor/drift_score.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"

namespace dlsys::monitor {

double normal_quantile(double p) {
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,  -2.759285104469687e+02,
                             1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                             6.680131188771972e+01, -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                             -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                             3.754408661907416e+00};
  const double lo = 0.02425, hi = 1 - lo;
  if (p < lo) {
    double q = std::sqrt(-2 * std::log(p));
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
           ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  if (p > hi) return -normal_quantile(1 - p);
  double q = p - 0.5, r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
         (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

double chi2_quantile(double p, double dof) {
  double z = normal_quantile(p);
  double h = 2.0 / (9.0 * dof);
  double t = 1 - h + z * std::sqrt(h);
  return dof * std::max(0.0, t * t * t);
}

DriftScore score_drift(const std::vector<int64_t>& reference, const std::vector<int64_t>& current,
                       const DriftRule& rule, double alpha) {
  DLSYS_CHECK(reference.size() == current.size(),
              "reference and window of one column must share bins ({} vs {}): was the reference "
              "rebuilt without resetting the windows?",
              reference.size(), current.size());
  DriftScore s;
  const size_t k = reference.size();
  double n_ref = 0, n_cur = 0;
  for (size_t i = 0; i < k; ++i) {
    n_ref += double(reference[i]);
    n_cur += double(current[i]);
  }
  s.count = static_cast<int64_t>(n_cur);
  if (n_ref <= 0 || n_cur <= 0) return s;
  // The inner bins (1 .. k-2) are merged, adjacent ones, until each group expects at least 5
  // of the window's values (and holds 5 of the reference's): the chi-square approximation fails
  // for sparse bins (a pixel that is rarely lit), whose counts have Poisson tails. The two
  // out-of-range bins, which the reference never fills, are one group of their own: values the
  // training data never had are judged, not merged away.
  std::vector<std::pair<double, double>> groups;  // (reference, current) counts
  double gr = 0, gc = 0;
  for (size_t i = 1; i + 1 < k; ++i) {
    gr += double(reference[i]);
    gc += double(current[i]);
    if (gr / n_ref * n_cur >= 5 && gr >= 5) {
      groups.emplace_back(gr, gc);
      gr = gc = 0;
    }
  }
  if (groups.empty()) {
    groups.emplace_back(gr, gc);
  } else {
    groups.back().first += gr;
    groups.back().second += gc;
  }
  const double out_ref = double(reference.front() + reference.back());
  const double out_cur = double(current.front() + current.back());
  if (out_ref > 0 || out_cur > 0) groups.emplace_back(out_ref, out_cur);
  const size_t g = groups.size();
  size_t used = 0;
  const double sr = n_ref + 0.5 * double(g), sc = n_cur + 0.5 * double(g);
  for (const auto& [r, c] : groups) {
    if (r > 0 || c > 0) ++used;
    double p = (r + 0.5) / sr, q = (c + 0.5) / sc;
    s.psi += (q - p) * std::log(q / p);
  }
  // KS over the bins in their order (out-of-range ones at their ends).
  double cr = 0, cc = 0;
  for (size_t i = 0; i < k; ++i) {
    cr += double(reference[i]) / n_ref;
    cc += double(current[i]) / n_cur;
    s.ks = std::max(s.ks, std::fabs(cr - cc));
  }
  double dof = std::max<double>(1, double(used) - 1);
  // Half the false-alarm budget to each statistic.
  double a = std::clamp(alpha / 2, 1e-12, 0.5);
  double scale = 1 / n_cur + 1 / n_ref;
  s.psi_limit = std::max(rule.psi, chi2_quantile(1 - a, dof) * scale);
  s.ks_limit = std::max(rule.ks, std::sqrt(-0.5 * std::log(a / 2)) * std::sqrt(scale));
  s.decided = s.count >= rule.min_count;
  s.drift = s.decided && (s.psi >= s.psi_limit || s.ks >= s.ks_limit);
  return s;
}

}  // namespace dlsys::monitor
