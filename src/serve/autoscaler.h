// AutoscalePolicy: when a deployment version with min_instances < max_instances gets another
// model instance or gives one back. Fed one sample of its batcher per poll of the ModelServer's
// watcher (every 0.5 s by default):
//
//   - scale up by one when the queue was non-empty at `up_after` consecutive samples (every
//     active instance was busy and requests still waited), below max_instances, and when one
//     more instance's threads still fit in the machine's cores;
//   - scale down by one when, for `down_after` consecutive samples, the queue was empty and the
//     instances were busy less than `idle_below` of the time (compute time over wall time times
//     active instances), above min_instances.
//
// Counters restart after every change, so each step waits for fresh evidence. A plain struct of
// numbers and a decide() function: the watcher thread owns it; tests feed it samples directly.
#pragma once

#include <atomic>
#include <cstdint>

namespace dlsys::serve {

struct AutoscaleSample {
  int64_t queue_depth = 0;  // requests waiting now
  int64_t compute_us = 0;   // cumulative compute time of all instances (BatcherStats)
  int64_t at_us = 0;        // when the sample was taken (a steady clock, microseconds)
  int active = 1;           // instances taking batches
};

struct AutoscalePolicy {
  int min_instances = 1, max_instances = 1;
  int threads_per_instance = 1;
  int cores = 1;  // the machine's
  int up_after = 3, down_after = 10;
  double idle_below = 0.3;

  // +1 (add an instance), -1 (remove one) or 0, given the next sample.
  int decide(const AutoscaleSample& s);

  // For status and metrics (read from other threads).
  std::atomic<int64_t> scale_ups{0}, scale_downs{0};

 private:
  AutoscaleSample last_;
  bool have_last_ = false;
  int deep_ = 0, idle_ = 0;
};

}  // namespace dlsys::serve
