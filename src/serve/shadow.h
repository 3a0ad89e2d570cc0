// Shadow traffic: a copy of a deployment's requests goes to a shadow version whose answers are
// compared with the ones returned, never returned themselves. ShadowStats counts the outcome of
// every copy; ShadowPair holds one request's two answers until both have arrived.
//
// Threading: ShadowStats is lock-free; ShadowPair::arrive may be called from the two versions'
// batcher threads concurrently.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

#include "core/status.h"
#include "tensor/tensor.h"

namespace dlsys::serve {

struct ShadowStats {
  std::atomic<int64_t> agreed{0};     // both answered, and the answers agree
  std::atomic<int64_t> disagreed{0};  // both answered, and they do not
  std::atomic<int64_t> failed{0};     // the shadow answered with an error (or its deadline passed)
  std::atomic<int64_t> dropped{0};    // the shadow's queue refused the copy (never slows serving)
};

// True when two versions' answers to one request agree: every output has the same dtype and
// shape, and for a float output of rank 2 with two or more columns (class scores) every row's
// argmax is the same; any other float output agrees within |a-b| <= 1e-4 + 1e-3 |a|; integer and
// boolean outputs are equal.
bool answers_agree(const std::vector<Tensor>& served, const std::vector<Tensor>& shadow);

// One request's served answer and shadow answer; counts into `stats` when the second arrives.
class ShadowPair {
 public:
  explicit ShadowPair(std::shared_ptr<ShadowStats> stats) : stats_(std::move(stats)) {}
  // The served version's answer. An error means there is nothing to compare: not counted.
  void served(const Result<std::vector<Tensor>>& out) { arrive(true, out); }
  // The shadow version's answer; an error counts as failed.
  void shadow(const Result<std::vector<Tensor>>& out) { arrive(false, out); }

 private:
  void arrive(bool is_served, const Result<std::vector<Tensor>>& out);
  std::shared_ptr<ShadowStats> stats_;
  std::mutex mu_;
  int arrived_ = 0;
  bool served_ok_ = false, shadow_ok_ = false;
  std::vector<Tensor> served_, shadow_;
};

}  // namespace dlsys::serve
