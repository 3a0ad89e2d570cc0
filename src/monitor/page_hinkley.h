// Change detection on a stream of outcomes (1: the prediction was wrong, 0: right; or an
// absolute error): the Page-Hinkley test for an increase of the mean. It accumulates
//   m_t = sum_{i<=t} (x_i - mean_i - delta)      (mean_i: the running mean up to i)
// and flags a change when m_t - min_{s<=t} m_s > lambda. `delta` is the size of change tolerated
// (a drift smaller than it is not flagged); `lambda` trades delay for false alarms. After a
// flag the test starts over (the new level becomes the baseline).
//
// Threading: a plain value.
#pragma once

#include <cstdint>

namespace dlsys::monitor {

struct PageHinkleyOptions {
  double delta = 0.02;     // for an error rate: changes of two points are noise
  double lambda = 12;      // errors above the tolerated excess before a flag
  int64_t min_count = 30;  // no flag before this many outcomes
};

class PageHinkley {
 public:
  explicit PageHinkley(PageHinkleyOptions o = {}) : o_(o) {}
  // Adds one outcome; true when it completes a change (the detector then restarts).
  bool add(double x);
  int64_t count() const { return n_; }
  double mean() const { return mean_; }
  double statistic() const { return m_ - min_; }

 private:
  PageHinkleyOptions o_;
  int64_t n_ = 0;
  double mean_ = 0, m_ = 0, min_ = 0;
};

}  // namespace dlsys::monitor
