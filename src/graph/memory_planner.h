// The memory planner: where each intermediate value of a plan lives in one activation arena.
// It knows nothing of graphs, kernels or layouts (like ONNX Runtime's allocation planner, kept
// apart from the executor): Plan::build describes its steps in these terms and applies the
// result. Two steps:
//
//   1. Liveness (compute_lifetimes): from the executed step order, which values each step
//      writes and reads, the aliasing of values (a reshape's output shares its input's bytes)
//      and the values read after the last step, each value gets the interval of steps
//      [first_def, last_use] during which its bytes must be kept.
//   2. Placement (place_values): from each value's byte size and interval, a byte offset in one
//      arena such that two values whose intervals intersect never overlap in memory, so a dead
//      value's bytes are reused by later ones. Greedy best-fit by decreasing size.
//
// Both are pure functions of their arguments (deterministic, no state: safe from any thread).
// Plan::build calls them once per plan; nothing here runs on the steady-state path.
#pragma once

#include <cstddef>
#include <vector>

namespace dlsys {

// Offsets and sizes are rounded up to this (oneDNN and the vectorized kernels want 64 bytes).
inline constexpr size_t kArenaAlignment = 64;

// What one step does to values: indices into the caller's value table. A negative index (an
// absent optional input or unused output) is ignored.
struct StepAccess {
  std::vector<int> reads, writes;
};

// A value's live interval, in step indices, both ends included.
struct Lifetime {
  int first_def = 0;  // the step that writes it
  int last_use = 0;   // the last step that reads it (or any alias of it), >= first_def
};

// Liveness of `num_values` values over `steps` (in execution order). `alias_root[v]` is the
// value whose bytes v shares (v itself when it owns its bytes); empty means no aliasing.
// `live_out` are values read after the last step (a plan's outputs): they live to steps.size().
// A value no step writes starts at step 0; a value no step reads ends where it starts. Reads of
// an alias extend its root's interval (the root's entry is the one that matters for placement).
std::vector<Lifetime> compute_lifetimes(size_t num_values, const std::vector<StepAccess>& steps,
                                        const std::vector<int>& alias_root,
                                        const std::vector<int>& live_out);

// One value to place: its size in bytes and its live interval.
struct BufferRequest {
  size_t bytes = 0;
  Lifetime life;
};

// Where the values go.
struct MemoryPlan {
  std::vector<size_t> offsets;  // one per request, a multiple of kArenaAlignment
  size_t arena_bytes = 0;       // the arena's size: max over requests of offset + aligned size
  size_t sum_bytes = 0;         // sum of the requests' sizes (one buffer per value)
};

// Places `requests` in one arena: the largest first (ties in request order), each at the start
// of the smallest gap between conflicting placed values that fits it, or after the last of them.
// Values conflict when their intervals intersect; each takes its size rounded up to
// kArenaAlignment. arena_bytes is 0 for no requests.
MemoryPlan place_values(const std::vector<BufferRequest>& requests);

}  // namespace dlsys
