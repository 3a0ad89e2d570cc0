// ResponseCache: keys that tell inputs apart, LRU eviction by bytes, entries over capacity.
#include "serve/response_cache.h"

#include <gtest/gtest.h>

namespace dlsys::serve {
namespace {

Tensor Floats(std::vector<float> v, Shape shape) {
  return Tensor::from_f32(shape, v.data()).clone();
}

TEST(ResponseCacheTest, KeysDependOnBytesShapeAndDtype) {
  Tensor a = Floats({1, 2, 3, 4}, {2, 2});
  EXPECT_TRUE(cache_key({a}) == cache_key({a.clone()}));
  EXPECT_FALSE(cache_key({a}) == cache_key({Floats({1, 2, 3, 5}, {2, 2})}));
  EXPECT_FALSE(cache_key({a}) == cache_key({a.view({4, 1})}));  // same bytes, other shape
  EXPECT_FALSE(cache_key({a}) == cache_key({a, a}));
  Tensor i = Tensor::zeros(DType::kI32, {2, 2});
  Tensor f = Tensor::zeros(DType::kF32, {2, 2});
  EXPECT_FALSE(cache_key({i}) == cache_key({f}));  // same bytes (zeros), other dtype
}

TEST(ResponseCacheTest, EvictsLeastRecentlyUsedByBytes) {
  // Each entry: 1024 floats (4 KiB) + the per-entry overhead; room for two.
  ResponseCache c(2 * (4096 + 256));
  auto out = [](float v) {
    return std::vector<Tensor>{Floats(std::vector<float>(1024, v), {1024})};
  };
  CacheKey k1{1, 1}, k2{2, 2}, k3{3, 3};
  c.put(k1, out(1));
  c.put(k2, out(2));
  ASSERT_TRUE(c.get(k1).has_value());  // k1 is now the most recently used
  c.put(k3, out(3));                   // evicts k2
  EXPECT_FALSE(c.get(k2).has_value());
  auto got = c.get(k1);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ((*got)[0].data_as<float>()[0], 1.0f);
  EXPECT_EQ((*c.get(k3))[0].data_as<float>()[0], 3.0f);
  CacheStats s = c.stats();
  EXPECT_EQ(s.entries, 2);
  EXPECT_EQ(s.evictions, 1);
  EXPECT_EQ(s.bytes, 2 * (4096 + 256));
  EXPECT_EQ(s.hits, 3);
  EXPECT_EQ(s.misses, 1);
  // An entry larger than the whole cache is not stored (and evicts nothing).
  c.put(CacheKey{4, 4}, {Floats(std::vector<float>(4096, 4), {4096})});
  EXPECT_FALSE(c.get(CacheKey{4, 4}).has_value());
  EXPECT_EQ(c.stats().entries, 2);
  // Replacing a key keeps one entry.
  c.put(k1, out(7));
  EXPECT_EQ((*c.get(k1))[0].data_as<float>()[0], 7.0f);
  EXPECT_EQ(c.stats().entries, 2);
}

}  // namespace
}  // namespace dlsys::serve
