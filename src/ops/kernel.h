// The contract between the graph planner and an op: an op's build function sees its inputs'
// dtypes, shapes and (when known at plan time) values, infers its outputs, and returns a Kernel
// prepared for exactly those shapes (oneDNN primitives created once, here).
#pragma once

#include <dnnl.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "ops/attribute.h"
#include "tensor/tensor.h"

namespace dlsys {

// What an op's build function sees of one input.
struct ValueDesc {
  DType dtype = DType::kF32;
  Shape shape;
  const Tensor* value = nullptr;  // non-null when the value is known at plan time
  // The physical layout when it is not plain row-major `dtype` (a oneDNN blocked layout, maybe
  // in bf16): only ops whose schema lists this input in `layout_inputs` ever see one.
  dnnl::memory::desc layout;
  bool plain() const { return layout.is_zero(); }
};

// What an op's build function says of one output.
struct OutputDesc {
  DType dtype = DType::kF32;
  Shape shape;
  bool set = false;
  Tensor value;               // valid() when the output is known at plan time (no kernel runs)
  int alias_of_input = -1;    // >= 0: the output shares that input's buffer (reshape-like ops)
  dnnl::memory::desc layout;  // non-zero: stored in this oneDNN layout (see ValueDesc::layout)
  // The shape is known only when the kernel runs (BuildContext::set_output_dynamic).
  bool dynamic = false;
};

// A kernel prepared for fixed shapes. run() must not allocate on the steady-state path, except
// for a dynamic output (BuildContext::set_output_dynamic), which run() sets: `*out[i] = t`, a
// tensor the kernel allocates or owns, valid until its next run.
// `in[i]` is null for an absent optional input. Not thread-safe: one run at a time.
class Kernel {
 public:
  virtual ~Kernel() = default;
  virtual Status run(const Tensor* const* in, Tensor* const* out) = 0;
};
using KernelPtr = std::unique_ptr<Kernel>;

// A subgraph (If's branch, Loop's or Scan's body) planned for fixed input dtypes and shapes, as
// a control-flow kernel runs it. Not thread-safe: one run at a time.
class SubgraphRunner {
 public:
  virtual ~SubgraphRunner() = default;
  virtual const std::vector<DType>& output_dtypes() const = 0;
  // The outputs' shapes for the inputs it was planned for; meaningful only when static_shapes().
  virtual const std::vector<Shape>& output_shapes() const = 0;
  // False when an output's shape is known only once the subgraph runs (it holds a node with a
  // dynamic output, graph/plan.h "Run-time shapes").
  virtual bool static_shapes() const = 0;
  // `inputs` in the subgraph's input order, of the planned dtypes; shapes other than the planned
  // ones are planned on first use (a loop-carried value that grows). `outputs` are views of
  // buffers the runner owns, valid until its next run.
  virtual Status run(const std::vector<Tensor>& inputs, std::vector<Tensor>* outputs) = 0;
};
// What a control-flow op needs to know of a subgraph before planning it: its inputs and
// outputs (Graph::inputs/outputs, the outer values among the inputs) and its name.
struct SubgraphArity {
  size_t inputs = 0, outputs = 0, outer_inputs = 0;
  std::string name;
  // Per output: the index of the subgraph input it passes through unchanged, or -1 (a Loop
  // body whose condition output is its condition input never stops early).
  std::vector<int> output_is_input;
};
// Reads and plans subgraphs (graph/ir.h's Graph) for the ops, which do not depend on the graph
// library: provided by the planner (graph/plan.cpp).
class SubgraphPlanner {
 public:
  virtual ~SubgraphPlanner() = default;
  virtual SubgraphArity arity(const Graph& g) const = 0;
  // Plans `g` for `inputs` (their dtypes and shapes; a value known at plan time is fixed in the
  // subgraph's plan).
  virtual Result<std::unique_ptr<SubgraphRunner>> plan(
      const Graph& g, const std::vector<ValueDesc>& inputs) const = 0;
};

// The processes a training step is split over, for the few kernels whose result depends on
// the whole batch (synchronized batch norm): gather() gives every process every process's
// `mine` (n floats each, in process order, into all[0 .. processes() * n)); every process calls
// it in the same order. A kernel combines the parts itself, in process order, so every process
// computes the same bits; one exchange rather than an all-reduce's two rounds, as these are
// small and their latency is what they cost. Provided by the trainer over dist::ProcessGroup
// (the ops do not depend on dist); without one a kernel is on its own, as one process.
class CrossProcess {
 public:
  virtual ~CrossProcess() = default;
  virtual int processes() const = 0;
  virtual Status gather(const float* mine, size_t n, float* all) const = 0;
};

// The global oneDNN CPU engine and a stream on it (oneDNN on OpenMP: streams are cheap).
dnnl::engine& dnnl_engine();
dnnl::stream& dnnl_stream();

// Everything a build function needs; built by the planner for one node.
class BuildContext {
 public:
  BuildContext(std::string node_name, std::string op_type, int opset, const AttributeMap& attrs,
               std::vector<const ValueDesc*> inputs, size_t num_outputs,
               std::vector<bool> output_used);

  const std::string& node_name() const { return node_name_; }
  const std::string& op_type() const { return op_type_; }
  int opset() const { return opset_; }

  size_t num_inputs() const { return inputs_.size(); }
  // True when input i is given (ONNX marks an absent optional input with an empty name).
  bool has_input(size_t i) const { return i < inputs_.size() && inputs_[i] != nullptr; }
  const ValueDesc& input(size_t i) const { return *inputs_[i]; }
  const Shape& in_shape(size_t i) const { return inputs_[i]->shape; }
  DType in_dtype(size_t i) const { return inputs_[i]->dtype; }
  const Tensor* in_value(size_t i) const { return has_input(i) ? inputs_[i]->value : nullptr; }
  // The physical layout of input i (zero: plain row-major in its dtype).
  const dnnl::memory::desc& in_layout(size_t i) const { return inputs_[i]->layout; }
  Precision precision() const { return precision_; }
  void set_precision(Precision p) { precision_ = p; }
  // True in a plan for a training step (PlanOptions::training): forward kernels may then pick
  // the layouts their gradient kernels use, so that conversions are shared (convert_input).
  bool training() const { return training_; }
  void set_training(bool t) { training_ = t; }
  // Asks the planner to hand input i to the kernel converted to `md` (a oneDNN layout and
  // maybe another dtype, e.g. plain f32 NCHW -> bf16 nChw16c): the planner inserts one reorder
  // step, shared by every kernel that asks for the same value in the same descriptor (the
  // forward Conv and ConvGradWeight both convert X; ConvGradInput and ConvGradWeight both
  // convert dY). Input i must not be known at plan time (in_value(i) == nullptr): kernels
  // prepare constants themselves.
  void convert_input(size_t i, const dnnl::memory::desc& md) { conversions_.emplace_back(i, md); }
  const std::vector<std::pair<size_t, dnnl::memory::desc>>& input_conversions() const {
    return conversions_;
  }
  // The implementation the kernel runs, for profiles (oneDNN's name, e.g.
  // "jit_wino_4x3:avx512_core"); empty when the op does not say.
  void set_impl(std::string impl) { impl_ = std::move(impl); }
  const std::string& impl() const { return impl_; }
  // True when every consumer of output i accepts oneDNN layouts: the kernel may then leave the
  // output in its preferred layout (set_output_layout) and skip the reorder back to plain.
  bool output_layout_free(size_t i) const { return i < layout_free_.size() && layout_free_[i]; }
  void set_output_layout_free(std::vector<bool> v) { layout_free_ = std::move(v); }
  void set_output_layout(size_t i, const dnnl::memory::desc& md);

  size_t num_outputs() const { return outputs_.size(); }
  bool output_used(size_t i) const { return i < used_.size() && used_[i]; }
  void set_output(size_t i, DType dtype, const Shape& shape);
  void set_output_value(size_t i, Tensor value);
  // Output i's shape depends on values known only when the kernel runs (how many elements
  // NonZero finds, the boxes NonMaxSuppression keeps, the branch If takes): the kernel sets
  // `*out[i]` to a tensor of `dtype` it allocates or owns. The planner plans the nodes that
  // follow once the shape is known (graph/plan.h, "Run-time shapes"). An op whose inputs are
  // all known at plan time is run then, so its output is a constant like any other.
  void set_output_dynamic(size_t i, DType dtype);
  void alias_output(size_t i, size_t input, const Shape& shape);
  std::vector<OutputDesc>& outputs() { return outputs_; }

  bool has_attr(const std::string& name) const { return attrs_.count(name) > 0; }
  int64_t attr_int(const std::string& name, int64_t def) const;
  float attr_float(const std::string& name, float def) const;
  std::string attr_string(const std::string& name, const std::string& def) const;
  std::vector<int64_t> attr_ints(const std::string& name) const;
  std::vector<float> attr_floats(const std::string& name) const;
  const Attribute* attr(const std::string& name) const;

  // An InvalidArgument error prefixed with "node '<name>' (<op>): ".
  template <typename... Args>
  Status error(fmt::format_string<Args...> f, Args&&... args) const {
    return Status(StatusCode::kInvalidArgument,
                  where() + fmt::format(f, std::forward<Args>(args)...));
  }
  template <typename... Args>
  Status unsupported(fmt::format_string<Args...> f, Args&&... args) const {
    return Status(StatusCode::kUnsupported, where() + fmt::format(f, std::forward<Args>(args)...));
  }
  // Requires input i to be known at plan time and returns its values as int64.
  Result<std::vector<int64_t>> const_ints(size_t i, const char* what) const;
  // The Unsupported error for input i when it is not known at plan time. The planner then plans
  // again with the value known (graph/plan_cache.h: fixed when it is a small graph input; a run-
  // time split before this node when it is computed: graph/plan.h), and the error stands only
  // when it cannot. Records i (missing_value_input).
  Status plan_time_value_missing(size_t i, const char* what) const;
  // The input whose value the last plan_time_value_missing named, or -1.
  int missing_value_input() const { return missing_value_input_; }
  // Requires input i to be known at plan time and f32; returns its values.
  Result<std::vector<float>> const_floats(size_t i, const char* what) const;
  // Requires that input i has one of the listed dtypes.
  Status expect_dtype(size_t i, std::initializer_list<DType> allowed) const;
  // A subgraph of this node (control flow): its arity, and its plan for `inputs`. Unsupported
  // where no planner was set (the constant-folding pass builds kernels without one).
  Result<SubgraphArity> subgraph_arity(const Graph& g) const;
  Result<std::unique_ptr<SubgraphRunner>> plan_subgraph(const Graph& g,
                                                        const std::vector<ValueDesc>& inputs) const;
  // `p` must outlive the build.
  void set_subgraph_planner(const SubgraphPlanner* p) { subgraph_planner_ = p; }
  // The other processes of a data-parallel step (null: none); `c` must outlive the kernels.
  void set_cross_process(const CrossProcess* c) { cross_process_ = c; }
  const CrossProcess* cross_process() const { return cross_process_; }

 private:
  std::string where() const;
  std::string node_name_, op_type_;
  int opset_;
  const AttributeMap& attrs_;
  std::vector<const ValueDesc*> inputs_;
  std::vector<OutputDesc> outputs_;
  std::vector<bool> used_;
  std::vector<bool> layout_free_;
  Precision precision_ = Precision::kF32;
  bool training_ = false;
  std::vector<std::pair<size_t, dnnl::memory::desc>> conversions_;
  std::string impl_;
  const SubgraphPlanner* subgraph_planner_ = nullptr;
  const CrossProcess* cross_process_ = nullptr;
  mutable int missing_value_input_ = -1;
};

using BuildFn = Result<KernelPtr> (*)(BuildContext&);

// A kernel from a lambda, for plain C++ kernels with captured plan-time state.
template <typename F>
class LambdaKernel : public Kernel {
 public:
  explicit LambdaKernel(F f) : f_(std::move(f)) {}
  Status run(const Tensor* const* in, Tensor* const* out) override { return f_(in, out); }

 private:
  F f_;
};
template <typename F>
KernelPtr make_kernel(F f) {
  return std::make_unique<LambdaKernel<F>>(std::move(f));
}

}  // namespace dlsys
