// ConstantFolding: a node whose inputs are all initializers is run once, through the op
// registry, and its outputs become initializers.
#include "graph/passes/graph_uses.h"
#include "graph/passes/optimize.h"
#include "graph/passes/pass_util.h"
#include "ops/op_registry.h"

namespace dlsys {

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
    auto kernel = build_kernel(*schema, ctx);
    if (!kernel.ok()) continue;
    int64_t bytes = 0;
    bool complete = true;
    for (const OutputDesc& od : ctx.outputs()) {
      // Sequences and optionals have no initializer form in ONNX: the plan folds them instead.
      complete = complete && od.set && !dtype_is_composite(od.dtype);
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
    note_rewrite(report, fmt::format("folded {} '{}' into a constant", node.op_type, node.name));
    node.op_type.clear();
    ++n;
  }
  compact(g);
  return n;
}

}  // namespace dlsys
