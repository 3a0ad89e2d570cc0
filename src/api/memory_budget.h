// A server-wide budget for the memory that requests hold while they are handled: bodies read
// into memory and the JSON documents parsed from them. A request reserves before it allocates;
// when the budget is spent the server answers 503 instead of growing without bound.
// Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

namespace dlsys::api {

class MemoryBudget {
 public:
  explicit MemoryBudget(uint64_t limit) : limit_(limit) {}

  // A reservation, released when the last copy of the pointer goes.
  using Lease = std::shared_ptr<void>;

  // Reserves `bytes`; null (and nothing reserved) when that would go over the limit. A budget
  // of 0 bytes means unlimited.
  Lease reserve(uint64_t bytes) {
    uint64_t used = used_.load();
    do {
      if (limit_ && used + bytes > limit_) return nullptr;
    } while (!used_.compare_exchange_weak(used, used + bytes));
    return Lease(reinterpret_cast<void*>(1), [this, bytes](void*) { used_ -= bytes; });
  }
  uint64_t used() const { return used_.load(); }
  uint64_t limit() const { return limit_; }

 private:
  const uint64_t limit_;
  std::atomic<uint64_t> used_{0};
};

}  // namespace dlsys::api
