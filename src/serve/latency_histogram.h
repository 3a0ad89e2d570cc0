// LatencyHistogram: durations counted in fixed buckets for Prometheus histograms (/metrics).
// observe() is lock-free (relaxed atomics) and may be called from any thread; snapshot() may run
// concurrently with it and gives cumulative bucket counts whose last (+Inf) bucket is _count.
#pragma once

#include <atomic>
#include <cstdint>
#include <iterator>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dlsys::serve {

class LatencyHistogram {
 public:
  // Request latency (arrival at the batcher to answer): 0.25 ms .. 5 s.
  static constexpr int64_t kRequestBoundsUs[] = {250,   500,   1000,   2500,   5000,    10000,
                                                 25000, 50000, 100000, 250000, 1000000, 5000000};
  // Queue and compute time, which are often far below a millisecond: 10 us .. 5 s.
  static constexpr int64_t kFineBoundsUs[] = {10,     25,     50,      100,    250,   500,
                                              1000,   2500,   5000,    10000,  25000, 50000,
                                              100000, 250000, 1000000, 5000000};
  static constexpr size_t kMaxBounds = 24;

  // `bounds_us`: ascending upper bounds in microseconds, at most kMaxBounds (the +Inf bucket
  // is added). The span must outlive the histogram (the constants above do).
  explicit LatencyHistogram(std::span<const int64_t> bounds_us = kRequestBoundsUs);
  LatencyHistogram(const LatencyHistogram&) = delete;
  LatencyHistogram& operator=(const LatencyHistogram&) = delete;

  // Counts one duration (negative durations count as 0).
  void observe(int64_t us);

  struct Snapshot {
    std::span<const int64_t> bounds_us;
    std::vector<uint64_t> cumulative;  // bounds_us.size() + 1 entries; the last is +Inf = count
    uint64_t count = 0;
    uint64_t sum_us = 0;
  };
  // The counts now, cumulative as Prometheus wants them (each bucket read once, so the buckets
  // never decrease along `le` and +Inf equals count even while observe() runs).
  Snapshot snapshot() const;

 private:
  std::span<const int64_t> bounds_;
  std::atomic<uint64_t> counts_[kMaxBounds + 1] = {};
  std::atomic<uint64_t> sum_us_{0};
};

// Appends the Prometheus text lines of histogram `name` for one label set (`labels` is the
// inside of the braces, e.g. deployment="a",version="1"; may be empty): name_bucket{...,le=".."}
// per bound in seconds and +Inf, name_sum (seconds) and name_count. No # HELP/# TYPE lines.
void append_histogram(std::string* out, std::string_view name, std::string_view labels,
                      const LatencyHistogram::Snapshot& s);

}  // namespace dlsys::serve
