#include "train/autodiff.h"

#include <algorithm>
#include <functional>
#include <map>
#include <set>

namespace dlsys::train {

namespace {

// Appends nodes and constants to the training graph with fresh names.
class Editor {
 public:
  explicit Editor(Graph* g) : g_(g) {}
  std::string add(const std::string& op, std::vector<std::string> inputs, AttributeMap attrs = {}) {
    Node n;
    n.op_type = op;
    n.name = "grad/" + op + "_" + std::to_string(counter_);
    n.inputs = std::move(inputs);
    n.outputs = {"grad/v" + std::to_string(counter_++)};
    n.attrs = std::move(attrs);
    g_->nodes.push_back(n);
    return n.outputs[0];
  }
  std::string f32(float v) {
    std::string name = "grad/c" + std::to_string(counter_++);
    g_->initializers[name] = Tensor::from_f32({}, &v);
    return name;
  }
  std::string i64s(const std::vector<int64_t>& v) {
    std::string name = "grad/c" + std::to_string(counter_++);
    g_->initializers[name] = Tensor::from_i64({static_cast<int64_t>(v.size())}, v.data());
    return name;
  }
  std::string i64(int64_t v) {
    std::string name = "grad/c" + std::to_string(counter_++);
    g_->initializers[name] = Tensor::from_i64({}, &v);
    return name;
  }

 private:
  Graph* g_;
  int counter_ = 0;
};

// What a gradient builder sees: the node, the gradient of each output ("" when it has none),
// which inputs need a gradient, and the editor to emit nodes with.
struct GradCtx {
  const Node& node;
  std::vector<std::string> dy;
  std::vector<bool> needs;
  Editor& e;
  const std::string& in(size_t i) const { return node.inputs[i]; }
  const std::string& out(size_t i) const { return node.outputs[i]; }
  int64_t attr_int(const std::string& k, int64_t def) const {
    auto it = node.attrs.find(k);
    return it == node.attrs.end() ? def : it->second.i;
  }
  float attr_float(const std::string& k, float def) const {
    auto it = node.attrs.find(k);
    return it == node.attrs.end() ? def : it->second.f;
  }
};

using GradFn = std::function<Result<std::vector<std::string>>(GradCtx&)>;

// Y = alpha * op(A) op(B) + beta * C, op = optional transpose (2-D).
Result<std::vector<std::string>> gemm_grad(GradCtx& c, bool ta, bool tb, float alpha, float beta) {
  std::vector<std::string> g(c.node.inputs.size());
  const std::string& dy = c.dy[0];
  auto gemm = [&](const std::string& a, const std::string& b, bool t_a, bool t_b) {
    AttributeMap at = {{"transA", Attribute::of_int(t_a)}, {"transB", Attribute::of_int(t_b)}};
    if (alpha != 1.0f) at["alpha"] = Attribute::of_float(alpha);
    return c.e.add("Gemm", {a, b}, at);
  };
  const std::string &A = c.in(0), &B = c.in(1);
  if (c.needs[0]) {
    if (!ta)
      g[0] = tb ? gemm(dy, B, false, false) : gemm(dy, B, false, true);
    else
      g[0] = tb ? gemm(B, dy, true, true) : gemm(B, dy, false, true);
  }
  if (c.needs[1]) {
    if (!tb)
      g[1] = ta ? gemm(A, dy, false, false) : gemm(A, dy, true, false);
    else
      g[1] = ta ? gemm(dy, A, true, true) : gemm(dy, A, true, false);
  }
  if (c.node.inputs.size() > 2 && !c.in(2).empty() && c.needs[2]) {
    std::string s = c.e.add("SumToShapeOf", {dy, c.in(2)});
    g[2] = beta == 1.0f ? s : c.e.add("Mul", {s, c.e.f32(beta)});
  }
  return g;
}

const std::map<std::string, GradFn>& builders() {
  static const std::map<std::string, GradFn> m = {
      {"Identity",
       [](GradCtx& c) -> Result<std::vector<std::string>> {
         return std::vector<std::string>{c.dy[0]};
       }},
      {"Dropout",  // inference-mode dropout is the identity (training dropout comes with the
                   // trainer)
       [](GradCtx& c) -> Result<std::vector<std::string>> {
         std::vector<std::string> g(c.node.inputs.size());
         g[0] = c.dy[0];
         return g;
       }},
      {"Add",
       [](GradCtx& c) -> Result<std::vector<std::string>> {
         std::vector<std::string> g(2);
         for (int i = 0; i < 2; ++i)
           if (c.needs[i]) g[i] = c.e.add("SumToShapeOf", {c.dy[0], c.in(i)});
         return g;
       }},
      {"Sub",
       [](GradCtx& c) -> Result<std::vector<std::string>> {
         std::vector<std::string> g(2);
         if (c.needs[0]) g[0] = c.e.add("SumToShapeOf", {c.dy[0], c.in(0)});
         if (c.needs[1]) g[1] = c.e.add("Neg", {c.e.add("SumToShapeOf", {c.dy[0], c.in(1)})});
         return g;
       }},
      {"Mul",
       [](GradCtx& c) -> Result<std::vector<std::string>> {
         std::vector<std::string> g(2);
         for (int i = 0; i < 2; ++i)
           if (c.needs[i])
             g[i] = c.e.add("SumToShapeOf", {c.e.add("Mul", {c.dy[0], c.in(1 - i)}), c.in(i)});
         return g;
       }},
      {"Neg",
       [](GradCtx& c) -> Result<std::vector<std::string>> {
         return std::vector<std::string>{c.e.add("Neg", {c.dy[0]})};
       }},
      {"Relu",
       [](GradCtx& c) -> Result<std::vector<std::string>> {
         std::string zero = c.e.f32(0.0f);
         std::string pos = c.e.add("Greater", {c.in(0), zero});
         return std::vector<std::string>{c.e.add("Where", {pos, c.dy[0], zero})};
       }},
      {"Sigmoid",
       [](GradCtx& c) -> Result<std::vector<std::string>> {
         // dX = dY * y * (1 - y)
         std::string one_minus = c.e.add("Sub", {c.e.f32(1.0f), c.out(0)});
         std::string d = c.e.add("Mul", {c.out(0), one_minus});
         return std::vector<std::string>{c.e.add("Mul", {c.dy[0], d})};
       }},
      {"Tanh",
       [](GradCtx& c) -> Result<std::vector<std::string>> {
         // dX = dY * (1 - y^2)
         std::string y2 = c.e.add("Mul", {c.out(0), c.out(0)});
         std::string d = c.e.add("Sub", {c.e.f32(1.0f), y2});
         return std::vector<std::string>{c.e.add("Mul", {c.dy[0], d})};
       }},
      {"MatMul",  // 2-D operands (batched MatMul comes with the transformer layers)
       [](GradCtx& c) { return gemm_grad(c, false, false, 1.0f, 1.0f); }},
      {"Gemm",
       [](GradCtx& c) {
         return gemm_grad(c, c.attr_int("transA", 0) != 0, c.attr_int("transB", 0) != 0,
                          c.attr_float("alpha", 1.0f), c.attr_float("beta", 1.0f));
       }},
      {"Flatten",
       [](GradCtx& c) -> Result<std::vector<std::string>> {
         return std::vector<std::string>{
             c.e.add("Reshape", {c.dy[0], c.e.add("Shape", {c.in(0)})})};
       }},
      {"Reshape",
       [](GradCtx& c) -> Result<std::vector<std::string>> {
         std::vector<std::string> g(c.node.inputs.size());
         g[0] = c.e.add("Reshape", {c.dy[0], c.e.add("Shape", {c.in(0)})});
         return g;
       }},
  };
  return m;
}

// Appends the loss; returns (loss value, gradient of the prediction).
Result<std::pair<std::string, std::string>> add_loss(const LossSpec& spec, Editor& e) {
  const std::string& z = spec.prediction;
  if (spec.kind == LossKind::kMeanSquaredError) {
    std::string d = e.add("Sub", {z, spec.target});
    std::string loss =
        e.add("ReduceMean", {e.add("Mul", {d, d})}, {{"keepdims", Attribute::of_int(0)}});
    // d/dz mean((z - t)^2) = 2 (z - t) / numel
    std::string n = e.add("Cast", {e.add("Size", {z})}, {{"to", Attribute::of_int(1)}});
    std::string dz = e.add("Div", {e.add("Mul", {d, e.f32(2.0f)}), n});
    return std::make_pair(loss, dz);
  }
  float eps = spec.label_smoothing;
  if (!(eps >= 0 && eps < 1)) return Status::Invalid("label_smoothing {} must be in [0, 1)", eps);
  // onehot[n, c] = (target[n] == c), smoothed: onehot * (1 - eps) + eps / C.
  std::string shape = e.add("Shape", {z});
  std::string classes = e.add("Gather", {shape, e.i64(1)}, {{"axis", Attribute::of_int(0)}});
  std::string range = e.add("Range", {e.i64(0), classes, e.i64(1)});
  std::string t = e.add("Unsqueeze", {spec.target, e.i64s({1})});
  std::string onehot = e.add("Cast", {e.add("Equal", {t, range})}, {{"to", Attribute::of_int(1)}});
  if (eps > 0) {
    std::string cf = e.add("Cast", {classes}, {{"to", Attribute::of_int(1)}});
    onehot = e.add("Add", {e.add("Mul", {onehot, e.f32(1 - eps)}), e.add("Div", {e.f32(eps), cf})});
  }
  std::string logp = e.add("LogSoftmax", {z}, {{"axis", Attribute::of_int(1)}});
  std::string per_row = e.add("ReduceSum", {e.add("Mul", {onehot, logp}), e.i64s({1})},
                              {{"keepdims", Attribute::of_int(0)}});
  std::string loss =
      e.add("Neg", {e.add("ReduceMean", {per_row}, {{"keepdims", Attribute::of_int(0)}})});
  // d/dz = (softmax(z) - onehot) / N
  std::string n =
      e.add("Cast", {e.add("Gather", {shape, e.i64(0)}, {{"axis", Attribute::of_int(0)}})},
            {{"to", Attribute::of_int(1)}});
  std::string dz = e.add(
      "Div", {e.add("Sub", {e.add("Softmax", {z}, {{"axis", Attribute::of_int(1)}}), onehot}), n});
  return std::make_pair(loss, dz);
}

}  // namespace

std::vector<std::string> differentiable_ops() {
  std::vector<std::string> out;
  for (auto& [k, _] : builders()) out.push_back(k);
  return out;
}

Result<TrainingGraph> build_training_graph(const Graph& forward, const LossSpec& spec,
                                           const std::vector<std::string>& wanted) {
  TrainingGraph tg;
  tg.graph = forward;
  Graph& g = tg.graph;
  g.opset = std::max(g.opset, 13);
  tg.prediction = spec.prediction;
  std::set<std::string> produced;
  for (auto& in : g.inputs) produced.insert(in.name);
  for (auto& n : g.nodes)
    for (auto& o : n.outputs) produced.insert(o);
  if (!produced.count(spec.prediction) && !g.initializers.count(spec.prediction))
    return Status::NotFound("loss prediction '{}' is not a value of the model", spec.prediction);
  for (auto& in : g.inputs)
    if (in.name == spec.target)
      return Status::Invalid("the target input name '{}' is already a model input", spec.target);

  // Trainable parameters: given, or every float initializer.
  std::vector<std::string> params = wanted;
  if (params.empty())
    for (auto& [name, t] : g.initializers)
      if (t.dtype() == DType::kF32 && t.numel() > 1) params.push_back(name);
  std::set<std::string> needs_grad(params.begin(), params.end());
  for (const std::string& p : params) {
    auto it = g.initializers.find(p);
    if (it == g.initializers.end())
      return Status::NotFound("parameter '{}' is not an initializer of the model", p);
    if (it->second.dtype() != DType::kF32)
      return Status::Invalid("parameter '{}' is {}, only f32 parameters are trainable", p,
                             dtype_name(it->second.dtype()));
  }
  // Values that depend on a parameter: gradients flow only through these.
  for (const Node& n : g.nodes) {
    bool any = false;
    for (auto& i : n.inputs) any = any || needs_grad.count(i);
    if (any)
      for (auto& o : n.outputs) needs_grad.insert(o);
  }
  size_t forward_nodes = g.nodes.size();
  Editor e(&g);
  DLSYS_ASSIGN_OR_RETURN(auto loss, add_loss(spec, e));
  tg.loss = loss.first;

  std::map<std::string, std::vector<std::string>> grads;
  grads[spec.prediction].push_back(loss.second);
  auto total = [&](const std::string& v) -> std::string {
    auto it = grads.find(v);
    if (it == grads.end() || it->second.empty()) return "";
    if (it->second.size() == 1) return it->second[0];
    return e.add("Sum", it->second);  // a value used twice: its gradients add up
  };
  for (size_t k = forward_nodes; k-- > 0;) {
    const Node node = g.nodes[k];  // a copy: the editor appends to g.nodes
    bool on_path = false;
    for (auto& o : node.outputs) on_path = on_path || (needs_grad.count(o) && grads.count(o));
    if (!on_path) continue;
    auto b = builders().find(node.op_type);
    if (b == builders().end())
      return Status::Unsupported("no gradient for op {} (node '{}') yet; differentiable ops: {}",
                                 node.op_type, node.name, fmt::join(differentiable_ops(), ", "));
    GradCtx c{node, {}, {}, e};
    for (auto& o : node.outputs) c.dy.push_back(total(o));
    if (c.dy[0].empty()) continue;
    for (auto& i : node.inputs) c.needs.push_back(!i.empty() && needs_grad.count(i));
    DLSYS_ASSIGN_OR_RETURN(std::vector<std::string> in_grads, b->second(c));
    for (size_t i = 0; i < in_grads.size() && i < node.inputs.size(); ++i)
      if (!in_grads[i].empty() && c.needs[i]) grads[node.inputs[i]].push_back(in_grads[i]);
  }

  // Parameters become inputs; outputs are loss, gradients, prediction.
  g.outputs.clear();
  g.outputs.push_back({tg.loss, DType::kF32, true, {}});
  for (const std::string& p : params) {
    std::string gp = total(p);
    if (gp.empty())
      return Status::Invalid("parameter '{}' does not affect the loss; freeze it or drop it", p);
    std::string out = "grad/" + p;
    e.add("Identity", {gp});
    g.nodes.back().outputs[0] = out;
    tg.params.push_back(p);
    tg.grads.push_back(out);
    g.outputs.push_back({out, DType::kF32, false, {}});
    const Tensor& w = g.initializers.at(p);
    ValueInfo vi{p, DType::kF32, true, {}};
    for (int64_t d : w.shape()) vi.dims.push_back(Dim{d, ""});
    g.inputs.push_back(vi);
  }
  for (const std::string& p : params) g.initializers.erase(p);
  ValueInfo target{spec.target,
                   spec.kind == LossKind::kSoftmaxCrossEntropy ? DType::kI64 : DType::kF32,
                   false,
                   {}};
  g.inputs.push_back(target);
  g.outputs.push_back({spec.prediction, DType::kF32, false, {}});
  return tg;
}

}  // namespace dlsys::train
