// The memory planner alone (graph/memory_planner.h): liveness from step accesses, and placement
// of values in one arena, checked against offsets and totals computed by hand.
#include "graph/memory_planner.h"

#include <gtest/gtest.h>

namespace dlsys {
namespace {

BufferRequest req(size_t bytes, int first, int last) {
  return BufferRequest{bytes, Lifetime{first, last}};
}

TEST(MemoryPlanner, DisjointLifetimesShareMemory) {
  // A lives over steps 0-1, B over 2-3: B reuses A's bytes.
  MemoryPlan p = place_values({req(1000, 0, 1), req(1000, 2, 3)});
  ASSERT_EQ(p.offsets.size(), 2u);
  EXPECT_EQ(p.offsets[0], 0u);
  EXPECT_EQ(p.offsets[1], 0u);
  EXPECT_EQ(p.arena_bytes, 1024u);  // 1000 rounded up to 64
  EXPECT_EQ(p.sum_bytes, 2000u);
}

TEST(MemoryPlanner, OverlappingLifetimesDoNot) {
  // Intervals are inclusive: A [0, 2] and B [2, 3] are both live at step 2.
  MemoryPlan p = place_values({req(1000, 0, 2), req(1000, 2, 3)});
  EXPECT_EQ(p.offsets[0], 0u);
  EXPECT_EQ(p.offsets[1], 1024u);
  EXPECT_EQ(p.arena_bytes, 2048u);
}

TEST(MemoryPlanner, TotalAndOffsetsMatchAHandComputedPlan) {
  // Placed largest first: A at 0; C (no overlap with A) at 0 too; B overlaps A [0, 4096) and
  // C [0, 3008), so it goes after both at 4096; D lives throughout and goes after B.
  MemoryPlan p = place_values(
      {req(4096, 0, 1) /*A*/, req(1000, 1, 2) /*B*/, req(3000, 2, 3) /*C*/, req(64, 0, 3) /*D*/});
  EXPECT_EQ(p.offsets, (std::vector<size_t>{0, 4096, 0, 5120}));
  EXPECT_EQ(p.arena_bytes, 5184u);
  EXPECT_EQ(p.sum_bytes, 8160u);
}

TEST(MemoryPlanner, BestFitUsesAGapBelowAnotherLiveValue) {
  // P [0, 1] at 0; Q [0, 3] overlaps P: at 4096; R [2, 3] overlaps only Q and fits in the 4096
  // bytes below it, where P was.
  MemoryPlan p = place_values({req(4096, 0, 1), req(2048, 0, 3), req(1024, 2, 3)});
  EXPECT_EQ(p.offsets, (std::vector<size_t>{0, 4096, 0}));
  EXPECT_EQ(p.arena_bytes, 6144u);
  EXPECT_EQ(p.sum_bytes, 7168u);
}

TEST(MemoryPlanner, NoValuesNoArena) {
  MemoryPlan p = place_values({});
  EXPECT_EQ(p.arena_bytes, 0u);
  EXPECT_TRUE(p.offsets.empty());
}

TEST(MemoryPlanner, LifetimesFollowWritesReadsAliasesAndOutputs) {
  // v0 = step0(input); v1 = step1(v0); v2 is a view of v1 (no step); v3 = step2(v2), read
  // after the last step. v4 is never written or read. -1 entries (absent values) are ignored.
  std::vector<StepAccess> steps = {{{-1}, {0}}, {{0}, {1, -1}}, {{2}, {3}}};
  std::vector<int> root = {0, 1, 1, 3, 4};
  std::vector<Lifetime> life = compute_lifetimes(5, steps, root, {3});
  ASSERT_EQ(life.size(), 5u);
  EXPECT_EQ(life[0].first_def, 0);
  EXPECT_EQ(life[0].last_use, 1);
  EXPECT_EQ(life[1].first_def, 1);
  EXPECT_EQ(life[1].last_use, 2);  // read through its alias v2 at step 2
  EXPECT_EQ(life[3].first_def, 2);
  EXPECT_EQ(life[3].last_use, 3);  // a graph output: to the end (3 steps)
  EXPECT_EQ(life[4].first_def, 0);
  EXPECT_EQ(life[4].last_use, 0);
}

TEST(MemoryPlanner, AChainOfStepsNeedsTwoBuffers) {
  // Six steps each reading the previous value: at most two are live at once.
  std::vector<StepAccess> steps;
  for (int k = 0; k < 6; ++k) steps.push_back({{k == 0 ? -1 : k - 1}, {k}});
  std::vector<Lifetime> life = compute_lifetimes(6, steps, {}, {5});
  std::vector<BufferRequest> reqs;
  for (const Lifetime& l : life) reqs.push_back(BufferRequest{4096, l});
  MemoryPlan p = place_values(reqs);
  EXPECT_EQ(p.arena_bytes, 2 * 4096u);
  EXPECT_EQ(p.sum_bytes, 6 * 4096u);
  for (int k = 1; k < 6; ++k) EXPECT_NE(p.offsets[k], p.offsets[k - 1]) << k;
}

}  // namespace
}  // namespace dlsys
