#include "monitor/page_hinkley.h"

#include <algorithm>

namespace dlsys::monitor {

bool PageHinkley::add(double x) {
  ++n_;
  mean_ += (x - mean_) / double(n_);
  m_ += x - mean_ - o_.delta;
  min_ = std::min(min_, m_);
  if (n_ >= o_.min_count && m_ - min_ > o_.lambda) {
    *this = PageHinkley(o_);
    return true;
  }
  return false;
}

}  // namespace dlsys::monitor
