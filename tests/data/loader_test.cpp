// DatasetLoader: every row once per epoch, seeded orders, seek, a rank's part of each batch,
// splits, the windowed shuffle under a small cache, values as stored, and a corrupted shard
// named.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "data/dataset_loader.h"
#include "data/push.h"
#include "data/shard.h"

namespace dlsys::data {
namespace {

namespace fs = std::filesystem;

class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/dlsys-loader-XXXXXX";
    dir_ = mkdtemp(tmpl);
    store_ = std::move(DatasetStore::open(dir_ + "/datasets")).value();
    // 1000 rows over 5 shards: id, a = id * 2, b = id % 10 (the label).
    std::string csv = "id,a,label\n";
    for (int i = 0; i < 1000; ++i) csv += fmt::format("{},{},{}\n", i, i * 2, i % 10);
    std::ofstream(dir_ + "/d.csv") << csv;
    auto src = open_source(dir_ + "/d.csv", "", {});
    ASSERT_TRUE(src.ok());
    PushOptions po;
    po.shard_rows = 200;
    auto r = push(*store_, "d", **src, po);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    ASSERT_EQ(r->shards, 5);
    version_ = r->version;
  }
  void TearDown() override { fs::remove_all(dir_); }

  // The ids of one epoch, in order.
  std::vector<int64_t> epoch_ids(DatasetLoader& l) {
    std::vector<int64_t> ids;
    for (int64_t b = 0; b < l.batches_per_epoch(); ++b) {
      auto batch = l.next();
      EXPECT_TRUE(batch.ok()) << batch.status().to_string();
      const float* x = static_cast<const float*>(batch->x.data());
      const int64_t* y = static_cast<const int64_t*>(batch->y.data());
      for (int64_t i = 0; i < batch->x.dim(0); ++i) {
        int64_t id = static_cast<int64_t>(x[i * 2]);
        EXPECT_EQ(x[i * 2 + 1], 2.0f * id);  // the row's values stay together
        EXPECT_EQ(y[i], id % 10);
        ids.push_back(id);
      }
    }
    return ids;
  }
  std::unique_ptr<DatasetLoader> open(DatasetLoaderOptions o, const std::string& split = "") {
    o.features = {"id", "a"};
    auto l = DatasetLoader::open(*store_, {"d", "latest", split}, o);
    EXPECT_TRUE(l.ok()) << l.status().to_string();
    return std::move(l).value();
  }

  std::string dir_;
  std::unique_ptr<DatasetStore> store_;
  VersionInfo version_;
};

TEST_F(LoaderTest, EveryRowOncePerEpochInASeededOrder) {
  DatasetLoaderOptions o;
  o.batch_size = 64;
  o.seed = 3;
  auto l = open(o);
  EXPECT_TRUE(l->global_shuffle());
  EXPECT_EQ(l->batches_per_epoch(), 16);
  auto e0 = epoch_ids(*l), e1 = epoch_ids(*l);
  ASSERT_EQ(e0.size(), 1000u);
  EXPECT_EQ(std::set<int64_t>(e0.begin(), e0.end()).size(), 1000u);
  EXPECT_EQ(std::set<int64_t>(e1.begin(), e1.end()).size(), 1000u);
  EXPECT_NE(e0, e1);
  // Rows of different shards are mixed within the first batch (a global shuffle).
  std::set<int64_t> shards;
  for (int i = 0; i < 64; ++i) shards.insert(e0[i] / 200);
  EXPECT_EQ(shards.size(), 5u);
  // Same seed, same orders; seek continues exactly.
  auto again = open(o);
  EXPECT_EQ(epoch_ids(*again), e0);
  auto l2 = open(o);
  ASSERT_TRUE(l2->seek({1, 5}).ok());
  auto b = l2->next();
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(static_cast<const float*>(b->x.data())[0], float(e1[5 * 64]));
  EXPECT_EQ(l2->position(), (LoaderPosition{1, 6}));
}

// Each batch's rows, one vector per batch, of the epoch the loader is in.
std::vector<std::vector<int64_t>> batch_ids(DatasetLoader& l, int64_t* offset_sum = nullptr) {
  std::vector<std::vector<int64_t>> out;
  for (int64_t b = 0; b < l.batches_per_epoch(); ++b) {
    auto batch = l.next();
    if (!batch.ok()) {
      ADD_FAILURE() << batch.status().to_string();
      break;
    }
    const float* x = static_cast<const float*>(batch->x.data());
    out.emplace_back();
    for (int64_t i = 0; i < batch->x.dim(0); ++i) out.back().push_back(int64_t(x[i * 2]));
    if (offset_sum) *offset_sum += batch->offset;
  }
  return out;
}

TEST_F(LoaderTest, PartsOfEachBatchAreTheWholeBatchCutIntoMicroBatches) {
  // 1000 rows in batches of 96 (the last one 40 rows) and of 333 (the last one a single row:
  // most of its micro-batches are empty), cut into 8 micro-batches: 1, 2, 4 and 8 parts, under
  // a global shuffle and under the windowed one of a small cache.
  for (int64_t batch : {96, 333})
    for (int64_t cache : {int64_t(1) << 30, int64_t(2 * 200 * (2 * 4 + 8))}) {
      DatasetLoaderOptions o;
      o.batch_size = batch;
      o.seed = 5;
      o.cache_bytes = cache;
      auto whole = open(o);
      EXPECT_EQ(whole->global_shuffle(), cache > 100000);
      auto want = batch_ids(*whole);
      const int64_t batches = (1000 + batch - 1) / batch;
      ASSERT_EQ(want.size(), static_cast<size_t>(batches));
      ASSERT_EQ(want.back().size(), static_cast<size_t>(1000 - (batches - 1) * batch));
      for (int64_t parts : {1, 2, 4, 8}) {
        std::vector<std::vector<int64_t>> got(want.size());
        for (int64_t r = 0; r < parts; ++r) {
          o.part = {r * 8 / parts, 8 / parts, 8};
          auto l = open(o);
          EXPECT_EQ(l->samples(), 1000);  // the epoch's, not the part's
          EXPECT_EQ(l->batches_per_epoch(), batches);
          int64_t offsets = 0;
          auto mine = batch_ids(*l, &offsets);
          for (size_t b = 0; b < mine.size(); ++b) {
            const int64_t n = static_cast<int64_t>(want[b].size());
            // Rows [lo, hi) of the batch: micro-batches first .. first + count of 8.
            const int64_t lo = o.part.first * n / 8, hi = (o.part.first + o.part.count) * n / 8;
            EXPECT_EQ(mine[b], std::vector<int64_t>(want[b].begin() + lo, want[b].begin() + hi))
                << parts << " parts, rank " << r << ", batch " << b;
            got[b].insert(got[b].end(), mine[b].begin(), mine[b].end());
            offsets -= lo;
          }
          EXPECT_EQ(offsets, 0) << "Batch::offset is the first row of the part";
        }
        EXPECT_EQ(got, want) << parts << " parts";
      }
    }
  // A part must lie within the batch.
  DatasetLoaderOptions o;
  o.part = {3, 2, 4};
  auto bad = DatasetLoader::open(*store_, {"d", "latest", ""}, o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("micro-batches [3, 5) are not within the 4"),
            std::string::npos)
      << bad.status().to_string();
}

TEST_F(LoaderTest, SplitsAndSmallCacheWindows) {
  DatasetLoaderOptions o;
  o.batch_size = 32;
  int64_t total = 0;
  std::set<int64_t> seen;
  for (const char* s : {"train", "validation", "test"}) {
    auto l = open(o, s);
    EXPECT_EQ(l->samples(), version_.manifest["split"]["rows"][s].get<int64_t>());
    auto ids = epoch_ids(*l);
    total += ids.size();
    seen.insert(ids.begin(), ids.end());
  }
  EXPECT_EQ(total, 1000);
  EXPECT_EQ(seen.size(), 1000u);
  // A cache of two shards: shards are shuffled in windows, still every row once.
  o.cache_bytes = 2 * 200 * (2 * 4 + 8);
  o.threads = 3;
  auto l = open(o);
  EXPECT_FALSE(l->global_shuffle());
  for (int e = 0; e < 2; ++e) {
    auto ids = epoch_ids(*l);
    EXPECT_EQ(std::set<int64_t>(ids.begin(), ids.end()).size(), 1000u);
  }
  EXPECT_GT(l->bytes_loaded(), 2 * 5 * 200 * 16 - 1);  // shards were evicted and read again
}

TEST_F(LoaderTest, CorruptedShardIsNamed) {
  std::string id = version_.manifest["shards"][2]["id"];
  std::string path = store_->shard_path(id);
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  // Damage the frame of a column the loader reads (a column it skips is not checked).
  auto h = decode_shard_header(bytes, "t");
  ASSERT_TRUE(h.ok());
  const ShardColumnInfo& c = h->columns[h->index("a")];
  bytes[h->data_start + c.offset + c.size / 2] ^= 0x55;
  fs::permissions(path, fs::perms::owner_write, fs::perm_options::add);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  DatasetLoaderOptions o;
  o.batch_size = 1000;
  auto l = open(o);
  auto b = l->next();
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find(id.substr(0, 12)), std::string::npos) << b.status().message();
  EXPECT_NE(b.status().message().find("d@v1"), std::string::npos);
  EXPECT_NE(b.status().message().find("corrupted"), std::string::npos);
}

TEST_F(LoaderTest, BadOptionsAreRefused) {
  DatasetLoaderOptions o;
  o.features = {"nope"};
  auto l = DatasetLoader::open(*store_, {"d", "latest", ""}, o);
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.status().message().find("nope"), std::string::npos);
  o.features = {};
  o.label = "missing";
  EXPECT_FALSE(DatasetLoader::open(*store_, {"d", "latest", ""}, o).ok());
  o.label = "label";
  o.part = {0, 1, 0};
  EXPECT_FALSE(DatasetLoader::open(*store_, {"d", "latest", ""}, o).ok());
}

TEST_F(LoaderTest, NullFeaturesAreRefusedDroppedOrNaN) {
  // 300 rows over 3 shards; a is null every 7th row, the label every 50th.
  std::string csv = "id,a,label\n";
  for (int i = 0; i < 300; ++i)
    csv += fmt::format("{},{},{}\n", i, i % 7 == 0 ? "" : std::to_string(i * 2),
                       i % 50 == 1 ? "" : std::to_string(i % 10));
  std::ofstream(dir_ + "/n.csv") << csv;
  auto src = open_source(dir_ + "/n.csv", "", {});
  ASSERT_TRUE(src.ok());
  PushOptions po;
  po.shard_rows = 100;
  ASSERT_TRUE(push(*store_, "n", **src, po).ok());
  auto read_all = [&](DatasetLoaderOptions::Nulls nulls, std::vector<float>* a) -> Status {
    DatasetLoaderOptions o;
    o.features = {"id", "a"};
    o.nulls = nulls;
    o.shuffle = false;
    o.batch_size = 64;
    DLSYS_ASSIGN_OR_RETURN(auto l, DatasetLoader::open(*store_, {"n", "latest", ""}, o));
    for (int64_t b = 0; b < l->batches_per_epoch(); ++b) {
      DLSYS_ASSIGN_OR_RETURN(Batch batch, l->next());
      for (int64_t i = 0; i < batch.x.dim(0); ++i)
        a->push_back(batch.x.data_as<float>()[i * 2 + 1]);
    }
    return Status::OK();
  };
  std::vector<float> a;
  Status st = read_all(DatasetLoaderOptions::Nulls::kError, &a);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("feature column 'a' is null at row 0"), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("data.nulls: drop"), std::string::npos) << st.message();
  a.clear();
  st = read_all(DatasetLoaderOptions::Nulls::kNaN, &a);
  ASSERT_FALSE(st.ok()) << "a null label is an error unless rows are dropped";
  EXPECT_NE(st.message().find("label 'label' is null"), std::string::npos) << st.message();
  a.clear();
  ASSERT_TRUE(read_all(DatasetLoaderOptions::Nulls::kDrop, &a).ok());
  // Every row but those with a null a or a null label.
  int want = 0;
  for (int i = 0; i < 300; ++i) want += i % 7 != 0 && i % 50 != 1;
  EXPECT_EQ(static_cast<int>(a.size()), want);
  for (float v : a) EXPECT_FALSE(std::isnan(v));
}

TEST_F(LoaderTest, StringColumnsBecomeCategoryCodes) {
  // 300 rows over 3 shards; color cycles through 4 names (one null every 11th row), and the
  // names sort differently from their order of appearance.
  const char* names[] = {"red", "blue", "green", "amber"};
  std::string csv = "x,color,label\n";
  for (int i = 0; i < 300; ++i)
    csv += fmt::format("{},{},{}\n", i, i % 11 == 5 ? "" : names[i % 4], i % 3);
  std::ofstream(dir_ + "/c.csv") << csv;
  auto src = open_source(dir_ + "/c.csv", "", {});
  ASSERT_TRUE(src.ok());
  PushOptions po;
  po.shard_rows = 100;
  ASSERT_TRUE(push(*store_, "c", **src, po).ok());
  auto rows = [&](DatasetLoaderOptions o, std::vector<float>* x) -> Result<Vocabularies> {
    o.shuffle = false;
    o.batch_size = 64;
    o.nulls = DatasetLoaderOptions::Nulls::kNaN;
    DLSYS_ASSIGN_OR_RETURN(auto l, DatasetLoader::open(*store_, {"c", "latest", ""}, o));
    EXPECT_EQ(l->feature_names(), (std::vector<std::string>{"x", "color"}));
    for (int64_t b = 0; b < l->batches_per_epoch(); ++b) {
      DLSYS_ASSIGN_OR_RETURN(Batch batch, l->next());
      x->insert(x->end(), batch.x.data_as<float>(), batch.x.data_as<float>() + batch.x.numel());
    }
    return l->vocabularies();
  };
  // Named in `categorical`: a default feature, coded by the sorted vocabulary of the version.
  DatasetLoaderOptions o;
  o.categorical = {"color"};
  std::vector<float> x;
  auto vocab = rows(o, &x);
  ASSERT_TRUE(vocab.ok()) << vocab.status().to_string();
  EXPECT_EQ((*vocab)["color"], (std::vector<std::string>{"amber", "blue", "green", "red"}));
  const float code[] = {3, 1, 2, 0};  // red, blue, green, amber
  ASSERT_EQ(x.size(), 600u);
  for (int i = 0; i < 300; ++i) {
    EXPECT_EQ(x[i * 2], float(i));
    if (i % 11 == 5)
      EXPECT_TRUE(std::isnan(x[i * 2 + 1])) << "a null category is NaN, row " << i;
    else
      EXPECT_EQ(x[i * 2 + 1], code[i % 4]) << "row " << i;
  }
  // A given vocabulary wins; a value it lacks is -1 (no onehot category matches it).
  o.vocabularies = {{"color", {"blue", "red"}}};
  x.clear();
  ASSERT_TRUE(rows(o, &x).ok());
  EXPECT_EQ(x[0 * 2 + 1], 1.0f) << "red";
  EXPECT_EQ(x[1 * 2 + 1], 0.0f) << "blue";
  EXPECT_EQ(x[2 * 2 + 1], -1.0f) << "green is not in the given vocabulary";
  // Not categorical: left out of the default features (and said so), refused when named.
  DatasetLoaderOptions plain;
  plain.features = {"x", "color"};
  auto refused = DatasetLoader::open(*store_, {"c", "latest", ""}, plain);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("add `- onehot: [color]` to data.preprocess"),
            std::string::npos)
      << refused.status().message();
  plain.features.clear();
  auto numeric = DatasetLoader::open(*store_, {"c", "latest", ""}, plain);
  ASSERT_TRUE(numeric.ok()) << numeric.status().to_string();
  EXPECT_EQ((*numeric)->feature_names(), (std::vector<std::string>{"x"}));
  EXPECT_EQ((*numeric)->ignored_string_columns(), (std::vector<std::string>{"color"}));
}

}  // namespace
}  // namespace dlsys::data
