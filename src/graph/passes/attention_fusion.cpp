// AttentionFusion: multi-head attention written out op by op -> ScaledDotProductAttention.
#include "graph/passes/graph_uses.h"
#include "graph/passes/optimize.h"
#include "graph/passes/pass_util.h"

namespace dlsys {

// Multi-head attention as PyTorch exports it when written out by hand (and as other exporters
// do for the same code):
//   Qh = Transpose(Q, [0,2,1,3]); Kt = Transpose(K, [0,2,3,1]); Vh = Transpose(V, [0,2,1,3])
//   P = Softmax(MatMul(Qh, Kt) / c [+ M], axis=-1)   (or * c, or unscaled; M an additive mask)
//   Y = Transpose(MatMul(P, Vh), [0,2,1,3])
// with Q, K, V [batch, seq, heads, head_dim] -> ScaledDotProductAttention(Q, K, V, M?, scale) = Y.
// Every value in between must be read once (never so in a training graph, whose backward pass
// reads them again).
int fuse_attention(Graph* g, OptimizeReport* report) {
  int n = 0;
  GraphUses u(*g);
  const std::vector<int64_t> kHeads = {0, 2, 1, 3}, kKeysT = {0, 2, 3, 1};
  auto transpose_of = [&](const std::string& v, const std::vector<int64_t>& perm) -> Node* {
    Node* t = single_use_producer(g, u, v, "Transpose");
    if (!t || !t->attrs.count("perm") || t->attrs.at("perm").ints != perm) return nullptr;
    return t;
  };
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    Node& back = g->nodes[i];
    if (back.op_type != "Transpose" || !back.attrs.count("perm") ||
        back.attrs.at("perm").ints != kHeads)
      continue;
    Node* mm2 = single_use_producer(g, u, back.inputs[0], "MatMul");
    if (!mm2) continue;
    Node* sm = single_use_producer(g, u, mm2->inputs[0], "Softmax");
    if (!sm) continue;
    int64_t axis = sm->attrs.count("axis") ? sm->attrs.at("axis").i : -1;
    if (axis != -1 && axis != 3) continue;  // the last axis: every opset's Softmax agrees there
    // Q K^T behind the Softmax input, optionally scaled: Div/Mul by a scalar constant.
    auto scaled_scores = [&](const std::string& v, double* scale, Node** scaler) -> Node* {
      *scale = 1.0;
      *scaler = nullptr;
      std::string scores = v;
      int pi = u.producer(v);
      double c = 0;
      if (pi >= 0 && u.single_use(v)) {
        Node& p = g->nodes[pi];
        if (p.op_type == "Div" && scalar_value(*g, p.inputs[1], &c) && c != 0) {
          *scale = 1.0 / c;
          scores = p.inputs[0];
          *scaler = &p;
        } else if (p.op_type == "Mul") {
          for (int k = 0; k < 2 && !*scaler; ++k)
            if (scalar_value(*g, p.inputs[1 - k], &c)) {
              *scale = c;
              scores = p.inputs[k];
              *scaler = &p;
            }
        }
      }
      return single_use_producer(g, u, scores, "MatMul");
    };
    double scale = 1.0;
    Node *scaler = nullptr, *masker = nullptr;
    std::string mask;
    Node* mm1 = scaled_scores(sm->inputs[0], &scale, &scaler);
    // An additive mask: Softmax(Add(scaled scores, M)), M broadcast onto the scores.
    Node* add = mm1 ? nullptr : single_use_producer(g, u, sm->inputs[0], "Add");
    for (int k = 0; add && k < 2 && !mm1; ++k) {
      if (!u.single_use(add->inputs[k])) continue;
      mm1 = scaled_scores(add->inputs[k], &scale, &scaler);
      if (mm1) {
        masker = add;
        mask = add->inputs[1 - k];
      }
    }
    if (!mm1) continue;
    Node* tq = transpose_of(mm1->inputs[0], kHeads);
    Node* tk = transpose_of(mm1->inputs[1], kKeysT);
    Node* tv = transpose_of(mm2->inputs[1], kHeads);
    if (!tq || !tk || !tv) continue;
    note_rewrite(
        report,
        fmt::format("fused attention ending at Transpose '{}' (MatMul '{}', Softmax '{}', MatMul "
                    "'{}', scale {:.6g}{}) into ScaledDotProductAttention",
                    back.name, mm1->name, sm->name, mm2->name, scale,
                    masker ? fmt::format(", mask '{}'", mask) : std::string()));
    Node fused;
    fused.name = back.name;
    fused.op_type = "ScaledDotProductAttention";
    fused.domain = "dlsys";
    fused.inputs = {tq->inputs[0], tk->inputs[0], tv->inputs[0]};
    if (masker) fused.inputs.push_back(mask);
    fused.outputs = {back.outputs[0]};
    fused.attrs["scale"] = Attribute::of_float(static_cast<float>(scale));
    for (Node* p : {tq, tk, tv, mm1, sm, mm2}) p->op_type.clear();
    if (scaler) scaler->op_type.clear();
    if (masker) masker->op_type.clear();
    back = std::move(fused);
    ++n;
    u = GraphUses(*g);
  }
  compact(g);
  return n;
}

}  // namespace dlsys
