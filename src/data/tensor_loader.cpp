#include "data/tensor_loader.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>

namespace dlsys::data {

Result<std::unique_ptr<TensorLoader>> TensorLoader::make(InMemoryDataset data,
                                                         TensorLoaderOptions options) {
  if (options.batch_size < 1)
    return Status::Invalid("batch size {} must be at least 1", options.batch_size);
  if (data.size() == 0) return Status::Invalid("the dataset is empty: nothing to load");
  if (!data.labels.valid() || data.labels.rank() < 1 || data.labels.dim(0) != data.size())
    return Status::Invalid("the dataset has {} samples but its labels do not match", data.size());
  if (options.drop_last && data.size() < options.batch_size)
    return Status::Invalid("drop_last with batch size {} drops every one of the {} samples",
                           options.batch_size, data.size());
  if (options.prefetch < 0) return Status::Invalid("prefetch {} must be >= 0", options.prefetch);
  DLSYS_RETURN_IF_ERROR(options.part.check());
  std::unique_ptr<TensorLoader> l(new TensorLoader(std::move(data), options));
  l->start_prefetch();
  return l;
}

TensorLoader::TensorLoader(InMemoryDataset data, TensorLoaderOptions options)
    : data_(std::move(data)), o_(options) {
  int64_t n = data_.size();
  batches_ = o_.drop_last ? n / o_.batch_size : (n + o_.batch_size - 1) / o_.batch_size;
}

TensorLoader::~TensorLoader() {
  stop_prefetch();
}

LoaderPosition TensorLoader::advance(LoaderPosition p, int64_t batches) {
  if (++p.batch >= batches) {
    p.batch = 0;
    ++p.epoch;
  }
  return p;
}

const std::vector<int64_t>& TensorLoader::order(int64_t epoch) {
  if (order_epoch_ != epoch) {
    order_.resize(static_cast<size_t>(data_.size()));
    std::iota(order_.begin(), order_.end(), 0);
    if (o_.shuffle) {
      // The order depends on (seed, epoch) only.
      std::mt19937_64 rng(o_.seed ^ (0x9E3779B97F4A7C15ull * static_cast<uint64_t>(epoch + 1)));
      std::shuffle(order_.begin(), order_.end(), rng);
    }
    order_epoch_ = epoch;
  }
  return order_;
}

Batch TensorLoader::assemble(LoaderPosition p) {
  const std::vector<int64_t>& ord = order(p.epoch);
  int64_t begin = p.batch * o_.batch_size;
  int64_t end = std::min<int64_t>(begin + o_.batch_size, data_.size());
  const int64_t n = end - begin, lo = o_.part.lo(n), b = o_.part.hi(n) - lo;
  begin += lo;  // only this consumer's part of the batch
  auto rows = [&](const Tensor& t) {
    Shape s = t.shape();
    s[0] = b;
    Tensor out = Tensor::empty(t.dtype(), s);
    size_t row = t.nbytes() / static_cast<size_t>(t.dim(0));
    for (int64_t i = 0; i < b; ++i)
      std::memcpy(static_cast<char*>(out.data()) + static_cast<size_t>(i) * row,
                  static_cast<const char*>(t.data()) + static_cast<size_t>(ord[begin + i]) * row,
                  row);
    return out;
  };
  return Batch{rows(data_.features), rows(data_.labels), p, n, lo};
}

void TensorLoader::start_prefetch() {
  produce_ = next_;
  stop_ = false;
  if (o_.prefetch == 0) return;
  thread_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || static_cast<int>(queue_.size()) < o_.prefetch; });
      if (stop_) return;
      LoaderPosition p = produce_;
      produce_ = advance(p, batches_);
      lock.unlock();
      Batch b = assemble(p);  // the only thread touching order_ while prefetching
      lock.lock();
      if (stop_) return;
      queue_.push_back(std::move(b));
      cv_.notify_all();
    }
  });
}

void TensorLoader::stop_prefetch() {
  {
    std::lock_guard<std::mutex> g(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  queue_.clear();
}

Result<Batch> TensorLoader::next() {
  if (o_.prefetch == 0) {
    Batch b = assemble(next_);
    next_ = advance(next_, batches_);
    return b;
  }
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !queue_.empty(); });
  Batch b = std::move(queue_.front());
  queue_.pop_front();
  next_ = advance(b.position, batches_);
  cv_.notify_all();
  return b;
}

LoaderPosition TensorLoader::position() const {
  std::lock_guard<std::mutex> g(mu_);
  return next_;
}

Status TensorLoader::seek(LoaderPosition p) {
  if (p.epoch < 0 || p.batch < 0 || p.batch >= batches_)
    return Status::Invalid(
        "loader position (epoch {}, batch {}) is outside the {} batches of an "
        "epoch; was the checkpoint made with another batch size or dataset?",
        p.epoch, p.batch, batches_);
  stop_prefetch();
  next_ = p;
  start_prefetch();
  return Status::OK();
}

}  // namespace dlsys::data
