// HardSwishFusion: x * hard_sigmoid(x) in the forms exporters write it -> HardSwish(x) (ONNX's
// HardSwish only exists from opset 14; tf2onnx, keras2onnx and paddle2onnx below it spell it out).
// ActivationFusion then takes it into the producing Conv/MatMul as oneDNN's hardswish post-op.
// Forms:
//   Mul(x, HardSigmoid(x, alpha = 1/6, beta = 0.5))                      (paddle2onnx, keras)
//   Div(Mul(x, Clip(Add(x, 3), 0, 6)), 6)  or  Mul(..., 1/6)              (tf2onnx: x*relu6(x+3)/6)
//   Mul(x, Div(Clip(Add(x, 3), 0, 6), 6))  or  Mul(x, Mul(..., 1/6))      (x * (relu6(x+3)/6))
// with the operands of Mul and Add in either order and f32 constants.
#include "graph/passes/graph_uses.h"
#include "graph/passes/optimize.h"
#include "graph/passes/pass_util.h"

namespace dlsys {

namespace {

// An f32 scalar constant equal to `want` (within float rounding).
bool f32_scalar(const Graph& g, const std::string& v, double want) {
  const Tensor* t = initializer(g, v);
  double c;
  return t && t->dtype() == DType::kF32 && scalar_value(g, v, &c) && nearly_equal(c, want, 1e-5);
}

float float_attr(const Node& n, const char* name, float def) {
  auto it = n.attrs.find(name);
  return it == n.attrs.end() ? def : it->second.f;
}

class Matcher {
 public:
  Matcher(Graph* g, const GraphUses& u) : g_(g), u_(u) {}

  // `v` is Clip(Add(x, 3), 0, 6), each read once: sets *x, appends the two nodes.
  bool relu6_of_x_plus_3(const std::string& v, std::string* x, std::vector<Node*>* parts) {
    Node* clip = single_use_producer(g_, u_, v, "Clip");
    if (!clip || clip->inputs.size() != 3 || !f32_scalar(*g_, clip->inputs[1], 0.0) ||
        !f32_scalar(*g_, clip->inputs[2], 6.0))
      return false;
    Node* add = single_use_producer(g_, u_, clip->inputs[0], "Add");
    if (!add || add->inputs.size() != 2) return false;
    for (int k = 0; k < 2; ++k)
      if (f32_scalar(*g_, add->inputs[1 - k], 3.0)) {
        *x = add->inputs[k];
        parts->push_back(clip);
        parts->push_back(add);
        return true;
      }
    return false;
  }

  // `v` is Div(a, 6) or Mul(a, 1/6) (either order), read once: sets *a, appends the node.
  bool divided_by_6(const std::string& v, std::string* a, std::vector<Node*>* parts) {
    int pi = u_.producer(v);
    if (pi < 0 || !u_.single_use(v)) return false;
    Node* d = &g_->nodes[pi];
    if (d->inputs.size() != 2) return false;
    if (d->op_type == "Div" && f32_scalar(*g_, d->inputs[1], 6.0)) {
      *a = d->inputs[0];
    } else if (d->op_type == "Mul" && f32_scalar(*g_, d->inputs[1], 1.0 / 6)) {
      *a = d->inputs[0];
    } else if (d->op_type == "Mul" && f32_scalar(*g_, d->inputs[0], 1.0 / 6)) {
      *a = d->inputs[1];
    } else {
      return false;
    }
    parts->push_back(d);
    return true;
  }

  // Mul node `m` is x * (one of the forms' gate of x): sets *x and the nodes it replaces.
  bool gated_product(const Node& m, std::string* x, std::vector<Node*>* parts) {
    if (m.inputs.size() != 2) return false;
    for (int k = 0; k < 2; ++k) {
      const std::string &gate = m.inputs[k], &other = m.inputs[1 - k];
      parts->clear();
      // x * HardSigmoid(x) with HardSwish's constants.
      Node* hs = single_use_producer(g_, u_, gate, "HardSigmoid");
      if (hs && hs->inputs[0] == other &&
          nearly_equal(float_attr(*hs, "alpha", 0.2f), 1.0 / 6, 1e-5) &&
          nearly_equal(float_attr(*hs, "beta", 0.5f), 0.5, 1e-5)) {
        *x = other;
        parts->push_back(hs);
        return true;
      }
      // x * (relu6(x + 3) / 6)
      std::string a, x2;
      if (divided_by_6(gate, &a, parts) && relu6_of_x_plus_3(a, &x2, parts) && x2 == other) {
        *x = other;
        return true;
      }
    }
    return false;
  }

  // Node `fin` is Div/Mul by 6 / 1/6 of x * relu6(x + 3): sets *x and the nodes it replaces.
  bool scaled_product(const Node& fin, std::string* x, std::vector<Node*>* parts) {
    if (fin.inputs.size() != 2) return false;
    std::string prod;
    if (fin.op_type == "Div" && f32_scalar(*g_, fin.inputs[1], 6.0)) {
      prod = fin.inputs[0];
    } else if (fin.op_type == "Mul" && f32_scalar(*g_, fin.inputs[1], 1.0 / 6)) {
      prod = fin.inputs[0];
    } else if (fin.op_type == "Mul" && f32_scalar(*g_, fin.inputs[0], 1.0 / 6)) {
      prod = fin.inputs[1];
    } else {
      return false;
    }
    Node* m = single_use_producer(g_, u_, prod, "Mul");
    if (!m || m->inputs.size() != 2) return false;
    for (int k = 0; k < 2; ++k) {
      parts->clear();
      std::string x2;
      if (relu6_of_x_plus_3(m->inputs[k], &x2, parts) && x2 == m->inputs[1 - k]) {
        *x = x2;
        parts->push_back(m);
        return true;
      }
    }
    return false;
  }

 private:
  Graph* g_;
  const GraphUses& u_;
};

}  // namespace

int fuse_hardswish(Graph* g, OptimizeReport* report) {
  int n = 0;
  GraphUses u(*g);
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    Node& fin = g->nodes[i];
    if ((fin.op_type != "Mul" && fin.op_type != "Div") ||
        !(fin.domain.empty() || fin.domain == "ai.onnx") || fin.outputs.size() != 1)
      continue;
    Matcher m(g, u);
    std::string x;
    std::vector<Node*> parts;
    bool found = m.scaled_product(fin, &x, &parts);
    if (!found && fin.op_type == "Mul") found = m.gated_product(fin, &x, &parts);
    if (!found) continue;
    note_rewrite(report, fmt::format("fused {} ops ending at {} '{}' into HardSwish",
                                     parts.size() + 1, fin.op_type, fin.name));
    for (Node* p : parts) p->op_type.clear();
    fin.op_type = "HardSwish";
    fin.inputs = {x};
    fin.attrs.clear();
    ++n;
    u = GraphUses(*g);
  }
  compact(g);
  return n;
}

}  // namespace dlsys
