// LayerNormFusion: a layer norm decomposed over the last axis -> LayerNormalization.
#include "graph/passes/graph_uses.h"
#include "graph/passes/optimize.h"
#include "graph/passes/pass_util.h"

namespace dlsys {

int fuse_layernorm(Graph* g, OptimizeReport* report) {
  int n = 0;
  GraphUses u(*g);
  auto last_axis_mean = [&](Node* r) {
    if (!r) return false;
    auto ax = r->attrs.find("axes");
    bool keep = !r->attrs.count("keepdims") || r->attrs.at("keepdims").i != 0;
    return keep && r->inputs.size() == 1 && ax != r->attrs.end() &&
           ax->second.ints == std::vector<int64_t>{-1};
  };
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    Node& div = g->nodes[i];
    if (div.op_type != "Div" || div.inputs.size() != 2) continue;
    const std::string& d = div.inputs[0];
    Node* sqrt = single_use_producer(g, u, div.inputs[1], "Sqrt");
    int si = u.producer(d);
    if (!sqrt || si < 0 || g->nodes[si].op_type != "Sub") continue;
    Node* sub = &g->nodes[si];
    const std::string& x = sub->inputs[0];
    Node* mean = single_use_producer(g, u, sub->inputs[1], "ReduceMean");
    if (!last_axis_mean(mean) || mean->inputs[0] != x) continue;
    Node* add = single_use_producer(g, u, sqrt->inputs[0], "Add");
    if (!add) continue;
    double eps = 0;
    int vk = -1;
    for (int k = 0; k < 2; ++k)
      if (scalar_value(*g, add->inputs[1 - k], &eps)) vk = k;
    if (vk < 0) continue;
    Node* var = single_use_producer(g, u, add->inputs[vk], "ReduceMean");
    if (!last_axis_mean(var)) continue;
    int pi = u.producer(var->inputs[0]);
    if (pi < 0 || !u.single_use(var->inputs[0])) continue;
    Node* pw = &g->nodes[pi];
    double two = 0;
    bool square = (pw->op_type == "Pow" && pw->inputs[0] == d &&
                   scalar_value(*g, pw->inputs[1], &two) && two == 2.0) ||
                  (pw->op_type == "Mul" && pw->inputs[0] == d && pw->inputs[1] == d);
    int d_reads = pw->op_type == "Mul" ? 3 : 2;
    if (!square || u.uses(d) != d_reads || u.is_graph_output(d)) continue;
    // Optional affine tail: Mul by a 1-D constant, then Add of a 1-D constant.
    std::vector<Node*> parts = {mean, sub, pw, var, add, sqrt};
    std::string out = div.outputs[0], gamma, beta;
    Node* last = &div;
    auto one_d_const = [&](const std::string& v) {
      const Tensor* t = initializer(*g, v);
      return t && t->rank() == 1 && t->dtype() == DType::kF32;
    };
    if (u.single_use(out)) {
      Node& c = g->nodes[u.consumers(out)[0]];
      int k = c.inputs[0] == out ? 1 : 0;
      if (c.op_type == "Mul" && c.inputs.size() == 2 && one_d_const(c.inputs[k])) {
        gamma = c.inputs[k];
        parts.push_back(last);
        last = &c;
        out = c.outputs[0];
        if (u.single_use(out)) {
          Node& a = g->nodes[u.consumers(out)[0]];
          int q = a.inputs[0] == out ? 1 : 0;
          if (a.op_type == "Add" && a.inputs.size() == 2 && one_d_const(a.inputs[q])) {
            beta = a.inputs[q];
            parts.push_back(last);
            last = &a;
            out = a.outputs[0];
          }
        }
      }
    }
    if (gamma.empty()) continue;  // LayerNormalization needs a scale
    note_rewrite(report, fmt::format("fused decomposed layer norm ending at {} '{}' into "
                                     "LayerNormalization",
                                     last->op_type, last->name));
    for (Node* p : parts) p->op_type.clear();
    Node ln;
    ln.name = last->name;
    ln.op_type = "LayerNormalization";
    ln.inputs = {x, gamma};
    if (!beta.empty()) ln.inputs.push_back(beta);
    ln.outputs = {out};
    ln.attrs["axis"] = Attribute::of_int(-1);
    ln.attrs["epsilon"] = Attribute::of_float(static_cast<float>(eps));
    *last = std::move(ln);
    ++n;
    u = GraphUses(*g);
  }
  compact(g);
  return n;
}

}  // namespace dlsys
