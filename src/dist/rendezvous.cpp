#include "dist/rendezvous.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gloo/common/error.h>
#include <gloo/rendezvous/file_store.h>
#include <gloo/rendezvous/store.h>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace dlsys::dist {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Frames: a request is op (1 byte: 'S' set, 'G' get), then the key (u32 length, bytes); a set
// carries the value (u32 length, bytes), a get its wait in milliseconds (u32). The answer to a
// set is one byte 1; to a get, 1 and the value (u32 length, bytes), or 0 when the wait ran out.
constexpr size_t kMaxKeyBytes = 4096;
constexpr size_t kMaxValueBytes = 16u << 20;

int ms_left(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<int64_t>(left, 1 << 30));
}

// Writes all of `n` bytes by `deadline`; false on an error, a closed peer or the deadline.
bool write_all(int fd, const void* data, size_t n, Clock::time_point deadline) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k > 0) {
      p += k;
      n -= static_cast<size_t>(k);
      continue;
    }
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd pf{fd, POLLOUT, 0};
      int t = ms_left(deadline);
      if (t == 0 || ::poll(&pf, 1, t) <= 0) return false;
      continue;
    }
    return false;
  }
  return true;
}

// Reads exactly `n` bytes by `deadline`; false on an error, end of stream or the deadline.
bool read_all(int fd, void* data, size_t n, Clock::time_point deadline) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    pollfd pf{fd, POLLIN, 0};
    int t = ms_left(deadline);
    if (t == 0) return false;
    int r = ::poll(&pf, 1, t);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    ssize_t k = ::recv(fd, p, n, MSG_DONTWAIT);
    if (k > 0) {
      p += k;
      n -= static_cast<size_t>(k);
      continue;
    }
    if (k < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    return false;
  }
  return true;
}

bool write_u32(int fd, uint32_t v, Clock::time_point d) {
  return write_all(fd, &v, 4, d);
}
bool read_u32(int fd, uint32_t* v, Clock::time_point d) {
  return read_all(fd, v, 4, d);
}

Result<addrinfo*> resolve(const std::string& host, int port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (passive) hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (rc != 0 || !res)
    return Status::Unavailable("cannot resolve the rendezvous host '{}': {}", host,
                               ::gai_strerror(rc));
  return res;
}

// Rank 0's side of tcp://: a map of keys, a thread that accepts, a thread per client.
class TcpStoreServer {
 public:
  static Result<std::unique_ptr<TcpStoreServer>> start(const std::string& host, int port) {
    DLSYS_ASSIGN_OR_RETURN(addrinfo * res, resolve(host, port, true));
    int fd = -1;
    std::string why;
    for (addrinfo* a = res; a && fd < 0; a = a->ai_next) {
      fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (fd < 0) continue;
      int one = 1;
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, 1024) != 0) {
        why = std::strerror(errno);
        ::close(fd);
        fd = -1;
      }
    }
    ::freeaddrinfo(res);
    if (fd < 0)
      return Status::Unavailable(
          "rank 0 cannot serve the rendezvous on {}:{}: {} (is another group using the port?)",
          host, port, why);
    auto s = std::unique_ptr<TcpStoreServer>(new TcpStoreServer(fd));
    if (::pipe2(s->wake_, O_CLOEXEC) != 0) return Status::IOError("pipe: {}", std::strerror(errno));
    s->acceptor_ = std::thread([p = s.get()] { p->accept_loop(); });
    return s;
  }

  ~TcpStoreServer() {
    stopping_ = true;
    if (wake_[1] >= 0) (void)!::write(wake_[1], "x", 1);
    if (acceptor_.joinable()) acceptor_.join();
    {
      std::lock_guard<std::mutex> l(mu_);
      for (int fd : clients_) ::shutdown(fd, SHUT_RDWR);
      changed_.notify_all();
    }
    for (auto& t : workers_) t.join();
    ::close(listen_fd_);
    for (int fd : wake_)
      if (fd >= 0) ::close(fd);
  }

 private:
  explicit TcpStoreServer(int fd) : listen_fd_(fd) {}

  void accept_loop() {
    while (!stopping_) {
      pollfd pf[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      if (::poll(pf, 2, -1) < 0 && errno != EINTR) return;
      if (stopping_ || (pf[1].revents & POLLIN)) return;
      if (!(pf[0].revents & POLLIN)) continue;
      int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      int one = 1;
      ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      std::lock_guard<std::mutex> l(mu_);
      clients_.insert(c);
      workers_.emplace_back([this, c] { serve(c); });
    }
  }

  // One client's requests until it closes, sends a malformed frame, or the server stops.
  void serve(int fd) {
    // A client may stay idle for the group's life; only a frame once begun has a deadline.
    const auto frame_time = milliseconds(30000);
    for (;;) {
      pollfd pf{fd, POLLIN, 0};
      if (::poll(&pf, 1, -1) <= 0 || stopping_) break;
      const auto deadline = Clock::now() + frame_time;
      char op = 0;
      uint32_t klen = 0;
      if (!read_all(fd, &op, 1, deadline) || !read_u32(fd, &klen, deadline) || klen > kMaxKeyBytes)
        break;
      std::string key(klen, '\0');
      if (!read_all(fd, key.data(), klen, deadline)) break;
      if (op == 'S') {
        uint32_t vlen = 0;
        if (!read_u32(fd, &vlen, deadline) || vlen > kMaxValueBytes) break;
        std::vector<char> v(vlen);
        if (!read_all(fd, v.data(), vlen, deadline)) break;
        {
          std::lock_guard<std::mutex> l(mu_);
          data_[key] = std::move(v);
          changed_.notify_all();
        }
        char ok = 1;
        if (!write_all(fd, &ok, 1, deadline)) break;
      } else if (op == 'G') {
        uint32_t wait_ms = 0;
        if (!read_u32(fd, &wait_ms, deadline)) break;
        std::vector<char> v;
        bool found = false;
        {
          std::unique_lock<std::mutex> l(mu_);
          found = changed_.wait_for(l, milliseconds(wait_ms), [&] {
            return stopping_ || data_.count(key) > 0;
          }) && data_.count(key) > 0;
          if (found) v = data_[key];
        }
        const auto reply_deadline = Clock::now() + frame_time;
        char f = found ? 1 : 0;
        if (!write_all(fd, &f, 1, reply_deadline)) break;
        if (found && (!write_u32(fd, static_cast<uint32_t>(v.size()), reply_deadline) ||
                      !write_all(fd, v.data(), v.size(), reply_deadline)))
          break;
      } else {
        break;
      }
    }
    std::lock_guard<std::mutex> l(mu_);
    clients_.erase(fd);
    ::close(fd);
  }

  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::map<std::string, std::vector<char>> data_;
  std::set<int> clients_;
  std::vector<std::thread> workers_;
};

// What the stores below throw on failure: Gloo's own exception type, so connectFullMesh passes
// it through to ProcessGroup::connect, which turns it into a Status. The server gone is told
// apart from a key that did not come in time (which ScopedStore names by its rank).
struct StoreUnreachable : ::gloo::IoException {
  using ::gloo::IoException::IoException;
};
struct KeyTimeout : ::gloo::IoException {
  using ::gloo::IoException::IoException;
};
[[noreturn]] void fail(const std::string& what) {
  throw StoreUnreachable(what);
}

std::string who(const std::string& key) {
  bool digits = !key.empty() && key.find_first_not_of("0123456789") == std::string::npos;
  return digits ? "rank " + key : "key '" + key + "'";
}

// A client of TcpStoreServer (one connection, requests one at a time).
class TcpStoreClient : public ::gloo::rendezvous::Store {
 public:
  TcpStoreClient(int fd, std::string where, milliseconds timeout)
      : fd_(fd), where_(std::move(where)), timeout_(timeout) {}
  ~TcpStoreClient() override { ::close(fd_); }

  void set(const std::string& key, const std::vector<char>& data) override {
    const auto d = Clock::now() + timeout_;
    char op = 'S', ok = 0;
    if (!write_all(fd_, &op, 1, d) || !write_u32(fd_, static_cast<uint32_t>(key.size()), d) ||
        !write_all(fd_, key.data(), key.size(), d) ||
        !write_u32(fd_, static_cast<uint32_t>(data.size()), d) ||
        !write_all(fd_, data.data(), data.size(), d) || !read_all(fd_, &ok, 1, d) || ok != 1)
      fail("the rendezvous at " + where_ + " stopped answering (rank 0 gone?) while " + who(key) +
           " was written");
  }

  std::vector<char> get(const std::string& key) override { return read(key, timeout_); }

  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }

  void wait(const std::vector<std::string>& keys, const milliseconds& timeout) override {
    const auto deadline = Clock::now() + std::min(timeout, timeout_);
    for (const std::string& k : keys)
      read(k, std::chrono::duration_cast<milliseconds>(deadline - Clock::now()));
  }

 private:
  std::vector<char> read(const std::string& key, milliseconds wait) {
    wait = std::max(wait, milliseconds(0));
    // The server answers when the key appears or its wait runs out: allow the answer a moment.
    const auto d = Clock::now() + wait + milliseconds(5000);
    char op = 'G', found = 0;
    uint32_t len = 0;
    if (!write_all(fd_, &op, 1, d) || !write_u32(fd_, static_cast<uint32_t>(key.size()), d) ||
        !write_all(fd_, key.data(), key.size(), d) ||
        !write_u32(fd_, static_cast<uint32_t>(wait.count()), d) || !read_all(fd_, &found, 1, d))
      fail("the rendezvous at " + where_ + " stopped answering (rank 0 gone?) while waiting for " +
           who(key));
    if (!found) throw KeyTimeout("no key '" + key + "' at " + where_);
    std::vector<char> v;
    if (!read_u32(fd_, &len, d) || len > kMaxValueBytes || (v.resize(len), false) ||
        !read_all(fd_, v.data(), len, d))
      fail("the rendezvous at " + where_ + " sent a damaged answer for " + who(key));
    return v;
  }

  int fd_;
  std::string where_;
  milliseconds timeout_;
};

// Keys under a prefix, every wait bounded by the timeout, and errors that name the rank.
class ScopedStore : public ::gloo::rendezvous::Store {
 public:
  ScopedStore(std::shared_ptr<::gloo::rendezvous::Store> inner, std::string prefix,
              milliseconds timeout, std::string where, std::unique_ptr<TcpStoreServer> server)
      : server_(std::move(server)),
        inner_(std::move(inner)),
        prefix_(std::move(prefix)),
        timeout_(timeout),
        where_(std::move(where)) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    inner_->set(prefix_ + key, data);
  }
  std::vector<char> get(const std::string& key) override {
    wait({key}, timeout_);
    return inner_->get(prefix_ + key);
  }
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys, const milliseconds& timeout) override {
    const milliseconds t = std::min(timeout, timeout_);
    for (const std::string& k : keys) {
      try {
        inner_->wait({prefix_ + k}, t);
      } catch (const StoreUnreachable&) {
        throw;
      } catch (const ::gloo::IoException&) {
        // Our client's KeyTimeout, or Gloo's FileStore giving up: the key's rank did not come.
        throw KeyTimeout(who(k) + " did not reach the rendezvous " + where_ + " within " +
                         std::to_string(t.count()) +
                         " ms: is it started, with the same --world-size?");
      }
    }
  }

 private:
  std::unique_ptr<TcpStoreServer> server_;  // rank 0 of tcp://: outlives the clients below
  std::shared_ptr<::gloo::rendezvous::Store> inner_;
  std::string prefix_;
  milliseconds timeout_;
  std::string where_;
};

Result<int> connect_until(const std::string& host, int port, Clock::time_point deadline) {
  std::string why = "no address";
  for (;;) {
    DLSYS_ASSIGN_OR_RETURN(addrinfo * res, resolve(host, port, false));
    for (addrinfo* a = res; a; a = a->ai_next) {
      int fd =
          ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
      if (fd < 0) continue;
      int rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
      if (rc != 0 && errno == EINPROGRESS) {
        pollfd pf{fd, POLLOUT, 0};
        int err = 0;
        socklen_t len = sizeof(err);
        if (::poll(&pf, 1, std::max(1, std::min(ms_left(deadline), 1000))) == 1 &&
            ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0)
          rc = 0;
        else
          errno = err ? err : ETIMEDOUT;
      }
      if (rc == 0) {
        ::freeaddrinfo(res);
        int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        return fd;
      }
      why = std::strerror(errno);
      ::close(fd);
    }
    ::freeaddrinfo(res);
    if (ms_left(deadline) == 0)
      return Status::DeadlineExceeded(
          "cannot reach the rendezvous tcp://{}:{} ({}): is rank 0 started there?", host, port,
          why);
    // Rank 0 may not listen yet: try again shortly (a connection has no event to wait on).
    std::this_thread::sleep_for(milliseconds(std::min(50, ms_left(deadline))));
  }
}

}  // namespace

Result<RendezvousUrl> parse_rendezvous_url(const std::string& url) {
  RendezvousUrl u;
  if (url.rfind("file://", 0) == 0) {
    u.kind = RendezvousUrl::Kind::kFile;
    u.dir = url.substr(7);
    if (u.dir.empty() || u.dir[0] != '/')
      return Status::Invalid("rendezvous '{}': file:// takes an absolute folder, as file:///tmp/x",
                             url);
    return u;
  }
  if (url.rfind("tcp://", 0) != 0)
    return Status::Invalid("rendezvous '{}': use tcp://HOST:PORT or file:///A/FOLDER", url);
  std::string rest = url.substr(6);
  size_t colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == rest.size())
    return Status::Invalid("rendezvous '{}': tcp:// needs HOST:PORT, as tcp://10.0.0.1:29500", url);
  u.host = rest.substr(0, colon);
  if (u.host.size() > 2 && u.host.front() == '[' && u.host.back() == ']')
    u.host = u.host.substr(1, u.host.size() - 2);
  const std::string port = rest.substr(colon + 1);
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoi(port) < 1 || std::stoi(port) > 65535)
    return Status::Invalid("rendezvous '{}': the port '{}' is not a number in 1..65535", url, port);
  u.port = std::stoi(port);
  return u;
}

Result<std::shared_ptr<gloo::rendezvous::Store>> open_rendezvous(const std::string& url, int rank,
                                                                 int generation,
                                                                 milliseconds timeout) {
  DLSYS_ASSIGN_OR_RETURN(RendezvousUrl u, parse_rendezvous_url(url));
  const std::string prefix = "g" + std::to_string(generation) + "/";
  if (u.kind == RendezvousUrl::Kind::kFile) {
    std::shared_ptr<::gloo::rendezvous::Store> inner;
    try {
      inner = std::make_shared<::gloo::rendezvous::FileStore>(u.dir);
    } catch (const std::exception& e) {
      return Status::IOError("rendezvous folder {}: {}", u.dir, e.what());
    }
    return std::shared_ptr<::gloo::rendezvous::Store>(
        std::make_shared<ScopedStore>(inner, prefix, timeout, url, nullptr));
  }
  std::unique_ptr<TcpStoreServer> server;
  if (rank == 0) {
    DLSYS_ASSIGN_OR_RETURN(server, TcpStoreServer::start(u.host, u.port));
  }
  DLSYS_ASSIGN_OR_RETURN(int fd, connect_until(u.host, u.port, Clock::now() + timeout));
  auto client = std::make_shared<TcpStoreClient>(fd, url, timeout);
  return std::shared_ptr<::gloo::rendezvous::Store>(
      std::make_shared<ScopedStore>(client, prefix, timeout, url, std::move(server)));
}

}  // namespace dlsys::dist
