#include "api/run_logger.h"

#include "core/file_util.h"
#include "core/json_get.h"
#include "meta/run_tracking.h"

namespace dlsys::api {

Result<std::unique_ptr<RunLogger>> RunLogger::start(
    ApiClient& client, const std::string& experiment, const std::string& name,
    const std::map<std::string, std::string>& params,
    const std::map<std::string, std::string>& tags) {
  DLSYS_ASSIGN_OR_RETURN(
      json run,
      client.call(
          "POST", "/api/v1/runs",
          {{"experiment", experiment}, {"name", name}, {"params", params}, {"tags", tags}}));
  DLSYS_ASSIGN_OR_RETURN(int64_t id,
                         json_get<int64_t>(run, "id", "the server's answer to POST /api/v1/runs"));
  return std::unique_ptr<RunLogger>(new RunLogger(client, id));
}

RunLogger::~RunLogger() {
  // A logger dropped without finish() (an exception, an early return) marks the run FAILED.
  if (!finished_) (void)finish("FAILED");
}

Status RunLogger::log_metric(const std::string& key, double value, int64_t step) {
  pending_.push_back({{"key", key}, {"value", value}, {"step", step}, {"timestamp", now_ms()}});
  if (pending_.size() >= meta::kMaxMetricsPerBatch) return flush();
  return Status::OK();
}

Status RunLogger::flush() {
  if (pending_.empty()) return Status::OK();
  json body = {{"metrics", std::move(pending_)}};
  pending_ = json::array();
  return client_.call("POST", fmt::format("/api/v1/runs/{}/log-batch", run_id_), body).status();
}

Status RunLogger::set_tag(const std::string& key, const std::string& value) {
  return client_
      .call("POST", fmt::format("/api/v1/runs/{}/log-batch", run_id_), {{"tags", {{key, value}}}})
      .status();
}

Status RunLogger::log_artifact(const std::string& path, const std::string& file) {
  return client_
      .upload(fmt::format("/api/v1/runs/{}/artifacts/{}", run_id_, url_encode(path, true)), file)
      .status();
}

Status RunLogger::finish(const std::string& status) {
  finished_ = true;
  Status st = flush();
  Status done =
      client_.call("PATCH", fmt::format("/api/v1/runs/{}", run_id_), {{"status", status}}).status();
  return st.ok() ? done : st;
}

}  // namespace dlsys::api
