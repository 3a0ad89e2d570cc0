#include "meta/monitor_store.h"

#include <fmt/format.h>

#include "core/file_util.h"

namespace dlsys::meta {

namespace {

constexpr size_t kMaxConfigBytes = 256 << 10;
const char* kAlertColumns =
    "id, rule, deployment, severity, state, value, message, started_at, fired_at, resolved_at";

AlertRecord row_to_alert(const SqlRow& r) {
  AlertRecord a;
  a.id = sql_int(r[0]);
  a.rule = sql_text(r[1]);
  a.deployment = sql_text(r[2]);
  a.severity = sql_text(r[3]);
  a.state = sql_text(r[4]);
  a.value = sql_double(r[5]);
  a.message = sql_text(r[6]);
  a.started_at = sql_int(r[7]);
  a.fired_at = sql_int(r[8]);
  a.resolved_at = sql_int(r[9]);
  return a;
}

}  // namespace

void to_json(json& j, const MonitorConfigRecord& c) {
  j = {{"version", c.version},
       {"spec_text", c.spec_text},
       {"owner", c.owner},
       {"created_at", c.created_at}};
}

void to_json(json& j, const AlertRecord& a) {
  j = {{"id", a.id},
       {"rule", a.rule},
       {"deployment", a.deployment},
       {"severity", a.severity},
       {"state", a.state},
       {"value", a.value},
       {"message", a.message},
       {"started_at", a.started_at},
       {"fired_at", a.fired_at},
       {"resolved_at", a.resolved_at}};
}

Result<MonitorConfigRecord> MonitorStore::put_config(const std::string& spec_text,
                                                     const Principal& who) {
  if (spec_text.size() > kMaxConfigBytes)
    return Status::Invalid("the monitoring configuration is {} bytes; at most {} are stored",
                           spec_text.size(), kMaxConfigBytes);
  MonitorConfigRecord rec;
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    rec = MonitorConfigRecord{0, spec_text, who.name, now_ms()};
    DLSYS_ASSIGN_OR_RETURN(auto rows,
                           c.query("INSERT INTO monitor_configs (spec_text, owner, created_at) "
                                   "VALUES ($1,$2,$3) RETURNING version",
                                   {spec_text, who.name, rec.created_at}));
    rec.version = sql_int(rows.at(0)[0]);
    return audit(c, who, "monitor.config", fmt::format("monitor/config@{}", rec.version));
  }));
  return rec;
}

Result<std::optional<MonitorConfigRecord>> MonitorStore::config() {
  std::optional<MonitorConfigRecord> out;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    out.reset();
    DLSYS_ASSIGN_OR_RETURN(auto rows, c.query("SELECT version, spec_text, owner, created_at FROM "
                                              "monitor_configs ORDER BY version DESC LIMIT 1",
                                              {}));
    if (!rows.empty())
      out = MonitorConfigRecord{sql_int(rows[0][0]), sql_text(rows[0][1]), sql_text(rows[0][2]),
                                sql_int(rows[0][3])};
    return Status::OK();
  }));
  return out;
}

Result<int64_t> MonitorStore::add_feedback(
    const std::string& deployment, const std::vector<std::pair<std::string, json>>& labels) {
  int64_t added = 0;
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    added = 0;
    // Writers one at a time, so ids commit in the order they were drawn (a BIGSERIAL drawn by a
    // transaction that commits later would otherwise appear behind a reader's cursor).
    if (db_.dialect() == SqlDialect::kPostgres)
      DLSYS_RETURN_IF_ERROR(c.exec("LOCK TABLE monitor_feedback IN SHARE ROW EXCLUSIVE MODE", {}));
    const int64_t now = now_ms();
    for (const auto& [id, label] : labels) {
      DLSYS_ASSIGN_OR_RETURN(auto rows,
                             c.query("INSERT INTO monitor_feedback (deployment, request_id, label, "
                                     "received_at) VALUES ($1,$2,$3,$4) ON CONFLICT (deployment, "
                                     "request_id) DO NOTHING RETURNING id",
                                     {deployment, id, label.dump(), now}));
      added += static_cast<int64_t>(rows.size());
    }
    return Status::OK();
  }));
  return added;
}

Result<std::vector<FeedbackLabel>> MonitorStore::feedback_after(const std::string& deployment,
                                                                int64_t after_id, int64_t since_ms,
                                                                int limit) {
  std::vector<FeedbackLabel> out;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    out.clear();
    DLSYS_ASSIGN_OR_RETURN(
        auto rows,
        c.query("SELECT id, deployment, request_id, label, received_at FROM monitor_feedback "
                "WHERE deployment = $1 AND id > $2 AND received_at >= $3 ORDER BY id LIMIT $4",
                {deployment, after_id, since_ms, int64_t{limit}}));
    for (const auto& r : rows) {
      FeedbackLabel f{sql_int(r[0]), sql_text(r[1]), sql_text(r[2]), json(), sql_int(r[4])};
      f.label = json::parse(sql_text(r[3]), nullptr, false);  // written by add_feedback
      out.push_back(std::move(f));
    }
    return Status::OK();
  }));
  return out;
}

Result<AlertRecord> MonitorStore::insert_alert(AlertRecord a) {
  DLSYS_RETURN_IF_ERROR(db_.tx(true, [&](SqlConnection& c) -> Status {
    DLSYS_ASSIGN_OR_RETURN(
        auto rows, c.query("INSERT INTO alerts (rule, deployment, severity, state, value, message, "
                           "started_at, fired_at, resolved_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) "
                           "RETURNING id",
                           {a.rule, a.deployment, a.severity, a.state, a.value, a.message,
                            a.started_at, a.fired_at, a.resolved_at}));
    a.id = sql_int(rows.at(0)[0]);
    return Status::OK();
  }));
  return a;
}

Status MonitorStore::update_alert(const AlertRecord& a) {
  return db_.tx(true, [&](SqlConnection& c) -> Status {
    return c.exec(
        "UPDATE alerts SET state = $2, value = $3, message = $4, fired_at = $5, resolved_at = $6 "
        "WHERE id = $1",
        {a.id, a.state, a.value, a.message, a.fired_at, a.resolved_at});
  });
}

Status MonitorStore::delete_alert(int64_t id) {
  return db_.tx(true, [&](SqlConnection& c) -> Status {
    return c.exec("DELETE FROM alerts WHERE id = $1", {id});
  });
}

Result<std::vector<AlertRecord>> MonitorStore::list_alerts(const std::string& state,
                                                           const std::string& deployment,
                                                           int limit) {
  std::vector<AlertRecord> out;
  DLSYS_RETURN_IF_ERROR(db_.tx(false, [&](SqlConnection& c) -> Status {
    out.clear();
    DLSYS_ASSIGN_OR_RETURN(
        auto rows,
        c.query(std::string("SELECT ") + kAlertColumns +
                    " FROM alerts WHERE ($1 = '' OR state = $1) AND ($2 = '' OR deployment = $2) "
                    "ORDER BY id DESC LIMIT $3",
                {state, deployment, int64_t{limit}}));
    for (const auto& r : rows) out.push_back(row_to_alert(r));
    return Status::OK();
  }));
  return out;
}

}  // namespace dlsys::meta
