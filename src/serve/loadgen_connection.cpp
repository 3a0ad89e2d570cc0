#include "serve/loadgen_connection.h"

#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>

namespace dlsys::serve {

namespace {

constexpr size_t kMaxHeader = 64 << 10;
constexpr size_t kMaxBody = size_t{1} << 30;

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

std::string serialize_http_request(const std::string& method, const std::string& host, int port,
                                   const std::string& target,
                                   const std::map<std::string, std::string>& headers,
                                   const std::string& body) {
  std::string out = fmt::format(
      "{} {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Length: {}\r\nConnection: keep-alive\r\n", method,
      target, host, port, body.size());
  for (const auto& [k, v] : headers) out += k + ": " + v + "\r\n";
  out += "\r\n";
  out += body;
  return out;
}

Result<std::unique_ptr<LoadgenConnection>> LoadgenConnection::open(
    const std::string& host, int port, std::chrono::milliseconds timeout) {
  const std::string where = fmt::format("{}:{}", host, port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res); rc != 0)
    return Status::Unavailable("cannot resolve {}: {}", host, ::gai_strerror(rc));
  std::string last = "no address";
  int fd = -1;
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  for (addrinfo* a = res; a && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    // The send deadline also bounds connect() on Linux.
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      last = errno == EINPROGRESS || errno == EAGAIN
                 ? fmt::format("no answer within {} ms", timeout.count())
                 : std::strerror(errno);
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(res);
  if (fd < 0) return Status::Unavailable("cannot connect to {}: {}", where, last);
  return std::unique_ptr<LoadgenConnection>(new LoadgenConnection(fd, where));
}

LoadgenConnection::~LoadgenConnection() {
  if (fd_ >= 0) ::close(fd_);
}

Status LoadgenConnection::fail_closed(Status st) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  buf_len_ = pos_ = 0;
  return st;
}

Status LoadgenConnection::fill() {
  if (buf_.size() < (64 << 10)) buf_.resize(64 << 10);
  if (pos_ > 0 && buf_len_ == buf_.size()) {  // make room: drop what was consumed
    std::memmove(buf_.data(), buf_.data() + pos_, buf_len_ - pos_);
    buf_len_ -= pos_;
    pos_ = 0;
  }
  if (buf_len_ == buf_.size()) buf_.resize(buf_.size() * 2);
  for (;;) {
    ssize_t n = ::recv(fd_, buf_.data() + buf_len_, buf_.size() - buf_len_, 0);
    if (n > 0) {
      buf_len_ += static_cast<size_t>(n);
      return Status::OK();
    }
    if (n == 0)
      return fail_closed(Status::Unavailable("{} closed the connection mid-answer", where_));
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      return fail_closed(Status::DeadlineExceeded("{} did not answer in time", where_));
    return fail_closed(Status::Unavailable("reading from {}: {}", where_, std::strerror(errno)));
  }
}

Result<int> LoadgenConnection::exchange(std::string_view request) {
  DLSYS_RETURN_IF_ERROR(send_request(request));
  return read_answer();
}

Status LoadgenConnection::send_request(std::string_view request) {
  if (fd_ < 0) return Status::Unavailable("the connection to {} is closed", where_);
  for (size_t sent = 0; sent < request.size();) {
    ssize_t n = ::send(fd_, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return fail_closed(Status::DeadlineExceeded("{} did not take the request in time", where_));
    return fail_closed(Status::Unavailable("sending to {}: {}", where_,
                                           n < 0 ? std::strerror(errno) : "nothing sent"));
  }
  return Status::OK();
}

Result<int> LoadgenConnection::read_answer() {
  if (fd_ < 0) return Status::Unavailable("the connection to {} is closed", where_);
  // The header block.
  size_t end;
  for (;;) {
    std::string_view have(buf_.data() + pos_, buf_len_ - pos_);
    end = have.find("\r\n\r\n");
    if (end != std::string_view::npos) break;
    if (have.size() > kMaxHeader)
      return fail_closed(
          Status::Invalid("{}: answer headers over {} KiB", where_, kMaxHeader >> 10));
    DLSYS_RETURN_IF_ERROR(fill());
  }
  std::string_view head(buf_.data() + pos_, end);
  pos_ += end + 4;
  size_t line_end = head.find("\r\n");
  std::string_view status_line = head.substr(0, line_end);
  if (status_line.size() < 12 || status_line.substr(0, 7) != "HTTP/1." || status_line[8] != ' ' ||
      !std::isdigit(static_cast<unsigned char>(status_line[9])))
    return fail_closed(Status::Invalid("{}: not an HTTP/1.x status line: '{}'", where_,
                                       std::string(status_line.substr(0, 80))));
  const int status = std::atoi(std::string(status_line.substr(9, 3)).c_str());
  bool chunked = false, close_after = status_line.substr(0, 8) == "HTTP/1.0";
  size_t length = 0;
  bool has_length = false;
  for (size_t at = line_end; at != std::string_view::npos && at < head.size();) {
    size_t next = head.find("\r\n", at + 2);
    std::string_view line = head.substr(
        at + 2, next == std::string_view::npos ? std::string_view::npos : next - at - 2);
    at = next;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view name = trim(line.substr(0, colon)), value = trim(line.substr(colon + 1));
    if (iequals(name, "content-length")) {
      char* e = nullptr;
      std::string v(value);
      unsigned long long n = std::strtoull(v.c_str(), &e, 10);
      if (v.empty() || *e != '\0' || n > kMaxBody)
        return fail_closed(
            Status::Invalid("{}: Content-Length '{}' is not a size up to 1 GiB", where_, v));
      length = static_cast<size_t>(n);
      has_length = true;
    } else if (iequals(name, "transfer-encoding")) {
      chunked = value.find("chunked") != std::string_view::npos;
    } else if (iequals(name, "connection")) {
      close_after = iequals(value, "close");
    }
  }
  // The body.
  body_.clear();
  auto need = [&](size_t n) -> Status {
    while (buf_len_ - pos_ < n) DLSYS_RETURN_IF_ERROR(fill());
    return Status::OK();
  };
  if (chunked) {
    for (;;) {
      size_t eol;
      while ((eol = std::string_view(buf_.data() + pos_, buf_len_ - pos_).find("\r\n")) ==
             std::string_view::npos)
        DLSYS_RETURN_IF_ERROR(fill());
      std::string size_text(buf_.data() + pos_, eol);
      char* e = nullptr;
      unsigned long long n = std::strtoull(size_text.c_str(), &e, 16);
      if (size_text.empty() || (*e != '\0' && *e != ';') || body_.size() + n > kMaxBody)
        return fail_closed(
            Status::Invalid("{}: bad chunk size '{}'", where_, size_text.substr(0, 40)));
      pos_ += eol + 2;
      if (n == 0) {
        // Trailers (none expected), then the final empty line.
        size_t t;
        while ((t = std::string_view(buf_.data() + pos_, buf_len_ - pos_).find("\r\n")) ==
               std::string_view::npos)
          DLSYS_RETURN_IF_ERROR(fill());
        pos_ += t + 2;
        break;
      }
      DLSYS_RETURN_IF_ERROR(need(static_cast<size_t>(n) + 2));
      body_.append(buf_.data() + pos_, static_cast<size_t>(n));
      pos_ += static_cast<size_t>(n) + 2;
    }
  } else if (has_length) {
    DLSYS_RETURN_IF_ERROR(need(length));
    body_.assign(buf_.data() + pos_, length);
    pos_ += length;
  } else if (status != 204 && status != 304 && status >= 200) {
    return fail_closed(Status::Unsupported(
        "{}: an answer without Content-Length or chunked encoding (status {})", where_, status));
  }
  if (pos_ == buf_len_) pos_ = buf_len_ = 0;
  if (close_after) {
    ::close(fd_);
    fd_ = -1;
    pos_ = buf_len_ = 0;
  }
  return status;
}

}  // namespace dlsys::serve
