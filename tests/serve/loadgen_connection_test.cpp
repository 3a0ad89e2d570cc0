// The load generator's own HTTP/1.1 client (serve/loadgen_connection.h) against a scripted peer on
// loopback: Content-Length and chunked answers over one kept-alive connection (the second
// request reuses it, bytes of two answers may arrive together), "Connection: close", the read
// deadline, and malformed answers refused with a message naming the problem.
#include "serve/loadgen_connection.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

namespace dlsys::serve {
namespace {

// Accepts one connection; for each request (headers + Content-Length body) it reads, sends the
// next scripted answer ("" sends nothing and waits for the client to give up).
class ScriptedPeer {
 public:
  explicit ScriptedPeer(std::vector<std::string> answers) : answers_(std::move(answers)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(listen_fd_, 1);
    socklen_t len = sizeof a;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~ScriptedPeer() {
    ::shutdown(listen_fd_, SHUT_RDWR);
    thread_.join();
    ::close(listen_fd_);
  }
  int port() const { return port_; }
  const std::vector<std::string>& requests() const { return requests_; }

 private:
  void serve() {
    int fd = ::accept(listen_fd_, nullptr, nullptr);
    if (fd < 0) return;
    std::string in;
    char b[4096];
    for (const std::string& answer : answers_) {
      size_t end;
      while ((end = in.find("\r\n\r\n")) == std::string::npos) {
        ssize_t n = ::recv(fd, b, sizeof b, 0);
        if (n <= 0) return (void)::close(fd);
        in.append(b, static_cast<size_t>(n));
      }
      size_t cl = in.find("Content-Length: ");
      size_t body = std::stoul(in.substr(cl + 16));
      while (in.size() < end + 4 + body) {
        ssize_t n = ::recv(fd, b, sizeof b, 0);
        if (n <= 0) return (void)::close(fd);
        in.append(b, static_cast<size_t>(n));
      }
      requests_.push_back(in.substr(0, end + 4 + body));
      in.erase(0, end + 4 + body);
      if (answer.empty()) {  // no answer: wait until the client closes
        while (::recv(fd, b, sizeof b, 0) > 0) {
        }
        break;
      }
      // In two pieces, so the client has to read more than once.
      size_t half = answer.size() / 2;
      ::send(fd, answer.data(), half, MSG_NOSIGNAL);
      ::send(fd, answer.data() + half, answer.size() - half, MSG_NOSIGNAL);
    }
    ::close(fd);
  }

  std::vector<std::string> answers_, requests_;
  int listen_fd_ = -1, port_ = 0;
  std::thread thread_;
};

TEST(LoadgenConnection, LengthAndChunkedAnswersOverOneConnection) {
  ScriptedPeer peer({"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nX-A: b\r\n\r\nhello",
                     "HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "4\r\nbusy\r\n6;ext=1\r\n, wait\r\n0\r\n\r\n",
                     "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"});
  auto c = LoadgenConnection::open("127.0.0.1", peer.port(), std::chrono::milliseconds(5000));
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  const std::string req =
      serialize_http_request("POST", "127.0.0.1", peer.port(), "/v2/models/m/infer",
                             {{"Content-Type", "application/octet-stream"}}, "body!");
  EXPECT_EQ(req.substr(0, 35), "POST /v2/models/m/infer HTTP/1.1\r\nH");
  EXPECT_NE(req.find("\r\nContent-Length: 5\r\n"), std::string::npos);
  EXPECT_EQ(req.substr(req.size() - 9), "\r\n\r\nbody!");
  auto s = (*c)->exchange(req);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ(*s, 200);
  EXPECT_EQ((*c)->body(), "hello");
  s = (*c)->exchange(req);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ(*s, 503);
  EXPECT_EQ((*c)->body(), "busy, wait");
  EXPECT_FALSE((*c)->closed());
  s = (*c)->exchange(req);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ((*c)->body(), "");
  EXPECT_TRUE((*c)->closed()) << "Connection: close ends it";
  EXPECT_FALSE((*c)->exchange(req).ok());
  EXPECT_EQ(peer.requests().size(), 3u);
}

TEST(LoadgenConnection, MalformedAnswersAndSilenceAreErrors) {
  struct Case {
    std::string answer, want;
  } cases[] = {
      {"HTTP/2 200\r\n\r\n", "not an HTTP/1.x status line"},
      {"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n", "Content-Length 'lots'"},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size 'zz'"},
      {"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n", "without Content-Length or chunked"},
      {"", "did not answer in time"},
  };
  for (const Case& k : cases) {
    ScriptedPeer peer({k.answer});
    auto c = LoadgenConnection::open("127.0.0.1", peer.port(), std::chrono::milliseconds(300));
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    auto s = (*c)->exchange(serialize_http_request("POST", "h", 1, "/", {}, "x"));
    ASSERT_FALSE(s.ok()) << k.want;
    EXPECT_NE(s.status().message().find(k.want), std::string::npos) << s.status().message();
    EXPECT_TRUE((*c)->closed());
  }
  auto none = LoadgenConnection::open("127.0.0.1", 1, std::chrono::milliseconds(300));
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("cannot connect to 127.0.0.1:1"), std::string::npos)
      << none.status().message();
}

}  // namespace
}  // namespace dlsys::serve
