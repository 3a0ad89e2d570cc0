// QuantizedConvFusion: DequantizeLinear -> Conv/FusedConv [-> QuantizeLinear] -> QConv on
// oneDNN's int8 convolution.
#include "graph/passes/graph_uses.h"
#include "graph/passes/optimize.h"
#include "graph/passes/pass_util.h"
#include "graph/passes/qdq_match.h"

namespace dlsys {

int fuse_quantized_conv(Graph* g, OptimizeReport* report) {
  int n = 0;
  GraphUses u(*g);
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    Node& c = g->nodes[i];
    if ((c.op_type != "Conv" && c.op_type != "FusedConv") || c.inputs.size() < 2) continue;
    QdqMatch dx, dw, dz, qy;
    if (!match_dequantize(g, u, c.inputs[0], &dx) || dx.scales.size() != 1 ||
        initializer(*g, dx.quantized) || (dx.qtype != 2 && dx.qtype != 3))
      continue;
    if (!match_dequantize(g, u, c.inputs[1], &dw)) continue;
    const Tensor* wq = initializer(*g, dw.quantized);
    if (!wq || wq->dtype() != DType::kI8 || wq->rank() < 3) continue;
    if (dw.scales.size() != 1 &&
        (dw.axis != 0 || static_cast<int64_t>(dw.scales.size()) != wq->dim(0)))
      continue;
    bool has_bias = c.inputs.size() > 2 && !c.inputs[2].empty();
    if (has_bias) {
      const Tensor* b = initializer(*g, c.inputs[2]);
      if (!b || b->dtype() != DType::kF32) continue;
    }
    bool has_z = c.inputs.size() > 3 && !c.inputs[3].empty();
    bool fold_q = c.outputs.size() == 1 && match_single_quantize(g, u, c.outputs[0], &qy);
    // An int8 output adds an int8 Z; an f32 output adds an f32 Z.
    bool z_int8 = has_z && fold_q && match_dequantize(g, u, c.inputs[3], &dz) &&
                  dz.scales.size() == 1 && (dz.qtype == 2 || dz.qtype == 3) &&
                  !initializer(*g, dz.quantized);
    if (has_z && fold_q && !z_int8) fold_q = false;
    Node q;
    q.name = c.name;
    q.op_type = "QConv";
    q.domain = "dlsys";
    q.attrs = c.attrs;
    q.inputs = {dx.quantized, dw.quantized, has_bias ? c.inputs[2] : ""};
    if (has_z) q.inputs.push_back(z_int8 ? dz.quantized : c.inputs[3]);
    q.attrs["x_scale"] = Attribute::of_float(dx.scales[0]);
    Attribute ws;
    ws.kind = Attribute::Kind::kFloats;
    ws.floats = dw.scales;
    q.attrs["w_scales"] = ws;
    if (z_int8) q.attrs["z_scale"] = Attribute::of_float(dz.scales[0]);
    if (fold_q) {
      q.attrs["y_scale"] = Attribute::of_float(qy.scales[0]);
      q.attrs["y_type"] = Attribute::of_int(qy.qtype);
      q.outputs = {qy.quantized};
      qy.node->op_type.clear();
    } else {
      q.outputs = c.outputs;
    }
    note_rewrite(report, fmt::format("quantized {} '{}' into QConv ({}{}{})", c.op_type, c.name,
                                     dx.qtype == 2 ? "u8" : "s8",
                                     fold_q ? (qy.qtype == 2 ? " -> u8" : " -> s8") : " -> f32",
                                     z_int8 ? ", int8 residual" : ""));
    c = std::move(q);
    ++n;
    u = GraphUses(*g);
  }
  compact(g);
  return n;
}

}  // namespace dlsys
