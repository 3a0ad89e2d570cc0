// QuantizedMaxPoolFusion: DQ -> MaxPool -> Q at one scale and type -> MaxPool on the int8
// values.
#include "graph/passes/graph_uses.h"
#include "graph/passes/optimize.h"
#include "graph/passes/pass_util.h"
#include "graph/passes/qdq_match.h"

namespace dlsys {

int fuse_quantized_maxpool(Graph* g, OptimizeReport* report) {
  int n = 0;
  GraphUses u(*g);
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    Node& m = g->nodes[i];
    if (m.op_type != "MaxPool" || m.outputs.size() != 1 || m.inputs.size() != 1) continue;
    QdqMatch dx, qy;
    if (!match_dequantize(g, u, m.inputs[0], &dx) || dx.scales.size() != 1 ||
        initializer(*g, dx.quantized))
      continue;
    if (!match_single_quantize(g, u, m.outputs[0], &qy)) continue;
    // max commutes with quantization only at one scale and type.
    if (qy.scales[0] != dx.scales[0] || qy.qtype != dx.qtype) continue;
    note_rewrite(report, fmt::format("MaxPool '{}' runs on the quantized values", m.name));
    m.inputs[0] = dx.quantized;
    m.outputs[0] = qy.quantized;
    qy.node->op_type.clear();
    ++n;
    u = GraphUses(*g);
  }
  compact(g);
  return n;
}

}  // namespace dlsys
