#include "dist/heartbeat.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <gloo/rendezvous/store.h>

#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>

namespace dlsys::dist {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr uint32_t kMagic = 0x62686c64;  // "dlhb"

// One datagram: a beat ('B'), a goodbye ('X'), or a verdict ('L': rank `about` silent for
// `silence_ms`, as `from` saw).
struct Message {
  uint32_t magic = kMagic;
  char kind = 'B';
  char pad[3] = {0, 0, 0};
  int32_t from = 0;
  int32_t about = -1;
  int32_t silence_ms = 0;
};

std::string address_text(const sockaddr_storage& a) {
  char buf[INET6_ADDRSTRLEN] = {0};
  const void* src =
      a.ss_family == AF_INET
          ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in*>(&a)->sin_addr)
          : static_cast<const void*>(&reinterpret_cast<const sockaddr_in6*>(&a)->sin6_addr);
  ::inet_ntop(a.ss_family, src, buf, sizeof(buf));
  const int port =
      ntohs(a.ss_family == AF_INET ? reinterpret_cast<const sockaddr_in*>(&a)->sin_port
                                   : reinterpret_cast<const sockaddr_in6*>(&a)->sin6_port);
  return std::string(buf) + " " + std::to_string(port);
}

bool same_address(const sockaddr_storage& a, const sockaddr_storage& b) {
  if (a.ss_family != b.ss_family) return false;
  if (a.ss_family == AF_INET) {
    auto x = reinterpret_cast<const sockaddr_in*>(&a), y = reinterpret_cast<const sockaddr_in*>(&b);
    return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
  }
  auto x = reinterpret_cast<const sockaddr_in6*>(&a), y = reinterpret_cast<const sockaddr_in6*>(&b);
  return x->sin6_port == y->sin6_port &&
         std::memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

// "IP PORT" as written by address_text.
bool parse_address(const std::string& text, sockaddr_storage* out, socklen_t* len) {
  const size_t sp = text.rfind(' ');
  if (sp == std::string::npos) return false;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (::getaddrinfo(text.substr(0, sp).c_str(), text.substr(sp + 1).c_str(), &hints, &res) != 0 ||
      !res)
    return false;
  std::memcpy(out, res->ai_addr, res->ai_addrlen);
  *len = res->ai_addrlen;
  ::freeaddrinfo(res);
  return true;
}

}  // namespace

Result<std::unique_ptr<Heartbeat>> Heartbeat::join(gloo::rendezvous::Store& store, int rank,
                                                   int world, const std::string& host,
                                                   HeartbeatOptions options, SilentFn on_silent,
                                                   std::atomic<bool>* suspect) {
  if (world < 2) return std::unique_ptr<Heartbeat>();
  const bool on = options.timeout.count() > 0;
  int fd = -1;
  std::string mine = "off";
  if (on) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    addrinfo* res = nullptr;
    if (::getaddrinfo(host.c_str(), "0", &hints, &res) != 0 || !res)
      return Status::Invalid("heartbeat: cannot resolve '{}', this rank's address", host);
    fd = ::socket(res->ai_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    const int err = fd < 0 || ::bind(fd, res->ai_addr, res->ai_addrlen) != 0 ? errno : 0;
    ::freeaddrinfo(res);
    if (err != 0) {
      if (fd >= 0) ::close(fd);
      return Status::Unavailable("heartbeat: cannot bind a UDP socket on {}: {}", host,
                                 std::strerror(err));
    }
    sockaddr_storage local{};
    socklen_t len = sizeof(local);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len);
    mine = address_text(local) + " " + std::to_string(options.timeout.count());
  }
  std::vector<Peer> peers(static_cast<size_t>(world));
  try {
    store.set("heartbeat/" + std::to_string(rank), std::vector<char>(mine.begin(), mine.end()));
    for (int r = 0; r < world; ++r) {
      if (r == rank) continue;
      std::vector<char> v = store.get("heartbeat/" + std::to_string(r));
      std::string theirs(v.begin(), v.end());
      // "IP PORT LIMIT_MS" or "off".
      const size_t sp = theirs.rfind(' ');
      const std::string limit =
          theirs == "off" || sp == std::string::npos ? std::string("0") : theirs.substr(sp + 1);
      if (limit != std::to_string(options.timeout.count())) {
        if (fd >= 0) ::close(fd);
        auto secs = [](const std::string& ms) {
          return ms == "0" ? std::string("0 (off)")
                           : fmt::format("{:g}", std::strtod(ms.c_str(), nullptr) / 1000);
        };
        return Status::Invalid(
            "rank {} runs with --heartbeat-s {} and this rank with {}: give every rank the same "
            "--heartbeat-s",
            r, secs(limit), secs(std::to_string(options.timeout.count())));
      }
      Peer& p = peers[static_cast<size_t>(r)];
      if (on && !parse_address(theirs.substr(0, sp), &p.addr, &p.len)) {
        ::close(fd);
        return Status::Invalid("heartbeat: rank {} wrote the address '{}'", r, theirs);
      }
    }
  } catch (const std::exception& e) {
    if (fd >= 0) ::close(fd);
    return Status::Unavailable("heartbeat: {}", e.what());
  }
  if (!on) return std::unique_ptr<Heartbeat>();
  const int wake = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake < 0) {
    ::close(fd);
    return Status::Unavailable("heartbeat: eventfd: {}", std::strerror(errno));
  }
  std::unique_ptr<Heartbeat> hb(
      new Heartbeat(fd, wake, rank, std::move(peers), options, std::move(on_silent), suspect));
  // Every peer heard from once, or the join fails here rather than as a silence later.
  const auto wait = std::max(2 * options.timeout, milliseconds(2000));
  std::vector<int> unheard;
  {
    std::unique_lock<std::mutex> lock(hb->mu_);
    hb->heard_changed_.wait_for(lock, wait, [&] {
      return std::all_of(hb->heard_.begin(), hb->heard_.end(), [](bool h) { return h; });
    });
    for (int r = 0; r < world; ++r)
      if (r != rank && !hb->heard_[static_cast<size_t>(r)]) unheard.push_back(r);
  }
  if (!unheard.empty())
    return Status::Unavailable(
        "heartbeat: no datagram of rank {} arrived within {:.1f} s of joining: is UDP blocked, "
        "or are source addresses rewritten (NAT), between the machines? --heartbeat-s 0 turns "
        "the heartbeat off",
        fmt::join(unheard, ", rank "), static_cast<double>(wait.count()) / 1000.0);
  return hb;
}

Heartbeat::Heartbeat(int fd, int wake, int rank, std::vector<Peer> peers, HeartbeatOptions options,
                     SilentFn on_silent, std::atomic<bool>* suspect)
    : fd_(fd),
      wake_(wake),
      rank_(rank),
      peers_(std::move(peers)),
      options_(options),
      on_silent_(std::move(on_silent)),
      suspect_(suspect),
      heard_(peers_.size(), false),
      last_heard_(peers_.size(), Clock::now()),
      gone_(peers_.size(), false) {
  heard_[static_cast<size_t>(rank_)] = true;
  thread_ = std::thread([this] { run(); });
}

Heartbeat::~Heartbeat() {
  const uint64_t one = 1;
  if (::write(wake_, &one, sizeof(one)) < 0) {
  }  // the eventfd cannot be full
  thread_.join();
  ::close(wake_);
  ::close(fd_);
}

void Heartbeat::send_to_all(char kind, int about, int silence_ms,
                            const std::vector<bool>& watched) {
  Message m;
  m.kind = kind;
  m.from = rank_;
  m.about = about;
  m.silence_ms = silence_ms;
  for (size_t r = 0; r < peers_.size(); ++r)
    if (watched[r])  // a full socket buffer or an unreachable peer: the next beat tries again
      ::sendto(fd_, &m, sizeof(m), MSG_DONTWAIT, reinterpret_cast<const sockaddr*>(&peers_[r].addr),
               peers_[r].len);
}

std::vector<int> Heartbeat::unheard_for(milliseconds silence) const {
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = Clock::now();
  std::vector<int> out;
  for (size_t r = 0; r < last_heard_.size(); ++r)
    if (static_cast<int>(r) != rank_ && !gone_[r] && now - last_heard_[r] > silence)
      out.push_back(static_cast<int>(r));
  return out;
}

void Heartbeat::run() {
  const size_t world = peers_.size();
  std::vector<bool> watched(world, true), heard(world, false);
  heard[static_cast<size_t>(rank_)] = true;
  watched[static_cast<size_t>(rank_)] = false;
  Clock::time_point now = Clock::now(), next_beat = now, last_loop = now;
  std::vector<Clock::time_point> last(world, now);
  // Once reported, the verdict goes out in place of every beat (a datagram may be lost).
  Message verdict;
  bool reported = false;
  auto report = [&](int r, milliseconds silence, int seen_by) {
    watched[static_cast<size_t>(r)] = false;
    if (reported) return;
    reported = true;
    verdict.about = r;
    verdict.silence_ms = static_cast<int32_t>(silence.count());
    on_silent_(r, silence, seen_by);
  };
  for (;;) {
    now = Clock::now();
    // This process was stopped itself (or starved): the silence it would see is its own.
    if (now - last_loop > options_.timeout / 2) {
      std::fill(last.begin(), last.end(), now);
      std::lock_guard<std::mutex> lock(mu_);
      std::fill(last_heard_.begin(), last_heard_.end(), now);
    }
    last_loop = now;
    if (now >= next_beat) {
      if (reported)
        send_to_all('L', verdict.about, verdict.silence_ms, watched);
      else
        send_to_all('B', -1, 0, watched);
      next_beat = now + options_.interval;
    }
    bool suspect = false;
    for (size_t r = 0; r < world; ++r) {
      if (!watched[r]) continue;
      suspect = suspect || now - last[r] > options_.timeout / 2;
      if (now - last[r] <= options_.timeout) continue;
      const auto silence = std::chrono::duration_cast<milliseconds>(now - last[r]);
      if (!reported)
        send_to_all('L', static_cast<int>(r), static_cast<int>(silence.count()), watched);
      report(static_cast<int>(r), silence, rank_);
    }
    if (suspect_) suspect_->store(suspect);
    // Sleep until the next beat is due or a datagram (or the stop) arrives.
    pollfd fds[2] = {{fd_, POLLIN, 0}, {wake_, POLLIN, 0}};
    const auto wait = std::chrono::duration_cast<milliseconds>(next_beat - Clock::now());
    ::poll(fds, 2, static_cast<int>(std::max<int64_t>(0, wait.count()) + 1));
    if (fds[1].revents & POLLIN) break;
    for (;;) {
      Message m;
      sockaddr_storage from{};
      socklen_t len = sizeof(from);
      const ssize_t n =
          ::recvfrom(fd_, &m, sizeof(m), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &len);
      if (n < 0) break;
      if (n != static_cast<ssize_t>(sizeof(m)) || m.magic != kMagic || m.from < 0 ||
          m.from >= static_cast<int32_t>(world) || m.from == rank_ ||
          !same_address(from, peers_[static_cast<size_t>(m.from)].addr))
        continue;  // not a peer's datagram
      const size_t f = static_cast<size_t>(m.from);
      last[f] = Clock::now();
      {
        std::lock_guard<std::mutex> lock(mu_);
        last_heard_[f] = last[f];
        if (m.kind == 'X') gone_[f] = true;
      }
      if (!heard[f]) {
        heard[f] = true;
        std::lock_guard<std::mutex> lock(mu_);
        heard_[f] = true;
        heard_changed_.notify_all();
      }
      if (m.kind == 'X') watched[f] = false;  // it ended normally
      if (m.kind == 'L' && m.about >= 0 && m.about < static_cast<int32_t>(world) &&
          m.about != rank_)
        report(m.about, milliseconds(m.silence_ms), m.from);
    }
  }
  // Goodbye: this rank ends normally (three times: a datagram may be lost).
  for (int i = 0; i < 3; ++i) send_to_all('X', -1, 0, watched);
  if (suspect_) suspect_->store(false);
}

}  // namespace dlsys::dist
