// ThreadTuner picks how many OpenMP threads an inference plan runs with, between 1 and the
// caller's setting, by timing the runs themselves.
//
// Why: on a machine shared with another CPU-bound process (a second program, another model
// instance, a busy server's I/O threads), a parallel region waits at its barrier for a thread the
// OS has descheduled, and every oneDNN primitive and dlsys loop is such a region: a small model
// then runs slower on 2 threads than on 1 (docs/benchmarks.md measured 2-50x). No setting is right
// for both a quiet and a loaded machine, so the tuner measures.
//
// Policy: the first runs try each candidate (the caller's count, then halves down to 1) a few
// times and keep the fastest by median; afterwards, every kProbeEvery runs one run tries the
// next other candidate, and when it beat the current choice's recent median by kMargin, that
// candidate is tried kTrials times and taken if its median is still faster. On a quiet machine
// the probes cost about 1/kProbeEvery of a run each (a slower count, once); under load the
// better count is found within a few hundred runs.
//
// Not thread-safe: one per Plan, used by its runs (which are one at a time).
#pragma once

#include <cstdint>
#include <vector>

namespace dlsys {

class ThreadTuner {
 public:
  static constexpr int kTrials = 3;
  static constexpr int kProbeEvery = 64;
  static constexpr double kMargin = 0.85;
  static constexpr int kKept = 4 * kTrials;

  // The thread count for the next run, given the caller's setting `max_threads` (>= 1). A change
  // of max_threads starts the tuning over.
  int next(int max_threads);
  // The wall time of the run made with `threads`.
  void record(int threads, int64_t ns);
  // The count chosen so far (0 before the first choice).
  int chosen() const { return chosen_; }

 private:
  struct Candidate {
    int threads = 1;
    std::vector<int64_t> times;  // the most recent kKept runs (capacity reserved)
  };
  // Allocates nothing: runs stay allocation-free (tests/graph/steady_state_alloc_test.cpp).
  static int64_t median(const std::vector<int64_t>& v);
  void reset(int max_threads);
  int index_of(int threads) const;

  int max_ = 0;
  std::vector<Candidate> cands_;
  int chosen_ = 0;    // threads of the chosen candidate (0: still exploring)
  int trying_ = -1;   // candidate index being tried kTrials times, or -1
  int probe_ = 0;     // the next candidate index a probe tries
  int64_t runs_ = 0;  // runs since the last choice
};

}  // namespace dlsys
