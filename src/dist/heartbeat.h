// Heartbeat: tells a rank that hangs from one that is busy, in seconds rather than after a
// collective's timeout.
//
// A rank killed is seen at once: the kernel closes its sockets and every wait on it fails. A
// rank that hangs (stopped with SIGSTOP, swapped out, its machine cut off the network) closes
// nothing, and a collective waiting on it would only give up after the group's timeout (a
// minute by default, since a rank may legitimately spend that long writing a checkpoint). So
// every rank also beats: a thread of its own sends a small UDP datagram to every other rank
// each `interval` (a fifth of the limit, at most a second) and reads theirs. A rank whose beats
// have not come for `timeout` is reported as silent through on_silent, and the verdict is sent to
// the other ranks too, which report it at once: every rank names the same silent rank, even one
// whose collective was waiting on the rank that saw it first.
//
// Why UDP and not Gloo: Gloo gives up a whole context when one wait times out, so silence could
// not be watched for without ending every other peer's channel; datagrams need no connection,
// and the thread waits with poll() on its own clock. A lost datagram costs nothing: beats repeat
// every interval, and the timeout spans several.
//
// What it tells: a process whose threads all stopped, or that cannot be reached. A rank whose
// compute thread is stuck but whose process runs still beats; the collective's timeout catches
// that one. A rank that ends normally says goodbye (its destructor) and is no longer watched; one
// killed is reported as silent after the timeout, by which time its closed connections have
// already failed the collectives. If this process itself was stopped (its own loop saw a gap),
// every peer gets a fresh timeout: the silence was its own.
//
// Datagrams are taken only from the peers' registered addresses (ip and port), so a stale group
// or another job cannot beat for a rank (and so a network that rewrites source addresses, NAT
// between the ranks, needs --heartbeat-s 0). Over UDP, a verdict and a goodbye are best effort:
// a rank that reported keeps sending its verdict in place of its beats, and a goodbye is sent
// three times. Joining waits until every peer was heard from once, so a blocked UDP shows at
// the start, not as a rank reported silent.
//
// Threading and lifetime: join() starts the thread; the destructor says goodbye, stops it (at
// once: an eventfd wakes its poll) and joins it. on_silent runs on the heartbeat's thread, at most
// once, and must not block.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/status.h"

namespace gloo::rendezvous {
class Store;
}

namespace dlsys::dist {

struct HeartbeatOptions {
  std::chrono::milliseconds interval{1000};  // between two beats
  std::chrono::milliseconds timeout{5000};   // silence after which a rank is reported; 0: off
};

class Heartbeat {
 public:
  // The silent rank, how long it has been silent, and the rank that saw it (this one, or the
  // rank whose verdict arrived).
  using SilentFn = std::function<void(int rank, std::chrono::milliseconds silent, int seen_by)>;

  // Every rank of a group calls it once, with the same options, after the group joined: it binds
  // a UDP socket on `host` (an address or name of this machine the peers can reach), writes its
  // address and limit to `store` under "heartbeat/<rank>" and reads the others' (waits bounded
  // by the store), then waits until a datagram of every peer has arrived (at most twice the
  // limit, and at least 2 s): a peer never heard from fails the join, naming it and asking
  // whether UDP is blocked. With options.timeout zero it writes "off" and returns null. A peer
  // with another limit (or none) fails the join with what to change. Nothing starts for one
  // rank.
  // While some watched peer has been silent for half the limit, `*suspect` (if given) is true.
  static Result<std::unique_ptr<Heartbeat>> join(gloo::rendezvous::Store& store, int rank,
                                                 int world, const std::string& host,
                                                 HeartbeatOptions options, SilentFn on_silent,
                                                 std::atomic<bool>* suspect = nullptr);
  ~Heartbeat();
  // The peers this rank itself has not heard from for longer than `silence` (not counting
  // those that said goodbye): its own observation, not another rank's verdict passed on.
  std::vector<int> unheard_for(std::chrono::milliseconds silence) const;
  Heartbeat(const Heartbeat&) = delete;
  Heartbeat& operator=(const Heartbeat&) = delete;

 private:
  struct Peer {
    sockaddr_storage addr{};
    socklen_t len = 0;
  };
  Heartbeat(int fd, int wake, int rank, std::vector<Peer> peers, HeartbeatOptions options,
            SilentFn on_silent, std::atomic<bool>* suspect);
  void run();
  void send_to_all(char kind, int about, int silence_ms, const std::vector<bool>& watched);

  int fd_;    // the UDP socket
  int wake_;  // an eventfd the destructor writes to end the poll
  int rank_;
  std::vector<Peer> peers_;  // by rank (this rank's entry unused)
  HeartbeatOptions options_;
  SilentFn on_silent_;
  std::atomic<bool>* suspect_;
  mutable std::mutex mu_;
  std::condition_variable heard_changed_;
  std::vector<bool> heard_;  // under mu_: a datagram of the peer arrived
  // Under mu_, for unheard_for: when each peer's last datagram arrived (reset with the thread's
  // own clocks after this process was stopped), and which peers said goodbye.
  std::vector<std::chrono::steady_clock::time_point> last_heard_;
  std::vector<bool> gone_;
  std::thread thread_;
};

}  // namespace dlsys::dist
