// TensorLoader: batches of an in-memory dataset (data/in_memory_dataset.h): a seeded shuffle per
// epoch (the order depends only on seed and epoch, so a resumed run sees the same batches), a
// prefetch thread that assembles the next batches while the trainer computes, and a position
// (epoch, batch) that checkpoints save and seek() restores.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "data/in_memory_dataset.h"
#include "data/loader.h"

namespace dlsys::data {

struct TensorLoaderOptions {
  int64_t batch_size = 32;
  bool shuffle = true;
  uint64_t seed = 0;
  bool drop_last = false;  // drop a last batch smaller than batch_size
  int prefetch = 2;        // batches assembled ahead; 0: assemble in next()
  BatchPart part;          // the rows of each batch to assemble (data/loader.h)
};

class TensorLoader : public Loader {
 public:
  // Errors when the batch size is not positive or the dataset is empty.
  static Result<std::unique_ptr<TensorLoader>> make(InMemoryDataset data,
                                                    TensorLoaderOptions options);
  ~TensorLoader() override;

  int64_t samples() const override { return data_.size(); }
  int64_t batches_per_epoch() const override { return batches_; }
  Result<Batch> next() override;
  LoaderPosition position() const override;
  Status seek(LoaderPosition p) override;

 private:
  TensorLoader(InMemoryDataset data, TensorLoaderOptions options);
  Batch assemble(LoaderPosition p);
  const std::vector<int64_t>& order(int64_t epoch);
  void start_prefetch();
  void stop_prefetch();
  static LoaderPosition advance(LoaderPosition p, int64_t batches);

  InMemoryDataset data_;
  TensorLoaderOptions o_;
  int64_t batches_ = 0;
  int64_t order_epoch_ = -1;
  std::vector<int64_t> order_;
  LoaderPosition next_;  // consumer side

  std::thread thread_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Batch> queue_;
  LoaderPosition produce_;
  bool stop_ = false;
};

}  // namespace dlsys::data
