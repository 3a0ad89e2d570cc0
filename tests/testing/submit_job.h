// Test helper of the training-service tests: a job submitted as the CLI submits it.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "jobs/job_spec.h"
#include "meta/meta_store.h"

namespace dlsys::jobs {

// Parses the job spec `yaml` and queues it for `who`; the job's id (0, and a failed expectation,
// when it does not parse or cannot be queued).
inline int64_t submit_job(meta::MetaStore& store, const std::string& yaml,
                          const meta::Principal& who) {
  auto spec = parse_job_spec(yaml, "job.yaml");
  EXPECT_TRUE(spec.ok()) << spec.status().to_string();
  if (!spec.ok()) return 0;
  meta::NewJob n{spec->name,       job_kind_name(spec->kind), to_json(*spec),
                 spec->priority,   spec->resources.threads,   spec->resources.memory_bytes,
                 spec->max_retries};
  auto j = store.jobs().submit(n, who);
  EXPECT_TRUE(j.ok()) << j.status().to_string();
  return j.ok() ? j->id : 0;
}

}  // namespace dlsys::jobs
