// bench/monitor: the drift computation of issue 24 at scale. COLUMNS x ROWS of served values
// (default 1,000 x 1,000,000) are summarized into one window's sketches against a reference of
// 100,000 rows, and every column's drift is decided; prints the time of each part, the columns
// found drifted (every tenth column is shifted) and the process's peak RSS, as one JSON line per
// round. The values are a pure function of (row, column) (splitmix64), so the NumPy peer
// (drift_numpy.py) computes over exactly the same inputs.
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "monitor/column_sketch.h"
#include "monitor/drift_score.h"
#include "monitor/reference_profile.h"

namespace {

using Clock = std::chrono::steady_clock;

inline uint64_t splitmix64(uint64_t x) {
  uint64_t z = x + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The value of (row, col): uniform on [0, 1 + col % 5), plus 0.3 in the served data of every
// tenth column (the drift to find). Reference rows are another stream (row + 2^40).
inline double value(uint64_t row, uint64_t col, uint64_t columns, bool served) {
  const uint64_t r = served ? row : row + (uint64_t{1} << 40);
  const double u = double(splitmix64(r * columns + col) >> 11) * 0x1.0p-53;
  return u * double(1 + col % 5) + (served && col % 10 == 0 ? 0.3 : 0.0);
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("dlsys monitor drift benchmark");
  int64_t columns = 1000, rows = 1000000, reference_rows = 100000;
  int threads = 2, rounds = 3;
  app.add_option("--columns", columns);
  app.add_option("--rows", rows);
  app.add_option("--reference-rows", reference_rows);
  app.add_option("--threads", threads);
  app.add_option("--rounds", rounds);
  CLI11_PARSE(app, argc, argv);
  using namespace dlsys::monitor;
  for (int round = 1; round <= rounds; ++round) {
    // The reference: a seeded reservoir of its rows (20M values at most), bins and counts.
    auto t0 = Clock::now();
    std::vector<std::string> names;
    for (int64_t c = 0; c < columns; ++c) names.push_back("f" + std::to_string(c));
    ReferenceBuilder builder(names);
    std::vector<double> chunk;
    const int64_t chunk_rows = 1024;
    for (int64_t r0 = 0; r0 < reference_rows; r0 += chunk_rows) {
      const int64_t n = std::min(chunk_rows, reference_rows - r0);
      chunk.resize(size_t(n * columns));
      for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < columns; ++c)
          chunk[r * columns + c] = value(r0 + r, c, columns, false);
      builder.add(chunk.data(), n);
    }
    ReferenceProfile ref = builder.finish("synthetic");
    const double reference_s = seconds_since(t0);
    // One window's sketches over the served rows, columns split across the threads.
    auto t1 = Clock::now();
    std::vector<ColumnSketch> sketches;
    for (const auto& c : ref.columns) sketches.emplace_back(c.bins.size());
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        const int64_t lo = columns * t / threads, hi = columns * (t + 1) / threads;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = lo; c < hi; ++c)
            sketches[c].add(value(r, c, columns, true), ref.columns[c].bins);
      });
    for (auto& th : pool) th.join();
    const double sketch_s = seconds_since(t1);
    auto t2 = Clock::now();
    DriftRule rule;
    const double alpha = rule.false_alarm_rate / double(columns);
    int64_t drifted = 0, wrong = 0;
    for (int64_t c = 0; c < columns; ++c) {
      bool d = score_drift(ref.columns[c].counts, sketches[c].bins, rule, alpha).drift;
      drifted += d;
      wrong += d != (c % 10 == 0);
    }
    const double score_s = seconds_since(t2);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    nlohmann::json out = {{"round", round},
                          {"columns", columns},
                          {"rows", rows},
                          {"threads", threads},
                          {"reference_s", reference_s},
                          {"sketch_s", sketch_s},
                          {"score_s", score_s},
                          {"total_s", reference_s + sketch_s + score_s},
                          {"drifted", drifted},
                          {"misjudged", wrong},
                          {"peak_rss_mb", double(ru.ru_maxrss) / 1024.0}};
    std::printf("%s\n", out.dump().c_str());
    std::fflush(stdout);
  }
  return 0;
}
