// The training service's REST routes on the dlsys server (docs/api.md, docs/jobs.md):
//   POST /api/v1/jobs                 submit a job (its spec as JSON; editor and up)
//   GET  /api/v1/jobs                 list, newest first (?state=, ?owner=, paginated)
//   GET  /api/v1/jobs/usage           core-seconds, CPU seconds, peak memory and cost ?by=owner,
//                                     run or model (version), of the jobs created since ?since_ms=
//   GET  /api/v1/jobs/{id}            one job
//   POST /api/v1/jobs/{id}/cancel     cancel (an editor their own jobs, an admin any)
//   GET  /api/v1/jobs/{id}/log        the job's log from ?offset= (at most ?max_bytes=, 1 MiB;
//                                     at least 4: a piece ends on a whole character)
// The queue is the metadata store's (meta/job_queue.h); a JobService (job_service.h) runs the
// jobs, told of submissions and cancels by `wake`.
#pragma once

#include <functional>
#include <string>

#include "api/router.h"
#include "jobs/job_spec.h"
#include "meta/meta_store.h"

namespace dlsys::jobs {

struct JobRoutesOptions {
  std::string work_dir;  // the service's: <work_dir>/<id>/log
  // Checks a submitted spec beyond its own fields (a train job's training spec and
  // hyperparameters, read as `dlsys train` will); may be null. Its error is the request's.
  std::function<Status(const JobSpec&)> validate;
  // Called after a submit or a cancel (the service's wake()); may be null.
  std::function<void()> wake;
  // The price of a core-hour (core time held by a job: its threads x its wall time), for the
  // usage's cost; 0: no price set.
  double core_hour_price = 0;
  // Command jobs run any program as the server's user: when set (a server with --auth), only an
  // admin may submit one (403 for others).
  bool command_jobs_need_admin = false;
};

// Adds the routes above. `store` must outlive the router's use.
void add_job_routes(api::Router& router, meta::MetaStore& store, JobRoutesOptions options);

// The largest piece of a log one request returns.
inline constexpr int64_t kMaxLogChunk = 1 << 20;

}  // namespace dlsys::jobs
