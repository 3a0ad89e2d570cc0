// The monitor (issue 24): follows the request samples of every deployment that samples
// (serve/request_sampler.h), summarizes them per time window in fixed-size sketches against a
// reference (reference_profile.h), joins delayed labels to the sampled predictions, computes the
// signals of monitor_config.h and drives the alert rules: PENDING -> FIRING -> RESOLVED, stored
// in meta/monitor_store.h, notified to the server log, a webhook and a pipeline.
//
// What it holds is derived from the sample log and the store: after a restart it reads the
// retained samples again (windows and predictions within the longest window's history and the
// label horizon) and the labels from the start, and takes over the open alerts, so nothing it
// shows is lost with the process. Memory: columns x bins x windows for the sketches, plus one
// entry per prediction still waiting for its label (at most max_pending_predictions).
//
// Windows are aligned to the epoch (a 5 m window starts at a multiple of 300 s). A window is
// judged once it has ended (and `grace` passed, for samples still being written): drift and
// latency rules read the newest ended window; accuracy, mae read the newest window with enough
// labels (labels come late); accuracy_change is 1 for a window length after Page-Hinkley flags.
//
// Threading: tick() runs on the service's thread (start()) or, in tests, on the caller's; the
// readers (report, overview, metrics_text) may be called from any thread. Webhooks are sent on
// a notifier thread of their own, so a slow receiver delays no pass.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "data/dataset_store.h"
#include "meta/meta_store.h"
#include "monitor/monitor_config.h"
#include "monitor/reference_profile.h"
#include "serve/request_sampler.h"

namespace dlsys::monitor {

using json = nlohmann::json;

// What a served model says about itself (its dlsys metadata, read by the caller).
struct ModelFacts {
  std::vector<std::string> feature_names;  // the float input's elements, in order
  std::vector<std::string> class_names;
  std::string task;  // "classification", "binary_classification", "regression" or ""
  bool classifier() const {
    return task == "classification" || task == "binary_classification" || !class_names.empty();
  }
};

// A served version's counters (cumulative since it was loaded).
struct RequestCounts {
  int64_t requests = 0;  // every request the batcher saw: answered, failed and refused
  int64_t failed = 0;    // answered with an error, or past their deadline
  int64_t rejected = 0;  // refused (queue full, too many rows, shed)
};

struct MonitorServiceOptions {
  std::string sample_root;                 // DATA_DIR/samples
  data::DatasetStore* datasets = nullptr;  // where references are read
  std::chrono::milliseconds interval{2000};
  std::chrono::milliseconds grace{1500};  // after a window ends, before it is judged
  int64_t max_pending_predictions = 1'000'000;
  // The facts of a registered model version (the server reads its ONNX metadata).
  std::function<Result<ModelFacts>(const std::string& model, int64_t version)> model_facts;
  // A deployment's serving counters by model version (primary, canary, shadow); may be empty
  // (then error_rate and rejection_rate have no value).
  std::function<std::map<int64_t, RequestCounts>(const std::string& deployment)> request_counts;
  // Starts a run of `pipeline` through its alert trigger for `alert`, once per `event_id`
  // (flow::PipelineService::fire_alert); may be empty.
  std::function<Status(const std::string& pipeline, const std::string& alert,
                       const std::string& event_id)>
      fire_pipeline;
  std::function<int64_t()> clock_ms;  // now (tests); empty: the system clock
  int64_t webhook_attempts = 3;
  std::chrono::milliseconds webhook_timeout{5000};
};

class MonitorService {
 public:
  MonitorService(meta::MetaStore& store, MonitorServiceOptions options);
  ~MonitorService();  // stop()
  MonitorService(const MonitorService&) = delete;
  MonitorService& operator=(const MonitorService&) = delete;

  // Runs tick() every interval on a thread of its own (errors go to the server log).
  void start();
  void stop();
  void wake();
  // One pass: the configuration, new samples, new labels, the rules. The first error is
  // returned after every deployment had its turn.
  Status tick();
  // Returns once every webhook queued so far was sent or gave up (tests).
  void flush_notifications();

  // GET /api/v1/monitor/{deployment}: the reference, per column its drift in each of the last
  // `history` windows of length `window_s` (0: the shortest), live quality, labels and alerts.
  // NotFound for a deployment that is not monitored (names the reason: no sampling, no data).
  Result<json> report(const std::string& deployment, int64_t window_s, int64_t history);
  // GET /api/v1/monitor: every monitored deployment in one line each.
  json overview();
  // The monitor's Prometheus families (drift, quality, labels, alerts), as of the last pass.
  std::string metrics_text();

 private:
  struct Quality {
    int64_t n = 0, correct = 0;
    double abs_error = 0;
  };
  struct Window {
    int64_t start_s = 0;
    std::vector<ColumnSketch> columns;
    int64_t samples = 0;
    std::map<int64_t, std::vector<int64_t>> latency;  // by version: quarter octaves of us
    std::map<int64_t, Quality> quality;               // by model version
  };
  struct Series {
    int64_t length_s = 0;
    std::deque<Window> windows;  // oldest first
  };
  struct Prediction {
    int64_t time_s = 0, version = 0;
    double value = 0;  // class id or the regression's value
    uint64_t seq = 0;  // which of the predictions with this id (a client may repeat an id)
  };
  struct PendingId {
    int64_t time_s = 0;
    std::string id;
    uint64_t seq = 0;
  };
  struct InputMap {                   // how one input tensor of a request becomes reference columns
    std::vector<int> element_column;  // per element of a row: the column, or -1
    int64_t channels = 0;             // > 0: per channel means into channel_column
    std::vector<int> channel_column;
  };
  struct Deployment {
    std::string name, model;
    int64_t version = 0;  // the model version whose reference is in use
    ModelFacts facts;
    std::shared_ptr<const ReferenceProfile> ref;
    std::string ref_error;  // why there is no reference (shown by report)
    int prediction_column = -1;
    std::unique_ptr<serve::SampleTail> tail;
    std::map<std::string, InputMap> inputs;  // by "name/numel"
    std::vector<Series> series;
    DeploymentSettings settings;
    std::unordered_map<std::string, Prediction> predictions;
    std::deque<PendingId> prediction_order;  // oldest first
    uint64_t prediction_seq = 0;
    int64_t feedback_cursor = 0;  // the last label id read
    int64_t since_ms = 0;         // when this monitor started following it
    int64_t ref_failed_ms = 0;    // when building its reference last failed (retried later)
    std::map<std::string, std::pair<json, int64_t>> early_labels;  // id -> (label, received ms)
    PageHinkley change;
    int64_t last_change_ms = 0;
    int64_t samples = 0, labels_joined = 0, labels_unmatched = 0, skipped_records = 0;
    std::deque<std::pair<int64_t, std::map<int64_t, RequestCounts>>> counts;  // (ms, by version)
  };
  struct Episode {  // an alert in flight for (rule, deployment)
    meta::AlertRecord record;
  };

  int64_t now_ms() const;
  Status load_config();
  Status refresh_deployments();
  // The model version deployment `d` serves now: its pinned number, or where its alias points.
  Result<int64_t> served_version(const meta::Deployment& d);
  // Builds d's reference for `served` (the version, or why it could not be read); a failure is
  // kept in d.ref_error, not returned.
  Status prepare(Deployment& d, const meta::Deployment& stored, Result<int64_t> served);
  Status consume(Deployment& d, serve::SampleRecord&& r);
  const InputMap& input_map(Deployment& d, const serve::SampledTensor& t, int64_t numel);
  Window& window_for(Deployment& d, Series& s, int64_t time_s, bool* dropped);
  Status join_labels();
  void join_one(Deployment& d, const std::string& id, const json& label, int64_t received_ms);
  void drop_oldest_prediction(Deployment& d);
  Status evaluate_rules();
  // The value of `rule`'s signal for `d` now; false when it has none.
  bool signal_value(const Deployment& d, const AlertRule& rule, double* value,
                    std::string* detail) const;
  const Series* series_of(const Deployment& d, int64_t window_s) const;
  // The start of the window the rules judge at `now_ms` (the newest that ended, plus the grace
  // for samples still being written), and that window of `s` (null: no traffic in it).
  static Quality total_quality(const Window& w);  // over its versions
  int64_t judged_start(int64_t now_ms, int64_t len) const;
  const Window* judged_window(const Series& s, int64_t now_ms) const;
  json window_drift(const Deployment& d, const Window& w) const;
  void notify(const AlertRule& rule, const meta::AlertRecord& a);
  void notifier_loop();
  std::string render_metrics() const;

  meta::MetaStore& store_;
  MonitorServiceOptions options_;
  mutable std::mutex mu_;  // guards everything below but the notifier's queue
  MonitorConfig config_;
  int64_t config_version_ = -1;
  std::map<std::string, Deployment> deployments_;
  int64_t last_pass_ms_ = 0;                                         // when the last tick() started
  std::map<std::pair<std::string, std::string>, Episode> episodes_;  // (rule, deployment)
  bool episodes_loaded_ = false;
  std::mutex metrics_mu_;  // guards metrics_ alone (read by /metrics while a pass runs)
  std::string metrics_;

  std::mutex run_mu_;
  std::condition_variable run_cv_;
  bool stopping_ = false, woken_ = false;
  std::thread thread_;

  struct Webhook {
    std::string url;
    json body;
  };
  std::mutex note_mu_;
  std::condition_variable note_cv_, note_done_cv_;
  std::deque<Webhook> notes_;
  int64_t notes_busy_ = 0;
  bool notes_stop_ = false;
  std::thread notifier_;
};

}  // namespace dlsys::monitor
