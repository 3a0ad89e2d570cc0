#include "graph/memory_planner.h"

#include <algorithm>
#include <cstdint>
#include <utility>

namespace dlsys {
namespace {

size_t align_up(size_t n) {
  return (n + kArenaAlignment - 1) & ~(kArenaAlignment - 1);
}

}  // namespace

std::vector<Lifetime> compute_lifetimes(size_t num_values, const std::vector<StepAccess>& steps,
                                        const std::vector<int>& alias_root,
                                        const std::vector<int>& live_out) {
  std::vector<int> first(num_values, -1), last(num_values, -1);
  auto root = [&](int v) { return alias_root.empty() ? v : alias_root[v]; };
  int nsteps = static_cast<int>(steps.size());
  for (int k = 0; k < nsteps; ++k) {
    for (int v : steps[k].writes)
      if (v >= 0) first[v] = k;
    for (int v : steps[k].reads)
      if (v >= 0) last[root(v)] = std::max(last[root(v)], k);
  }
  for (int v : live_out)
    if (v >= 0) last[root(v)] = nsteps;
  std::vector<Lifetime> out(num_values);
  for (size_t v = 0; v < num_values; ++v) {
    out[v].first_def = std::max(first[v], 0);
    out[v].last_use = std::max(last[v], out[v].first_def);
  }
  return out;
}

MemoryPlan place_values(const std::vector<BufferRequest>& requests) {
  MemoryPlan plan;
  plan.offsets.assign(requests.size(), 0);
  std::vector<int> order(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    order[i] = static_cast<int>(i);
    plan.sum_bytes += requests[i].bytes;
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return requests[a].bytes > requests[b].bytes; });
  std::vector<int> placed;
  std::vector<std::pair<size_t, size_t>> busy;  // [begin, end) byte ranges of conflicting values
  for (int id : order) {
    const Lifetime& s = requests[id].life;
    busy.clear();
    for (int q : placed) {
      const Lifetime& o = requests[q].life;
      if (o.first_def <= s.last_use && s.first_def <= o.last_use)
        busy.emplace_back(plan.offsets[q], plan.offsets[q] + align_up(requests[q].bytes));
    }
    std::sort(busy.begin(), busy.end());
    size_t need = align_up(requests[id].bytes), at = 0, best = SIZE_MAX, best_gap = SIZE_MAX;
    for (auto [b, e] : busy) {
      if (b >= at && b - at >= need && b - at < best_gap) {
        best = at;
        best_gap = b - at;
      }
      at = std::max(at, e);
    }
    if (best == SIZE_MAX) best = at;
    plan.offsets[id] = best;
    plan.arena_bytes = std::max(plan.arena_bytes, best + need);
    placed.push_back(id);
  }
  return plan;
}

}  // namespace dlsys
