#include "graph/passes/qdq_match.h"

#include <cmath>

namespace dlsys {

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

}  // namespace dlsys
