// Datasets from CSV/NPY/IDX (real data from ../shared/data and malformed files) and the batch
// loader's order, prefetching and resumable position.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "core/file_util.h"
#include "data/tensor_loader.h"
#include "tensor/npy.h"

#ifndef DLSYS_SHARED_DATA
#define DLSYS_SHARED_DATA "../shared/data"
#endif

namespace dlsys::data {
namespace {

namespace fs = std::filesystem;

class FileDatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dlsys-train-" + random_hex(6));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name, const std::string& content) {
    std::string p = (dir_ / name).string();
    std::ofstream(p, std::ios::binary) << content;
    return p;
  }
  fs::path dir_;
};

Result<InMemoryDataset> read_csv_file(const std::string& path, FileDatasetOptions o = {}) {
  o.format = "csv";
  return read_file_dataset(path, o);
}
Result<InMemoryDataset> read_pair(const std::string& format, const std::string& x,
                                  const std::string& y) {
  FileDatasetOptions o;
  o.format = format;
  o.labels_path = y;
  return read_file_dataset(x, o);
}

// A dataset whose single feature is the row id, to follow rows through shuffles.
InMemoryDataset ids(int64_t n) {
  InMemoryDataset d;
  d.features = Tensor::empty(DType::kF32, {n, 1});
  d.labels = Tensor::empty(DType::kI64, {n});
  for (int64_t i = 0; i < n; ++i) {
    d.features.data_as<float>()[i] = static_cast<float>(i);
    d.labels.data_as<int64_t>()[i] = i % 10;
  }
  return d;
}

TEST_F(FileDatasetTest, ReadsTheDigitsCsv) {
  auto d = read_csv_file(std::string(DLSYS_SHARED_DATA) + "/digits/digits.csv", {});
  ASSERT_TRUE(d.ok()) << d.status().to_string();
  EXPECT_EQ(d->features.shape(), (Shape{1797, 64}));
  EXPECT_EQ(d->labels.dtype(), DType::kI64);
  // First row of the file: 0,0,5,13,9,1,... label 0; second row's label is 1.
  EXPECT_EQ(d->features.data_as<float>()[2], 5.0f);
  EXPECT_EQ(d->features.data_as<float>()[3], 13.0f);
  EXPECT_EQ(d->labels.data_as<int64_t>()[0], 0);
  EXPECT_EQ(d->labels.data_as<int64_t>()[1], 1);
  std::set<int64_t> classes(d->labels.data_as<int64_t>(), d->labels.data_as<int64_t>() + 1797);
  EXPECT_EQ(classes.size(), 10u);
  // breast_cancer.csv starts with a non-numeric line: it is taken as a header.
  auto bc = read_csv_file(std::string(DLSYS_SHARED_DATA) + "/breast_cancer/breast_cancer.csv", {});
  ASSERT_TRUE(bc.ok()) << bc.status().to_string();
  EXPECT_EQ(bc->features.shape(), (Shape{569, 30}));
}

FileDatasetOptions labels_at(int column) {
  FileDatasetOptions o;
  o.label_column = column;
  return o;
}

TEST_F(FileDatasetTest, CsvErrorsNameFileLineAndColumn) {
  auto err = [&](const std::string& content, FileDatasetOptions o = {}) {
    auto r = read_csv_file(file("bad.csv", content), o);
    EXPECT_FALSE(r.ok());
    return r.status().message();
  };
  auto has = [](const std::string& message, const std::string& part) {
    EXPECT_NE(message.find(part), std::string::npos)
        << "'" << message << "' lacks '" << part << "'";
  };
  has(err("1,2,0\n3,abc,1\n"), "bad.csv:2:2: 'abc' is not a number");
  has(err("1,2,0\n3,4\n"), "bad.csv:2: 2 fields");
  has(err("1,2,0\n3,,1\n"), "bad.csv:2:2: missing value");
  has(err("1,\"2,0\n"), "not closed");
  has(err(""), "has no rows");
  has(err("1,2,0.5\n"), "not a class id");
  has(err("1,2,0\n", labels_at(7)), "label column 7");
  // Quoted numbers, CRLF line ends, a header and float targets are fine.
  FileDatasetOptions reg;
  reg.labels_as_classes = false;
  auto ok = read_csv_file(file("ok.csv", "a,b,y\r\n\"1.5\",2,0.25\r\n3,4,0.75\r\n"), reg);
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_EQ(ok->features.shape(), (Shape{2, 2}));
  EXPECT_EQ(ok->features.data_as<float>()[0], 1.5f);
  EXPECT_EQ(ok->labels.data_as<float>()[1], 0.75f);
  FileDatasetOptions first;
  first.label_column = 0;
  auto lc = read_csv_file(file("lc.csv", "7,1,2\n"), first);
  ASSERT_TRUE(lc.ok());
  EXPECT_EQ(lc->labels.data_as<int64_t>()[0], 7);
}

TEST_F(FileDatasetTest, ReadsNpyPairsAndIdx) {
  float x[6] = {1, 2, 3, 4, 5, 6};
  int64_t y[3] = {0, 1, 2};
  ASSERT_TRUE(npy_write((dir_ / "x.npy").string(), Tensor::from_f32({3, 2}, x)).ok());
  ASSERT_TRUE(npy_write((dir_ / "y.npy").string(), Tensor::from_i64({3}, y)).ok());
  ASSERT_TRUE(npy_write((dir_ / "y2.npy").string(), Tensor::from_i64({2}, y)).ok());
  auto d = read_pair("npy", (dir_ / "x.npy").string(), (dir_ / "y.npy").string());
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->labels.dtype(), DType::kI64);
  auto bad = read_pair("npy", (dir_ / "x.npy").string(), (dir_ / "y2.npy").string());
  EXPECT_NE(bad.status().message().find("3 rows"), std::string::npos) << bad.status().message();

  // Two 2x2 images and their labels in MNIST's IDX format.
  std::string img("\0\0\x08\x03\0\0\0\x02\0\0\0\x02\0\0\0\x02", 16);
  img += std::string("\x00\xff\x80\x01\x02\x03\x04\x05", 8);
  std::string lab("\0\0\x08\x01\0\0\0\x02\x07\x03", 10);
  auto idx = read_pair("idx", file("img.idx", img), file("lab.idx", lab));
  ASSERT_TRUE(idx.ok()) << idx.status().to_string();
  EXPECT_EQ(idx->features.shape(), (Shape{2, 2, 2}));
  EXPECT_FLOAT_EQ(idx->features.data_as<float>()[1], 1.0f);
  EXPECT_EQ(idx->labels.data_as<int64_t>()[0], 7);
  auto trunc = read_pair("idx", file("t.idx", img.substr(0, 20)), file("lab2.idx", lab));
  EXPECT_NE(trunc.status().message().find("truncated"), std::string::npos);
  auto gz = read_pair("idx", file("g.idx", std::string("\x1f\x8b\x08\x00rest", 8)),
                      file("lab3.idx", lab));
  EXPECT_NE(gz.status().message().find("gzip"), std::string::npos) << gz.status().message();
}

TEST_F(FileDatasetTest, SplitIsSeededDisjointAndComplete) {
  InMemoryDataset all = ids(1797);
  InMemoryDataset tr, va;
  ASSERT_TRUE(split(all, 0.2, 42, &tr, &va).ok());
  EXPECT_EQ(tr.size(), 1438);
  EXPECT_EQ(va.size(), 359);
  std::set<float> seen;
  for (const InMemoryDataset* d : {&tr, &va})
    for (int64_t i = 0; i < d->size(); ++i)
      EXPECT_TRUE(seen.insert(d->features.data_as<float>()[i]).second);
  EXPECT_EQ(seen.size(), 1797u);
  InMemoryDataset tr2, va2;
  ASSERT_TRUE(split(all, 0.2, 42, &tr2, &va2).ok());
  EXPECT_EQ(std::memcmp(va.features.data(), va2.features.data(), va.features.nbytes()), 0);
  ASSERT_TRUE(split(all, 0.2, 43, &tr2, &va2).ok());
  EXPECT_NE(std::memcmp(va.features.data(), va2.features.data(), va.features.nbytes()), 0);
  EXPECT_FALSE(split(all, 1.0, 1, &tr, &va).ok());
}

// A batch's features (one per sample in these tests), in order.
std::vector<float> values(const Batch& b) {
  return std::vector<float>(b.x.data_as<float>(), b.x.data_as<float>() + b.x.dim(0));
}

std::vector<float> epoch_ids(Loader& l) {
  std::vector<float> out;
  for (int64_t b = 0; b < l.batches_per_epoch(); ++b) {
    auto batch = l.next();
    if (!batch.ok()) {
      ADD_FAILURE() << batch.status().to_string();
      break;
    }
    std::vector<float> v = values(*batch);
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

TEST(TensorLoaderTest, EachEpochIsASeededPermutation) {
  TensorLoaderOptions o;
  o.batch_size = 32;
  o.seed = 7;
  auto l = TensorLoader::make(ids(100), o);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ((*l)->batches_per_epoch(), 4);  // 32 + 32 + 32 + 4
  auto e0 = epoch_ids(**l), e1 = epoch_ids(**l);
  EXPECT_EQ(e0.size(), 100u);
  EXPECT_EQ(std::set<float>(e0.begin(), e0.end()).size(), 100u);
  EXPECT_EQ(std::set<float>(e1.begin(), e1.end()).size(), 100u);
  EXPECT_NE(e0, e1) << "two epochs in the same order";
  EXPECT_EQ((*l)->position(), (LoaderPosition{2, 0}));
  // Same seed, same batches, with or without prefetching; another seed, another order.
  o.prefetch = 0;
  auto same = TensorLoader::make(ids(100), o);
  EXPECT_EQ(epoch_ids(**same), e0);
  o.seed = 8;
  auto other = TensorLoader::make(ids(100), o);
  EXPECT_NE(epoch_ids(**other), e0);
  o.shuffle = false;
  auto plain = TensorLoader::make(ids(100), o);
  auto p = epoch_ids(**plain);
  EXPECT_TRUE(std::is_sorted(p.begin(), p.end()));
}

TEST(TensorLoaderTest, SeekResumesTheExactSequence) {
  TensorLoaderOptions o;
  o.batch_size = 10;
  o.seed = 3;
  auto ref = TensorLoader::make(ids(95), o);
  std::vector<std::vector<float>> want;
  for (int i = 0; i < 25; ++i) {
    auto b = (*ref)->next();
    ASSERT_TRUE(b.ok());
    want.push_back(values(*b));
  }
  // A "killed" loader at batch 13 (epoch 1, batch 3); a fresh one seeks there.
  auto fresh = TensorLoader::make(ids(95), o);
  ASSERT_TRUE((*fresh)->seek({1, 3}).ok());
  for (int i = 13; i < 25; ++i) {
    auto b = (*fresh)->next();
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(values(*b), want[static_cast<size_t>(i)]) << "batch " << i;
  }
  EXPECT_FALSE((*fresh)->seek({0, 10}).ok());  // only 10 batches per epoch (0..9)
}

TEST(TensorLoaderTest, PartsOfEachBatchAreTheWholeBatchCutIntoMicroBatches) {
  // 100 samples in batches of 32 (the last one 4), cut into 4 micro-batches and shared by 2
  // parts: each part is its rows of the whole batch, with or without prefetching.
  TensorLoaderOptions o;
  o.batch_size = 32;
  o.seed = 9;
  auto whole = TensorLoader::make(ids(100), o);
  ASSERT_TRUE(whole.ok());
  std::vector<std::vector<float>> want;
  for (int b = 0; b < 8; ++b) {  // two epochs
    auto batch = (*whole)->next();
    ASSERT_TRUE(batch.ok());
    want.push_back(values(*batch));
    EXPECT_EQ(batch->rows, batch->x.dim(0));
    EXPECT_EQ(batch->offset, 0);
  }
  for (int prefetch : {0, 2})
    for (int64_t r = 0; r < 2; ++r) {
      o.prefetch = prefetch;
      o.part = {2 * r, 2, 4};
      auto l = TensorLoader::make(ids(100), o);
      ASSERT_TRUE(l.ok());
      EXPECT_EQ((*l)->samples(), 100);
      for (size_t b = 0; b < want.size(); ++b) {
        auto batch = (*l)->next();
        ASSERT_TRUE(batch.ok());
        const int64_t n = static_cast<int64_t>(want[b].size()), lo = 2 * r * n / 4,
                      hi = (2 * r + 2) * n / 4;
        EXPECT_EQ(batch->rows, n);
        EXPECT_EQ(batch->offset, lo);
        EXPECT_EQ(batch->y.dim(0), hi - lo);
        EXPECT_EQ(values(*batch), std::vector<float>(want[b].begin() + lo, want[b].begin() + hi))
            << "part " << r << ", batch " << b;
      }
    }
  // Batches of 4 over 10 samples, the last of 2 rows, in 4 parts of one micro-batch each:
  // parts 0 and 2 of the last batch are empty (0 rows), and the parts still make the batch.
  o.batch_size = 4;
  o.shuffle = false;
  o.prefetch = 2;
  std::vector<std::vector<float>> joined(3);
  for (int64_t r = 0; r < 4; ++r) {
    o.part = {r, 1, 4};
    auto l = TensorLoader::make(ids(10), o);
    ASSERT_TRUE(l.ok());
    for (size_t b = 0; b < 3; ++b) {
      auto batch = (*l)->next();
      ASSERT_TRUE(batch.ok());
      if (b == 2) {
        EXPECT_EQ(batch->x.dim(0), r % 2) << "part " << r << " of the last batch";
      }
      std::vector<float> v = values(*batch);
      joined[b].insert(joined[b].end(), v.begin(), v.end());
    }
  }
  EXPECT_EQ(joined, (std::vector<std::vector<float>>{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9}}));
  o.part = {2, 1, 2};
  auto bad = TensorLoader::make(ids(10), o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("not within the 2"), std::string::npos);
}

TEST(TensorLoaderTest, DropLastAndBadOptions) {
  TensorLoaderOptions o;
  o.batch_size = 32;
  o.drop_last = true;
  auto l = TensorLoader::make(ids(100), o);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ((*l)->batches_per_epoch(), 3);
  for (int i = 0; i < 7; ++i) EXPECT_EQ((*l)->next()->x.dim(0), 32);
  o.batch_size = 0;
  EXPECT_FALSE(TensorLoader::make(ids(10), o).ok());
  o.batch_size = 64;
  EXPECT_NE(TensorLoader::make(ids(10), o).status().message().find("drops every one"),
            std::string::npos);
  EXPECT_FALSE(TensorLoader::make(InMemoryDataset{}, TensorLoaderOptions{}).ok());
}

}  // namespace
}  // namespace dlsys::data
