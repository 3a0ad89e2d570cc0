#include "graph/plan.h"

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cstring>
#include <unordered_map>

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

size_t align64(size_t n) {
  return (n + 63) & ~size_t{63};
}

}  // namespace

Result<std::unique_ptr<Plan>> Plan::build(const Graph& g, const std::vector<Shape>& input_shapes,
                                          const std::map<int, Tensor>& fixed_inputs,
                                          const PlanOptions& opts) {
  auto plan = std::unique_ptr<Plan>(new Plan());
  Plan& p = *plan;
  p.graph_ = &g;
  p.opts_ = opts;
  p.input_shapes_ = input_shapes;
  if (input_shapes.size() != g.inputs.size())
    return Status::Invalid("the model has {} inputs, {} shapes given", g.inputs.size(),
                           input_shapes.size());
  if (opts.precision == Precision::kBF16 && !bf16_kernels_available())
    return Status::Unsupported(
        "bf16 precision needs a CPU with AVX512-BF16 or AMX; oneDNN sees '{}' here and has no "
        "bf16 kernels for it: run with fp32 (the default)",
        cpu_isa_name());

  // Count slots first so that pointers into slots_ stay valid (each node output may get a
  // to-plain copy too, and each node input a conversion).
  size_t nslots = g.initializers.size() + g.inputs.size() + g.outputs.size();
  for (const Node& n : g.nodes) nslots += 2 * n.outputs.size() + n.inputs.size();
  p.slots_.reserve(nslots);
  p.planned_.reserve(g.nodes.size());
  std::unordered_map<std::string, int> ids;
  auto add_slot = [&] {
    assert(p.slots_.size() < p.slots_.capacity() &&
           "slot count underestimated: pointers would dangle");
    p.slots_.emplace_back();
    return static_cast<int>(p.slots_.size()) - 1;
  };
  auto new_slot = [&](const std::string& name) {
    int id = add_slot();
    ids[name] = id;
    return id;
  };
  for (const auto& [name, t] : g.initializers) {
    int id = new_slot(name);
    p.slots_[id].tensor = t;
    p.slots_[id].is_const = true;
  }
  for (size_t i = 0; i < g.inputs.size(); ++i) {
    const ValueInfo& vi = g.inputs[i];
    int id = new_slot(vi.name);
    // Shape and data are bound per run; the tensor carries the planned shape.
    p.slots_[id].tensor = Tensor::wrap(vi.dtype, input_shapes[i], nullptr);
    auto fixed = fixed_inputs.find(static_cast<int>(i));
    if (fixed != fixed_inputs.end()) {
      p.slots_[id].tensor = fixed->second.clone();
      p.slots_[id].is_const = true;
    }
    p.input_slots_.push_back(id);
  }

  // A value may stay in a oneDNN layout when it is not a graph output and every consumer
  // accepts a layout on that input.
  std::unordered_map<std::string, bool> layout_free;
  for (const ValueInfo& o : g.outputs) layout_free[o.name] = false;
  for (const Node& node : g.nodes) {
    const OpSchema* schema = find_op(node.op_type);
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      if (node.inputs[i].empty()) continue;
      bool ok = schema && (schema->layout_inputs >> i & 1u);
      auto [it, fresh] = layout_free.emplace(node.inputs[i], ok);
      if (!fresh) it->second = it->second && ok;
    }
  }

  std::vector<ValueDesc> descs;
  std::vector<int> step_in, step_out;
  std::vector<std::vector<int>> step_slots_in, step_slots_out;
  auto push_step = [&](KernelPtr kernel, const std::vector<int>& in_ids,
                       const std::vector<int>& out_ids, PlanStepInfo info) {
    Step st;
    st.kernel = std::move(kernel);
    for (int id : in_ids) {
      st.in.push_back(id >= 0 ? &p.slots_[id].tensor : nullptr);
      if (id >= 0)
        info.bytes_in += p.slots_[id].is_const ? p.slots_[id].tensor.nbytes() : p.slots_[id].bytes;
    }
    for (int id : out_ids) {
      st.out.push_back(id >= 0 ? &p.slots_[id].tensor : nullptr);
      if (id >= 0) {
        info.bytes_out += p.slots_[id].bytes;
        info.blocked_output = info.blocked_output || !p.slots_[id].layout.is_zero();
        p.slots_[id].first_def = static_cast<int>(p.steps_.size());
      }
    }
    p.steps_.push_back(std::move(st));
    p.step_info_.push_back(std::move(info));
    step_slots_in.push_back(in_ids);
    step_slots_out.push_back(out_ids);
  };
  // Gives slot `id` (value `name`, in a oneDNN layout) a plain copy made by a "to_plain" step,
  // once; its consumers that need plain data and the graph outputs read the copy.
  auto to_plain = [&](int id, const std::string& name) -> Status {
    if (p.slots_[id].plain_copy >= 0) return Status::OK();
    int pc = add_slot();
    Slot& c = p.slots_[pc];
    const Tensor& src = p.slots_[id].tensor;
    c.tensor = Tensor::wrap(src.dtype(), src.shape(), nullptr);
    c.bytes = c.tensor.nbytes();
    c.in_arena = true;
    p.slots_[id].plain_copy = pc;
    KernelPtr k;
    try {
      k = std::make_unique<ReorderKernel>(p.slots_[id].layout, plain_md(src.shape(), src.dtype()));
    } catch (const dnnl::error& e) {
      return Status::Internal("value '{}': no reorder to plain ({})", name, e.what());
    }
    PlanStepInfo info;
    info.name = "to_plain(" + name + ")";
    info.op = "Reorder";
    push_step(std::move(k), {id}, {pc}, std::move(info));
    return Status::OK();
  };

  for (const Node& node : g.nodes) {
    const OpSchema* schema = find_op(node.op_type);
    if (!schema)
      return Status::Unsupported("node '{}': op {} is not supported", node.name, node.op_type);
    descs.assign(node.inputs.size(), ValueDesc{});
    std::vector<const ValueDesc*> in_ptrs(node.inputs.size(), nullptr);
    std::vector<int> in_ids(node.inputs.size(), -1);
    bool all_const = true;
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      if (node.inputs[i].empty()) continue;
      auto it = ids.find(node.inputs[i]);
      if (it == ids.end())
        return Status::Invalid(
            "node '{}' ({}) reads value '{}' that no earlier node, input or "
            "initializer produces (is the graph topologically sorted?)",
            node.name, node.op_type, node.inputs[i]);
      int id = it->second;
      if (!p.slots_[id].layout.is_zero() && !(schema->layout_inputs >> i & 1u)) {
        // This consumer needs plain data: reorder once, shared by every such consumer.
        DLSYS_RETURN_IF_ERROR(to_plain(id, node.inputs[i]));
        id = p.slots_[id].plain_copy;
      }
      const Slot& s = p.slots_[id];
      descs[i].dtype = s.tensor.dtype();
      descs[i].shape = s.tensor.shape();
      descs[i].value = s.is_const ? &s.tensor : nullptr;
      descs[i].layout = s.layout;
      all_const = all_const && s.is_const;
      in_ptrs[i] = &descs[i];
      in_ids[i] = id;
    }
    std::vector<bool> used(node.outputs.size()), free(node.outputs.size());
    for (size_t i = 0; i < node.outputs.size(); ++i) {
      used[i] = !node.outputs[i].empty();
      auto lf = layout_free.find(node.outputs[i]);
      free[i] = used[i] && !all_const && lf != layout_free.end() && lf->second;
    }
    BuildContext ctx(node.name, node.op_type, g.opset, node.attrs, in_ptrs, node.outputs.size(),
                     used);
    ctx.set_precision(opts.precision);
    ctx.set_training(opts.training);
    ctx.set_output_layout_free(free);
    KernelPtr kernel;
    DLSYS_ASSIGN_OR_RETURN(kernel, schema->build(ctx));
    // Inputs the kernel wants converted: one reorder step per (value, descriptor), shared.
    for (const auto& [i, md] : ctx.input_conversions()) {
      if (i >= in_ids.size() || in_ids[i] < 0 || p.slots_[in_ids[i]].is_const)
        return Status::Internal(
            "node '{}' ({}): asked to convert input {}, which is absent or constant (a bug in "
            "the op's build function)",
            node.name, node.op_type, i);
      Slot& src = p.slots_[in_ids[i]];
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
        Slot& c = p.slots_[conv];
        c.tensor = Tensor::wrap(src.tensor.dtype(), src.tensor.shape(), nullptr);
        c.layout = md;
        c.bytes = md.get_size();
        c.in_arena = true;
        src.conversions.emplace_back(md, conv);
        PlanStepInfo info;
        info.name = "to_layout(" + node.inputs[i] + ")";
        info.op = "Reorder";
        push_step(std::move(k), {in_ids[i]}, {conv}, std::move(info));
      }
      in_ids[i] = conv;
    }

    p.planned_.emplace_back();
    PlannedNode& pn = p.planned_.back();
    pn.node = &node;
    for (auto& d : descs) pn.input_shapes.push_back(d.shape);
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
      Slot& s = p.slots_[id];
      if (od.value.data()) {
        s.tensor = od.value;
        s.is_const = true;
      } else if (od.alias_of_input >= 0) {
        int base = in_ids[od.alias_of_input];
        const Slot& b = p.slots_[base];
        s.tensor =
            b.tensor.data() ? b.tensor.view(od.shape) : Tensor::wrap(od.dtype, od.shape, nullptr);
        s.is_const = b.is_const;
        int root = b.alias_of >= 0 ? b.alias_of : base;
        if (!b.is_const) {
          s.alias_of = root;
          bool root_is_input =
              std::find(p.input_slots_.begin(), p.input_slots_.end(), root) != p.input_slots_.end();
          if (root_is_input) p.input_aliases_.push_back(id);
        }
      } else if (all_const) {
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
    if (kernel && has_runtime_output) {
      if (all_const) {
        // Every input is known now: evaluate once (constant folding of shape subgraphs).
        std::vector<const Tensor*> ins(node.inputs.size(), nullptr);
        std::vector<Tensor*> outs(node.outputs.size(), nullptr);
        for (size_t i = 0; i < ins.size(); ++i)
          if (in_ids[i] >= 0) ins[i] = &p.slots_[in_ids[i]].tensor;
        for (size_t i = 0; i < outs.size(); ++i)
          if (out_ids[i] >= 0) outs[i] = &p.slots_[out_ids[i]].tensor;
        Status st = kernel->run(ins.data(), outs.data());
        if (!st.ok()) return st;
        dnnl_stream().wait();
        for (int id : out_ids)
          if (id >= 0) p.slots_[id].is_const = true;
        pn.folded = true;
      } else {
        PlanStepInfo info;
        info.name = node.name;
        info.op = node.op_type;
        info.planned = &pn;
        info.kernel = ctx.impl();
        push_step(std::move(kernel), in_ids, out_ids, std::move(info));
      }
    } else {
      pn.folded = true;
    }
  }
  for (const ValueInfo& o : g.outputs) {
    auto it = ids.find(o.name);
    if (it == ids.end())
      return Status::Invalid("graph output '{}' is produced by no node, input or initializer",
                             o.name);
    int id = it->second;
    // A kernel may have had to leave an output in a layout (a fused conv writes into Z's): the
    // caller gets plain data.
    if (!p.slots_[id].layout.is_zero()) {
      DLSYS_RETURN_IF_ERROR(to_plain(id, o.name));
      id = p.slots_[id].plain_copy;
    }
    p.output_slots_.push_back(id);
  }

  // Liveness: a value's interval runs from the step that writes it to the last step that reads
  // it or any alias of it; graph outputs live to the end.
  int nsteps = static_cast<int>(p.steps_.size());
  for (int k = 0; k < nsteps; ++k)
    for (int id : step_slots_in[k])
      if (id >= 0) {
        Slot& r = p.slots_[p.root_of(id)];
        r.last_use = std::max(r.last_use, k);
      }
  for (int id : p.output_slots_) p.slots_[p.root_of(id)].last_use = nsteps;
  p.plan_memory();
  return plan;
}

void Plan::plan_memory() {
  std::vector<int> order;
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& s = slots_[i];
    if (!s.in_arena) continue;
    if (s.first_def < 0) s.first_def = 0;
    s.last_use = std::max(s.last_use, s.first_def);
    order.push_back(static_cast<int>(i));
    memory_.sum_value_bytes += s.bytes;
  }
  memory_.num_values = order.size();
  // Greedy by size: the largest values are placed first, each at the lowest offset that does not
  // overlap a placed value whose interval intersects its own.
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return slots_[a].bytes > slots_[b].bytes; });
  std::vector<size_t> offset(slots_.size(), 0);
  std::vector<int> placed;
  size_t total = 0;
  std::vector<std::pair<size_t, size_t>> busy;  // [begin, end) byte ranges of conflicting values
  for (int id : order) {
    const Slot& s = slots_[id];
    busy.clear();
    for (int q : placed) {
      const Slot& o = slots_[q];
      if (o.first_def <= s.last_use && s.first_def <= o.last_use)
        busy.emplace_back(offset[q], offset[q] + align64(o.bytes));
    }
    std::sort(busy.begin(), busy.end());
    size_t need = align64(s.bytes), at = 0, best = SIZE_MAX, best_gap = SIZE_MAX;
    for (auto [b, e] : busy) {
      if (b >= at && b - at >= need && b - at < best_gap) {
        best = at;
        best_gap = b - at;
      }
      at = std::max(at, e);
    }
    if (best == SIZE_MAX) best = at;
    offset[id] = best;
    total = std::max(total, best + need);
    placed.push_back(id);
  }
  memory_.arena_bytes = total;
  arena_ = Tensor::empty(DType::kU8, {static_cast<int64_t>(std::max<size_t>(total, 64))});
  char* base = arena_.data_as<char>();
  for (int id : order) slots_[id].tensor.reset_data(base + offset[id]);
  for (Slot& s : slots_)
    if (s.alias_of >= 0 && slots_[s.alias_of].in_arena)
      s.tensor.reset_data(slots_[s.alias_of].tensor.data());
}

Status Plan::run(const std::vector<Tensor>& inputs, std::vector<Tensor>* outputs,
                 std::vector<int64_t>* step_ns) {
  if (inputs.size() != input_slots_.size())
    return Status::Invalid("plan expects {} inputs, got {}", input_slots_.size(), inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    Tensor& t = slots_[input_slots_[i]].tensor;
    if (inputs[i].dtype() != t.dtype() || inputs[i].shape() != t.shape())
      return Status::Invalid("input '{}': plan was built for {} {}, got {} {}",
                             graph_->inputs[i].name, dtype_name(t.dtype()), shape_str(t.shape()),
                             dtype_name(inputs[i].dtype()), shape_str(inputs[i].shape()));
    if (slots_[input_slots_[i]].is_const) {
      if (std::memcmp(t.data(), inputs[i].data(), t.nbytes()) != 0)
        return Status::Invalid("input '{}': plan was specialized on another value of this input",
                               graph_->inputs[i].name);
      continue;
    }
    t.reset_data(inputs[i].data());
  }
  for (int id : input_aliases_)
    slots_[id].tensor.reset_data(slots_[slots_[id].alias_of].tensor.data());
  if (step_ns) step_ns->assign(steps_.size(), 0);
  for (size_t k = 0; k < steps_.size(); ++k) {
    Step& s = steps_[k];
    auto t0 = step_ns ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    Status st = s.kernel->run(s.in.data(), s.out.data());
    if (!st.ok()) return st;
    if (step_ns) {
      dnnl_stream().wait();
      (*step_ns)[k] = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now() - t0)
                          .count();
    }
  }
  dnnl_stream().wait();
  outputs->resize(output_slots_.size());
  for (size_t i = 0; i < output_slots_.size(); ++i) (*outputs)[i] = slots_[output_slots_[i]].tensor;
  return Status::OK();
}

}  // namespace dlsys
