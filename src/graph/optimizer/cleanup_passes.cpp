// ConstantFolding, IdentityElimination, CommonSubexpressionElimination, DeadNodeElimination.
#include <map>
#include <set>
#include <unordered_map>

#include "graph/optimizer/graph_uses.h"
#include "graph/optimizer/optimize.h"
#include "ops/op_registry.h"

namespace dlsys {
namespace {

bool nondeterministic(const std::string& op) {
  return op.rfind("Random", 0) == 0 || op == "Multinomial" || op == "Bernoulli";
}

void note(OptimizeReport* r, std::string line) {
  if (r) r->rewrites.push_back(std::move(line));
}

// A byte string identifying an attribute map, for CSE.
std::string attrs_key(const AttributeMap& attrs) {
  std::string k;
  for (const auto& [name, a] : attrs) {
    k += name;
    k += fmt::format("#{}:{}:{}:{}:", static_cast<int>(a.kind), a.f, a.i, a.s);
    for (int64_t v : a.ints) k += fmt::format("{},", v);
    k += ";";
    for (float v : a.floats) k += fmt::format("{},", v);
    k += ";";
    for (const std::string& v : a.strings) k += v + "\x1f";
    if (a.t.valid()) {
      k += fmt::format("t{}{}", static_cast<int>(a.t.dtype()), shape_str(a.t.shape()));
      k.append(static_cast<const char*>(a.t.data()), a.t.nbytes());
    }
    if (a.kind == Attribute::Kind::kGraph || a.kind == Attribute::Kind::kOther)
      k += fmt::format("@{}", static_cast<const void*>(&a));  // never equal
    k += "\x1e";
  }
  return k;
}

}  // namespace

int fold_constants(Graph* g, int64_t max_bytes, OptimizeReport* report,
                   bool keep_weight_dequantize) {
  int n = 0;
  for (Node& node : g->nodes) {
    if (node.op_type.empty() || nondeterministic(node.op_type)) continue;
    if (keep_weight_dequantize && node.op_type == "DequantizeLinear" && !node.inputs.empty()) {
      const Tensor* q = initializer(*g, node.inputs[0]);
      if (q && q->dtype() == DType::kI8 && q->rank() >= 2) continue;
    }
    const OpSchema* schema = find_op(node.op_type);
    if (!schema) continue;
    std::vector<ValueDesc> descs(node.inputs.size());
    std::vector<const ValueDesc*> ptrs(node.inputs.size(), nullptr);
    bool all_const = true;
    for (size_t i = 0; i < node.inputs.size() && all_const; ++i) {
      if (node.inputs[i].empty()) continue;
      const Tensor* t = initializer(*g, node.inputs[i]);
      if (!t) {
        all_const = false;
        break;
      }
      descs[i].dtype = t->dtype();
      descs[i].shape = t->shape();
      descs[i].value = t;
      ptrs[i] = &descs[i];
    }
    if (!all_const) continue;
    std::vector<bool> used(node.outputs.size());
    for (size_t i = 0; i < used.size(); ++i) used[i] = !node.outputs[i].empty();
    BuildContext ctx(node.name, node.op_type, g->opset, node.attrs, ptrs, node.outputs.size(),
                     used);
    auto kernel = schema->build(ctx);
    if (!kernel.ok()) continue;
    int64_t bytes = 0;
    bool complete = true;
    for (const OutputDesc& od : ctx.outputs()) {
      complete = complete && od.set;
      bytes += shape_numel(od.shape) * static_cast<int64_t>(dtype_size(od.dtype));
    }
    if (!complete || bytes > max_bytes) continue;
    std::vector<Tensor> outs(node.outputs.size());
    std::vector<const Tensor*> in_ptrs(node.inputs.size(), nullptr);
    std::vector<Tensor*> out_ptrs(node.outputs.size(), nullptr);
    bool run = false;
    for (size_t i = 0; i < outs.size(); ++i) {
      const OutputDesc& od = ctx.outputs()[i];
      if (od.value.valid() && od.value.data())
        outs[i] = od.value;
      else if (od.alias_of_input >= 0)
        outs[i] = descs[od.alias_of_input].value->view(od.shape).clone();
      else {
        outs[i] = Tensor::empty(od.dtype, od.shape);
        run = true;
      }
      out_ptrs[i] = &outs[i];
    }
    for (size_t i = 0; i < in_ptrs.size(); ++i) in_ptrs[i] = descs[i].value;
    if (run && kernel.value()) {
      if (!kernel.value()->run(in_ptrs.data(), out_ptrs.data()).ok()) continue;
      dnnl_stream().wait();
    }
    for (size_t i = 0; i < outs.size(); ++i)
      if (!node.outputs[i].empty()) g->initializers[node.outputs[i]] = outs[i];
    note(report, fmt::format("folded {} '{}' into a constant", node.op_type, node.name));
    node.op_type.clear();
    ++n;
  }
  compact(g);
  return n;
}

int eliminate_identities(Graph* g, OptimizeReport* report) {
  GraphUses uses(*g);
  int n = 0;
  for (Node& node : g->nodes) {
    bool identity = node.op_type == "Identity";
    if (node.op_type == "Dropout") {
      // Inference Dropout is the identity when its mask is unused and training_mode is off.
      bool mask_used = node.outputs.size() > 1 && !node.outputs[1].empty() &&
                       (uses.uses(node.outputs[1]) > 0 || uses.is_graph_output(node.outputs[1]));
      bool training = false;
      if (node.inputs.size() > 2 && !node.inputs[2].empty()) {
        const Tensor* t = initializer(*g, node.inputs[2]);
        training = !t || t->numel() != 1 || t->get_i64(0) != 0;
      }
      identity = !mask_used && !training;
    }
    if (!identity || node.inputs.empty() || node.inputs[0].empty()) continue;
    const std::string& out = node.outputs[0];
    if (uses.is_graph_output(out)) continue;  // keep the graph's output name
    replace_uses(g, out, node.inputs[0]);
    note(report, fmt::format("removed {} '{}'", node.op_type, node.name));
    node.op_type.clear();
    ++n;
  }
  compact(g);
  return n;
}

int eliminate_common_subexpressions(Graph* g, OptimizeReport* report) {
  int n = 0;
  std::unordered_map<std::string, int> seen;
  GraphUses uses(*g);
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    Node& node = g->nodes[i];
    if (node.op_type.empty() || nondeterministic(node.op_type)) continue;
    std::string key = node.domain + "|" + node.op_type + "|";
    for (const std::string& in : node.inputs) key += in + "\x1f";
    key += "|" + attrs_key(node.attrs);
    auto [it, fresh] = seen.emplace(key, static_cast<int>(i));
    if (fresh) continue;
    const Node& first = g->nodes[it->second];
    bool outputs_ok = first.outputs.size() == node.outputs.size();
    for (size_t k = 0; outputs_ok && k < node.outputs.size(); ++k)
      outputs_ok = !uses.is_graph_output(node.outputs[k]) &&
                   (node.outputs[k].empty() || !first.outputs[k].empty());
    if (!outputs_ok) continue;
    for (size_t k = 0; k < node.outputs.size(); ++k)
      if (!node.outputs[k].empty()) replace_uses(g, node.outputs[k], first.outputs[k]);
    note(report, fmt::format("merged {} '{}' into '{}' (same inputs and attributes)", node.op_type,
                             node.name, first.name));
    node.op_type.clear();
    ++n;
  }
  compact(g);
  return n;
}

int eliminate_dead_nodes(Graph* g, OptimizeReport* report) {
  std::set<std::string> live;
  for (const ValueInfo& o : g->outputs) live.insert(o.name);
  int n = 0;
  for (size_t k = g->nodes.size(); k-- > 0;) {
    Node& node = g->nodes[k];
    bool needed = false;
    for (const std::string& o : node.outputs) needed = needed || (!o.empty() && live.count(o));
    if (!needed) {
      note(report, fmt::format("removed {} '{}' (no output is used)", node.op_type, node.name));
      node.op_type.clear();
      ++n;
      continue;
    }
    for (const std::string& in : node.inputs)
      if (!in.empty()) live.insert(in);
  }
  compact(g);
  for (auto it = g->initializers.begin(); it != g->initializers.end();) {
    if (!live.count(it->first))
      it = g->initializers.erase(it);
    else
      ++it;
  }
  return n;
}

}  // namespace dlsys
