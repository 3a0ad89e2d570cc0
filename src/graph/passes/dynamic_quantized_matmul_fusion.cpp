// DynamicQuantizedMatMulFusion: MatMul of a float activation and DQ(int8 weight) ->
// QMatMulDynamic (the activation quantized per run).
#include "graph/passes/graph_uses.h"
#include "graph/passes/optimize.h"
#include "graph/passes/pass_util.h"
#include "graph/passes/qdq_match.h"

namespace dlsys {

int fuse_dynamic_quantized_matmul(Graph* g, OptimizeReport* report) {
  int n = 0;
  GraphUses u(*g);
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    Node& m = g->nodes[i];
    if ((m.op_type != "MatMul" && m.op_type != "FusedMatMul") || m.inputs.size() < 2) continue;
    QdqMatch dw, dx;
    if (!match_dequantize(g, u, m.inputs[1], &dw)) continue;
    const Tensor* wq = initializer(*g, dw.quantized);
    if (!wq || wq->dtype() != DType::kI8 || wq->rank() != 2) continue;
    if (dw.scales.size() != 1 &&
        ((dw.axis != 1 && dw.axis != -1) || static_cast<int64_t>(dw.scales.size()) != wq->dim(1)))
      continue;
    // A statically quantized activation (DequantizeLinear input) is not this pattern.
    if (match_dequantize(g, u, m.inputs[0], &dx)) continue;
    if (m.inputs.size() > 2 && !m.inputs[2].empty() && !initializer(*g, m.inputs[2])) continue;
    note_rewrite(report, fmt::format("quantized {} '{}' dynamically into QMatMulDynamic", m.op_type,
                                     m.name));
    m.op_type = "QMatMulDynamic";
    m.domain = "dlsys";
    m.inputs[1] = dw.quantized;
    Attribute ws;
    ws.kind = Attribute::Kind::kFloats;
    ws.floats = dw.scales;
    m.attrs["w_scales"] = ws;
    ++n;
    u = GraphUses(*g);
  }
  return n;
}

}  // namespace dlsys
