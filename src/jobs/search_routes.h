// Hyperparameter search's REST routes on the dlsys server (docs/api.md, docs/search.md):
//   POST /api/v1/searches              submit a search (its spec as JSON; editor and up)
//   GET  /api/v1/searches              list, newest first (?state=, paginated)
//   GET  /api/v1/searches/{id}         one search with its rungs' epochs and its trials (each
//                                      with its job's state)
//   POST /api/v1/searches/{id}/cancel  cancel (an editor their own, an admin any): its trials'
//                                      jobs are cancelled, then it ends CANCELLED
// The searches are the metadata store's (meta/search_store.h); a SearchService
// (search_service.h) drives them, told of submissions and cancels by `wake`.
#pragma once

#include <functional>

#include "api/router.h"
#include "jobs/job_spec.h"
#include "meta/meta_store.h"

namespace dlsys::jobs {

struct SearchRoutesOptions {
  // Checks a trial's job as a job submission is checked (its training spec with the trial's
  // hyperparameters) and, with `extended` (asha: promoted trials continue from their
  // checkpoints), that its schedule allows that; may be null. Run on the first trials before
  // the search is stored.
  std::function<Status(const JobSpec& trial, bool extended)> validate;
  // Called after a submit or a cancel; may be null.
  std::function<void()> wake;
};

// Adds the routes above. `store` must outlive the router's use.
void add_search_routes(api::Router& router, meta::MetaStore& store, SearchRoutesOptions options);

}  // namespace dlsys::jobs
