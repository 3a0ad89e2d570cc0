// The run-tracking routes: experiments, runs, metrics and run artifacts (docs/api.md).
#include "api/meta_routes.h"
#include "api/request_util.h"

namespace dlsys::api {

namespace {

using meta::KeyValue;
using meta::MetricPoint;

Result<std::vector<KeyValue>> key_values(const json& body, const std::string& field) {
  std::vector<KeyValue> out;
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return out;
  auto value_text = [](const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); };
  if (it->is_object()) {
    for (auto& [k, v] : it->items()) out.push_back({k, value_text(v)});
  } else if (it->is_array()) {
    for (const json& e : *it) {
      if (!e.is_object() || !e.contains("key") || !e["key"].is_string() || !e.contains("value"))
        return Status::Invalid("each entry of '{}' must be {{\"key\": string, \"value\": …}}",
                               field);
      out.push_back({e["key"].get<std::string>(), value_text(e["value"])});
    }
  } else {
    return Status::Invalid("field '{}' must be an object or an array of {{key, value}}", field);
  }
  return out;
}

// An integer of a batch: the common case without formatting a name; `what` is called only to
// name the field in an error.
template <typename What>
Result<int64_t> batch_int(const json& v, What what) {
  if (v.is_number_integer() && !v.is_number_unsigned()) return v.get<int64_t>();
  return json_int64(v, what());
}

Result<std::vector<MetricPoint>> metric_points(const json& body) {
  std::vector<MetricPoint> out;
  auto it = body.find("metrics");
  if (it == body.end() || it->is_null()) return out;
  if (!it->is_array()) return Status::Invalid("field 'metrics' must be an array");
  if (it->size() > meta::kMaxMetricsPerBatch)
    return Status::Invalid("{} metrics in one batch; the limit is {}: split the batch", it->size(),
                           meta::kMaxMetricsPerBatch);
  out.reserve(it->size());
  size_t i = 0;
  for (const json& m : *it) {
    if (!m.is_object()) return Status::Invalid("metrics[{}] must be an object", i);
    auto k = m.find("key");
    auto v = m.find("value");
    if (k == m.end() || !k->is_string())
      return Status::Invalid("metrics[{}].key must be a string", i);
    if (k->get_ref<const std::string&>().empty())
      return Status::Invalid("metrics[{}].key is empty; name the metric", i);
    if (v == m.end() || !v->is_number())
      return Status::Invalid("metrics[{}].value must be a number", i);
    MetricPoint p;
    p.key = k->get<std::string>();
    p.value = v->get<double>();
    auto s = m.find("step");
    if (s != m.end() && !s->is_null()) {
      DLSYS_ASSIGN_OR_RETURN(p.step,
                             batch_int(*s, [i] { return fmt::format("metrics[{}].step", i); }));
    }
    auto t = m.find("timestamp");
    if (t != m.end() && !t->is_null()) {
      DLSYS_ASSIGN_OR_RETURN(p.timestamp, batch_int(*t, [i] {
                               return fmt::format("metrics[{}].timestamp (milliseconds)", i);
                             }));
    }
    out.push_back(std::move(p));
    ++i;
  }
  return out;
}

// The columnar form: {"series": [{"key", "steps": [...], "values": [...], "timestamps": [...]
// (optional, milliseconds)}]}, appended to `out` (at most kMaxPointsPerBatch points in all).
Status series_points(const json& body, std::vector<MetricPoint>* out) {
  auto it = body.find("series");
  if (it == body.end() || it->is_null()) return Status::OK();
  if (!it->is_array()) return Status::Invalid("field 'series' must be an array");
  for (size_t i = 0; i < it->size(); ++i) {
    const json& s = (*it)[i];
    if (!s.is_object()) return Status::Invalid("series[{}] must be an object", i);
    auto k = s.find("key");
    if (k == s.end() || !k->is_string() || k->get_ref<const std::string&>().empty())
      return Status::Invalid("series[{}].key must be a metric's name", i);
    auto steps = s.find("steps");
    auto values = s.find("values");
    auto ts = s.find("timestamps");
    if (steps == s.end() || !steps->is_array() || values == s.end() || !values->is_array())
      return Status::Invalid("series[{}] needs 'steps' and 'values', arrays of numbers", i);
    if (steps->size() != values->size())
      return Status::Invalid("series[{}] has {} steps and {} values: give one value per step", i,
                             steps->size(), values->size());
    const bool has_ts = ts != s.end() && !ts->is_null();
    if (has_ts && (!ts->is_array() || ts->size() != steps->size()))
      return Status::Invalid("series[{}].timestamps must be an array with one per step", i);
    if (out->size() + steps->size() > meta::kMaxPointsPerBatch)
      return Status::Invalid("more than {} metric points in one batch: split the batch",
                             meta::kMaxPointsPerBatch);
    const std::string& key = k->get_ref<const std::string&>();
    for (size_t j = 0; j < steps->size(); ++j) {
      MetricPoint p;
      p.key = key;
      const json& v = (*values)[j];
      if (!v.is_number()) return Status::Invalid("series[{}].values[{}] must be a number", i, j);
      p.value = v.get<double>();
      DLSYS_ASSIGN_OR_RETURN(p.step, batch_int((*steps)[j], [i, j] {
                               return fmt::format("series[{}].steps[{}]", i, j);
                             }));
      if (has_ts) {
        DLSYS_ASSIGN_OR_RETURN(p.timestamp, batch_int((*ts)[j], [i, j] {
                                 return fmt::format("series[{}].timestamps[{}]", i, j);
                               }));
      }
      out->push_back(std::move(p));
    }
  }
  return Status::OK();
}

Result<std::vector<int64_t>> id_list(const std::string& s, const std::string& what) {
  std::vector<int64_t> out;
  size_t start = 0;
  while (start < s.size()) {
    size_t comma = s.find(',', start);
    if (comma == std::string::npos) comma = s.size();
    DLSYS_ASSIGN_OR_RETURN(int64_t v, parse_int(s.substr(start, comma - start), what));
    out.push_back(v);
    start = comma + 1;
  }
  return out;
}

// The integers of body[field], an array ("each of 'field'" names a bad one).
Result<std::vector<int64_t>> int_array(const json& body, const std::string& field) {
  std::vector<int64_t> out;
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return out;
  if (!it->is_array()) return Status::Invalid("field '{}' must be an array of integers", field);
  for (const json& v : *it) {
    DLSYS_ASSIGN_OR_RETURN(int64_t id, json_int64(v, fmt::format("each of '{}'", field)));
    out.push_back(id);
  }
  return out;
}

// The step range of a history: min_step / max_step from the body, else the query.
Result<meta::StepRange> step_range(const Request& r, const json& body) {
  meta::StepRange range;
  for (const char* f : {"min_step", "max_step"}) {
    std::optional<int64_t> v;
    auto it = body.find(f);
    if (it != body.end() && !it->is_null()) {
      DLSYS_ASSIGN_OR_RETURN(v, json_int64(*it, f));
    } else if (std::string q = r.query_or(f, ""); !q.empty()) {
      DLSYS_ASSIGN_OR_RETURN(v, parse_int(q, f));
    }
    (std::string(f) == "min_step" ? range.min_step : range.max_step) = v;
  }
  return range;
}

}  // namespace

void add_run_routes(Router& router, meta::RunTracking& runs, meta::ArtifactStore& objects) {
  meta::RunTracking* s = &runs;
  meta::ArtifactStore* obj = &objects;

  // ---- experiments ----
  router.add("POST", "/api/v1/experiments", Access::kWrite, [s](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(json b, body_object(r));
    DLSYS_ASSIGN_OR_RETURN(std::string name, string_field(b, "name", true));
    DLSYS_ASSIGN_OR_RETURN(std::string desc, string_field(b, "description", false));
    DLSYS_ASSIGN_OR_RETURN(meta::Experiment e, s->create_experiment(name, desc, r.principal));
    return Response::json_body(e, 201);
  });
  router.add("GET", "/api/v1/experiments", Access::kRead, [s](Request& r) -> Result<Response> {
    std::string name = r.query_or("name", "");
    if (!name.empty()) {
      DLSYS_ASSIGN_OR_RETURN(meta::Experiment e, s->get_experiment_by_name(name));
      return Response::json_body({{"experiments", json::array({e})}});
    }
    DLSYS_ASSIGN_OR_RETURN(int n, page_size_of(r));
    DLSYS_ASSIGN_OR_RETURN(auto p, s->list_experiments(n, r.query_or("page_token", "")));
    return page_response(p, "experiments");
  });
  router.add("GET", "/api/v1/experiments/{id}", Access::kRead, [s](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(int64_t id, parse_int(r.param("id"), "experiment id"));
    DLSYS_ASSIGN_OR_RETURN(meta::Experiment e, s->get_experiment(id));
    return Response::json_body(e);
  });

  // ---- runs ----
  router.add("POST", "/api/v1/runs", Access::kWrite, [s](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(json b, body_object(r));
    int64_t exp_id = 0;
    if (b.contains("experiment") && !b.contains("experiment_id")) {
      DLSYS_ASSIGN_OR_RETURN(std::string ename, string_field(b, "experiment", true));
      DLSYS_ASSIGN_OR_RETURN(meta::Experiment e, s->ensure_experiment(ename, r.principal));
      exp_id = e.id;
    } else {
      DLSYS_ASSIGN_OR_RETURN(exp_id, int_field(b, "experiment_id", true));
    }
    DLSYS_ASSIGN_OR_RETURN(std::string name, string_field(b, "name", false));
    DLSYS_ASSIGN_OR_RETURN(auto params, key_values(b, "params"));
    DLSYS_ASSIGN_OR_RETURN(auto tags, key_values(b, "tags"));
    DLSYS_ASSIGN_OR_RETURN(meta::Run run, s->create_run(exp_id, name, params, tags, r.principal));
    return Response::json_body(run, 201);
  });
  auto search = [s](Request& r, const json& b) -> Result<Response> {
    meta::SearchRunsRequest q;
    std::string ids = r.query_or("experiment_ids", r.query_or("experiment_id", ""));
    if (b.contains("experiment_ids")) {
      DLSYS_ASSIGN_OR_RETURN(q.experiment_ids, int_array(b, "experiment_ids"));
    } else {
      DLSYS_ASSIGN_OR_RETURN(q.experiment_ids, id_list(ids, "experiment_ids"));
    }
    DLSYS_ASSIGN_OR_RETURN(q.filter, string_field(b, "filter", false, r.query_or("filter", "")));
    DLSYS_ASSIGN_OR_RETURN(q.order_by,
                           string_field(b, "order_by", false, r.query_or("order_by", "")));
    DLSYS_ASSIGN_OR_RETURN(q.page_token,
                           string_field(b, "page_token", false, r.query_or("page_token", "")));
    DLSYS_ASSIGN_OR_RETURN(int n, page_size_of(r));
    if (b.contains("run_ids")) {
      DLSYS_ASSIGN_OR_RETURN(q.run_ids, int_array(b, "run_ids"));
      // No run named is no run (not every run): a comparison with nothing selected.
      if (q.run_ids.empty()) return Response::json_body({{"runs", json::array()}});
    } else if (!r.query_or("run_ids", "").empty()) {
      DLSYS_ASSIGN_OR_RETURN(q.run_ids, id_list(r.query_or("run_ids", ""), "run_ids"));
    }
    DLSYS_ASSIGN_OR_RETURN(int64_t n2, int_field(b, "page_size", false, n));
    q.page_size = static_cast<int>(n2);
    DLSYS_ASSIGN_OR_RETURN(auto p, s->search_runs(q));
    return page_response(p, "runs");
  };
  router.add("GET", "/api/v1/runs", Access::kRead,
             [search](Request& r) -> Result<Response> { return search(r, json::object()); });
  router.add("POST", "/api/v1/runs/search", Access::kRead,
             [search](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(json b, body_object(r));
               return search(r, b);
             });
  router.add("GET", "/api/v1/runs/{id}", Access::kRead, [s](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(int64_t id, parse_int(r.param("id"), "run id"));
    DLSYS_ASSIGN_OR_RETURN(meta::Run run, s->get_run(id));
    return Response::json_body(run);
  });
  router.add("PATCH", "/api/v1/runs/{id}", Access::kWrite, [s](Request& r) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(int64_t id, parse_int(r.param("id"), "run id"));
    DLSYS_ASSIGN_OR_RETURN(json b, body_object(r));
    DLSYS_ASSIGN_OR_RETURN(std::string status, string_field(b, "status", true));
    DLSYS_ASSIGN_OR_RETURN(meta::Run run, s->update_run(id, status, r.principal));
    return Response::json_body(run);
  });
  // A sign of life from the run's process (the trainer sends one when it has sent nothing else
  // for a while); answers with the run, so a process can see that it was ended meanwhile.
  router.add("POST", "/api/v1/runs/{id}/heartbeat", Access::kWrite,
             [s](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(int64_t id, parse_int(r.param("id"), "run id"));
               DLSYS_ASSIGN_OR_RETURN(meta::Run run, s->heartbeat(id));
               return Response::json_body(run);
             });
  router.add(
      "POST", "/api/v1/runs/{id}/log-batch", Access::kWrite,
      [s](Request& r) -> Result<Response> {
        DLSYS_ASSIGN_OR_RETURN(int64_t id, parse_int(r.param("id"), "run id"));
        DLSYS_ASSIGN_OR_RETURN(json b, body_object(r));
        DLSYS_ASSIGN_OR_RETURN(auto metrics, metric_points(b));
        DLSYS_RETURN_IF_ERROR(series_points(b, &metrics));
        DLSYS_ASSIGN_OR_RETURN(auto params, key_values(b, "params"));
        DLSYS_ASSIGN_OR_RETURN(auto tags, key_values(b, "tags"));
        DLSYS_RETURN_IF_ERROR(s->log_batch(id, metrics, params, tags, r.principal));
        return Response::json_body(
            {{"logged",
              {{"metrics", metrics.size()}, {"params", params.size()}, {"tags", tags.size()}}}});
      },
      /*body_to_file=*/false, kBatchBodyLimit);
  router.add("GET", "/api/v1/runs/{id}/metrics/{key...}", Access::kRead,
             [s](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(int64_t id, parse_int(r.param("id"), "run id"));
               DLSYS_ASSIGN_OR_RETURN(int64_t maxp,
                                      parse_int(r.query_or("max_points", "0"), "max_points"));
               if (maxp < 0 || maxp > static_cast<int64_t>(meta::kMaxMetricPoints))
                 return Status::Invalid("max_points {} is out of range 0..{} (0: the default, {})",
                                        maxp, meta::kMaxMetricPoints,
                                        meta::kDefaultMaxMetricPoints);
               DLSYS_ASSIGN_OR_RETURN(meta::StepRange range, step_range(r, json::object()));
               DLSYS_ASSIGN_OR_RETURN(
                   meta::MetricHistory h,
                   s->metric_history(id, r.param("key"), static_cast<int>(maxp), range));
               return Response::json_body(h);
             });
  // Many runs' histories at once, columnar (a comparison's charts).
  router.add(
      "POST", "/api/v1/runs/metric-histories", Access::kRead, [s](Request& r) -> Result<Response> {
        DLSYS_ASSIGN_OR_RETURN(json b, body_object(r));
        DLSYS_ASSIGN_OR_RETURN(auto ids, int_array(b, "run_ids"));
        // The keys named, or the `top_keys` the most of these runs logged (a comparison
        // asks for its default charts while it reads the runs).
        std::vector<std::string> keys;
        auto k = b.find("keys");
        const bool top = b.contains("top_keys");
        if (top == (k != b.end()))
          return Status::Invalid(
              "give 'keys' (an array of metric keys) or 'top_keys' (how many of the keys "
              "the most of these runs logged), one of the two");
        if (top) {
          DLSYS_ASSIGN_OR_RETURN(int64_t n, int_field(b, "top_keys", true));
          if (n < 1 || n > static_cast<int64_t>(meta::kMaxHistoryKeys))
            return Status::Invalid("top_keys {} is out of range 1..{}", n, meta::kMaxHistoryKeys);
          DLSYS_ASSIGN_OR_RETURN(std::string skip, string_field(b, "skip_key_prefix", false));
          DLSYS_ASSIGN_OR_RETURN(keys, s->common_metric_keys(ids, static_cast<int>(n), skip));
        } else {
          if (!k->is_array())
            return Status::Invalid("field 'keys' must be an array of metric keys");
          for (const json& v : *k) {
            if (!v.is_string()) return Status::Invalid("each of 'keys' must be a string");
            keys.push_back(v.get<std::string>());
          }
        }
        DLSYS_ASSIGN_OR_RETURN(int64_t maxp, int_field(b, "max_points", false, 0));
        if (maxp < 0 || maxp > meta::kMaxHistoryPoints)
          return Status::Invalid("max_points {} is out of range 0..{} (0: the default, {})", maxp,
                                 meta::kMaxHistoryPoints, meta::kDefaultHistoryPoints);
        DLSYS_ASSIGN_OR_RETURN(meta::StepRange range, step_range(r, b));
        // Significant digits of the values (a chart of 1,000 runs needs 6, not 17: half the bytes
        // to send and parse); 0, the default, is every digit (exact).
        DLSYS_ASSIGN_OR_RETURN(int64_t digits, int_field(b, "digits", false, 0));
        if (digits < 0 || digits > 17)
          return Status::Invalid("digits {} is out of range 1..17 (0 or none: exact)", digits);
        std::vector<meta::MetricHistory> hs;
        // top_keys over runs without a metric: nothing to read.
        if (!keys.empty()) {
          DLSYS_ASSIGN_OR_RETURN(hs, s->metric_histories(ids, keys, static_cast<int>(maxp), range));
        }
        // Columnar: a series is two arrays (steps and values), not an object per point.
        std::string out = "{\"keys\":" + json(keys).dump() + ",\"histories\":[";
        for (size_t i = 0; i < hs.size(); ++i) {
          const meta::MetricHistory& h = hs[i];
          json head = {{"run_id", h.run_id},
                       {"key", h.key},
                       {"total_points", h.total_points},
                       {"downsampled", h.downsampled}};
          std::string text = head.dump();
          text.pop_back();
          out += (i ? "," : "") + text + ",\"steps\":[";
          for (size_t j = 0; j < h.points.size(); ++j)
            fmt::format_to(std::back_inserter(out), "{}{}", j ? "," : "", h.points[j].step);
          out += "],\"values\":[";
          for (size_t j = 0; j < h.points.size(); ++j)
            if (digits == 0)
              fmt::format_to(std::back_inserter(out), "{}{}", j ? "," : "", h.points[j].value);
            else
              fmt::format_to(std::back_inserter(out), "{}{:.{}g}", j ? "," : "", h.points[j].value,
                             digits);
          out += "]}";
        }
        out += "]}";
        Response resp;
        resp.status = 200;
        resp.content_type = "application/json";
        resp.body = std::move(out);
        return resp;
      });

  // ---- artifacts ----
  router.add(
      "PUT", "/api/v1/runs/{id}/artifacts/{path...}", Access::kWrite,
      [s, obj](Request& r) -> Result<Response> {
        DLSYS_ASSIGN_OR_RETURN(int64_t id, parse_int(r.param("id"), "run id"));
        const std::string& path = r.param("path");
        DLSYS_RETURN_IF_ERROR(meta::check_artifact_path(path));
        DLSYS_RETURN_IF_ERROR(s->get_run(id).status());
        // The body arrived as a file (HTTP) or in memory (an in-process call without one).
        std::string tmp = std::move(r.body_file);
        r.body_file.clear();
        DLSYS_ASSIGN_OR_RETURN(meta::StoredObject o,
                               tmp.empty() ? obj->put(r.body) : obj->put_file(tmp));
        DLSYS_RETURN_IF_ERROR(s->record_artifact(id, {path, o.sha256, o.size}, r.principal));
        return Response::json_body({{"path", path},
                                    {"sha256", o.sha256},
                                    {"size", o.size},
                                    {"deduplicated", o.deduplicated}},
                                   201);
      },
      /*body_to_file=*/true);
  router.add("GET", "/api/v1/runs/{id}/artifacts/{path...}", Access::kRead,
             [s, obj](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(int64_t id, parse_int(r.param("id"), "run id"));
               DLSYS_ASSIGN_OR_RETURN(meta::ArtifactRecord a, s->get_artifact(id, r.param("path")));
               DLSYS_ASSIGN_OR_RETURN(std::string file, obj->open_verified(a.sha256));
               return file_response(file, a);
             });
  router.add("GET", "/api/v1/runs/{id}/artifacts", Access::kRead,
             [s](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(int64_t id, parse_int(r.param("id"), "run id"));
               DLSYS_ASSIGN_OR_RETURN(auto list, s->list_artifacts(id, r.query_or("prefix", "")));
               return Response::json_body({{"artifacts", list}});
             });
}

}  // namespace dlsys::api
