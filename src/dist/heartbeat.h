// Heartbeat: tells a rank that hangs from one that is busy, in seconds rather than after a
// collective's timeout.
//
// A rank killed is seen at once: the kernel closes its sockets and every wait on it fails. A
// rank that hangs (stopped with SIGSTOP, swapped out, its machine cut off the network) closes
// nothing, and a collective waiting on it would only give up after the group's timeout (a
// minute by default, since a rank may legitimately spend that long writing a checkpoint). So
// every rank also beats: a thread of its own sends a small message to every other rank each
// `interval` on a Gloo context of its own (the group's heartbeat pairs), and waits for theirs.
// A rank whose beat has not come for `timeout` is reported as silent, once, through on_silent.
//
// What it tells: a process whose threads all stopped, or that cannot be reached. A rank whose
// compute thread is stuck but whose process runs still beats; the collective's timeout catches
// that one. A rank that closes its connection (it exited, or died) is no longer watched: a rank
// that died is the collectives' to report, and one that finished is not a fault.
//
// Rounds: beats are exchanged in rounds (round k on slot k of the heartbeat context), so the
// ranks' clocks never drift apart; a round starts `interval` after the previous one started.
// A silent rank is reported at most `timeout + interval` after its last beat.
//
// After a report the heartbeat goes on beating with the ranks left (the silent one is no longer
// watched), so that the others, still waiting for the silent rank, blame it and not this one.
//
// Threading and lifetime: the constructor starts the thread; the destructor stops it (at once:
// its waits are aborted) and joins it. on_silent runs on the heartbeat's thread and must not
// block. The context must outlive the heartbeat.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace gloo {
class Context;
namespace transport {
class UnboundBuffer;
}
}  // namespace gloo

namespace dlsys::dist {

struct HeartbeatOptions {
  std::chrono::milliseconds interval{1000};  // between the starts of two rounds
  std::chrono::milliseconds timeout{5000};   // silence after which a rank is reported
};

class Heartbeat {
 public:
  // Called once at most, with the first rank that went silent and how long it has been silent.
  using SilentFn = std::function<void(int rank, std::chrono::milliseconds silent)>;

  // Starts beating on `context` (a context of its own: its slots are the heartbeat's). Every
  // rank of the context must start one, with the same options. Nothing starts for one rank.
  Heartbeat(std::shared_ptr<gloo::Context> context, HeartbeatOptions options, SilentFn on_silent);
  ~Heartbeat();
  Heartbeat(const Heartbeat&) = delete;
  Heartbeat& operator=(const Heartbeat&) = delete;

 private:
  void run();

  std::shared_ptr<gloo::Context> context_;
  HeartbeatOptions options_;
  SilentFn on_silent_;
  std::vector<uint64_t> out_, in_;  // one beat per peer, sent and received
  std::vector<std::unique_ptr<gloo::transport::UnboundBuffer>> send_, recv_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // under mu_
  std::thread thread_;
};

}  // namespace dlsys::dist
