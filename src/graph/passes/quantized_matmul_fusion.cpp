// QuantizedMatMulFusion: MatMul/Gemm of DQ(u8/s8 activation) and DQ(int8 weight) [-> Q] ->
// QMatMul on oneDNN's int8 matmul.
#include "graph/passes/graph_uses.h"
#include "graph/passes/optimize.h"
#include "graph/passes/pass_util.h"
#include "graph/passes/qdq_match.h"

namespace dlsys {

int fuse_quantized_matmul(Graph* g, OptimizeReport* report) {
  int n = 0;
  GraphUses u(*g);
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    Node& m = g->nodes[i];
    bool gemm = m.op_type == "Gemm" || m.op_type == "FusedGemm";
    if ((m.op_type != "MatMul" && m.op_type != "FusedMatMul" && !gemm) || m.inputs.size() < 2)
      continue;
    auto attr_i = [&](const char* k, int64_t d) { return m.attrs.count(k) ? m.attrs.at(k).i : d; };
    auto attr_f = [&](const char* k, float d) { return m.attrs.count(k) ? m.attrs.at(k).f : d; };
    // Gemm: A @ op(B) + C with alpha = beta = 1 and A not transposed; MatMul: no transposes.
    bool trans_b = gemm && attr_i("transB", 0) != 0;
    if (gemm ? (attr_i("transA", 0) != 0 || attr_f("alpha", 1.f) != 1.f ||
                attr_f("beta", 1.f) != 1.f)
             : (m.attrs.count("transA") || m.attrs.count("transB")))
      continue;
    QdqMatch dx, dw, qy;
    if (!match_dequantize(g, u, m.inputs[0], &dx) || dx.scales.size() != 1 ||
        initializer(*g, dx.quantized) || (dx.qtype != 2 && dx.qtype != 3))
      continue;
    if (!match_dequantize(g, u, m.inputs[1], &dw)) continue;
    const Tensor* wq = initializer(*g, dw.quantized);
    if (!wq || wq->dtype() != DType::kI8 || wq->rank() != 2) continue;
    // The output channel (N) axis of the weight: 0 for Gemm's transposed B ([N, K]), else 1.
    int64_t n_axis = trans_b ? 0 : 1;
    if (dw.scales.size() != 1 && ((dw.axis != n_axis && dw.axis != n_axis - 2) ||
                                  static_cast<int64_t>(dw.scales.size()) != wq->dim(n_axis)))
      continue;
    int64_t N = wq->dim(n_axis);
    bool has_bias = m.inputs.size() > 2 && !m.inputs[2].empty();
    if (has_bias) {
      const Tensor* b = initializer(*g, m.inputs[2]);
      // Gemm's C must be a per-column bias ([N] or [1, N]) to become QMatMul's bias.
      if (!b || b->dtype() != DType::kF32 || (gemm && b->numel() != N)) continue;
    }
    bool fold_q = m.outputs.size() == 1 && match_single_quantize(g, u, m.outputs[0], &qy);
    note_rewrite(report, fmt::format("quantized {} '{}' into QMatMul ({}{})", m.op_type, m.name,
                                     dx.qtype == 2 ? "u8" : "s8",
                                     fold_q ? (qy.qtype == 2 ? " -> u8" : " -> s8") : " -> f32"));
    std::string weight = dw.quantized;
    if (trans_b) {
      // QMatMul reads B as [K, N]: store the int8 weight transposed once.
      int64_t K = wq->dim(1);
      Tensor t = Tensor::empty(DType::kI8, {K, N});
      const int8_t* src = wq->data_as<int8_t>();
      for (int64_t r = 0; r < N; ++r)
        for (int64_t c = 0; c < K; ++c) t.data_as<int8_t>()[c * N + r] = src[r * K + c];
      weight = fresh_name(*g, dw.quantized + "_kn");
      g->initializers[weight] = t;
    }
    if (gemm && has_bias && initializer(*g, m.inputs[2])->rank() != 1) {
      std::string bias = fresh_name(*g, m.inputs[2] + "_row");
      g->initializers[bias] = initializer(*g, m.inputs[2])->clone().view({N});
      m.inputs[2] = bias;
    }
    for (const char* k : {"alpha", "beta", "transA", "transB"}) m.attrs.erase(k);
    m.op_type = "QMatMul";
    m.domain = "dlsys";
    m.inputs[0] = dx.quantized;
    m.inputs[1] = weight;
    m.attrs["x_scale"] = Attribute::of_float(dx.scales[0]);
    Attribute ws;
    ws.kind = Attribute::Kind::kFloats;
    ws.floats = dw.scales;
    m.attrs["w_scales"] = ws;
    if (fold_q) {
      m.attrs["y_scale"] = Attribute::of_float(qy.scales[0]);
      m.attrs["y_type"] = Attribute::of_int(qy.qtype);
      m.outputs = {qy.quantized};
      qy.node->op_type.clear();
    }
    ++n;
    u = GraphUses(*g);
  }
  compact(g);
  return n;
}

}  // namespace dlsys
