#include "api/run_logger.h"

#include "core/file_util.h"
#include "core/json_get.h"
#include "meta/run_tracking.h"

namespace dlsys::api {

Result<std::unique_ptr<RunLogger>> RunLogger::start(
    ApiClient& client, const std::string& experiment, const std::string& name,
    const std::map<std::string, std::string>& params,
    const std::map<std::string, std::string>& tags, const RunLoggerOptions& options) {
  std::unique_ptr<ApiClient> beat_client;
  if (options.heartbeat_period.count() > 0) {
    DLSYS_ASSIGN_OR_RETURN(beat_client, client.another());
  }
  DLSYS_ASSIGN_OR_RETURN(
      json run,
      client.call(
          "POST", "/api/v1/runs",
          {{"experiment", experiment}, {"name", name}, {"params", params}, {"tags", tags}}));
  DLSYS_ASSIGN_OR_RETURN(int64_t id,
                         json_get<int64_t>(run, "id", "the server's answer to POST /api/v1/runs"));
  std::unique_ptr<RunLogger> logger(new RunLogger(client, id));
  if (beat_client) {
    logger->beat_client_ = std::move(beat_client);
    logger->beat_ =
        std::thread([l = logger.get(), p = options.heartbeat_period] { l->heartbeat_loop(p); });
  }
  return logger;
}

Result<std::unique_ptr<RunLogger>> RunLogger::attach(
    ApiClient& client, int64_t run_id, const std::map<std::string, std::string>& params,
    const std::map<std::string, std::string>& tags, const RunLoggerOptions& options) {
  std::unique_ptr<ApiClient> beat_client;
  if (options.heartbeat_period.count() > 0) {
    DLSYS_ASSIGN_OR_RETURN(beat_client, client.another());
  }
  const std::string run = fmt::format("/api/v1/runs/{}", run_id);
  DLSYS_RETURN_IF_ERROR(client.call("PATCH", run, {{"status", "RUNNING"}}).status());
  DLSYS_RETURN_IF_ERROR(client
                            .call("POST", run + "/log-batch",
                                  {{"metrics", json::array()}, {"params", params}, {"tags", tags}})
                            .status());
  std::unique_ptr<RunLogger> logger(new RunLogger(client, run_id));
  if (beat_client) {
    logger->beat_client_ = std::move(beat_client);
    logger->beat_ =
        std::thread([l = logger.get(), p = options.heartbeat_period] { l->heartbeat_loop(p); });
  }
  return logger;
}

Status RunLogger::detach() {
  stop_heartbeats();
  finished_ = true;
  return flush();
}

RunLogger::~RunLogger() {
  // A logger dropped without finish() (an exception, an early return) marks the run FAILED.
  if (!finished_) (void)finish("FAILED");
  stop_heartbeats();
}

void RunLogger::sent() {
  std::lock_guard<std::mutex> lock(mu_);
  last_sent_ = std::chrono::steady_clock::now();
}

void RunLogger::heartbeat_loop(std::chrono::milliseconds period) {
  const std::string target = fmt::format("/api/v1/runs/{}/heartbeat", run_id_);
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    // Sleeps until a period after the last request, or until stopped; a request sent meanwhile
    // moves the deadline (checked when it passes).
    if (cv_.wait_until(lock, last_sent_ + period, [this] { return stop_; })) break;
    if (std::chrono::steady_clock::now() < last_sent_ + period) continue;
    lock.unlock();
    // A failed heartbeat is not the training's failure; the next one comes a period later.
    bool ok = beat_client_->call("POST", target).ok();
    lock.lock();
    last_sent_ = std::chrono::steady_clock::now();
    if (ok) ++heartbeats_;
  }
}

void RunLogger::stop_heartbeats() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (beat_.joinable()) beat_.join();
}

int64_t RunLogger::heartbeats_sent() const {
  std::lock_guard<std::mutex> lock(mu_);
  return heartbeats_;
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
  Status st =
      client_.call("POST", fmt::format("/api/v1/runs/{}/log-batch", run_id_), body).status();
  sent();
  return st;
}

Status RunLogger::set_tag(const std::string& key, const std::string& value) {
  Status st = client_
                  .call("POST", fmt::format("/api/v1/runs/{}/log-batch", run_id_),
                        {{"tags", {{key, value}}}})
                  .status();
  sent();
  return st;
}

Status RunLogger::log_artifact(const std::string& path, const std::string& file) {
  Status st =
      client_
          .upload(fmt::format("/api/v1/runs/{}/artifacts/{}", run_id_, url_encode(path, true)),
                  file)
          .status();
  sent();
  return st;
}

Status RunLogger::finish(const std::string& status) {
  finished_ = true;
  stop_heartbeats();
  Status st = flush();
  Status done =
      client_.call("PATCH", fmt::format("/api/v1/runs/{}", run_id_), {{"status", status}}).status();
  return st.ok() ? done : st;
}

}  // namespace dlsys::api
