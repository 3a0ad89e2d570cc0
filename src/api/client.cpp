#include "api/client.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <filesystem>
#include <limits>

#include "api/services.h"
#include "core/file_util.h"
#include "core/json_get.h"
#include "core/json_parse.h"

namespace dlsys::api {

namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

Status parse_http_url(const std::string& url, std::string* host, int* port) {
  std::string rest = url;
  if (rest.rfind("http://", 0) == 0)
    rest = rest.substr(7);
  else if (rest.find("://") != std::string::npos)
    return Status::Invalid(
        "server URL '{}' must start with http:// (TLS is not supported; put a "
        "TLS proxy in front)",
        url);
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.find('/') != std::string::npos)
    return Status::Invalid("server URL '{}' must be http://host:port without a path", url);
  size_t colon = rest.rfind(':');
  *port = 80;
  *host = rest;
  if (colon != std::string::npos) {
    *host = rest.substr(0, colon);
    try {
      *port = std::stoi(rest.substr(colon + 1));
    } catch (...) {
      return Status::Invalid("server URL '{}' has a bad port", url);
    }
  }
  if (host->empty()) return Status::Invalid("server URL '{}' has no host", url);
  return Status::OK();
}

struct HttpConnection::Impl {
  std::string host;
  int port = 0;
  std::chrono::milliseconds io_timeout{0};  // 0: none

  // A deadline on every read and write of the socket (an answer that never comes).
  void apply_io_timeout() {
    const int64_t ms = io_timeout.count() > 0 ? io_timeout.count() : 300'000;
    timeval tv{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
    ::setsockopt(stream->socket().native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(stream->socket().native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  asio::io_context ioc;
  std::optional<beast::tcp_stream> stream;
  beast::flat_buffer buffer;

  Status connect() {
    stream.emplace(ioc);
    beast::error_code ec;
    tcp::resolver resolver(ioc);
    auto results = resolver.resolve(host, std::to_string(port), ec);
    if (!ec) {
      // A deadline on the connect: an address that drops packets answers "timed out" within
      // kConnectSeconds instead of the kernel's minutes.
      stream->expires_after(std::chrono::seconds(kConnectSeconds));
      stream->async_connect(results,
                            [&](const beast::error_code& e, const tcp::endpoint&) { ec = e; });
      ioc.restart();
      ioc.run();
      stream->expires_never();
    }
    if (ec) {
      std::string cause = ec == beast::error::timeout
                              ? fmt::format("no answer within {} s (timed out)", kConnectSeconds)
                              : ec.message();
      stream.reset();
      return Status::Unavailable(
          "cannot reach the dlsys server at http://{}:{}: {}; start it with `dlsys server`", host,
          port, cause);
    }
    apply_io_timeout();
    stream->socket().set_option(tcp::no_delay(true), ec);
    buffer.clear();
    return Status::OK();
  }

  template <typename ReqBody, typename ResParser>
  Result<HttpResult> exchange(http::request<ReqBody>& req, ResParser& parser,
                              const ApiClient::Progress& progress = nullptr) {
    beast::error_code ec;
    if (progress) {
      // Piece by piece, so the caller sees the body go out.
      uint64_t total = req.payload_size().value_or(0), sent = 0;
      http::request_serializer<ReqBody> sr{req};
      while (!ec && !sr.is_done()) {
        sent += http::write_some(*stream, sr, ec);
        progress(std::min(sent, total), total);
      }
    }
    // The rest as asynchronous operations run here to completion, so that the stream's timer
    // bounds them (Asio's blocking reads wait forever on a peer that never answers, whatever
    // the socket's own timeouts say).
    if (!ec) {
      if (io_timeout.count() > 0) stream->expires_after(io_timeout);
      auto read = [&] {
        http::async_read(*stream, buffer, parser,
                         [&](beast::error_code e, std::size_t) { ec = e; });
      };
      if (progress) {
        read();
      } else {
        http::async_write(*stream, req, [&](beast::error_code e, std::size_t) {
          ec = e;
          if (!e) read();
        });
      }
      ioc.restart();
      ioc.run();
      if (stream) stream->expires_never();
    }
    if (ec == beast::error::timeout) {
      stream.reset();
      return Status::DeadlineExceeded("no answer from {}:{} within {} ms", host, port,
                                      io_timeout.count());
    }
    if (ec)
      return Status::Unavailable("HTTP exchange with {}:{} failed: {}", host, port, ec.message());
    HttpResult out;
    auto& res = parser.get();
    out.status = static_cast<int>(res.result_int());
    for (auto& f : res) {
      std::string name(f.name_string());
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      out.headers[name] = std::string(f.value());
    }
    if (!res.keep_alive()) stream.reset();
    return out;
  }

  template <typename ReqBody>
  void prepare(http::request<ReqBody>& req, const std::map<std::string, std::string>& headers) {
    req.set(http::field::host, host + ":" + std::to_string(port));
    req.set(http::field::user_agent, "dlsys-client");
    req.keep_alive(true);
    for (auto& [k, v] : headers) req.set(k, v);
    req.prepare_payload();
  }

  // Runs `attempt` and, when the kept-alive connection turned out closed, reconnects once.
  template <typename Fn>
  Result<HttpResult> with_retry(Fn&& attempt) {
    for (int i = 0; i < 2; ++i) {
      bool fresh = !stream.has_value();
      if (fresh) DLSYS_RETURN_IF_ERROR(connect());
      auto r = attempt();
      // A closed kept-alive connection is tried again once; a peer that did not answer in time
      // is not asked twice.
      if (r.ok() || fresh || r.status().code() == StatusCode::kDeadlineExceeded) return r;
      stream.reset();
    }
    return Status::Unavailable("HTTP exchange with {}:{} failed twice", host, port);
  }
};

HttpConnection::HttpConnection(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

void HttpConnection::set_io_timeout(std::chrono::milliseconds timeout) {
  impl_->io_timeout = timeout;
  if (impl_->stream) impl_->apply_io_timeout();
}
HttpConnection::~HttpConnection() = default;

Result<std::unique_ptr<HttpConnection>> HttpConnection::open(const std::string& host, int port) {
  auto impl = std::make_unique<Impl>();
  impl->host = host;
  impl->port = port;
  DLSYS_RETURN_IF_ERROR(impl->connect());
  return std::unique_ptr<HttpConnection>(new HttpConnection(std::move(impl)));
}

Result<HttpResult> HttpConnection::request(const std::string& method, const std::string& target,
                                           const std::string& body,
                                           const std::map<std::string, std::string>& headers) {
  return impl_->with_retry([&]() -> Result<HttpResult> {
    http::request<http::string_body> req(http::string_to_verb(method), target, 11);
    req.body() = body;
    if (!body.empty()) req.set(http::field::content_type, "application/json");
    impl_->prepare(req, headers);
    http::response_parser<http::string_body> parser;
    parser.body_limit(1ull << 32);
    DLSYS_ASSIGN_OR_RETURN(HttpResult r, impl_->exchange(req, parser));
    r.body = std::move(parser.get().body());
    return r;
  });
}

Result<HttpResult> HttpConnection::request_file(const std::string& method,
                                                const std::string& target, const std::string& path,
                                                const std::map<std::string, std::string>& headers,
                                                const ApiClient::Progress& progress) {
  return impl_->with_retry([&]() -> Result<HttpResult> {
    http::request<http::file_body> req(http::string_to_verb(method), target, 11);
    beast::error_code ec;
    req.body().open(path.c_str(), beast::file_mode::scan, ec);
    if (ec) return Status::IOError("cannot open '{}' to upload it: {}", path, ec.message());
    req.set(http::field::content_type, "application/octet-stream");
    impl_->prepare(req, headers);
    http::response_parser<http::string_body> parser;
    DLSYS_ASSIGN_OR_RETURN(HttpResult r, impl_->exchange(req, parser, progress));
    r.body = std::move(parser.get().body());
    return r;
  });
}

Result<HttpResult> HttpConnection::download(const std::string& target, const std::string& out_path,
                                            const std::map<std::string, std::string>& headers) {
  std::string tmp = out_path + ".part-" + random_hex(4);
  auto r = impl_->with_retry([&]() -> Result<HttpResult> {
    http::request<http::empty_body> req(http::verb::get, target, 11);
    impl_->prepare(req, headers);
    http::response_parser<http::file_body> parser;
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    beast::error_code ec;
    parser.get().body().open(tmp.c_str(), beast::file_mode::write, ec);
    if (ec) return Status::IOError("cannot write '{}': {}", tmp, ec.message());
    auto res = impl_->exchange(req, parser);
    parser.get().body().file().close(ec);
    return res;
  });
  if (!r.ok() || r->status != 200) {
    if (r.ok()) {
      auto body = read_file(tmp);
      if (body.ok()) r->body = *body;
    }
    ::unlink(tmp.c_str());
    return r;
  }
  Status st = commit_file(tmp, out_path);
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  return r;
}

namespace {

// Turns a non-2xx answer into a Status carrying the server's message.
Result<json> json_answer(int status, const std::string& body) {
  // A server's answer is outside input: bounded parse (depth, values), checked reads.
  JsonLimits limits;
  limits.max_values = 1 << 24;
  Result<json> j = parse_json(body, limits, "the server's answer");
  if (status >= 200 && status < 300) {
    if (!j.ok())
      return Status::Internal("the server answered {} with a body that is not usable JSON: {}",
                              status, j.status().message());
    return std::move(j).value();
  }
  std::string msg = body.substr(0, 500);
  if (j.ok()) {
    auto error = json_get_optional<json>(*j, "error", "the server's error answer");
    if (error.ok() && error->has_value()) {
      auto m = json_get<std::string>(**error, "message", "the server's error answer");
      if (m.ok()) msg = *m;
    }
  }
  if (msg.find_first_not_of(" \t\r\n") == std::string::npos)
    msg = fmt::format("HTTP {} without a message (is it a dlsys server?)", status);
  StatusCode code = status_code_of_http(status);
  if (code == StatusCode::kOk) code = StatusCode::kInternal;
  return Status(code, msg);
}

class HttpApiClient : public ApiClient {
 public:
  HttpApiClient(std::string url, std::unique_ptr<HttpConnection> c, std::string token)
      : url_(std::move(url)), token_(std::move(token)), c_(std::move(c)) {
    if (!token_.empty()) headers_["Authorization"] = "Bearer " + token_;
  }
  Result<json> call(const std::string& method, const std::string& target,
                    const json& body) override {
    DLSYS_ASSIGN_OR_RETURN(
        HttpResult r, c_->request(method, target, body.is_null() ? "" : body.dump(), headers_));
    return json_answer(r.status, r.body);
  }
  Result<json> send_file(const std::string& method, const std::string& target,
                         const std::string& path, const Progress& progress) override {
    DLSYS_ASSIGN_OR_RETURN(HttpResult r,
                           c_->request_file(method, target, path, headers_, progress));
    return json_answer(r.status, r.body);
  }
  Status download(const std::string& target, const std::string& out_path) override {
    DLSYS_ASSIGN_OR_RETURN(HttpResult r, c_->download(target, out_path, headers_));
    if (r.status != 200) return json_answer(r.status, r.body).status();
    return Status::OK();
  }
  std::string where() const override { return url_; }
  Result<std::unique_ptr<ApiClient>> another() const override { return connect_http(url_, token_); }

 private:
  std::string url_, token_;
  std::unique_ptr<HttpConnection> c_;
  std::map<std::string, std::string> headers_;
};

class LocalApiClient : public ApiClient {
 public:
  explicit LocalApiClient(Services& b) : b_(b) {}
  Result<json> call(const std::string& method, const std::string& target,
                    const json& body) override {
    Request req;
    DLSYS_RETURN_IF_ERROR(make(method, target, &req));
    if (!body.is_null()) req.body = body.dump();
    Response r = b_.router().dispatch(req);
    return json_answer(r.status, r.body);
  }
  Result<json> send_file(const std::string& method, const std::string& target,
                         const std::string& path, const Progress& progress) override {
    Request req;
    DLSYS_RETURN_IF_ERROR(make(method, target, &req));
    std::string tmp = b_.router().upload_temp_path();
    std::error_code ec;
    std::filesystem::copy_file(path, tmp, ec);
    if (ec) return Status::IOError("cannot read '{}' to upload it: {}", path, ec.message());
    req.body_file = tmp;
    if (progress) {
      uint64_t size = std::filesystem::file_size(tmp, ec);
      progress(size, size);
    }
    Response r = b_.router().dispatch(req);
    return json_answer(r.status, r.body);
  }
  Status download(const std::string& target, const std::string& out_path) override {
    Request req;
    DLSYS_RETURN_IF_ERROR(make("GET", target, &req));
    Response r = b_.router().dispatch(req);
    if (r.status != 200) return json_answer(r.status, r.body).status();
    if (r.file_path.empty()) return write_file_atomic(out_path, r.body);
    std::string tmp = out_path + ".part-" + random_hex(4);
    std::error_code ec;
    std::filesystem::copy_file(r.file_path, tmp, std::filesystem::copy_options::overwrite_existing,
                               ec);
    if (r.delete_file) ::unlink(r.file_path.c_str());
    if (ec) return Status::IOError("cannot write '{}': {}", out_path, ec.message());
    return commit_file(tmp, out_path);
  }
  std::string where() const override { return "local:" + b_.options().data_dir; }
  Result<std::unique_ptr<ApiClient>> another() const override {
    return std::unique_ptr<ApiClient>(new LocalApiClient(b_));
  }

 private:
  static Status make(const std::string& method, const std::string& target, Request* req) {
    req->method = method;
    req->request_id = "local";
    req->remote = "local";
    return parse_target(target, &req->path, &req->query);
  }
  Services& b_;
};

}  // namespace

Result<std::unique_ptr<ApiClient>> connect_http(const std::string& url, const std::string& token) {
  std::string host;
  int port = 0;
  DLSYS_RETURN_IF_ERROR(parse_http_url(url, &host, &port));
  DLSYS_ASSIGN_OR_RETURN(auto c, HttpConnection::open(host, port));
  return std::unique_ptr<ApiClient>(new HttpApiClient(url, std::move(c), token));
}

std::unique_ptr<ApiClient> connect_local(Services& services) {
  return std::make_unique<LocalApiClient>(services);
}

}  // namespace dlsys::api
