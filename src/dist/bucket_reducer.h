// Gradient buckets: ranges of one flat gradient buffer, each all-reduced as soon as the
// backward pass has produced it, on a thread of the reducer's own, while the backward pass goes
// on computing the earlier layers' gradients (PyTorch DDP's buckets, Horovod's fusion buffer).
//
// Order: the buckets are all-reduced in the order they were given, on every rank, whatever
// order they become ready in: a bucket that is ready waits for the ones before it. So the
// ranks' collectives always match (ProcessGroup's calls must be made in the same order
// everywhere), and the values are those of one all-reduce of the whole buffer: all_reduce_sum
// adds each element in an association fixed by the world size alone.
//
// Threading and lifetime: one compute thread calls start, ready, finish and abandon. While the
// gradients compute, the reducer's thread sends the ready buckets; once they are all ready it
// starts no more, and finish() sends the rest on the calling thread (it would only wait
// otherwise, and two thread wake-ups a bucket are saved). One collective is in flight at a
// time, and only the reducer between start and the end of finish or abandon uses the group. The
// group must outlive the reducer; the destructor waits for the collective in flight (bounded by the
// group's timeout) and joins the thread.
//
// Bucket sizes: choose_bucket_bytes picks the smallest size whose fixed cost (the link's
// latency) is at most a tenth of its transfer time, from a measurement of the link
// (measure_link), but at most half the gradients, so that the last layers' bucket is sent while
// the backward pass goes on (one bucket would overlap nothing; parameters are never split, so
// a first layer holding more than half the gradients still makes one); users may set a size
// instead (`train.bucket_kib`).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <thread>
#include <vector>

#include "core/status.h"
#include "dist/process_group.h"

namespace dlsys::dist {

// A bucket: the elements [begin, end) of the flat buffer.
struct Bucket {
  size_t begin = 0, end = 0;
};

// What the reducer measured, summed over the steps since it was made.
struct BucketStats {
  int64_t steps = 0;
  int64_t buckets = 0;  // all-reduces run
  // Of them, started while the step's gradients were still computing (before its last bucket
  // was marked ready): the all-reduces that overlapped the backward pass.
  int64_t started_early = 0;
  double comm_seconds = 0;  // time inside the all-reduces
  double wait_seconds = 0;  // time finish() waited: communication the backward did not hide
  std::vector<double> bucket_seconds;  // per bucket: its all-reduces' time (the cost model's)
};

class BucketReducer {
 public:
  // `buckets` must not overlap; they need not cover the buffer.
  BucketReducer(ProcessGroup* group, std::vector<Bucket> buckets);
  ~BucketReducer();
  BucketReducer(const BucketReducer&) = delete;
  BucketReducer& operator=(const BucketReducer&) = delete;

  const std::vector<Bucket>& buckets() const { return buckets_; }

  // Begins a step on `flat` (which must hold every bucket's range until finish or abandon).
  void start(float* flat);
  // Bucket `b`'s values are final on this rank: it may be all-reduced. Once per bucket a step.
  void ready(size_t b);
  // Several buckets at once (the backward pass ended with them all computed).
  void ready(const std::vector<size_t>& bs);
  // Waits until every bucket of the step is all-reduced (each collective bounded by the group's
  // timeout); returns the first error. Every bucket must have been marked ready.
  Status finish();
  // Ends a step whose compute failed: buckets not yet started are not, and the one in flight is
  // waited for. The group may be unusable afterwards (the other ranks wait for the rest).
  void abandon();
  const BucketStats& stats() const { return stats_; }

 private:
  void loop();
  void ready(const size_t* bs, size_t n);
  // Takes the next bucket and all-reduces it (the lock is released meanwhile). Needs no bucket
  // in flight (next_ == done_) and the next one ready.
  void run_next(std::unique_lock<std::mutex>& lock);

  ProcessGroup* group_;
  std::vector<Bucket> buckets_;
  std::mutex mu_;
  std::condition_variable cv_;
  float* flat_ = nullptr;
  std::vector<char> ready_;    // per bucket, this step
  size_t next_ = 0;            // the next bucket to all-reduce
  size_t done_ = 0;            // buckets all-reduced this step
  bool active_ = false;        // a step is in progress
  bool compute_done_ = false;  // every bucket of the step is marked ready
  bool stop_ = false;
  Status error_;
  BucketStats stats_;
  std::thread thread_;
};

// The link between the ranks, as rank 0 measured it (the same numbers on every rank).
struct LinkEstimate {
  double latency_s = 0;    // an all-reduce of one float
  double bytes_per_s = 0;  // all-reduce bytes per second past the latency
  size_t probe_bytes = 0;  // the size the bandwidth was measured with
};
// Times all-reduces of one float and of `probe_bytes` (a few rounds each, medians) and
// broadcasts rank 0's figures. A collective: every rank calls it.
Result<LinkEstimate> measure_link(ProcessGroup& group, size_t probe_bytes = size_t{4} << 20);
// The smallest bucket whose latency is at most a tenth of its time on this link, at most half
// of `gradient_bytes` (when given), between 64 KiB and 16 MiB.
size_t choose_bucket_bytes(const LinkEstimate& link, size_t gradient_bytes = 0);
// Buckets over parameters laid end to end (`offsets`: parameter k is [offsets[k],
// offsets[k+1])), filled from the last parameter backwards (the backward pass produces the last
// layer's gradients first) until each holds at least `bucket_bytes`; a parameter is never split.
std::vector<Bucket> buckets_from_the_end(const std::vector<size_t>& offsets, size_t bucket_bytes);

}  // namespace dlsys::dist
