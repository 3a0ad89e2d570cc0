// Every gradient the autodiff emits, checked against central finite differences of the loss
// computed by the same engine: each parameter element is nudged by ±eps and the loss rerun.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "graph/session.h"
#include "train/autodiff.h"

namespace dlsys::train {
namespace {

Tensor random_tensor(const Shape& s, std::mt19937& rng, float scale = 0.5f) {
  Tensor t = Tensor::empty(DType::kF32, s);
  std::normal_distribution<float> d(0.0f, scale);
  for (int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = d(rng);
  return t;
}

struct GraphMaker {
  Graph g;
  std::mt19937 rng{1234};
  GraphMaker() {
    g.opset = 17;
    g.inputs.push_back({"x", DType::kF32, true, {Dim{-1, "batch"}, Dim{4, ""}}});
  }
  void param(const std::string& name, const Shape& s) {
    g.initializers[name] = random_tensor(s, rng);
  }
  void node(const std::string& op, std::vector<std::string> in, const std::string& out,
            AttributeMap attrs = {}) {
    g.nodes.push_back({out + "_node", op, "", std::move(in), {out}, std::move(attrs)});
  }
};

// Compares the training graph's gradients with finite differences on every parameter element.
void check_gradients(const Graph& forward, const LossSpec& spec, const Tensor& target,
                     int64_t batch = 3) {
  auto tg = build_training_graph(forward, spec, {});
  ASSERT_TRUE(tg.ok()) << tg.status().to_string();
  std::mt19937 rng(99);
  std::map<std::string, Tensor> in;
  in["x"] = random_tensor({batch, 4}, rng, 1.0f);
  in[spec.target] = target;
  for (const std::string& p : tg->params) in[p] = forward.initializers.at(p).clone();
  auto session = Session::from_graph(tg->graph);
  std::vector<Tensor> out;
  Status st = session->run(in, &out);
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_EQ(out.size(), tg->params.size() + 2);
  std::vector<Tensor> grads;
  for (size_t k = 0; k < tg->params.size(); ++k) grads.push_back(out[k + 1].clone());
  auto loss_at = [&]() {
    std::vector<Tensor> o;
    EXPECT_TRUE(session->run(in, &o).ok());
    return static_cast<double>(o[0].data_as<float>()[0]);
  };
  const double eps = 1e-2;
  for (size_t k = 0; k < tg->params.size(); ++k) {
    const std::string& p = tg->params[k];
    const Tensor& grad = grads[k];  // cloned: outputs live in the plan's arena until the next run
    ASSERT_EQ(grad.shape(), in[p].shape()) << p;
    for (int64_t i = 0; i < in[p].numel(); ++i) {
      float& w = in[p].data_as<float>()[i];
      float saved = w;
      w = static_cast<float>(saved + eps);
      double up = loss_at();
      w = static_cast<float>(saved - eps);
      double down = loss_at();
      w = saved;
      double fd = (up - down) / (2 * eps);
      double an = grad.data_as<float>()[i];
      EXPECT_NEAR(an, fd, 2e-3 + 2e-2 * std::abs(fd)) << "d loss / d " << p << "[" << i << "]";
    }
  }
}

Tensor classes(std::vector<int64_t> v) {
  return Tensor::from_i64({static_cast<int64_t>(v.size())}, v.data());
}

TEST(Autodiff, MlpWithGemmReluMatMulAddAndCrossEntropy) {
  GraphMaker m;
  m.param("w1", {4, 5});
  m.param("b1", {5});
  m.param("w2", {5, 3});
  m.param("b2", {3});
  m.node("Gemm", {"x", "w1", "b1"}, "h");
  m.node("Relu", {"h"}, "a");
  m.node("MatMul", {"a", "w2"}, "z0");
  m.node("Add", {"z0", "b2"}, "logits");
  m.g.outputs.push_back({"logits", DType::kF32, false, {}});
  check_gradients(m.g, {LossKind::kSoftmaxCrossEntropy, "logits"}, classes({0, 2, 1}));
  LossSpec smooth{LossKind::kSoftmaxCrossEntropy, "logits", "target", 0.1f};
  check_gradients(m.g, smooth, classes({2, 2, 0}));
}

TEST(Autodiff, TransposedGemmsAndAValueUsedTwice) {
  GraphMaker m;
  m.param("p", {3, 4});
  m.param("q", {5, 3});
  m.param("c", {1, 5});
  m.param("s", {5});
  // M = p^T q^T + c (4x5); logits = x M; u = logits + logits * s (used twice).
  m.node("Gemm", {"p", "q", "c"}, "M",
         {{"transA", Attribute::of_int(1)},
          {"transB", Attribute::of_int(1)},
          {"alpha", Attribute::of_float(0.7f)}});
  m.node("MatMul", {"x", "M"}, "logits");
  m.node("Mul", {"logits", "s"}, "scaled");
  m.node("Add", {"logits", "scaled"}, "u");
  check_gradients(m.g, {LossKind::kSoftmaxCrossEntropy, "u"}, classes({4, 0, 3}));
}

TEST(Autodiff, SigmoidTanhSubNegFlattenWithMeanSquaredError) {
  GraphMaker m;
  m.param("w", {4, 2});
  m.param("k", {4, 2});
  m.param("b", {2});
  m.node("Gemm", {"x", "w"}, "h", {});
  m.node("Sigmoid", {"h"}, "s");
  m.node("Gemm", {"x", "k"}, "h2", {});
  m.node("Tanh", {"h2"}, "t");
  m.node("Sub", {"s", "t"}, "d");
  m.node("Neg", {"b"}, "nb");
  m.node("Add", {"d", "nb"}, "e");
  m.node("Flatten", {"e"}, "y", {{"axis", Attribute::of_int(1)}});
  std::mt19937 rng(5);
  check_gradients(m.g, {LossKind::kMeanSquaredError, "y"}, random_tensor({3, 2}, rng));
}

TEST(Autodiff, ErrorsNameTheProblem) {
  GraphMaker m;
  m.param("w", {4, 3});
  m.param("unused", {2, 2});
  m.node("MatMul", {"x", "w"}, "z");
  auto r = build_training_graph(m.g, {LossKind::kSoftmaxCrossEntropy, "z"}, {});
  EXPECT_NE(r.status().message().find("'unused' does not affect the loss"), std::string::npos)
      << r.status().message();
  r = build_training_graph(m.g, {LossKind::kSoftmaxCrossEntropy, "z"}, {"nope"});
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  r = build_training_graph(m.g, {LossKind::kSoftmaxCrossEntropy, "missing"}, {"w"});
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  m.node("Erf", {"z"}, "erf");
  r = build_training_graph(m.g, {LossKind::kSoftmaxCrossEntropy, "erf"}, {"w"});
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(r.status().message().find("no gradient for op Erf"), std::string::npos);
  r = build_training_graph(m.g, {LossKind::kSoftmaxCrossEntropy, "z", "target", 1.5f}, {"w"});
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dlsys::train
