// RunLogger: what a training loop uses to record one run through the API (over HTTP to a
// server, or in-process on a data directory): params and tags at start, metrics buffered and
// sent in batches of up to 1000 points, artifacts, and the final status. Not thread-safe.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "api/client.h"

namespace dlsys::api {

class RunLogger {
 public:
  // Creates a run called `name` in experiment `experiment` (created if missing).
  // `client` must outlive the logger.
  static Result<std::unique_ptr<RunLogger>> start(ApiClient& client, const std::string& experiment,
                                                  const std::string& name,
                                                  const std::map<std::string, std::string>& params,
                                                  const std::map<std::string, std::string>& tags);
  ~RunLogger();

  int64_t run_id() const { return run_id_; }
  // Buffers one point; sends the buffer when it holds 1000 points.
  Status log_metric(const std::string& key, double value, int64_t step);
  // Sends buffered points now (e.g. at the end of an epoch).
  Status flush();
  Status set_tag(const std::string& key, const std::string& value);
  // Uploads `file` as artifact `path` of the run.
  Status log_artifact(const std::string& path, const std::string& file);
  // Flushes, then sets the final status: FINISHED, FAILED or KILLED.
  Status finish(const std::string& status = "FINISHED");

 private:
  RunLogger(ApiClient& c, int64_t id) : client_(c), run_id_(id) {}
  ApiClient& client_;
  int64_t run_id_;
  json pending_ = json::array();
  bool finished_ = false;
};

}  // namespace dlsys::api
