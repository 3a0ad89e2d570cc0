#include "dist/bucket_reducer.h"

#include <algorithm>
#include <chrono>

#include "core/check.h"

namespace dlsys::dist {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}
}  // namespace

BucketReducer::BucketReducer(ProcessGroup* group, std::vector<Bucket> buckets)
    : group_(group), buckets_(std::move(buckets)), ready_(buckets_.size(), 0) {
  stats_.bucket_seconds.assign(buckets_.size(), 0.0);
  thread_ = std::thread([this] { loop(); });
}

BucketReducer::~BucketReducer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void BucketReducer::start(float* flat) {
  std::lock_guard<std::mutex> lock(mu_);
  DLSYS_CHECK(!active_, "BucketReducer::start before the last step's finish or abandon");
  flat_ = flat;
  std::fill(ready_.begin(), ready_.end(), 0);
  next_ = done_ = 0;
  compute_done_ = false;
  error_ = Status::OK();
  active_ = true;
  ++stats_.steps;
}

void BucketReducer::ready(size_t b) {
  ready(&b, 1);
}

void BucketReducer::ready(const std::vector<size_t>& bs) {
  ready(bs.data(), bs.size());
}

void BucketReducer::ready(const size_t* bs, size_t n) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < n; ++i) {
      DLSYS_CHECK(active_ && bs[i] < ready_.size() && !ready_[bs[i]],
                  "bucket {} marked ready twice, out of range, or outside a step", bs[i]);
      ready_[bs[i]] = 1;
    }
    compute_done_ = std::all_of(ready_.begin(), ready_.end(), [](char r) { return r != 0; });
  }
  cv_.notify_all();
}

Status BucketReducer::finish() {
  const auto t0 = Clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  for (size_t b = 0; b < ready_.size(); ++b)
    DLSYS_CHECK(ready_[b], "finish() before bucket {} of {} was marked ready", b, ready_.size());
  // The buckets not started yet are sent from this thread, which would only wait otherwise:
  // two thread wake-ups fewer per bucket (the whole all-reduce, with one bucket or without
  // overlap). One collective at a time: a bucket starts only when none is in flight.
  for (;;) {
    cv_.wait(lock, [&] { return next_ == done_ || !error_.ok(); });
    if (!error_.ok() || next_ == buckets_.size()) break;
    run_next(lock);
  }
  // After an error the bucket in flight (if any) has returned: nothing starts after an error.
  cv_.wait(lock, [&] { return next_ == done_; });
  active_ = false;
  stats_.wait_seconds += seconds_since(t0);
  return error_;
}

void BucketReducer::abandon() {
  std::unique_lock<std::mutex> lock(mu_);
  compute_done_ = true;
  if (!active_) return;
  // Nothing starts after this (the loop sees the error); the bucket in flight ends.
  if (error_.ok()) error_ = Status::Unavailable("the step was abandoned");
  cv_.notify_all();
  cv_.wait(lock, [&] { return next_ == done_; });
  active_ = false;
}

void BucketReducer::run_next(std::unique_lock<std::mutex>& lock) {
  const size_t b = next_++;
  const bool early = !compute_done_;
  float* data = flat_ + buckets_[b].begin;
  const size_t n = buckets_[b].end - buckets_[b].begin;
  lock.unlock();
  const auto t0 = Clock::now();
  Status st = group_->all_reduce_sum(data, n).with_context(
      fmt::format("gradient bucket {} of {}", b + 1, buckets_.size()));
  const double took = seconds_since(t0);
  lock.lock();
  stats_.comm_seconds += took;
  stats_.bucket_seconds[b] += took;
  ++stats_.buckets;
  stats_.started_early += early ? 1 : 0;
  if (!st.ok() && error_.ok()) error_ = std::move(st);
  ++done_;
  cv_.notify_all();
}

void BucketReducer::loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] {
      return stop_ || (active_ && error_.ok() && next_ == done_ && next_ < buckets_.size() &&
                       ready_[next_] && !compute_done_);
    });
    if (stop_) return;
    run_next(lock);
  }
}

Result<LinkEstimate> measure_link(ProcessGroup& group, size_t probe_bytes) {
  LinkEstimate est;
  est.probe_bytes = probe_bytes;
  auto median_time = [&](float* data, size_t n, int rounds) -> Result<double> {
    std::vector<double> t;
    for (int i = 0; i < rounds; ++i) {
      const auto t0 = Clock::now();
      DLSYS_RETURN_IF_ERROR(group.all_reduce_sum(data, n).with_context("measuring the link"));
      t.push_back(seconds_since(t0));
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  };
  float one = 0;
  DLSYS_RETURN_IF_ERROR(median_time(&one, 1, 3).status());  // connections warm up
  DLSYS_ASSIGN_OR_RETURN(est.latency_s, median_time(&one, 1, 7));
  std::vector<float> big(std::max<size_t>(probe_bytes / sizeof(float), 1), 0.0f);
  double t_big;
  DLSYS_ASSIGN_OR_RETURN(t_big, median_time(big.data(), big.size(), 3));
  est.bytes_per_s =
      static_cast<double>(big.size() * sizeof(float)) / std::max(t_big - est.latency_s, 1e-9);
  double mine[2] = {est.latency_s, est.bytes_per_s};
  DLSYS_RETURN_IF_ERROR(group.broadcast(mine, sizeof(mine), 0).with_context("measuring the link"));
  est.latency_s = mine[0];
  est.bytes_per_s = mine[1];
  return est;
}

size_t choose_bucket_bytes(const LinkEstimate& link, size_t gradient_bytes) {
  // A bucket of b bytes takes latency + b / bandwidth; latency <= 10% of that when
  // b >= 9 x latency x bandwidth. A bucket is sent once its gradients are all computed: one
  // holding every gradient waits for the whole backward pass, so at least two.
  double b = 9.0 * link.latency_s * link.bytes_per_s;
  if (gradient_bytes > 0) b = std::min(b, static_cast<double>(gradient_bytes) / 2);
  const double lo = 64.0 * 1024, hi = 16.0 * 1024 * 1024;
  return static_cast<size_t>(std::clamp(b, lo, hi)) / 4 * 4;
}

std::vector<Bucket> buckets_from_the_end(const std::vector<size_t>& offsets, size_t bucket_bytes) {
  std::vector<Bucket> out;
  if (offsets.size() < 2) return out;
  const size_t want = std::max<size_t>(bucket_bytes / sizeof(float), 1);
  size_t end = offsets.back();
  for (size_t k = offsets.size() - 1; k-- > 0;) {
    const size_t begin = offsets[k];
    if ((end - begin >= want || k == 0) && end > begin) {  // no empty bucket (empty params)
      out.push_back(Bucket{begin, end});
      end = begin;
    }
  }
  return out;
}

}  // namespace dlsys::dist
