#include "dist/heartbeat.h"

#include <gloo/context.h>
#include <gloo/transport/unbound_buffer.h>

#include <algorithm>

namespace dlsys::dist {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

Heartbeat::Heartbeat(std::shared_ptr<gloo::Context> context, HeartbeatOptions options,
                     SilentFn on_silent)
    : context_(std::move(context)), options_(options), on_silent_(std::move(on_silent)) {
  const int world = context_->size;
  if (world < 2) return;
  out_.assign(static_cast<size_t>(world), 0);
  in_.assign(static_cast<size_t>(world), 0);
  for (int p = 0; p < world; ++p) {
    send_.push_back(context_->createUnboundBuffer(&out_[static_cast<size_t>(p)], sizeof(uint64_t)));
    recv_.push_back(context_->createUnboundBuffer(&in_[static_cast<size_t>(p)], sizeof(uint64_t)));
  }
  thread_ = std::thread([this] { run(); });
}

Heartbeat::~Heartbeat() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  // A wait in progress returns false at once; one not started yet finds the flag set.
  for (auto& b : recv_) b->abortWaitRecv();
  for (auto& b : send_) b->abortWaitSend();
  thread_.join();
}

void Heartbeat::run() {
  const int world = context_->size, me = context_->rank;
  std::vector<bool> watched(static_cast<size_t>(world), true);
  watched[static_cast<size_t>(me)] = false;
  std::vector<Clock::time_point> last(static_cast<size_t>(world), Clock::now());
  bool reported = false;
  for (uint64_t round = 1;; ++round) {
    const Clock::time_point start = Clock::now();
    const int slot = context_->nextSlot();
    for (int p = 0; p < world; ++p) {
      if (!watched[static_cast<size_t>(p)]) continue;
      out_[static_cast<size_t>(p)] = round;
      try {
        recv_[static_cast<size_t>(p)]->recv(p, static_cast<uint64_t>(slot));
        send_[static_cast<size_t>(p)]->send(p, static_cast<uint64_t>(slot));
      } catch (const std::exception&) {
        watched[static_cast<size_t>(p)] = false;  // its connection is gone: it left
      }
    }
    // Each peer's beat, then our beat's delivery, by one deadline: an answer that fails before
    // the deadline is a connection gone (the peer left); one that fails at it is silence.
    const Clock::time_point deadline = start + options_.timeout;
    for (int p = 0; p < world; ++p) {
      if (!watched[static_cast<size_t>(p)]) continue;
      for (int half = 0; half < 2; ++half) {
        const auto left = std::max(
            milliseconds(1), std::chrono::duration_cast<milliseconds>(deadline - Clock::now()));
        try {
          auto& b = half == 0 ? recv_[static_cast<size_t>(p)] : send_[static_cast<size_t>(p)];
          const bool done = half == 0 ? b->waitRecv(nullptr, left) : b->waitSend(nullptr, left);
          if (!done) return;  // aborted: the heartbeat is stopping
        } catch (const std::exception&) {
          if (Clock::now() < deadline) {
            watched[static_cast<size_t>(p)] = false;
            break;
          }
          {
            std::lock_guard<std::mutex> lock(mu_);
            if (stop_) return;
          }
          // Reported once; the others keep getting beats, so that they blame the silent rank
          // and not this one.
          watched[static_cast<size_t>(p)] = false;
          if (!reported) {
            reported = true;
            on_silent_(p, std::chrono::duration_cast<milliseconds>(Clock::now() -
                                                                   last[static_cast<size_t>(p)]));
          }
          break;
        }
      }
      if (watched[static_cast<size_t>(p)]) last[static_cast<size_t>(p)] = Clock::now();
    }
    std::unique_lock<std::mutex> lock(mu_);
    if (cv_.wait_until(lock, start + options_.interval, [this] { return stop_; })) return;
  }
}

}  // namespace dlsys::dist
