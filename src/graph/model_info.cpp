#include "graph/model_info.h"

namespace dlsys {

double node_flops(const PlannedNode& n) {
  if (n.folded || n.output_shapes.empty()) return 0;
  // Fused ops cost what their main op costs (the epilogue is noise next to it).
  std::string op = n.node->op_type;
  if (op.rfind("Fused", 0) == 0) op = op.substr(5);
  double out = static_cast<double>(shape_numel(n.output_shapes[0]));
  auto prod_from = [](const Shape& s, size_t i) {
    double p = 1;
    for (; i < s.size(); ++i) p *= static_cast<double>(s[i]);
    return p;
  };
  if (op == "MatMul" || op == "QMatMul" || op == "QMatMulDynamic" || op == "MatMulInteger" ||
      op == "QLinearMatMul") {
    const Shape& a = n.input_shapes[0];
    return 2.0 * out * static_cast<double>(a.empty() ? 1 : a.back());
  }
  if (op == "Gemm") {
    const Shape& a = n.input_shapes[0];
    bool ta = n.node->attrs.count("transA") && n.node->attrs.at("transA").i;
    return 2.0 * out * static_cast<double>(ta ? a[0] : a[1]);
  }
  if (op == "Conv" || op == "QConv" || op == "ConvInteger" || op == "QLinearConv") {
    // int8 ops count one multiply-add as 2 operations, as the float ones do.
    const Shape& w = n.input_shapes[op == "QLinearConv" ? 3 : 1];
    return 2.0 * out * prod_from(w, 1);
  }
  if (op == "ConvDepthwise") {  // FusedConvDepthwise: the 1x1 convolution, then the 3x3 one
    const Shape &x = n.input_shapes[0], &w = n.input_shapes[1];
    double pointwise = static_cast<double>(shape_numel(x)) / static_cast<double>(x[1]) * w[0];
    return 2.0 * pointwise * static_cast<double>(w[1]) + 2.0 * out * 9.0;
  }
  if (op == "ScaledDotProductAttention") {  // Q K^T and P V: 2 B H Sq Skv (Dh + Dv)
    const Shape &q = n.input_shapes[0], &k = n.input_shapes[1], &v = n.input_shapes[2];
    return 2.0 * static_cast<double>(q[0] * q[2] * q[1] * k[1]) * static_cast<double>(q[3] + v[3]);
  }
  if (op == "PackedScaledDotProductAttention") {  // the same, from Y [B, S, H, Dv] (Dh = Dv)
    const Shape& y = n.output_shapes[0];
    return 4.0 * static_cast<double>(y[0] * y[2] * y[1] * y[1]) * static_cast<double>(y[3]);
  }
  if (op == "ConvTranspose") {
    const Shape& x = n.input_shapes[0];
    const Shape& w = n.input_shapes[1];
    return 2.0 * static_cast<double>(shape_numel(x)) * prod_from(w, 1);
  }
  if (op == "Reshape" || op == "Flatten" || op == "Squeeze" || op == "Unsqueeze" ||
      op == "Identity" || op == "Dropout" || op == "Shape")
    return 0;
  if (op == "MaxPool" || op == "AveragePool" || op == "GlobalAveragePool" ||
      op == "GlobalMaxPool" || op.rfind("Reduce", 0) == 0 || op == "Softmax" ||
      op == "LogSoftmax" || op == "LayerNormalization")
    return static_cast<double>(shape_numel(n.input_shapes[0]));
  return out;
}

namespace {

// Ops and initializers of `g` and, recursively, of its nodes' subgraphs.
void count_graph(const Graph& g, bool nested, ModelInfo* info) {
  for (const Node& n : g.nodes) {
    info->op_histogram[n.op_type]++;
    if (nested) ++info->subgraph_nodes;
    for (const auto& [name, a] : n.attrs)
      if (a.kind == Attribute::Kind::kGraph && a.g) count_graph(*a.g, true, info);
  }
  for (const auto& [name, t] : g.initializers) {
    if (dtype_is_float(t.dtype())) info->parameters += t.numel();
    info->parameter_bytes += static_cast<int64_t>(t.nbytes());
  }
}

}  // namespace

ModelInfo model_info(const Graph& g, const Plan* plan) {
  ModelInfo info;
  count_graph(g, false, &info);
  if (plan) {
    for (const PlannedNode& n : plan->nodes()) info.flops_per_sample += node_flops(n);
    info.flops_known = true;
  }
  return info;
}

}  // namespace dlsys
