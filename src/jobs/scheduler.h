// The training service's scheduling decision (issue 22), as a pure function of the queue, the
// running jobs and the configuration, so that its policy is tested without processes or a
// database. The service calls it whenever a job is queued or ends and starts what it returns
// (JobQueue::start, whose compare-and-set settles races between schedulers).
//
// Policy:
// - Capacity: a job starts only while the declared threads of all running jobs plus its own fit
//   the configured threads, and (where both are declared) its memory the free memory.
// - Priority: higher first. A job that does not fit the free capacity holds back every job of
//   lower priority (no lower-priority job takes the room it waits for: big high-priority jobs
//   never starve); jobs of its own priority that fit may still start.
// - Fair share at equal priority: the owner with the fewest threads running (counting those
//   started in this decision) goes first, then the one with less recent usage (core-seconds
//   over the service's window), then the oldest job.
// - Quotas per owner: at most max_jobs running jobs and max_threads threads (0: no limit); a
//   job over its owner's quota waits without holding back others.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "meta/job_queue.h"

namespace dlsys::jobs {

struct OwnerQuota {
  int64_t max_jobs = 0;     // running at once; 0: no limit
  int64_t max_threads = 0;  // summed over its running jobs; 0: no limit
};

struct SchedulerConfig {
  int64_t threads = 1;       // the machine's capacity for jobs
  int64_t memory_bytes = 0;  // 0: memory is not packed
  OwnerQuota default_quota;  // for owners without their own
  std::map<std::string, OwnerQuota> quotas;
};

struct Decision {
  std::vector<int64_t> start;              // job ids, in the order to start them
  std::map<int64_t, std::string> waiting;  // every other queued job: why it waits
};

// Which of `queued` (QUEUED jobs whose backoff has passed, any order) to start now, given the
// `running` jobs and each owner's `recent_usage` (core-seconds; absent: 0).
Decision decide(const std::vector<meta::Job>& queued, const std::vector<meta::Job>& running,
                const SchedulerConfig& config, const std::map<std::string, double>& recent_usage);

// Why `job` can never run under `config` (more threads or memory than the capacity), or "" when
// it can: the service refuses such a job when it is submitted.
std::string never_fits(const meta::Job& job, const SchedulerConfig& config);

}  // namespace dlsys::jobs
