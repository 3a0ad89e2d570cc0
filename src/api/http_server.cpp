#include "api/http_server.h"

#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdlib>
#include <ctime>
#include <limits>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "core/file_util.h"

namespace dlsys::api {

namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

std::string sanitize_request_id(std::string_view id) {
  std::string out;
  for (char c : id.substr(0, 64))
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') out += c;
  return out;
}

std::string utc_now() {
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  int ms = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm;
  gmtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03d}Z", buf, ms);
}

}  // namespace

class Session;

struct HttpServer::Impl {
  Impl(const Router& r, ServerOptions o)
      : router(r),
        options(std::move(o)),
        ctl(asio::make_strand(ioc)),
        acceptor(ctl),
        signals(ctl),
        drain_timer(ctl),
        accept_timer(ctl),
        housekeeping_timer(ctl),
        log_timer(ctl),
        pool(static_cast<size_t>(std::max(1, options.workers))),
        budget(options.memory_budget) {}

  const Router& router;
  ServerOptions options;
  asio::io_context ioc;
  asio::strand<asio::io_context::executor_type> ctl;  // acceptor, signals, timers
  tcp::acceptor acceptor;
  asio::signal_set signals;
  asio::steady_timer drain_timer;
  asio::steady_timer accept_timer;
  asio::steady_timer housekeeping_timer;
  asio::steady_timer log_timer;  // flushes the access log's pending lines
  asio::thread_pool pool;
  MemoryBudget budget;
  std::atomic<bool> draining{false};
  std::atomic<size_t> queued{0};
  int bound_port = 0;
  size_t max_connections = 0;  // set by listen()

  std::mutex sessions_mu;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions;
  std::atomic<size_t> session_count{0};

  std::mutex log_mu;
  std::string log_pending;  // access log lines not yet written (log_mu)
  bool log_timer_armed = false;
  // Prometheus counters.
  std::atomic<uint64_t> requests[6] = {};  // by status class 1xx..5xx, [0] unused
  std::atomic<uint64_t> latency_us_sum{0};
  std::atomic<uint64_t> inflight{0};
  std::atomic<uint64_t> shed_idle{0};             // idle connections closed to make room
  std::atomic<uint64_t> rejected_connections{0};  // connections answered 503 at the cap
  // How long answers posted from other threads waited for their I/O thread (Request::
  // answer_delay_us): moving average (gain 1/8) and mean deviation (1/4) in microseconds, as
  // TCP estimates a round trip. Updated by I/O threads without a lock: with more than one, an
  // update may be lost, which only delays the estimate.
  std::atomic<int64_t> answer_wait_avg_us{-1};
  std::atomic<int64_t> answer_wait_dev_us{0};

  // One I/O thread's loop until the context stops or runs out of work (ServerOptions::spin_us).
  void run_io() {
    if (options.spin_us <= 0) {
      ioc.run();
      return;
    }
    const auto spin = std::chrono::microseconds(options.spin_us);
    while (ioc.run_one() > 0) {  // blocks until a handler ran
      auto until = std::chrono::steady_clock::now() + spin;
      while (!ioc.stopped()) {
        if (ioc.poll() > 0) {
          until = std::chrono::steady_clock::now() + spin;
        } else if (std::chrono::steady_clock::now() < until) {
          ::sched_yield();  // a runnable thread on this core (a model instance) goes first
        } else {
          break;
        }
      }
    }
  }

  void observe_answer_wait(int64_t us) {
    const int64_t avg = answer_wait_avg_us.load(std::memory_order_relaxed);
    if (avg < 0) {
      answer_wait_avg_us.store(us, std::memory_order_relaxed);
      return;
    }
    const int64_t dev = answer_wait_dev_us.load(std::memory_order_relaxed);
    answer_wait_dev_us.store((dev * 3 + std::abs(us - avg)) / 4, std::memory_order_relaxed);
    answer_wait_avg_us.store((avg * 7 + us) / 8, std::memory_order_relaxed);
  }
  int64_t answer_delay_us() const {
    const int64_t avg = answer_wait_avg_us.load(std::memory_order_relaxed);
    return avg < 0 ? 0 : avg + 4 * answer_wait_dev_us.load(std::memory_order_relaxed);
  }

  void accept();
  void on_accept_error(const beast::error_code& ec);
  void schedule_housekeeping();
  // Closes up to `n` idle connections, longest idle first; returns how many it closed.
  size_t shed_idle_connections(size_t n);
  bool near_limit() const { return session_count.load() * 4 >= max_connections * 3; }
  void start_shutdown();
  void session_closed(Session* s);
  std::string metrics_text() const;
  // Writes `line` (and any access lines pending before it) now.
  void log(const std::string& line) {
    if (!options.access_log) return;
    std::lock_guard<std::mutex> g(log_mu);
    log_pending += line;
    flush_log_locked();
  }
  // An access line: written within kAccessLogFlush, or at once past 64 KiB pending. A system
  // call per request on the I/O thread cost the fast inference path about as much as parsing.
  // A crash loses at most the last 100 ms of access lines; a shutdown loses none.
  static constexpr std::chrono::milliseconds kAccessLogFlush{100};
  void log_access(const std::string& line) {
    if (!options.access_log) return;
    std::lock_guard<std::mutex> g(log_mu);
    log_pending += line;
    if (log_pending.size() >= (64 << 10)) return flush_log_locked();
    if (log_timer_armed) return;
    log_timer_armed = true;
    asio::post(ctl, [this] {
      log_timer.expires_after(kAccessLogFlush);
      log_timer.async_wait([this](beast::error_code) {
        std::lock_guard<std::mutex> g(log_mu);
        log_timer_armed = false;
        flush_log_locked();
      });
    });
  }
  void flush_log_locked() {
    if (log_pending.empty()) return;
    std::fwrite(log_pending.data(), 1, log_pending.size(), options.access_log);
    std::fflush(options.access_log);
    log_pending.clear();
  }
};

namespace {

// A request id no other request of this process has, and most likely no other process: a random
// prefix drawn once, then a counter (16 hex digits). A cryptographic random id per request cost
// 3% of a fast model's serving time; ids need to be unique, not unpredictable.
std::string next_request_id() {
  static const std::string prefix = random_hex(4);
  static std::atomic<uint32_t> counter{0};
  char tail[9];
  std::snprintf(tail, sizeof tail, "%08x", counter.fetch_add(1, std::memory_order_relaxed));
  return prefix + tail;
}

// A request's framing and credentials, checked once the headers are in (RFC 9112 section 6):
// only HTTP/1.0 and 1.1; one Content-Length, a non-negative decimal; Transfer-Encoding only
// "chunked", only in HTTP/1.1 and never beside Content-Length; one Authorization header.
Status check_request_header(const http::request_parser<http::empty_body>& parser) {
  const auto& h = parser.get();
  if (h.version() != 10 && h.version() != 11)
    return Status::Invalid("HTTP/{}.{} is not supported: send HTTP/1.1", h.version() / 10,
                           h.version() % 10);
  int content_length = 0, transfer_encoding = 0, authorization = 0;
  for (const auto& f : h) {
    switch (f.name()) {
      case http::field::content_length: {
        ++content_length;
        std::string_view v(f.value().data(), f.value().size());
        if (v.empty() ||
            !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; }))
          return Status::Invalid("Content-Length '{}' is not a non-negative decimal number",
                                 std::string(v.substr(0, 40)));
        break;
      }
      case http::field::transfer_encoding: {
        ++transfer_encoding;
        std::string v(f.value());
        for (char& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (v != "chunked")
          return Status::Invalid(
              "Transfer-Encoding '{}' is not supported: send the body with Content-Length or "
              "'Transfer-Encoding: chunked'",
              v.substr(0, 40));
        break;
      }
      case http::field::authorization:
        ++authorization;
        break;
      default:
        break;
    }
  }
  if (content_length > 1)
    return Status::Invalid("the request has {} Content-Length headers; send one", content_length);
  if (transfer_encoding > 1)
    return Status::Invalid("the request has {} Transfer-Encoding headers; send one",
                           transfer_encoding);
  if (content_length && transfer_encoding)
    return Status::Invalid(
        "the request has both Content-Length and Transfer-Encoding; send one of them");
  if (transfer_encoding && h.version() == 10)
    return Status::Invalid("Transfer-Encoding is not allowed in HTTP/1.0; send Content-Length");
  if (authorization > 1)
    return Status::Invalid("the request has {} Authorization headers; send one", authorization);
  return Status::OK();
}

// Beast's parse errors that mean the bytes were not HTTP (answered 400), as opposed to the
// connection going away or timing out (closed quietly).
bool is_protocol_error(const beast::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_method).category() &&
         ec != http::error::end_of_stream && ec != http::error::partial_message &&
         ec != http::error::need_more && ec != http::error::need_buffer;
}

}  // namespace

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(HttpServer::Impl& srv, tcp::socket socket) : srv_(srv), stream_(std::move(socket)) {
    beast::error_code ec;
    auto ep = stream_.socket().remote_endpoint(ec);
    remote_ = ec ? "?" : ep.address().to_string();
  }
  ~Session() { srv_.session_closed(this); }

  void start() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read_header(); });
  }

  // Answers 503 and closes: the server is at its connection cap and every connection is busy.
  void reject_over_capacity() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      self->busy_ = true;
      self->t0_ = std::chrono::steady_clock::now();
      self->req_.method = "-";
      self->respond_now(
          Response::error(503, "UNAVAILABLE",
                          fmt::format("the server is at its limit of {} connections, all busy; "
                                      "retry with backoff",
                                      self->srv_.max_connections)),
          false);
    });
  }

  // Called on shutdown: closes an idle connection now; a busy one closes after its response.
  void drain() {
    asio::post(stream_.get_executor(), [self = shared_from_this()] {
      if (!self->busy_) self->close();
    });
  }

  // Closes the connection if it is still idle (shedding near the connection cap).
  void close_if_idle() {
    asio::post(stream_.get_executor(), [self = shared_from_this()] {
      if (!self->busy_) self->close();
    });
  }

  // When this connection became idle (ms since the epoch of steady_clock), or 0 when busy.
  int64_t idle_since_ms() const { return idle_since_ms_.load(); }

 private:
  static int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

  void read_header() {
    busy_ = false;
    body_lease_.reset();
    if (srv_.draining) return close();
    idle_since_ms_ = now_ms();
    header_.emplace();
    header_->header_limit(16 * 1024);
    // Checked per route once the headers are in. Not boost::none: Beast 1.74 compares the
    // content length against the optional, and an empty optional then rejects every body.
    header_->body_limit(std::numeric_limits<std::uint64_t>::max());
    // Idle keep-alive connections wait idle_timeout, or much less near the connection cap.
    // Headers, once they start, must complete within header_timeout (checked on every read).
    stream_.expires_after(srv_.near_limit() ? srv_.options.idle_timeout_busy
                                            : srv_.options.idle_timeout);
    if (buffer_.size() > 0) return read_header_more();  // a pipelined request is waiting
    stream_.async_read_some(buffer_.prepare(4096),
                            [self = shared_from_this()](beast::error_code ec, size_t n) {
                              if (ec) return self->close();
                              self->buffer_.commit(n);
                              self->read_header_more();
                            });
  }

  // The first byte of a request arrived: the connection is busy, and the rest of the headers
  // must come within header_timeout.
  void read_header_more() {
    busy_ = true;
    first_byte_ = std::chrono::steady_clock::now();
    idle_since_ms_ = 0;
    stream_.expires_after(srv_.options.header_timeout);
    http::async_read_header(
        stream_, buffer_, *header_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    t0_ = std::chrono::steady_clock::now();
    if (ec == http::error::header_limit)
      return respond_now(
          Response::error(431, "HEADERS_TOO_LARGE", "request headers are over 16 KiB"), false);
    if (is_protocol_error(ec))
      return respond_now(
          Response::error(400, "INVALID_ARGUMENT", "malformed HTTP request: " + ec.message()),
          false);
    if (ec) return close();
    auto& h = header_->get();
    req_ = Request();
    req_.method = std::string(h.method_string());
    target_ = std::string(h.target());
    req_.remote = remote_;
    req_.received = first_byte_;
    req_.answer_delay_us = srv_.answer_delay_us();
    for (auto& f : h) {
      std::string name(f.name_string());
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      req_.headers[name] = std::string(f.value());
    }
    req_.request_id = sanitize_request_id(req_.header("x-request-id"));
    if (req_.request_id.empty()) req_.request_id = next_request_id();
    keep_alive_ = h.keep_alive();
    req_.budget = &srv_.budget;
    if (Status st = check_request_header(*header_); !st.ok())
      return respond_now(Response::error(st.with_context("malformed HTTP request")), false);
    Status st = parse_target(target_, &req_.path, &req_.query);
    if (!st.ok()) return respond_now(Response::error(st), false);

    // Prometheus scrapes: no route, no body.
    if (req_.method == "GET" && req_.path == "/metrics") {
      Response r;
      r.content_type = "text/plain; version=0.0.4";
      r.body = srv_.metrics_text();
      return respond_now(std::move(r), keep_alive_);
    }

    // Route, caller and size are settled from the headers, before a byte of the body is read:
    // an unknown route, an unauthenticated or unauthorized caller and an oversized body cost
    // nothing but the headers (the connection closes after the answer, discarding the body).
    bool path_matched = false;
    const Route* route =
        srv_.router.match(req_.method, req_.path, &req_.path_params, &path_matched);
    if (!route) return reject(srv_.router.dispatch(req_));  // the 404/405 answer
    // Authorization may look the token up in the database: on a worker, not on the I/O thread
    // (unless there is nothing to look up).
    if (route->access == Access::kPublic ||
        (!srv_.router.auth_required() && req_.header("authorization").empty()))
      return after_auth(route, srv_.router.authorize(req_, *route));
    // A token seen within the cache's lifetime needs no database: no worker either.
    if (std::optional<Status> cached = srv_.router.authorize_cached(req_, *route))
      return after_auth(route, *cached);
    if (srv_.queued.load() >= srv_.options.max_queued)
      return respond_now(Response::error(503, "UNAVAILABLE",
                                         "the server is at its limit of queued requests; retry "
                                         "with backoff"),
                         false);
    ++srv_.queued;
    auto work = asio::make_work_guard(srv_.ioc);
    asio::post(srv_.pool, [self = shared_from_this(), route, work = std::move(work)]() mutable {
      Status st = self->srv_.router.authorize(self->req_, *route);
      --self->srv_.queued;
      asio::post(self->stream_.get_executor(),
                 [self, route, st = std::move(st)] { self->after_auth(route, st); });
      work.reset();
    });
  }

  void after_auth(const Route* route, const Status& auth) {
    if (!auth.ok()) return reject(Response::error(auth));
    req_.route = route;
    to_file_ = route->body_to_file;
    uint64_t limit = to_file_
                         ? (route->max_body ? std::min(route->max_body, srv_.options.max_upload)
                                            : srv_.options.max_upload)
                         : std::min(route->max_body, srv_.options.max_body);
    auto cl = header_->content_length();
    if (cl && *cl > limit) return respond_now(too_large(limit), false);
    expected_body_ = cl ? *cl : 0;
    if (!to_file_ && !header_->is_done()) {
      // The body will be held in memory: reserve it (all of the limit when the size is unknown).
      body_lease_ = srv_.budget.reserve(cl ? *cl : limit);
      if (!body_lease_)
        return respond_now(
            Response::error(503, "UNAVAILABLE",
                            fmt::format("the server is holding its limit of {} MiB of request "
                                        "memory; retry with backoff",
                                        srv_.budget.limit() >> 20)),
            false);
    }
    if (req_.header("expect") == "100-continue" && !header_->is_done()) {
      auto cont = std::make_shared<http::response<http::empty_body>>(http::status::continue_, 11);
      http::async_write(stream_, *cont,
                        [self = shared_from_this(), cont, limit](beast::error_code ec, size_t) {
                          if (ec) return self->close();
                          self->read_body(limit);
                        });
      return;
    }
    read_body(limit);
  }

  // Answers a request whose body has not been read. A connection with no body pending stays
  // open; otherwise it is closed after the answer (the unread body is discarded, not parsed).
  void reject(Response r) { respond_now(std::move(r), keep_alive_ && header_->is_done()); }

  Response too_large(uint64_t limit) {
    return Response::error(
        413, "PAYLOAD_TOO_LARGE",
        fmt::format("the request body is over the limit of {} bytes for {} {}{}", limit,
                    req_.method, req_.path, to_file_ ? " (--max-upload-mb)" : ""));
  }

  void read_body(uint64_t limit) {
    body_start_ = std::chrono::steady_clock::now();
    body_read_ = 0;
    if (to_file_) {
      upload_tmp_ = srv_.router.upload_temp_path();
      file_body_.emplace(std::move(*header_));
      file_body_->body_limit(limit);
      beast::error_code ec;
      file_body_->get().body().open(upload_tmp_.c_str(), beast::file_mode::write, ec);
      if (ec) {
        srv_.log(fmt::format("{} {} cannot create the upload file '{}': {}\n", utc_now(),
                             req_.request_id, upload_tmp_, ec.message()));
        return respond_now(Response::error(Status::IOError("cannot store the upload")), false);
      }
      read_body_some(*file_body_, limit);
    } else {
      string_body_.emplace(std::move(*header_));
      string_body_->body_limit(limit);
      read_body_some(*string_body_, limit);
    }
  }

  // Reads the body piece by piece. The deadline fits the size: body_timeout plus the bytes
  // expected (or read so far, for a chunked body) at min_body_rate; every read also has to
  // make progress within body_timeout.
  template <typename Parser>
  void read_body_some(Parser& parser, uint64_t limit) {
    if (parser.is_done()) return on_body({}, limit);
    auto now = std::chrono::steady_clock::now();
    uint64_t size = std::max<uint64_t>(expected_body_, body_read_ + (64 << 10));
    auto deadline =
        body_start_ + srv_.options.body_timeout +
        std::chrono::milliseconds(size * 1000 / std::max<uint64_t>(1, srv_.options.min_body_rate));
    if (now >= deadline) return on_body(beast::error::timeout, limit);
    stream_.expires_after(
        std::min<std::chrono::steady_clock::duration>(deadline - now, srv_.options.body_timeout));
    http::async_read_some(
        stream_, buffer_, parser,
        [self = shared_from_this(), &parser, limit](beast::error_code ec, size_t n) {
          self->body_read_ += n;
          if (ec) return self->on_body(ec, limit);
          self->read_body_some(parser, limit);
        });
  }

  void on_body(beast::error_code ec, uint64_t limit) {
    if (to_file_) {
      beast::error_code ignored;
      file_body_->get().body().file().close(ignored);
    }
    if (ec) {
      if (to_file_) ::unlink(upload_tmp_.c_str());
      if (ec == http::error::body_limit) return respond_now(too_large(limit), false);
      if (is_protocol_error(ec))
        return respond_now(Response::error(400, "INVALID_ARGUMENT",
                                           "malformed HTTP request body: " + ec.message()),
                           false);
      if (ec == beast::error::timeout)
        srv_.log(fmt::format(
            "{} {} {} \"{} {}\" 408 the body did not arrive in time ({} bytes "
            "read)\n",
            utc_now(), req_.request_id, remote_, req_.method, target_.substr(0, 200), body_read_));
      return close();
    }
    if (to_file_) {
      req_.body_file = upload_tmp_;
      file_body_.reset();
    } else {
      req_.body = std::move(string_body_->get().body());
      string_body_.reset();
    }
    // The guard keeps the I/O loop alive while the handler runs off it (graceful drain).
    // An asynchronous route (inference) answers from another thread later; the worker is free
    // as soon as the handler has handed the request on.
    auto work = std::make_shared<asio::executor_work_guard<asio::io_context::executor_type>>(
        asio::make_work_guard(srv_.ioc));
    if (req_.route && req_.route->async_handler && !to_file_ &&
        req_.body.size() <= srv_.options.inline_async_max_body) {
      // Small and asynchronous: the handler only parses and hands on, so it runs here. The
      // answer is posted back to this strand like a worker's (never written re-entrantly).
      ++srv_.inflight;
      // An answer given before dispatch_async returns (a fast model run inline) is written
      // right after it returns, on this strand; one given later, from another thread, is posted
      // here. Either way never re-entrantly, and without a round through the scheduler for the
      // common fast case.
      dispatching_on_ = std::this_thread::get_id();
      srv_.router.dispatch_async(req_, [self = shared_from_this(), work](Response r) {
        if (self->dispatching_on_.load() == std::this_thread::get_id()) {
          self->answered_inline_.emplace(std::move(r));
        } else {
          self->post_answer(std::move(r));
        }
        work->reset();
      });
      dispatching_on_ = std::thread::id();
      if (answered_inline_) {
        Response r = std::move(*answered_inline_);
        answered_inline_.reset();
        write(std::move(r));
      }
      return;
    }
    if (srv_.queued.load() >= srv_.options.max_queued)
      return respond_now(Response::error(503, "UNAVAILABLE",
                                         "the server is at its limit of queued requests; retry "
                                         "with backoff"),
                         keep_alive_);
    ++srv_.queued;
    ++srv_.inflight;
    asio::post(srv_.pool, [self = shared_from_this(), work]() mutable {
      --self->srv_.queued;
      self->srv_.router.dispatch_async(self->req_, [self, work](Response r) {
        self->post_answer(std::move(r));
        work->reset();
      });
    });
  }

  // Hands an answer made on another thread to this connection's strand, which writes it; how
  // long that took (the wait for the I/O thread, and the write's start) feeds answer_delay_us.
  void post_answer(Response r) {
    asio::post(stream_.get_executor(), [self = shared_from_this(), r = std::move(r),
                                        posted = std::chrono::steady_clock::now()]() mutable {
      self->write(std::move(r));
      self->srv_.observe_answer_wait(std::chrono::duration_cast<std::chrono::microseconds>(
                                         std::chrono::steady_clock::now() - posted)
                                         .count());
    });
  }

  void respond_now(Response r, bool keep) {
    busy_ = true;
    keep_alive_ = keep;
    if (req_.request_id.empty()) req_.request_id = next_request_id();
    if (t0_ == std::chrono::steady_clock::time_point()) t0_ = std::chrono::steady_clock::now();
    ++srv_.inflight;
    write(std::move(r));
  }

  void write(Response r) {
    bool keep = keep_alive_ && !srv_.draining;
    // What went wrong inside the server stays in its log, under the request id.
    if (!r.log_detail.empty())
      srv_.log(fmt::format("{} {} error detail: {}\n", utc_now(), req_.request_id, r.log_detail));
    int status = r.status;
    std::string remove = r.delete_file ? r.file_path : "";
    auto finish = [self = shared_from_this(), keep, status, remove](beast::error_code ec,
                                                                    size_t bytes) {
      if (!remove.empty()) ::unlink(remove.c_str());
      self->on_write(ec, bytes, keep, status);
    };
    stream_.expires_after(std::chrono::seconds(3600));
    if (!r.file_path.empty()) {
      auto res = std::make_shared<http::response<http::file_body>>();
      beast::error_code ec;
      res->body().open(r.file_path.c_str(), beast::file_mode::scan, ec);
      if (!ec) {
        res->result(static_cast<unsigned>(status));
        res->version(11);
        fill_headers(*res, r, keep);
        res->prepare_payload();
        http::async_write(stream_, *res,
                          [res, finish](beast::error_code e, size_t n) { finish(e, n); });
        return;
      }
      srv_.log(fmt::format("{} {} cannot open '{}': {}\n", utc_now(), req_.request_id, r.file_path,
                           ec.message()));
      if (!remove.empty()) ::unlink(remove.c_str());
      remove.clear();
      r = Response::error(500, "INTERNAL",
                          fmt::format("internal error; the server log has the details under "
                                      "request id {}",
                                      req_.request_id));
      status = r.status;
    }
    auto res = std::make_shared<http::response<http::string_body>>();
    res->result(static_cast<unsigned>(r.status));
    res->version(11);
    fill_headers(*res, r, keep);
    res->body() = std::move(r.body);
    res->prepare_payload();
    http::async_write(stream_, *res,
                      [res, finish](beast::error_code e, size_t n) { finish(e, n); });
  }

  template <typename Msg>
  void fill_headers(Msg& res, const Response& r, bool keep) {
    res.set(http::field::server, "dlsys");
    res.set(http::field::content_type, r.content_type);
    res.set("X-Request-Id", req_.request_id);
    for (auto& [k, v] : r.headers) res.set(k, v);
    res.keep_alive(keep);
  }

  void on_write(beast::error_code ec, size_t bytes, bool keep, int status) {
    double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0_).count();
    int cls = std::clamp(status / 100, 1, 5);
    ++srv_.requests[cls];
    srv_.latency_us_sum += static_cast<uint64_t>(ms * 1000);
    --srv_.inflight;
    if (srv_.options.access_log)
      srv_.log_access(fmt::format("{} {} {} \"{} {}\" {} {}B {:.2f}ms actor={}\n", utc_now(),
                                  req_.request_id, remote_, req_.method, target_.substr(0, 200),
                                  status, bytes, ms,
                                  req_.principal.name.empty() ? "-" : req_.principal.name));
    t0_ = {};
    req_ = Request();  // releases the request's memory and its budget leases
    if (ec) return close();
    if (!keep) return linger_close();
    read_header();
  }

  // Half-closes, then reads and drops what the client still sends (a rejected body) for up to
  // two seconds before closing: closing with unread data would reset the connection and the
  // client could lose the response (e.g. a 413).
  void linger_close() {
    body_lease_.reset();
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.expires_after(std::chrono::seconds(2));
    discard_.resize(64 * 1024);
    stream_.async_read_some(asio::buffer(discard_),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) return self->close();
                              self->linger_close_more();
                            });
  }
  void linger_close_more() {
    stream_.async_read_some(asio::buffer(discard_),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) return self->close();
                              self->linger_close_more();
                            });
  }

  void close() {
    idle_since_ms_ = 0;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.socket().close(ec);
  }

  HttpServer::Impl& srv_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::empty_body>> header_;
  std::optional<http::request_parser<http::string_body>> string_body_;
  std::optional<http::request_parser<http::file_body>> file_body_;
  Request req_;
  MemoryBudget::Lease body_lease_;
  std::string target_;
  std::string remote_;
  std::string upload_tmp_;
  std::vector<char> discard_;
  bool to_file_ = false;
  bool keep_alive_ = true;
  bool busy_ = false;
  // on_body: the thread inside dispatch_async, and an answer it gave before returning.
  std::atomic<std::thread::id> dispatching_on_{};
  std::optional<Response> answered_inline_;
  std::atomic<int64_t> idle_since_ms_{0};
  uint64_t expected_body_ = 0;
  uint64_t body_read_ = 0;
  std::chrono::steady_clock::time_point body_start_;
  std::chrono::steady_clock::time_point t0_;
  // When the current request's first byte was read (Request::received).
  std::chrono::steady_clock::time_point first_byte_;
};

void HttpServer::Impl::accept() {
  acceptor.async_accept(asio::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
      return on_accept_error(ec);
    }
    if (draining) return;
    size_t count = session_count.load();
    bool reject = false;
    if (count >= max_connections) {
      // Make room by closing the longest-idle connections (a few at once, so that a burst
      // does not scan the table per connection); with none idle, this one gets 503.
      if (shed_idle_connections(1 + max_connections / 16) == 0) reject = true;
    }
    auto s = std::make_shared<Session>(*this, std::move(socket));
    {
      std::lock_guard<std::mutex> g(sessions_mu);
      sessions[s.get()] = s;
      session_count = sessions.size();
    }
    if (reject) {
      ++rejected_connections;
      s->reject_over_capacity();
    } else {
      s->start();
    }
    accept();
  });
}

void HttpServer::Impl::on_accept_error(const beast::error_code& ec) {
  // Out of file descriptors (or another transient failure): free idle connections and try
  // again shortly, instead of spinning on a failing accept.
  if (ec == asio::error::no_descriptors || ec.value() == ENFILE) {
    shed_idle_connections(1 + max_connections / 16);
    log(fmt::format("{} accept: {} ({} connections); closing idle connections\n", utc_now(),
                    ec.message(), session_count.load()));
  }
  accept_timer.expires_after(std::chrono::milliseconds(50));
  accept_timer.async_wait([this](beast::error_code e) {
    if (!e && !draining) accept();
  });
}

size_t HttpServer::Impl::shed_idle_connections(size_t n) {
  std::vector<std::pair<int64_t, std::shared_ptr<Session>>> idle;
  {
    std::lock_guard<std::mutex> g(sessions_mu);
    for (auto& [_, w] : sessions)
      if (auto s = w.lock())
        if (int64_t t = s->idle_since_ms(); t > 0) idle.emplace_back(t, std::move(s));
  }
  n = std::min(n, idle.size());
  std::partial_sort(idle.begin(), idle.begin() + n, idle.end(),
                    [](const auto& a, const auto& b) { return a.first < b.first; });
  for (size_t i = 0; i < n; ++i) idle[i].second->close_if_idle();
  shed_idle += n;
  return n;
}

void HttpServer::Impl::schedule_housekeeping() {
  if (!options.housekeeping) return;
  housekeeping_timer.expires_after(options.housekeeping_interval);
  housekeeping_timer.async_wait([this](beast::error_code ec) {
    if (ec || draining) return;
    auto work = asio::make_work_guard(ioc);
    asio::post(pool, [this, work = std::move(work)]() mutable {
      options.housekeeping();
      work.reset();
    });
    schedule_housekeeping();
  });
}

void HttpServer::Impl::start_shutdown() {
  asio::post(ctl, [this] {
    if (draining.exchange(true)) return;
    beast::error_code ec;
    acceptor.close(ec);
    signals.cancel(ec);
    accept_timer.cancel();
    housekeeping_timer.cancel();
    std::vector<std::shared_ptr<Session>> live;
    {
      std::lock_guard<std::mutex> g(sessions_mu);
      for (auto& [_, w] : sessions)
        if (auto s = w.lock()) live.push_back(s);
    }
    if (live.empty()) return;
    drain_timer.expires_after(options.drain_timeout);
    drain_timer.async_wait([this](beast::error_code ec) {
      if (!ec) {
        log(fmt::format("{} shutdown: in-flight requests did not finish in {}s; stopping\n",
                        utc_now(), options.drain_timeout.count()));
        ioc.stop();
      }
    });
    for (auto& s : live) s->drain();
  });
}

void HttpServer::Impl::session_closed(Session* s) {
  std::lock_guard<std::mutex> g(sessions_mu);
  sessions.erase(s);
  session_count = sessions.size();
  if (sessions.empty() && draining) asio::post(ctl, [this] { drain_timer.cancel(); });
}

std::string HttpServer::Impl::metrics_text() const {
  std::string out =
      "# HELP dlsys_http_requests_total HTTP requests answered, by status class.\n"
      "# TYPE dlsys_http_requests_total counter\n";
  uint64_t total = 0;
  for (int c = 1; c <= 5; ++c) {
    out += fmt::format("dlsys_http_requests_total{{code=\"{}xx\"}} {}\n", c, requests[c].load());
    total += requests[c].load();
  }
  out += fmt::format(
      "# HELP dlsys_http_request_duration_seconds Time from request headers to response sent.\n"
      "# TYPE dlsys_http_request_duration_seconds summary\n"
      "dlsys_http_request_duration_seconds_sum {:.6f}\n"
      "dlsys_http_request_duration_seconds_count {}\n"
      "# HELP dlsys_http_inflight_requests Requests being handled now.\n"
      "# TYPE dlsys_http_inflight_requests gauge\n"
      "dlsys_http_inflight_requests {}\n"
      "# HELP dlsys_http_connections Open connections.\n"
      "# TYPE dlsys_http_connections gauge\n"
      "dlsys_http_connections {}\n"
      "# HELP dlsys_http_connections_max The connection cap in force.\n"
      "# TYPE dlsys_http_connections_max gauge\n"
      "dlsys_http_connections_max {}\n"
      "# HELP dlsys_http_idle_connections_shed_total Idle connections closed near the cap.\n"
      "# TYPE dlsys_http_idle_connections_shed_total counter\n"
      "dlsys_http_idle_connections_shed_total {}\n"
      "# HELP dlsys_http_connections_rejected_total Connections answered 503 at the cap.\n"
      "# TYPE dlsys_http_connections_rejected_total counter\n"
      "dlsys_http_connections_rejected_total {}\n"
      "# HELP dlsys_http_request_memory_bytes Request memory reserved now, of the budget.\n"
      "# TYPE dlsys_http_request_memory_bytes gauge\n"
      "dlsys_http_request_memory_bytes {}\n",
      static_cast<double>(latency_us_sum.load()) / 1e6, total, inflight.load(),
      session_count.load(), max_connections, shed_idle.load(), rejected_connections.load(),
      budget.used());
  if (options.extra_metrics) out += options.extra_metrics();
  return out;
}

HttpServer::HttpServer(const Router& router, ServerOptions options)
    : impl_(std::make_unique<Impl>(router, std::move(options))) {}

HttpServer::~HttpServer() {
  impl_->pool.join();
}

Status HttpServer::listen() {
  beast::error_code ec;
  auto addr = asio::ip::make_address(impl_->options.host, ec);
  if (ec)
    return Status::Invalid("--host '{}' is not an IP address (use e.g. 127.0.0.1 or 0.0.0.0)",
                           impl_->options.host);
  tcp::endpoint ep(addr, static_cast<unsigned short>(impl_->options.port));
  auto& a = impl_->acceptor;
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return Status::Unavailable(
        "cannot listen on {}:{}: {}; pick another --port or stop the "
        "process that holds it",
        impl_->options.host, impl_->options.port, ec.message());
  impl_->bound_port = a.local_endpoint().port();
  // The connection cap leaves fd_reserve descriptors for everything else the server opens.
  struct rlimit rl;
  size_t cap = impl_->options.max_connections;
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    size_t fds = static_cast<size_t>(rl.rlim_cur);
    size_t reserve = impl_->options.fd_reserve + 2 * static_cast<size_t>(impl_->options.workers);
    cap = std::min(cap, fds > reserve + 8 ? fds - reserve : 8);
  }
  impl_->max_connections = std::max<size_t>(cap, 1);
  return Status::OK();
}

int HttpServer::port() const {
  return impl_->bound_port;
}

size_t HttpServer::max_connections() const {
  return impl_->max_connections;
}

void HttpServer::run() {
  Impl& s = *impl_;
  if (s.options.handle_signals) {
    s.signals.add(SIGINT);
    s.signals.add(SIGTERM);
    s.signals.async_wait([this](beast::error_code ec, int sig) {
      if (ec) return;
      impl_->log(fmt::format("{} received {}: draining in-flight requests\n", utc_now(),
                             sig == SIGTERM ? "SIGTERM" : "SIGINT"));
      shutdown();
    });
  }
  asio::post(s.ctl, [&s] {
    s.accept();
    s.schedule_housekeeping();
  });
  std::vector<std::thread> threads;
  for (int i = 1; i < std::max(1, s.options.io_threads); ++i)
    threads.emplace_back([&s] { s.run_io(); });
  s.run_io();
  for (auto& t : threads) t.join();
  s.pool.join();
  if (s.options.access_log) {  // access lines still pending when the loop ended
    std::lock_guard<std::mutex> g(s.log_mu);
    s.flush_log_locked();
  }
}

void HttpServer::shutdown() {
  impl_->start_shutdown();
}

}  // namespace dlsys::api
