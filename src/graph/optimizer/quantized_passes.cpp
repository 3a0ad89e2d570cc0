// QuantizedConvFusion, QuantizedMaxPoolFusion, QuantizedMatMulFusion,
// DynamicQuantizedMatMulFusion: the QDQ patterns
// of a quantized model (graph/quantize, or any QDQ exporter with zero zero-points) rewritten
// into ops that run on oneDNN's int8 kernels, instead of dequantizing and computing in f32.
#include <cmath>

#include "graph/optimizer/graph_uses.h"
#include "graph/optimizer/optimize.h"

namespace dlsys {
namespace {

void note(OptimizeReport* r, std::string line) {
  if (r) r->rewrites.push_back(std::move(line));
}

// A QuantizeLinear or DequantizeLinear node with constant scales and zero points that are all 0.
struct QdqMatch {
  Node* node = nullptr;
  std::string quantized;  // DQ: the quantized input; Q: the quantized output
  std::vector<float> scales;
  int64_t axis = 1;
  int qtype = 2;  // ONNX type of the quantized side: UINT8=2, INT8=3, INT32=6
};

bool read_qdq_params(const Graph& g, const Node& n, QdqMatch* m) {
  if (n.inputs.size() < 2) return false;
  const Tensor* s = initializer(g, n.inputs[1]);
  if (!s || s->dtype() != DType::kF32 || s->rank() > 1 || s->numel() < 1) return false;
  m->scales.assign(s->data_as<float>(), s->data_as<float>() + s->numel());
  for (float v : m->scales)
    if (!(v > 0) || !std::isfinite(v)) return false;
  m->axis = n.attrs.count("axis") ? n.attrs.at("axis").i : 1;
  m->qtype = 2;
  if (n.inputs.size() > 2 && !n.inputs[2].empty()) {
    const Tensor* z = initializer(g, n.inputs[2]);
    if (!z || z->numel() != s->numel()) return false;
    for (int64_t i = 0; i < z->numel(); ++i)
      if (z->get_i64(i) != 0) return false;
    m->qtype = dtype_to_onnx(z->dtype());
  }
  return true;
}

// The DequantizeLinear producing `value`, if it is one with zero zero-points.
bool match_dequantize(Graph* g, const GraphUses& u, const std::string& value, QdqMatch* m) {
  int p = u.producer(value);
  if (p < 0 || g->nodes[p].op_type != "DequantizeLinear") return false;
  Node& n = g->nodes[p];
  if (!read_qdq_params(*g, n, m)) return false;
  m->node = &n;
  m->quantized = n.inputs[0];
  if (const Tensor* q = initializer(*g, n.inputs[0])) m->qtype = dtype_to_onnx(q->dtype());
  return true;
}

// The one QuantizeLinear reading `value` (per-tensor), when nothing else reads it.
bool match_single_quantize(Graph* g, const GraphUses& u, const std::string& value, QdqMatch* m) {
  if (!u.single_use(value)) return false;
  Node& n = g->nodes[u.consumers(value)[0]];
  if (n.op_type != "QuantizeLinear" || n.inputs[0] != value) return false;
  if (!read_qdq_params(*g, n, m) || m->scales.size() != 1) return false;
  if (m->qtype != 2 && m->qtype != 3) return false;
  m->node = &n;
  m->quantized = n.outputs[0];
  return true;
}

}  // namespace

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
    note(report, fmt::format("quantized {} '{}' into QConv ({}{}{})", c.op_type, c.name,
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
    note(report, fmt::format("MaxPool '{}' runs on the quantized values", m.name));
    m.inputs[0] = dx.quantized;
    m.outputs[0] = qy.quantized;
    qy.node->op_type.clear();
    ++n;
    u = GraphUses(*g);
  }
  compact(g);
  return n;
}

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
    note(report, fmt::format("quantized {} '{}' into QMatMul ({}{})", m.op_type, m.name,
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
    note(report,
         fmt::format("quantized {} '{}' dynamically into QMatMulDynamic", m.op_type, m.name));
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
