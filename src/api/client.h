// Clients of the REST API: over HTTP (keep-alive, used by the CLI, the trainer and tests) or
// in-process through the same router (when no server runs). Both return the server's JSON and
// turn error bodies back into Status values with the server's message.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "api/http_types.h"

namespace dlsys::api {

class Services;

// How long connecting to a server may take before it counts as not answering.
inline constexpr int kConnectSeconds = 5;

class ApiClient {
 public:
  virtual ~ApiClient() = default;
  // Sends `method target` with `body` (null for none) and returns the JSON answer.
  virtual Result<json> call(const std::string& method, const std::string& target,
                            const json& body = nullptr) = 0;
  // Called while a body is sent: bytes sent so far and the body's size.
  using Progress = std::function<void(uint64_t sent, uint64_t total)>;
  // Sends the file at `path` as the body of `method target` (streamed from the file, never
  // loaded whole), calling `progress` (when given) as it goes; returns the JSON answer.
  virtual Result<json> send_file(const std::string& method, const std::string& target,
                                 const std::string& path, const Progress& progress = nullptr) = 0;
  // Sends the file at `path` as the body of `method target` (PUT unless said, POST to create
  // something from it), returns the JSON answer.
  Result<json> upload(const std::string& target, const std::string& path,
                      const std::string& method = "PUT") {
    return send_file(method, target, path);
  }
  // GETs `target` and writes the body to `out_path` (atomically).
  virtual Status download(const std::string& target, const std::string& out_path) = 0;
  // "http://host:port" or "local:<data dir>".
  virtual std::string where() const = 0;
  // A second client to the same place (its own connection, same token), for another thread: a
  // client is used by one thread at a time.
  virtual Result<std::unique_ptr<ApiClient>> another() const = 0;
};

// A client of the server at `url` (http://host:port). `token` may be empty. Connecting waits
// at most kConnectSeconds; the error names the URL and the cause (connection refused, timed
// out).
Result<std::unique_ptr<ApiClient>> connect_http(const std::string& url, const std::string& token);
// A client that dispatches to `services`' router in this process (no network, no auth).
std::unique_ptr<ApiClient> connect_local(Services& services);

// A raw HTTP response, for tests and benchmarks.
struct HttpResult {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names
};

// One keep-alive HTTP/1.1 connection (synchronous). Reconnects once when the server closed it.
class HttpConnection {
 public:
  // Connects to host:port within kConnectSeconds; errors name the address and the cause.
  static Result<std::unique_ptr<HttpConnection>> open(const std::string& host, int port);
  ~HttpConnection();
  // How long a request may take from sending it to its whole answer (default: no limit, for
  // downloads of any size; a streamed upload's body is not counted); a slower answer is
  // DeadlineExceeded and the connection is closed.
  void set_io_timeout(std::chrono::milliseconds timeout);
  Result<HttpResult> request(const std::string& method, const std::string& target,
                             const std::string& body,
                             const std::map<std::string, std::string>& headers = {});
  // Sends the file at `path` as the body (streamed), calling `progress` when given.
  Result<HttpResult> request_file(const std::string& method, const std::string& target,
                                  const std::string& path,
                                  const std::map<std::string, std::string>& headers = {},
                                  const ApiClient::Progress& progress = nullptr);
  // Receives the body into `out_path` (streamed); the result's body is empty unless an error.
  Result<HttpResult> download(const std::string& target, const std::string& out_path,
                              const std::map<std::string, std::string>& headers = {});

 private:
  struct Impl;
  explicit HttpConnection(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Splits "http://host:port[/]" into host and port (default 80).
Status parse_http_url(const std::string& url, std::string* host, int* port);

}  // namespace dlsys::api
