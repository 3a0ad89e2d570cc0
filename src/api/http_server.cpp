#include "api/http_server.h"

#include <unistd.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
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
        pool(static_cast<size_t>(std::max(1, options.workers))) {}

  const Router& router;
  ServerOptions options;
  asio::io_context ioc;
  asio::strand<asio::io_context::executor_type> ctl;  // acceptor, signals, drain timer
  tcp::acceptor acceptor;
  asio::signal_set signals;
  asio::steady_timer drain_timer;
  asio::thread_pool pool;
  std::atomic<bool> draining{false};
  std::atomic<size_t> queued{0};
  int bound_port = 0;

  std::mutex sessions_mu;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions;

  std::mutex log_mu;
  // Prometheus counters.
  std::atomic<uint64_t> requests[6] = {};  // by status class 1xx..5xx, [0] unused
  std::atomic<uint64_t> latency_us_sum{0};
  std::atomic<uint64_t> inflight{0};

  void accept();
  void start_shutdown();
  void session_closed(Session* s);
  std::string metrics_text() const;
  void log(const std::string& line) {
    if (!options.access_log) return;
    std::lock_guard<std::mutex> g(log_mu);
    std::fputs(line.c_str(), options.access_log);
    std::fflush(options.access_log);
  }
};

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

  // Called on shutdown: closes an idle connection now; a busy one closes after its response.
  void drain() {
    asio::post(stream_.get_executor(), [self = shared_from_this()] {
      if (!self->busy_) self->close();
    });
  }

 private:
  void read_header() {
    busy_ = false;
    if (srv_.draining) return close();
    header_.emplace();
    header_->header_limit(16 * 1024);
    // Checked per route once the headers are in. Not boost::none: Beast 1.74 compares the
    // content length against the optional, and an empty optional then rejects every body.
    header_->body_limit(std::numeric_limits<std::uint64_t>::max());
    stream_.expires_after(srv_.options.idle_timeout);
    http::async_read_header(
        stream_, buffer_, *header_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    if (ec == http::error::header_limit) {
      busy_ = true;
      return respond_now(
          Response::error(431, "HEADERS_TOO_LARGE", "request headers are over 16 KiB"), false);
    }
    if (ec) return close();
    busy_ = true;
    t0_ = std::chrono::steady_clock::now();
    auto& h = header_->get();
    req_ = Request();
    req_.method = std::string(h.method_string());
    target_ = std::string(h.target());
    req_.remote = remote_;
    for (auto& f : h) {
      std::string name(f.name_string());
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      req_.headers[name] = std::string(f.value());
    }
    req_.request_id = sanitize_request_id(req_.header("x-request-id"));
    if (req_.request_id.empty()) req_.request_id = random_hex(8);
    keep_alive_ = h.keep_alive();
    Status st = parse_target(target_, &req_.path, &req_.query);
    if (!st.ok()) return respond_now(Response::error(st), false);

    std::map<std::string, std::string> unused;
    bool path_matched = false;
    const Route* route = srv_.router.match(req_.method, req_.path, &unused, &path_matched);
    to_file_ = route && route->body_to_file;
    uint64_t limit = to_file_ ? srv_.options.max_upload : srv_.options.max_body;
    if (header_->content_length() && *header_->content_length() > limit)
      return respond_now(too_large(limit), false);
    if (req_.header("expect") == "100-continue") {
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

  Response too_large(uint64_t limit) {
    return Response::error(413, "PAYLOAD_TOO_LARGE",
                           fmt::format("the request body is over the limit of {} bytes{}", limit,
                                       to_file_ ? " (--max-upload-mb)" : " (--max-body-mb)"));
  }

  void read_body(uint64_t limit) {
    // Uploads may take long: the deadline covers the whole body, not one read.
    stream_.expires_after(to_file_ ? std::chrono::seconds(3600) : srv_.options.idle_timeout);
    if (to_file_) {
      upload_tmp_ = srv_.router.upload_temp_path();
      file_body_.emplace(std::move(*header_));
      file_body_->body_limit(limit);
      beast::error_code ec;
      file_body_->get().body().open(upload_tmp_.c_str(), beast::file_mode::write, ec);
      if (ec)
        return respond_now(Response::error(Status::IOError("cannot create the upload file '{}': {}",
                                                           upload_tmp_, ec.message())),
                           false);
      http::async_read(stream_, buffer_, *file_body_,
                       [self = shared_from_this(), limit](beast::error_code ec, size_t) {
                         self->on_body(ec, limit);
                       });
    } else {
      string_body_.emplace(std::move(*header_));
      string_body_->body_limit(limit);
      http::async_read(stream_, buffer_, *string_body_,
                       [self = shared_from_this(), limit](beast::error_code ec, size_t) {
                         self->on_body(ec, limit);
                       });
    }
  }

  void on_body(beast::error_code ec, uint64_t limit) {
    if (to_file_) {
      beast::error_code ignored;
      file_body_->get().body().file().close(ignored);
    }
    if (ec) {
      if (to_file_) ::unlink(upload_tmp_.c_str());
      if (ec == http::error::body_limit) return respond_now(too_large(limit), false);
      return close();
    }
    if (to_file_) {
      req_.body_file = upload_tmp_;
      file_body_.reset();
    } else {
      req_.body = std::move(string_body_->get().body());
      string_body_.reset();
    }
    if (req_.method == "GET" && req_.path == "/metrics") {
      Response r;
      r.content_type = "text/plain; version=0.0.4";
      r.body = srv_.metrics_text();
      return write(std::move(r));
    }
    if (srv_.queued.load() >= srv_.options.max_queued)
      return respond_now(Response::error(503, "UNAVAILABLE",
                                         "the server is at its limit of queued requests; retry "
                                         "with backoff"),
                         keep_alive_);
    ++srv_.queued;
    ++srv_.inflight;
    // The guard keeps the I/O loop alive while the handler runs off it (graceful drain).
    auto work = asio::make_work_guard(srv_.ioc);
    asio::post(srv_.pool, [self = shared_from_this(), work = std::move(work)]() mutable {
      Response r = self->srv_.router.dispatch(self->req_);
      --self->srv_.queued;
      asio::post(self->stream_.get_executor(),
                 [self, r = std::move(r)]() mutable { self->write(std::move(r)); });
      work.reset();
    });
  }

  void respond_now(Response r, bool keep) {
    keep_alive_ = keep;
    if (req_.request_id.empty()) req_.request_id = random_hex(8);
    if (t0_ == std::chrono::steady_clock::time_point()) t0_ = std::chrono::steady_clock::now();
    ++srv_.inflight;
    write(std::move(r));
  }

  void write(Response r) {
    bool keep = keep_alive_ && !srv_.draining;
    int status = r.status;
    auto finish = [self = shared_from_this(), keep, status](beast::error_code ec, size_t bytes) {
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
      r = Response::error(Status::IOError("cannot open '{}': {}", r.file_path, ec.message()));
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
      srv_.log(fmt::format("{} {} {} \"{} {}\" {} {}B {:.2f}ms actor={}\n", utc_now(),
                           req_.request_id, remote_, req_.method, target_.substr(0, 200), status,
                           bytes, ms, req_.principal.name.empty() ? "-" : req_.principal.name));
    t0_ = {};
    if (ec) return close();
    if (!keep) return linger_close();
    read_header();
  }

  // Half-closes, then reads and drops what the client still sends (a rejected body) for up to
  // two seconds before closing: closing with unread data would reset the connection and the
  // client could lose the response (e.g. a 413).
  void linger_close() {
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
  std::string target_;
  std::string remote_;
  std::string upload_tmp_;
  std::vector<char> discard_;
  bool to_file_ = false;
  bool keep_alive_ = true;
  bool busy_ = false;
  std::chrono::steady_clock::time_point t0_;
};

void HttpServer::Impl::accept() {
  acceptor.async_accept(asio::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
      accept();
      return;
    }
    if (draining) return;
    auto s = std::make_shared<Session>(*this, std::move(socket));
    {
      std::lock_guard<std::mutex> g(sessions_mu);
      sessions[s.get()] = s;
    }
    s->start();
    accept();
  });
}

void HttpServer::Impl::start_shutdown() {
  asio::post(ctl, [this] {
    if (draining.exchange(true)) return;
    beast::error_code ec;
    acceptor.close(ec);
    signals.cancel(ec);
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
      "dlsys_http_inflight_requests {}\n",
      static_cast<double>(latency_us_sum.load()) / 1e6, total, inflight.load());
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
  return Status::OK();
}

int HttpServer::port() const {
  return impl_->bound_port;
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
  asio::post(s.ctl, [&s] { s.accept(); });
  std::vector<std::thread> threads;
  for (int i = 1; i < std::max(1, s.options.io_threads); ++i)
    threads.emplace_back([&s] { s.ioc.run(); });
  s.ioc.run();
  for (auto& t : threads) t.join();
  s.pool.join();
}

void HttpServer::shutdown() {
  impl_->start_shutdown();
}

}  // namespace dlsys::api
