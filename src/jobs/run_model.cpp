#include "jobs/run_model.h"

#include <algorithm>
#include <vector>

namespace dlsys::jobs {

Result<int64_t> register_run_model(meta::MetaStore& store, meta::ArtifactStore* objects,
                                   const std::function<Status(const std::string&)>& validate,
                                   const RunModelRegistration& r) {
  if (r.run_id <= 0) return Status::Invalid("there is no run to register a model from");
  // The run's ONNX file: a train job's model.onnx, a command job's output/*.onnx.
  DLSYS_ASSIGN_OR_RETURN(auto artifacts, store.runs().list_artifacts(r.run_id, ""));
  std::vector<std::string> onnx;
  for (const auto& x : artifacts)
    if (x.path.size() > 5 && x.path.compare(x.path.size() - 5, 5, ".onnx") == 0)
      onnx.push_back(x.path);
  std::string path;
  for (const char* preferred : {"model.onnx", "output/model.onnx"})
    if (std::find(onnx.begin(), onnx.end(), preferred) != onnx.end()) path = preferred;
  if (path.empty() && onnx.size() == 1) path = onnx[0];
  if (path.empty() && onnx.empty())
    return Status::Invalid(
        "the job left no ONNX file in run {} (a command job writes one into $DLSYS_OUTPUT_DIR, "
        "e.g. model.onnx)",
        r.run_id);
  if (path.empty())
    return Status::Invalid("the job left {} ONNX files in run {} and none is called model.onnx",
                           onnx.size(), r.run_id);
  if (validate && objects) {
    DLSYS_ASSIGN_OR_RETURN(meta::ArtifactRecord rec, store.runs().get_artifact(r.run_id, path));
    DLSYS_ASSIGN_OR_RETURN(std::string file, objects->open_verified(rec.sha256));
    DLSYS_RETURN_IF_ERROR(validate(file).with_context(path));
  }
  const meta::Principal who{r.owner, meta::Role::kEditor};
  // The model is made on its first registration, as `dlsys models register` does.
  auto made = store.registry().create_model(r.model, "", who);
  if (!made.ok() && made.status().code() != StatusCode::kAlreadyExists) return made.status();
  DLSYS_ASSIGN_OR_RETURN(meta::ModelVersion v, store.registry().create_model_version(
                                                   r.model, r.run_id, path, r.description, who));
  if (!r.alias.empty())
    DLSYS_RETURN_IF_ERROR(store.registry().set_alias(r.model, r.alias, v.version, who).status());
  return v.version;
}

}  // namespace dlsys::jobs
