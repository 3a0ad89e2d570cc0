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
#include <string>
#include <unordered_map>
#include <vector>

#include "api/http_types.h"
#include "meta/meta_store.h"

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

struct Route {
  std::string method;
  std::string pattern;
  Access access = Access::kRead;
  bool body_to_file = false;  // the server streams the body to Request::body_file
  Handler handler;
  std::vector<std::string> segments;  // pattern split on '/'
};

class Router {
 public:
  struct Options {
    bool auth_required = false;                     // without a valid token: 401
    meta::MetaStore* tokens = nullptr;              // where tokens are checked (needed with auth)
    std::function<std::string()> upload_temp_path;  // where streamed bodies go
  };
  explicit Router(Options options) : options_(std::move(options)) {}

  // Adds a route. Later routes with the same pattern and method are not allowed (asserts).
  void add(const std::string& method, const std::string& pattern, Access access, Handler h,
           bool body_to_file = false);
  // The route for (method, path), or null. Sets *path_matched when another method matches.
  const Route* match(const std::string& method, const std::string& path,
                     std::map<std::string, std::string>* params, bool* path_matched) const;
  // Authenticates, checks the role, runs the handler; never throws. Unconsumed body files are
  // deleted.
  Response dispatch(Request& req) const;
  std::string upload_temp_path() const;
  bool auth_required() const { return options_.auth_required; }

 private:
  Result<meta::Principal> authenticate(const Request& req) const;

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
