// A Plan is a graph built for one concrete set of input shapes: every value has a dtype, a shape
// and a preallocated buffer; values computable from constants and shapes (shape subgraphs) were
// evaluated while building; each remaining node has a kernel with its oneDNN primitives created.
// Running a plan allocates nothing.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "graph/ir.h"

namespace dlsys {

// What the plan knows of one node, for `inspect` and profiling.
struct PlannedNode {
  const Node* node = nullptr;
  std::vector<Shape> input_shapes, output_shapes;
  bool folded = false;  // evaluated when the plan was built (no kernel at run time)
};

class Plan {
 public:
  // Builds a plan for `g` with one shape per graph input (graph order). `g` must outlive the
  // plan. Errors name the node whose shape inference or kernel creation failed.
  // `fixed_inputs` (graph-input index -> value) are treated as constants: the plan is then
  // specialized on those values and run() checks they are unchanged.
  static Result<std::unique_ptr<Plan>> build(const Graph& g, const std::vector<Shape>& input_shapes,
                                             const std::map<int, Tensor>& fixed_inputs = {});

  // Runs with `inputs` in graph-input order, each of the planned dtype and shape (checked).
  // `outputs` receives one tensor per graph output: views of plan-owned buffers, valid until the
  // next run. Not thread-safe: one run at a time per plan.
  Status run(const std::vector<Tensor>& inputs, std::vector<Tensor>* outputs);

  const std::vector<Shape>& input_shapes() const { return input_shapes_; }
  const std::vector<PlannedNode>& nodes() const { return planned_; }
  size_t num_kernels() const { return steps_.size(); }
  // Bytes of buffers allocated for intermediate values.
  size_t activation_bytes() const { return activation_bytes_; }

 private:
  struct Slot {
    Tensor tensor;
    bool is_const = false;
    int alias_of = -1;  // slot whose buffer this one shares
  };
  struct Step {
    KernelPtr kernel;
    const Node* node = nullptr;
    std::vector<const Tensor*> in;
    std::vector<Tensor*> out;
  };

  const Graph* graph_ = nullptr;
  std::vector<Shape> input_shapes_;
  std::vector<Slot> slots_;
  std::vector<int> input_slots_, output_slots_;
  std::vector<int> input_aliases_;  // alias slots whose root is a graph input (rebound per run)
  std::vector<Step> steps_;
  std::vector<PlannedNode> planned_;
  size_t activation_bytes_ = 0;
};

}  // namespace dlsys
