#include "serve/latency_histogram.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>

namespace dlsys::serve {

LatencyHistogram::LatencyHistogram(std::span<const int64_t> bounds_us) : bounds_(bounds_us) {
  // A programming error, not an input: the bounds are compile-time constants.
  if (bounds_.size() > kMaxBounds || !std::is_sorted(bounds_.begin(), bounds_.end())) std::abort();
}

void LatencyHistogram::observe(int64_t us) {
  us = std::max<int64_t>(us, 0);
  size_t b = 0;
  while (b < bounds_.size() && us > bounds_[b]) ++b;
  counts_[b].fetch_add(1, std::memory_order_relaxed);
  sum_us_.fetch_add(static_cast<uint64_t>(us), std::memory_order_relaxed);
}

LatencyHistogram::Snapshot LatencyHistogram::snapshot() const {
  Snapshot s;
  s.bounds_us = bounds_;
  s.cumulative.resize(bounds_.size() + 1);
  uint64_t cum = 0;
  for (size_t b = 0; b <= bounds_.size(); ++b) {
    cum += counts_[b].load(std::memory_order_relaxed);
    s.cumulative[b] = cum;
  }
  s.count = cum;
  s.sum_us = sum_us_.load(std::memory_order_relaxed);
  return s;
}

void append_histogram(std::string* out, std::string_view name, std::string_view labels,
                      const LatencyHistogram::Snapshot& s) {
  const std::string sep = labels.empty() ? "" : ",";
  for (size_t b = 0; b < s.cumulative.size(); ++b) {
    std::string le = b < s.bounds_us.size()
                         ? fmt::format("{}", static_cast<double>(s.bounds_us[b]) / 1e6)
                         : "+Inf";
    *out += fmt::format("{}_bucket{{{}{}le=\"{}\"}} {}\n", name, labels, sep, le, s.cumulative[b]);
  }
  const std::string braces = labels.empty() ? "" : fmt::format("{{{}}}", labels);
  *out += fmt::format("{}_sum{} {:.6f}\n", name, braces, static_cast<double>(s.sum_us) / 1e6);
  *out += fmt::format("{}_count{} {}\n", name, braces, s.count);
}

}  // namespace dlsys::serve
