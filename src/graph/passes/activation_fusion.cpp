// ActivationFusion: an activation after Conv/MatMul/Gemm -> the producer's oneDNN post-op.
#include "graph/passes/graph_uses.h"
#include "graph/passes/optimize.h"
#include "graph/passes/pass_util.h"

namespace dlsys {

int fuse_activations(Graph* g, OptimizeReport* report) {
  int n = 0;
  GraphUses u(*g);
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    Node& act = g->nodes[i];
    const std::string& op = act.op_type;
    std::vector<float> params;
    std::string name = op;
    auto fattr = [&](const char* a, float def) {
      return act.attrs.count(a) ? act.attrs.at(a).f : def;
    };
    if (op == "Relu" || op == "Sigmoid" || op == "Tanh" || op == "HardSwish") {
    } else if (op == "LeakyRelu") {
      params = {fattr("alpha", 0.01f)};
    } else if (op == "Elu") {
      params = {fattr("alpha", 1.f)};
    } else if (op == "Gelu") {
      if (act.attrs.count("approximate") && act.attrs.at("approximate").s == "tanh")
        name = "GeluTanh";
    } else if (op == "Clip") {
      double lo = -3.4e38, hi = 3.4e38;
      bool ok = true;
      if (act.inputs.size() > 1 && !act.inputs[1].empty())
        ok = ok && scalar_value(*g, act.inputs[1], &lo);
      if (act.inputs.size() > 2 && !act.inputs[2].empty())
        ok = ok && scalar_value(*g, act.inputs[2], &hi);
      if (!ok) continue;
      params = {static_cast<float>(lo), static_cast<float>(hi)};
    } else {
      continue;
    }
    if (act.inputs.empty() || act.outputs.size() != 1) continue;
    int pi = u.producer(act.inputs[0]);
    if (pi < 0 || !u.single_use(act.inputs[0])) continue;
    Node* p = &g->nodes[pi];
    if (!fusable_producer(p->op_type) || p->attrs.count("activation") || p->outputs.size() != 1)
      continue;
    note_rewrite(report,
                 fmt::format("fused {} '{}' into {} '{}'", op, act.name, p->op_type, p->name));
    Attribute a, ap;
    a.kind = Attribute::Kind::kString;
    a.s = name;
    ap.kind = Attribute::Kind::kFloats;
    ap.floats = params;
    p->attrs["activation"] = a;
    p->attrs["activation_params"] = ap;
    merge_into(g, p, i, act.outputs);
    ++n;
    u = GraphUses(*g);
  }
  compact(g);
  return n;
}

}  // namespace dlsys
