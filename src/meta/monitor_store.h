// What monitoring keeps in the metadata store (issue 24): the monitoring configuration (one YAML
// document of per-deployment settings and alert rules; every change a new version, the newest
// in force), the delayed labels posted for served requests (feedback), and the alerts with
// their states.
//
//   alert: PENDING (its condition holds, not yet for its `for`) --> FIRING --> RESOLVED
//          PENDING whose condition stops holding before `for` is deleted (it never alerted)
//
// A label is stored once per (deployment, request id): a second one for the same request is
// ignored and counted, so a client that retries a batch does not count its labels twice.
//
// Thread-safe; `db` must outlive the store.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "meta/auth.h"
#include "meta/store_db.h"

namespace dlsys::meta {

struct MonitorConfigRecord {
  int64_t version = 0;
  std::string spec_text, owner;
  int64_t created_at = 0;  // ms
};
// {"version", "spec_text", "owner", "created_at"}.
void to_json(json& j, const MonitorConfigRecord& c);

struct FeedbackLabel {
  int64_t id = 0;  // increasing in insertion order
  std::string deployment, request_id;
  json label;               // a class name or id, or a number (regression)
  int64_t received_at = 0;  // ms
};

struct AlertRecord {
  int64_t id = 0;
  std::string rule, deployment, severity;
  std::string state;  // PENDING, FIRING, RESOLVED
  double value = 0;   // the signal's value when the state last changed
  std::string message;
  int64_t started_at = 0, fired_at = 0, resolved_at = 0;  // ms; 0: not (yet)
};
// {"id", "rule", "deployment", "severity", "state", "value", "message", "started_at",
//  "fired_at", "resolved_at"}.
void to_json(json& j, const AlertRecord& a);

class MonitorStore {
 public:
  explicit MonitorStore(StoreDb& db) : db_(db) {}

  // Stores `spec_text` (checked by the caller) as the newest configuration, audited as
  // monitor.config. InvalidArgument over 256 KiB.
  Result<MonitorConfigRecord> put_config(const std::string& spec_text, const Principal& who);
  // The newest configuration; std::nullopt when none was ever stored.
  Result<std::optional<MonitorConfigRecord>> config();

  // Stores labels (request id, label) for `deployment` in one transaction; returns how many
  // were new (the rest repeat a request id already labelled).
  Result<int64_t> add_feedback(const std::string& deployment,
                               const std::vector<std::pair<std::string, json>>& labels);
  // Labels of `deployment` with id > `after_id` received at or after `since_ms`, in id order, at
  // most `limit`. Ids become visible in increasing order (on PostgreSQL add_feedback holds a
  // table lock, so a reader's cursor never passes a label still being written).
  Result<std::vector<FeedbackLabel>> feedback_after(const std::string& deployment, int64_t after_id,
                                                    int64_t since_ms, int limit);

  // Inserts `a` (its id is set) / writes its state, value, message and times / deletes it.
  Result<AlertRecord> insert_alert(AlertRecord a);
  Status update_alert(const AlertRecord& a);
  Status delete_alert(int64_t id);
  // Alerts newest first; `state` and `deployment` filter when not empty.
  Result<std::vector<AlertRecord>> list_alerts(const std::string& state,
                                               const std::string& deployment, int limit);

 private:
  StoreDb& db_;
};

}  // namespace dlsys::meta
