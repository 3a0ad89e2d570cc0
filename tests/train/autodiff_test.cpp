// Every gradient the autodiff emits, checked against central finite differences of the loss
// computed by the same engine: each parameter element is nudged by ±eps and the loss rerun.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include "graph/session.h"
#include "ops/dnnl_util.h"
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
// `x`: the model input (random [batch, 4] when not given); `eps`: the finite-difference step.
void check_gradients(const Graph& forward, const LossSpec& spec, const Tensor& target,
                     int64_t batch = 3, Tensor x = Tensor(), double eps = 1e-2) {
  auto tg = build_training_graph(forward, spec, {});
  ASSERT_TRUE(tg.ok()) << tg.status().to_string();
  std::mt19937 rng(99);
  std::map<std::string, Tensor> in;
  in["x"] = x.valid() ? x : random_tensor({batch, 4}, rng, 1.0f);
  in[spec.target] = target;
  if (!tg->dropout_seed.empty()) {
    int64_t seed = 7;
    in[tg->dropout_seed] = Tensor::from_i64({}, &seed);
  }
  for (const std::string& p : tg->params) in[p] = forward.initializers.at(p).clone();
  auto session = Session::from_graph(tg->graph);
  std::vector<Tensor> out;
  Status st = session->run(in, &out);
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_EQ(out.size(), tg->params.size() + 2 + 2 * tg->batch_stats.size());
  std::vector<Tensor> grads;
  for (size_t k = 0; k < tg->params.size(); ++k) grads.push_back(out[k + 1].clone());
  auto loss_at = [&]() {
    std::vector<Tensor> o;
    EXPECT_TRUE(session->run(in, &o).ok());
    return static_cast<double>(o[0].data_as<float>()[0]);
  };
  int checked = 0;
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
      ++checked;
    }
  }
  EXPECT_GT(checked, 0);
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
  float t[6] = {0, 1, 1, 0, 0.3f, 1};
  check_gradients(m.g, {LossKind::kBinaryCrossEntropyWithLogits, "y"}, Tensor::from_f32({3, 2}, t));
}

Tensor i64_tensor(std::vector<int64_t> v) {
  return Tensor::from_i64({static_cast<int64_t>(v.size())}, v.data());
}
AttributeMap ints_attr(const std::string& k, std::vector<int64_t> v) {
  return {{k, Attribute::of_ints(std::move(v))}};
}

// A small CNN: Conv (bias, padding) -> BatchNorm (training statistics) -> Relu -> MaxPool ->
// grouped strided Conv -> GlobalAveragePool -> Flatten -> Gemm.
TEST(Autodiff, ConvBatchNormPoolingAndGroupedConv) {
  GraphMaker m;
  m.g.inputs[0].dims = {Dim{-1, "batch"}, Dim{3, ""}, Dim{6, ""}, Dim{6, ""}};
  m.param("w1", {4, 3, 3, 3});
  m.param("b1", {4});
  m.param("bn.scale", {4});
  m.param("bn.bias", {4});
  m.g.initializers["bn.mean"] = Tensor::zeros(DType::kF32, {4});
  std::vector<float> ones(4, 1.0f);
  m.g.initializers["bn.var"] = Tensor::from_f32({4}, ones.data());
  m.param("w2", {4, 2, 3, 3});
  m.param("fc", {4, 3});
  AttributeMap conv1 = ints_attr("pads", {1, 1, 1, 1});
  m.node("Conv", {"x", "w1", "b1"}, "c1", conv1);
  m.node("BatchNormalization", {"c1", "bn.scale", "bn.bias", "bn.mean", "bn.var"}, "n1");
  m.node("Relu", {"n1"}, "r1");
  AttributeMap pool = ints_attr("kernel_shape", {2, 2});
  pool["strides"] = Attribute::of_ints({2, 2});
  m.node("MaxPool", {"r1"}, "p1", pool);
  AttributeMap conv2 = ints_attr("pads", {1, 1, 1, 1});
  conv2["strides"] = Attribute::of_ints({2, 2});
  conv2["group"] = Attribute::of_int(2);
  m.node("Conv", {"p1", "w2"}, "c2", conv2);
  m.node("GlobalAveragePool", {"c2"}, "g");
  m.node("Flatten", {"g"}, "f", {{"axis", Attribute::of_int(1)}});
  m.node("Gemm", {"f", "fc"}, "logits");
  std::mt19937 rng(3);
  check_gradients(m.g, {LossKind::kSoftmaxCrossEntropy, "logits"}, classes({0, 2, 1}), 3,
                  random_tensor({3, 3, 6, 6}, rng, 1.0f), 1e-3);
  auto tg = build_training_graph(m.g, {LossKind::kSoftmaxCrossEntropy, "logits"}, {});
  ASSERT_TRUE(tg.ok());
  ASSERT_EQ(tg->batch_stats.size(), 1u);  // the running statistics are buffers, not parameters
  EXPECT_EQ(tg->batch_stats[0].running_mean, "bn.mean");
  EXPECT_EQ(std::count(tg->params.begin(), tg->params.end(), "bn.var"), 0);
}

// A training plan (PlanOptions::training) puts the convolutions and their gradients in one
// blocked layout and converts each of X and dY once, shared by the kernels that read it. Its
// loss and gradients must equal those of the default plan (checked above against finite
// differences), and a bf16 training plan must stay close to them.
TEST(Autodiff, TrainingPlanSharesConversionsAndComputesTheSameGradients) {
  GraphMaker m;
  m.g.inputs[0].dims = {Dim{-1, "batch"}, Dim{16, ""}, Dim{8, ""}, Dim{8, ""}};
  m.param("w1", {16, 16, 3, 3});
  m.param("bn.scale", {16});
  m.param("bn.bias", {16});
  m.g.initializers["bn.mean"] = Tensor::zeros(DType::kF32, {16});
  std::vector<float> ones(16, 1.0f);
  m.g.initializers["bn.var"] = Tensor::from_f32({16}, ones.data());
  m.param("w2", {32, 16, 3, 3});
  m.param("fc", {32, 5});
  m.node("Conv", {"x", "w1"}, "c1", ints_attr("pads", {1, 1, 1, 1}));
  m.node("BatchNormalization", {"c1", "bn.scale", "bn.bias", "bn.mean", "bn.var"}, "n1");
  m.node("Relu", {"n1"}, "r1");
  AttributeMap conv2 = ints_attr("pads", {1, 1, 1, 1});
  conv2["strides"] = Attribute::of_ints({2, 2});
  m.node("Conv", {"r1", "w2"}, "c2", conv2);
  m.node("Relu", {"c2"}, "r2");
  m.node("GlobalAveragePool", {"r2"}, "g");
  m.node("Flatten", {"g"}, "f", {{"axis", Attribute::of_int(1)}});
  m.node("Gemm", {"f", "fc"}, "logits");
  auto tg = build_training_graph(m.g, {LossKind::kSoftmaxCrossEntropy, "logits"}, {});
  ASSERT_TRUE(tg.ok()) << tg.status().to_string();
  std::mt19937 rng(5);
  std::map<std::string, Tensor> in;
  in["x"] = random_tensor({4, 16, 8, 8}, rng, 1.0f);
  in["target"] = classes({0, 4, 2, 1});
  for (const std::string& p : tg->params) in[p] = m.g.initializers.at(p).clone();
  auto outputs = [&](SessionOptions so, std::vector<PlanStepInfo>* steps) {
    auto session = Session::from_graph(tg->graph, so);
    std::vector<Tensor> out;
    Status st = session->run(in, &out);
    EXPECT_TRUE(st.ok()) << st.to_string();
    std::vector<Tensor> kept;
    for (const Tensor& t : out) kept.push_back(t.clone());
    if (steps) {
      auto bound = session->bind_inputs(in);
      EXPECT_TRUE(bound.ok());
      auto plan = session->plan_for(*bound);
      EXPECT_TRUE(plan.ok());
      *steps = plan.value()->steps();
    }
    return kept;
  };
  std::vector<Tensor> ref = outputs({}, nullptr);
  SessionOptions training;
  training.training = true;
  std::vector<PlanStepInfo> steps;
  std::vector<Tensor> got = outputs(training, &steps);
  ASSERT_EQ(got.size(), ref.size());
  for (size_t k = 0; k < ref.size(); ++k)
    for (int64_t i = 0; i < ref[k].numel(); ++i)
      ASSERT_NEAR(got[k].get_f64(i), ref[k].get_f64(i), 1e-5 + 1e-4 * std::abs(ref[k].get_f64(i)))
          << "output " << k << " element " << i;
  // r1 is read by the second Conv and by its ConvGradWeight: one conversion serves both. Without
  // the sharing each would convert it (two steps of the same name).
  std::map<std::string, int> conversions;
  for (const PlanStepInfo& st : steps)
    if (st.name.rfind("to_layout(", 0) == 0) ++conversions[st.name];
  EXPECT_EQ(conversions["to_layout(r1)"], 1);
  for (const auto& [name, n] : conversions) EXPECT_EQ(n, 1) << name << " converted twice";
  if (!bf16_kernels_available()) GTEST_SKIP() << "no bf16 kernels on this CPU";
  training.precision = Precision::kBF16;
  std::vector<Tensor> bf = outputs(training, nullptr);
  ASSERT_EQ(bf.size(), ref.size());
  EXPECT_NEAR(bf[0].get_f64(0), ref[0].get_f64(0), 0.01 * std::abs(ref[0].get_f64(0)));
  for (size_t k = 1; k <= tg->params.size(); ++k) {
    double dot = 0, nr = 0, nb = 0;  // gradient directions agree (cosine similarity)
    for (int64_t i = 0; i < ref[k].numel(); ++i) {
      dot += ref[k].get_f64(i) * bf[k].get_f64(i);
      nr += ref[k].get_f64(i) * ref[k].get_f64(i);
      nb += bf[k].get_f64(i) * bf[k].get_f64(i);
    }
    EXPECT_GT(dot / std::sqrt(nr * nb + 1e-30), 0.99) << tg->params[k - 1];
  }
}

// AveragePool with padding, training-mode Dropout (a fixed seed: a fixed mask), LeakyRelu.
TEST(Autodiff, AveragePoolDropoutLeakyRelu) {
  GraphMaker m;
  m.g.inputs[0].dims = {Dim{-1, "batch"}, Dim{2, ""}, Dim{4, ""}, Dim{4, ""}};
  m.param("w", {3, 2, 1, 1});
  m.param("fc", {3 * 3 * 3, 2});
  float ratio = 0.3f;
  m.g.initializers["ratio"] = Tensor::from_f32({}, &ratio);
  m.node("Conv", {"x", "w"}, "c");
  m.node("LeakyRelu", {"c"}, "l", {{"alpha", Attribute::of_float(0.1f)}});
  AttributeMap pool = ints_attr("kernel_shape", {2, 2});
  pool["pads"] = Attribute::of_ints({1, 1, 1, 1});
  pool["strides"] = Attribute::of_ints({2, 2});
  m.node("AveragePool", {"l"}, "p", pool);
  m.node("Dropout", {"p", "ratio"}, "d");
  m.node("Flatten", {"d"}, "f", {{"axis", Attribute::of_int(1)}});
  m.node("MatMul", {"f", "fc"}, "y");
  std::mt19937 rng(4);
  check_gradients(m.g, {LossKind::kMeanSquaredError, "y"}, random_tensor({2, 2}, rng), 2,
                  random_tensor({2, 2, 4, 4}, rng, 1.0f));
}

// Self-attention as exporters write it: batched MatMuls, Transpose, Div, Softmax, a residual
// Add, LayerNormalization, Gelu, ReduceMean.
TEST(Autodiff, AttentionLayerNormGelu) {
  GraphMaker m;
  m.g.inputs[0].dims = {Dim{-1, "batch"}, Dim{3, ""}, Dim{4, ""}};
  for (const char* w : {"wq", "wk", "wv"}) m.param(w, {4, 4});
  m.param("ln.scale", {4});
  m.param("ln.bias", {4});
  m.param("fc", {4, 3});
  float two = 2.0f;
  m.g.initializers["two"] = Tensor::from_f32({}, &two);
  m.node("MatMul", {"x", "wq"}, "q");
  m.node("MatMul", {"x", "wk"}, "k");
  m.node("MatMul", {"x", "wv"}, "v");
  m.node("Transpose", {"k"}, "kt", ints_attr("perm", {0, 2, 1}));
  m.node("MatMul", {"q", "kt"}, "s");
  m.node("Div", {"s", "two"}, "sd");
  m.node("Softmax", {"sd"}, "a", {{"axis", Attribute::of_int(-1)}});
  m.node("MatMul", {"a", "v"}, "ctx");
  m.node("Add", {"ctx", "x"}, "res");
  m.node("LayerNormalization", {"res", "ln.scale", "ln.bias"}, "ln",
         {{"axis", Attribute::of_int(-1)}});
  m.node("Gelu", {"ln"}, "ge");
  m.node("ReduceMean", {"ge"}, "pooled",
         {{"axes", Attribute::of_ints({1})}, {"keepdims", Attribute::of_int(0)}});
  m.node("Gemm", {"pooled", "fc"}, "logits");
  std::mt19937 rng(5);
  check_gradients(m.g, {LossKind::kSoftmaxCrossEntropy, "logits"}, classes({2, 0}), 2,
                  random_tensor({2, 3, 4}, rng, 1.0f));
}

// Data movement and the remaining eltwise ops: Split, Concat, Slice (strided), Gather (an
// embedding lookup with a repeated index), Unsqueeze/Squeeze, Expand, Where, Exp, Log, Sqrt,
// Pow, Erf, Sum, ReduceSum, LogSoftmax.
TEST(Autodiff, DataMovementAndEltwise) {
  GraphMaker m;
  m.param("w", {4, 6});
  m.param("table", {5, 2});
  m.param("p", {2});
  m.g.initializers["split"] = i64_tensor({2, 4});
  m.g.initializers["starts"] = i64_tensor({1});
  m.g.initializers["ends"] = i64_tensor({6});
  m.g.initializers["axes"] = i64_tensor({1});
  m.g.initializers["steps"] = i64_tensor({2});
  m.g.initializers["idx"] = i64_tensor({0, 3, 3});
  m.g.initializers["ax0"] = i64_tensor({0});
  m.g.initializers["ax1"] = i64_tensor({1});
  m.g.initializers["shape32"] = i64_tensor({3, 2});
  m.g.initializers["mask"] = Tensor::zeros(DType::kBool, {3, 2});
  m.g.initializers["mask"].data_as<uint8_t>()[1] = 1;
  m.g.initializers["mask"].data_as<uint8_t>()[4] = 1;
  m.node("MatMul", {"x", "w"}, "a");  // [3, 6]
  m.g.nodes.push_back({"split",
                       "Split",
                       "",
                       {"a", "split"},
                       {"s1", "s2"},
                       {{"axis", Attribute::of_int(1)}}});  // [3,2] [3,4]
  m.node("Exp", {"s1"}, "e1");
  m.node("Concat", {"s2", "e1"}, "c", {{"axis", Attribute::of_int(1)}});  // [3, 6]
  m.node("Slice", {"c", "starts", "ends", "axes", "steps"}, "sl");        // [3, 3]: cols 1,3,5
  m.g.initializers["end2"] = i64_tensor({2});
  m.node("Slice", {"sl", "ax0", "end2", "ax1"}, "sl2");  // [3, 2]: cols 0,1
  m.node("Gather", {"table", "idx"}, "emb");             // [3, 2]
  m.node("Unsqueeze", {"p", "ax0"}, "pu");               // [1, 2]
  m.node("Expand", {"pu", "shape32"}, "pe");             // [3, 2]
  m.node("Squeeze", {"pu", "ax0"}, "ps");                // [2]
  m.node("Mul", {"ps", "ps"}, "p2");
  m.node("Add", {"p2", "sl2"}, "q0");
  m.node("Sum", {"q0", "emb", "pe"}, "q");
  m.node("Mul", {"q", "q"}, "q2");
  float one = 1.0f, e15 = 1.5f;
  m.g.initializers["one"] = Tensor::from_f32({}, &one);
  m.g.initializers["e15"] = Tensor::from_f32({}, &e15);
  m.node("Add", {"q2", "one"}, "q3");
  m.node("Sqrt", {"q3"}, "r");  // >= 1
  m.node("Log", {"r"}, "lr");
  m.node("Pow", {"r", "e15"}, "pw");
  m.node("Erf", {"q"}, "er");
  m.node("Where", {"mask", "lr", "pw"}, "wh");
  m.node("Div", {"wh", "r"}, "dv");
  m.node("Add", {"dv", "er"}, "z0");
  m.node("ReduceSum", {"z0", "ax1"}, "rs", {{"keepdims", Attribute::of_int(1)}});  // [3, 1]
  m.node("Sub", {"z0", "rs"}, "z1");
  m.node("LogSoftmax", {"z1"}, "ls", {{"axis", Attribute::of_int(1)}});
  check_gradients(m.g, {LossKind::kSoftmaxCrossEntropy, "ls"}, classes({1, 0, 1}));
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
  m.node("Sin", {"z"}, "sin");
  r = build_training_graph(m.g, {LossKind::kSoftmaxCrossEntropy, "sin"}, {"w"});
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(r.status().message().find("no gradient for op Sin"), std::string::npos);
  r = build_training_graph(m.g, {LossKind::kSoftmaxCrossEntropy, "z", "target", 1.5f}, {"w"});
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dlsys::train
