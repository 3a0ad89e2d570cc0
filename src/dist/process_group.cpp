#include "dist/process_group.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gloo/common/error.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/unbound_buffer.h>
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>

#include "dist/heartbeat.h"
#include "dist/rendezvous.h"

namespace dlsys::dist {

namespace {

using std::chrono::milliseconds;

// The first IPv4 address of the network interface `iface` (then IPv6).
Result<std::string> interface_address(const std::string& iface) {
  ifaddrs* all = nullptr;
  if (::getifaddrs(&all) != 0)
    return Status::Unavailable("cannot list the network interfaces: {}", std::strerror(errno));
  std::string v4, v6;
  for (ifaddrs* a = all; a; a = a->ifa_next) {
    if (!a->ifa_addr || iface != a->ifa_name) continue;
    char buf[INET6_ADDRSTRLEN] = {0};
    if (a->ifa_addr->sa_family == AF_INET && v4.empty() &&
        ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, buf,
                    sizeof(buf)))
      v4 = buf;
    if (a->ifa_addr->sa_family == AF_INET6 && v6.empty() &&
        ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(a->ifa_addr)->sin6_addr, buf,
                    sizeof(buf)))
      v6 = buf;
  }
  ::freeifaddrs(all);
  if (v4.empty() && v6.empty())
    return Status::Invalid("the network interface '{}' has no address", iface);
  return v4.empty() ? v6 : v4;
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// The local address the kernel would use to reach host:port (a UDP "connection" sends nothing).
Result<std::string> route_address(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0 || !res)
    return Status::Unavailable("cannot resolve the rendezvous host '{}'", host);
  std::string out;
  for (addrinfo* a = res; a && out.empty(); a = a->ai_next) {
    int fd = ::socket(a->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    sockaddr_storage local{};
    socklen_t len = sizeof(local);
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
      char buf[INET6_ADDRSTRLEN] = {0};
      const void* src =
          local.ss_family == AF_INET
              ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&local)->sin_addr)
              : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr);
      if (::inet_ntop(local.ss_family, src, buf, sizeof(buf))) out = buf;
    }
    ::close(fd);
  }
  ::freeaddrinfo(res);
  if (out.empty())
    return Status::Unavailable("no route to the rendezvous host '{}': give --dist-host", host);
  return out;
}

int pow2_floor(int w) {
  int p = 1;
  while (p * 2 <= w) p *= 2;
  return p;
}

}  // namespace

struct ProcessGroup::Impl {
  std::shared_ptr<gloo::rendezvous::Store> store;
  std::shared_ptr<gloo::transport::Device> device;
  std::shared_ptr<gloo::rendezvous::Context> context;
  milliseconds timeout;
  std::vector<float> scratch;
  // Whether the group still stands, shared with the groups split from it: a rank the heartbeat
  // reports silent ends them all, and the waits in progress on any of them are aborted.
  struct Liveness {
    std::mutex mu;
    std::condition_variable changed;  // lost was set
    Status lost;                      // why the group was given up, once a rank went silent
    Status failed;                    // the first collective that failed, for failure()
    // How long a collective that saw a peer's connection close waits for the heartbeat's
    // verdict (0: no heartbeat): a rank that gives up on a silent one exits, and its peers
    // should name the silent rank rather than it.
    milliseconds verdict_grace{0};
    // Set by the heartbeat while some peer has been silent for half its limit: only then is a
    // closed connection worth waiting for a verdict on (a killed rank is reported at once).
    std::atomic<bool> suspect{false};
    // The buffers collectives are waiting on, for the heartbeat to abort.
    std::vector<std::pair<gloo::transport::UnboundBuffer*, bool>> waiting;  // (buffer, is recv)
  };
  std::shared_ptr<Liveness> live = std::make_shared<Liveness>();
  std::unique_ptr<Heartbeat> heartbeat;  // the group first connected only; last: stopped first
  milliseconds heartbeat_limit{0};

  // Heartbeat's report: the group is given up, and the collectives waiting return.
  static void silent(Liveness& l, int rank, milliseconds silence, int seen_by, int me) {
    std::lock_guard<std::mutex> lock(l.mu);
    const std::string saw =
        seen_by == me ? std::string() : fmt::format(" (as rank {} saw)", seen_by);
    l.lost = Status::Unavailable(
        "rank {} sent no heartbeat for {:.1f} s{}: it is stopped or hangs, or its machine "
        "cannot be reached (--heartbeat-s sets how long a rank may be silent)",
        rank, static_cast<double>(silence.count()) / 1000.0, saw);
    for (auto [b, is_recv] : l.waiting) is_recv ? b->abortWaitRecv() : b->abortWaitSend();
    l.changed.notify_all();
  }

  // One message exchange of a collective: sends and receives posted, then waited for, each
  // with the deadline; a Gloo failure becomes an error naming the peer and the collective.
  Status wait(gloo::transport::UnboundBuffer* send, int to, gloo::transport::UnboundBuffer* recv,
              int from, const char* what) {
    Liveness& l = *live;
    {
      std::lock_guard<std::mutex> lock(l.mu);
      if (!l.lost.ok()) return Status::Unavailable("{}: {}", what, l.lost.message());
      if (send) l.waiting.emplace_back(send, false);
      if (recv) l.waiting.emplace_back(recv, true);
    }
    Status s = wait_for(send, to, recv, from, what);
    {
      std::lock_guard<std::mutex> lock(l.mu);
      l.waiting.erase(
          std::remove_if(l.waiting.begin(), l.waiting.end(),
                         [&](const auto& w) { return w.first == send || w.first == recv; }),
          l.waiting.end());
    }
    return settle(std::move(s), what);
  }

  // A collective's failure, told in terms of the heartbeat when it has a verdict: a peer gone
  // may have left because it saw another rank go silent, and then that rank is named.
  Status settle(Status s, const char* what) {
    if (s.ok()) return s;
    Liveness& l = *live;
    std::unique_lock<std::mutex> lock(l.mu);
    if (l.lost.ok() && l.verdict_grace.count() > 0 && l.suspect.load() &&
        s.message().find("is gone") != std::string::npos)
      l.changed.wait_for(lock, l.verdict_grace, [&] { return !l.lost.ok(); });
    if (!l.lost.ok()) s = Status::Unavailable("{}: {}", what, l.lost.message());
    if (l.failed.ok()) l.failed = s;
    return s;
  }

  Status wait_for(gloo::transport::UnboundBuffer* send, int to,
                  gloo::transport::UnboundBuffer* recv, int from, const char* what) {
    try {
      if (recv && !recv->waitRecv(timeout))
        return Status::Unavailable("{}: the receive from rank {} was aborted", what, from);
      if (send && !send->waitSend(timeout))
        return Status::Unavailable("{}: the send to rank {} was aborted", what, to);
    } catch (const std::exception& e) {
      const int peer = recv ? from : to;
      const std::string why = e.what();
      if (why.find("closed") != std::string::npos || why.find("reset") != std::string::npos)
        return Status::Unavailable(
            "{}: rank {} is gone (its connection closed: it died or "
            "exited): {}",
            what, peer, why);
      return Status::Unavailable(
          "{}: rank {} did not answer within {} ms (it hangs, or its collectives differ from "
          "this rank's): {}",
          what, peer, timeout.count(), why);
    }
    return Status::OK();
  }
};

ProcessGroup::ProcessGroup(int rank, int world, std::string host, std::unique_ptr<Impl> impl)
    : rank_(rank), world_(world), host_(std::move(host)), impl_(std::move(impl)) {}

ProcessGroup::~ProcessGroup() = default;

Result<std::unique_ptr<ProcessGroup>> ProcessGroup::connect(const GroupOptions& o) {
  if (o.world < 1) return Status::Invalid("the world size is {}: it must be at least 1", o.world);
  if (o.rank < 0 || o.rank >= o.world)
    return Status::Invalid("rank {} is not in 0..{} (the world size is {})", o.rank, o.world - 1,
                           o.world);
  if (o.timeout.count() <= 0) return Status::Invalid("the timeout must be positive");
  if (o.heartbeat.count() != 0 &&
      (o.heartbeat < milliseconds(500) || o.heartbeat > std::chrono::hours(1)))
    return Status::Invalid("the heartbeat's limit is {} ms: use 0 (off) or 500 ms to an hour",
                           o.heartbeat.count());
  DLSYS_ASSIGN_OR_RETURN(RendezvousUrl url, parse_rendezvous_url(o.rendezvous));
  // Gloo writes to its sockets with writev: a write to a peer that is gone raises SIGPIPE, which
  // would kill this process instead of failing the collective (and an elastic survivor with it).
  // Ignored for the process, unless the program installed a handler of its own.
  struct sigaction pipe {};
  if (::sigaction(SIGPIPE, nullptr, &pipe) == 0 && pipe.sa_handler == SIG_DFL)
    ::signal(SIGPIPE, SIG_IGN);
  auto impl = std::make_unique<Impl>();
  impl->timeout = o.timeout;
  gloo::transport::tcp::attr attr;
  std::string host = o.host;
  if (!o.iface.empty() && host.empty()) {
    attr.iface = o.iface;
  } else {
    if (host.empty()) {
      if (url.kind == RendezvousUrl::Kind::kTcp && !is_loopback(url.host)) {
        DLSYS_ASSIGN_OR_RETURN(host, route_address(url.host, url.port));
      } else {
        host = "127.0.0.1";
      }
    }
    attr.hostname = host;
  }
  try {
    impl->device = gloo::transport::tcp::CreateDevice(attr);
  } catch (const std::exception& e) {
    return Status::Unavailable("rank {}: cannot listen for peers on {}: {}", o.rank,
                               host.empty() ? "interface " + o.iface : host, e.what());
  }
  if (host.empty()) host = impl->device->str();
  if (o.store) {
    impl->store = o.store->generation(o.generation);
  } else {
    DLSYS_ASSIGN_OR_RETURN(impl->store,
                           open_rendezvous(o.rendezvous, o.rank, o.generation, o.timeout));
  }
  try {
    impl->context = std::make_shared<gloo::rendezvous::Context>(o.rank, o.world);
    impl->context->setTimeout(o.timeout);
    impl->context->connectFullMesh(*impl->store, impl->device);
  } catch (const std::exception& e) {
    return Status::Unavailable("rank {} of {} could not join the group at {}: {}", o.rank, o.world,
                               o.rendezvous, e.what());
  }
  if (o.world > 1) {
    HeartbeatOptions h;
    h.timeout = o.heartbeat;
    h.interval = std::clamp(o.heartbeat / 5, milliseconds(50), milliseconds(1000));
    std::string beat_host = host;
    if (!o.iface.empty() && o.host.empty()) {
      DLSYS_ASSIGN_OR_RETURN(beat_host, interface_address(o.iface));
    }
    const int me = o.rank;
    auto hb = Heartbeat::join(
        *impl->store, o.rank, o.world, beat_host, h,
        [live = impl->live, me](int rank, milliseconds silence, int seen_by) {
          Impl::silent(*live, rank, silence, seen_by, me);
        },
        &impl->live->suspect);
    if (!hb.ok())
      return Status(hb.status().code(),
                    fmt::format("rank {} of {}: {}", o.rank, o.world, hb.status().message()));
    impl->heartbeat = std::move(hb).value();
    impl->heartbeat_limit = o.heartbeat;
    // The verdict is sent before the rank that saw the silence aborts: it arrives in well under
    // this on any network, unless this rank is starved.
    if (impl->heartbeat) impl->live->verdict_grace = milliseconds(500);
  }
  return std::unique_ptr<ProcessGroup>(
      new ProcessGroup(o.rank, o.world, std::move(host), std::move(impl)));
}

Status ProcessGroup::lost() const {
  std::lock_guard<std::mutex> lock(impl_->live->mu);
  return impl_->live->lost;
}

Status ProcessGroup::failure() const {
  std::lock_guard<std::mutex> lock(impl_->live->mu);
  return !impl_->live->lost.ok() ? impl_->live->lost : impl_->live->failed;
}

std::vector<int> ProcessGroup::unheard_ranks() const {
  if (!impl_->heartbeat) return {};
  return impl_->heartbeat->unheard_for(impl_->heartbeat_limit / 2);
}

Result<std::unique_ptr<ProcessGroup>> ProcessGroup::split(const std::string& name) {
  auto impl = std::make_unique<Impl>();
  impl->store = impl_->store;
  impl->device = impl_->device;
  impl->timeout = impl_->timeout;
  impl->live = impl_->live;
  if (world_ > 1) {
    try {
      gloo::rendezvous::PrefixStore keys("split/" + name, *impl->store);
      impl->context = std::make_shared<gloo::rendezvous::Context>(rank_, world_);
      impl->context->setTimeout(impl->timeout);
      impl->context->connectFullMesh(keys, impl->device);
    } catch (const std::exception& e) {
      return Status::Unavailable("rank {} of {} could not join the group's channel '{}': {}", rank_,
                                 world_, name, e.what());
    }
  }
  return std::unique_ptr<ProcessGroup>(new ProcessGroup(rank_, world_, host_, std::move(impl)));
}

Status ProcessGroup::all_reduce_sum(float* data, size_t n) {
  if (world_ == 1 || n == 0) return Status::OK();
  Impl& m = *impl_;
  auto& ctx = *m.context;
  // Three message slots: the fold and the halving, the unfold, the doubling.
  const uint64_t slot = ctx.nextSlot(3);
  const size_t bytes = n * sizeof(float);
  if (m.scratch.size() < n) m.scratch.resize(n);
  float* tmp = m.scratch.data();
  // The peer of the message being posted: a post to a dead rank throws before any wait.
  int peer = -1;
  try {
    auto out = ctx.createUnboundBuffer(data, bytes);
    auto in = ctx.createUnboundBuffer(tmp, bytes);
    const int P = pow2_floor(world_);
    const int r = rank_;
    // Fold: ranks past P hand their values to rank r - P, which adds them; they wait for the
    // answer at the end.
    if (r >= P) {
      peer = r - P;
      out->send(r - P, slot, 0, bytes);
      DLSYS_RETURN_IF_ERROR(m.wait(out.get(), r - P, nullptr, -1, "all-reduce (fold)"));
      in->recv(r - P, slot + 1, 0, bytes);
      DLSYS_RETURN_IF_ERROR(m.wait(nullptr, -1, in.get(), r - P, "all-reduce (unfold)"));
      std::memcpy(data, tmp, bytes);
      return Status::OK();
    }
    if (r + P < world_) {
      peer = r + P;
      in->recv(r + P, slot, 0, bytes);
      DLSYS_RETURN_IF_ERROR(m.wait(nullptr, -1, in.get(), r + P, "all-reduce (fold)"));
      for (size_t i = 0; i < n; ++i) data[i] = data[i] + tmp[i];
    }
    // Reduce-scatter by recursive halving, nearest partners first: after distance d, each
    // element this rank keeps is the sum over the 2d ranks of its aligned block, built as a
    // balanced tree.
    struct Span {
      size_t lo, hi;
    };
    std::vector<Span> kept;  // the span held before each halving, for the way back
    size_t lo = 0, hi = n;
    for (int d = 1; d < P; d *= 2) {
      const int partner = r ^ d;
      peer = partner;
      const size_t mid = lo + (hi - lo) / 2;
      const bool low = (r & d) == 0;
      const size_t keep_lo = low ? lo : mid, keep_hi = low ? mid : hi;
      const size_t give_lo = low ? mid : lo, give_hi = low ? hi : mid;
      kept.push_back({lo, hi});
      if (give_hi > give_lo)
        out->send(partner, slot, give_lo * sizeof(float), (give_hi - give_lo) * sizeof(float));
      if (keep_hi > keep_lo)
        in->recv(partner, slot, keep_lo * sizeof(float), (keep_hi - keep_lo) * sizeof(float));
      DLSYS_RETURN_IF_ERROR(m.wait(give_hi > give_lo ? out.get() : nullptr, partner,
                                   keep_hi > keep_lo ? in.get() : nullptr, partner,
                                   "all-reduce (reduce-scatter)"));
      // Lower rank's partial sum first (a + b == b + a in IEEE arithmetic anyway).
      for (size_t i = keep_lo; i < keep_hi; ++i)
        data[i] = low ? data[i] + tmp[i] : tmp[i] + data[i];
      lo = keep_lo;
      hi = keep_hi;
    }
    // All-gather by recursive doubling, farthest partners first: each step doubles the span.
    for (int d = P / 2; d >= 1; d /= 2) {
      const int partner = r ^ d;
      peer = partner;
      const Span parent = kept.back();
      kept.pop_back();
      const size_t other_lo = lo == parent.lo ? hi : parent.lo;
      const size_t other_hi = lo == parent.lo ? parent.hi : lo;
      if (hi > lo) out->send(partner, slot + 2, lo * sizeof(float), (hi - lo) * sizeof(float));
      // Straight into place: the partner's finished span.
      auto into = ctx.createUnboundBuffer(data, bytes);
      if (other_hi > other_lo)
        into->recv(partner, slot + 2, other_lo * sizeof(float),
                   (other_hi - other_lo) * sizeof(float));
      DLSYS_RETURN_IF_ERROR(m.wait(hi > lo ? out.get() : nullptr, partner,
                                   other_hi > other_lo ? into.get() : nullptr, partner,
                                   "all-reduce (all-gather)"));
      lo = parent.lo;
      hi = parent.hi;
    }
    if (r + P < world_) {
      peer = r + P;
      out->send(r + P, slot + 1, 0, bytes);
      DLSYS_RETURN_IF_ERROR(m.wait(out.get(), r + P, nullptr, -1, "all-reduce (unfold)"));
    }
  } catch (const std::exception& e) {
    return m.settle(
        Status::Unavailable("all-reduce: rank {} is gone or did not answer: {}", peer, e.what()),
        "all-reduce");
  }
  return Status::OK();
}

Status ProcessGroup::broadcast(void* data, size_t bytes, int root) {
  if (root < 0 || root >= world_)
    return Status::Invalid("broadcast from rank {}: not in 0..{}", root, world_ - 1);
  if (world_ == 1 || bytes == 0) return Status::OK();
  Impl& m = *impl_;
  const uint64_t slot = m.context->nextSlot();
  int peer = root;
  try {
    auto buf = m.context->createUnboundBuffer(data, bytes);
    if (rank_ == root) {
      for (int r = 0; r < world_; ++r) {
        if (r == root) continue;
        peer = r;
        buf->send(r, slot);
        DLSYS_RETURN_IF_ERROR(m.wait(buf.get(), r, nullptr, -1, "broadcast"));
      }
    } else {
      buf->recv(root, slot);
      DLSYS_RETURN_IF_ERROR(m.wait(nullptr, -1, buf.get(), root, "broadcast"));
    }
  } catch (const std::exception& e) {
    return m.settle(
        Status::Unavailable("broadcast: rank {} is gone or did not answer: {}", peer, e.what()),
        "broadcast");
  }
  return Status::OK();
}

Status ProcessGroup::all_gather(const void* mine, size_t bytes, void* out) {
  char* o = static_cast<char*>(out);
  std::memmove(o + static_cast<size_t>(rank_) * bytes, mine, bytes);
  if (world_ == 1 || bytes == 0) return Status::OK();
  Impl& m = *impl_;
  const uint64_t slot = m.context->nextSlot();
  const size_t total = bytes * static_cast<size_t>(world_);
  const int right = (rank_ + 1) % world_, left = (rank_ + world_ - 1) % world_;
  try {
    // Two buffers over the same memory: the block sent and the block received differ.
    auto send = m.context->createUnboundBuffer(out, total);
    auto recv = m.context->createUnboundBuffer(out, total);
    for (int s = 0; s < world_ - 1; ++s) {
      const size_t give = static_cast<size_t>((rank_ - s + world_) % world_);
      const size_t take = static_cast<size_t>((rank_ - s - 1 + 2 * world_) % world_);
      send->send(right, slot, give * bytes, bytes);
      recv->recv(left, slot, take * bytes, bytes);
      DLSYS_RETURN_IF_ERROR(m.wait(send.get(), right, recv.get(), left, "all-gather"));
    }
  } catch (const std::exception& e) {
    return m.settle(
        Status::Unavailable("all-gather: rank {} or rank {} is gone or did not answer: {}", left,
                            right, e.what()),
        "all-gather");
  }
  return Status::OK();
}

Status ProcessGroup::barrier() {
  std::vector<char> all(static_cast<size_t>(world_));
  const char me = 1;
  return all_gather(&me, 1, all.data());
}

void tree_sum_in_place(const std::vector<float*>& leaves, size_t n) {
  // Level by level, bottom up: leaves[i] += leaves[i + stride] for each pair of neighbours, the
  // lower one first (a + b), so each level's sums are those of the balanced tree's nodes.
  const size_t m = leaves.size();
  for (size_t stride = 1; stride < m; stride *= 2)
    for (size_t i = 0; i + stride < m; i += 2 * stride) {
      float* a = leaves[i];
      const float* b = leaves[i + stride];
      for (size_t k = 0; k < n; ++k) a[k] = a[k] + b[k];
    }
}

void tree_sum(const std::vector<const float*>& leaves, size_t n, float* out) {
  if (leaves.empty()) {
    std::fill(out, out + n, 0.0f);
    return;
  }
  std::vector<std::vector<float>> copies;
  std::vector<float*> ptrs;
  copies.reserve(leaves.size());
  for (const float* l : leaves) {
    copies.emplace_back(l, l + n);
    ptrs.push_back(copies.back().data());
  }
  tree_sum_in_place(ptrs, n);
  std::copy(copies[0].begin(), copies[0].end(), out);
}

}  // namespace dlsys::dist
