// ConvBatchNormFolding: an inference BatchNormalization after a Conv folded into the
// conv's weights and bias.
#include <cmath>

#include "graph/passes/graph_uses.h"
#include "graph/passes/optimize.h"
#include "graph/passes/pass_util.h"

namespace dlsys {

int fold_conv_batchnorm(Graph* g, OptimizeReport* report) {
  int n = 0;
  GraphUses u(*g);
  for (size_t j = 0; j < g->nodes.size(); ++j) {
    Node& bn = g->nodes[j];
    if (bn.op_type != "BatchNormalization" || bn.inputs.size() != 5) continue;
    if (bn.attrs.count("training_mode") && bn.attrs.at("training_mode").i != 0) continue;
    bool extra_outputs = false;
    for (size_t k = 1; k < bn.outputs.size(); ++k)
      extra_outputs = extra_outputs || (!bn.outputs[k].empty() && u.uses(bn.outputs[k]) > 0);
    if (extra_outputs) continue;
    int pi = u.producer(bn.inputs[0]);
    if (pi < 0 || !u.single_use(bn.inputs[0])) continue;
    Node& conv = g->nodes[pi];
    if (!is_conv_like(conv.op_type) || conv.inputs.size() > 3 || conv.attrs.count("activation"))
      continue;
    const Tensor* w = initializer(*g, conv.inputs[1]);
    const Tensor* b = conv.inputs.size() > 2 && !conv.inputs[2].empty()
                          ? initializer(*g, conv.inputs[2])
                          : nullptr;
    if (!w || w->dtype() != DType::kF32 || w->rank() < 3) continue;
    if (conv.inputs.size() > 2 && !conv.inputs[2].empty() && !b) continue;
    int64_t M = w->dim(0);
    const Tensor* p[4];
    bool ok = true;
    for (int k = 0; k < 4; ++k) {
      p[k] = initializer(*g, bn.inputs[1 + k]);
      ok = ok && p[k] && p[k]->numel() == M && dtype_is_float(p[k]->dtype());
    }
    if (!ok || (b && b->numel() != M)) continue;
    double eps = bn.attrs.count("epsilon") ? bn.attrs.at("epsilon").f : 1e-5;
    Tensor w2 = w->clone(), b2 = Tensor::empty(DType::kF32, {M});
    int64_t per = w->numel() / M;
    for (int64_t c = 0; c < M; ++c) {
      double scale = p[0]->get_f64(c) / std::sqrt(p[3]->get_f64(c) + eps);
      float* wc = w2.data_as<float>() + c * per;
      for (int64_t i = 0; i < per; ++i) wc[i] = static_cast<float>(wc[i] * scale);
      double bias = b ? b->get_f64(c) : 0.0;
      b2.data_as<float>()[c] =
          static_cast<float>((bias - p[2]->get_f64(c)) * scale + p[1]->get_f64(c));
    }
    std::string wn = fresh_name(*g, conv.inputs[1] + "_bnfolded");
    g->initializers[wn] = w2;
    std::string bname = fresh_name(*g, conv.name + "_bnfolded_bias");
    g->initializers[bname] = b2;
    note_rewrite(report, fmt::format("folded BatchNormalization '{}' into {} '{}'", bn.name,
                                     conv.op_type, conv.name));
    Node merged = std::move(conv);
    conv.op_type.clear();
    merged.inputs.resize(3);
    merged.inputs[1] = wn;
    merged.inputs[2] = bname;
    merged.outputs = {bn.outputs[0]};
    g->nodes[j] = std::move(merged);
    ++n;
    u = GraphUses(*g);
  }
  compact(g);
  return n;
}

}  // namespace dlsys
