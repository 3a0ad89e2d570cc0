// A Plan is a graph built for one concrete set of input shapes: every value has a dtype, a shape,
// a physical layout and a place in one activation arena; values computable from constants and
// shapes (shape subgraphs) were evaluated while building; each remaining node has a kernel with
// its oneDNN primitives created. Running a plan allocates nothing.
//
// Layouts: an op whose schema accepts oneDNN layouts on an input (Conv, pooling) may leave its
// output in oneDNN's preferred blocked layout when every consumer accepts it too; the planner
// inserts one reorder to plain (a "to-plain" step) only where a consumer needs plain data.
// A kernel may also ask for an input in another layout or dtype (BuildContext::convert_input):
// the planner inserts a "to-layout" step, and kernels asking for the same value in the same
// descriptor share it (in a training step, X and dY are each converted once for the forward
// convolution and both of its gradients).
//
// Memory: intermediate values live in one arena. A liveness pass gives each value the interval
// of steps from its definition to its last use (graph outputs live to the end) and a greedy
// best-fit places values whose intervals overlap at disjoint offsets, so dead values' bytes are
// reused (graph/memory_planner.h, which knows only steps, sizes and intervals). Graph inputs
// are the caller's and are bound per run.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "graph/ir.h"
#include "graph/thread_tuner.h"
#include "ops/kernel.h"

namespace dlsys {

struct PlanOptions {
  Precision precision = Precision::kF32;
  // The graph is a training step (forward, loss and gradients): kernels may choose layouts
  // that let forward and gradient kernels share input conversions (BuildContext::training).
  bool training = false;
  // An inference plan picks its OpenMP thread count (1 up to the caller's omp_get_max_threads())
  // by timing its runs (graph/thread_tuner.h). Off for training (the thread count changes
  // summation orders, and resumed runs must repeat), for subgraphs and continuations (their
  // time is part of the plan that runs them), for serving (model_runner.cpp says why), and with
  // DLSYS_ADAPTIVE_THREADS=0.
  bool tune_threads = true;
  // Steps whose kernels were made for one thread (inputs under 65,536 elements) also run on one:
  // oneDNN's element-wise and binary primitives split their work over every thread when they
  // execute, and waking a passive thread costs 50-100 us on a VM, 20-60x such a step. Off for
  // serving (model_runner.cpp says why).
  bool one_thread_small_steps = true;
  // The processes a data-parallel training step is split over, for kernels that sum over the
  // whole batch (BuildContext::cross_process); null: this process alone. Must outlive the plan.
  const CrossProcess* cross_process = nullptr;
};

// What the plan knows of one graph node, for `inspect` and profiling.
struct PlannedNode {
  const Node* node = nullptr;
  std::vector<Shape> input_shapes, output_shapes;
  bool folded = false;  // evaluated when the plan was built (no kernel at run time)
};

// One step of the executed sequence: a graph node's kernel or an inserted reorder.
struct PlanStepInfo {
  std::string name;  // node name, or "to_plain(<value>)" for an inserted reorder
  std::string op;    // op type, or "Reorder"
  const PlannedNode* planned = nullptr;  // null for inserted reorders
  size_t bytes_in = 0, bytes_out = 0;    // bytes read from inputs and written to outputs
  bool blocked_output = false;           // output left in a oneDNN layout
  bool dynamic_output = false;           // an output's shape is known only when it runs
  bool one_thread = false;               // runs on one thread (a small step)
  std::string kernel;  // the implementation (oneDNN's name), when the op reports it
};

struct MemoryPlanStats {
  size_t arena_bytes = 0;      // peak activation memory: the arena's size
  size_t sum_value_bytes = 0;  // what one buffer per intermediate value would take
  size_t num_values = 0;       // intermediate values placed in the arena
};

// Called by Plan::run as soon as graph output `output` holds its final value (after the last
// step that writes it), on the running thread, while later steps have yet to run: a training
// step's gradients can be sent while the rest of the backward pass computes. `value` is the
// same view run() returns in `outputs`; the callee must not write it, and must return quickly
// (the steps wait for it). Outputs that no step writes (constants, inputs) are reported before
// the first step; a plan that splits (continuation) reports every output after its last step.
using OutputReadyFn = std::function<void(size_t output, const Tensor& value)>;

class Plan {
 public:
  ~Plan();
  // Builds a plan for `g` with one shape per graph input (graph order). `g` must outlive the
  // plan. Errors name the node whose shape inference or kernel creation failed.
  // `fixed_inputs` (graph-input index -> value) are treated as constants: the plan is then
  // specialized on those values and run() checks they are unchanged. When the build fails
  // because a node needs the value of a graph input that is not fixed, `needed_inputs`
  // receives that input's index (PlanCache fixes it and builds again).
  static Result<std::unique_ptr<Plan>> build(const Graph& g, const std::vector<Shape>& input_shapes,
                                             const std::map<int, Tensor>& fixed_inputs = {},
                                             const PlanOptions& opts = {},
                                             std::vector<int>* needed_inputs = nullptr);

  // Runs with `inputs` in graph-input order, each of the planned dtype and shape (checked).
  // `outputs` receives one tensor per graph output: views of plan-owned buffers, valid until the
  // next run. With `step_ns`, it receives the wall time of each step (size num_steps(); a
  // continuation's steps are not timed).
  // Not thread-safe: one run at a time per plan. An inference plan may run with fewer OpenMP
  // threads than the calling thread's setting (PlanOptions::tune_threads), which it restores.
  // With `on_ready`, each output is also reported as soon as it is final (OutputReadyFn).
  Status run(const std::vector<Tensor>& inputs, std::vector<Tensor>* outputs,
             std::vector<int64_t>* step_ns = nullptr, const OutputReadyFn& on_ready = nullptr);

  const std::vector<Shape>& input_shapes() const { return input_shapes_; }
  // The dtype and shape of each graph output (graph-output order). The shapes are meaningful
  // only when static_shapes(); the dtypes of a split plan are the graph's declared ones.
  std::vector<DType> output_dtypes() const;
  std::vector<Shape> output_shapes() const;
  // False when an output's shape is known only after a run (the plan splits, or its last node
  // has a dynamic output).
  bool static_shapes() const { return !rest_ && !dynamic_outputs_; }
  // The nodes planned when run() reaches the split (0 when the plan does not split).
  size_t continuation_nodes() const;
  const std::vector<PlannedNode>& nodes() const { return planned_; }
  const std::vector<PlanStepInfo>& steps() const { return step_info_; }
  size_t num_kernels() const { return steps_.size(); }
  const MemoryPlanStats& memory() const { return memory_; }
  // Bytes of the activation arena (kept for callers of the first version).
  size_t activation_bytes() const { return memory_.arena_bytes; }
  const PlanOptions& options() const { return opts_; }
  // The step after which each graph output is final (-1: before the first step), in output
  // order; empty for a plan that splits.
  const std::vector<int>& output_ready_steps() const { return output_ready_step_; }
  // The thread count the tuner settled on (0: still trying, or tuning is off).
  int tuned_threads() const { return tuner_.chosen(); }

 private:
  struct Slot {
    Tensor tensor;
    bool is_const = false;
    int alias_of = -1;          // slot whose buffer this one shares
    dnnl::memory::desc layout;  // zero: plain
    size_t bytes = 0;           // buffer size for arena slots
    bool in_arena = false;
    int plain_copy = -1;  // slot holding this value reordered to plain
    // Slots holding this value converted for kernels (BuildContext::convert_input): the
    // descriptor and the slot.
    std::vector<std::pair<dnnl::memory::desc, int>> conversions;
  };
  struct Step {
    KernelPtr kernel;
    bool one_thread = false;  // run with one OpenMP thread (PlanOptions::one_thread_small_steps)
    std::vector<const Tensor*> in;
    std::vector<Tensor*> out;
  };
  // run() without the thread tuning.
  Status run_steps(const std::vector<Tensor>& inputs, std::vector<Tensor>* outputs,
                   std::vector<int64_t>* step_ns, const OutputReadyFn& on_ready);
  class Builder;        // Plan::build's stages (plan.cpp)
  struct Continuation;  // the graph after the split, and its plans (plan.cpp)
  int root_of(int slot) const { return slots_[slot].alias_of >= 0 ? slots_[slot].alias_of : slot; }

  const Graph* graph_ = nullptr;
  PlanOptions opts_;
  std::vector<Shape> input_shapes_;
  std::vector<Slot> slots_;
  std::vector<int> input_slots_, output_slots_;
  std::vector<int> input_aliases_;      // alias slots whose root is a graph input (rebound per run)
  std::vector<int> output_ready_step_;  // per graph output: its last writing step, or -1
  // Per step: the graph outputs final after it (OutputReadyFn), and those final before any step.
  std::vector<std::vector<size_t>> ready_after_step_;
  std::vector<size_t> ready_before_steps_;
  std::vector<Step> steps_;
  std::vector<PlanStepInfo> step_info_;
  std::vector<PlannedNode> planned_;
  Tensor arena_;
  MemoryPlanStats memory_;
  std::unique_ptr<Continuation> rest_;
  ThreadTuner tuner_;
  bool dynamic_outputs_ = false;  // a graph output is a dynamic output (no continuation)
};

}  // namespace dlsys
