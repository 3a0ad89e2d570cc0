// The request and response the routing layer and its handlers see, independent of Beast, so
// that the same handlers serve HTTP and the in-process client.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "api/memory_budget.h"
#include "core/status.h"
#include "meta/auth.h"

namespace dlsys::api {

using json = nlohmann::json;
struct Route;

struct Request {
  std::string method;                              // "GET", "POST", ...
  std::string path;                                // percent-decoded path without the query
  std::map<std::string, std::string> query;        // decoded query parameters
  std::map<std::string, std::string> path_params;  // filled by the router from {name} segments
  std::map<std::string, std::string> headers;      // lower-case names
  std::string body;       // the body, unless the route streams it to a file
  std::string body_file;  // the streamed body's temporary file (the handler takes ownership)
  std::string request_id;
  std::string remote;  // peer address, for the access log
  // When the server read the request's first byte (the epoch for a request made in process):
  // the clock that request deadlines count from.
  std::chrono::steady_clock::time_point received{};
  // How long an answer handed back from another thread (an asynchronous route's) has lately
  // waited for the I/O thread to write it, in microseconds: the moving average plus four mean
  // deviations, 0 in process. A handler bound by a deadline answers that much before it so
  // that its answer still leaves in time (the I/O thread shares the cores with the model).
  int64_t answer_delay_us = 0;
  meta::Principal principal;
  // Set by the HTTP server once it matched and authorized the route from the headers.
  const Route* route = nullptr;
  // The server's in-flight memory budget (null in process: unlimited), and what this request
  // holds of it; released with the request.
  MemoryBudget* budget = nullptr;
  std::vector<MemoryBudget::Lease> leases;

  // Returns the header's value or "".
  std::string header(const std::string& lower_name) const;
  // Returns the query parameter or `fallback`.
  std::string query_or(const std::string& name, const std::string& fallback) const;
  // The path parameter (asserts the route declared it).
  const std::string& param(const std::string& name) const { return path_params.at(name); }
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::string file_path;     // when set, the body is this file's content (streamed)
  bool delete_file = false;  // file_path is a temporary: removed once the response is sent
  std::string log_detail;    // for the server's log only, never sent (a redacted error)
  std::vector<std::pair<std::string, std::string>> headers;

  // A JSON response.
  static Response json_body(const json& j, int status = 200);
  // {"error":{"code":…,"message":…}} with the HTTP status that `st` maps to.
  static Response error(const Status& st);
  static Response error(int http_status, const std::string& code, const std::string& message);
};

// HTTP status for a dlsys status code (400, 401, 403, 404, 409, 500, 501, 503).
int http_status_of(StatusCode code);
// The error code string of the JSON error body ("INVALID_ARGUMENT", "NOT_FOUND", ...).
const char* error_code_of(StatusCode code);
// The dlsys status code an HTTP status maps back to (for clients).
StatusCode status_code_of_http(int http_status);

// Percent-decodes `s` ('+' stays '+'); returns false on a malformed escape.
bool url_decode(std::string_view s, std::string* out);
// Percent-encodes everything but unreserved characters and, when keep_slash, '/'.
std::string url_encode(std::string_view s, bool keep_slash = false);
// Splits "path?query" into the decoded path and decoded query parameters.
Status parse_target(std::string_view target, std::string* path,
                    std::map<std::string, std::string>* query);

}  // namespace dlsys::api
