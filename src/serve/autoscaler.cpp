#include "serve/autoscaler.h"

#include <algorithm>

namespace dlsys::serve {

int AutoscalePolicy::decide(const AutoscaleSample& s) {
  const bool had_last = have_last_;
  const AutoscaleSample prev = last_;
  last_ = s;
  have_last_ = true;
  if (!had_last || s.at_us <= prev.at_us) return 0;
  const double wall = static_cast<double>(s.at_us - prev.at_us) * std::max(1, s.active);
  const double busy = static_cast<double>(s.compute_us - prev.compute_us) / wall;
  deep_ = s.queue_depth > 0 ? deep_ + 1 : 0;
  idle_ = s.queue_depth == 0 && busy < idle_below ? idle_ + 1 : 0;
  if (deep_ >= up_after && s.active < max_instances &&
      (s.active + 1) * threads_per_instance <= cores) {
    deep_ = idle_ = 0;
    scale_ups.fetch_add(1, std::memory_order_relaxed);
    return +1;
  }
  if (idle_ >= down_after && s.active > min_instances) {
    deep_ = idle_ = 0;
    scale_downs.fetch_add(1, std::memory_order_relaxed);
    return -1;
  }
  return 0;
}

}  // namespace dlsys::serve
