// ThreadTuner on synthetic run times: it settles on the faster thread count, notices within a
// few probes when a co-located load makes the other count faster (and when the load goes), and
// probes rarely enough that a quiet machine loses little.
#include <gtest/gtest.h>

#include <functional>

#include "graph/thread_tuner.h"

namespace dlsys {
namespace {

// Runs `n` runs whose time per thread count is `time(threads)`; returns how many used 1 thread.
int Drive(ThreadTuner* t, int n, const std::function<int64_t(int)>& time, int max = 2) {
  int ones = 0;
  for (int i = 0; i < n; ++i) {
    const int k = t->next(max);
    EXPECT_GE(k, 1);
    EXPECT_LE(k, max);
    ones += k == 1;
    t->record(k, time(k));
  }
  return ones;
}

TEST(ThreadTuner, KeepsTheFasterCountAndFollowsALoadThatComesAndGoes) {
  ThreadTuner t;
  auto quiet = [](int k) -> int64_t { return k == 2 ? 100 : 180; };
  auto loaded = [](int k) -> int64_t { return k == 2 ? 500 : 190; };
  // Quiet: 2 threads; 1 thread only while exploring (3 runs) and for one probe per 64 runs.
  int ones = Drive(&t, 640, quiet);
  EXPECT_EQ(t.chosen(), 2);
  EXPECT_LE(ones, 3 + 640 / ThreadTuner::kProbeEvery);
  // A busy neighbour makes 2 threads slow: 1 thread is chosen within a few probes.
  Drive(&t, 3 * ThreadTuner::kProbeEvery, loaded);
  EXPECT_EQ(t.chosen(), 1);
  // It goes away again: back to 2.
  Drive(&t, 3 * ThreadTuner::kProbeEvery, quiet);
  EXPECT_EQ(t.chosen(), 2);
  // Small differences (within kMargin) do not make it flip.
  Drive(&t, 10 * ThreadTuner::kProbeEvery, [](int k) -> int64_t { return k == 2 ? 100 : 95; });
  EXPECT_EQ(t.chosen(), 2);
}

TEST(ThreadTuner, TriesHalvesDownToOneAndStartsOverWhenTheSettingChanges) {
  ThreadTuner t;
  // 8 threads allowed, 2 is best: candidates 8, 4, 2, 1.
  Drive(
      &t, 32, [](int k) -> int64_t { return k == 2 ? 50 : 100; }, 8);
  EXPECT_EQ(t.chosen(), 2);
  // One thread allowed: no tuning.
  EXPECT_EQ(t.next(1), 1);
  t.record(1, 10);
  EXPECT_EQ(t.next(1), 1);
}

}  // namespace
}  // namespace dlsys
