// Drift of one column in one window against its reference, with a decision that accounts for
// the window's sample size.
//
// Both statistics are read off the shared bins (column_sketch.h): the Kolmogorov-Smirnov D at
// the bin edges (the largest gap between the two cumulative distributions there, a lower bound
// of the exact D), and PSI over groups of bins: adjacent inner bins merged until each group
// expects at least 5 of the window's values (sparse bins have Poisson tails, not chi-square
// ones), and the out-of-range bins as one group of their own (values the training data never
// had are judged, not merged away); proportions are smoothed (+0.5 per group, Jeffreys), so an
// empty group in a small window is not an infinite surprise.
//
// The decision: a column drifts when a statistic is above BOTH an effect floor (DriftRule::psi,
// ::ks: a shift too small to matter is not drift, however much data shows it) and the level that
// sampling noise alone exceeds with probability alpha (so small windows do not alarm on noise).
// Under no drift, PSI ~ chi2(bins - 1) x (1/n + 1/N) (PSI is the symmetric Kullback-Leibler
// divergence, whose scaled form is asymptotically chi-square) and D has the two-sample
// Kolmogorov tail P(D > c sqrt((n+N)/(nN))) ~ 2 exp(-2c^2). `alpha` is the false-alarm
// probability per column and window; the monitor divides the deployment's rate by the number
// of columns (Bonferroni), so "any column drifts" keeps the configured rate.
#pragma once

#include <cstdint>
#include <vector>

#include "monitor/column_sketch.h"

namespace dlsys::monitor {

struct DriftRule {
  double psi = 0.2;                // effect floor for PSI
  double ks = 0.1;                 // effect floor for D
  int64_t min_count = 100;         // fewer values in a window: no decision
  double false_alarm_rate = 0.01;  // per window, over all of a deployment's columns
};

struct DriftScore {
  int64_t count = 0;  // the window's values
  double psi = 0, ks = 0;
  double psi_limit = 0, ks_limit = 0;  // the levels the decision used (floor or noise, larger)
  bool decided = false;                // count >= min_count
  bool drift = false;
};

// `reference` are the reference's counts per bin (same bins as `current`), `alpha` the
// per-column false-alarm probability.
DriftScore score_drift(const std::vector<int64_t>& reference, const std::vector<int64_t>& current,
                       const DriftRule& rule, double alpha);

// The p-quantile of chi-square with `dof` degrees of freedom (Wilson-Hilferty), and of the
// standard normal (Acklam's rational approximation, |error| < 1.2e-9). p in (0, 1).
double chi2_quantile(double p, double dof);
double normal_quantile(double p);

}  // namespace dlsys::monitor
