#include "data/dataset_loader.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <limits>
#include <set>

#include "data/push.h"
#include "data/shard.h"

namespace dlsys::data {

namespace {

uint64_t splitmix64(uint64_t* s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Fisher-Yates with a fixed generator: the same order on every platform and library.
template <typename T>
void shuffle(std::vector<T>* v, size_t begin, size_t end, uint64_t* state) {
  for (size_t i = end - begin; i > 1; --i) {
    uint64_t j = static_cast<uint64_t>((static_cast<__uint128_t>(splitmix64(state)) * i) >> 64);
    std::swap((*v)[begin + i - 1], (*v)[begin + j]);
  }
}

}  // namespace

DatasetLoader::DatasetLoader(const DatasetStore& store, VersionInfo v, DatasetLoaderOptions o)
    : store_(store), version_(std::move(v)), o_(std::move(o)) {}

DatasetLoader::~DatasetLoader() {
  stop();
}

std::string DatasetLoader::label() const {
  return version_.label() + (split_.empty() ? "" : ":" + split_);
}

Result<std::unique_ptr<DatasetLoader>> DatasetLoader::open(const DatasetStore& store,
                                                           const VersionRef& ref,
                                                           DatasetLoaderOptions options) {
  if (options.batch_size < 1)
    return Status::Invalid("batch size {} must be at least 1", options.batch_size);
  DLSYS_RETURN_IF_ERROR(options.part.check());
  if (options.threads < 1) options.threads = 1;
  if (options.prefetch < 1) options.prefetch = 1;
  DLSYS_ASSIGN_OR_RETURN(VersionInfo v, store.resolve(ref));
  std::unique_ptr<DatasetLoader> l(new DatasetLoader(store, std::move(v), std::move(options)));
  DLSYS_RETURN_IF_ERROR(l->init(ref.split));
  l->start();
  return l;
}

Status DatasetLoader::init(const std::string& split) {
  split_ = split;
  const json& m = version_.manifest;
  DLSYS_ASSIGN_OR_RETURN(Schema schema, Schema::from_json(m.at("schema")));
  std::string where = version_.label();
  // Pick the feature columns.
  std::vector<std::string> names = o_.features;
  auto is_categorical = [&](const std::string& n) {
    return std::find(o_.categorical.begin(), o_.categorical.end(), n) != o_.categorical.end();
  };
  if (names.empty()) {
    for (const auto& c : schema.columns)
      if (is_tensor(c.type) && c.name != o_.label) names.push_back(c.name);
    if (names.size() != 1) {
      names.clear();
      for (const auto& c : schema.columns)
        if ((is_numeric_scalar(c.type) ||
             (c.type == ColumnType::kString && is_categorical(c.name))) &&
            c.name != o_.label && c.name.rfind("__", 0) != 0)
          names.push_back(c.name);
        else if (c.type == ColumnType::kString && c.name != o_.label && c.name.rfind("__", 0) != 0)
          ignored_strings_.push_back(c.name);
    }
    if (names.empty())
      return Status::Invalid("{}: no numeric columns to use as features; name them", where);
  }
  bool tensor_feature = false;
  for (const auto& n : names) {
    int c = schema.index(n);
    if (c < 0) return Status::NotFound("{}: no column '{}' to use as a feature", where, n);
    const ColumnSchema& cs = schema.columns[c];
    if (cs.type == ColumnType::kString && !is_categorical(n))
      return Status::Invalid(
          "{}: column '{}' holds strings; a string feature is a category: add `- onehot: [{}]` "
          "to data.preprocess (or leave it out of data.features)",
          where, n, n);
    if (is_tensor(cs.type)) {
      if (names.size() != 1)
        return Status::Invalid("{}: tensor column '{}' must be the only feature column", where, n);
      tensor_feature = true;
      sample_shape_ = cs.shape;
    }
    features_ += cs.numel();
    feature_cols_.push_back(c);
    read_cols_.push_back(n);
  }
  if (!tensor_feature) {
    sample_shape_ = {features_};
    feature_names_ = names;
  }
  codes_.resize(feature_cols_.size());
  for (size_t k = 0; k < feature_cols_.size(); ++k)
    if (schema.columns[feature_cols_[k]].type == ColumnType::kString)
      DLSYS_RETURN_IF_ERROR(code_column(names[k], &codes_[k]));
  stride_ = features_ + 2;  // features, then the label (8 bytes)
  if (!o_.label.empty()) {
    int c = schema.index(o_.label);
    if (c < 0)
      return Status::NotFound("{}: no label column '{}'; give the label column, or none", where,
                              o_.label);
    if (!is_numeric_scalar(schema.columns[c].type))
      return Status::Invalid("{}: label column '{}' is {}, not int64 or float64", where, o_.label,
                             column_type_name(schema.columns[c].type));
    label_type_ = schema.columns[c].type;
    read_cols_.push_back(o_.label);
  }
  int64_t split_id_value = -1;
  if (!split.empty()) {
    DLSYS_ASSIGN_OR_RETURN(split_id_value, split_id(split));
    if (schema.index("__split") < 0)
      return Status::Invalid("{}: the version has no split column", where);
  }
  // kDrop reads the null masks of the columns that have nulls (the version's statistics say
  // which; all of them when a manifest has no statistics).
  std::vector<std::string> nullable;
  if (o_.nulls == DatasetLoaderOptions::Nulls::kDrop)
    for (const std::string& c : read_cols_) {
      const json* st = nullptr;
      if (m.contains("stats") && m["stats"].contains(c)) st = &m["stats"][c];
      if (!st || st->value("nulls", int64_t(1)) > 0) nullable.push_back(c);
    }
  const json& shards = m.at("shards");
  slots_.resize(shards.size());
  for (size_t i = 0; i < shards.size(); ++i) {
    std::string id = shards[i].at("id").get<std::string>();
    int64_t rows = shards[i].at("rows").get<int64_t>();
    shard_ids_.push_back(id);
    ready_bytes_.push_back(rows * (features_ * 4 + 8));
    std::vector<uint32_t> keep;
    if (split_id_value >= 0) {
      std::string w = fmt::format("shard {} of {}", id.substr(0, 12), where);
      DLSYS_ASSIGN_OR_RETURN(RowBatch b, read_shard(store_.shard_path(id), {"__split"}, w));
      for (int64_t r = 0; r < b.rows; ++r)
        if (b.columns[0].i64[r] == split_id_value) keep.push_back(static_cast<uint32_t>(r));
    } else {
      keep.resize(rows);
      for (int64_t r = 0; r < rows; ++r) keep[r] = static_cast<uint32_t>(r);
    }
    if (!nullable.empty()) {
      std::string w = fmt::format("shard {} of {}", id.substr(0, 12), where);
      DLSYS_ASSIGN_OR_RETURN(RowBatch b, read_shard(store_.shard_path(id), nullable, w));
      size_t before = keep.size();
      keep.erase(std::remove_if(keep.begin(), keep.end(),
                                [&](uint32_t r) {
                                  for (const ColumnData& d : b.columns)
                                    if (d.is_null(r)) return true;
                                  return false;
                                }),
                 keep.end());
      dropped_rows_ += static_cast<int64_t>(before - keep.size());
    }
    total_rows_ += keep.size();
    rows_of_.push_back(std::move(keep));
  }
  if (total_rows_ == 0) return Status::Invalid("{}: no rows to load", label());
  int64_t ready_total = 0;
  for (int64_t b : ready_bytes_) ready_total += b;
  global_ = ready_total <= o_.cache_bytes;
  batches_ = o_.drop_last ? total_rows_ / o_.batch_size
                          : (total_rows_ + o_.batch_size - 1) / o_.batch_size;
  if (batches_ == 0)
    return Status::Invalid("{}: {} rows make no batch of {} with drop_last", label(), total_rows_,
                           o_.batch_size);
  return Status::OK();
}

Status DatasetLoader::code_column(const std::string& name,
                                  std::unordered_map<std::string, float>* codes) {
  std::vector<std::string>& vocab = vocabularies_[name];
  if (auto given = o_.vocabularies.find(name); given != o_.vocabularies.end()) {
    vocab = given->second;
  } else {
    // The sorted distinct values of every shard (every split).
    std::set<std::string, std::less<>> seen;
    const json& shards = version_.manifest.at("shards");
    for (const json& sh : shards) {
      std::string id = sh.at("id").get<std::string>();
      std::string w = fmt::format("shard {} of {}", id.substr(0, 12), version_.label());
      DLSYS_ASSIGN_OR_RETURN(RowBatch b, read_shard(store_.shard_path(id), {name}, w));
      const ColumnData& d = b.columns[0];
      for (int64_t r = 0; r < b.rows; ++r)
        if (!d.is_null(r) && seen.size() <= kMaxVocabulary && !seen.count(d.str(r)))
          seen.emplace(d.str(r));
      if (static_cast<int64_t>(seen.size()) > kMaxVocabulary)
        return Status::Invalid(
            "{}: column '{}' has more than {} distinct values; it is not a category (leave it "
            "out of data.features)",
            version_.label(), name, kMaxVocabulary);
    }
    vocab.assign(seen.begin(), seen.end());
  }
  for (size_t i = 0; i < vocab.size(); ++i) codes->emplace(vocab[i], static_cast<float>(i));
  return Status::OK();
}

std::shared_ptr<const std::vector<uint64_t>> DatasetLoader::order(int64_t epoch) {
  std::lock_guard<std::mutex> l(order_mu_);
  auto it = orders_.find(epoch);
  if (it != orders_.end()) return it->second;
  uint64_t state = o_.seed * 0x2545f4914f6cdd1dull + static_cast<uint64_t>(epoch) + 1;
  std::vector<int> shard_order(shard_ids_.size());
  for (size_t i = 0; i < shard_order.size(); ++i) shard_order[i] = static_cast<int>(i);
  if (o_.shuffle && !global_) shuffle(&shard_order, 0, shard_order.size(), &state);
  std::vector<uint64_t> all;
  all.reserve(total_rows_);
  std::vector<size_t> window_starts = {0};
  int64_t window_bytes = 0;
  for (int s : shard_order) {
    if (!global_ && window_bytes > 0 && window_bytes + ready_bytes_[s] > o_.cache_bytes / 2) {
      window_starts.push_back(all.size());
      window_bytes = 0;
    }
    window_bytes += ready_bytes_[s];
    for (uint32_t r : rows_of_[s]) all.push_back((uint64_t(s) << 32) | r);
  }
  window_starts.push_back(all.size());
  if (o_.shuffle)
    for (size_t w = 0; w + 1 < window_starts.size(); ++w)
      shuffle(&all, window_starts[w], window_starts[w + 1], &state);
  auto shared = std::make_shared<const std::vector<uint64_t>>(std::move(all));
  orders_[epoch] = shared;
  while (orders_.size() > 2) orders_.erase(orders_.begin());
  return shared;
}

Result<std::shared_ptr<const DatasetLoader::Ready>> DatasetLoader::load(int i) {
  std::string w = fmt::format("shard {} of {}", shard_ids_[i].substr(0, 12), version_.label());
  DLSYS_ASSIGN_OR_RETURN(RowBatch b, read_shard(store_.shard_path(shard_ids_[i]), read_cols_, w));
  auto r = std::make_shared<Ready>();
  r->x.resize(b.rows * stride_);
  int64_t off = 0;
  for (size_t k = 0; k < feature_cols_.size(); ++k) {
    const ColumnData& d = b.columns[k];
    const ColumnSchema& cs = b.schema.columns[k];
    if (!d.valid.empty() && o_.nulls == DatasetLoaderOptions::Nulls::kError)
      for (int64_t row = 0; row < b.rows; ++row)
        if (!d.valid[row])
          return Status::Invalid(
              "{}: feature column '{}' is null at row {}; in the training spec, set "
              "`data.nulls: drop` to leave such rows out, or add an impute step to "
              "data.preprocess (`- impute: median`) to fill them",
              w, cs.name, row);
    float* x = r->x.data();
    const float s = o_.scale;
    switch (cs.type) {
      case ColumnType::kInt64:
        for (int64_t row = 0; row < b.rows; ++row) x[row * stride_ + off] = float(d.i64[row]) * s;
        break;
      case ColumnType::kFloat64:
        for (int64_t row = 0; row < b.rows; ++row) x[row * stride_ + off] = float(d.f64[row]) * s;
        break;
      case ColumnType::kString: {  // a category's code; never scaled
        const auto& codes = codes_[k];
        for (int64_t row = 0; row < b.rows; ++row) {
          if (d.is_null(row)) continue;
          auto c = codes.find(std::string(d.str(row)));
          x[row * stride_ + off] = c == codes.end() ? -1.0f : c->second;
        }
        break;
      }
      case ColumnType::kTensorU8:
        for (int64_t row = 0; row < b.rows; ++row)
          for (int64_t e = 0; e < features_; ++e)
            x[row * stride_ + e] = float(d.raw[row * features_ + e]) * s;
        break;
      case ColumnType::kTensorF32: {
        const float* p = reinterpret_cast<const float*>(d.raw.data());
        for (int64_t row = 0; row < b.rows; ++row)
          for (int64_t e = 0; e < features_; ++e) x[row * stride_ + e] = p[row * features_ + e] * s;
        break;
      }
      default:
        break;
    }
    if (!d.valid.empty() && (is_numeric_scalar(cs.type) || cs.type == ColumnType::kString))
      for (int64_t row = 0; row < b.rows; ++row)
        if (!d.valid[row]) x[row * stride_ + off] = std::numeric_limits<float>::quiet_NaN();
    off += cs.numel();
  }
  if (!o_.label.empty()) {
    const ColumnData& d = b.columns.back();
    for (int64_t row = 0; row < b.rows; ++row)
      if (d.is_null(row) && o_.nulls != DatasetLoaderOptions::Nulls::kDrop)
        return Status::Invalid(
            "{}: label '{}' is null at row {}; set `data.nulls: drop` in the training spec to "
            "leave rows without a label out",
            w, o_.label, row);
    // The label sits after the row's features (8 bytes), so a row is one contiguous read.
    for (int64_t row = 0; row < b.rows; ++row) {
      float* dst = r->x.data() + row * stride_ + features_;
      if (label_type_ == ColumnType::kInt64) {
        std::memcpy(dst, &d.i64[row], 8);
      } else {
        float v = static_cast<float>(d.f64[row]);
        std::memcpy(dst, &v, 4);
      }
    }
  }
  return std::shared_ptr<const Ready>(std::move(r));
}

Result<std::shared_ptr<const DatasetLoader::Ready>> DatasetLoader::shard(int i) {
  std::unique_lock<std::mutex> l(cache_mu_);
  Slot& s = slots_[i];
  cache_cv_.wait(l, [&] { return !s.loading; });
  if (s.ready) {
    lru_.splice(lru_.end(), lru_, s.lru);  // most recently used last
    return s.ready;
  }
  s.loading = true;
  l.unlock();
  auto r = load(i);
  l.lock();
  s.loading = false;
  cache_cv_.notify_all();
  if (!r.ok()) return r.status();
  insert_locked(i, *r);
  return s.ready;
}

void DatasetLoader::insert_locked(int i, std::shared_ptr<const Ready> r) {
  Slot& s = slots_[i];
  s.ready = std::move(r);
  lru_.push_back(i);
  s.lru = std::prev(lru_.end());
  cached_bytes_ += s.ready->bytes();
  loaded_bytes_ += s.ready->bytes();
  while (cached_bytes_ > o_.cache_bytes && lru_.size() > 1) {
    int victim = lru_.front();
    lru_.pop_front();
    cached_bytes_ -= slots_[victim].ready->bytes();
    slots_[victim].ready.reset();  // batches holding it keep their own reference
  }
}

Result<Batch> DatasetLoader::assemble(LoaderPosition p) {
  auto ord = order(p.epoch);
  int64_t begin = p.batch * o_.batch_size;
  int64_t end = std::min<int64_t>(begin + o_.batch_size, ord->size());
  const int64_t rows = end - begin, lo = o_.part.lo(rows);
  begin += lo;  // only this consumer's part of the batch
  const int64_t n = o_.part.hi(rows) - lo;
  Shape xs = {n};
  xs.insert(xs.end(), sample_shape_.begin(), sample_shape_.end());
  Batch b;
  b.position = p;
  b.rows = rows;
  b.offset = lo;
  b.x = Tensor::empty(DType::kF32, xs);
  if (!o_.label.empty())
    b.y = Tensor::empty(label_type_ == ColumnType::kInt64 ? DType::kI64 : DType::kF32, {n});
  float* x = static_cast<float*>(b.x.data());
  // The shards this batch needs. Shards nobody is loading yet are claimed and loaded by this
  // thread first, so that threads assembling different batches load different shards at once.
  std::vector<std::shared_ptr<const Ready>> local(shard_ids_.size());
  std::vector<int> needed;
  for (int64_t i = 0; i < n; ++i) {
    int s = static_cast<int>((*ord)[begin + i] >> 32);
    if (!local[s]) {
      local[s] = std::make_shared<const Ready>();  // marks "seen" until fetched below
      needed.push_back(s);
    }
  }
  std::vector<int> claimed;
  {
    std::lock_guard<std::mutex> l(cache_mu_);
    for (int s : needed)
      if (!slots_[s].ready && !slots_[s].loading) {
        slots_[s].loading = true;
        claimed.push_back(s);
      }
  }
  // Claimed shards load in parallel (reads and decompression overlap), up to 4 at once.
  std::vector<Result<std::shared_ptr<const Ready>>> loaded(claimed.size(),
                                                           Status::Internal("not loaded"));
  {
    std::atomic<size_t> next{0};
    auto run = [&] {
      for (size_t k; (k = next++) < claimed.size();) loaded[k] = load(claimed[k]);
    };
    std::vector<std::thread> helpers;
    for (size_t t = 1; t < std::min<size_t>(claimed.size(), 4); ++t) helpers.emplace_back(run);
    run();
    for (auto& t : helpers) t.join();
  }
  Status first_error;
  {
    std::lock_guard<std::mutex> l(cache_mu_);
    for (size_t k = 0; k < claimed.size(); ++k) {
      slots_[claimed[k]].loading = false;
      if (loaded[k].ok())
        insert_locked(claimed[k], *loaded[k]);
      else if (first_error.ok())
        first_error = loaded[k].status();
    }
    cache_cv_.notify_all();
  }
  DLSYS_RETURN_IF_ERROR(first_error);
  for (int s : needed) {
    DLSYS_ASSIGN_OR_RETURN(local[s], shard(s));
  }
  const bool has_label = !o_.label.empty();
  const bool i64_label = label_type_ == ColumnType::kInt64;
  constexpr int64_t kAhead = 8;  // rows are scattered: prefetch a few rows ahead
  for (int64_t i = 0; i < n; ++i) {
    if (i + kAhead < n) {
      uint64_t a = (*ord)[begin + i + kAhead];
      const Ready& ahead = *local[a >> 32];
      const float* p = ahead.x.data() + static_cast<uint32_t>(a) * stride_;
      __builtin_prefetch(p);
      __builtin_prefetch(p + stride_ - 1);
    }
    uint64_t e = (*ord)[begin + i];
    const Ready& cur = *local[e >> 32];
    uint32_t row = static_cast<uint32_t>(e);
    const float* src = cur.x.data() + row * stride_;
    std::memcpy(x + i * features_, src, features_ * 4);
    if (has_label) {
      if (i64_label)
        std::memcpy(static_cast<int64_t*>(b.y.data()) + i, src + features_, 8);
      else
        std::memcpy(static_cast<float*>(b.y.data()) + i, src + features_, 4);
    }
  }
  return b;
}

void DatasetLoader::work() {
  while (true) {
    int64_t k;
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return stop_ || assign_ < consume_ + o_.prefetch; });
      if (stop_) return;
      k = assign_++;
    }
    auto b = assemble(at(k));
    std::lock_guard<std::mutex> l(mu_);
    done_.emplace(k, std::move(b));
    cv_.notify_all();
  }
}

void DatasetLoader::start() {
  stop_ = false;
  assign_ = consume_;
  for (int i = 0; i < o_.threads; ++i) threads_.emplace_back([this] { work(); });
}

void DatasetLoader::stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  for (auto& t : threads_) t.join();
  threads_.clear();
  done_.clear();
}

Result<Batch> DatasetLoader::next() {
  auto t0 = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [&] { return done_.count(consume_) > 0; });
  auto node = done_.extract(consume_);
  ++consume_;
  cv_.notify_all();
  wait_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return std::move(node.mapped());
}

LoaderPosition DatasetLoader::position() const {
  std::lock_guard<std::mutex> l(mu_);
  return at(consume_);
}

Status DatasetLoader::seek(LoaderPosition p) {
  if (p.epoch < 0 || p.batch < 0 || p.batch >= batches_)
    return Status::Invalid("position epoch {} batch {} is outside the {} batches of an epoch",
                           p.epoch, p.batch, batches_);
  stop();
  consume_ = key(p);
  start();
  return Status::OK();
}

double DatasetLoader::wait_seconds() const {
  std::lock_guard<std::mutex> l(mu_);
  return wait_s_;
}

int64_t DatasetLoader::bytes_loaded() const {
  std::lock_guard<std::mutex> l(cache_mu_);
  return loaded_bytes_;
}

}  // namespace dlsys::data
