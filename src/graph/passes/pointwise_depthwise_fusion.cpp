// PointwiseDepthwiseFusion: a 1x1 Conv read only by a 3x3 depthwise Conv ->
// FusedConvDepthwise (one oneDNN convolution with a depthwise post-op).
#include "graph/passes/graph_uses.h"
#include "graph/passes/optimize.h"
#include "graph/passes/pass_util.h"

namespace dlsys {
namespace {

// The integer list attribute `name`, or `def` when absent.
std::vector<int64_t> ints_or(const Node& n, const char* name, std::vector<int64_t> def) {
  auto it = n.attrs.find(name);
  return it == n.attrs.end() ? def : it->second.ints;
}

// True when 2-D conv node `n` has a `kernel`-square window (or no kernel_shape), the same
// `pad` on every side (no auto_pad), stride `stride` and no dilation.
bool conv_window_is(const Node& n, int64_t kernel, int64_t pad, int64_t stride) {
  auto ap = n.attrs.find("auto_pad");
  if (ap != n.attrs.end() && ap->second.s != "NOTSET" && !ap->second.s.empty()) return false;
  using v = std::vector<int64_t>;
  return ints_or(n, "kernel_shape", {kernel, kernel}) == v{kernel, kernel} &&
         ints_or(n, "pads", {0, 0, 0, 0}) == v{pad, pad, pad, pad} &&
         ints_or(n, "strides", {1, 1}) == v{stride, stride} &&
         ints_or(n, "dilations", {1, 1}) == v{1, 1};
}

// An f32 initializer of exactly shape `s` (or no value at all when `name` is empty and
// `optional`).
bool constant_of_shape(const Graph& g, const std::string& name, const Shape& s, bool optional) {
  if (name.empty()) return optional;
  const Tensor* t = initializer(g, name);
  return t && t->dtype() == DType::kF32 && t->shape() == s;
}

}  // namespace

int fuse_pointwise_depthwise(Graph* g, OptimizeReport* report) {
  int n = 0;
  GraphUses u(*g);
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    Node& dw = g->nodes[i];
    if (!is_conv_like(dw.op_type) || dw.inputs.size() < 2 || dw.inputs.size() > 3) continue;
    const Tensor* wd = initializer(*g, dw.inputs[1]);
    if (!wd || wd->dtype() != DType::kF32 || wd->rank() != 4) continue;
    std::vector<int64_t> strides = ints_or(dw, "strides", {1, 1});
    int64_t M = wd->dim(0), stride = strides.empty() ? 0 : strides[0];
    int64_t group = dw.attrs.count("group") ? dw.attrs.at("group").i : 1;
    if (group != M || M < 2 || wd->shape() != Shape{M, 1, 3, 3}) continue;
    if ((stride != 1 && stride != 2) || !conv_window_is(dw, 3, 1, stride)) continue;
    if (!constant_of_shape(*g, dw.inputs.size() > 2 ? dw.inputs[2] : "", {M}, true)) continue;
    int pi = u.producer(dw.inputs[0]);
    if (pi < 0 || !u.single_use(dw.inputs[0])) continue;
    Node& pw = g->nodes[pi];
    if (!is_conv_like(pw.op_type) || pw.inputs.size() < 2 || pw.inputs.size() > 3) continue;
    const Tensor* w = initializer(*g, pw.inputs[1]);
    if (!w || w->dtype() != DType::kF32 || w->rank() != 4 || w->dim(0) != M) continue;
    if (w->dim(2) != 1 || w->dim(3) != 1) continue;
    if (pw.attrs.count("group") && pw.attrs.at("group").i != 1) continue;
    if (!conv_window_is(pw, 1, 0, 1)) continue;
    if (!constant_of_shape(*g, pw.inputs.size() > 2 ? pw.inputs[2] : "", {M}, true)) continue;
    note_rewrite(report, fmt::format("fused 1x1 {} '{}' and depthwise {} '{}' (stride {}) into "
                                     "FusedConvDepthwise",
                                     pw.op_type, pw.name, dw.op_type, dw.name, stride));
    Node fused;
    fused.name = dw.name;
    fused.op_type = "FusedConvDepthwise";
    fused.domain = "dlsys";
    fused.inputs = {pw.inputs[0], pw.inputs[1], pw.inputs.size() > 2 ? pw.inputs[2] : "",
                    dw.inputs[1], dw.inputs.size() > 2 ? dw.inputs[2] : ""};
    while (fused.inputs.back().empty()) fused.inputs.pop_back();
    fused.outputs = dw.outputs;
    for (const char* a : {"activation", "activation_params"}) {
      if (pw.attrs.count(a)) fused.attrs[a] = pw.attrs.at(a);
      if (dw.attrs.count(a)) fused.attrs[std::string("dw_") + a] = dw.attrs.at(a);
    }
    fused.attrs["dw_stride"] = Attribute::of_int(stride);
    pw.op_type.clear();
    dw = std::move(fused);
    ++n;
    u = GraphUses(*g);
  }
  compact(g);
  return n;
}

}  // namespace dlsys
