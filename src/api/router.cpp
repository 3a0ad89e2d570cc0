#include "api/router.h"

#include <unistd.h>

#include "api/request_util.h"
#include "core/sha256.h"

namespace dlsys::api {

namespace {

std::vector<std::string> split_path(const std::string& p) {
  std::vector<std::string> out;
  size_t start = 1;
  while (start <= p.size()) {
    size_t end = p.find('/', start);
    if (end == std::string::npos) end = p.size();
    out.push_back(p.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

bool allowed(Access a, meta::Role r) {
  switch (a) {
    case Access::kPublic:
      return true;
    case Access::kInfer:
      return true;  // every role may infer
    case Access::kRead:
      return r != meta::Role::kInference;
    case Access::kWrite:
      return r == meta::Role::kEditor || r == meta::Role::kAdmin;
    case Access::kAdmin:
      return r == meta::Role::kAdmin;
  }
  return false;
}

}  // namespace

void Router::add(const std::string& method, const std::string& pattern, Access access, Handler h,
                 bool body_to_file, uint64_t max_body) {
  if (max_body == 0 && !body_to_file)
    max_body = method == "POST" ? kDefaultBodyLimit : kSmallBodyLimit;
  Route r;
  r.method = method;
  r.pattern = pattern;
  r.access = access;
  r.body_to_file = body_to_file;
  r.max_body = max_body;
  r.handler = std::move(h);
  r.segments = split_path(pattern);
  for (const Route& o : routes_)
    DLSYS_CHECK(!(o.method == method && o.pattern == pattern),
                "route {} {} added twice: check the add_*_routes functions", method, pattern);
  routes_.push_back(std::move(r));
}

void Router::add_async(const std::string& method, const std::string& pattern, Access access,
                       AsyncHandler h, uint64_t max_body, bool json_body) {
  add(method, pattern, access, nullptr, false, max_body);
  routes_.back().async_handler = std::move(h);
  routes_.back().json_body = json_body;
}

const Route* Router::match(const std::string& method, const std::string& path,
                           std::map<std::string, std::string>* params, bool* path_matched) const {
  *path_matched = false;
  std::vector<std::string> segs = split_path(path);
  for (const Route& r : routes_) {
    std::map<std::string, std::string> got;
    bool ok = true;
    size_t i = 0;
    for (; i < r.segments.size(); ++i) {
      const std::string& s = r.segments[i];
      if (s.size() > 5 && s.front() == '{' && s.substr(s.size() - 4) == "...}") {
        if (i >= segs.size()) {
          ok = false;
          break;
        }
        std::string rest;
        for (size_t j = i; j < segs.size(); ++j) rest += (j > i ? "/" : "") + segs[j];
        got[s.substr(1, s.size() - 5)] = rest;
        i = segs.size();
        break;
      }
      if (i >= segs.size()) {
        ok = false;
        break;
      }
      if (s.size() > 2 && s.front() == '{') {
        if (segs[i].empty()) {
          ok = false;
          break;
        }
        got[s.substr(1, s.size() - 2)] = segs[i];
      } else if (s != segs[i]) {
        ok = false;
        break;
      }
    }
    if (!ok || i != segs.size()) continue;
    if (r.method != method) {
      *path_matched = true;
      continue;
    }
    *params = std::move(got);
    return &r;
  }
  return nullptr;
}

std::string Router::upload_temp_path() const {
  return options_.upload_temp_path ? options_.upload_temp_path() : "/tmp/dlsys-upload";
}

Result<meta::Principal> Router::authenticate(const Request& req) const {
  std::string auth = req.header("authorization");
  if (auth.empty()) {
    if (!options_.auth_required) return meta::Principal{"local", meta::Role::kAdmin};
    return Status::Unauthenticated(
        "this server requires an API token: send 'Authorization: Bearer <token>' (create one "
        "with `dlsys tokens create --role R`)");
  }
  if (auth.rfind("Bearer ", 0) != 0)
    return Status::Unauthenticated("the Authorization header must be 'Bearer <token>'");
  std::string token = auth.substr(7);
  if (!options_.tokens) return Status::Unauthenticated("this server has no token store");
  std::string key = sha256_hex(token);
  auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> g(cache_mu_);
    auto it = token_cache_.find(key);
    if (it != token_cache_.end() && it->second.second > now) return it->second.first;
  }
  DLSYS_ASSIGN_OR_RETURN(meta::Principal p, options_.tokens->authenticate(token));
  std::lock_guard<std::mutex> g(cache_mu_);
  if (token_cache_.size() > 10000) token_cache_.clear();
  token_cache_[key] = {p, now + kTokenCacheTtl};
  return p;
}

Status Router::check_role(const Request& req, const Route& route) const {
  if (!allowed(route.access, req.principal.role))
    return Status::PermissionDenied("the role '{}' of '{}' may not {} {}",
                                    meta::role_name(req.principal.role), req.principal.name,
                                    req.method, req.path);
  return Status::OK();
}

Status Router::authorize(Request& req, const Route& route) const {
  if (route.access == Access::kPublic) return Status::OK();
  DLSYS_ASSIGN_OR_RETURN(req.principal, authenticate(req));
  return check_role(req, route);
}

std::optional<Status> Router::authorize_cached(Request& req, const Route& route) const {
  if (route.access == Access::kPublic) return Status::OK();
  std::string auth = req.header("authorization");
  if (auth.rfind("Bearer ", 0) != 0 || !options_.tokens) return std::nullopt;
  std::string key = sha256_hex(auth.substr(7));
  {
    std::lock_guard<std::mutex> g(cache_mu_);
    auto it = token_cache_.find(key);
    if (it == token_cache_.end() || it->second.second <= std::chrono::steady_clock::now())
      return std::nullopt;
    req.principal = it->second.first;
  }
  return check_role(req, route);
}

Result<const Route*> Router::prepare(Request& req, Response* early) const {
  const Route* route = req.route;
  if (!route) {
    bool path_matched = false;
    route = match(req.method, req.path, &req.path_params, &path_matched);
    if (!route) {
      if (path_matched)
        *early = Response::error(405, "METHOD_NOT_ALLOWED",
                                 fmt::format("{} is not allowed on {}", req.method, req.path));
      else
        *early = Response::error(404, "NOT_FOUND",
                                 fmt::format("no route for {} {}; the API is under "
                                             "/api/v1 (see docs/api.md)",
                                             req.method, req.path));
      return nullptr;
    }
    Status st = authorize(req, *route);
    if (!st.ok()) return st;
  }
  // Every JSON body passes the one parser configuration before any handler sees it: too deep
  // or too many values is a 400 on every route, and the parsed size is reserved from the
  // server's memory budget for the rest of the request.
  if (!route->body_to_file && route->json_body && !req.body.empty()) {
    auto shape = scan_json(req.body, kBodyJsonLimits, "the request body");
    if (!shape.ok()) return shape.status();
    if (req.budget) {
      MemoryBudget::Lease lease = req.budget->reserve(shape->memory_estimate());
      if (!lease)
        return Status::Unavailable(
            "the server is holding its limit of {} MiB of request memory; retry with backoff",
            req.budget->limit() >> 20);
      req.leases.push_back(std::move(lease));
    }
  }
  return route;
}

void Router::dispatch_async(Request& req, std::function<void(Response)> done) const {
  const Route* r = req.route;
  if (!r) {
    bool path_matched = false;
    std::map<std::string, std::string> params;
    r = match(req.method, req.path, &params, &path_matched);
  }
  if (!r || !r->async_handler) return done(dispatch(req));
  Response early;
  Result<const Route*> route = prepare(req, &early);
  if (!route.ok()) return done(Response::error(route.status()));
  try {
    (*route)->async_handler(req, [this, done](Result<Response> res) {
      done(res.ok() ? std::move(res).value() : error_response(res.status(), ""));
    });
  } catch (const std::exception& e) {
    // Only when the handler threw before it handed the request on (it must not reply then).
    done(error_response(Status::Internal("unexpected error: {}", e.what()), ""));
  }
}

Response Router::dispatch(Request& req) const {
  struct BodyFileGuard {
    Request& r;
    ~BodyFileGuard() {
      if (!r.body_file.empty()) ::unlink(r.body_file.c_str());
    }
  } guard{req};
  Response early;
  Result<const Route*> prepared = prepare(req, &early);
  if (!prepared.ok()) return Response::error(prepared.status());
  if (!*prepared) return early;
  const Route* route = *prepared;
  if (!route->handler)
    return Response::error(Status::Internal("{} {} answers asynchronously: use dispatch_async",
                                            req.method, route->pattern));
  std::string body_file = req.body_file;
  try {
    Result<Response> r = route->handler(req);
    if (!r.ok()) return error_response(r.status(), body_file);
    return std::move(r).value();
  } catch (const json::exception& e) {
    return Response::error(400, "INVALID_ARGUMENT", std::string("request body: ") + e.what());
  } catch (const std::exception& e) {
    return error_response(Status::Internal("unexpected error: {}", e.what()), body_file);
  }
}

Response Router::error_response(const Status& st, const std::string& body_file) const {
  std::string msg = st.message();
  auto replace_all = [&msg](const std::string& from, const std::string& to) {
    if (from.empty()) return;
    for (size_t at = msg.find(from); at != std::string::npos; at = msg.find(from, at + to.size()))
      msg.replace(at, from.size(), to);
  };
  replace_all(body_file, "the request body");
  if (options_.data_dir.size() > 1 && options_.data_dir[0] == '/')
    replace_all(options_.data_dir, "$DATA_DIR");
  if (st.code() == StatusCode::kIOError) {
    Response r = Response::error(500, "IO_ERROR",
                                 "the server could not read or write its storage; the server "
                                 "log has the details under this request's id");
    r.log_detail = st.message();
    return r;
  }
  Response r = Response::error(http_status_of(st.code()), error_code_of(st.code()), msg);
  if (msg != st.message()) r.log_detail = st.message();
  return r;
}

}  // namespace dlsys::api
