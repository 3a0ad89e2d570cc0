// One data directory's services: the metadata store, the object store, the dataset store and
// the router with the routes of all of them. The HTTP server and the in-process client both
// stand on it.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "api/router.h"
#include "data/dataset_store.h"
#include "data/upload_staging.h"
#include "meta/artifact_store.h"
#include "meta/meta_store.h"

namespace dlsys::api {

// How long a RUNNING run may go unheard before it is marked FAILED, by default (5 minutes: the
// trainer sends a heartbeat every 30 s).
constexpr int64_t kDefaultRunTimeoutMs = 300'000;

struct ServicesOptions {
  std::string data_dir;  // holds meta.db (SQLite) and objects/
  std::string meta_url;  // "" for SQLite in data_dir, or postgresql://...
  bool auth = false;     // require API tokens
  size_t db_connections = 16;
  // Checks a file registered as a model version (the CLI passes the ONNX importer; api does not
  // depend on graph). Null: no check.
  std::function<Status(const std::string& path)> model_validator;
  // A RUNNING run not heard from for this long is marked FAILED (docs/api.md, "Runs have an
  // end"): on each read of runs and by the server's periodic sweep. 0: never.
  int64_t run_timeout_ms = kDefaultRunTimeoutMs;
  // The clock of run times and of that sweep (ms since the epoch); null: the wall clock. Tests
  // move it instead of sleeping.
  std::function<int64_t()> clock;
  // Staged dataset pushes (data/upload_staging.h): files per upload, and bytes per upload (the
  // server sets it to its --max-upload-mb, which also bounds each file).
  int64_t max_upload_files = data::UploadLimits{}.max_files;
  int64_t max_upload_bytes = data::UploadLimits{}.max_bytes;
};

class Services {
 public:
  // Opens (creating if needed) the data directory and the metadata database, and adds the
  // routes of every component.
  static Result<std::unique_ptr<Services>> open(const ServicesOptions& options);

  // Removes temporary files (uploads, dataset pushes, row exports) and staged dataset uploads
  // untouched for an hour: the server runs it periodically, so files of requests that died do
  // not pile up.
  size_t sweep_temp_files();

  meta::MetaStore& store() { return *store_; }
  meta::ArtifactStore& objects() { return *objects_; }
  data::DatasetStore& datasets() { return *datasets_; }
  data::UploadStaging& uploads() { return *uploads_; }
  Router& router() { return *router_; }
  const ServicesOptions& options() const { return options_; }

 private:
  Services() = default;
  ServicesOptions options_;
  std::unique_ptr<meta::MetaStore> store_;
  std::unique_ptr<meta::ArtifactStore> objects_;
  std::unique_ptr<data::DatasetStore> datasets_;
  std::unique_ptr<data::UploadStaging> uploads_;
  std::unique_ptr<Router> router_;
};

// The default data directory: $DLSYS_HOME, else ~/.dlsys.
std::string default_data_dir();

}  // namespace dlsys::api
