// AttentionInputPacking: ScaledDotProductAttention whose Q, K and V are Reshapes of three column
// ranges of one tensor -> PackedScaledDotProductAttention reading that tensor in place.
#include "graph/passes/graph_uses.h"
#include "graph/passes/optimize.h"
#include "graph/passes/pass_util.h"

namespace dlsys {

namespace {

// The one int64 of a constant (an initializer of one element), or false.
bool one_int(const Graph& g, const std::string& value, int64_t* out) {
  const Tensor* t = initializer(g, value);
  if (!t || t->numel() != 1 || (t->dtype() != DType::kI64 && t->dtype() != DType::kI32))
    return false;
  *out = t->get_i64(0);
  return true;
}

}  // namespace

// A fused QKV projection as exporters split it (PyTorch's `qkv(x).chunk(3, dim=-1)` followed by
// `.reshape(b, s, h, d)`):
//   Q = Reshape(Slice(X, q0, q1, axes=[-1]), Sq); K = Reshape(Slice(X, k0, k1, [-1]), Sk);
//   V = Reshape(Slice(X, v0, v1, [-1]), Sv); Y = ScaledDotProductAttention(Q, K, V, M?)
// -> Y = PackedScaledDotProductAttention(X, Sq, Sk, Sv, q0, q1, k0, k1, v0, v1, M?).
// The bounds and shapes stay values (exports compute them from X's shape: known when the plan is
// built); the axes must be the constant -1 and the steps absent or 1, and every Slice and Reshape
// must be read only here. The kernel checks the geometry when it is built (each S must split its
// columns into the same heads) and names the node when it does not fit.
int pack_attention_inputs(Graph* g, OptimizeReport* report) {
  int n = 0;
  GraphUses u(*g);
  for (Node& att : g->nodes) {
    if (att.op_type != "ScaledDotProductAttention" || att.inputs.size() < 3) continue;
    std::string x;
    std::vector<std::string> shapes, bounds;
    Node *slices[3] = {}, *reshapes[3] = {};
    bool ok = true;
    for (int i = 0; i < 3 && ok; ++i) {
      Node* r = single_use_producer(g, u, att.inputs[i], "Reshape");
      Node* s =
          r && r->inputs.size() == 2 ? single_use_producer(g, u, r->inputs[0], "Slice") : nullptr;
      ok = s && s->inputs.size() >= 4 &&
           (!r->attrs.count("allowzero") || r->attrs.at("allowzero").i == 0);
      int64_t axis = 0, step = 1;
      ok = ok && one_int(*g, s->inputs[3], &axis) && axis == -1 &&
           (s->inputs.size() < 5 || s->inputs[4].empty() || one_int(*g, s->inputs[4], &step)) &&
           step == 1;
      ok = ok && (i == 0 || s->inputs[0] == x);
      if (ok) {
        x = s->inputs[0];
        shapes.push_back(r->inputs[1]);
        bounds.push_back(s->inputs[1]);
        bounds.push_back(s->inputs[2]);
        slices[i] = s;
        reshapes[i] = r;
      }
    }
    if (!ok) continue;
    note_rewrite(report,
                 fmt::format("read Q, K and V of attention '{}' in place from Slices '{}', "
                             "'{}' and '{}' of '{}' (PackedScaledDotProductAttention)",
                             att.name, slices[0]->name, slices[1]->name, slices[2]->name, x));
    std::vector<std::string> inputs = {x};
    inputs.insert(inputs.end(), shapes.begin(), shapes.end());
    inputs.insert(inputs.end(), bounds.begin(), bounds.end());
    if (att.inputs.size() > 3 && !att.inputs[3].empty()) inputs.push_back(att.inputs[3]);
    att.op_type = "PackedScaledDotProductAttention";
    att.inputs = inputs;
    for (int i = 0; i < 3; ++i) {
      slices[i]->op_type.clear();
      reshapes[i]->op_type.clear();
    }
    ++n;
    u = GraphUses(*g);
  }
  compact(g);
  return n;
}

}  // namespace dlsys
