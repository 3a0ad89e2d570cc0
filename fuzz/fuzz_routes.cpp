// fuzz_routes: every REST route's body (and query), in-process through Router::dispatch.
//
// Input: byte 0 picks the route (modulo the number of routes, in the order of "PATTERN METHOD"
// sorted, so adding a route shifts only the routes after it); the rest is the body. When the
// rest starts with '?', its first line is the query string ("?page_size=5&filter=...").
// Path parameters get values that exist in the fixture (fuzz_common.h: seed_backend), so
// handlers get past "not found". Auth is off: every call runs as the local admin.
//
// A finding is a sanitizer report, a 500 (an internal error on bad input is a bug: bad input
// must be a 4xx that names what is wrong), a JSON response that does not parse, or an error
// body that is not {"error":{"code":string,"message":string}}. Set DLSYS_FUZZ_PRINT_ROUTES=1 to
// print the byte -> route table.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "api/services.h"
#include "fuzz_common.h"

namespace {

using dlsys::fuzz::fail;
using dlsys::fuzz::shown;
namespace api = dlsys::api;

struct Fixture {
  std::unique_ptr<api::Services> backend;
  std::vector<const api::Route*> routes;
};
Fixture* g = nullptr;

// A value that exists in the fixture for each path parameter name.
std::string value_of(const std::string& name) {
  if (name == "id" || name == "version") return "1";
  if (name == "name") return "m";
  if (name == "ref") return "v1";
  if (name == "path") return "a/b.txt";
  if (name == "key") return "loss";
  if (name == "alias") return "prod";
  if (name == "tag") return "t";
  if (name == "kind") return "run";
  return "x";
}

std::string fill(const api::Route& r) {
  std::string path;
  for (const std::string& s : r.segments) {
    path += '/';
    if (s.size() > 2 && s.front() == '{' && s.back() == '}') {
      std::string name = s.substr(1, s.size() - 2);
      if (name.size() > 3 && name.compare(name.size() - 3, 3, "...") == 0)
        name.resize(name.size() - 3);
      path += value_of(name);
    } else {
      path += s;
    }
  }
  return path;
}

void check(const api::Route& route, const std::string& path, const std::string& input,
           const api::Response& resp) {
  const char* m = route.method.c_str();
  const char* p = path.c_str();
  if (resp.status >= 500 && resp.status != 501 && resp.status != 503)
    fail("%s %s answered %d: %s\ninput body: %s", m, p, resp.status, shown(resp.body).c_str(),
         shown(input).c_str());
  if (!resp.file_path.empty()) {
    if (!resp.body.empty()) fail("%s %s: a file response with a body", m, p);
    return;
  }
  if (resp.content_type != "application/json") return;
  api::json j = api::json::parse(resp.body, nullptr, false);
  if (j.is_discarded())
    fail("%s %s: the response body is not JSON: %s", m, p, shown(resp.body).c_str());
  bool is_error = j.is_object() && j.contains("error");
  if (is_error) {
    const api::json& e = j["error"];
    if (!e.is_object() || e.size() != 2 || !e.contains("code") || !e["code"].is_string() ||
        !e.contains("message") || !e["message"].is_string())
      fail("%s %s: the error is not {\"error\":{\"code\",\"message\"}}: %s", m, p,
           shown(resp.body).c_str());
    if (resp.status < 400) fail("%s %s: an error body with status %d", m, p, resp.status);
  } else if (resp.status >= 400) {
    fail("%s %s: status %d without an error body: %s", m, p, resp.status, shown(resp.body).c_str());
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  std::string dir = dlsys::fuzz::make_temp_dir("routes");
  api::ServicesOptions bo;
  bo.data_dir = dir + "/data";
  bo.auth = false;
  bo.db_connections = 2;
  auto b = api::Services::open(bo);
  if (!b.ok()) fail("Services::open: %s", b.status().to_string().c_str());
  g = new Fixture();  // never destroyed: the fuzzer exits with it in place
  g->backend = std::move(b).value();
  dlsys::fuzz::seed_backend(g->backend->router(), dir);
  for (const api::Route& r : g->backend->router().routes()) g->routes.push_back(&r);
  std::sort(g->routes.begin(), g->routes.end(), [](const api::Route* a, const api::Route* b) {
    return std::tie(a->pattern, a->method) < std::tie(b->pattern, b->method);
  });
  if (g->routes.empty()) fail("the router has no routes");
  if (const char* p = std::getenv("DLSYS_FUZZ_PRINT_ROUTES"); p && *p == '1')
    for (size_t i = 0; i < g->routes.size(); ++i)
      std::fprintf(stderr, "byte %3zu (0x%02zx): %s %s -> %s\n", i, i, g->routes[i]->method.c_str(),
                   g->routes[i]->pattern.c_str(), fill(*g->routes[i]).c_str());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const api::Route& route = *g->routes[data[0] % g->routes.size()];
  std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);

  api::Request req;
  req.method = route.method;
  req.path = fill(route);
  req.request_id = "fuzz";
  if (!rest.empty() && rest[0] == '?') {
    size_t nl = rest.find('\n');
    std::string target = "/q" + rest.substr(0, nl);
    rest = nl == std::string::npos ? "" : rest.substr(nl + 1);
    std::string ignored;
    if (!api::parse_target(target, &ignored, &req.query).ok()) return 0;  // the server's 400
  }
  if (route.body_to_file) {
    // As the server does: the body in a temporary file the handler takes (or dispatch removes).
    req.body_file = g->backend->router().upload_temp_path();
    dlsys::fuzz::write_text(req.body_file, rest);
  } else {
    req.body = rest;
  }
  std::string path = req.path;
  api::Response resp = g->backend->router().dispatch(req);
  check(route, path, rest, resp);
  // A temporary file response (a CSV export) is the receiver's to remove, as the server does.
  if (resp.delete_file) ::unlink(resp.file_path.c_str());
  return 0;
}
