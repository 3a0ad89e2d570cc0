#include "graph/thread_tuner.h"

#include <algorithm>
#include <array>
#include <climits>

namespace dlsys {

int64_t ThreadTuner::median(const std::vector<int64_t>& v) {
  if (v.empty()) return INT64_MAX;
  std::array<int64_t, kKept> a{};
  const size_t n = std::min(v.size(), a.size());
  std::copy(v.end() - static_cast<std::ptrdiff_t>(n), v.end(), a.begin());
  std::nth_element(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(n / 2),
                   a.begin() + static_cast<std::ptrdiff_t>(n));
  return a[n / 2];
}

void ThreadTuner::reset(int max_threads) {
  max_ = max_threads;
  cands_.clear();
  for (int t = max_threads; t >= 1; t /= 2) {
    cands_.push_back(Candidate{t, {}});
    if (t == 1) break;
  }
  if (cands_.back().threads != 1) cands_.push_back(Candidate{1, {}});
  for (Candidate& c : cands_) c.times.reserve(kKept + 1);
  chosen_ = 0;
  trying_ = -1;
  probe_ = 0;
  runs_ = 0;
}

int ThreadTuner::index_of(int threads) const {
  for (size_t i = 0; i < cands_.size(); ++i)
    if (cands_[i].threads == threads) return static_cast<int>(i);
  return -1;
}

int ThreadTuner::next(int max_threads) {
  if (max_threads < 1) max_threads = 1;
  if (max_threads != max_) reset(max_threads);
  if (cands_.size() == 1) return cands_[0].threads;
  if (chosen_ == 0) {
    // Exploring: the first candidate with fewer than kTrials runs.
    for (const Candidate& c : cands_)
      if (static_cast<int>(c.times.size()) < kTrials) return c.threads;
  }
  if (trying_ >= 0) return cands_[static_cast<size_t>(trying_)].threads;
  if (++runs_ % kProbeEvery == 0) {
    // One run of another candidate.
    const int me = index_of(chosen_);
    probe_ = (probe_ + 1) % static_cast<int>(cands_.size());
    if (probe_ == me) probe_ = (probe_ + 1) % static_cast<int>(cands_.size());
    return cands_[static_cast<size_t>(probe_)].threads;
  }
  return chosen_;
}

void ThreadTuner::record(int threads, int64_t ns) {
  const int i = index_of(threads);
  if (i < 0) return;
  Candidate& c = cands_[static_cast<size_t>(i)];
  c.times.push_back(ns);
  if (c.times.size() > static_cast<size_t>(kKept)) c.times.erase(c.times.begin());
  if (chosen_ == 0) {
    for (const Candidate& k : cands_)
      if (static_cast<int>(k.times.size()) < kTrials) return;
    // Every candidate tried: the fastest median wins.
    const Candidate* best = &cands_[0];
    for (const Candidate& k : cands_)
      if (median(k.times) < median(best->times)) best = &k;
    chosen_ = best->threads;
    return;
  }
  if (threads == chosen_) return;
  const int64_t mine = median(cands_[static_cast<size_t>(index_of(chosen_))].times);
  if (trying_ < 0) {
    // A probe: worth a closer look only when clearly faster than the current choice.
    if (static_cast<double>(ns) < kMargin * static_cast<double>(mine)) {
      trying_ = i;
      c.times.assign(1, ns);
    }
    return;
  }
  if (static_cast<int>(c.times.size()) < kTrials) return;
  if (static_cast<double>(median(c.times)) < kMargin * static_cast<double>(mine)) chosen_ = threads;
  trying_ = -1;
}

}  // namespace dlsys
