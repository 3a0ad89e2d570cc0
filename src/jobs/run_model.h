// Registering the ONNX file a job's run left as a model version: what a job's on_success and a
// search's `register` do (job_service.h, search_service.h).
#pragma once

#include <functional>
#include <string>

#include "core/status.h"
#include "meta/artifact_store.h"
#include "meta/meta_store.h"

namespace dlsys::jobs {

struct RunModelRegistration {
  int64_t run_id = 0;
  std::string owner;        // registers as this editor
  std::string model;        // the registered model (made on its first registration)
  std::string alias;        // moved to the new version when not empty
  std::string description;  // of the version ("registered by job 7")
};

// Registers the run's ONNX artifact (model.onnx, else output/model.onnx, else its only .onnx
// file) as a new version of r.model, after `validate` (when given with `objects`) accepts the
// file, and moves r.alias to it. Returns the version. Errors say what the run lacks.
Result<int64_t> register_run_model(meta::MetaStore& store, meta::ArtifactStore* objects,
                                   const std::function<Status(const std::string&)>& validate,
                                   const RunModelRegistration& r);

}  // namespace dlsys::jobs
