#include "serve/response_cache.h"

#include <cstring>

namespace dlsys::serve {
namespace {

constexpr int64_t kEntryOverhead = 256;  // list node, index slot, tensor headers

// FNV-1a (64-bit) and a multiply-xorshift hash with another seed: independent enough that a
// false hit needs two unrelated collisions.
struct TwoHashes {
  uint64_t fnv = 1469598103934665603ull;
  uint64_t mx = 0x9e3779b97f4a7c15ull;
  void bytes(const void* p, size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, b + i, 8);
      word(w);
    }
    uint64_t tail = 0;
    std::memcpy(&tail, b + i, n - i);
    word(tail ^ (static_cast<uint64_t>(n - i) << 56));
  }
  void word(uint64_t w) {
    for (int k = 0; k < 8; ++k) {
      fnv ^= (w >> (8 * k)) & 0xff;
      fnv *= 1099511628211ull;
    }
    mx ^= w + 0x9e3779b97f4a7c15ull + (mx << 6) + (mx >> 2);
    mx *= 0xff51afd7ed558ccdull;
    mx ^= mx >> 33;
  }
};

int64_t bytes_of(const std::vector<Tensor>& ts) {
  int64_t n = kEntryOverhead;
  for (const auto& t : ts) n += static_cast<int64_t>(t.nbytes());
  return n;
}

}  // namespace

CacheKey cache_key(const std::vector<Tensor>& inputs) {
  TwoHashes h;
  h.word(inputs.size());
  for (const auto& t : inputs) {
    h.word(static_cast<uint64_t>(t.dtype()));
    h.word(static_cast<uint64_t>(t.rank()));
    for (int64_t d : t.shape()) h.word(static_cast<uint64_t>(d));
    h.bytes(t.data(), t.nbytes());
  }
  return {h.fnv, h.mx};
}

std::optional<std::vector<Tensor>> ResponseCache::get(const CacheKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = index_.find(key);
  if (it == index_.end()) {
    ++misses_;
    return std::nullopt;
  }
  ++hits_;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->outputs;
}

void ResponseCache::put(const CacheKey& key, const std::vector<Tensor>& outputs) {
  int64_t need = bytes_of(outputs);
  if (need > capacity_) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = index_.find(key); it != index_.end()) {
    bytes_ -= it->second->bytes;
    lru_.erase(it->second);
    index_.erase(it);
  }
  evict_locked(need);
  lru_.push_front({key, outputs, need});
  index_[key] = lru_.begin();
  bytes_ += need;
}

void ResponseCache::evict_locked(int64_t need) {
  while (!lru_.empty() && bytes_ + need > capacity_) {
    bytes_ -= lru_.back().bytes;
    index_.erase(lru_.back().key);
    lru_.pop_back();
    ++evictions_;
  }
}

CacheStats ResponseCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {hits_, misses_, evictions_, static_cast<int64_t>(lru_.size()), bytes_, capacity_};
}

}  // namespace dlsys::serve
