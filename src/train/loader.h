// Loader: batches of a dataset for the trainer. The interface is what the dataset manager will
// implement later; TensorLoader serves an in-memory Dataset now: a seeded shuffle per epoch
// (the order depends only on seed and epoch, so a resumed run sees the same batches), a
// prefetch thread that assembles the next batches while the trainer computes, and a position
// (epoch, batch) that checkpoints save and seek() restores.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "train/dataset.h"

namespace dlsys::train {

struct LoaderPosition {
  int64_t epoch = 0;
  int64_t batch = 0;  // index of the next batch within the epoch
  bool operator==(const LoaderPosition& o) const { return epoch == o.epoch && batch == o.batch; }
};

struct Batch {
  Tensor x;                 // f32 [B, ...]
  Tensor y;                 // labels [B] or [B, K]
  LoaderPosition position;  // where this batch came from
};

class Loader {
 public:
  virtual ~Loader() = default;
  virtual int64_t samples() const = 0;
  virtual int64_t batches_per_epoch() const = 0;
  // Returns the next batch; after an epoch's last batch comes the next epoch's first.
  virtual Result<Batch> next() = 0;
  // The position of the batch next() returns next.
  virtual LoaderPosition position() const = 0;
  // Continues from `p` (a position() saved earlier).
  virtual Status seek(LoaderPosition p) = 0;
};

struct LoaderOptions {
  int64_t batch_size = 32;
  bool shuffle = true;
  uint64_t seed = 0;
  bool drop_last = false;  // drop a last batch smaller than batch_size
  int prefetch = 2;        // batches assembled ahead; 0: assemble in next()
};

class TensorLoader : public Loader {
 public:
  // Errors when the batch size is not positive or the dataset is empty.
  static Result<std::unique_ptr<TensorLoader>> make(Dataset data, LoaderOptions options);
  ~TensorLoader() override;

  int64_t samples() const override { return data_.size(); }
  int64_t batches_per_epoch() const override { return batches_; }
  Result<Batch> next() override;
  LoaderPosition position() const override;
  Status seek(LoaderPosition p) override;

 private:
  TensorLoader(Dataset data, LoaderOptions options);
  Batch assemble(LoaderPosition p);
  const std::vector<int64_t>& order(int64_t epoch);
  void start_prefetch();
  void stop_prefetch();
  static LoaderPosition advance(LoaderPosition p, int64_t batches);

  Dataset data_;
  LoaderOptions o_;
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

}  // namespace dlsys::train
