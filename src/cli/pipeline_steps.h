// The pipeline step kinds that need more than the metadata store, as `dlsys server` runs them
// (flow/pipeline_service.h runs the rest): data.push and data.validate on the server's dataset
// store, evaluate on the engine, deploy through the server's model server. Each is idempotent
// (a step that ran when the server stopped runs again after the restart): a push of the same
// rows makes no new version, an evaluation is a new tracked run, a deployment that already
// serves what the step asks is left as it is.
#pragma once

#include <string>

#include "api/services.h"
#include "core/status.h"
#include "data/dataset_store.h"
#include "flow/pipeline_service.h"
#include "flow/step_fields.h"
#include "serve/model_server.h"

namespace dlsys::cli {

// Adds the handlers (and the dataset content ids the step cache uses) to `o`. `services` and
// `models` must outlive the pipeline service.
void add_pipeline_step_handlers(api::Services& services, serve::ModelServer& models,
                                flow::PipelineServiceOptions* o);

// Accuracy (a classifier: the share of rows whose predicted class is the label) or mse and mae
// (a regressor: its first output against the label), and the rows counted, of the ONNX model at
// `model_path` on `split` of version `v` ("" for every row); `label` names the label column
// ("" picks the one column that is neither a feature of the model nor the store's own).
struct Evaluation {
  nlohmann::json metrics = nlohmann::json::object();  // {"accuracy": 0.97} or {"mse", "mae"}
  int64_t rows = 0;
};
Result<Evaluation> evaluate_model(const std::string& model_path, const data::DatasetStore& store,
                                  const data::VersionInfo& v, const std::string& split,
                                  const std::string& label, const std::string& scratch_dir);

}  // namespace dlsys::cli
