// DynamicBatcher with a fake RunFn (no engine): y = 2x + 1 row-wise, optionally held on a gate
// the test opens, so the tests depend on ordering the test controls, not on machine speed.
#include "serve/batcher.h"

#include <gtest/gtest.h>

#include <atomic>
#include <deque>
#include <future>
#include <optional>
#include <random>
#include <thread>

#include "serve/batch_tensors.h"

namespace dlsys::serve {
namespace {

using std::chrono::milliseconds;

// Holds runs until opened; counts runs that entered.
class Gate {
 public:
  void pass() {
    std::unique_lock<std::mutex> lk(mu_);
    ++entered_;
    cv_.notify_all();
    cv_.wait(lk, [&] { return open_; });
  }
  void wait_entered(int n) {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return entered_ >= n; });
  }
  void open() {
    std::lock_guard<std::mutex> lk(mu_);
    open_ = true;
    cv_.notify_all();
  }
  bool is_open() {
    std::lock_guard<std::mutex> lk(mu_);
    return open_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
  int entered_ = 0;
};

struct RunLog {
  std::mutex mu;
  std::vector<int64_t> rows, padded;
  std::vector<float> first_values;  // x[0] of each batch
};

// y = 2x + 1 over input 0 ([padded, cols] f32); records each batch; waits on `gate` if given.
RunFn fake_run(RunLog* log, Gate* gate = nullptr) {
  return
      [log, gate](int, const std::vector<Tensor>& in, int64_t rows) -> Result<std::vector<Tensor>> {
        {
          std::lock_guard<std::mutex> lk(log->mu);
          log->rows.push_back(rows);
          log->padded.push_back(in[0].dim(0));
          log->first_values.push_back(in[0].data_as<float>()[0]);
        }
        if (gate) gate->pass();
        Tensor y = Tensor::empty(DType::kF32, in[0].shape());
        for (int64_t i = 0; i < y.numel(); ++i) {
          y.data_as<float>()[i] = 2.f * in[0].data_as<float>()[i] + 1.f;
        }
        return std::vector<Tensor>{y};
      };
}

// A request of `rows` rows x [rows, 2] filled from `base`; its answer goes to the future.
struct Pending {
  std::shared_ptr<std::promise<Result<std::vector<Tensor>>>> p =
      std::make_shared<std::promise<Result<std::vector<Tensor>>>>();
  std::future<Result<std::vector<Tensor>>> f = p->get_future();
};

Request make_request(int64_t rows, float base, Pending* pending, int priority = 0) {
  Request r;
  Tensor x = Tensor::empty(DType::kF32, {rows, 2});
  for (int64_t i = 0; i < rows * 2; ++i) x.data_as<float>()[i] = base + static_cast<float>(i);
  r.inputs = {x};
  r.rows = rows;
  r.priority = priority;
  auto p = pending->p;
  r.done = [p](Result<std::vector<Tensor>> res) { p->set_value(std::move(res)); };
  return r;
}

std::unique_ptr<DynamicBatcher> make(BatcherOptions o, RunFn fn) {
  auto b = DynamicBatcher::create(std::move(o), std::move(fn));
  EXPECT_TRUE(b.ok()) << b.status().to_string();
  return std::move(b).value();
}

TEST(Batcher, AFullBatchLeavesAtOnceWithoutWaitingForTheDelay) {
  RunLog log;
  BatcherOptions o;
  o.max_batch = 8;
  o.max_delay_us = 60'000'000;  // a minute: only a full batch can leave in time
  auto b = make(o, fake_run(&log));
  Pending p1, p2, p3;
  const auto t0 = Clock::now();
  ASSERT_TRUE(b->submit(make_request(3, 0, &p1)).ok());
  ASSERT_TRUE(b->submit(make_request(3, 100, &p2)).ok());
  ASSERT_TRUE(b->submit(make_request(2, 200, &p3)).ok());
  auto r2 = p2.f.get();
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(10));
  ASSERT_TRUE(r2.ok()) << r2.status().to_string();
  // Request 2's rows come back to it: y = 2x + 1 of its own x.
  ASSERT_EQ(r2->at(0).shape(), (Shape{3, 2}));
  for (int i = 0; i < 6; ++i) EXPECT_EQ(r2->at(0).data_as<float>()[i], 2.f * (100 + i) + 1.f);
  EXPECT_TRUE(p1.f.get().ok());
  EXPECT_TRUE(p3.f.get().ok());
  b->stop();
  auto s = b->stats();
  EXPECT_EQ(s.batches, 1);
  EXPECT_EQ(s.batch_rows[8], 1);
  EXPECT_EQ(s.done, 3);
  ASSERT_EQ(log.rows, (std::vector<int64_t>{8}));
}

TEST(Batcher, BatchesAreNeverLargerThanMaxBatchAndArePaddedToABucket) {
  RunLog log;
  BatcherOptions o;
  o.max_batch = 8;
  o.max_delay_us = 500;
  o.instances = 2;
  o.max_queue = 1000;
  auto b = make(o, fake_run(&log));
  std::mt19937 rng(7);
  std::vector<Pending> pending(300);
  int64_t total = 0;
  for (size_t i = 0; i < pending.size(); ++i) {
    int64_t rows = 1 + static_cast<int64_t>(rng() % 8);
    total += rows;
    ASSERT_TRUE(b->submit(make_request(rows, 0, &pending[i])).ok());
  }
  for (auto& p : pending) EXPECT_TRUE(p.f.get().ok());
  b->stop();
  int64_t sum = 0;
  for (size_t i = 0; i < log.rows.size(); ++i) {
    EXPECT_GE(log.rows[i], 1);
    EXPECT_LE(log.rows[i], 8);
    EXPECT_EQ(log.padded[i], bucket_for(log.rows[i], default_buckets(8)));
    sum += log.rows[i];
  }
  EXPECT_EQ(sum, total);
  auto s = b->stats();
  int64_t hist = 0;
  for (int64_t r = 1; r <= 8; ++r) hist += s.batch_rows[r];
  EXPECT_EQ(hist, s.batches);
  EXPECT_EQ(s.batches, static_cast<int64_t>(log.rows.size()));
}

TEST(Batcher, ALoneRequestLeavesAfterMaxDelay) {
  RunLog log;
  BatcherOptions o;
  o.max_batch = 8;
  o.max_delay_us = 20'000;
  auto b = make(o, fake_run(&log));
  Pending p;
  const auto t0 = Clock::now();
  ASSERT_TRUE(b->submit(make_request(1, 5, &p)).ok());
  auto r = p.f.get();
  const auto waited = Clock::now() - t0;
  ASSERT_TRUE(r.ok());
  EXPECT_GE(waited, milliseconds(20));
  EXPECT_LT(waited, milliseconds(2000));
  EXPECT_GE(b->stats().queue_us, 20'000);
  EXPECT_EQ(log.padded, (std::vector<int64_t>{1}));
}

TEST(Batcher, MoreUrgentLevelsRunFirstAndFifoWithinALevel) {
  RunLog log;
  Gate gate;
  BatcherOptions o;
  o.max_batch = 1;
  o.max_delay_us = 0;
  o.priority_levels = 3;
  auto b = make(o, fake_run(&log, &gate));
  Pending first;
  ASSERT_TRUE(b->submit(make_request(1, 0, &first, 2)).ok());
  gate.wait_entered(1);  // the only instance is busy: the rest queue up
  std::vector<Pending> p(5);
  ASSERT_TRUE(b->submit(make_request(1, 10, &p[0], 2)).ok());
  ASSERT_TRUE(b->submit(make_request(1, 20, &p[1], 1)).ok());
  ASSERT_TRUE(b->submit(make_request(1, 30, &p[2], 2)).ok());
  ASSERT_TRUE(b->submit(make_request(1, 40, &p[3], 0)).ok());
  ASSERT_TRUE(b->submit(make_request(1, 50, &p[4], 1)).ok());
  EXPECT_EQ(b->submit(make_request(1, 0, &first, 3)).code(), StatusCode::kInvalidArgument);
  gate.open();
  for (auto& x : p) EXPECT_TRUE(x.f.get().ok());
  b->stop();
  EXPECT_EQ(log.first_values, (std::vector<float>{0, 40, 20, 50, 10, 30}));
}

TEST(Batcher, RefusesAtOnceWithoutCallingDone) {
  RunLog log;
  Gate gate;
  BatcherOptions o;
  o.max_batch = 8;
  o.max_delay_us = 0;
  o.max_queue = 2;
  auto b = make(o, fake_run(&log, &gate));
  Pending first;
  ASSERT_TRUE(b->submit(make_request(1, 0, &first)).ok());
  gate.wait_entered(1);
  Pending q1, q2;
  ASSERT_TRUE(b->submit(make_request(1, 0, &q1)).ok());
  ASSERT_TRUE(b->submit(make_request(1, 0, &q2)).ok());
  std::atomic<int> calls{0};
  auto refused = [&](int64_t rows) {
    Request r;
    r.inputs = {Tensor::zeros(DType::kF32, {std::max<int64_t>(rows, 0), 2})};
    r.rows = rows;
    r.done = [&](Result<std::vector<Tensor>>) { ++calls; };
    return b->submit(std::move(r));
  };
  Status full = refused(1);
  EXPECT_EQ(full.code(), StatusCode::kUnavailable);
  EXPECT_EQ(full.message(), "queue full (2 requests)");
  Status zero = refused(0), nine = refused(9);
  EXPECT_EQ(zero.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(zero.message().find("0 rows"), std::string::npos) << zero.message();
  EXPECT_NE(nine.message().find("9 rows"), std::string::npos) << nine.message();
  EXPECT_NE(nine.message().find("max_batch 8"), std::string::npos) << nine.message();
  Request mismatch = make_request(2, 0, &first);
  mismatch.rows = 3;
  EXPECT_EQ(b->submit(std::move(mismatch)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(b->stats().queue_depth, 2);
  gate.open();
  EXPECT_TRUE(q1.f.get().ok());
  EXPECT_TRUE(q2.f.get().ok());
  b->stop();
  EXPECT_EQ(calls.load(), 0);
  EXPECT_EQ(b->stats().rejected, 4);
}

TEST(Batcher, AQueuedRequestExpiresAtItsDeadlineWhileTheOnlyInstanceIsBusy) {
  RunLog log;
  Gate gate;
  BatcherOptions o;
  o.max_batch = 4;
  o.max_delay_us = 0;
  auto b = make(o, fake_run(&log, &gate));
  Pending first, late, patient;
  ASSERT_TRUE(b->submit(make_request(4, 0, &first)).ok());
  gate.wait_entered(1);
  Request r = make_request(1, 0, &late);
  r.deadline = Clock::now() + milliseconds(30);
  const auto deadline = r.deadline;
  ASSERT_TRUE(b->submit(std::move(r)).ok());
  ASSERT_TRUE(b->submit(make_request(1, 0, &patient)).ok());
  auto res = late.f.get();
  const auto answered = Clock::now();
  EXPECT_FALSE(gate.is_open());  // answered while the instance was still blocked
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_GE(answered, deadline);
  // Not when the batch leaves (a minute): a wide bound, so a loaded machine's scheduling delay
  // does not fail it; how close to the deadline is measured by bench/serve, not here.
  EXPECT_LT(answered, deadline + milliseconds(1000))
      << "answered "
      << std::chrono::duration_cast<std::chrono::microseconds>(answered - deadline).count()
      << " us after the deadline";
  EXPECT_EQ(b->stats().expired, 1);
  EXPECT_EQ(b->stats().queue_depth, 1);
  gate.open();
  EXPECT_TRUE(first.f.get().ok());
  EXPECT_TRUE(patient.f.get().ok());
}

TEST(Batcher, ARequestInAFormingBatchExpiresAtItsDeadlineNotWhenTheBatchLeaves) {
  RunLog log;
  BatcherOptions o;
  o.max_batch = 8;
  o.max_delay_us = 60'000'000;  // the batch would wait a minute for more rows
  auto b = make(o, fake_run(&log));
  Pending late;
  Request r = make_request(1, 0, &late);
  r.deadline = Clock::now() + milliseconds(20);
  const auto deadline = r.deadline;
  ASSERT_TRUE(b->submit(std::move(r)).ok());
  auto res = late.f.get();
  const auto answered = Clock::now();
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_GE(answered, deadline);
  // Not when the batch leaves (a minute): a wide bound, so a loaded machine's scheduling delay
  // does not fail it; how close to the deadline is measured by bench/serve, not here.
  EXPECT_LT(answered, deadline + milliseconds(1000))
      << "answered "
      << std::chrono::duration_cast<std::chrono::microseconds>(answered - deadline).count()
      << " us after the deadline";
  // The batcher goes on: a full batch after it runs at once.
  Pending full;
  ASSERT_TRUE(b->submit(make_request(8, 0, &full)).ok());
  EXPECT_TRUE(full.f.get().ok());
  b->stop();
  EXPECT_EQ(b->stats().expired, 1);
  EXPECT_EQ(log.rows, (std::vector<int64_t>{8}));
}

// A queued request that can no longer finish before its deadline (a batch takes about as long as
// the last ones) is refused when its batch would start, not answered late; one whose timeout was
// always shorter than a batch still runs.
TEST(Batcher, AQueuedRequestThatCannotFinishInTimeIsRefusedNotAnsweredLate) {
  RunLog log;
  Gate gate;
  std::atomic<bool> hold{false};
  RunFn base = fake_run(&log);
  // Each batch takes 40 ms (a slow model); the first one after `hold` then waits on the gate.
  RunFn slow = [&](int i, const std::vector<Tensor>& in, int64_t rows) {
    const bool held = hold.exchange(false);
    std::this_thread::sleep_for(milliseconds(40));
    if (held) gate.pass();  // then ends as soon as the test opens the gate
    return base(i, in, rows);
  };
  BatcherOptions o;
  o.max_batch = 1;
  o.max_delay_us = 0;
  auto b = make(o, slow);
  Pending warm;  // teaches the batcher how long a batch takes
  ASSERT_TRUE(b->submit(make_request(1, 0, &warm)).ok());
  ASSERT_TRUE(warm.f.get().ok());

  Pending first, late;
  hold = true;
  ASSERT_TRUE(b->submit(make_request(1, 0, &first)).ok());
  gate.wait_entered(1);
  Request r = make_request(1, 100, &late);  // 200 ms of room: enough for a 40 ms batch now
  r.deadline = Clock::now() + milliseconds(200);
  const auto deadline = r.deadline;
  ASSERT_TRUE(b->submit(std::move(r)).ok());
  // The instance frees up 20 ms before the deadline: too late for a 40 ms batch.
  std::this_thread::sleep_until(deadline - milliseconds(20));
  gate.open();
  auto res = late.f.get();
  ASSERT_FALSE(res.ok()) << "the request ran and was answered after its deadline";
  EXPECT_EQ(res.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(first.f.get().ok());
  {
    std::lock_guard<std::mutex> lk(log.mu);
    for (float v : log.first_values) EXPECT_NE(v, 100.f) << "the late request was run";
  }
  EXPECT_EQ(b->stats().expired, 1);

  // A timeout shorter than a batch from the start: it runs (and is late: its caller chose it).
  Pending tight;
  Request t = make_request(1, 0, &tight);
  t.deadline = Clock::now() + milliseconds(30);
  ASSERT_TRUE(b->submit(std::move(t)).ok());
  EXPECT_TRUE(tight.f.get().ok());
}

// One very slow batch inflates the estimate (average + 4 deviations) far past every timeout;
// refusing by it must not lock every later request out: nothing would run, so nothing would
// correct the estimate. A batch refused whole halves the deviation, so requests run again soon.
TEST(Batcher, OneSlowBatchDoesNotLockLaterRequestsOut) {
  RunLog log;
  RunFn base = fake_run(&log);
  std::atomic<int> sleep_ms{2};
  RunFn fn = [&](int i, const std::vector<Tensor>& in, int64_t rows) {
    std::this_thread::sleep_for(milliseconds(sleep_ms.load()));
    return base(i, in, rows);
  };
  BatcherOptions o;
  o.max_batch = 1;
  o.max_delay_us = 0;
  auto b = make(o, fn);
  auto run_one = [&](std::optional<milliseconds> timeout) {
    Pending p;
    Request r = make_request(1, 0, &p);
    if (timeout) r.deadline = Clock::now() + *timeout;
    EXPECT_TRUE(b->submit(std::move(r)).ok());
    return p.f.get().status();
  };
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(run_one(std::nullopt).ok());  // batches take ~2 ms
  sleep_ms = 300;
  ASSERT_TRUE(run_one(std::nullopt).ok());  // one stall: the estimate is now ~0.3 s
  sleep_ms = 2;
  int refused = 0;
  std::vector<bool> ok;
  for (int i = 0; i < 20; ++i) {
    Status st = run_one(milliseconds(100));  // 100 ms of room for a ~2 ms batch
    if (!st.ok()) {
      EXPECT_EQ(st.code(), StatusCode::kDeadlineExceeded) << st.to_string();
      ++refused;
    }
    ok.push_back(st.ok());
  }
  EXPECT_LE(refused, 6) << "requests with 50x the room a batch needs were refused";
  for (int i = 10; i < 20; ++i) EXPECT_TRUE(ok[static_cast<size_t>(i)]) << "request " << i;
}

TEST(Batcher, StopDrainsTheQueueThenRefuses) {
  RunLog log;
  Gate gate;
  BatcherOptions o;
  o.max_batch = 2;
  o.max_delay_us = 0;
  auto b = make(o, fake_run(&log, &gate));
  std::vector<Pending> p(6);
  for (size_t i = 0; i < p.size(); ++i) {
    ASSERT_TRUE(b->submit(make_request(1, static_cast<float>(i), &p[i])).ok());
  }
  gate.wait_entered(1);
  std::thread stopper([&] { b->stop(); });
  // Once stop() has begun, submit says so.
  Status st;
  std::deque<Pending> extras;  // accepted before stop() began: drained like the rest
  for (;;) {
    Pending next;
    st = b->submit(make_request(1, 0, &next));
    if (st.ok()) extras.push_back(std::move(next));
    if (!st.ok() && st.message() == "shutting down") break;
    std::this_thread::yield();  // ok or queue full: stop() has not begun yet
  }
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  gate.open();
  stopper.join();
  for (auto& x : p) {
    ASSERT_EQ(x.f.wait_for(std::chrono::seconds(0)), std::future_status::ready);
    EXPECT_TRUE(x.f.get().ok());
  }
  for (auto& x : extras) {
    ASSERT_EQ(x.f.wait_for(std::chrono::seconds(0)), std::future_status::ready);
    EXPECT_TRUE(x.f.get().ok());
  }
  b->stop();  // idempotent
  EXPECT_EQ(b->stats().done, static_cast<int64_t>(6 + extras.size()));
  EXPECT_EQ(b->stats().queue_depth, 0);
}

TEST(Batcher, ARunErrorAnswersEveryRequestOfTheBatch) {
  BatcherOptions o;
  o.max_batch = 4;
  o.max_delay_us = 60'000'000;
  auto b = make(o, [](int, const std::vector<Tensor>&, int64_t) -> Result<std::vector<Tensor>> {
    return Status::Internal("engine broke");
  });
  Pending p1, p2;
  ASSERT_TRUE(b->submit(make_request(2, 0, &p1)).ok());
  ASSERT_TRUE(b->submit(make_request(2, 0, &p2)).ok());
  for (auto* p : {&p1, &p2}) {
    auto r = p->f.get();
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().message(), "engine broke");
  }
  b->stop();
  EXPECT_EQ(b->stats().failed, 2);
}

TEST(Batcher, DoneExactlyOncePerRequestUnderConcurrentSubmitters) {
  BatcherOptions o;
  o.max_batch = 16;
  o.max_delay_us = 200;
  o.instances = 3;
  o.max_queue = 2000;
  RunLog log;
  auto b = make(o, fake_run(&log));
  constexpr int kThreads = 8, kPerThread = 250, kTotal = kThreads * kPerThread;
  std::vector<std::atomic<int>> calls(kTotal);
  std::vector<std::atomic<int>> wrong(kTotal);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(100 + t);
      for (int k = 0; k < kPerThread; ++k) {
        const int id = t * kPerThread + k;
        const int64_t rows = 1 + static_cast<int64_t>(rng() % 8);
        Request r;
        Tensor x = Tensor::empty(DType::kF32, {rows, 2});
        for (int64_t i = 0; i < rows * 2; ++i) x.data_as<float>()[i] = id * 100.f + i;
        r.inputs = {x};
        r.rows = rows;
        r.done = [&, id, rows](Result<std::vector<Tensor>> res) {
          ++calls[id];
          if (!res.ok() || res->size() != 1 || res->at(0).shape() != Shape{rows, 2}) {
            ++wrong[id];
            return;
          }
          for (int64_t i = 0; i < rows * 2; ++i) {
            if (res->at(0).data_as<float>()[i] != 2.f * (id * 100.f + i) + 1.f) ++wrong[id];
          }
        };
        Status st = b->submit(std::move(r));
        if (!st.ok()) ADD_FAILURE() << st.to_string();
      }
    });
  }
  for (auto& th : threads) th.join();
  b->stop();
  for (int i = 0; i < kTotal; ++i) {
    EXPECT_EQ(calls[i].load(), 1) << "request " << i;
    EXPECT_EQ(wrong[i].load(), 0) << "request " << i;
  }
  EXPECT_EQ(b->stats().done, kTotal);
  for (int64_t r : log.rows) EXPECT_LE(r, 16);
}

// Queue time is observed per request that ran (an expired one is not), compute time per
// batch; the histograms' sums are the stats' sums and their buckets place the durations.
TEST(Batcher, QueueAndComputeHistogramsCountRequestsAndBatches) {
  RunLog log;
  Gate gate;
  BatcherOptions o;
  o.max_batch = 8;
  o.max_delay_us = 0;
  auto b = make(o, fake_run(&log, &gate));
  Pending first, late, p2, p3, p4;
  ASSERT_TRUE(b->submit(make_request(1, 0, &first)).ok());
  gate.wait_entered(1);  // the only instance is busy: what comes next waits in the queue
  Request r = make_request(1, 0, &late);
  r.deadline = Clock::now() + milliseconds(1);
  ASSERT_TRUE(b->submit(std::move(r)).ok());
  ASSERT_TRUE(b->submit(make_request(2, 10, &p2)).ok());
  ASSERT_TRUE(b->submit(make_request(2, 20, &p3)).ok());
  ASSERT_TRUE(b->submit(make_request(3, 30, &p4)).ok());
  EXPECT_FALSE(late.f.get().ok());               // expired in the queue
  std::this_thread::sleep_for(milliseconds(3));  // a lower bound on the queued requests' wait
  gate.open();
  for (Pending* p : {&first, &p2, &p3, &p4}) EXPECT_TRUE(p->f.get().ok());
  b->stop();
  const BatcherStats st = b->stats();
  ASSERT_EQ(st.batches, 2);  // {first}, then {p2, p3, p4} together
  const auto q = b->queue_time().snapshot();
  const auto c = b->compute_time().snapshot();
  EXPECT_EQ(q.count, 4u);
  EXPECT_EQ(c.count, 2u);
  EXPECT_EQ(static_cast<int64_t>(q.sum_us), st.queue_us);
  EXPECT_EQ(static_cast<int64_t>(c.sum_us), st.compute_us);
  ASSERT_EQ(q.cumulative.size(), std::size(LatencyHistogram::kFineBoundsUs) + 1);
  for (size_t i = 1; i < q.cumulative.size(); ++i) EXPECT_GE(q.cumulative[i], q.cumulative[i - 1]);
  EXPECT_EQ(q.cumulative.back(), q.count);
  // p2..p4 waited at least 3 ms: at most `first` is at or below the 2.5 ms bound.
  size_t le_2500 = 0;
  while (LatencyHistogram::kFineBoundsUs[le_2500] != 2500) ++le_2500;
  EXPECT_LE(q.cumulative[le_2500], 1u);
  // The first batch held on the gate at least 3 ms too.
  EXPECT_LE(c.cumulative[le_2500], 1u);
}

TEST(LatencyHistogram, BucketsAreCumulativeAndTheTextIsPrometheus) {
  LatencyHistogram h(LatencyHistogram::kRequestBoundsUs);
  for (int64_t us : {0, 250, 251, 999, 4000, 7000000}) h.observe(us);
  const auto s = h.snapshot();
  EXPECT_EQ(s.count, 6u);
  EXPECT_EQ(s.sum_us, uint64_t{0 + 250 + 251 + 999 + 4000 + 7000000});
  EXPECT_EQ(s.cumulative[0], 2u);   // le 250 us: 0 and 250 (bounds are inclusive)
  EXPECT_EQ(s.cumulative[2], 4u);   // le 1 ms
  EXPECT_EQ(s.cumulative[4], 5u);   // le 5 ms
  EXPECT_EQ(s.cumulative[11], 5u);  // le 5 s
  EXPECT_EQ(s.cumulative[12], 6u);  // +Inf
  std::string text;
  append_histogram(&text, "x_seconds", "d=\"a\"", s);
  EXPECT_NE(text.find("x_seconds_bucket{d=\"a\",le=\"0.00025\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("x_seconds_bucket{d=\"a\",le=\"0.001\"} 4\n"), std::string::npos) << text;
  EXPECT_NE(text.find("x_seconds_bucket{d=\"a\",le=\"+Inf\"} 6\n"), std::string::npos) << text;
  EXPECT_NE(text.find("x_seconds_sum{d=\"a\"} 7.005500\n"), std::string::npos) << text;
  EXPECT_NE(text.find("x_seconds_count{d=\"a\"} 6\n"), std::string::npos) << text;
}

TEST(Batcher, CreateChecksOptions) {
  BatcherOptions o;
  o.max_batch = 0;
  EXPECT_EQ(DynamicBatcher::create(o, fake_run(nullptr)).status().code(),
            StatusCode::kInvalidArgument);
  o = BatcherOptions();
  o.buckets = {1, 2};
  auto st = DynamicBatcher::create(o, fake_run(nullptr)).status();
  EXPECT_NE(st.message().find("largest bucket 2 is less than max_batch 32"), std::string::npos)
      << st.message();
  EXPECT_FALSE(DynamicBatcher::create(BatcherOptions(), RunFn()).ok());
}

}  // namespace
}  // namespace dlsys::serve

namespace dlsys::serve {
namespace {

// Direct dispatch: with max_delay_us 0 and a fast model, a request that finds an idle instance
// and nothing queued runs on the submitting thread (answered before submit returns); while an
// instance is busy and others wait, requests queue for the workers as before.
TEST(Batcher, AFastRequestWithNothingQueuedRunsOnTheSubmittingThread) {
  RunLog log;
  std::mutex mu;
  std::vector<std::thread::id> ran_on;
  Gate gate;
  std::atomic<bool> hold{false};
  RunFn run = [&](int instance, const std::vector<Tensor>& in, int64_t rows) {
    {
      std::lock_guard<std::mutex> lk(mu);
      ran_on.push_back(std::this_thread::get_id());
    }
    if (hold) gate.pass();
    return fake_run(&log)(instance, in, rows);
  };
  BatcherOptions o;
  o.max_batch = 4;
  o.max_delay_us = 0;
  o.inline_below_us = 1'000'000;
  auto b = make(o, run);
  // The first batch goes to a worker: the batcher has not measured the model yet.
  Pending first;
  ASSERT_TRUE(b->submit(make_request(1, 0, &first)).ok());
  ASSERT_TRUE(first.f.get().ok());
  EXPECT_NE(ran_on.back(), std::this_thread::get_id());
  // Now it runs here, before submit returns, once the worker has let go of the instance (it
  // answers before it marks the instance idle, so a submit right after may still queue).
  bool ran_here = false;
  for (int attempt = 0; attempt < 200 && !ran_here; ++attempt) {
    Pending second;
    ASSERT_TRUE(b->submit(make_request(2, 10, &second)).ok());
    ran_here = second.f.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
    auto y = second.f.get();
    ASSERT_TRUE(y.ok());
    EXPECT_EQ((*y)[0].data_as<float>()[0], 21.f);
    if (ran_here) {
      EXPECT_EQ(ran_on.back(), std::this_thread::get_id());
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  EXPECT_TRUE(ran_here) << "no request ran on the submitting thread in 200 tries";
  // The only instance busy (held in a run on another thread): the next request queues and its
  // worker runs it once the instance is free, never two runs on one instance at once.
  hold = true;
  Pending held, queued;
  std::thread t([&] { ASSERT_TRUE(b->submit(make_request(1, 20, &held)).ok()); });
  gate.wait_entered(1);
  ASSERT_TRUE(b->submit(make_request(1, 30, &queued)).ok());
  EXPECT_EQ(b->stats().queue_depth, 1);
  gate.open();
  t.join();
  EXPECT_TRUE(held.f.get().ok());
  EXPECT_TRUE(queued.f.get().ok());
  b->stop();
  EXPECT_GE(b->stats().done, 4);
  // Off without the option, or with a delay to fill batches.
  for (auto [below, delay] : {std::pair<int64_t, int64_t>{0, 0}, {1'000'000, 100}}) {
    o.inline_below_us = below;
    o.max_delay_us = delay;
    auto off = make(o, run);
    for (int i = 0; i < 3; ++i) {
      Pending p;
      ASSERT_TRUE(off->submit(make_request(1, 0, &p)).ok());
      ASSERT_TRUE(p.f.get().ok());
      EXPECT_NE(ran_on.back(), std::this_thread::get_id()) << below << " " << delay;
    }
    off->stop();
  }
}

}  // namespace
}  // namespace dlsys::serve

namespace dlsys::serve {
namespace {

// Load shedding: with batches measured at ~20 ms and one instance busy, a request whose deadline
// is nearer than the work queued ahead of it is refused at once; one with time enough queues.
TEST(Batcher, ShedsARequestTheQueueCannotReachBeforeItsDeadline) {
  RunLog log;
  Gate gate;
  std::atomic<bool> hold{false};
  RunFn run = [&](int instance, const std::vector<Tensor>& in, int64_t rows) {
    if (hold) gate.pass();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the model's run time
    return fake_run(&log)(instance, in, rows);
  };
  BatcherOptions o;
  o.max_batch = 1;
  o.max_delay_us = 0;
  o.shed_late = true;
  auto b = make(o, run);
  Pending warm;
  ASSERT_TRUE(b->submit(make_request(1, 0, &warm)).ok());
  ASSERT_TRUE(warm.f.get().ok());  // the batcher now knows a batch takes ~20 ms
  hold = true;
  Pending busy, first;
  ASSERT_TRUE(b->submit(make_request(1, 1, &busy)).ok());
  gate.wait_entered(1);
  Request q = make_request(1, 2, &first);
  q.deadline = Clock::now() + std::chrono::seconds(10);
  ASSERT_TRUE(b->submit(std::move(q)).ok());  // queued: ~40 ms of work ahead, 10 s left
  Pending late;
  Request r = make_request(1, 3, &late);
  r.deadline = Clock::now() + std::chrono::milliseconds(5);  // ~60 ms of work ahead
  Status st = b->submit(std::move(r));
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("past its deadline"), std::string::npos) << st.message();
  gate.open();
  EXPECT_TRUE(busy.f.get().ok());
  EXPECT_TRUE(first.f.get().ok());
  b->stop();
  EXPECT_EQ(b->stats().shed, 1);
  EXPECT_EQ(b->stats().rejected, 1);
  EXPECT_EQ(b->stats().done, 3);
}

}  // namespace
}  // namespace dlsys::serve
