#include "graph/plan.h"

#include <cstring>
#include <unordered_map>

#include "ops/op_registry.h"

namespace dlsys {

Result<std::unique_ptr<Plan>> Plan::build(const Graph& g, const std::vector<Shape>& input_shapes,
                                          const std::map<int, Tensor>& fixed_inputs) {
  auto plan = std::unique_ptr<Plan>(new Plan());
  Plan& p = *plan;
  p.graph_ = &g;
  p.input_shapes_ = input_shapes;
  if (input_shapes.size() != g.inputs.size())
    return Status::Invalid("the model has {} inputs, {} shapes given", g.inputs.size(),
                           input_shapes.size());

  // Count slots first so that pointers into slots_ stay valid.
  size_t nslots = g.initializers.size() + g.inputs.size();
  for (const Node& n : g.nodes) nslots += n.outputs.size();
  p.slots_.reserve(nslots);
  std::unordered_map<std::string, int> ids;
  auto new_slot = [&](const std::string& name) {
    p.slots_.emplace_back();
    int id = static_cast<int>(p.slots_.size()) - 1;
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

  std::vector<ValueDesc> descs;
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
      const Slot& s = p.slots_[it->second];
      descs[i].dtype = s.tensor.dtype();
      descs[i].shape = s.tensor.shape();
      descs[i].value = s.is_const ? &s.tensor : nullptr;
      all_const = all_const && s.is_const;
      in_ptrs[i] = &descs[i];
      in_ids[i] = it->second;
    }
    std::vector<bool> used(node.outputs.size());
    for (size_t i = 0; i < node.outputs.size(); ++i) used[i] = !node.outputs[i].empty();
    BuildContext ctx(node.name, node.op_type, g.opset, node.attrs, in_ptrs, node.outputs.size(),
                     used);
    KernelPtr kernel;
    DLSYS_ASSIGN_OR_RETURN(kernel, schema->build(ctx));

    PlannedNode pn;
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
      } else {
        s.tensor = Tensor::empty(od.dtype, od.shape);
        has_runtime_output = true;
      }
    }
    if (kernel && has_runtime_output) {
      std::vector<const Tensor*> ins(node.inputs.size(), nullptr);
      std::vector<Tensor*> outs(node.outputs.size(), nullptr);
      for (size_t i = 0; i < ins.size(); ++i)
        if (in_ids[i] >= 0) ins[i] = &p.slots_[in_ids[i]].tensor;
      for (size_t i = 0; i < outs.size(); ++i)
        if (out_ids[i] >= 0) outs[i] = &p.slots_[out_ids[i]].tensor;
      if (all_const) {
        // Every input is known now: evaluate once (constant folding of shape subgraphs).
        Status st = kernel->run(ins.data(), outs.data());
        if (!st.ok()) return st;
        dnnl_stream().wait();
        for (int id : out_ids)
          if (id >= 0) p.slots_[id].is_const = true;
        pn.folded = true;
      } else {
        for (int id : out_ids)
          if (id >= 0) p.activation_bytes_ += p.slots_[id].tensor.nbytes();
        p.steps_.push_back(Step{std::move(kernel), &node, std::move(ins), std::move(outs)});
      }
    } else {
      pn.folded = true;
    }
    p.planned_.push_back(std::move(pn));
  }
  for (const ValueInfo& o : g.outputs) {
    auto it = ids.find(o.name);
    if (it == ids.end())
      return Status::Invalid("graph output '{}' is produced by no node, input or initializer",
                             o.name);
    p.output_slots_.push_back(it->second);
  }
  return plan;
}

Status Plan::run(const std::vector<Tensor>& inputs, std::vector<Tensor>* outputs) {
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
  for (Step& s : steps_) {
    Status st = s.kernel->run(s.in.data(), s.out.data());
    if (!st.ok()) return st;
  }
  dnnl_stream().wait();
  outputs->resize(output_slots_.size());
  for (size_t i = 0; i < output_slots_.size(); ++i) (*outputs)[i] = slots_[output_slots_[i]].tensor;
  return Status::OK();
}

}  // namespace dlsys
