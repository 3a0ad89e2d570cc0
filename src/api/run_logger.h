// RunLogger: what a training loop uses to record one run through the API (over HTTP to a
// server, or in-process on a data directory): params and tags at start, metrics buffered and
// sent in batches of up to 1000 points, artifacts, the final status, and heartbeats while
// nothing else is sent, so that a server can tell a live run from one whose process died.
// Not thread-safe (one training thread uses it); its heartbeat thread has its own client.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "api/client.h"

namespace dlsys::api {

// How often the logger says the run is alive when nothing else was sent (servers fail a run
// after --run-timeout-s, 300 s by default, without one).
constexpr std::chrono::milliseconds kDefaultHeartbeatPeriod{30'000};

struct RunLoggerOptions {
  // A POST /api/v1/runs/{id}/heartbeat goes out when this long has passed since the last
  // request of the logger; 0: no heartbeats.
  std::chrono::milliseconds heartbeat_period = kDefaultHeartbeatPeriod;
};

class RunLogger {
 public:
  // Creates a run called `name` in experiment `experiment` (created if missing), and starts the
  // heartbeat thread on a second client to the same place (client.another()). `client` must
  // outlive the logger.
  static Result<std::unique_ptr<RunLogger>> start(ApiClient& client, const std::string& experiment,
                                                  const std::string& name,
                                                  const std::map<std::string, std::string>& params,
                                                  const std::map<std::string, std::string>& tags,
                                                  const RunLoggerOptions& options = {});
  // Continues the existing run `run_id` (a job's run, made by the training service, which a
  // retried attempt continues): sets it RUNNING again, logs `params` (write-once: the same
  // values again are fine) and `tags`, and starts the heartbeat thread as start() does.
  static Result<std::unique_ptr<RunLogger>> attach(ApiClient& client, int64_t run_id,
                                                   const std::map<std::string, std::string>& params,
                                                   const std::map<std::string, std::string>& tags,
                                                   const RunLoggerOptions& options = {});
  // Marks the run FAILED unless finish() was called; stops the heartbeat thread.
  ~RunLogger();

  int64_t run_id() const { return run_id_; }
  // Buffers one point; sends the buffer when it holds 1000 points.
  Status log_metric(const std::string& key, double value, int64_t step);
  // Sends buffered points now (e.g. at the end of an epoch).
  Status flush();
  Status set_tag(const std::string& key, const std::string& value);
  // Uploads `file` as artifact `path` of the run.
  Status log_artifact(const std::string& path, const std::string& file);
  // Stops the heartbeats, flushes, then sets the final status: FINISHED, FAILED or KILLED.
  Status finish(const std::string& status = "FINISHED");
  // Stops the heartbeats and flushes, leaving the run's status as it is: another process
  // records the rest of the run (a rank of a data-parallel run that leaves the group to the
  // others). The destructor then changes nothing.
  Status detach();
  // Heartbeats the server accepted so far.
  int64_t heartbeats_sent() const;

 private:
  RunLogger(ApiClient& c, int64_t id) : client_(c), run_id_(id) {}
  // Notes that a request just went out (the next heartbeat is due a period after it).
  void sent();
  void heartbeat_loop(std::chrono::milliseconds period);
  void stop_heartbeats();

  ApiClient& client_;
  int64_t run_id_;
  json pending_ = json::array();
  bool finished_ = false;

  std::unique_ptr<ApiClient> beat_client_;  // used by beat_ only
  std::thread beat_;
  mutable std::mutex mu_;  // guards the three below
  std::condition_variable cv_;
  bool stop_ = false;
  std::chrono::steady_clock::time_point last_sent_ = std::chrono::steady_clock::now();
  int64_t heartbeats_ = 0;
};

}  // namespace dlsys::api
