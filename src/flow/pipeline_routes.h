// Pipelines' REST routes on the dlsys server (docs/api.md, docs/pipelines.md):
//   POST /api/v1/pipelines                    create or update a pipeline: {"spec": YAML text}
//                                             (checked as `dlsys pipelines validate` checks it;
//                                             201 created, 200 updated; editor and up)
//   GET  /api/v1/pipelines                    every pipeline, by name
//   GET  /api/v1/pipelines/{name}             one, with its steps in run order
//   POST /api/v1/pipelines/{name}/runs        start a run: {"params": {...}, "no_cache": bool,
//                                             "event_id": "..."}; a second start with the same
//                                             event id answers the first run (200, not 201)
//   POST /api/v1/pipelines/{name}/alerts      an alert ({"alert": NAME, "id": EVENT}) starts a
//                                             run through the pipeline's alert trigger, once per
//                                             id (201; 200 with the run already started)
//   GET  /api/v1/pipelines/{name}/runs        its runs, newest first (?state=, paginated); the
//                                             name "-" lists the runs of every pipeline
//   GET  /api/v1/pipelines/{name}/runs/{id}   a run with its steps (inputs, outputs, cache hits,
//                                             jobs); "-" for any pipeline
//   GET  /api/v1/pipelines/{name}/runs/{id}/logs  the run's steps and what their jobs printed
//   POST /api/v1/pipelines/{name}/runs/{id}/cancel  (an editor their own runs, an admin any)
//   POST /api/v1/pipelines/{name}/runs/{id}/retry   a failed or cancelled run again: only what
//                                             did not succeed, and what depends on it
// The runs are the metadata store's (meta/pipeline_store.h); the PipelineService drives them.
#pragma once

#include <string>

#include "api/router.h"
#include "flow/pipeline_service.h"

namespace dlsys::flow {

struct PipelineRoutesOptions {
  // Where the training service keeps its jobs' folders (a job step's log is JOB_DIR/ID/log);
  // empty: logs show no job output.
  std::string job_dir;
  // With tokens required: pipelines with steps that act as the server itself (`command`: its
  // programs; `data.push`: its files; `notify`: its network) are created and run by admins only.
  bool server_steps_need_admin = false;
};

// Adds the routes above. `service` (and its store) must outlive the router's use.
void add_pipeline_routes(api::Router& router, PipelineService& service, meta::MetaStore& store,
                         PipelineRoutesOptions options);

}  // namespace dlsys::flow
