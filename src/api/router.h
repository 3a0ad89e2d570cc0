// The routing layer every component adds its routes to: method + path pattern -> handler, with
// authentication (API tokens), role checks, request limits and JSON errors in one place.
// Patterns are "/api/v1/runs/{id}" ({name} is one segment) or ".../artifacts/{path...}" (the
// rest of the path). Thread-safe once routes are added (dispatch may run on many threads).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "api/http_types.h"
#include "meta/auth.h"

namespace dlsys::api {

// What a route needs from the caller's role.
enum class Access {
  kPublic,  // anyone, even without a token (health)
  kRead,    // viewer and up
  kWrite,   // editor and up
  kAdmin,   // admin only
  kInfer,   // inference and up (the serving routes)
};

using Handler = std::function<Result<Response>(Request&)>;
// How an asynchronous handler answers: exactly once, from any thread. An error becomes the
// route's JSON error response.
using Reply = std::function<void(Result<Response>)>;
// A handler that answers later (the inference routes: the request waits in a batcher's queue,
// not on a worker thread). `req` stays valid until `reply` is called; the handler must not use
// it afterwards.
using AsyncHandler = std::function<void(Request&, Reply)>;

// Body limits a route may choose. A route without its own limit takes kSmallBodyLimit (GET,
// DELETE, PATCH, PUT), kDefaultBodyLimit (POST) or, when its body is streamed to a file, the
// server's --max-upload-mb; the server's --max-body-mb caps every in-memory body.
constexpr uint64_t kSmallBodyLimit = 64 << 10;     // names, descriptions, aliases, tokens
constexpr uint64_t kDefaultBodyLimit = 1 << 20;    // runs with params and tags, searches
constexpr uint64_t kBatchBodyLimit = 8 << 20;      // a log-batch: 100,000 points in series
constexpr uint64_t kLargeBodyLimit = 16ull << 20;  // samples of inputs (drift)

struct Route {
  std::string method;
  std::string pattern;
  Access access = Access::kRead;
  bool body_to_file = false;  // the server streams the body to Request::body_file
  uint64_t max_body = 0;      // bytes; 0 for files: the server's upload limit
  Handler handler;
  std::vector<std::string> segments;  // pattern split on '/'
  AsyncHandler async_handler;         // set instead of `handler` by add_async
  // The body is checked by the one JSON parser configuration before the handler (false: the
  // handler parses it itself, e.g. JSON followed by binary tensor data).
  bool json_body = true;
};

class Router {
 public:
  struct Options {
    bool auth_required = false;                     // without a valid token: 401
    meta::TokenStore* tokens = nullptr;             // where tokens are checked (needed with auth)
    std::function<std::string()> upload_temp_path;  // where streamed bodies go
    // The data directory: error messages name it "$DATA_DIR", never by its path.
    std::string data_dir;
  };
  explicit Router(Options options) : options_(std::move(options)) {}

  // Adds a route. Later routes with the same pattern and method are not allowed (asserts).
  // `max_body` is the route's body limit in bytes (0: the default, see Route).
  void add(const std::string& method, const std::string& pattern, Access access, Handler h,
           bool body_to_file = false, uint64_t max_body = 0);
  // Adds a route whose handler answers later through its Reply (see AsyncHandler). Its body
  // stays in memory (up to `max_body`) and, unless `json_body`, reaches the handler unparsed.
  void add_async(const std::string& method, const std::string& pattern, Access access,
                 AsyncHandler h, uint64_t max_body, bool json_body);
  // The route for (method, path), or null. Sets *path_matched when another method matches.
  const Route* match(const std::string& method, const std::string& path,
                     std::map<std::string, std::string>* params, bool* path_matched) const;
  // Authenticates the caller from the request's headers alone and checks the route's access
  // level against the role; sets req.principal. The HTTP server calls it before it reads a
  // body, so an unauthenticated caller costs no more than its headers.
  Status authorize(Request& req, const Route& route) const;
  // authorize() when it needs no database work (a public route, or a Bearer token found in the
  // token cache); std::nullopt when the token store must be asked (authorize() on a worker).
  // The HTTP server calls it on the I/O thread, so a known token costs no thread hand-off.
  std::optional<Status> authorize_cached(Request& req, const Route& route) const;
  // Runs the handler; never throws. When the server already matched and authorized the route
  // (req.route set), that is not repeated; otherwise dispatch matches and authorizes first.
  // Unconsumed body files are deleted.
  Response dispatch(Request& req) const;
  // Like dispatch, for every kind of route: `done` gets the response exactly once, at once for
  // a synchronous handler, or from the thread an asynchronous handler answers on.
  void dispatch_async(Request& req, std::function<void(Response)> done) const;
  std::string upload_temp_path() const;
  // Every route, in the order added (the role-matrix test and the fuzzers enumerate them).
  const std::vector<Route>& routes() const { return routes_; }
  bool auth_required() const { return options_.auth_required; }

 private:
  Result<meta::Principal> authenticate(const Request& req) const;
  // The role check of authorize once req.principal is set.
  Status check_role(const Request& req, const Route& route) const;
  // What dispatch does before a handler runs (match, authorize, the JSON body check and its
  // memory): the route to run, or the response that ends the request here.
  Result<const Route*> prepare(Request& req, Response* early) const;
  // The error response for `st`: the data directory and the request's body file are not named
  // by their paths; an I/O error says only that one happened (its text goes to the log).
  Response error_response(const Status& st, const std::string& body_file) const;

  Options options_;
  std::vector<Route> routes_;
  // token hash -> (principal, expiry): a revoked token stops working within kTokenCacheTtl.
  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string,
                             std::pair<meta::Principal, std::chrono::steady_clock::time_point>>
      token_cache_;
};

constexpr std::chrono::seconds kTokenCacheTtl{5};

}  // namespace dlsys::api
