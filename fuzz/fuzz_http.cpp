// fuzz_http: the HTTP server end to end. The real api::HttpServer listens on a loopback port
// (started once per fuzzer process) over a Services on a scratch directory with auth ON; each
// input is written as raw bytes to a fresh connection, the write side is shut, and the answer
// is read until the server closes.
//
// Auth is on so that both paths are fuzzed: requests without a token (401 before any handler),
// and with one (the handlers and the body parsing behind them). Tokens are random, so inputs
// name them with placeholders that are replaced before sending: "@ADMIN@" (an admin token) and
// "@VIEWER@" (a viewer's, for 403s). The fixture of fuzz_common.h (seed_backend) is in place.
//
// A finding is a sanitizer report in the server (its threads run in this process), a response
// that does not start with "HTTP/1.1 ", a connection neither answered nor closed within
// DLSYS_FUZZ_HTTP_DEADLINE_MS (default 5000), a refused connection (the server stopped
// accepting), or a failed health check (every 64 inputs: a wedged worker pool).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include "api/http_server.h"
#include "api/services.h"
#include "fuzz_common.h"

namespace {

using dlsys::fuzz::fail;
using dlsys::fuzz::shown;
namespace api = dlsys::api;
namespace meta = dlsys::meta;

struct Fixture {
  std::unique_ptr<api::Services> backend;
  std::unique_ptr<api::HttpServer> server;
  std::thread thread;
  std::future<void> stopped;
  int port = 0;
  std::string admin_token, viewer_token;
  int deadline_ms = 5000;
  uint64_t inputs = 0;
};
Fixture* g = nullptr;

std::string token_for(meta::Role role, const char* name) {
  auto t = g->backend->store().tokens().create_token(name, role,
                                                     meta::Principal{"fuzz", meta::Role::kAdmin});
  if (!t.ok()) fail("create_token: %s", t.status().to_string().c_str());
  return t->token;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
}

int connect_to_server() {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(g->port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int attempt = 0;; ++attempt) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) fail("socket: %s", std::strerror(errno));
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) return fd;
    int e = errno;
    ::close(fd);
    // Out of local ports for a moment (thousands of short connections): wait and retry.
    if ((e == EADDRNOTAVAIL || e == EAGAIN || e == EINTR) && attempt < 100) {
      ::usleep(10000);
      continue;
    }
    fail("the server stopped accepting: connect to 127.0.0.1:%d: %s", g->port, std::strerror(e));
  }
}

// Sends `request`, half-closes, and returns what the server sent until it closed. Sets
// *clean_eof when the connection ended in an orderly close (not a reset).
std::string round_trip(const std::string& request, bool* clean_eof) {
  int fd = connect_to_server();
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the server closed early (e.g. after a 431): read what it said
    sent += static_cast<size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  std::string got;
  *clean_eof = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(g->deadline_ms);
  char buf[16384];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) {
      ::close(fd);
      fail(
          "the server neither answered nor closed the connection within %d ms; got %zu bytes: "
          "%s\nrequest: %s",
          g->deadline_ms, got.size(), shown(got).c_str(), shown(request).c_str());
    }
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) *clean_eof = true;
    if (n <= 0) break;  // closed, or reset (the server closed with unread input)
    if (got.size() < (1u << 20)) got.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return got;
}

void check_response(const std::string& got, bool clean_eof, const std::string& request) {
  static const std::string kStart = "HTTP/1.1 ";
  if (got.empty()) return;  // closed without an answer: allowed (e.g. unparseable request line)
  size_t n = std::min(got.size(), kStart.size());
  if (got.compare(0, n, kStart, 0, n) != 0)
    fail("the answer does not start with \"HTTP/1.1 \": %s\nrequest: %s", shown(got).c_str(),
         shown(request).c_str());
  // Fewer bytes than the status line's start, then an orderly close: a truncated answer. (After
  // a reset the rest may have been dropped by the client's kernel, which is not the server's
  // doing.)
  if (got.size() < kStart.size() && clean_eof)
    fail("a truncated answer: %s\nrequest: %s", shown(got).c_str(), shown(request).c_str());
}

void health_check() {
  bool eof = false;
  std::string got =
      round_trip("GET /api/v1/health HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n", &eof);
  if (got.rfind("HTTP/1.1 200 ", 0) != 0)
    fail("the health check failed after %llu inputs: %s",
         static_cast<unsigned long long>(g->inputs), shown(got).c_str());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  std::string dir = dlsys::fuzz::make_temp_dir("http");
  g = new Fixture();  // never destroyed: the server's threads use it until the process ends
  if (const char* d = std::getenv("DLSYS_FUZZ_HTTP_DEADLINE_MS"); d && std::atoi(d) > 0)
    g->deadline_ms = std::atoi(d);
  api::ServicesOptions bo;
  bo.data_dir = dir + "/data";
  bo.auth = true;
  bo.db_connections = 4;
  auto b = api::Services::open(bo);
  if (!b.ok()) fail("Services::open: %s", b.status().to_string().c_str());
  g->backend = std::move(b).value();
  g->admin_token = token_for(meta::Role::kAdmin, "fuzz-admin");
  g->viewer_token = token_for(meta::Role::kViewer, "fuzz-viewer");
  dlsys::fuzz::seed_backend(g->backend->router(), dir, g->admin_token);

  api::ServerOptions so;
  so.host = "127.0.0.1";
  so.port = 0;
  so.io_threads = 1;
  so.workers = 2;
  so.idle_timeout = std::chrono::seconds(5);
  so.drain_timeout = std::chrono::seconds(1);
  so.access_log = nullptr;
  so.handle_signals = false;
  g->server = std::make_unique<api::HttpServer>(g->backend->router(), so);
  dlsys::Status st = g->server->listen();
  if (!st.ok()) fail("listen: %s", st.to_string().c_str());
  g->port = g->server->port();
  std::promise<void> done;
  g->stopped = done.get_future();
  g->thread = std::thread([done = std::move(done)]() mutable {
    g->server->run();
    done.set_value();
  });
  // At exit (libFuzzer calls exit() when its time is up), stop the server before static
  // destructors run under its threads; registered after make_temp_dir's handler, so it runs
  // before the scratch directory goes.
  std::atexit([] {
    g->server->shutdown();
    if (g->stopped.wait_for(std::chrono::seconds(5)) == std::future_status::ready) {
      g->thread.join();
    } else {
      g->thread.detach();
    }
  });
  health_check();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string request(reinterpret_cast<const char*>(data), size);
  replace_all(request, "@ADMIN@", g->admin_token);
  replace_all(request, "@VIEWER@", g->viewer_token);
  bool clean_eof = false;
  std::string got = round_trip(request, &clean_eof);
  check_response(got, clean_eof, request);
  if (++g->inputs % 64 == 0) health_check();
  return 0;
}
