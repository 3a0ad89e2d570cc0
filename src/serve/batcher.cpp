#include "serve/batcher.h"

#include <algorithm>
#include <exception>
#include <utility>

#include "serve/batch_tensors.h"

namespace dlsys::serve {

namespace {

int64_t micros(Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

}  // namespace

Result<std::unique_ptr<DynamicBatcher>> DynamicBatcher::create(BatcherOptions opts, RunFn run) {
  if (opts.max_batch < 1) return Status::Invalid("batcher: max_batch {} < 1", opts.max_batch);
  if (opts.max_delay_us < 0) {
    return Status::Invalid("batcher: max_delay_us {} < 0", opts.max_delay_us);
  }
  if (opts.max_queue < 1) return Status::Invalid("batcher: max_queue {} < 1", opts.max_queue);
  if (opts.instances < 1) return Status::Invalid("batcher: instances {} < 1", opts.instances);
  if (opts.max_instances == 0) opts.max_instances = opts.instances;
  if (opts.max_instances < opts.instances) {
    return Status::Invalid("batcher: max_instances {} < instances {}", opts.max_instances,
                           opts.instances);
  }
  if (opts.priority_levels < 1) {
    return Status::Invalid("batcher: priority_levels {} < 1", opts.priority_levels);
  }
  if (!run) return Status::Invalid("batcher: no RunFn");
  if (opts.buckets.empty()) opts.buckets = default_buckets(opts.max_batch);
  for (size_t i = 0; i < opts.buckets.size(); ++i) {
    if (opts.buckets[i] < 1 || (i > 0 && opts.buckets[i] <= opts.buckets[i - 1])) {
      return Status::Invalid("batcher: buckets must be positive and ascending (bucket {} is {})", i,
                             opts.buckets[i]);
    }
  }
  if (opts.buckets.back() < opts.max_batch) {
    return Status::Invalid("batcher: the largest bucket {} is less than max_batch {}",
                           opts.buckets.back(), opts.max_batch);
  }
  return std::unique_ptr<DynamicBatcher>(new DynamicBatcher(std::move(opts), std::move(run)));
}

DynamicBatcher::DynamicBatcher(BatcherOptions opts, RunFn run)
    : opts_(std::move(opts)), run_(std::move(run)), queues_(opts_.priority_levels) {
  stats_.batch_rows.assign(static_cast<size_t>(opts_.max_batch) + 1, 0);
  active_ = opts_.instances;
  busy_.assign(static_cast<size_t>(opts_.max_instances), 0);
  timer_ = std::thread([this] { timer_loop(); });
  for (int i = 0; i < opts_.max_instances; ++i) {
    workers_.emplace_back([this, i] { worker_loop(i); });
  }
}

DynamicBatcher::~DynamicBatcher() {
  stop();
}

Status DynamicBatcher::submit(Request r) {
  Status invalid;
  if (r.rows < 1 || r.rows > opts_.max_batch) {
    invalid = Status::Invalid("request has {} rows; a request must have 1 to max_batch {} rows",
                              r.rows, opts_.max_batch);
  } else if (r.priority < 0 || r.priority >= opts_.priority_levels) {
    invalid = Status::Invalid("request priority {} is outside 0..{}", r.priority,
                              opts_.priority_levels - 1);
  } else if (!r.done) {
    invalid = Status::Invalid("request has no done callback");
  } else {
    for (size_t i = 0; i < r.inputs.size(); ++i) {
      if (r.inputs[i].rank() < 1 || r.inputs[i].dim(0) != r.rows) {
        invalid = Status::Invalid(
            "request input {} has shape {}; its first dimension must be the "
            "request's {} rows",
            i, shape_str(r.inputs[i].shape()), r.rows);
        break;
      }
    }
  }
  std::unique_lock<std::mutex> lk(mu_);
  if (!invalid.ok()) {
    ++stats_.rejected;
    return invalid;
  }
  if (stopping_) {
    ++stats_.rejected;
    return Status::Unavailable("shutting down");
  }
  if (queued_ >= opts_.max_queue) {
    ++stats_.rejected;
    return Status::Unavailable("queue full ({} requests)", opts_.max_queue);
  }
  if (opts_.shed_late && queued_ > 0 && avg_compute_us_ > 0) {
    // Work ahead of this request: the queued rows in full batches, spread over the instances,
    // plus the batch each instance may be running. A request that cannot be reached before its
    // deadline is refused now (503) instead of waiting to expire in the queue.
    const int64_t batches = (queued_rows_ + r.rows + opts_.max_batch - 1) / opts_.max_batch;
    const int64_t waves = (batches + active_ - 1) / active_ + 1;
    const int64_t ahead_us = waves * avg_compute_us_;
    const Clock::time_point now = Clock::now();
    if (now + std::chrono::microseconds(ahead_us) > r.deadline) {
      ++stats_.rejected;
      ++stats_.shed;
      return Status::Unavailable(
          "the request would wait about {} ms behind {} queued requests, past its deadline in "
          "{} ms; retry later or give it a longer parameters.timeout",
          ahead_us / 1000, queued_, std::max<int64_t>(0, micros(r.deadline - now)) / 1000);
    }
  }
  if (const int instance = claim_inline_locked(); instance >= 0) {
    ++inline_running_;
    lk.unlock();
    std::vector<Item> batch;
    batch.push_back(Item{std::move(r), Clock::now()});
    run_batch(instance, std::move(batch));
    lk.lock();
    busy_[static_cast<size_t>(instance)] = 0;
    --inline_running_;
    idle_cv_.notify_all();  // no system call unless set_active or stop waits
    // Its worker may take what was queued meanwhile. Only then: waking the idle workers for
    // nothing costs a futex wake and a context switch per request (5% of a fast model's
    // serving time in a profile).
    if (!queue_empty()) work_cv_.notify_all();
    return Status::OK();
  }
  const int level = r.priority;
  const Clock::time_point deadline = r.deadline;
  queues_[level].push_back(Item{std::move(r), Clock::now()});
  ++queued_;
  queued_rows_ += queues_[level].back().req.rows;
  work_cv_.notify_all();
  if (deadline < timer_next_) timer_cv_.notify_one();
  return Status::OK();
}

int DynamicBatcher::claim_inline_locked() {
  if (opts_.inline_below_us <= 0 || opts_.max_delay_us != 0 || queued_ != 0 || forming_ ||
      avg_compute_us_ < 0 || avg_compute_us_ >= opts_.inline_below_us) {
    return -1;
  }
  for (int i = 0; i < active_; ++i) {
    if (!busy_[static_cast<size_t>(i)]) {
      busy_[static_cast<size_t>(i)] = 1;
      return i;
    }
  }
  return -1;
}

bool DynamicBatcher::queue_empty() const {
  return queued_ == 0;
}

bool DynamicBatcher::take_next(int64_t room, std::vector<Item>* batch) {
  for (auto& q : queues_) {
    if (q.empty()) continue;
    if (q.front().req.rows > room) return false;  // never skip ahead of the next in order
    queued_rows_ -= q.front().req.rows;
    batch->push_back(std::move(q.front()));
    q.pop_front();
    --queued_;
    return true;
  }
  return false;
}

void DynamicBatcher::worker_loop(int instance) {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    work_cv_.wait(lk, [&] {
      return (instance < active_ && !busy_[static_cast<size_t>(instance)] && !forming_ &&
              !queue_empty()) ||
             (stopping_ && queue_empty());
    });
    if (queue_empty()) return;  // stopping and drained
    forming_ = true;
    busy_[static_cast<size_t>(instance)] = 1;
    std::vector<Item> batch;
    int64_t rows = 0;
    const Clock::time_point leave_at = Clock::now() + std::chrono::microseconds(opts_.max_delay_us);
    auto fill = [&] {
      while (rows < opts_.max_batch && take_next(opts_.max_batch - rows, &batch)) {
        rows += batch.back().req.rows;
      }
    };
    for (;;) {
      fill();
      // Full, or the next request in order does not fit: waiting cannot add anything.
      if (rows == opts_.max_batch || !queue_empty() || stopping_) break;
      // Wake for new requests, at leave_at, or at the earliest deadline in the forming batch.
      Clock::time_point wake = leave_at;
      for (const Item& it : batch) wake = std::min(wake, it.req.deadline);
      work_cv_.wait_until(lk, wake);
      const Clock::time_point now = Clock::now();
      std::vector<Item> expired;
      for (auto it = batch.begin(); it != batch.end();) {
        if (it->req.deadline <= now) {
          rows -= it->req.rows;
          expired.push_back(std::move(*it));
          it = batch.erase(it);
        } else {
          ++it;
        }
      }
      if (!expired.empty()) {
        stats_.expired += static_cast<int64_t>(expired.size());
        lk.unlock();
        for (Item& it : expired) {
          it.req.done(Status::DeadlineExceeded(
              "the request's deadline passed after {} us waiting for its batch to fill",
              micros(now - it.submitted)));
        }
        lk.lock();
      }
      if (batch.empty()) break;  // every request taken so far expired: start over
      if (Clock::now() >= leave_at) {
        fill();
        break;
      }
    }
    forming_ = false;
    // Another idle worker may start forming. (The timer is not woken: the earliest deadline can
    // only have moved later, and it rescans when it wakes.)
    work_cv_.notify_all();
    if (!batch.empty()) {
      lk.unlock();
      run_batch(instance, std::move(batch));
      lk.lock();
    }
    busy_[static_cast<size_t>(instance)] = 0;
    idle_cv_.notify_all();
  }
}

void DynamicBatcher::set_active(int n) {
  std::unique_lock<std::mutex> lk(mu_);
  active_ = std::clamp(n, 1, opts_.max_instances);
  work_cv_.notify_all();
  idle_cv_.wait(lk, [&] {
    for (size_t i = static_cast<size_t>(active_); i < busy_.size(); ++i) {
      if (busy_[i]) return false;
    }
    return true;
  });
}

int DynamicBatcher::active() const {
  std::lock_guard<std::mutex> lk(mu_);
  return active_;
}

void DynamicBatcher::run_batch(int instance, std::vector<Item> batch) {
  const Clock::time_point start = Clock::now();
  int64_t estimate_us = -1, typical_us = 0;
  {
    std::lock_guard<std::mutex> lk(mu_);
    // A batch's run time with room for its spread (as TCP estimates a retransmission timeout).
    estimate_us = avg_compute_us_ < 0 ? -1 : avg_compute_us_ + 4 * dev_compute_us_;
    typical_us = std::max<int64_t>(0, avg_compute_us_);
  }
  // Expired: the deadline passed, or a batch (its moving average plus four times the moving mean
  // deviation, TCP's RTO rule) can no longer end before it although a typical batch (the moving
  // average) could when the request arrived. Refused now, not answered after its deadline; a
  // request whose timeout was always shorter than a typical batch still runs (its caller chose
  // it). The typical batch, not the estimate, decides "always shorter": one slow batch inflates
  // the deviation, and must not turn queued requests into ones that run late.
  const auto estimate = std::chrono::microseconds(std::max<int64_t>(0, estimate_us));
  auto expires = [&](const Item& it) {
    if (it.req.deadline <= start) return true;
    return start + estimate > it.req.deadline &&
           it.submitted + std::chrono::microseconds(typical_us) <= it.req.deadline;
  };
  std::vector<Item> expired, live;
  for (auto& it : batch) (expires(it) ? expired : live).push_back(std::move(it));
  if (!expired.empty()) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stats_.expired += static_cast<int64_t>(expired.size());
      // A batch refused whole by the estimate measures nothing: after one very slow batch the
      // estimate could refuse every later request and never be corrected. Each such batch
      // halves the deviation, so the estimate falls back towards the average within a few.
      if (live.empty() && std::any_of(expired.begin(), expired.end(),
                                      [&](const Item& it) { return it.req.deadline > start; }))
        dev_compute_us_ /= 2;
    }
    for (auto& it : expired) {
      const int64_t left_us = micros(it.req.deadline - start);
      it.req.done(
          left_us <= 0
              ? Status::DeadlineExceeded("the request's deadline passed before it could run")
              : Status::DeadlineExceeded("the request's deadline is {} us away and a batch takes "
                                         "about {} us: refused rather than answered late; retry "
                                         "later or give it a longer parameters.timeout",
                                         left_us, estimate_us));
    }
  }
  if (live.empty()) return;
  std::vector<const std::vector<Tensor>*> parts;
  std::vector<int64_t> rows;
  int64_t total = 0, queue_us = 0;
  for (auto& it : live) {
    parts.push_back(&it.req.inputs);
    rows.push_back(it.req.rows);
    total += it.req.rows;
    const int64_t waited = micros(start - it.submitted);
    queue_us += waited;
    queue_time_.observe(waited);
  }
  Result<std::vector<std::vector<Tensor>>> answers = Status::Internal("batch did not run");
  Clock::time_point run_start = start, run_end = start;
  bool ran = false;
  auto padded = concat_rows(parts, bucket_for(total, opts_.buckets));
  if (!padded.ok()) {
    answers = padded.status();
  } else {
    run_start = Clock::now();
    Result<std::vector<Tensor>> out = Status::Internal("batch did not run");
    try {
      out = run_(instance, padded.value(), total);
    } catch (const std::exception& e) {
      out = Status::Internal("the model run threw: {}", e.what());
    }
    run_end = Clock::now();
    ran = true;
    compute_time_.observe(micros(run_end - run_start));
    answers = out.ok() ? split_rows(out.value(), rows)
                       : Result<std::vector<std::vector<Tensor>>>(out.status());
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    stats_.queue_us += queue_us;
    if (ran) {
      const int64_t us = micros(run_end - run_start);
      if (avg_compute_us_ >= 0)
        dev_compute_us_ = (dev_compute_us_ * 3 + std::abs(us - avg_compute_us_)) / 4;
      avg_compute_us_ = avg_compute_us_ < 0 ? us : (avg_compute_us_ * 7 + us) / 8;
      ++stats_.batches;
      ++stats_.batch_rows[static_cast<size_t>(total)];
      stats_.compute_us += micros(run_end - run_start);
    }
    if (answers.ok()) {
      stats_.done += static_cast<int64_t>(live.size());
    } else {
      stats_.failed += static_cast<int64_t>(live.size());
    }
  }
  for (size_t i = 0; i < live.size(); ++i) {
    if (answers.ok()) {
      live[i].req.done(std::move(answers.value()[i]));
    } else {
      live[i].req.done(answers.status());
    }
  }
}

void DynamicBatcher::timer_loop() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!timer_stop_) {
    Clock::time_point earliest = Clock::time_point::max();
    for (auto& q : queues_) {
      for (auto& it : q) earliest = std::min(earliest, it.req.deadline);
    }
    if (earliest == Clock::time_point::max()) {
      timer_next_ = earliest;
      timer_cv_.wait(lk);
      timer_next_ = Clock::time_point::min();
      continue;
    }
    if (Clock::now() < earliest) {
      timer_next_ = earliest;
      timer_cv_.wait_until(lk, earliest);
      timer_next_ = Clock::time_point::min();
      continue;  // recompute: the queue may have changed
    }
    const Clock::time_point now = Clock::now();
    std::vector<Item> expired;
    for (auto& q : queues_) {
      for (auto it = q.begin(); it != q.end();) {
        if (it->req.deadline <= now) {
          queued_rows_ -= it->req.rows;
          expired.push_back(std::move(*it));
          it = q.erase(it);
          --queued_;
        } else {
          ++it;
        }
      }
    }
    stats_.expired += static_cast<int64_t>(expired.size());
    if (stopping_ && queue_empty()) work_cv_.notify_all();
    lk.unlock();
    for (auto& it : expired) {
      it.req.done(Status::DeadlineExceeded("the request's deadline passed after {} us in the queue",
                                           micros(now - it.submitted)));
    }
    lk.lock();
  }
}

void DynamicBatcher::stop() {
  std::lock_guard<std::mutex> stop_lk(stop_mu_);
  if (stopped_) return;
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (auto& w : workers_) w.join();
  {
    // Batches run by submitting threads finish before the RunFn may go.
    std::unique_lock<std::mutex> lk(mu_);
    idle_cv_.wait(lk, [&] { return inline_running_ == 0; });
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    timer_stop_ = true;
  }
  timer_cv_.notify_all();
  timer_.join();
  stopped_ = true;
}

BatcherStats DynamicBatcher::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  BatcherStats s = stats_;
  s.queue_depth = queued_;
  s.active_instances = active_;
  return s;
}

}  // namespace dlsys::serve
