// The shard format: round trips of every column type with nulls, reading a subset of columns,
// and corruption detected with the column named.
#include <gtest/gtest.h>

#include "data/shard.h"

namespace dlsys::data {
namespace {

RowBatch sample_batch() {
  Schema s;
  s.columns = {{"i", ColumnType::kInt64, {}, {}},
               {"f", ColumnType::kFloat64, {}, {}},
               {"s", ColumnType::kString, {}, {}},
               {"img", ColumnType::kTensorU8, {2, 3}, {}},
               {"vec", ColumnType::kTensorF32, {4}, {}}};
  RowBatch b = RowBatch::empty(s);
  for (int r = 0; r < 100; ++r) {
    b.columns[0].i64.push_back(r * 1000003LL - 7);
    if (r % 7 == 3) {
      b.append_null(1);
    } else {
      if (!b.columns[1].valid.empty()) b.columns[1].valid.push_back(1);
      b.columns[1].f64.push_back(r * 0.25 - 3);
    }
    std::string v = r % 5 == 0 ? "" : "row \"" + std::to_string(r) + "\", with comma";
    b.columns[2].bytes += v;
    b.columns[2].offsets.push_back(b.columns[2].bytes.size());
    for (int k = 0; k < 6; ++k) b.columns[3].raw.push_back(static_cast<uint8_t>(r + k));
    for (int k = 0; k < 4; ++k) {
      float x = r * 0.5f + k;
      const uint8_t* p = reinterpret_cast<const uint8_t*>(&x);
      b.columns[4].raw.insert(b.columns[4].raw.end(), p, p + 4);
    }
    ++b.rows;
  }
  return b;
}

TEST(Shard, RoundTripsEveryTypeWithNulls) {
  RowBatch b = sample_batch();
  auto bytes = encode_shard(b);
  ASSERT_TRUE(bytes.ok()) << bytes.status().to_string();
  auto d = decode_shard(*bytes, {}, "test");
  ASSERT_TRUE(d.ok()) << d.status().to_string();
  ASSERT_EQ(d->rows, 100);
  ASSERT_EQ(d->schema.columns.size(), 5u);
  for (int64_t r = 0; r < 100; ++r)
    for (int c = 0; c < 5; ++c) EXPECT_EQ(d->value_text(r, c), b.value_text(r, c)) << r << "," << c;
  EXPECT_TRUE(d->columns[1].is_null(3));
  EXPECT_FALSE(d->columns[1].is_null(4));
  EXPECT_EQ(d->schema.columns[3].shape, (std::vector<int64_t>{2, 3}));
}

TEST(Shard, ReadsOnlyTheNamedColumnsInOrder) {
  auto bytes = encode_shard(sample_batch());
  ASSERT_TRUE(bytes.ok());
  auto d = decode_shard(*bytes, {"vec", "i"}, "test");
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(d->schema.columns.size(), 2u);
  EXPECT_EQ(d->schema.columns[0].name, "vec");
  EXPECT_EQ(d->columns[1].i64[2], 2 * 1000003LL - 7);
  auto missing = decode_shard(*bytes, {"nope"}, "shard x of d@v1");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("nope"), std::string::npos);
}

TEST(Shard, CorruptionIsDetectedAndNamed) {
  auto bytes = encode_shard(sample_batch());
  ASSERT_TRUE(bytes.ok());
  auto h = decode_shard_header(*bytes, "t");
  ASSERT_TRUE(h.ok());
  // Flip one byte inside the frame of column "s".
  const ShardColumnInfo& c = h->columns[h->index("s")];
  std::string bad = *bytes;
  bad[h->data_start + c.offset + c.size / 2] ^= 0x40;
  auto d = decode_shard(bad, {}, "shard abc of digits@v2");
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("shard abc of digits@v2"), std::string::npos);
  EXPECT_NE(d.status().message().find("'s'"), std::string::npos) << d.status().message();
  // The other columns still read.
  EXPECT_TRUE(decode_shard(bad, {"i", "f"}, "t").ok());
  // Header damage, truncation and a wrong magic.
  std::string hdr = *bytes;
  hdr[20] ^= 1;
  EXPECT_FALSE(decode_shard(hdr, {}, "t").ok());
  EXPECT_FALSE(decode_shard(bytes->substr(0, bytes->size() - 10), {}, "t").ok());
  EXPECT_FALSE(decode_shard(bytes->substr(0, 12), {}, "t").ok());
  std::string magic = *bytes;
  magic[0] = 'X';
  auto m = decode_shard(magic, {}, "t");
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("magic"), std::string::npos);
}

TEST(Shard, SameRowsGiveTheSameBytes) {
  auto a = encode_shard(sample_batch());
  auto b = encode_shard(sample_batch());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);  // content addressing relies on this
}

}  // namespace
}  // namespace dlsys::data
