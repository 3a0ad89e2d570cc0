#include "api/services.h"

#include "api/data_routes.h"

#include <cstdlib>

#include "api/meta_routes.h"
#include "core/file_util.h"

namespace dlsys::api {

std::string default_data_dir() {
  if (const char* h = std::getenv("DLSYS_HOME"); h && *h) return h;
  if (const char* home = std::getenv("HOME"); home && *home) return std::string(home) + "/.dlsys";
  return ".dlsys";
}

Result<std::unique_ptr<Services>> Services::open(const ServicesOptions& options) {
  std::unique_ptr<Services> b(new Services());
  b->options_ = options;
  if (b->options_.data_dir.empty()) b->options_.data_dir = default_data_dir();
  const std::string& dir = b->options_.data_dir;
  DLSYS_RETURN_IF_ERROR(make_dirs(dir));
  std::string url = options.meta_url.empty() ? dir + "/meta.db" : options.meta_url;
  DLSYS_ASSIGN_OR_RETURN(b->store_, meta::MetaStore::open(url, options.db_connections));
  b->store_->runs().set_liveness({options.run_timeout_ms, options.clock});
  DLSYS_ASSIGN_OR_RETURN(meta::ArtifactStore objects, meta::ArtifactStore::open(dir));
  b->objects_ = std::make_unique<meta::ArtifactStore>(std::move(objects));
  Router::Options ro;
  ro.auth_required = options.auth;
  ro.tokens = &b->store_->tokens();
  meta::ArtifactStore* obj = b->objects_.get();
  ro.upload_temp_path = [obj] { return obj->temp_path(); };
  ro.data_dir = dir;
  b->router_ = std::make_unique<Router>(ro);
  add_meta_routes(*b->router_, *b->store_, *b->objects_, options.model_validator);
  DLSYS_ASSIGN_OR_RETURN(b->datasets_, data::DatasetStore::open(dir + "/datasets"));
  b->uploads_ = std::make_unique<data::UploadStaging>(
      dir + "/datasets/uploads",
      data::UploadLimits{options.max_upload_files, options.max_upload_bytes});
  add_data_routes(*b->router_, *b->datasets_, *b->uploads_, b->store_->lineage());
  return b;
}

size_t Services::sweep_temp_files() {
  constexpr int64_t kMinAge = 3600;  // running uploads and pushes touch their files
  return remove_stale_files(options_.data_dir + "/objects/tmp", kMinAge) +
         remove_stale_files(datasets_->root() + "/tmp", kMinAge) + uploads_->sweep(kMinAge);
}

}  // namespace dlsys::api
