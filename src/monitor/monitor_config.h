// The monitoring configuration: one YAML document (stored in the metadata store, versioned;
// `dlsys monitor config apply FILE`) with settings per deployment and the alert rules.
//
//   defaults:                       # every deployment that samples requests, unless listed
//     windows: [5m, 1h, 1d]         # window lengths; each keeps `history` windows
//     history: 24
//     drift: {psi: 0.2, ks: 0.1, min_count: 100, false_alarm_rate: 0.01}
//     change: {delta: 0.02, lambda: 12, min_count: 30}   # Page-Hinkley on live errors
//     label_horizon: 7d             # how long a prediction waits for its label
//     tensors: auto                 # a tensor input: per element, per channel, or auto (per
//                                   # element up to 256 elements, else per channel)
//   deployments:
//     digits: {reference: digits@v2:train}   # instead of the model's lineage
//   rules:
//     - name: digits-drift
//       deployment: digits          # or "*": every monitored deployment
//       signal: drift               # drift | multivariate_drift | accuracy | mae |
//                                   # accuracy_change | latency_p99_ms | error_rate |
//                                   # rejection_rate | samples
//       column: any                 # drift only: a column name, or any (the default)
//       window: 5m                  # one of the windows (default: the shortest)
//       above: 0                    # or below: X; the default is above 0
//       for: 10m                    # how long the condition holds before FIRING (default 0)
//       severity: warning           # info | warning | critical
//       notify: {webhook: "http://127.0.0.1:9000/hook", pipeline: retrain, log: true}
//
// Signals (per deployment and window; monitor_service.h computes them): drift = the number of
// drifted columns (or 1/0 for one column), multivariate_drift = the number of drifted components
// of the reference's low-rank projection (projection.h), accuracy / mae = live quality from joined
// labels, accuracy_change = 1 once Page-Hinkley flags a rise of the error in the window,
// latency_p99_ms of the sampled requests, error_rate = failed / all requests and rejection_rate =
// refused / all requests (serving's counters of the version served), samples = requests sampled. A
// signal without enough data (fewer labels than drift.min_count, no requests) has no value, and its
// condition does not hold.
//
// Every error names the file, the line and the field.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "monitor/drift_score.h"
#include "monitor/page_hinkley.h"

namespace dlsys::monitor {

struct DeploymentSettings {
  std::vector<int64_t> windows_s = {300, 3600, 86400};
  int64_t history = 24;
  DriftRule drift;
  PageHinkleyOptions change;
  int64_t label_horizon_s = 7 * 86400;
  std::string reference;         // "NAME@vN[:split]"; empty: the model's lineage (training split)
  std::string tensors = "auto";  // "auto", "element" or "channel"
};

struct AlertRule {
  std::string name, deployment, signal, column = "any", severity = "warning";
  int64_t window_s = 0;  // 0: the deployment's shortest window
  bool above = true;
  double threshold = 0;
  int64_t for_s = 0;
  std::string webhook, pipeline;
  bool log = true;
};

struct MonitorConfig {
  DeploymentSettings defaults;
  std::map<std::string, DeploymentSettings> deployments;
  std::vector<AlertRule> rules;
  // The settings of `deployment`.
  const DeploymentSettings& settings(const std::string& deployment) const;
};

// The signals a rule may name.
const std::vector<std::string>& signal_names();
// Parses a duration: "90s", "10m", "1h", "7d" or a number of seconds. Errors name `where`.
Result<int64_t> parse_duration(const std::string& text, const std::string& where);
// A webhook's address, from "http://HOST[:PORT][/PATH]" (PORT 1..65535, default 80; PATH
// default "/"). InvalidArgument naming `where` for anything else.
struct WebhookUrl {
  std::string host, path;
  int port = 80;
};
Result<WebhookUrl> parse_webhook_url(const std::string& url, const std::string& where);
// Parses and checks the document; `file` names it in errors.
Result<MonitorConfig> parse_monitor_config(const std::string& yaml_text, const std::string& file);

}  // namespace dlsys::monitor
