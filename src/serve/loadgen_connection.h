// The load generator's HTTP/1.1 client: one keep-alive connection on a blocking socket, a request
// serialized once and sent with one system call, the answer's status and body read into a buffer
// reused across requests. It exists so that `dlsys bench serve` measures the server, not itself:
// the general client (api::HttpConnection, Boost.Beast) builds, parses and lower-cases a header
// map per request and waits with poll() on a non-blocking socket, which at batch 1 costs about
// as much as the server's own work.
//
// Answers: a status line, headers (Content-Length or Transfer-Encoding: chunked; "Connection:
// close" ends the connection after the answer), a body up to 1 GiB, headers up to 64 KiB. Every
// read and write has a deadline (SO_RCVTIMEO / SO_SNDTIMEO); a request that meets it fails with
// DeadlineExceeded and the connection is closed.
//
// Threading: one thread per connection at a time.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace dlsys::serve {

// The bytes of one HTTP/1.1 request with a body: request line, Host, Content-Length,
// Connection: keep-alive, `headers`, then `body`.
std::string serialize_http_request(const std::string& method, const std::string& host, int port,
                                   const std::string& target,
                                   const std::map<std::string, std::string>& headers,
                                   const std::string& body);

class LoadgenConnection {
 public:
  // Connects to host:port (a name or an address) within `timeout`, which also bounds every later
  // read and write. Errors name the address and the cause.
  static Result<std::unique_ptr<LoadgenConnection>> open(const std::string& host, int port,
                                                         std::chrono::milliseconds timeout);
  ~LoadgenConnection();
  LoadgenConnection(const LoadgenConnection&) = delete;
  LoadgenConnection& operator=(const LoadgenConnection&) = delete;

  // Sends `request` (serialize_http_request's bytes) and reads the answer: its status code, the
  // body in body(). After an error, or an answer that closes the connection, open() again.
  Result<int> exchange(std::string_view request);
  // exchange() in two halves, for a caller that waits for many connections at once (the server
  // scenario's event loop): send, then read the answer once the socket is readable.
  Status send_request(std::string_view request);
  Result<int> read_answer();
  int fd() const { return fd_; }
  const std::string& body() const { return body_; }
  bool closed() const { return fd_ < 0; }

 private:
  LoadgenConnection(int fd, std::string where) : fd_(fd), where_(std::move(where)) {}
  // Reads more bytes into in_; errors name the cause (closed, deadline).
  Status fill();
  Status fail_closed(Status st);

  int fd_;
  std::string where_;      // "127.0.0.1:8080", for messages
  std::vector<char> buf_;  // bytes read: [pos_, buf_len_) not yet consumed
  size_t buf_len_ = 0, pos_ = 0;
  std::string body_;
};

}  // namespace dlsys::serve
