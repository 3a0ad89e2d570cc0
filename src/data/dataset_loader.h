// DatasetLoader: the trainer's Loader over a version of the dataset store,
// `name@version[:split]`.
//
// Each epoch has a seeded order of the version's rows (of the split's rows): a global shuffle
// across shards when the decoded rows fit the cache budget; otherwise shards in shuffled order,
// grouped into windows of half the budget, rows shuffled within each window. The order depends
// only on (seed, epoch), so a resumed run sees the same batches. A data-parallel rank takes its
// part of each batch (BatchPart, data/loader.h): it assembles only those rows, and loads only
// the shards they come from.
//
// Shards are read and decoded by N prefetch threads into a cache of ready rows (features as
// f32, labels as i64 or f32) kept within a memory budget (least recently used first out).
#pragma once

#include <condition_variable>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "data/dataset_store.h"
#include "data/loader.h"

namespace dlsys::data {

struct DatasetLoaderOptions {
  // Feature columns: a list of numeric scalar columns (concatenated into [B, F]), or one tensor
  // column ([B, shape...]). Empty: the one tensor column if there is one, else every numeric
  // scalar column except the label.
  std::vector<std::string> features;
  // String columns that are categorical features: each value becomes its code (data/loader.h
  // Vocabularies), from `vocabularies` when it has the column, else from the sorted distinct
  // values of the whole version (every split, so two splits code alike). Named string columns
  // join the default feature list, in the version's column order. Another string feature is an
  // error that says to onehot it.
  std::vector<std::string> categorical;
  Vocabularies vocabularies;
  std::string label = "label";  // "" for no labels (y is then an empty tensor)
  float scale = 1.0f;           // features are multiplied by this (1/255 for u8 images)
  // A null feature: an error naming the shard and row (kError), NaN for the model's impute
  // step (kNaN), or the row is left out (kDrop: rows with a null feature or label are not part
  // of the epoch; samples() counts the rest). A null label is an error unless kDrop.
  enum class Nulls { kError, kNaN, kDrop };
  Nulls nulls = Nulls::kError;
  int64_t batch_size = 32;
  bool shuffle = true;
  uint64_t seed = 0;
  bool drop_last = false;
  int threads = 1;                  // prefetch threads (one leaves a core to training here)
  int prefetch = 4;                 // batches prepared ahead of the consumer
  int64_t cache_bytes = 1ll << 30;  // decoded shard cache
  BatchPart part;                   // the rows of each batch to assemble (data-parallel)
};

class DatasetLoader : public Loader {
 public:
  // Opens `ref` (its split when given). Errors name the version and the missing column.
  static Result<std::unique_ptr<DatasetLoader>> open(const DatasetStore& store,
                                                     const VersionRef& ref,
                                                     DatasetLoaderOptions options);
  ~DatasetLoader() override;

  int64_t samples() const override { return total_rows_; }
  int64_t batches_per_epoch() const override { return batches_; }
  Result<Batch> next() override;
  LoaderPosition position() const override;
  Status seek(LoaderPosition p) override;

  const VersionInfo& version() const { return version_; }
  // "digits@v3:train".
  std::string label() const;
  // Features per sample and the shape of one sample.
  const Shape& sample_shape() const { return sample_shape_; }
  // The feature columns' names, one per feature, when the features are scalar columns; empty
  // for a tensor column.
  const std::vector<std::string>& feature_names() const { return feature_names_; }
  // The vocabulary of each categorical feature column (see DatasetLoaderOptions::categorical).
  const Vocabularies& vocabularies() const { return vocabularies_; }
  // String columns the default feature list left out (not named in `categorical`).
  const std::vector<std::string>& ignored_string_columns() const { return ignored_strings_; }
  // Rows left out for nulls (Nulls::kDrop), over the whole version's selection.
  int64_t dropped_rows() const { return dropped_rows_; }
  // Whether every decoded shard fits the cache (a global shuffle), and the seconds next()
  // spent waiting for a batch since opening.
  bool global_shuffle() const { return global_; }
  double wait_seconds() const;
  // Bytes of decoded rows read from disk since opening (cache misses).
  int64_t bytes_loaded() const;

 private:
  struct Ready {  // one shard's rows, ready to copy into batches
    // rows * stride_ floats: a row's features (f32), then its label (int64, or f32 + pad).
    std::vector<float> x;
    int64_t bytes() const { return x.size() * 4; }
  };
  struct Slot {
    std::shared_ptr<const Ready> ready;
    bool loading = false;
    std::list<int>::iterator lru;
  };

  DatasetLoader(const DatasetStore& store, VersionInfo v, DatasetLoaderOptions o);
  Status init(const std::string& split);
  // Fills vocabularies_[name] (given, or the version's distinct values) and its value -> code.
  Status code_column(const std::string& name, std::unordered_map<std::string, float>* codes);
  Result<std::shared_ptr<const Ready>> shard(int i);
  Result<std::shared_ptr<const Ready>> load(int i);
  // Adds a loaded shard to the cache (cache_mu_ held) and evicts beyond the budget.
  void insert_locked(int i, std::shared_ptr<const Ready> r);
  std::shared_ptr<const std::vector<uint64_t>> order(int64_t epoch);
  Result<Batch> assemble(LoaderPosition p);
  void start();
  void stop();
  void work();
  int64_t key(LoaderPosition p) const { return p.epoch * batches_ + p.batch; }
  LoaderPosition at(int64_t k) const { return {k / batches_, k % batches_}; }

  const DatasetStore& store_;
  VersionInfo version_;
  DatasetLoaderOptions o_;
  std::string split_;
  std::vector<std::string> shard_ids_;
  std::vector<std::vector<uint32_t>> rows_of_;  // per shard: rows in the split
  std::vector<int64_t> ready_bytes_;            // per shard: decoded size estimate
  std::vector<int> feature_cols_;
  std::vector<std::string> read_cols_;
  ColumnType label_type_ = ColumnType::kInt64;
  int64_t features_ = 0;  // per sample
  int64_t stride_ = 0;    // floats per ready row
  Shape sample_shape_;
  int64_t total_rows_ = 0, batches_ = 0, dropped_rows_ = 0;
  std::vector<std::string> feature_names_;
  Vocabularies vocabularies_;
  std::vector<std::string> ignored_strings_;
  std::vector<std::unordered_map<std::string, float>> codes_;  // per feature column (string ones)
  bool global_ = true;

  // Shard cache.
  mutable std::mutex cache_mu_;
  std::condition_variable cache_cv_;
  std::vector<Slot> slots_;
  std::list<int> lru_;
  int64_t cached_bytes_ = 0, loaded_bytes_ = 0;

  // Epoch orders (the two most recent).
  std::mutex order_mu_;
  std::map<int64_t, std::shared_ptr<const std::vector<uint64_t>>> orders_;

  // Prefetch.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread> threads_;
  std::map<int64_t, Result<Batch>> done_;
  int64_t consume_ = 0, assign_ = 0;
  bool stop_ = false;
  double wait_s_ = 0;
};

}  // namespace dlsys::data
