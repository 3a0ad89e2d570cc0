// ResponseCache: a model version's answers kept by the bytes of the request that produced them,
// so that a repeated request is answered without queueing or running (Triton's response cache).
// Opt-in per deployment (config.cache_mb). One cache belongs to one loaded version, so the key
// needs no version: it is a pair of independent 64-bit hashes over every input's name, dtype,
// shape and bytes (a false hit needs both to collide). Entries are evicted least recently used
// first, by bytes: the outputs' bytes plus a fixed overhead per entry.
//
// Threading: every method is thread-safe (one mutex; lookups are O(1)). Cached tensors are shared
// read-only with callers: nobody may write into them.
#pragma once

#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include "tensor/tensor.h"

namespace dlsys::serve {

struct CacheKey {
  uint64_t h1 = 0, h2 = 0;
  bool operator==(const CacheKey& o) const { return h1 == o.h1 && h2 == o.h2; }
};

// The key of a request's inputs (in graph order; names are part of the graph, so the dtype,
// shape and bytes of each input in order identify the request).
CacheKey cache_key(const std::vector<Tensor>& inputs);

struct CacheStats {
  int64_t hits = 0, misses = 0, evictions = 0, entries = 0, bytes = 0, capacity = 0;
};

class ResponseCache {
 public:
  // `capacity_bytes` > 0.
  explicit ResponseCache(int64_t capacity_bytes) : capacity_(capacity_bytes) {}

  // The outputs stored under `key` (and marks them recently used), counting a hit or a miss.
  std::optional<std::vector<Tensor>> get(const CacheKey& key);
  // Stores `outputs` under `key` (replacing what was there), evicting the least recently used
  // entries until it fits. An entry larger than the whole capacity is not stored.
  void put(const CacheKey& key, const std::vector<Tensor>& outputs);
  CacheStats stats() const;

 private:
  struct KeyHash {
    size_t operator()(const CacheKey& k) const { return static_cast<size_t>(k.h1); }
  };
  struct Entry {
    CacheKey key;
    std::vector<Tensor> outputs;
    int64_t bytes = 0;
  };
  void evict_locked(int64_t need);

  const int64_t capacity_;
  mutable std::mutex mu_;
  std::list<Entry> lru_;  // most recently used first
  std::unordered_map<CacheKey, std::list<Entry>::iterator, KeyHash> index_;
  int64_t bytes_ = 0;
  int64_t hits_ = 0, misses_ = 0, evictions_ = 0;
};

}  // namespace dlsys::serve
