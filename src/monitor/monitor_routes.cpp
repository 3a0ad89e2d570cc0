#include "monitor/monitor_routes.h"

#include <fmt/format.h>

#include "api/request_util.h"
#include "core/utf8.h"

namespace dlsys::monitor {

namespace {

using api::Access;
using api::Request;
using api::Response;
using nlohmann::json;

constexpr size_t kMaxLabels = 10000;
constexpr size_t kMaxRequestId = 128;

Status no_service() {
  return Status::Unavailable(
      "this server does not monitor (it was started with --no-monitor); the labels and the "
      "configuration are stored for a server that does");
}

}  // namespace

void add_monitor_routes(api::Router& router, meta::MetaStore& store, MonitorService* service) {
  meta::MetaStore* s = &store;
  router.add("GET", "/api/v1/monitor", Access::kRead, [service](Request&) -> Result<Response> {
    if (!service) return no_service();
    return Response::json_body({{"deployments", service->overview()}});
  });
  router.add("GET", "/api/v1/monitor/deployments/{name}", Access::kRead,
             [service](Request& r) -> Result<Response> {
               if (!service) return no_service();
               int64_t window = 0, history = 24;
               if (auto w = r.query_or("window", ""); !w.empty()) {
                 DLSYS_ASSIGN_OR_RETURN(window, parse_duration(w, "query parameter window"));
               }
               if (auto h = r.query_or("history", ""); !h.empty()) {
                 DLSYS_ASSIGN_OR_RETURN(history, api::parse_int(h, "query parameter history"));
                 if (history < 1 || history > 1000)
                   return Status::Invalid("query parameter history is {}; it must be 1..1000",
                                          history);
               }
               DLSYS_ASSIGN_OR_RETURN(json out, service->report(r.param("name"), window, history));
               return Response::json_body(out);
             });
  router.add("GET", "/api/v1/monitor/config", Access::kRead, [s](Request&) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(auto rec, s->monitor().config());
    if (!rec)
      return Response::json_body({{"version", 0},
                                  {"spec_text", ""},
                                  {"note", "no configuration stored: the defaults apply"}});
    return Response::json_body(*rec);
  });
  router.add(
      "PUT", "/api/v1/monitor/config", Access::kAdmin,
      [s, service](Request& r) -> Result<Response> {
        DLSYS_ASSIGN_OR_RETURN(json body, api::body_object(r));
        DLSYS_ASSIGN_OR_RETURN(std::string text, api::string_field(body, "spec_text", true));
        DLSYS_RETURN_IF_ERROR(parse_monitor_config(text, "monitor config").status());
        DLSYS_ASSIGN_OR_RETURN(auto rec, s->monitor().put_config(text, r.principal));
        if (service) service->wake();
        return Response::json_body(rec);
      },
      false, 256 << 10);
  router.add(
      "POST", "/api/v1/deployments/{name}/feedback", Access::kWrite,
      [s, service](Request& r) -> Result<Response> {
        const std::string name = r.param("name");
        DLSYS_RETURN_IF_ERROR(s->deployments().get(name).status());
        DLSYS_ASSIGN_OR_RETURN(json body, api::body_object(r));
        auto it = body.find("labels");
        if (it == body.end() || !it->is_array())
          return Status::Invalid(
              "the body needs \"labels\": [{{\"id\": REQUEST_ID, \"label\": VALUE}}, ...] (the "
              "request ids the inference answers carried)");
        if (it->size() > kMaxLabels)
          return Status::Invalid("{} labels in one request; send at most {} per request",
                                 it->size(), kMaxLabels);
        std::vector<std::pair<std::string, json>> labels;
        for (size_t i = 0; i < it->size(); ++i) {
          const json& e = (*it)[i];
          const std::string where = fmt::format("labels[{}]", i);
          if (!e.is_object())
            return Status::Invalid("{} must be an object {{\"id\", \"label\"}}", where);
          auto id = e.find("id");
          if (id == e.end() || !id->is_string() || id->get<std::string>().empty() ||
              id->get<std::string>().size() > kMaxRequestId ||
              !is_valid_utf8(id->get<std::string>()))
            return Status::Invalid(
                "{}.id must be the request id (1..{} printable characters) an inference answer "
                "carried",
                where, kMaxRequestId);
          auto label = e.find("label");
          if (label == e.end() || !(label->is_string() || label->is_number()) ||
              (label->is_string() && label->get<std::string>().size() > 256))
            return Status::Invalid("{}.label must be a class name or id, or a number (regression)",
                                   where);
          labels.emplace_back(id->get<std::string>(), *label);
        }
        DLSYS_ASSIGN_OR_RETURN(int64_t added, s->monitor().add_feedback(name, labels));
        if (service) service->wake();
        return Response::json_body({{"received", labels.size()},
                                    {"new", added},
                                    {"duplicates", int64_t(labels.size()) - added}});
      },
      false, api::kBatchBodyLimit);
  router.add("GET", "/api/v1/alerts", Access::kRead, [s](Request& r) -> Result<Response> {
    const std::string state = r.query_or("state", "");
    if (!state.empty() && state != "PENDING" && state != "FIRING" && state != "RESOLVED")
      return Status::Invalid("query parameter state is '{}'; it is PENDING, FIRING or RESOLVED",
                             state.substr(0, 40));
    int64_t limit = 100;
    if (auto l = r.query_or("limit", ""); !l.empty()) {
      DLSYS_ASSIGN_OR_RETURN(limit, api::parse_int(l, "query parameter limit"));
      if (limit < 1 || limit > 1000)
        return Status::Invalid("query parameter limit is {}; it must be 1..1000", limit);
    }
    DLSYS_ASSIGN_OR_RETURN(
        auto alerts,
        s->monitor().list_alerts(state, r.query_or("deployment", ""), static_cast<int>(limit)));
    return Response::json_body({{"alerts", alerts}});
  });
}

}  // namespace dlsys::monitor
