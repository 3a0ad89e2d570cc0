#include "dist/rendezvous.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <gloo/common/error.h>
#include <gloo/rendezvous/store.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <vector>

namespace dlsys::dist {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Frames: a request is op (1 byte: 'S' set, 'C' set once, 'G' get), then the key (u32 length,
// bytes); a set or set-once carries the value (u32 length, bytes), a get its wait in
// milliseconds (u32). The answer to a set is one byte 1; to a set-once, 1 and the value the key
// holds afterwards; to a get, 1 and the value (u32 length, bytes), or 0 when the wait ran out.
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
      if (t == 0) return false;
      const int ready = ::poll(&pf, 1, t);
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) return false;
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
    sockaddr_storage bound{};
    socklen_t len = sizeof(bound);
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len) == 0)
      s->port_ =
          ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
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

  int port() const { return port_; }

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
      const int ready = ::poll(&pf, 1, -1);
      if (ready < 0 && errno == EINTR && !stopping_) continue;  // a signal, handled elsewhere
      if (ready <= 0 || stopping_) break;
      const auto deadline = Clock::now() + frame_time;
      char op = 0;
      uint32_t klen = 0;
      if (!read_all(fd, &op, 1, deadline) || !read_u32(fd, &klen, deadline) || klen > kMaxKeyBytes)
        break;
      std::string key(klen, '\0');
      if (!read_all(fd, key.data(), klen, deadline)) break;
      if (op == 'S' || op == 'C') {
        uint32_t vlen = 0;
        if (!read_u32(fd, &vlen, deadline) || vlen > kMaxValueBytes) break;
        std::vector<char> v(vlen);
        if (!read_all(fd, v.data(), vlen, deadline)) break;
        std::vector<char> held;  // set-once: what the key holds afterwards
        {
          std::lock_guard<std::mutex> l(mu_);
          auto it = data_.find(key);
          if (op == 'S' || it == data_.end()) {
            data_[key] = v;
            changed_.notify_all();
          }
          if (op == 'C') held = data_[key];
        }
        char ok = 1;
        if (!write_all(fd, &ok, 1, deadline)) break;
        if (op == 'C' && (!write_u32(fd, static_cast<uint32_t>(held.size()), deadline) ||
                          !write_all(fd, held.data(), held.size(), deadline)))
          break;
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
  int port_ = 0;  // the port bound (the one asked for, or the kernel's choice for 0)
  int wake_[2] = {-1, -1};
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::map<std::string, std::vector<char>> data_;
  std::set<int> clients_;
  std::vector<std::thread> workers_;
};

}  // namespace

// What a Rendezvous asks of its store: whole keys, errors as Status (a missing key is nullopt).
class RendezvousBackend {
 public:
  virtual ~RendezvousBackend() = default;
  virtual Status set(const std::string& key, const std::string& value) = 0;
  virtual Result<std::string> set_once(const std::string& key, const std::string& value) = 0;
  virtual Result<std::optional<std::string>> get(const std::string& key, milliseconds wait) = 0;
};

namespace {

// A key as the thing it stands for: a rank's address ("3") or the key itself.
std::string who(const std::string& key) {
  bool digits = !key.empty() && key.find_first_not_of("0123456789") == std::string::npos;
  return digits ? "rank " + key : "key '" + key + "'";
}

// The client of TcpStoreServer: one connection, requests one at a time; with `server`, this
// process serves the store too (it outlives the connection: declared first).
class TcpBackend : public RendezvousBackend {
 public:
  TcpBackend(std::unique_ptr<TcpStoreServer> server, int fd, std::string where,
             milliseconds timeout)
      : server_(std::move(server)), fd_(fd), where_(std::move(where)), timeout_(timeout) {}
  ~TcpBackend() override { ::close(fd_); }

  Status set(const std::string& key, const std::string& value) override {
    std::lock_guard<std::mutex> l(mu_);
    const auto d = Clock::now() + timeout_;
    if (!write_value('S', key, value, d)) return gone("while " + who(key) + " was written");
    return Status::OK();
  }

  Result<std::string> set_once(const std::string& key, const std::string& value) override {
    std::lock_guard<std::mutex> l(mu_);
    const auto d = Clock::now() + timeout_;
    if (!write_value('C', key, value, d)) return gone("while " + who(key) + " was written");
    return read_value(key, d);
  }

  Result<std::optional<std::string>> get(const std::string& key, milliseconds wait) override {
    std::lock_guard<std::mutex> l(mu_);
    wait = std::clamp(wait, milliseconds(0), timeout_);
    // The server answers when the key appears or its wait runs out: allow the answer a moment.
    const auto d = Clock::now() + wait + milliseconds(5000);
    char found = 0;
    if (broken_ || !send_request('G', key, d) ||
        !write_u32(fd_, static_cast<uint32_t>(wait.count()), d) || !read_all(fd_, &found, 1, d))
      return gone("while waiting for " + who(key));
    if (!found) return std::optional<std::string>();
    DLSYS_ASSIGN_OR_RETURN(std::string v, read_value(key, d));
    return std::optional<std::string>(std::move(v));
  }

 private:
  bool send_request(char op, const std::string& key, Clock::time_point d) {
    return write_all(fd_, &op, 1, d) && write_u32(fd_, static_cast<uint32_t>(key.size()), d) &&
           write_all(fd_, key.data(), key.size(), d);
  }
  // A set or set-once frame and the server's acknowledgement.
  bool write_value(char op, const std::string& key, const std::string& value, Clock::time_point d) {
    char ok = 0;
    return !broken_ && send_request(op, key, d) &&
           write_u32(fd_, static_cast<uint32_t>(value.size()), d) &&
           write_all(fd_, value.data(), value.size(), d) && read_all(fd_, &ok, 1, d) && ok == 1;
  }
  Result<std::string> read_value(const std::string& key, Clock::time_point d) {
    uint32_t len = 0;
    std::string v;
    if (!read_u32(fd_, &len, d)) return gone("while " + who(key) + " was read");
    if (len > kMaxValueBytes || (v.resize(len), false) || !read_all(fd_, v.data(), len, d)) {
      broken_ = true;
      return Status::Unavailable("the rendezvous at {} sent a damaged answer for {}", where_,
                                 who(key));
    }
    return v;
  }
  // A frame that failed half-way leaves the connection out of step: it is not used again.
  Status gone(const std::string& when) {
    broken_ = true;
    return Status::Unavailable(
        "the rendezvous at {} stopped answering {} (the process that serves it gone? rank 0 of "
        "the first group, or the `dlsys train --nproc` command; ranks that must go on without "
        "rank 0 need a file:// rendezvous on storage every machine shares)",
        where_, when);
  }

  std::unique_ptr<TcpStoreServer> server_;
  int fd_;
  std::string where_;
  milliseconds timeout_;
  std::mutex mu_;
  bool broken_ = false;
};

// file://DIR: a file per key. A value is written to a temporary file and renamed (set) or
// hard-linked (set once: link(2) fails on an existing name, atomically, also over NFS) into
// place, so a reader sees a whole value or none. Reads poll: a shared filesystem has no event
// to wait on.
class FileBackend : public RendezvousBackend {
 public:
  explicit FileBackend(std::string dir) : dir_(std::move(dir)) {}

  Status set(const std::string& key, const std::string& value) override {
    DLSYS_ASSIGN_OR_RETURN(std::string tmp, write_temp(value));
    if (::rename(tmp.c_str(), path(key).c_str()) != 0) {
      const int e = errno;
      ::unlink(tmp.c_str());
      return Status::IOError("rendezvous folder {}: cannot write {}: {}", dir_, path(key),
                             std::strerror(e));
    }
    return Status::OK();
  }

  Result<std::string> set_once(const std::string& key, const std::string& value) override {
    DLSYS_ASSIGN_OR_RETURN(std::string tmp, write_temp(value));
    const int rc = ::link(tmp.c_str(), path(key).c_str());
    const int e = errno;
    ::unlink(tmp.c_str());
    if (rc == 0) return value;
    if (e != EEXIST)
      return Status::IOError("rendezvous folder {}: cannot create {}: {}", dir_, path(key),
                             std::strerror(e));
    DLSYS_ASSIGN_OR_RETURN(std::optional<std::string> held, read(key));
    if (!held) return Status::IOError("rendezvous folder {}: {} vanished", dir_, path(key));
    return *held;
  }

  Result<std::optional<std::string>> get(const std::string& key, milliseconds wait) override {
    const auto deadline = Clock::now() + std::max(wait, milliseconds(0));
    for (milliseconds pause(1);; pause = std::min(pause * 2, milliseconds(50))) {
      DLSYS_ASSIGN_OR_RETURN(std::optional<std::string> v, read(key));
      if (v || Clock::now() >= deadline) return v;
      std::this_thread::sleep_for(std::min<milliseconds>(
          pause,
          std::chrono::duration_cast<milliseconds>(deadline - Clock::now()) + milliseconds(1)));
    }
  }

 private:
  // The key as a file name: letters, digits, '-' and '_' kept (and '.' but as the first
  // character), every other byte %XX; temporary files start with '.'. A long name is cut and
  // ends with a hash of the whole key.
  std::string path(const std::string& key) const {
    std::string name;
    for (size_t i = 0; i < key.size(); ++i) {
      const unsigned char c = static_cast<unsigned char>(key[i]);
      if (std::isalnum(c) || c == '-' || c == '_' || (c == '.' && i > 0))
        name += static_cast<char>(c);
      else
        name += fmt::format("%{:02X}", c);
    }
    if (name.size() > 200) {
      // Past a file name's length: a prefix and the whole key's FNV-1a (the same everywhere).
      uint64_t h = 14695981039346656037ull;
      for (unsigned char c : key) h = (h ^ c) * 1099511628211ull;
      name = fmt::format("{}~{:016x}", name.substr(0, 160), h);
    }
    return dir_ + "/" + name;
  }

  // A file of its own: the names of ranks on other machines (the same pid in containers)
  // differ by the host and a random part, and a name taken anyway is tried again.
  Result<std::string> write_temp(const std::string& value) {
    static std::atomic<uint64_t> counter{0};
    static const std::string host = [] {
      char h[256] = {0};
      ::gethostname(h, sizeof(h) - 1);
      std::string s;
      for (const char* p = h; *p; ++p) s += std::isalnum(static_cast<unsigned char>(*p)) ? *p : '_';
      return s;
    }();
    thread_local std::mt19937_64 random{std::random_device{}()};
    std::string tmp;
    int fd = -1;
    for (int attempt = 0; fd < 0 && attempt < 8; ++attempt) {
      tmp = fmt::format("{}/.tmp-{}-{}-{}-{:016x}", dir_, host, ::getpid(), counter.fetch_add(1),
                        random());
      fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0)
      return Status::IOError("rendezvous folder {}: cannot create a file there: {}", dir_,
                             std::strerror(errno));
    const char* p = value.data();
    size_t left = value.size();
    while (left > 0) {
      ssize_t k = ::write(fd, p, left);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) {
        const int e = errno;
        ::close(fd);
        ::unlink(tmp.c_str());
        return Status::IOError("rendezvous folder {}: cannot write {}: {}", dir_, tmp,
                               std::strerror(e));
      }
      p += k;
      left -= static_cast<size_t>(k);
    }
    ::close(fd);
    return tmp;
  }

  // The key's value, or nullopt when its file does not exist (yet).
  Result<std::optional<std::string>> read(const std::string& key) const {
    const std::string p = path(key);
    int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) return std::optional<std::string>();
      return Status::IOError("rendezvous folder {}: cannot read {}: {}", dir_, p,
                             std::strerror(errno));
    }
    std::string v;
    char buf[4096];
    for (;;) {
      ssize_t k = ::read(fd, buf, sizeof(buf));
      if (k < 0 && errno == EINTR) continue;
      if (k < 0) {
        const int e = errno;
        ::close(fd);
        return Status::IOError("rendezvous folder {}: cannot read {}: {}", dir_, p,
                               std::strerror(e));
      }
      if (k == 0) break;
      v.append(buf, static_cast<size_t>(k));
      if (v.size() > kMaxValueBytes) {
        ::close(fd);
        return Status::IOError(
            "rendezvous folder {}: {} is larger than {} bytes: not a key of "
            "a dlsys rendezvous (use a fresh folder)",
            dir_, p, kMaxValueBytes);
      }
    }
    ::close(fd);
    return std::optional<std::string>(std::move(v));
  }

  std::string dir_;
};

// What the stores below throw on failure: Gloo's own exception type, so connectFullMesh passes
// it through to ProcessGroup::connect, which turns it into a Status. The server gone is told
// apart from a key that did not come in time (which is named by its rank).
struct StoreUnreachable : ::gloo::IoException {
  using ::gloo::IoException::IoException;
};
struct KeyTimeout : ::gloo::IoException {
  using ::gloo::IoException::IoException;
};

// One generation's keys as Gloo's store: keys under a prefix, every wait bounded by the
// timeout, and errors that name the rank.
class ScopedStore : public ::gloo::rendezvous::Store {
 public:
  ScopedStore(std::shared_ptr<Rendezvous> rendezvous, std::string prefix)
      : rendezvous_(std::move(rendezvous)), prefix_(std::move(prefix)) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    Status st = rendezvous_->set(prefix_ + key, std::string(data.begin(), data.end()));
    if (!st.ok()) throw StoreUnreachable(st.message());
  }
  std::vector<char> get(const std::string& key) override {
    std::string v = read(key, rendezvous_->timeout());
    return std::vector<char>(v.begin(), v.end());
  }
  void wait(const std::vector<std::string>& keys) override { wait(keys, rendezvous_->timeout()); }
  void wait(const std::vector<std::string>& keys, const milliseconds& timeout) override {
    const auto deadline = Clock::now() + std::min(timeout, rendezvous_->timeout());
    for (const std::string& k : keys)
      read(k, std::max(milliseconds(0),
                       std::chrono::duration_cast<milliseconds>(deadline - Clock::now())));
  }

 private:
  std::string read(const std::string& key, milliseconds wait) {
    auto v = rendezvous_->get(prefix_ + key, wait);
    if (!v.ok()) throw StoreUnreachable(v.status().message());
    if (!*v)
      throw KeyTimeout(who(key) + " did not reach the rendezvous " + rendezvous_->url() +
                       " within " + std::to_string(wait.count()) +
                       " ms: is it started, with the same --world-size?");
    return std::move(**v);
  }

  std::shared_ptr<Rendezvous> rendezvous_;
  std::string prefix_;
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

Rendezvous::Rendezvous(std::string url, milliseconds timeout,
                       std::shared_ptr<RendezvousBackend> backend, bool outlives_peers)
    : url_(std::move(url)),
      timeout_(timeout),
      backend_(std::move(backend)),
      outlives_peers_(outlives_peers) {}

Rendezvous::~Rendezvous() = default;

Result<std::shared_ptr<Rendezvous>> Rendezvous::open(const std::string& url, bool serve,
                                                     milliseconds timeout) {
  if (timeout.count() <= 0) return Status::Invalid("the rendezvous timeout must be positive");
  DLSYS_ASSIGN_OR_RETURN(RendezvousUrl u, parse_rendezvous_url(url));
  std::shared_ptr<RendezvousBackend> backend;
  if (u.kind == RendezvousUrl::Kind::kFile) {
    struct stat st {};
    if (::stat(u.dir.c_str(), &st) != 0 && ::mkdir(u.dir.c_str(), 0755) != 0 && errno != EEXIST)
      return Status::IOError("rendezvous folder {}: cannot create it: {}", u.dir,
                             std::strerror(errno));
    if (::stat(u.dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      return Status::IOError("rendezvous folder {}: not a folder", u.dir);
    backend = std::make_shared<FileBackend>(u.dir);
  } else {
    std::unique_ptr<TcpStoreServer> server;
    if (serve) {
      DLSYS_ASSIGN_OR_RETURN(server, TcpStoreServer::start(u.host, u.port));
    }
    DLSYS_ASSIGN_OR_RETURN(int fd, connect_until(u.host, u.port, Clock::now() + timeout));
    backend = std::make_shared<TcpBackend>(std::move(server), fd, url, timeout);
  }
  const bool outlives = u.kind == RendezvousUrl::Kind::kFile || serve;
  return std::shared_ptr<Rendezvous>(new Rendezvous(url, timeout, std::move(backend), outlives));
}

Result<std::shared_ptr<Rendezvous>> Rendezvous::serve_on_free_port(const std::string& host,
                                                                   milliseconds timeout) {
  if (timeout.count() <= 0) return Status::Invalid("the rendezvous timeout must be positive");
  DLSYS_ASSIGN_OR_RETURN(std::unique_ptr<TcpStoreServer> server, TcpStoreServer::start(host, 0));
  const bool v6 = host.find(':') != std::string::npos;
  const std::string url =
      fmt::format("tcp://{}{}{}:{}", v6 ? "[" : "", host, v6 ? "]" : "", server->port());
  DLSYS_ASSIGN_OR_RETURN(int fd, connect_until(host, server->port(), Clock::now() + timeout));
  auto backend = std::make_shared<TcpBackend>(std::move(server), fd, url, timeout);
  return std::shared_ptr<Rendezvous>(new Rendezvous(url, timeout, std::move(backend), true));
}

std::shared_ptr<gloo::rendezvous::Store> Rendezvous::generation(int generation) {
  // The store holds this rendezvous: a Rendezvous is only ever made by open, as a shared_ptr.
  return std::make_shared<ScopedStore>(shared_from_this(), "g" + std::to_string(generation) + "/");
}

namespace {
// A key (and value) within what the store takes, or Invalid naming the limit.
Status check_sizes(const std::string& key, size_t value_bytes = 0) {
  if (key.size() > kMaxKeyBytes || value_bytes > kMaxValueBytes)
    return Status::Invalid("rendezvous key '{}': keys hold at most {} bytes, values {}",
                           key.substr(0, 64), kMaxKeyBytes, kMaxValueBytes);
  return Status::OK();
}
}  // namespace

Status Rendezvous::set(const std::string& key, const std::string& value) {
  DLSYS_RETURN_IF_ERROR(check_sizes(key, value.size()));
  return backend_->set(key, value);
}

Result<std::string> Rendezvous::set_once(const std::string& key, const std::string& value) {
  DLSYS_RETURN_IF_ERROR(check_sizes(key, value.size()));
  return backend_->set_once(key, value);
}

Result<std::optional<std::string>> Rendezvous::get(const std::string& key, milliseconds wait) {
  DLSYS_RETURN_IF_ERROR(check_sizes(key));
  return backend_->get(key, std::min(wait, timeout_));
}

Result<std::shared_ptr<gloo::rendezvous::Store>> open_rendezvous(const std::string& url, int rank,
                                                                 int generation,
                                                                 milliseconds timeout) {
  DLSYS_ASSIGN_OR_RETURN(std::shared_ptr<Rendezvous> r, Rendezvous::open(url, rank == 0, timeout));
  return r->generation(generation);
}

}  // namespace dlsys::dist
