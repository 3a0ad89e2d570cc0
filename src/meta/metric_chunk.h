// How metric points are stored and how a series is read back (RunTracking, issue 25).
//
// Storage: each log_batch writes one row of `metric_chunks` per metric key it holds (a "chunk"):
// the key's points in the order logged, packed 24 bytes each (step and timestamp as
// little-endian int64, the value as a little-endian IEEE double), base64-encoded so one TEXT
// column serves SQLite and PostgreSQL alike, with the chunk's smallest and largest step and
// point count beside it. One row per key per batch, not per point, is what lets a 2-core server
// take a million points a second (a row and an index entry per point cost ~3 µs in SQLite).
// Points logged before chunks existed stay in the `metrics` table, one row each, and are read
// with the chunks.
//
// Reading: HistoryDownsampler gives metric_history's answer from the points of a series seen in
// any order, in two passes (count, then keep), so memory is bounded by the answer, not the
// series: at most max_points / 3 buckets of consecutive steps of equal width from the first
// step, each keeping the point with its smallest value, the one with its largest (ties: the
// lowest step, then the earliest timestamp) and its last point (highest step, then latest
// timestamp, then largest value); a series of at most max_points points is returned whole.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "meta/run_tracking.h"

namespace dlsys::meta {

// The text of a chunk holding `points` (in the order given).
std::string encode_metric_chunk(const std::vector<HistoryPoint>& points);
// Appends the points of a chunk's text to `out`, checked against its row: `n` points, steps in
// min_step..max_step, finite values. An error names what is wrong (a length that is not whole
// points, a character outside base64, a count, step or value that does not fit the row): a
// damaged row, never a partial or wrong read.
Status decode_metric_chunk(std::string_view text, int64_t n, int64_t min_step, int64_t max_step,
                           std::vector<HistoryPoint>* out);

class HistoryDownsampler {
 public:
  // `limit` points at most (>= 1), of the steps lo..hi (both included).
  HistoryDownsampler(int64_t limit, int64_t lo, int64_t hi) : limit_(limit), lo_(lo), hi_(hi) {}
  // Pass 1: every point of the series (points outside lo..hi are ignored).
  void count(const HistoryPoint& p);
  // Pass 1 for `n` points (n >= 1) known to lie in lo..hi with steps first..last (a chunk's row).
  void count_span(int64_t n, int64_t first, int64_t last);
  // Between the passes: how many points are in range.
  int64_t total() const { return total_; }
  // Pass 2: every point again (in any order). Points outside the first and last step seen by
  // pass 1 (logged in between) are ignored.
  void keep(const HistoryPoint& p);
  // The answer, in (step, timestamp, value) order.
  MetricHistory finish(int64_t run_id, const std::string& key);

 private:
  struct Bucket {
    bool used = false;
    HistoryPoint lo, hi, last;
  };
  void layout();  // the buckets, from pass 1's first and last step (once, before pass 2)
  int64_t limit_, lo_, hi_;
  int64_t total_ = 0, first_ = 0, last_ = 0;
  bool laid_out_ = false, whole_ = false, exact_ = true;
  int64_t width_ = 1, offset_ = 0;
  std::vector<Bucket> buckets_;
  std::vector<HistoryPoint> all_;  // a series of at most limit_ points, whole
};

}  // namespace dlsys::meta
