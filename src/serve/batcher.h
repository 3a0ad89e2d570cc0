// DynamicBatcher: a bounded, prioritized request queue in front of N model instances. Requests
// of any row count are concatenated along dimension 0 into batches of at most max_batch rows,
// padded to a bucket size, run through a RunFn, and split back per request.
//
// Threading: one worker thread per instance (index 0..instances-1) and one timer thread, all
// started by create(). submit(), stats() and stop() are thread-safe and may be called from any
// thread except from inside a `done` callback or the RunFn (stop() would wait on itself).
// `done` callbacks run on batcher threads (a worker, or the timer for expired requests), or, with
// direct dispatch (BatcherOptions::inline_below_us), on the thread calling submit() before it
// returns; never under the batcher's lock; they should be short (a slow callback delays its
// worker's next batch). An instance runs one batch at a time, whoever runs it.
//
// Batch forming: one idle worker at a time forms a batch. It takes the oldest request of the most
// urgent non-empty priority level (0 is the most urgent) and keeps adding requests in the same
// order (most urgent level first, FIFO within a level) while the total rows fit in max_batch. It
// leaves as soon as the batch is full or the next request in that order does not fit, and
// otherwise after max_delay_us counted from when it took the first request. Requests are never
// split across batches. The batch is padded to the smallest bucket >= its rows.
//
// Deadlines: a request whose deadline passes while it is queued is answered at that moment with
// StatusCode::kDeadlineExceeded by the timer thread, which waits on the earliest deadline, so
// this holds even while every instance is busy. A request already taken into a batch that is
// still forming (waiting up to max_delay_us for more) is answered the same way at its deadline
// by the forming worker. A request whose batch would end past its deadline (by the batches' run
// time so far: moving average plus four mean deviations) is answered the same way when the batch
// starts; a batch refused whole halves the deviation, so one very slow batch cannot lock every
// later request out. Once a batch runs, its requests are answered with the run's outcome.
//
// Lifetime: stop() (also run by the destructor) refuses new requests ("shutting down"), lets the
// workers run every queued request (drain), then joins all threads. Idempotent. After stop()
// returns, every accepted request's `done` has been called exactly once. The RunFn must stay
// callable until stop() returns.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/status.h"
#include "serve/latency_histogram.h"
#include "tensor/tensor.h"

namespace dlsys::serve {

using Clock = std::chrono::steady_clock;

struct BatcherOptions {
  int64_t max_batch = 32;       // rows per batch, at least 1
  int64_t max_delay_us = 2000;  // how long a forming batch waits for more requests
  int64_t max_queue = 256;      // queued requests (not yet taken into a batch), at least 1
  int instances = 1;            // active workers at start; each runs batches on its own instance
  // Worker threads created (>= instances; 0: instances). Workers from `instances` up are parked
  // until set_active() lets them take batches (autoscaling).
  int max_instances = 0;
  int priority_levels = 1;  // priorities 0 (most urgent) .. priority_levels-1
  // Padded batch sizes, ascending; the last must be >= max_batch. Empty: default_buckets().
  std::vector<int64_t> buckets = {};
  // Direct dispatch: with max_delay_us 0, a request that finds nothing queued and an idle
  // instance runs at once on the thread that submits it (no hand-off to a worker) when the
  // batches so far took under this many microseconds on average (a fast model: the submitting
  // thread, often an I/O thread, is not held for long). 0: never.
  int64_t inline_below_us = 0;
  // Load shedding: refuse at once (Unavailable) a request that, by the batches queued ahead of
  // it and the average batch time so far, would not start before its deadline, instead of
  // letting it expire in the queue. Off: every request waits for its deadline.
  bool shed_late = false;
};

struct Request {
  std::vector<Tensor> inputs;  // graph order; every input's dim 0 equals rows
  int64_t rows = 1;
  int priority = 0;
  Clock::time_point deadline = Clock::time_point::max();
  // Called exactly once, from a batcher thread: this request's rows of every output (owned
  // tensors), or the error that answered it (the run's, or kDeadlineExceeded).
  std::function<void(Result<std::vector<Tensor>>)> done;
};

// Runs one padded batch on instance `instance`: `padded_inputs` hold `rows` real rows followed
// by zero rows up to the bucket size. Returns outputs whose dim 0 is the padded batch (views are
// fine: the batcher copies each request's rows before the next call on this instance). Called
// by one worker per instance, so never concurrently for the same instance.
using RunFn = std::function<Result<std::vector<Tensor>>(
    int instance, const std::vector<Tensor>& padded_inputs, int64_t rows)>;

struct BatcherStats {
  int64_t queue_depth = 0;  // requests queued now (not yet taken into a batch)
  int64_t done = 0;         // answered with outputs
  int64_t rejected = 0;     // refused by submit (invalid, queue full, shed, shutting down)
  int64_t shed = 0;         // of those: would have missed the deadline (BatcherOptions::shed_late)
  int64_t expired = 0;      // answered kDeadlineExceeded
  int64_t failed = 0;       // answered with a run (or batch assembly) error
  int64_t batches = 0;      // RunFn calls
  // batch_rows[r]: batches that carried r real rows (r in 1..max_batch; index 0 stays 0).
  std::vector<int64_t> batch_rows;
  int64_t queue_us = 0;      // sum over requests that ran of (taken into a batch - submitted)
  int64_t compute_us = 0;    // sum over batches of the RunFn's wall time
  int active_instances = 0;  // workers taking batches now
};

class DynamicBatcher {
 public:
  // Checks the options (errors name the bad field) and starts the worker and timer threads.
  static Result<std::unique_ptr<DynamicBatcher>> create(BatcherOptions opts, RunFn run);
  ~DynamicBatcher();
  DynamicBatcher(const DynamicBatcher&) = delete;
  DynamicBatcher& operator=(const DynamicBatcher&) = delete;

  // Queues `r`. Refuses at once, without calling r.done: rows < 1 or > max_batch, an inputs'
  // dim 0 that is not rows, a priority out of range or no `done` (kInvalidArgument naming the
  // numbers); a full queue (kUnavailable "queue full (N requests)": answer 503 + Retry-After);
  // with shed_late, a request the queue would not reach before its deadline (kUnavailable "the
  // request would wait about ..."); after stop() (kUnavailable "shutting down"). On OK, r.done
  // will be called exactly once.
  Status submit(Request r);
  // Lets workers 0..n-1 take batches (n is clamped to 1..max_instances). When n shrinks, returns
  // once the workers from n up have finished the batch they were forming or running, so their
  // instances may then be released. Not from a `done` callback or the RunFn.
  void set_active(int n);
  int active() const;
  // Stops taking requests, drains the queue, joins the threads. Idempotent.
  void stop();
  BatcherStats stats() const;
  const BatcherOptions& options() const { return opts_; }
  // Per request that ran (it counts the same requests as stats().queue_us): the time from
  // submit() to its batch starting. Buckets LatencyHistogram::kFineBoundsUs.
  const LatencyHistogram& queue_time() const { return queue_time_; }
  // Per batch run (the batches of stats().batches): the RunFn's wall time.
  const LatencyHistogram& compute_time() const { return compute_time_; }

 private:
  struct Item {
    Request req;
    Clock::time_point submitted;
  };
  DynamicBatcher(BatcherOptions opts, RunFn run);
  void worker_loop(int instance);
  void timer_loop();
  // Pops the next request in priority order if it fits in `room` rows; false otherwise.
  bool take_next(int64_t room, std::vector<Item>* batch);
  bool queue_empty() const;
  void run_batch(int instance, std::vector<Item> batch);
  // Direct dispatch: an idle instance (busy_ set) for a request that need not queue, or -1.
  int claim_inline_locked();

  const BatcherOptions opts_;
  const RunFn run_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_;       // workers: a request arrived, forming ended, stopping
  std::condition_variable timer_cv_;      // timer: a request arrived, stopping
  std::vector<std::deque<Item>> queues_;  // one per priority level
  int64_t queued_ = 0;
  int64_t queued_rows_ = 0;          // rows of the queued requests
  bool forming_ = false;             // a worker is forming a batch
  int active_ = 1;                   // workers 0..active_-1 take batches
  std::vector<char> busy_;           // busy_[i]: worker i is forming or running a batch
  std::condition_variable idle_cv_;  // set_active, stop: a batch finished
  int inline_running_ = 0;           // batches running on submitting threads
  int64_t avg_compute_us_ = -1;      // moving average of a batch's run time (-1: none yet)
  int64_t dev_compute_us_ = 0;       // moving average of |run time - avg_compute_us_|
  // When the timer thread wakes next (max: nothing queued; min: awake, it rescans anyway):
  // submit() wakes it only for a deadline earlier than this.
  Clock::time_point timer_next_ = Clock::time_point::min();
  bool stopping_ = false;    // submit refuses; workers drain and exit
  bool timer_stop_ = false;  // the timer exits
  BatcherStats stats_;
  LatencyHistogram queue_time_{LatencyHistogram::kFineBoundsUs};
  LatencyHistogram compute_time_{LatencyHistogram::kFineBoundsUs};
  std::vector<std::thread> workers_;
  std::thread timer_;
  std::mutex stop_mu_;  // serializes stop()
  bool stopped_ = false;
};

}  // namespace dlsys::serve
