// The HTTP server (Boost.Beast): asynchronous I/O on a few threads, handlers on a bounded
// worker pool, keep-alive, body limits (413), request ids, an access log, Prometheus counters
// at /metrics and graceful shutdown (stop accepting, finish in-flight requests, then return).
#pragma once

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "api/router.h"
#include "core/status.h"

namespace dlsys::api {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                         // 0 picks a free port (see HttpServer::port)
  int io_threads = 1;                      // threads running socket I/O
  int workers = 8;                         // threads running handlers (database work)
  uint64_t max_body = 16ull << 20;         // JSON bodies; larger gets 413
  uint64_t max_upload = 8ull << 30;        // streamed artifact uploads
  size_t max_queued = 4096;                // requests waiting for a worker; more get 503
  std::chrono::seconds idle_timeout{120};  // a keep-alive connection idle this long is closed
  std::chrono::seconds drain_timeout{30};  // on shutdown, in-flight requests get this long
  std::FILE* access_log = stdout;          // one line per request; null disables
  bool handle_signals = true;              // SIGTERM/SIGINT start a graceful shutdown
};

class HttpServer {
 public:
  // `router` must outlive the server.
  HttpServer(const Router& router, ServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens; errors name the address (e.g. the port is taken).
  Status listen();
  // The bound port (after listen()).
  int port() const;
  // Serves until shutdown() or a signal, then drains in-flight requests and returns.
  void run();
  // Starts a graceful shutdown; thread-safe and idempotent.
  void shutdown();

  struct Impl;  // public so that the connection code in http_server.cpp can name it

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace dlsys::api
