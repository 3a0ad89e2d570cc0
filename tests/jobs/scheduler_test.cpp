// The scheduling decision (jobs/scheduler.h): capacity in threads and memory, priority with no
// lower-priority job taking the room a higher one waits for, fair share between owners at equal
// priority, per-owner quotas, and a reason for every job that waits.
#include <gtest/gtest.h>

#include "jobs/scheduler.h"

namespace dlsys::jobs {
namespace {

meta::Job job(int64_t id, const std::string& owner, int64_t threads, int64_t priority = 0,
              int64_t memory = 0) {
  meta::Job j;
  j.id = id;
  j.owner = owner;
  j.threads = threads;
  j.priority = priority;
  j.memory_bytes = memory;
  j.created_at = 1000 + id;  // older ids first
  j.state = "QUEUED";
  return j;
}

bool waits_for(const Decision& d, int64_t id, const std::string& part) {
  auto it = d.waiting.find(id);
  return it != d.waiting.end() && it->second.find(part) != std::string::npos;
}

TEST(Scheduler, StartsWhatFitsTheThreadsInPriorityOrder) {
  SchedulerConfig c;
  c.threads = 4;
  std::vector<meta::Job> queued = {job(1, "a", 2), job(2, "a", 2, 5), job(3, "a", 1)};
  std::vector<meta::Job> running = {job(9, "b", 1)};
  Decision d = decide(queued, running, c, {});
  // Priority 5 first (2 threads), then the oldest of priority 0 (2 threads) does not fit the 1
  // left, the 1-thread one does.
  EXPECT_EQ(d.start, (std::vector<int64_t>{2, 3}));
  EXPECT_TRUE(waits_for(d, 1, "needs 2 threads, 1 free")) << d.waiting[1];
  EXPECT_EQ(d.waiting.size(), 1u);
}

TEST(Scheduler, AHigherPriorityJobWaitingForRoomHoldsBackLowerOnes) {
  SchedulerConfig c;
  c.threads = 4;
  std::vector<meta::Job> running = {job(9, "b", 3)};
  std::vector<meta::Job> queued = {job(1, "a", 2, 10), job(2, "a", 1, 0)};
  Decision d = decide(queued, running, c, {});
  EXPECT_TRUE(d.start.empty());
  EXPECT_TRUE(waits_for(d, 1, "needs 2 threads, 1 free"));
  EXPECT_TRUE(waits_for(d, 2, "higher priority waits"));
  // Memory packs too, where both are declared.
  c.threads = 8;
  c.memory_bytes = 1000;
  queued = {job(3, "a", 1, 0, 600), job(4, "a", 1, 0, 300), job(5, "a", 1, 0, 200)};
  d = decide(queued, {}, c, {});
  EXPECT_EQ(d.start, (std::vector<int64_t>{3, 4}));
  EXPECT_TRUE(waits_for(d, 5, "needs 200 bytes of memory, 100 free")) << d.waiting[5];
}

TEST(Scheduler, OwnersShareAtEqualPriority) {
  SchedulerConfig c;
  c.threads = 4;
  // Alice queued three jobs before Bob's two: they alternate, Bob (less recent usage) first.
  std::vector<meta::Job> queued = {job(1, "alice", 1), job(2, "alice", 1), job(3, "alice", 1),
                                   job(4, "bob", 1), job(5, "bob", 1)};
  Decision d = decide(queued, {}, c, {{"alice", 500.0}, {"bob", 20.0}});
  EXPECT_EQ(d.start, (std::vector<int64_t>{4, 1, 5, 2}));
  EXPECT_TRUE(waits_for(d, 3, "needs 1 threads, 0 free"));
  // An owner already running more threads comes after one running fewer.
  d = decide({job(1, "alice", 1), job(4, "bob", 1)}, {job(8, "bob", 2)}, c, {});
  EXPECT_EQ(d.start, (std::vector<int64_t>{1, 4}));
}

TEST(Scheduler, QuotasLimitAnOwnerWithoutHoldingOthersBack) {
  SchedulerConfig c;
  c.threads = 8;
  c.default_quota.max_jobs = 2;
  c.quotas["carol"] = {0, 3};  // any number of jobs, at most 3 threads
  std::vector<meta::Job> queued = {job(1, "alice", 1), job(2, "alice", 1), job(3, "alice", 1),
                                   job(4, "carol", 2), job(5, "carol", 2), job(6, "dave", 1)};
  Decision d = decide(queued, {}, c, {});
  std::vector<int64_t> started = d.start;
  std::sort(started.begin(), started.end());
  EXPECT_EQ(started, (std::vector<int64_t>{1, 2, 4, 6}));
  EXPECT_TRUE(waits_for(d, 3, "owner 'alice' is at the quota (2 jobs")) << d.waiting[3];
  EXPECT_TRUE(waits_for(d, 5, "owner 'carol' is at the quota")) << d.waiting[5];
}

TEST(Scheduler, AJobLargerThanTheServiceNeverFits) {
  SchedulerConfig c;
  c.threads = 2;
  c.memory_bytes = 100;
  EXPECT_NE(never_fits(job(1, "a", 3), c).find("needs 3 threads and the service has 2"),
            std::string::npos);
  EXPECT_NE(never_fits(job(2, "a", 1, 0, 101), c).find("101 bytes"), std::string::npos);
  EXPECT_EQ(never_fits(job(3, "a", 2, 0, 100), c), "");
  // It waits with that reason and holds nothing back.
  Decision d = decide({job(1, "a", 3, 9), job(3, "a", 1)}, {}, c, {});
  EXPECT_EQ(d.start, (std::vector<int64_t>{3}));
  EXPECT_TRUE(waits_for(d, 1, "never fits"));
}

}  // namespace
}  // namespace dlsys::jobs
