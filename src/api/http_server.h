// The HTTP server (Boost.Beast): asynchronous I/O on a few threads, handlers on a bounded
// worker pool, keep-alive, request ids, an access log, Prometheus counters at /metrics and
// graceful shutdown (stop accepting, finish in-flight requests, then return).
//
// What a request may cost before it is trusted (docs/security.md): the headers (16 KiB, within
// header_timeout) are parsed and checked first — malformed HTTP, conflicting framing and
// duplicate credentials get 400 — then the route is matched, the caller authenticated and
// authorized from the headers, the body's size checked against the route's limit (413) and its
// memory reserved from the server's budget (503); only then is `Expect: 100-continue` answered
// and the body read, under a deadline that grows with its size.
#pragma once

#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>

#include "api/router.h"
#include "core/status.h"

namespace dlsys::api {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;     // 0 picks a free port (see HttpServer::port)
  int io_threads = 1;  // threads running socket I/O
  // After running handlers, an I/O thread keeps polling its sockets (without blocking) for this
  // long before it sleeps, yielding the core to any other runnable thread between polls: a
  // request that follows its answer closely (a client sending back to back) is read without
  // waking a sleeping thread, which costs tens of microseconds on a virtual machine. 0: block
  // at once. The cost: up to this much CPU after each burst of requests.
  int spin_us = 50;
  int workers = 8;                   // threads running handlers (database work)
  uint64_t max_body = 16ull << 20;   // cap on every in-memory body (routes set lower)
  uint64_t max_upload = 8ull << 30;  // streamed artifact uploads and dataset pushes
  size_t max_queued = 4096;          // requests waiting for a worker; more get 503
  // An asynchronous route (inference: it only parses and hands the request on) whose body is at
  // most this many bytes runs on the I/O thread that read it, saving a hand-off to a worker
  // (tens of microseconds per request on a busy machine); larger bodies, whose parsing would
  // hold up the connections on that thread, go to a worker. 0 sends every request to a worker.
  uint64_t inline_async_max_body = 32 << 10;
  std::chrono::seconds idle_timeout{120};  // a keep-alive connection idle this long is closed
  std::chrono::seconds drain_timeout{30};  // on shutdown, in-flight requests get this long
  // Connections: at most max_connections, and never more than the file-descriptor limit
  // (RLIMIT_NOFILE) less fd_reserve (for the database, uploads and exports). Past three
  // quarters of the cap, idle keep-alive connections are closed after idle_timeout_busy; at the
  // cap the longest-idle ones are closed to admit new connections, and when every connection is
  // busy a new one gets 503.
  size_t max_connections = 10000;
  size_t fd_reserve = 64;
  std::chrono::seconds idle_timeout_busy{2};
  // Headers must arrive within header_timeout of the first byte (slow-loris); a body within
  // body_timeout plus its size at min_body_rate bytes/s, else the connection is closed (408).
  std::chrono::seconds header_timeout{30};
  std::chrono::seconds body_timeout{30};
  uint64_t min_body_rate = 64 << 10;
  // In-flight request memory (bodies held in memory and their parsed JSON); past it, 503.
  uint64_t memory_budget = 1ull << 30;
  std::FILE* access_log = stdout;  // one line per request; null disables
  bool handle_signals = true;      // SIGTERM/SIGINT start a graceful shutdown
  // Runs on a worker every housekeeping_interval (e.g. sweeping stale temporary files).
  std::function<void()> housekeeping;
  // More Prometheus text appended to /metrics (serving's families); runs on an I/O thread, so
  // it must be quick and must not block.
  std::function<std::string()> extra_metrics;
  std::chrono::seconds housekeeping_interval{600};
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
  // The connection cap in force (after listen()): see ServerOptions::max_connections.
  size_t max_connections() const;
  // Serves until shutdown() or a signal, then drains in-flight requests and returns.
  void run();
  // Starts a graceful shutdown; thread-safe and idempotent.
  void shutdown();

  struct Impl;  // public so that the connection code in http_server.cpp can name it

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace dlsys::api
