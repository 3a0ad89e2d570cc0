#include "graph/plan.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <set>
#include <unordered_map>

#include "graph/memory_planner.h"
#include "graph/plan_cache.h"
#include "ops/dnnl_util.h"
#include "ops/op_registry.h"

namespace dlsys {

namespace {

// Reorders a value between two descriptors (inserted by the planner: to plain for a consumer
// that needs plain data, or to the layout a kernel asked for with convert_input).
class ReorderKernel : public Kernel {
 public:
  ReorderKernel(const dnnl::memory::desc& from, const dnnl::memory::desc& to) { r_.init(from, to); }
  Status run(const Tensor* const* in, Tensor* const* out) override {
    r_.run(in[0]->data(), out[0]->data());
    return Status::OK();
  }

 private:
  DnnlReorder r_;
};

// A control-flow node's subgraph planned on its own (BuildContext::plan_subgraph): a copy of the
// subgraph whose inputs take the outer values' dtypes, and its plans: the one for the shapes it
// was planned for, and others made on first use when a run brings other shapes.
class PlannedSubgraph : public SubgraphRunner {
 public:
  static Result<std::unique_ptr<SubgraphRunner>> build(const Graph& g,
                                                       const std::vector<ValueDesc>& inputs,
                                                       const PlanOptions& opts) {
    if (inputs.size() != g.inputs.size())
      return Status::Internal("subgraph '{}' has {} inputs, {} given", g.name, g.inputs.size(),
                              inputs.size());
    auto r = std::unique_ptr<PlannedSubgraph>(new PlannedSubgraph());
    r->graph_ = g;
    std::vector<Shape> shapes;
    std::map<int, Tensor> fixed;
    for (size_t i = 0; i < inputs.size(); ++i) {
      r->graph_.inputs[i].dtype = inputs[i].dtype;
      shapes.push_back(inputs[i].shape);
      // A sequence or optional changes from run to run (a loop's outer list): never fixed.
      if (inputs[i].value && !dtype_is_composite(inputs[i].dtype))
        fixed[static_cast<int>(i)] = inputs[i].value->clone();
    }
    PlanOptions o = opts;
    o.training = false;
    o.tune_threads = false;
    auto plan = Plan::build(r->graph_, shapes, fixed, o);
    if (!plan.ok())
      return plan.status().with_context(
          fmt::format("subgraph '{}'", g.name.empty() ? std::string("(unnamed)") : g.name));
    r->plan_ = std::move(plan).value();
    r->others_ = std::make_unique<PlanCache>(r->graph_, o, fixed);
    r->dtypes_ = r->plan_->output_dtypes();
    r->shapes_ = r->plan_->output_shapes();
    return std::unique_ptr<SubgraphRunner>(std::move(r));
  }
  const std::vector<DType>& output_dtypes() const override { return dtypes_; }
  const std::vector<Shape>& output_shapes() const override { return shapes_; }
  bool static_shapes() const override { return plan_->static_shapes(); }
  Status run(const std::vector<Tensor>& inputs, std::vector<Tensor>* outputs) override {
    bool planned_shapes = inputs.size() == plan_->input_shapes().size();
    for (size_t i = 0; planned_shapes && i < inputs.size(); ++i)
      planned_shapes = inputs[i].shape() == plan_->input_shapes()[i];
    if (planned_shapes) return plan_->run(inputs, outputs);
    std::vector<Shape> shapes;
    for (const Tensor& t : inputs) shapes.push_back(t.shape());
    auto other = others_->plan_for_shapes(shapes);
    if (!other.ok())
      return other.status().with_context(
          fmt::format("subgraph '{}' planned again for input shapes {}", graph_.name, [&] {
            std::string k;
            for (const Shape& sh : shapes) k += (k.empty() ? "" : ", ") + shape_str(sh);
            return k;
          }()));
    return other.value()->run(inputs, outputs);
  }

 private:
  PlannedSubgraph() = default;
  Graph graph_;                        // the plans point into it
  std::unique_ptr<Plan> plan_;         // for the shapes it was planned for
  std::unique_ptr<PlanCache> others_;  // for other shapes, made on first use
  std::vector<DType> dtypes_;
  std::vector<Shape> shapes_;
};

// The planner's side of BuildContext::plan_subgraph.
class SubgraphsOf : public SubgraphPlanner {
 public:
  explicit SubgraphsOf(const PlanOptions& opts) : opts_(opts) {}
  SubgraphArity arity(const Graph& g) const override {
    SubgraphArity a{g.inputs.size(), g.outputs.size(), g.outer_inputs.size(), g.name, {}};
    // An output passes an input through when it names it, maybe through Identity nodes.
    std::map<std::string, std::string> identity_of;
    for (const Node& n : g.nodes)
      if (n.op_type == "Identity" && n.inputs.size() == 1 && n.outputs.size() == 1)
        identity_of[n.outputs[0]] = n.inputs[0];
    for (const ValueInfo& o : g.outputs) {
      std::string name = o.name;
      for (int hops = 0; identity_of.count(name) && hops < 64; ++hops) name = identity_of[name];
      int at = -1;
      for (size_t i = 0; i < g.inputs.size() && at < 0; ++i)
        if (g.inputs[i].name == name) at = static_cast<int>(i);
      a.output_is_input.push_back(at);
    }
    return a;
  }
  Result<std::unique_ptr<SubgraphRunner>> plan(const Graph& g,
                                               const std::vector<ValueDesc>& ins) const override {
    return PlannedSubgraph::build(g, ins, opts_);
  }

 private:
  const PlanOptions& opts_;
};

}  // namespace

// The nodes after a split (plan.h, "Run-time shapes") as a graph of their own: its inputs are
// the values that cross the split (read from `from_slots` of the first part), and the values
// known at plan time that they read are its initializers.
struct Plan::Continuation {
  Graph graph;
  std::vector<int> from_slots;
  std::unique_ptr<PlanCache> plans;  // over `graph`
  std::vector<Tensor> ins;           // the crossing values of the current run
};

Plan::~Plan() = default;

size_t Plan::continuation_nodes() const {
  return rest_ ? rest_->graph.nodes.size() : 0;
}

// Builds one Plan. The stages, in the order build() runs them:
//   slots for initializers and graph inputs (add_constants_and_inputs);
//   which values may stay in a oneDNN layout (find_layout_free_values);
//   per node, in graph order: its inputs as the kernel sees them, with a to-plain step where a
//   consumer needs plain data (node_inputs), the kernel built (build_node), the conversions it
//   asked for as to-layout steps (convert_inputs), its outputs' slots, and either a step or an
//   evaluation right there when every input is known (add_outputs_and_step);
//   the graph outputs, made plain (bind_outputs);
//   or, at a node with a dynamic output or one that needs a value computed at run time, the rest
//   of the graph as a continuation instead (split_before);
//   liveness and placement in the arena (plan_memory, through graph/memory_planner.h).
class Plan::Builder {
 public:
  // Below this many input elements (weights included) a node's kernel is made for one thread.
  static constexpr int64_t kSmallKernelElements = 1 << 16;

  Builder(Plan* p, const Graph& g, const PlanOptions& opts, std::vector<int>* needed)
      : p_(*p), g_(g), opts_(opts), needed_(needed) {}

  Status build(const std::vector<Shape>& input_shapes, const std::map<int, Tensor>& fixed_inputs);

 private:
  int add_slot();
  int new_slot(const std::string& name);
  void add_constants_and_inputs(const std::vector<Shape>& input_shapes,
                                const std::map<int, Tensor>& fixed_inputs);
  void find_layout_free_values();
  void push_step(KernelPtr kernel, const std::vector<int>& in_ids, const std::vector<int>& out_ids,
                 PlanStepInfo info);

  // Layout steps.
  // Gives slot `id` (value `name`, in a oneDNN layout) a plain copy made by a "to_plain" step,
  // once; its consumers that need plain data and the graph outputs read the copy.
  Status to_plain(int id, const std::string& name);
  // Replaces each input the kernel asked for in another descriptor (BuildContext::convert_input)
  // by a slot holding it converted: one "to_layout" step per (value, descriptor), shared.
  Status convert_inputs(const Node& node, const BuildContext& ctx, std::vector<int>* in_ids);

  // Kernel building, per node.
  // Resolves the node's inputs to slots (`in_ids`) and descriptors (descs_); sets *all_const.
  Status node_inputs(const Node& node, const OpSchema& schema, std::vector<int>* in_ids,
                     bool* all_const);
  Status build_node(const Node& node);
  Status add_outputs_and_step(const Node& node, BuildContext& ctx, KernelPtr kernel,
                              const std::vector<int>& in_ids, bool all_const);

  Status bind_outputs();
  // Fills the plan's output_ready_step_ and ready_after_step_ from access_.
  void find_output_ready_steps();
  // Node `k` could not be planned for want of a value (missing_slot_): splits before it when the
  // value is computed by a step, else returns `st` (naming the graph input in needed_).
  Status split_for_value(size_t k, Status st);
  // Makes nodes [k, end) the plan's continuation.
  Status split_before(size_t k);
  // `live_at_end`: the slots read after the last step (graph outputs, or the crossing values).
  void plan_memory(const std::vector<int>& live_at_end);

  Plan& p_;
  const Graph& g_;
  const PlanOptions& opts_;
  std::unordered_map<std::string, int> ids_;           // value name -> slot
  std::unordered_map<std::string, bool> layout_free_;  // value -> may stay in a oneDNN layout
  std::vector<ValueDesc> descs_;                       // the current node's inputs
  std::vector<StepAccess> access_;                     // per step: slots read and written
  std::vector<int>* needed_;                           // Plan::build's needed_inputs
  int missing_slot_ = -1;        // the slot whose value the last node needed (or -1)
  bool small_step_ = false;      // the node being built runs on one thread (push_step)
  bool dynamic_output_ = false;  // the last node has a dynamic output
};

int Plan::Builder::add_slot() {
  DLSYS_CHECK(p_.slots_.size() < p_.slots_.capacity(),
              "slot count underestimated ({} reserved): pointers into slots_ would dangle; count "
              "every value the plan adds when reserving",
              p_.slots_.capacity());
  p_.slots_.emplace_back();
  return static_cast<int>(p_.slots_.size()) - 1;
}

int Plan::Builder::new_slot(const std::string& name) {
  int id = add_slot();
  ids_[name] = id;
  return id;
}

Status Plan::Builder::build(const std::vector<Shape>& input_shapes,
                            const std::map<int, Tensor>& fixed_inputs) {
  // Count slots first so that pointers into slots_ stay valid (each node output may get a
  // to-plain copy too, and each node input a conversion).
  size_t nslots = g_.initializers.size() + g_.inputs.size() + g_.outputs.size();
  for (const Node& n : g_.nodes) nslots += 2 * n.outputs.size() + n.inputs.size();
  p_.slots_.reserve(nslots);
  p_.planned_.reserve(g_.nodes.size());
  add_constants_and_inputs(input_shapes, fixed_inputs);
  find_layout_free_values();
  for (size_t k = 0; k < g_.nodes.size(); ++k) {
    missing_slot_ = -1;
    dynamic_output_ = false;
    Status st = build_node(g_.nodes[k]);
    if (!st.ok()) return split_for_value(k, std::move(st));
    if (dynamic_output_ && k + 1 < g_.nodes.size()) return split_before(k + 1);
    p_.dynamic_outputs_ = dynamic_output_;
  }
  DLSYS_RETURN_IF_ERROR(bind_outputs());
  plan_memory(p_.output_slots_);
  find_output_ready_steps();
  return Status::OK();
}

// An output is final after the last step writing its buffer (a view's is its root's).
void Plan::Builder::find_output_ready_steps() {
  p_.ready_after_step_.assign(p_.steps_.size(), {});
  for (size_t o = 0; o < p_.output_slots_.size(); ++o) {
    const int root = p_.root_of(p_.output_slots_[o]);
    int last = -1;
    for (size_t k = 0; k < access_.size(); ++k)
      for (int w : access_[k].writes)
        if (w >= 0 && p_.root_of(w) == root) last = static_cast<int>(k);
    p_.output_ready_step_.push_back(last);
    if (last < 0)
      p_.ready_before_steps_.push_back(o);
    else
      p_.ready_after_step_[static_cast<size_t>(last)].push_back(o);
  }
}

Status Plan::Builder::split_for_value(size_t k, Status st) {
  if (missing_slot_ < 0) return st;
  const int root = p_.root_of(missing_slot_);
  auto in = std::find(p_.input_slots_.begin(), p_.input_slots_.end(), root);
  if (in != p_.input_slots_.end()) {
    if (needed_) needed_->push_back(static_cast<int>(in - p_.input_slots_.begin()));
    return st;
  }
  const Tensor& v = p_.slots_[missing_slot_].tensor;
  if (dtype_is_object(v.dtype()) || v.numel() > PlanCache::kMaxFixedElements)
    return st.with_context(fmt::format(
        "the value is computed while running ({} {}), and dlsys plans per value only for values "
        "of at most {} numbers",
        dtype_name(v.dtype()), shape_str(v.shape()), PlanCache::kMaxFixedElements));
  return split_before(k);
}

Status Plan::Builder::split_before(size_t k) {
  p_.rest_ = std::make_unique<Continuation>();
  Continuation& c = *p_.rest_;
  Graph& r = c.graph;
  r.name = g_.name;
  r.opset = g_.opset;
  r.ir_version = g_.ir_version;
  r.producer = g_.producer;
  r.nodes.assign(g_.nodes.begin() + static_cast<std::ptrdiff_t>(k), g_.nodes.end());
  r.outputs = g_.outputs;
  // The values the nodes after the split read (or the graph gives out) that come from before it.
  std::set<std::string> made, seen;
  std::vector<std::string> reads;
  auto read = [&](const std::string& name) {
    if (!name.empty() && !made.count(name) && seen.insert(name).second) reads.push_back(name);
  };
  for (const Node& n : r.nodes) {
    for (const std::string& in : n.inputs) read(in);
    for (const std::string& out : n.outputs) made.insert(out);
  }
  for (const ValueInfo& o : r.outputs) read(o.name);
  for (const std::string& name : reads) {
    auto it = ids_.find(name);
    if (it == ids_.end())
      return Status::Invalid(
          "value '{}' is read after node '{}' but no earlier node, input or initializer "
          "produces it (is the graph topologically sorted?)",
          name, g_.nodes[k > 0 ? k - 1 : 0].name);
    int id = it->second;
    if (p_.slots_[id].is_const) {
      r.initializers[name] = p_.slots_[id].tensor;
      continue;
    }
    if (!p_.slots_[id].layout.is_zero()) {
      DLSYS_RETURN_IF_ERROR(to_plain(id, name));
      id = p_.slots_[id].plain_copy;
    }
    ValueInfo vi;
    vi.name = name;
    vi.dtype = p_.slots_[id].tensor.dtype();
    r.inputs.push_back(vi);
    c.from_slots.push_back(id);
  }
  c.ins.resize(c.from_slots.size());
  PlanOptions rest_opts = opts_;
  rest_opts.tune_threads = false;  // its runs are timed as part of this plan's
  c.plans = std::make_unique<PlanCache>(r, rest_opts);
  plan_memory(c.from_slots);
  return Status::OK();
}

void Plan::Builder::add_constants_and_inputs(const std::vector<Shape>& input_shapes,
                                             const std::map<int, Tensor>& fixed_inputs) {
  for (const auto& [name, t] : g_.initializers) {
    int id = new_slot(name);
    p_.slots_[id].tensor = t;
    p_.slots_[id].is_const = true;
  }
  for (size_t i = 0; i < g_.inputs.size(); ++i) {
    const ValueInfo& vi = g_.inputs[i];
    int id = new_slot(vi.name);
    // Shape and data are bound per run; the tensor carries the planned shape.
    p_.slots_[id].tensor = Tensor::wrap(vi.dtype, input_shapes[i], nullptr);
    auto fixed = fixed_inputs.find(static_cast<int>(i));
    if (fixed != fixed_inputs.end()) {
      p_.slots_[id].tensor = fixed->second.clone();
      p_.slots_[id].is_const = true;
    }
    p_.input_slots_.push_back(id);
  }
}

// A value may stay in a oneDNN layout when it is not a graph output and every consumer accepts
// a layout on that input.
void Plan::Builder::find_layout_free_values() {
  for (const ValueInfo& o : g_.outputs) layout_free_[o.name] = false;
  for (const Node& node : g_.nodes) {
    const OpSchema* schema = find_op(node.op_type);
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      if (node.inputs[i].empty()) continue;
      bool ok = schema && (schema->layout_inputs >> i & 1u);
      auto [it, fresh] = layout_free_.emplace(node.inputs[i], ok);
      if (!fresh) it->second = it->second && ok;
    }
  }
}

void Plan::Builder::push_step(KernelPtr kernel, const std::vector<int>& in_ids,
                              const std::vector<int>& out_ids, PlanStepInfo info) {
  Step st;
  st.kernel = std::move(kernel);
  st.one_thread = small_step_;
  info.one_thread = small_step_;
  for (int id : in_ids) {
    st.in.push_back(id >= 0 ? &p_.slots_[id].tensor : nullptr);
    if (id >= 0)
      info.bytes_in += p_.slots_[id].is_const ? p_.slots_[id].tensor.nbytes() : p_.slots_[id].bytes;
  }
  for (int id : out_ids) {
    st.out.push_back(id >= 0 ? &p_.slots_[id].tensor : nullptr);
    if (id >= 0) {
      info.bytes_out += p_.slots_[id].bytes;
      info.blocked_output = info.blocked_output || !p_.slots_[id].layout.is_zero();
    }
  }
  p_.steps_.push_back(std::move(st));
  p_.step_info_.push_back(std::move(info));
  access_.push_back(StepAccess{in_ids, out_ids});
}

Status Plan::Builder::to_plain(int id, const std::string& name) {
  if (p_.slots_[id].plain_copy >= 0) return Status::OK();
  int pc = add_slot();
  Slot& c = p_.slots_[pc];
  const Tensor& src = p_.slots_[id].tensor;
  c.tensor = Tensor::wrap(src.dtype(), src.shape(), nullptr);
  c.bytes = c.tensor.nbytes();
  c.in_arena = true;
  p_.slots_[id].plain_copy = pc;
  KernelPtr k;
  try {
    k = std::make_unique<ReorderKernel>(p_.slots_[id].layout, plain_md(src.shape(), src.dtype()));
  } catch (const dnnl::error& e) {
    return Status::Internal("value '{}': no reorder to plain ({})", name, e.what());
  }
  PlanStepInfo info;
  info.name = "to_plain(" + name + ")";
  info.op = "Reorder";
  push_step(std::move(k), {id}, {pc}, std::move(info));
  return Status::OK();
}

Status Plan::Builder::convert_inputs(const Node& node, const BuildContext& ctx,
                                     std::vector<int>* in_ids) {
  for (const auto& [i, md] : ctx.input_conversions()) {
    if (i >= in_ids->size() || (*in_ids)[i] < 0 || p_.slots_[(*in_ids)[i]].is_const)
      return Status::Internal(
          "node '{}' ({}): asked to convert input {}, which is absent or constant (a bug in "
          "the op's build function)",
          node.name, node.op_type, i);
    Slot& src = p_.slots_[(*in_ids)[i]];
    int conv = -1;
    for (const auto& [have, slot] : src.conversions)
      if (have == md) conv = slot;
    if (conv < 0) {
      dnnl::memory::desc from =
          src.layout.is_zero() ? plain_md(src.tensor.shape(), src.tensor.dtype()) : src.layout;
      KernelPtr k;
      try {
        k = std::make_unique<ReorderKernel>(from, md);
      } catch (const dnnl::error& e) {
        return Status::Internal("value '{}': no reorder to the layout node '{}' asked for ({})",
                                node.inputs[i], node.name, e.what());
      }
      conv = add_slot();  // slots_ is reserved: `src` stays valid
      Slot& c = p_.slots_[conv];
      c.tensor = Tensor::wrap(src.tensor.dtype(), src.tensor.shape(), nullptr);
      c.layout = md;
      c.bytes = md.get_size();
      c.in_arena = true;
      src.conversions.emplace_back(md, conv);
      PlanStepInfo info;
      info.name = "to_layout(" + node.inputs[i] + ")";
      info.op = "Reorder";
      push_step(std::move(k), {(*in_ids)[i]}, {conv}, std::move(info));
    }
    (*in_ids)[i] = conv;
  }
  return Status::OK();
}

Status Plan::Builder::node_inputs(const Node& node, const OpSchema& schema,
                                  std::vector<int>* in_ids, bool* all_const) {
  descs_.assign(node.inputs.size(), ValueDesc{});
  in_ids->assign(node.inputs.size(), -1);
  *all_const = true;
  for (size_t i = 0; i < node.inputs.size(); ++i) {
    if (node.inputs[i].empty()) continue;
    auto it = ids_.find(node.inputs[i]);
    if (it == ids_.end())
      return Status::Invalid(
          "node '{}' ({}) reads value '{}' that no earlier node, input or "
          "initializer produces (is the graph topologically sorted?)",
          node.name, node.op_type, node.inputs[i]);
    int id = it->second;
    if (!p_.slots_[id].layout.is_zero() && !(schema.layout_inputs >> i & 1u)) {
      // This consumer needs plain data: reorder once, shared by every such consumer.
      DLSYS_RETURN_IF_ERROR(to_plain(id, node.inputs[i]));
      id = p_.slots_[id].plain_copy;
    }
    const Slot& s = p_.slots_[id];
    descs_[i].dtype = s.tensor.dtype();
    descs_[i].shape = s.tensor.shape();
    descs_[i].value = s.is_const ? &s.tensor : nullptr;
    descs_[i].layout = s.layout;
    *all_const = *all_const && s.is_const;
    (*in_ids)[i] = id;
  }
  return Status::OK();
}

Status Plan::Builder::build_node(const Node& node) {
  const OpSchema* schema = find_op(node.op_type);
  if (!schema)
    return Status::Unsupported("node '{}': op {} is not supported", node.name, node.op_type);
  std::vector<int> in_ids;
  bool all_const = true;
  DLSYS_RETURN_IF_ERROR(node_inputs(node, *schema, &in_ids, &all_const));
  // A random op draws new values every run: never evaluated here, whatever its inputs.
  if (schema->random) all_const = false;
  std::vector<const ValueDesc*> in_ptrs(node.inputs.size(), nullptr);
  for (size_t i = 0; i < node.inputs.size(); ++i)
    if (in_ids[i] >= 0) in_ptrs[i] = &descs_[i];
  std::vector<bool> used(node.outputs.size()), free(node.outputs.size());
  for (size_t i = 0; i < node.outputs.size(); ++i) {
    used[i] = !node.outputs[i].empty();
    auto lf = layout_free_.find(node.outputs[i]);
    free[i] = used[i] && !all_const && lf != layout_free_.end() && lf->second;
  }
  BuildContext ctx(node.name, node.op_type, g_.opset, node.attrs, in_ptrs, node.outputs.size(),
                   used);
  ctx.set_precision(opts_.precision);
  ctx.set_training(opts_.training);
  ctx.set_cross_process(opts_.cross_process);
  ctx.set_output_layout_free(free);
  SubgraphsOf planner(opts_);
  ctx.set_subgraph_planner(&planner);
  // A kernel too small to pay for a parallel region is made for one thread (OneOmpThread):
  // on 2 passive threads a 32x32 detector head took 1.1 ms, on one 0.03 ms.
  // Not a node with subgraphs (If, Loop, Scan): its inputs say nothing of its branches' or body's
  // work, which reads outer-scope values.
  int64_t work = 0;
  for (const ValueDesc& d : descs_) work += shape_numel(d.shape);
  for (const auto& [name, a] : node.attrs)
    if (a.kind == Attribute::Kind::kGraph) work = kSmallKernelElements;
  // Its input conversions likewise (oneDNN's reorders also fix their thread count when made),
  // and all its steps run on one thread (PlanOptions::one_thread_small_steps; push_step).
  std::optional<OneOmpThread> one;
  if (work < kSmallKernelElements) one.emplace();
  small_step_ = work < kSmallKernelElements && opts_.one_thread_small_steps;
  auto built = build_kernel(*schema, ctx);
  Status st = built.status();
  if (!built.ok()) {
    const int m = ctx.missing_value_input();
    if (m >= 0 && static_cast<size_t>(m) < in_ids.size()) missing_slot_ = in_ids[m];
  } else {
    st = convert_inputs(node, ctx, &in_ids);
    if (st.ok()) st = add_outputs_and_step(node, ctx, std::move(built).value(), in_ids, all_const);
  }
  small_step_ = false;
  return st;
}

Status Plan::Builder::add_outputs_and_step(const Node& node, BuildContext& ctx, KernelPtr kernel,
                                           const std::vector<int>& in_ids, bool all_const) {
  p_.planned_.emplace_back();
  PlannedNode& pn = p_.planned_.back();
  pn.node = &node;
  for (auto& d : descs_) pn.input_shapes.push_back(d.shape);
  std::vector<int> out_ids(node.outputs.size(), -1);
  bool has_runtime_output = false;
  for (size_t i = 0; i < node.outputs.size(); ++i) {
    const OutputDesc& od = ctx.outputs()[i];
    if (!od.set)
      return Status::Internal(
          "node '{}' ({}): output {} was not inferred (a bug in the op's build function)",
          node.name, node.op_type, i);
    pn.output_shapes.push_back(od.shape);
    if (node.outputs[i].empty()) continue;
    int id = new_slot(node.outputs[i]);
    out_ids[i] = id;
    Slot& s = p_.slots_[id];
    if (od.value.data()) {
      s.tensor = od.value;
      s.is_const = true;
    } else if (od.dynamic) {
      // The kernel sets the tensor when it runs (a buffer it owns).
      s.tensor = Tensor::wrap(od.dtype, {0}, nullptr);
      has_runtime_output = true;
      dynamic_output_ = !all_const;
    } else if (od.alias_of_input >= 0) {
      int base = in_ids[od.alias_of_input];
      const Slot& b = p_.slots_[base];
      s.tensor =
          b.tensor.data() ? b.tensor.view(od.shape) : Tensor::wrap(od.dtype, od.shape, nullptr);
      s.is_const = b.is_const;
      // A view in a layout of its own (a Transpose's permuted strides over its input's bytes).
      s.layout = od.layout;
      int root = b.alias_of >= 0 ? b.alias_of : base;
      if (!b.is_const) {
        s.alias_of = root;
        bool root_is_input = std::find(p_.input_slots_.begin(), p_.input_slots_.end(), root) !=
                             p_.input_slots_.end();
        if (root_is_input) p_.input_aliases_.push_back(id);
      }
    } else if (all_const || dtype_is_object(od.dtype)) {
      // Strings, sequences and optionals are objects the tensor constructs and destroys: such
      // a value owns its storage rather than taking arena bytes.
      s.tensor = Tensor::empty(od.dtype, od.shape);
      has_runtime_output = true;
    } else {
      s.tensor = Tensor::wrap(od.dtype, od.shape, nullptr);
      s.layout = od.layout;
      s.bytes = od.layout.is_zero() ? s.tensor.nbytes() : od.layout.get_size();
      s.in_arena = true;
      has_runtime_output = true;
    }
  }
  if (!kernel || !has_runtime_output) {
    pn.folded = true;
    return Status::OK();
  }
  if (all_const) {
    // Every input is known now: evaluate once (constant folding of shape subgraphs).
    std::vector<const Tensor*> ins(node.inputs.size(), nullptr);
    std::vector<Tensor*> outs(node.outputs.size(), nullptr);
    for (size_t i = 0; i < ins.size(); ++i)
      if (in_ids[i] >= 0) ins[i] = &p_.slots_[in_ids[i]].tensor;
    for (size_t i = 0; i < outs.size(); ++i)
      if (out_ids[i] >= 0) outs[i] = &p_.slots_[out_ids[i]].tensor;
    DLSYS_RETURN_IF_ERROR(kernel->run(ins.data(), outs.data()));
    dnnl_stream().wait();
    for (size_t i = 0; i < out_ids.size(); ++i) {
      if (out_ids[i] < 0) continue;
      Slot& s = p_.slots_[out_ids[i]];
      // A dynamic output is the kernel's buffer, which dies with the kernel here.
      if (ctx.outputs()[i].dynamic) {
        s.tensor = s.tensor.clone();
        pn.output_shapes[i] = s.tensor.shape();
      }
      s.is_const = true;
    }
    pn.folded = true;
    return Status::OK();
  }
  PlanStepInfo info;
  info.name = node.name;
  info.op = node.op_type;
  info.planned = &pn;
  info.kernel = ctx.impl();
  info.dynamic_output = dynamic_output_;
  push_step(std::move(kernel), in_ids, out_ids, std::move(info));
  return Status::OK();
}

Status Plan::Builder::bind_outputs() {
  for (const ValueInfo& o : g_.outputs) {
    auto it = ids_.find(o.name);
    if (it == ids_.end())
      return Status::Invalid("graph output '{}' is produced by no node, input or initializer",
                             o.name);
    int id = it->second;
    // A kernel may have had to leave an output in a layout (a fused conv writes into Z's): the
    // caller gets plain data.
    if (!p_.slots_[id].layout.is_zero()) {
      DLSYS_RETURN_IF_ERROR(to_plain(id, o.name));
      id = p_.slots_[id].plain_copy;
    }
    p_.output_slots_.push_back(id);
  }
  return Status::OK();
}

// The memory planner sees slots as values: liveness over the steps, then placement of the
// arena slots; the arena is allocated once and each arena slot (and alias of one) points into it.
void Plan::Builder::plan_memory(const std::vector<int>& live_at_end) {
  std::vector<int> alias_root(p_.slots_.size());
  for (size_t i = 0; i < alias_root.size(); ++i) alias_root[i] = p_.root_of(static_cast<int>(i));
  std::vector<Lifetime> life =
      compute_lifetimes(p_.slots_.size(), access_, alias_root, live_at_end);
  std::vector<int> arena_slots;
  std::vector<BufferRequest> requests;
  for (size_t i = 0; i < p_.slots_.size(); ++i) {
    if (!p_.slots_[i].in_arena) continue;
    arena_slots.push_back(static_cast<int>(i));
    requests.push_back(BufferRequest{p_.slots_[i].bytes, life[i]});
  }
  MemoryPlan mp = place_values(requests);
  p_.memory_.arena_bytes = mp.arena_bytes;
  p_.memory_.sum_value_bytes = mp.sum_bytes;
  p_.memory_.num_values = requests.size();
  p_.arena_ =
      Tensor::empty(DType::kU8, {static_cast<int64_t>(std::max<size_t>(mp.arena_bytes, 64))});
  char* base = p_.arena_.data_as<char>();
  for (size_t k = 0; k < arena_slots.size(); ++k)
    p_.slots_[arena_slots[k]].tensor.reset_data(base + mp.offsets[k]);
  for (Slot& s : p_.slots_)
    if (s.alias_of >= 0 && p_.slots_[s.alias_of].in_arena)
      s.tensor.reset_data(p_.slots_[s.alias_of].tensor.data());
}

std::vector<DType> Plan::output_dtypes() const {
  std::vector<DType> out;
  if (rest_) {
    for (const ValueInfo& o : graph_->outputs) out.push_back(o.dtype);
    return out;
  }
  for (int id : output_slots_) out.push_back(slots_[id].tensor.dtype());
  return out;
}

std::vector<Shape> Plan::output_shapes() const {
  if (rest_) return std::vector<Shape>(graph_->outputs.size());
  std::vector<Shape> out;
  for (int id : output_slots_) out.push_back(slots_[id].tensor.shape());
  return out;
}

Result<std::unique_ptr<Plan>> Plan::build(const Graph& g, const std::vector<Shape>& input_shapes,
                                          const std::map<int, Tensor>& fixed_inputs,
                                          const PlanOptions& opts,
                                          std::vector<int>* needed_inputs) {
  auto plan = std::unique_ptr<Plan>(new Plan());
  plan->graph_ = &g;
  plan->opts_ = opts;
  plan->input_shapes_ = input_shapes;
  if (input_shapes.size() != g.inputs.size())
    return Status::Invalid("the model has {} inputs, {} shapes given", g.inputs.size(),
                           input_shapes.size());
  if (opts.precision == Precision::kBF16 && !bf16_kernels_available())
    return Status::Unsupported(
        "bf16 precision needs a CPU with AVX512-BF16 or AMX; oneDNN sees '{}' here and has no "
        "bf16 kernels for it: run with fp32 (the default)",
        cpu_isa_name());
  Builder builder(plan.get(), g, plan->opts_, needed_inputs);
  DLSYS_RETURN_IF_ERROR(builder.build(input_shapes, fixed_inputs));
  return plan;
}

static bool adaptive_threads_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("DLSYS_ADAPTIVE_THREADS");
    return !(e && std::string(e) == "0");
  }();
  return on;
}

Status Plan::run(const std::vector<Tensor>& inputs, std::vector<Tensor>* outputs,
                 std::vector<int64_t>* step_ns, const OutputReadyFn& on_ready) {
  if (!opts_.tune_threads || opts_.training || step_ns || !adaptive_threads_enabled())
    return run_steps(inputs, outputs, step_ns, on_ready);
  const int max = omp_get_max_threads();
  const int threads = tuner_.next(max);
  if (threads != max) omp_set_num_threads(threads);
  const auto t0 = std::chrono::steady_clock::now();
  Status st = run_steps(inputs, outputs, step_ns, on_ready);
  const int64_t ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  if (threads != max) omp_set_num_threads(max);
  if (st.ok()) tuner_.record(threads, ns);
  return st;
}

Status Plan::run_steps(const std::vector<Tensor>& inputs, std::vector<Tensor>* outputs,
                       std::vector<int64_t>* step_ns, const OutputReadyFn& on_ready) {
  if (inputs.size() != input_slots_.size())
    return Status::Invalid("plan expects {} inputs, got {}", input_slots_.size(), inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    Tensor& t = slots_[input_slots_[i]].tensor;
    if (inputs[i].dtype() != t.dtype() || inputs[i].shape() != t.shape())
      return Status::Invalid("input '{}': plan was built for {} {}, got {} {}",
                             graph_->inputs[i].name, dtype_name(t.dtype()), shape_str(t.shape()),
                             dtype_name(inputs[i].dtype()), shape_str(inputs[i].shape()));
    if (slots_[input_slots_[i]].is_const) {
      bool same = t.dtype() == DType::kString
                      ? std::equal(t.strings(), t.strings() + t.numel(), inputs[i].strings())
                  : dtype_is_composite(t.dtype())
                      ? t.data() == inputs[i].data()  // the same list object
                      : std::memcmp(t.data(), inputs[i].data(), t.nbytes()) == 0;
      if (!same)
        return Status::Invalid("input '{}': plan was specialized on another value of this input",
                               graph_->inputs[i].name);
      continue;
    }
    t.reset_data(inputs[i].data());
  }
  for (int id : input_aliases_)
    slots_[id].tensor.reset_data(slots_[slots_[id].alias_of].tensor.data());
  if (step_ns) step_ns->assign(steps_.size(), 0);
  const bool report = on_ready && !rest_;
  if (report)
    for (size_t o : ready_before_steps_) on_ready(o, slots_[output_slots_[o]].tensor);
  const int team = omp_get_max_threads();
  for (size_t k = 0; k < steps_.size(); ++k) {
    Step& s = steps_[k];
    auto t0 = step_ns ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    const bool narrow = s.one_thread && team > 1;
    if (narrow) omp_set_num_threads(1);
    Status st = s.kernel->run(s.in.data(), s.out.data());
    if (narrow) omp_set_num_threads(team);
    if (!st.ok()) return st;
    if (step_ns) {
      dnnl_stream().wait();
      (*step_ns)[k] = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now() - t0)
                          .count();
    }
    if (report && !ready_after_step_[k].empty()) {
      dnnl_stream().wait();
      for (size_t o : ready_after_step_[k]) on_ready(o, slots_[output_slots_[o]].tensor);
    }
  }
  dnnl_stream().wait();
  if (rest_) {
    for (size_t i = 0; i < rest_->from_slots.size(); ++i)
      rest_->ins[i] = slots_[rest_->from_slots[i]].tensor;
    Plan* next;
    DLSYS_ASSIGN_OR_RETURN(next, rest_->plans->plan_for(rest_->ins));
    DLSYS_RETURN_IF_ERROR(next->run(rest_->ins, outputs));
    if (on_ready)
      for (size_t o = 0; o < outputs->size(); ++o) on_ready(o, (*outputs)[o]);
    return Status::OK();
  }
  outputs->resize(output_slots_.size());
  for (size_t i = 0; i < output_slots_.size(); ++i) (*outputs)[i] = slots_[output_slots_[i]].tensor;
  return Status::OK();
}

}  // namespace dlsys
