// Monitoring's REST routes (docs/api.md, "Monitoring"):
//   GET  /api/v1/monitor                          every monitored deployment, one line each
//   GET  /api/v1/monitor/deployments/{name}       drift per column per window, live quality,
//        ?window=5m&history=24                    labels, open alerts
//   GET  /api/v1/monitor/config                   the monitoring configuration in force
//   PUT  /api/v1/monitor/config  {"spec_text"}    a new one (checked first; admin: its rules
//                                                 call webhooks and start pipelines)
//   POST /api/v1/deployments/{name}/feedback      delayed labels:
//        {"labels": [{"id": REQUEST_ID, "label": CLASS_OR_VALUE}, ...]}  (at most 10,000)
//   GET  /api/v1/alerts?state=FIRING&deployment=D&limit=100
#pragma once

#include "api/router.h"
#include "meta/meta_store.h"
#include "monitor/monitor_service.h"

namespace dlsys::monitor {

// `service` may be null (a server that does not monitor): the reports are then 503 with a
// reason, while labels and the configuration are still stored.
void add_monitor_routes(api::Router& router, meta::MetaStore& store, MonitorService* service);

}  // namespace dlsys::monitor
