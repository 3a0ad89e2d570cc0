#include "jobs/scheduler.h"

#include <algorithm>
#include <set>

namespace dlsys::jobs {
namespace {

struct OwnerUse {
  int64_t jobs = 0, threads = 0;
};

const OwnerQuota& quota_of(const SchedulerConfig& c, const std::string& owner) {
  auto it = c.quotas.find(owner);
  return it == c.quotas.end() ? c.default_quota : it->second;
}

}  // namespace

std::string never_fits(const meta::Job& job, const SchedulerConfig& c) {
  if (job.threads > c.threads)
    return fmt::format("it needs {} threads and the service has {}", job.threads, c.threads);
  if (c.memory_bytes > 0 && job.memory_bytes > c.memory_bytes)
    return fmt::format("it needs {} bytes of memory and the service has {}", job.memory_bytes,
                       c.memory_bytes);
  return "";
}

Decision decide(const std::vector<meta::Job>& queued, const std::vector<meta::Job>& running,
                const SchedulerConfig& c, const std::map<std::string, double>& recent_usage) {
  Decision d;
  int64_t free_threads = c.threads, free_memory = c.memory_bytes;
  std::map<std::string, OwnerUse> use;
  for (const meta::Job& r : running) {
    free_threads -= r.threads;
    free_memory -= r.memory_bytes;
    use[r.owner].jobs += 1;
    use[r.owner].threads += r.threads;
  }
  auto usage = [&](const std::string& owner) {
    auto it = recent_usage.find(owner);
    return it == recent_usage.end() ? 0.0 : it->second;
  };
  // Priority levels, highest first.
  std::set<int64_t, std::greater<>> levels;
  for (const meta::Job& j : queued) levels.insert(j.priority);
  std::set<int64_t> done;  // started or given a reason
  bool held = false;       // a higher-priority job waits for capacity
  for (int64_t level : levels) {
    std::vector<const meta::Job*> pending;
    for (const meta::Job& j : queued)
      if (j.priority == level) pending.push_back(&j);
    if (held) {
      for (const meta::Job* j : pending)
        d.waiting[j->id] = "a job of higher priority waits for capacity first";
      continue;
    }
    // Pick repeatedly: the fair-share order changes as owners get jobs started.
    while (!pending.empty()) {
      auto best = std::min_element(
          pending.begin(), pending.end(), [&](const meta::Job* a, const meta::Job* b) {
            auto key = [&](const meta::Job* j) {
              return std::make_tuple(use[j->owner].threads, usage(j->owner), j->created_at, j->id);
            };
            return key(a) < key(b);
          });
      const meta::Job* j = *best;
      pending.erase(best);
      const OwnerQuota& q = quota_of(c, j->owner);
      OwnerUse& u = use[j->owner];
      if (std::string why = never_fits(*j, c); !why.empty()) {
        d.waiting[j->id] = "never fits: " + why;
        continue;
      }
      if ((q.max_jobs > 0 && u.jobs + 1 > q.max_jobs) ||
          (q.max_threads > 0 && u.threads + j->threads > q.max_threads)) {
        d.waiting[j->id] = fmt::format(
            "owner '{}' is at the quota ({} jobs, {} threads running; at most {} and {})", j->owner,
            u.jobs, u.threads, q.max_jobs ? std::to_string(q.max_jobs) : "any",
            q.max_threads ? std::to_string(q.max_threads) : "any");
        continue;
      }
      bool memory_fits = c.memory_bytes <= 0 || j->memory_bytes <= free_memory;
      if (j->threads > free_threads || !memory_fits) {
        d.waiting[j->id] =
            j->threads > free_threads
                ? fmt::format("needs {} threads, {} free", j->threads, free_threads)
                : fmt::format("needs {} bytes of memory, {} free", j->memory_bytes, free_memory);
        held = true;  // lower levels wait; this level's smaller jobs may still start
        continue;
      }
      d.start.push_back(j->id);
      free_threads -= j->threads;
      free_memory -= j->memory_bytes;
      u.jobs += 1;
      u.threads += j->threads;
    }
  }
  return d;
}

}  // namespace dlsys::jobs
