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
  // A node with `n` outputs; returns their names.
  std::vector<std::string> add_multi(const std::string& op, std::vector<std::string> inputs,
                                     size_t n, AttributeMap attrs = {}) {
    Node node;
    node.op_type = op;
    node.name = "grad/" + op + "_" + std::to_string(counter_);
    node.inputs = std::move(inputs);
    for (size_t i = 0; i < n; ++i)
      node.outputs.push_back("grad/v" + std::to_string(counter_) + "_" + std::to_string(i));
    ++counter_;
    node.attrs = std::move(attrs);
    g_->nodes.push_back(node);
    return g_->nodes.back().outputs;
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

using Grads = Result<std::vector<std::string>>;

// d/dA (A op B) for a broadcasting binary op, reduced to A's shape.
std::string reduce_to(GradCtx& c, const std::string& g, size_t input) {
  return c.e.add("SumToShapeOf", {g, c.in(input)});
}

// The gradient of ReduceSum / ReduceMean: dY put back on the reduced axes and expanded to X.
Grads reduce_grad(GradCtx& c, bool mean) {
  std::vector<std::string> g(c.node.inputs.size());
  bool keep = c.attr_int("keepdims", 1) != 0;
  std::string axes;  // an i64 tensor value, or "" for every axis
  auto it = c.node.attrs.find("axes");
  if (it != c.node.attrs.end() && !it->second.ints.empty())
    axes = c.e.i64s(it->second.ints);
  else if (c.node.inputs.size() > 1 && !c.in(1).empty())
    axes = c.in(1);
  std::string dy = c.dy[0];
  if (!keep && !axes.empty()) dy = c.e.add("Unsqueeze", {dy, axes});
  std::string full = c.e.add("Expand", {dy, c.e.add("Shape", {c.in(0)})});
  if (mean) {
    auto count = [&](const std::string& v) {
      return c.e.add("Cast", {c.e.add("Size", {v})}, {{"to", Attribute::of_int(1)}});
    };
    full = c.e.add("Div", {full, c.e.add("Div", {count(c.in(0)), count(c.out(0))})});
  }
  g[0] = full;
  return g;
}

AttributeMap with(AttributeMap a, const std::string& k, Attribute v) {
  a[k] = std::move(v);
  return a;
}

const std::map<std::string, GradFn>& builders() {
  static const std::map<std::string, GradFn> m = {
      {"Identity", [](GradCtx& c) -> Grads { return std::vector<std::string>{c.dy[0]}; }},
      {"Dropout",  // inference-mode dropout is the identity
       [](GradCtx& c) -> Grads {
         std::vector<std::string> g(c.node.inputs.size());
         g[0] = c.dy[0];
         return g;
       }},
      {"TrainingDropout",
       [](GradCtx& c) -> Grads {
         return std::vector<std::string>{c.e.add("Mul", {c.dy[0], c.out(1)}), ""};
       }},
      {"Add",
       [](GradCtx& c) -> Grads {
         std::vector<std::string> g(2);
         for (size_t i = 0; i < 2; ++i)
           if (c.needs[i]) g[i] = reduce_to(c, c.dy[0], i);
         return g;
       }},
      {"Sum",
       [](GradCtx& c) -> Grads {
         std::vector<std::string> g(c.node.inputs.size());
         for (size_t i = 0; i < g.size(); ++i)
           if (c.needs[i]) g[i] = reduce_to(c, c.dy[0], i);
         return g;
       }},
      {"Sub",
       [](GradCtx& c) -> Grads {
         std::vector<std::string> g(2);
         if (c.needs[0]) g[0] = reduce_to(c, c.dy[0], 0);
         if (c.needs[1]) g[1] = c.e.add("Neg", {reduce_to(c, c.dy[0], 1)});
         return g;
       }},
      {"Mul",
       [](GradCtx& c) -> Grads {
         std::vector<std::string> g(2);
         for (size_t i = 0; i < 2; ++i)
           if (c.needs[i]) g[i] = reduce_to(c, c.e.add("Mul", {c.dy[0], c.in(1 - i)}), i);
         return g;
       }},
      {"Div",
       [](GradCtx& c) -> Grads {
         // d/dA = dY / B; d/dB = -dY * Y / B
         std::vector<std::string> g(2);
         if (c.needs[0]) g[0] = reduce_to(c, c.e.add("Div", {c.dy[0], c.in(1)}), 0);
         if (c.needs[1])
           g[1] = reduce_to(
               c, c.e.add("Neg", {c.e.add("Div", {c.e.add("Mul", {c.dy[0], c.out(0)}), c.in(1)})}),
               1);
         return g;
       }},
      {"Pow",
       [](GradCtx& c) -> Grads {
         // d/dA = dY * p * A^(p-1); d/dp = dY * Y * ln(A)
         std::vector<std::string> g(2);
         if (c.needs[0]) {
           std::string pm1 = c.e.add("Sub", {c.in(1), c.e.f32(1.0f)});
           std::string d = c.e.add("Mul", {c.in(1), c.e.add("Pow", {c.in(0), pm1})});
           g[0] = reduce_to(c, c.e.add("Mul", {c.dy[0], d}), 0);
         }
         if (c.needs[1])
           g[1] = reduce_to(
               c, c.e.add("Mul", {c.e.add("Mul", {c.dy[0], c.out(0)}), c.e.add("Log", {c.in(0)})}),
               1);
         return g;
       }},
      {"Where",
       [](GradCtx& c) -> Grads {
         std::vector<std::string> g(3);
         std::string zero = c.e.f32(0.0f);
         if (c.needs[1]) g[1] = reduce_to(c, c.e.add("Where", {c.in(0), c.dy[0], zero}), 1);
         if (c.needs[2]) g[2] = reduce_to(c, c.e.add("Where", {c.in(0), zero, c.dy[0]}), 2);
         return g;
       }},
      {"Neg",
       [](GradCtx& c) -> Grads { return std::vector<std::string>{c.e.add("Neg", {c.dy[0]})}; }},
      {"Relu",
       [](GradCtx& c) -> Grads {
         // From the output, so that the forward Relu can still fuse into its producer.
         return std::vector<std::string>{c.e.add("ReluGrad", {c.dy[0], c.out(0)})};
       }},
      {"LeakyRelu",
       [](GradCtx& c) -> Grads {
         std::string pos = c.e.add("Greater", {c.in(0), c.e.f32(0.0f)});
         std::string neg = c.e.add("Mul", {c.dy[0], c.e.f32(c.attr_float("alpha", 0.01f))});
         return std::vector<std::string>{c.e.add("Where", {pos, c.dy[0], neg})};
       }},
      {"Sigmoid",
       [](GradCtx& c) -> Grads {
         // dX = dY * y * (1 - y)
         std::string one_minus = c.e.add("Sub", {c.e.f32(1.0f), c.out(0)});
         std::string d = c.e.add("Mul", {c.out(0), one_minus});
         return std::vector<std::string>{c.e.add("Mul", {c.dy[0], d})};
       }},
      {"Tanh",
       [](GradCtx& c) -> Grads {
         // dX = dY * (1 - y^2)
         std::string y2 = c.e.add("Mul", {c.out(0), c.out(0)});
         std::string d = c.e.add("Sub", {c.e.f32(1.0f), y2});
         return std::vector<std::string>{c.e.add("Mul", {c.dy[0], d})};
       }},
      {"Exp",
       [](GradCtx& c) -> Grads {
         return std::vector<std::string>{c.e.add("Mul", {c.dy[0], c.out(0)})};
       }},
      {"Log",
       [](GradCtx& c) -> Grads {
         return std::vector<std::string>{c.e.add("Div", {c.dy[0], c.in(0)})};
       }},
      {"Sqrt",
       [](GradCtx& c) -> Grads {
         return std::vector<std::string>{
             c.e.add("Div", {c.e.add("Mul", {c.dy[0], c.e.f32(0.5f)}), c.out(0)})};
       }},
      {"Erf",
       [](GradCtx& c) -> Grads {
         // dX = dY * 2/sqrt(pi) * exp(-x^2)
         std::string e = c.e.add("Exp", {c.e.add("Neg", {c.e.add("Mul", {c.in(0), c.in(0)})})});
         return std::vector<std::string>{
             c.e.add("Mul", {c.dy[0], c.e.add("Mul", {e, c.e.f32(1.1283791670955126f)})})};
       }},
      {"Gelu",
       [](GradCtx& c) -> Grads {
         if (c.node.attrs.count("approximate") && c.node.attrs.at("approximate").s != "none")
           return Status::Unsupported("no gradient for Gelu with approximate='{}' (node '{}')",
                                      c.node.attrs.at("approximate").s, c.node.name);
         // gelu'(x) = Phi(x) + x * phi(x), in one oneDNN eltwise backward.
         return std::vector<std::string>{c.e.add("GeluGrad", {c.dy[0], c.in(0)})};
       }},
      {"Softmax",
       [](GradCtx& c) -> Grads {
         // dX = y * (dY - sum(dY * y, axis))
         std::string axes = c.e.i64s({c.attr_int("axis", -1)});
         std::string s = c.e.add("ReduceSum", {c.e.add("Mul", {c.dy[0], c.out(0)}), axes},
                                 {{"keepdims", Attribute::of_int(1)}});
         return std::vector<std::string>{c.e.add("Mul", {c.out(0), c.e.add("Sub", {c.dy[0], s})})};
       }},
      {"LogSoftmax",
       [](GradCtx& c) -> Grads {
         // dX = dY - exp(y) * sum(dY, axis)
         std::string axes = c.e.i64s({c.attr_int("axis", -1)});
         std::string s =
             c.e.add("ReduceSum", {c.dy[0], axes}, {{"keepdims", Attribute::of_int(1)}});
         return std::vector<std::string>{
             c.e.add("Sub", {c.dy[0], c.e.add("Mul", {c.e.add("Exp", {c.out(0)}), s})})};
       }},
      {"MatMul",  // any rank: the transposes are read through strides; broadcast dims summed
       [](GradCtx& c) -> Grads {
         std::vector<std::string> g(2);
         if (c.needs[0])
           g[0] = reduce_to(
               c, c.e.add("FusedMatMul", {c.dy[0], c.in(1)}, {{"transB", Attribute::of_int(1)}}),
               0);
         if (c.needs[1])
           g[1] = reduce_to(
               c, c.e.add("FusedMatMul", {c.in(0), c.dy[0]}, {{"transA", Attribute::of_int(1)}}),
               1);
         return g;
       }},
      {"Gemm",
       [](GradCtx& c) {
         return gemm_grad(c, c.attr_int("transA", 0) != 0, c.attr_int("transB", 0) != 0,
                          c.attr_float("alpha", 1.0f), c.attr_float("beta", 1.0f));
       }},
      {"Conv",
       [](GradCtx& c) -> Grads {
         std::vector<std::string> g(c.node.inputs.size());
         if (c.needs[0]) g[0] = c.e.add("ConvGradInput", {c.dy[0], c.in(1), c.in(0)}, c.node.attrs);
         bool bias = g.size() > 2 && !c.in(2).empty() && c.needs[2];
         if (c.needs[1] || bias) {
           auto w = c.e.add_multi("ConvGradWeight", {c.dy[0], c.in(0), c.in(1)}, bias ? 2 : 1,
                                  c.node.attrs);
           if (c.needs[1]) g[1] = w[0];
           if (bias) g[2] = w[1];
         }
         return g;
       }},
      {"MaxPool",
       [](GradCtx& c) -> Grads {
         return std::vector<std::string>{
             c.e.add("PoolGrad", {c.dy[0], c.in(0)},
                     with(c.node.attrs, "pool", Attribute::of_string("MaxPool")))};
       }},
      {"AveragePool",
       [](GradCtx& c) -> Grads {
         return std::vector<std::string>{
             c.e.add("PoolGrad", {c.dy[0], c.in(0)},
                     with(c.node.attrs, "pool", Attribute::of_string("AveragePool")))};
       }},
      {"GlobalAveragePool",
       [](GradCtx& c) -> Grads {
         return std::vector<std::string>{
             c.e.add("PoolGrad", {c.dy[0], c.in(0)},
                     {{"pool", Attribute::of_string("GlobalAveragePool")}})};
       }},
      {"GlobalMaxPool",
       [](GradCtx& c) -> Grads {
         return std::vector<std::string>{c.e.add(
             "PoolGrad", {c.dy[0], c.in(0)}, {{"pool", Attribute::of_string("GlobalMaxPool")}})};
       }},
      {"BatchNormTraining",
       [](GradCtx& c) -> Grads {
         // With a Relu taken in, the output masks dY (BatchNormGrad's sixth input).
         std::vector<std::string> in = {c.dy[0], c.in(0), c.in(1), c.out(1), c.out(2)};
         if (c.attr_int("relu", 0)) in.push_back(c.out(0));
         return c.e.add_multi("BatchNormGrad", in, 3,
                              {{"epsilon", Attribute::of_float(c.attr_float("epsilon", 1e-5f))}});
       }},
      {"LayerNormalization",
       [](GradCtx& c) -> Grads {
         if (c.node.outputs.size() < 3)
           return Status::Internal("LayerNormalization '{}' lost its statistics outputs",
                                   c.node.name);
         auto r = c.e.add_multi("LayerNormGrad", {c.dy[0], c.in(0), c.in(1), c.out(1), c.out(2)}, 3,
                                {{"axis", Attribute::of_int(c.attr_int("axis", -1))}});
         if (c.node.inputs.size() < 3 || c.in(2).empty()) r.pop_back();
         return r;
       }},
      {"Flatten",
       [](GradCtx& c) -> Grads {
         return std::vector<std::string>{
             c.e.add("Reshape", {c.dy[0], c.e.add("Shape", {c.in(0)})})};
       }},
      {"Reshape",
       [](GradCtx& c) -> Grads {
         std::vector<std::string> g(c.node.inputs.size());
         g[0] = c.e.add("Reshape", {c.dy[0], c.e.add("Shape", {c.in(0)})});
         return g;
       }},
      {"Squeeze",
       [](GradCtx& c) -> Grads {
         std::vector<std::string> g(c.node.inputs.size());
         g[0] = c.e.add("Reshape", {c.dy[0], c.e.add("Shape", {c.in(0)})});
         return g;
       }},
      {"Unsqueeze",
       [](GradCtx& c) -> Grads {
         std::vector<std::string> g(c.node.inputs.size());
         g[0] = c.e.add("Reshape", {c.dy[0], c.e.add("Shape", {c.in(0)})});
         return g;
       }},
      {"Expand",
       [](GradCtx& c) -> Grads {
         std::vector<std::string> g(c.node.inputs.size());
         g[0] = reduce_to(c, c.dy[0], 0);
         return g;
       }},
      {"Transpose",
       [](GradCtx& c) -> Grads {
         auto it = c.node.attrs.find("perm");
         if (it == c.node.attrs.end() || it->second.ints.empty())  // reversal is its own inverse
           return std::vector<std::string>{c.e.add("Transpose", {c.dy[0]})};
         const std::vector<int64_t>& p = it->second.ints;
         std::vector<int64_t> inv(p.size());
         for (size_t i = 0; i < p.size(); ++i) {
           int64_t a = p[i] < 0 ? p[i] + static_cast<int64_t>(p.size()) : p[i];
           if (a < 0 || a >= static_cast<int64_t>(p.size()))
             return Status::Invalid("Transpose '{}': perm is not a permutation", c.node.name);
           inv[a] = static_cast<int64_t>(i);
         }
         return std::vector<std::string>{
             c.e.add("Transpose", {c.dy[0]}, {{"perm", Attribute::of_ints(inv)}})};
       }},
      {"Concat",
       [](GradCtx& c) -> Grads {
         // Split dY back into pieces as long as each input along the axis.
         int64_t axis = c.attr_int("axis", 0);
         std::vector<std::string> sizes;
         for (const std::string& x : c.node.inputs)
           sizes.push_back(c.e.add("Gather", {c.e.add("Shape", {x}), c.e.i64s({axis})},
                                   {{"axis", Attribute::of_int(0)}}));
         std::string split = sizes.size() == 1
                                 ? sizes[0]
                                 : c.e.add("Concat", sizes, {{"axis", Attribute::of_int(0)}});
         return c.e.add_multi("Split", {c.dy[0], split}, c.node.inputs.size(),
                              {{"axis", Attribute::of_int(axis)}});
       }},
      {"Split",
       [](GradCtx& c) -> Grads {
         // Concatenate the outputs' gradients, zeros for outputs without one.
         std::vector<std::string> parts;
         for (size_t i = 0; i < c.node.outputs.size(); ++i)
           parts.push_back(!c.dy[i].empty()
                               ? c.dy[i]
                               : c.e.add("ConstantOfShape", {c.e.add("Shape", {c.out(i)})}));
         std::vector<std::string> g(c.node.inputs.size());
         g[0] = c.e.add("Concat", parts, {{"axis", Attribute::of_int(c.attr_int("axis", 0))}});
         return g;
       }},
      {"Slice",
       [](GradCtx& c) -> Grads {
         std::vector<std::string> in = {c.dy[0]};
         in.insert(in.end(), c.node.inputs.begin(), c.node.inputs.end());
         while (!in.empty() && in.back().empty()) in.pop_back();
         std::vector<std::string> g(c.node.inputs.size());
         g[0] = c.e.add("SliceGrad", in);
         return g;
       }},
      {"Gather",
       [](GradCtx& c) -> Grads {
         std::vector<std::string> g(2);
         g[0] = c.e.add("GatherGrad", {c.dy[0], c.in(1), c.in(0)},
                        {{"axis", Attribute::of_int(c.attr_int("axis", 0))}});
         return g;
       }},
      {"ReduceSum", [](GradCtx& c) { return reduce_grad(c, false); }},
      {"ReduceMean", [](GradCtx& c) { return reduce_grad(c, true); }},
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
  if (spec.kind == LossKind::kBinaryCrossEntropyWithLogits) {
    std::string soft = e.add(
        "Log", {e.add("Add", {e.f32(1.0f), e.add("Exp", {e.add("Neg", {e.add("Abs", {z})})})})});
    std::string per =
        e.add("Add", {e.add("Sub", {e.add("Relu", {z}), e.add("Mul", {z, spec.target})}), soft});
    std::string loss = e.add("ReduceMean", {per}, {{"keepdims", Attribute::of_int(0)}});
    // d/dz = (sigmoid(z) - t) / numel
    std::string n = e.add("Cast", {e.add("Size", {z})}, {{"to", Attribute::of_int(1)}});
    std::string dz = e.add("Div", {e.add("Sub", {e.add("Sigmoid", {z}), spec.target}), n});
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

int synchronize_batch_norms(TrainingGraph* tg) {
  int marked = 0;
  for (Node& n : tg->graph.nodes)
    if (n.op_type == "BatchNormTraining" || n.op_type == "BatchNormGrad") {
      n.attrs["sync"] = Attribute::of_int(1);
      marked += n.op_type == "BatchNormTraining";
    }
  return marked;
}

Status apply_batch_stats(const TrainingGraph& tg, const std::vector<Tensor>& outputs,
                         std::map<std::string, Tensor>* state) {
  size_t at = tg.params.size() + 2;
  if (outputs.size() < at + 2 * tg.batch_stats.size())
    return Status::Invalid("apply_batch_stats: {} outputs, expected {}", outputs.size(),
                           at + 2 * tg.batch_stats.size());
  for (const BatchStat& bs : tg.batch_stats) {
    for (const auto& [name, batch] : {std::make_pair(&bs.running_mean, &outputs[at]),
                                      std::make_pair(&bs.running_var, &outputs[at + 1])}) {
      auto it = state->find(*name);
      if (it == state->end() || it->second.numel() != batch->numel())
        return Status::NotFound("running statistic '{}' of {} values is missing", *name,
                                batch->numel());
      float* r = it->second.data_as<float>();
      const float* b = batch->data_as<float>();
      for (int64_t c = 0; c < batch->numel(); ++c)
        r[c] = r[c] * bs.momentum + b[c] * (1.0f - bs.momentum);
    }
    at += 2;
  }
  return Status::OK();
}

std::vector<std::string> differentiable_ops() {
  std::vector<std::string> out;
  for (auto& [k, _] : builders()) out.push_back(k);
  return out;
}

void initializers_to_inputs(Graph* g, const std::vector<std::string>& names) {
  for (const std::string& p : names) {
    const Tensor& w = g->initializers.at(p);
    ValueInfo vi{p, DType::kF32, true, {}};
    for (int64_t d : w.shape()) vi.dims.push_back(Dim{d, ""});
    g->inputs.push_back(vi);
    g->initializers.erase(p);
  }
}

std::vector<std::string> trainable_initializers(const Graph& forward) {
  std::set<std::string> stats;
  for (const Node& n : forward.nodes)
    if (n.op_type == "BatchNormalization")
      for (size_t i = 3; i < n.inputs.size(); ++i) stats.insert(n.inputs[i]);
  std::vector<std::string> out;
  for (auto& [name, t] : forward.initializers)
    if (t.dtype() == DType::kF32 && t.numel() > 1 && !stats.count(name)) out.push_back(name);
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

  // Training forms of Dropout, BatchNormalization and LayerNormalization. A batch norm read only
  // by a Relu takes the Relu in (BatchNormTraining's `relu` attribute; its gradient masks dY by
  // the output), which saves two passes over the activation forward and two backward.
  std::map<std::string, std::vector<size_t>> readers;
  for (size_t k = 0; k < g.nodes.size(); ++k)
    for (const std::string& i : g.nodes[k].inputs) readers[i].push_back(k);
  std::set<std::string> graph_outputs;
  for (const ValueInfo& o : g.outputs) graph_outputs.insert(o.name);
  std::set<size_t> absorbed;  // Relu nodes now inside a BatchNormTraining
  std::set<std::string> buffers;
  int fresh = 0;
  for (size_t k = 0; k < g.nodes.size(); ++k) {
    Node& n = g.nodes[k];
    auto name_for = [&](const char* what) {
      return fmt::format("train/{}{}_{}", what, fresh++, n.name);
    };
    if (n.op_type == "Dropout") {
      float ratio = 0.5f;
      if (n.attrs.count("ratio")) ratio = n.attrs.at("ratio").f;
      if (n.inputs.size() > 1 && !n.inputs[1].empty()) {
        auto it = g.initializers.find(n.inputs[1]);
        if (it == g.initializers.end() || it->second.numel() != 1)
          return Status::Unsupported("Dropout '{}': the ratio must be a constant", n.name);
        ratio = static_cast<float>(it->second.get_f64(0));
      }
      if (!(ratio >= 0 && ratio < 1))
        return Status::Invalid("Dropout '{}': ratio {} must be in [0, 1)", n.name, ratio);
      tg.dropout_seed = "dropout_seed";
      Node d;
      d.name = n.name;
      d.op_type = "TrainingDropout";
      d.inputs = {n.inputs[0], tg.dropout_seed};
      d.outputs = {n.outputs[0], name_for("mask")};
      d.attrs = {{"ratio", Attribute::of_float(ratio)},
                 {"salt", Attribute::of_int(static_cast<int64_t>(k))}};
      n = d;
    } else if (n.op_type == "BatchNormalization") {
      if (n.inputs.size() != 5)
        return Status::Invalid("BatchNormalization '{}' needs 5 inputs", n.name);
      for (size_t i = 3; i < 5; ++i)
        if (!g.initializers.count(n.inputs[i]))
          return Status::Unsupported(
              "BatchNormalization '{}': running statistic '{}' must be an initializer", n.name,
              n.inputs[i]);
      BatchStat bs;
      bs.running_mean = n.inputs[3];
      bs.running_var = n.inputs[4];
      bs.momentum = n.attrs.count("momentum") ? n.attrs.at("momentum").f : 0.9f;
      bs.batch_mean = name_for("batch_mean");
      bs.batch_var = name_for("batch_var");
      buffers.insert(bs.running_mean);
      buffers.insert(bs.running_var);
      Node b;
      b.name = n.name;
      b.op_type = "BatchNormTraining";
      b.inputs = {n.inputs[0], n.inputs[1], n.inputs[2]};
      b.outputs = {n.outputs[0], bs.batch_mean, name_for("batch_var_biased"), bs.batch_var};
      b.attrs = {{"epsilon",
                  Attribute::of_float(n.attrs.count("epsilon") ? n.attrs.at("epsilon").f : 1e-5f)}};
      const std::vector<size_t>& r = readers[n.outputs[0]];
      if (r.size() == 1 && g.nodes[r[0]].op_type == "Relu" && !graph_outputs.count(n.outputs[0]) &&
          n.outputs[0] != spec.prediction) {
        b.outputs[0] = g.nodes[r[0]].outputs[0];
        b.attrs["relu"] = Attribute::of_int(1);
        absorbed.insert(r[0]);
      }
      n = b;
      tg.batch_stats.push_back(bs);
    } else if (n.op_type == "LayerNormalization") {
      n.outputs.resize(3);
      if (n.outputs[1].empty()) n.outputs[1] = name_for("ln_mean");
      if (n.outputs[2].empty()) n.outputs[2] = name_for("ln_inv_std");
    }
  }

  if (!absorbed.empty()) {
    std::vector<Node> kept;
    for (size_t k = 0; k < g.nodes.size(); ++k)
      if (!absorbed.count(k)) kept.push_back(std::move(g.nodes[k]));
    g.nodes = std::move(kept);
  }

  // Trainable parameters: given, or every float initializer but running statistics.
  std::vector<std::string> params = wanted.empty() ? trainable_initializers(forward) : wanted;
  for (const std::string& p : params)
    if (buffers.count(p))
      return Status::Invalid("'{}' is a running statistic of a batch norm, not a parameter", p);
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
    bool any_dy = false;
    for (auto& o : node.outputs) {
      c.dy.push_back(o.empty() ? std::string() : total(o));
      any_dy = any_dy || !c.dy.back().empty();
    }
    if (!any_dy) continue;
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
  }
  initializers_to_inputs(&g, params);
  ValueInfo target{spec.target,
                   spec.kind == LossKind::kSoftmaxCrossEntropy ? DType::kI64 : DType::kF32,
                   false,
                   {}};
  g.inputs.push_back(target);
  if (!tg.dropout_seed.empty()) g.inputs.push_back({tg.dropout_seed, DType::kI64, false, {}});
  g.outputs.push_back({spec.prediction, DType::kF32, false, {}});
  for (const BatchStat& bs : tg.batch_stats) {
    g.outputs.push_back({bs.batch_mean, DType::kF32, false, {}});
    g.outputs.push_back({bs.batch_var, DType::kF32, false, {}});
  }
  return tg;
}

}  // namespace dlsys::train
