// Graph optimization passes: each rewrites the pattern it targets (checked on the optimized
// graph's ops) and the optimized graph computes the same outputs as the graph as given.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>

#include "graph/onnx_import.h"
#include "graph/passes/optimize.h"
#include "graph/session.h"
#include "ops/dnnl_util.h"
#include "testing/compare.h"
#include "testing/onnx_builder.h"

namespace dlsys {
namespace {

using testing::OnnxBuilder;
constexpr int kF = onnx::TensorProto::FLOAT;

Graph import(const OnnxBuilder& b) {
  auto g = import_onnx_bytes(b.bytes(), "test.onnx");
  EXPECT_TRUE(g.ok()) << g.status().message();
  return std::move(g).value();
}

int count_op(const Graph& g, const std::string& op) {
  int n = 0;
  for (const Node& node : g.nodes) n += node.op_type == op;
  return n;
}

Tensor random_input(const Shape& s, uint32_t seed) {
  Tensor t = Tensor::empty(DType::kF32, s);
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = d(rng);
  return t;
}

// Runs the model as given and optimized on the same input; returns the optimized session.
std::unique_ptr<Session> expect_same_outputs(const OnnxBuilder& b, const Shape& x_shape,
                                             double rtol = 1e-4, double atol = 1e-5,
                                             SessionOptions optimized = {}) {
  SessionOptions plain;
  plain.optimize = false;
  auto ref = Session::from_graph(import(b), plain);
  auto opt = Session::from_graph(import(b), optimized);
  Tensor x = random_input(x_shape, 7);
  std::vector<Tensor> want, got;
  Status s1 = ref->run({{"x", x}}, &want);
  EXPECT_TRUE(s1.ok()) << s1.message();
  Status s2 = opt->run({{"x", x}}, &got);
  EXPECT_TRUE(s2.ok()) << s2.message();
  EXPECT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size() && i < got.size(); ++i)
    EXPECT_EQ(testing::compare_tensors(got[i], want[i], rtol, atol), "") << "output " << i;
  return opt;
}

// Conv -> BN -> Relu -> Conv -> (+ residual) -> Relu, then a pool: the whole chain becomes two
// FusedConv nodes with blocked layouts between them.
OnnxBuilder conv_block() {
  OnnxBuilder b;
  b.input("x", kF, {-1, 8, 10, 10});
  b.output("y", kF, {-1, 8, 1, 1});
  b.random_f32("w1", {8, 8, 3, 3}, 0.3f, 1);
  b.random_f32("b1", {8}, 0.1f, 2);
  b.random_f32("w2", {8, 8, 3, 3}, 0.3f, 3);
  b.random_f32("scale", {8}, 1.f, 4);
  b.random_f32("shift", {8}, 0.5f, 5);
  b.random_f32("mean", {8}, 0.2f, 6);
  std::vector<float> var(8);
  for (int i = 0; i < 8; ++i) var[i] = 0.5f + 0.1f * i;
  b.initializer_f32("var", {8}, var);
  auto* c1 = b.node("Conv", {"x", "w1", "b1"}, {"c1"}, "conv1");
  OnnxBuilder::attr_ints(c1, "pads", {1, 1, 1, 1});
  b.node("BatchNormalization", {"c1", "scale", "shift", "mean", "var"}, {"bn"}, "bn1");
  b.node("Relu", {"bn"}, {"r1"}, "relu1");
  auto* c2 = b.node("Conv", {"r1", "w2"}, {"c2"}, "conv2");
  OnnxBuilder::attr_ints(c2, "pads", {1, 1, 1, 1});
  b.node("Add", {"c2", "x"}, {"sum"}, "residual");
  b.node("Relu", {"sum"}, {"r2"}, "relu2");
  b.node("GlobalAveragePool", {"r2"}, {"y"}, "pool");
  return b;
}

TEST(Optimize, ConvBatchNormReluResidualFuseIntoTwoConvs) {
  OnnxBuilder b = conv_block();
  auto s = expect_same_outputs(b, {2, 8, 10, 10});
  const Graph& g = s->graph();
  EXPECT_EQ(count_op(g, "FusedConv"), 2);
  EXPECT_EQ(count_op(g, "BatchNormalization"), 0);
  EXPECT_EQ(count_op(g, "Relu"), 0);
  EXPECT_EQ(count_op(g, "Add"), 0);
  EXPECT_EQ(g.nodes.size(), 3u);
  // The folded BN parameters are gone from the initializers.
  EXPECT_EQ(g.initializers.count("scale"), 0u);
  // Layouts: the convs and the pool take oneDNN layouts, so nothing is reordered back to plain.
  // The reorders are conversions into what a conv asked for: x for the first conv, and r1 for
  // the second, whose dst takes the plain layout of the residual x (the sum post-op).
  auto plan = s->plan_for_shapes({{2, 8, 10, 10}});
  ASSERT_TRUE(plan.ok());
  std::vector<std::string> reorders;
  for (const PlanStepInfo& st : plan.value()->steps())
    if (st.op == "Reorder") reorders.push_back(st.name);
  EXPECT_EQ(reorders, (std::vector<std::string>{"to_layout(x)", "to_layout(r1)"}));
}

// A 3x3 stem convolution, then two MobileNetV2 inverted-residual blocks: 1x1 expand -> BN ->
// ReLU6 -> 3x3 depthwise -> BN -> ReLU6 -> 1x1 project. Block A: stride 1, 48 channels, a
// residual. Block B: stride 2 on an odd 9x9 input, 40 channels (not a multiple of 16), Relu
// after the expand, no depthwise bias. In fp32 the stem runs on a Winograd kernel, whose output
// reaches block A in nChw16c.
// `extra_reader`: block B's expand output is also pooled into a second output.
OnnxBuilder inverted_residual_blocks(bool extra_reader = false) {
  OnnxBuilder b;
  b.input("x", kF, {-1, 16, 9, 9});
  b.output("y", kF, {-1, 24, 5, 5});
  if (extra_reader) b.output("pooled", kF, {-1, 40, 1, 1});
  auto batchnorm = [&](const std::string& in, const std::string& out, int64_t c, uint32_t seed) {
    b.random_f32(out + "_s", {c}, 1.f, seed);
    b.random_f32(out + "_b", {c}, 0.5f, seed + 1);
    b.random_f32(out + "_m", {c}, 0.2f, seed + 2);
    b.initializer_f32(out + "_v", {c}, std::vector<float>(c, 0.8f));
    b.node("BatchNormalization", {in, out + "_s", out + "_b", out + "_m", out + "_v"}, {out});
  };
  b.initializer_f32("zero", {}, {0.f});
  b.initializer_f32("six", {}, {6.f});
  // Block A.
  b.random_f32("wa1", {48, 16, 1, 1}, 0.4f, 61);
  b.random_f32("wa2", {48, 1, 3, 3}, 0.5f, 62);
  b.random_f32("ba2", {48}, 0.1f, 63);
  b.random_f32("wa3", {16, 48, 1, 1}, 0.2f, 64);
  b.random_f32("ws", {16, 16, 3, 3}, 0.2f, 60);
  OnnxBuilder::attr_ints(b.node("Conv", {"x", "ws"}, {"s"}, "stem"), "pads", {1, 1, 1, 1});
  b.node("Conv", {"s", "wa1"}, {"a1"}, "expand_a");
  batchnorm("a1", "a1n", 48, 100);
  b.node("Clip", {"a1n", "zero", "six"}, {"a1r"});
  auto* dwa = b.node("Conv", {"a1r", "wa2", "ba2"}, {"a2"}, "depthwise_a");
  OnnxBuilder::attr_int(dwa, "group", 48);
  OnnxBuilder::attr_ints(dwa, "pads", {1, 1, 1, 1});
  batchnorm("a2", "a2n", 48, 110);
  b.node("Clip", {"a2n", "zero", "six"}, {"a2r"});
  b.node("Conv", {"a2r", "wa3"}, {"a3"}, "project_a");
  b.node("Add", {"a3", "s"}, {"a"});
  // Block B.
  b.random_f32("wb1", {40, 16, 1, 1}, 0.4f, 71);
  b.random_f32("bb1", {40}, 0.1f, 72);
  b.random_f32("wb2", {40, 1, 3, 3}, 0.5f, 73);
  b.random_f32("wb3", {24, 40, 1, 1}, 0.2f, 74);
  b.node("Conv", {"a", "wb1", "bb1"}, {"b1"}, "expand_b");
  b.node("Relu", {"b1"}, {"b1r"});
  if (extra_reader) b.node("GlobalAveragePool", {"b1r"}, {"pooled"});
  auto* dwb = b.node("Conv", {"b1r", "wb2"}, {"b2"}, "depthwise_b");
  OnnxBuilder::attr_int(dwb, "group", 40);
  OnnxBuilder::attr_ints(dwb, "pads", {1, 1, 1, 1});
  OnnxBuilder::attr_ints(dwb, "strides", {2, 2});
  b.node("Clip", {"b2", "zero", "six"}, {"b2r"});
  b.node("Conv", {"b2r", "wb3"}, {"y"}, "project_b");
  return b;
}

// PointwiseDepthwiseFusion is on by default and can be turned off
// (OptimizeOptions::fuse_pointwise_depthwise).
SessionOptions with_pointwise_depthwise() {
  SessionOptions o;
  o.passes.fuse_pointwise_depthwise = true;
  return o;
}

TEST(Optimize, PointwiseDepthwiseFusionCanBeTurnedOff) {
  SessionOptions off;
  off.passes.fuse_pointwise_depthwise = false;
  auto s = expect_same_outputs(inverted_residual_blocks(), {2, 16, 9, 9}, 1e-4, 1e-5, off);
  EXPECT_EQ(count_op(s->graph(), "FusedConvDepthwise"), 0);
}

TEST(Optimize, PointwiseAndDepthwiseConvolutionsFuse) {
  auto s = expect_same_outputs(inverted_residual_blocks(), {2, 16, 9, 9}, 1e-4, 1e-5,
                               with_pointwise_depthwise());
  const Graph& g = s->graph();
  ASSERT_EQ(count_op(g, "FusedConvDepthwise"), 2);
  EXPECT_EQ(count_op(g, "BatchNormalization") + count_op(g, "Clip") + count_op(g, "Relu"), 0);
  for (const Node& n : g.nodes) {
    if (n.op_type != "FusedConvDepthwise") continue;
    bool a = n.name == "depthwise_a";
    EXPECT_EQ(n.attrs.at("dw_stride").i, a ? 1 : 2) << n.name;
    EXPECT_EQ(n.attrs.at("activation").s, a ? "Clip" : "Relu") << n.name;
    EXPECT_EQ(n.attrs.at("dw_activation").s, "Clip") << n.name;
    EXPECT_EQ(n.inputs.size(), a ? 5u : 4u) << n.name;  // block B's depthwise has no bias
  }
  auto plan = s->plan_for_shapes({{2, 16, 9, 9}});
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  int fused_steps = 0;
  for (const PlanStepInfo& st : plan.value()->steps()) {
    if (st.op == "FusedConvDepthwise") {
      ++fused_steps;
      EXPECT_FALSE(st.kernel.empty()) << st.name;
    }
    // Block A reads the stem's output in the layout the stem wrote (nChw16c from Winograd,
    // which oneDNN has on AVX-512 only).
    if (cpu_isa_name().rfind("avx512", 0) == 0) {
      EXPECT_NE(st.name, "to_layout(s)");
    }
  }
  EXPECT_EQ(fused_steps, 2);

  // bf16: the same graph, fused, within bf16's error of the f32 graph.
  if (!bf16_kernels_available()) GTEST_SKIP() << "no bf16 kernels on this CPU";
  SessionOptions plain, bf16 = with_pointwise_depthwise();
  plain.optimize = false;
  bf16.precision = Precision::kBF16;
  auto ref = Session::from_graph(import(inverted_residual_blocks()), plain);
  auto low = Session::from_graph(import(inverted_residual_blocks()), bf16);
  Tensor x = random_input({2, 16, 9, 9}, 8);
  std::vector<Tensor> want, got;
  ASSERT_TRUE(ref->run({{"x", x}}, &want).ok());
  Status st = low->run({{"x", x}}, &got);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(count_op(low->graph(), "FusedConvDepthwise"), 2);
  double peak = 0, err = 0;
  for (int64_t i = 0; i < want[0].numel(); ++i) {
    double w = want[0].data_as<float>()[i], v = got[0].data_as<float>()[i];
    peak = std::max(peak, std::fabs(w));
    err = std::max(err, std::fabs(w - v));
  }
  EXPECT_GT(peak, 0.1);
  EXPECT_LT(err, 0.03 * peak);
}

TEST(Optimize, PointwiseDepthwiseFusionNeedsASingleReaderAndTheWindow) {
  // The expand output read by a second node must exist: block B stays two convolutions.
  auto s = expect_same_outputs(inverted_residual_blocks(true), {2, 16, 9, 9}, 1e-4, 1e-5,
                               with_pointwise_depthwise());
  EXPECT_EQ(count_op(s->graph(), "FusedConvDepthwise"), 1);
  // A depthwise convolution with another window (dilated, or padded by 2 with dilation 2: the
  // same output size) is not the fused kernel's: block A stays two convolutions.
  for (bool pad2 : {false, true}) {
    Graph g = import(inverted_residual_blocks());
    for (Node& n : g.nodes)
      if (n.name == "depthwise_a") {
        n.attrs["dilations"] = Attribute::of_ints({2, 2});
        if (pad2) n.attrs["pads"] = Attribute::of_ints({2, 2, 2, 2});
      }
    optimize_graph(&g, with_pointwise_depthwise().passes);
    EXPECT_EQ(count_op(g, "FusedConvDepthwise"), 1) << "pad2=" << pad2;
    for (const Node& n : g.nodes)
      if (n.name == "depthwise_a") {
        EXPECT_EQ(n.op_type, "FusedConv") << "pad2=" << pad2;
      }
  }
}

// One expand + depthwise pair at MobileNetV2's shapes (channels, size, stride) and batch sizes:
// the fused kernel's outputs equal the two convolutions' on every one. (oneDNN 2.6's jit_1x1
// kernel with a depthwise post-op on channels-last tensors read past its rows: errors of up to
// 10x the output scale at batch >= 4 on AVX-512, run-to-run differences at batch 1.)
TEST(Optimize, PointwiseDepthwiseFusionMatchesAtMobileNetShapes) {
  struct Case {
    int64_t c, m, h, stride;
  };
  for (Case k :
       {Case{16, 96, 112, 2}, Case{24, 144, 56, 1}, Case{24, 144, 56, 2}, Case{32, 192, 28, 1},
        Case{64, 384, 14, 1}, Case{96, 576, 14, 2}, Case{160, 960, 7, 1}}) {
    OnnxBuilder b;
    int64_t ho = (k.h - 1) / k.stride + 1;
    b.input("x", kF, {-1, k.c, k.h, k.h});
    b.output("y", kF, {-1, k.m, ho, ho});
    b.initializer_f32("zero", {}, {0.f});
    b.initializer_f32("six", {}, {6.f});
    b.random_f32("w1", {k.m, k.c, 1, 1}, 0.4f, 81);
    b.random_f32("b1", {k.m}, 0.1f, 82);
    b.random_f32("w2", {k.m, 1, 3, 3}, 0.5f, 83);
    b.random_f32("b2", {k.m}, 0.1f, 84);
    b.node("Conv", {"x", "w1", "b1"}, {"e"}, "expand");
    b.node("Clip", {"e", "zero", "six"}, {"er"});
    auto* dw = b.node("Conv", {"er", "w2", "b2"}, {"d"}, "depthwise");
    OnnxBuilder::attr_int(dw, "group", k.m);
    OnnxBuilder::attr_ints(dw, "pads", {1, 1, 1, 1});
    OnnxBuilder::attr_ints(dw, "strides", {k.stride, k.stride});
    b.node("Clip", {"d", "zero", "six"}, {"y"});
    for (int64_t n : {1, 4, 8}) {
      SCOPED_TRACE("C=" + std::to_string(k.c) + " M=" + std::to_string(k.m) +
                   " H=" + std::to_string(k.h) + " stride=" + std::to_string(k.stride) +
                   " N=" + std::to_string(n));
      auto s = expect_same_outputs(b, {n, k.c, k.h, k.h}, 1e-4, 1e-5, with_pointwise_depthwise());
      EXPECT_EQ(count_op(s->graph(), "FusedConvDepthwise"), 1);
      // oneDNN's fused kernel from 8 MiB of 1x1 output up, the two convolutions below.
      auto plan = s->plan_for_shapes({{n, k.c, k.h, k.h}});
      ASSERT_TRUE(plan.ok());
      bool unfused_want = n * k.m * k.h * k.h * 4 < (8 << 20), seen = false;
      for (const PlanStepInfo& st : plan.value()->steps())
        if (st.op == "FusedConvDepthwise") {
          seen = true;
          EXPECT_EQ(st.kernel.find("(unfused)") != std::string::npos, unfused_want) << st.kernel;
        }
      EXPECT_TRUE(seen);
    }
  }
}

TEST(Optimize, BatchNormFoldingAloneKeepsOutputs) {
  Graph g = import(conv_block());
  OptimizeReport r;
  EXPECT_EQ(fold_conv_batchnorm(&g, &r), 1);
  EXPECT_EQ(count_op(g, "BatchNormalization"), 0);
  EXPECT_EQ(r.rewrites.size(), 1u);
}

TEST(Optimize, GeluFromErfPatterns) {
  for (bool half_first : {false, true}) {
    OnnxBuilder b;
    b.input("x", kF, {-1, 16});
    b.output("y", kF, {-1, 16});
    b.initializer_f32("sqrt2", {}, {1.4142135f});
    b.initializer_f32("one", {}, {1.f});
    b.initializer_f32("half", {}, {0.5f});
    b.node("Div", {"x", "sqrt2"}, {"d"});
    b.node("Erf", {"d"}, {"e"});
    b.node("Add", {"e", "one"}, {"a"});
    if (half_first) {
      b.node("Mul", {"x", "half"}, {"h"});
      b.node("Mul", {"h", "a"}, {"y"});
    } else {
      b.node("Mul", {"x", "a"}, {"m"});
      b.node("Mul", {"m", "half"}, {"y"});
    }
    auto s = expect_same_outputs(b, {3, 16});
    EXPECT_EQ(count_op(s->graph(), "Gelu"), 1) << "half_first=" << half_first;
    EXPECT_EQ(s->graph().nodes.size(), 1u);
  }
}

// HardSwish as exporters below opset 14 write it. `form`: "hardsigmoid" x * HardSigmoid(x);
// "div" x * Clip(x + 3, 0, 6) / 6; "mul" (3 + x) * ... * (1/6) with the operands swapped;
// "inner" x * (Clip(x + 3, 0, 6) / 6). With `conv`, x comes out of a Conv.
OnnxBuilder hardswish_block(const std::string& form, bool conv = false, float alpha = 1.f / 6) {
  OnnxBuilder b;
  b.input("x", kF, {-1, 4, 5, 5});
  b.output("y", kF, {-1, 4, 5, 5});
  std::string x = "x";
  if (conv) {
    b.random_f32("w", {4, 4, 3, 3}, 0.4f, 96);
    OnnxBuilder::attr_ints(b.node("Conv", {"x", "w"}, {"c"}, "conv"), "pads", {1, 1, 1, 1});
    x = "c";
  }
  b.initializer_f32("zero", {}, {0.f});
  b.initializer_f32("three", {}, {3.f});
  b.initializer_f32("six", {}, {6.f});
  b.initializer_f32("sixth", {}, {1.f / 6});
  if (form == "hardsigmoid") {
    OnnxBuilder::attr_float(b.node("HardSigmoid", {x}, {"g"}), "alpha", alpha);
    b.node("Mul", {"g", x}, {"y"});
    return b;
  }
  b.node(
      "Add",
      form == "mul" ? std::vector<std::string>{"three", x} : std::vector<std::string>{x, "three"},
      {"a"});
  b.node("Clip", {"a", "zero", "six"}, {"r6"});
  if (form == "inner") {
    b.node("Div", {"r6", "six"}, {"g"});
    b.node("Mul", {x, "g"}, {"y"});
  } else if (form == "mul") {
    b.node("Mul", {"r6", x}, {"p"});
    b.node("Mul", {"sixth", "p"}, {"y"});
  } else {
    b.node("Mul", {x, "r6"}, {"p"});
    b.node("Div", {"p", "six"}, {"y"});
  }
  return b;
}

TEST(Optimize, HardSwishFromItsSpelledOutForms) {
  for (const char* form : {"hardsigmoid", "div", "mul", "inner"}) {
    auto s = expect_same_outputs(hardswish_block(form), {2, 4, 5, 5});
    EXPECT_EQ(count_op(s->graph(), "HardSwish"), 1) << form;
    EXPECT_EQ(s->graph().nodes.size(), 1u) << form;
    // After a Conv it becomes the convolution's post-op.
    s = expect_same_outputs(hardswish_block(form, true), {2, 4, 5, 5});
    ASSERT_EQ(s->graph().nodes.size(), 1u) << form;
    EXPECT_EQ(s->graph().nodes[0].op_type, "FusedConv") << form;
    EXPECT_EQ(s->graph().nodes[0].attrs.at("activation").s, "HardSwish") << form;
  }
  // HardSigmoid with another slope (paddle's default 0.2) is not HardSwish's gate.
  auto s = expect_same_outputs(hardswish_block("hardsigmoid", false, 0.2f), {2, 4, 5, 5});
  EXPECT_EQ(count_op(s->graph(), "HardSwish"), 0);
  EXPECT_EQ(count_op(s->graph(), "HardSigmoid"), 1);
}

TEST(Optimize, F64GeluPatternIsLeftToTheF64Kernels) {
  // Gelu is an f32 kernel: the same pattern in double stays as it is and runs in double.
  constexpr int kD = onnx::TensorProto::DOUBLE;
  OnnxBuilder b;
  b.input("x", kD, {2});
  b.output("y", kD, {2});
  for (auto [name, v] :
       {std::pair<const char*, double>{"sqrt2", M_SQRT2}, {"one", 1}, {"half", 0.5}}) {
    auto* t = b.model().mutable_graph()->add_initializer();
    t->set_name(name);
    t->set_data_type(kD);
    t->add_double_data(v);
  }
  b.node("Div", {"x", "sqrt2"}, {"d"});
  b.node("Erf", {"d"}, {"e"});
  b.node("Add", {"e", "one"}, {"a"});
  b.node("Mul", {"x", "a"}, {"m"});
  b.node("Mul", {"m", "half"}, {"y"});
  auto s = Session::from_graph(import(b));
  EXPECT_EQ(count_op(s->graph(), "Gelu"), 0);
  Tensor x = Tensor::empty(DType::kF64, {2});
  x.data_as<double>()[0] = 1.0;
  x.data_as<double>()[1] = -2.0;
  std::vector<Tensor> out;
  Status st = s->run({{"x", x}}, &out);
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(out[0].dtype(), DType::kF64);
  // gelu(1) = 0.5 (1 + erf(1 / sqrt 2)) = 0.8413447460685429; gelu(-2) = -0.04550026389635842.
  EXPECT_NEAR(out[0].data_as<double>()[0], 0.8413447460685429, 1e-15);
  EXPECT_NEAR(out[0].data_as<double>()[1], -0.04550026389635842, 1e-15);
}

TEST(Optimize, DecomposedLayerNormBecomesOneNode) {
  OnnxBuilder b(14);
  b.input("x", kF, {-1, 4, 32});
  b.output("y", kF, {-1, 4, 32});
  b.initializer_f32("two", {}, {2.f});
  b.initializer_f32("eps", {}, {1e-5f});
  b.random_f32("gamma", {32}, 1.f, 11);
  b.random_f32("beta", {32}, 1.f, 12);
  OnnxBuilder::attr_ints(b.node("ReduceMean", {"x"}, {"mean"}), "axes", {-1});
  b.node("Sub", {"x", "mean"}, {"d"});
  b.node("Pow", {"d", "two"}, {"p"});
  OnnxBuilder::attr_ints(b.node("ReduceMean", {"p"}, {"var"}), "axes", {-1});
  b.node("Add", {"var", "eps"}, {"ve"});
  b.node("Sqrt", {"ve"}, {"sd"});
  b.node("Div", {"d", "sd"}, {"n"});
  b.node("Mul", {"n", "gamma"}, {"g"});
  b.node("Add", {"g", "beta"}, {"y"});
  auto s = expect_same_outputs(b, {2, 4, 32});
  EXPECT_EQ(count_op(s->graph(), "LayerNormalization"), 1);
  EXPECT_EQ(s->graph().nodes.size(), 1u);
}

// Multi-head attention written out as PyTorch exports it: projections reshaped to
// [B, S, H, Dh], Transposes to head-major (K to [B, H, Dh, S]), MatMul, a scale, Softmax, MatMul,
// a Transpose back and a Reshape. `scale_op` is "Div" (by sqrt(Dh)), "Mul" (by 1/sqrt(Dh)) or "".
// With `probs_out`, the softmax output is also a graph output (read twice: no fusion).
// `mask`: "" none; "causal": a constant [6, 6] of 0 and -1e9 added after the scale; "padding":
// HF-style (1 - m) * -10000 from a graph input m [B, 1, 1, 6] of 0/1, added before the scores.
// `packed`: Q, K and V sliced from one projection [.., 24] as PyTorch exports
// `qkv(x).chunk(3, -1)`: bounds computed from the projection's shape, V's end INT64_MAX.
OnnxBuilder attention_block(const std::string& scale_op, bool probs_out = false,
                            const std::string& mask = "", bool packed = false) {
  OnnxBuilder b;
  b.input("x", kF, {-1, 6, 8});
  if (mask == "padding") b.input("m", kF, {-1, 1, 1, 6});
  b.output("y", kF, {-1, 6, 8});
  if (probs_out) b.output("p", kF, {-1, 2, 6, 6});
  b.initializer_i64("heads", {4}, {0, 6, 2, 4});
  b.initializer_i64("merged", {3}, {0, 6, 8});
  if (packed) {
    b.random_f32("wqkv", {8, 24}, 0.5f, 5);
    b.node("MatMul", {"x", "wqkv"}, {"qkv"});
    b.node("Shape", {"qkv"}, {"qkv_shape"});
    b.initializer_i64("last", {1}, {2});
    b.initializer_i64("three", {1}, {3});
    b.initializer_i64("two", {1}, {2});
    b.initializer_i64("zero", {1}, {0});
    b.initializer_i64("minus1", {1}, {-1});
    b.initializer_i64("end", {1}, {INT64_MAX});
    b.node("Gather", {"qkv_shape", "last"}, {"width"});
    b.node("Div", {"width", "three"}, {"third"});
    b.node("Mul", {"third", "two"}, {"two_thirds"});
    b.node("Slice", {"qkv", "zero", "third", "minus1"}, {"qp"});
    b.node("Slice", {"qkv", "third", "two_thirds", "minus1"}, {"kp"});
    b.node("Slice", {"qkv", "two_thirds", "end", "minus1"}, {"vp"});
  }
  for (const char* w : {"q", "k", "v"}) {
    if (!packed) {
      b.random_f32(std::string("w") + w, {8, 8}, 0.5f, static_cast<uint32_t>(w[0]));
      b.node("MatMul", {"x", std::string("w") + w}, {std::string(w) + "p"});
    }
    b.node("Reshape", {std::string(w) + "p", "heads"}, {std::string(w) + "r"});
  }
  OnnxBuilder::attr_ints(b.node("Transpose", {"qr"}, {"qh"}), "perm", {0, 2, 1, 3});
  OnnxBuilder::attr_ints(b.node("Transpose", {"kr"}, {"kt"}), "perm", {0, 2, 3, 1});
  OnnxBuilder::attr_ints(b.node("Transpose", {"vr"}, {"vh"}), "perm", {0, 2, 1, 3});
  b.node("MatMul", {"qh", "kt"}, {"s"});
  std::string scores = "s";
  if (scale_op == "Div") {
    b.initializer_f32("c", {}, {2.f});
    b.node("Div", {"s", "c"}, {"ss"});
    scores = "ss";
  } else if (scale_op == "Mul") {
    b.initializer_f32("c", {}, {0.5f});
    b.node("Mul", {"c", "s"}, {"ss"});
    scores = "ss";
  }
  if (mask == "causal") {
    std::vector<float> causal(36);
    for (int i = 0; i < 6; ++i)
      for (int j = 0; j < 6; ++j) causal[i * 6 + j] = j > i ? -1e9f : 0.f;
    b.initializer_f32("causal", {6, 6}, causal);
    b.node("Add", {scores, "causal"}, {"masked"});
    scores = "masked";
  } else if (mask == "padding") {
    b.initializer_f32("one", {}, {1.f});
    b.initializer_f32("big", {}, {-10000.f});
    b.node("Sub", {"one", "m"}, {"keep_not"});
    b.node("Mul", {"keep_not", "big"}, {"additive"});
    b.node("Add", {"additive", scores}, {"masked"});
    scores = "masked";
  }
  b.node("Softmax", {scores}, {"p"}, "softmax");
  b.node("MatMul", {"p", "vh"}, {"o"});
  OnnxBuilder::attr_ints(b.node("Transpose", {"o"}, {"ot"}), "perm", {0, 2, 1, 3});
  b.node("Reshape", {"ot", "merged"}, {"y"});
  return b;
}

TEST(Optimize, AttentionBecomesOneScaledDotProductAttention) {
  for (const char* scale_op : {"Div", "Mul", ""}) {
    auto s = expect_same_outputs(attention_block(scale_op), {3, 6, 8});
    EXPECT_EQ(count_op(s->graph(), "ScaledDotProductAttention"), 1) << scale_op;
    EXPECT_EQ(count_op(s->graph(), "Softmax"), 0) << scale_op;
    EXPECT_EQ(count_op(s->graph(), "Transpose"), 0) << scale_op;
  }
  // The probabilities are also an output: they must exist, so nothing is fused.
  auto s = expect_same_outputs(attention_block("Div", true), {3, 6, 8});
  EXPECT_EQ(count_op(s->graph(), "ScaledDotProductAttention"), 0);
  EXPECT_EQ(count_op(s->graph(), "Softmax"), 1);
}

TEST(Optimize, AttentionOnOnePackedProjectionReadsItInPlace) {
  for (const char* mask : {"", "causal"}) {
    auto s = expect_same_outputs(attention_block("Div", false, mask, true), {3, 6, 8});
    EXPECT_EQ(count_op(s->graph(), "PackedScaledDotProductAttention"), 1) << mask;
    EXPECT_EQ(count_op(s->graph(), "Slice") + count_op(s->graph(), "Reshape"), 1) << mask;
  }
  // bf16: Q, K and V converted from the projection in one reorder, close to the f32 result.
  if (!bf16_kernels_available()) return;
  SessionOptions o;
  o.precision = Precision::kBF16;
  auto f32 = Session::from_graph(import(attention_block("Mul", false, "causal", true)));
  auto bf16 = Session::from_graph(import(attention_block("Mul", false, "causal", true)), o);
  Tensor x = random_input({2, 6, 8}, 4);
  std::vector<Tensor> want, got;
  ASSERT_TRUE(f32->run({{"x", x}}, &want).ok());
  ASSERT_TRUE(bf16->run({{"x", x}}, &got).ok());
  EXPECT_EQ(testing::compare_tensors(got[0], want[0], 2e-2, 2e-2), "");
}

TEST(Optimize, AttentionWithAnAdditiveMask) {
  // A constant causal mask (rank 2, broadcast over batch and heads).
  auto s = expect_same_outputs(attention_block("Div", false, "causal"), {3, 6, 8});
  EXPECT_EQ(count_op(s->graph(), "ScaledDotProductAttention"), 1);
  EXPECT_EQ(count_op(s->graph(), "Softmax") + count_op(s->graph(), "Add"), 0);
  // A padding mask computed at run time from a graph input, added on the left of the scores.
  SessionOptions plain;
  plain.optimize = false;
  auto ref = Session::from_graph(import(attention_block("Mul", false, "padding")), plain);
  auto opt = Session::from_graph(import(attention_block("Mul", false, "padding")));
  EXPECT_EQ(count_op(opt->graph(), "ScaledDotProductAttention"), 1);
  EXPECT_EQ(count_op(opt->graph(), "Softmax"), 0);
  // Sequence 0 keeps keys 0-3, sequence 1 keys 0-1.
  Tensor x = random_input({2, 6, 8}, 9), m = Tensor::empty(DType::kF32, {2, 1, 1, 6});
  for (int64_t j = 0; j < 12; ++j) m.data_as<float>()[j] = j % 6 < (j < 6 ? 4 : 2) ? 1.f : 0.f;
  // x2: tokens 4-5 of sequence 0 (masked keys there) changed.
  Tensor x2 = x.clone();
  for (int64_t i = 4 * 8; i < 6 * 8; ++i) x2.data_as<float>()[i] += 3.f;
  std::vector<Tensor> want;
  ASSERT_TRUE(ref->run({{"x", x}, {"m", m}}, &want).ok());
  auto run = [&](Session* s, const Tensor& in) {
    std::vector<Tensor> out;
    Status st = s->run({{"x", in}, {"m", m}}, &out);
    EXPECT_TRUE(st.ok()) << st.message();
    return out.empty() ? Tensor() : out[0].clone();  // outputs are views until the next run
  };
  // f32, then bf16 (Q, K, V and the probabilities in bf16; scores, mask and softmax in f32).
  for (bool bf16 : {false, true}) {
    if (bf16 && !bf16_kernels_available()) continue;
    SessionOptions o;
    if (bf16) o.precision = Precision::kBF16;
    auto s = Session::from_graph(import(attention_block("Mul", false, "padding")), o);
    Tensor y = run(s.get(), x), moved = run(s.get(), x2);
    ASSERT_TRUE(y.valid() && moved.valid());
    double tol = bf16 ? 2e-2 : 1e-5;
    EXPECT_EQ(testing::compare_tensors(y, want[0], bf16 ? 2e-2 : 1e-4, tol), "") << bf16;
    // The masked keys get no weight: rows 0-3 of sequence 0 stay where they were, rows 4-5
    // (whose queries changed) and nothing else move.
    double kept = 0, changed = 0;
    for (int64_t i = 0; i < y.numel(); ++i) {
      double d = std::fabs(moved.data_as<float>()[i] - y.data_as<float>()[i]);
      double& worst = i >= 4 * 8 && i < 6 * 8 ? changed : kept;
      worst = std::max(worst, d);
    }
    EXPECT_LT(kept, 1e-3) << bf16;
    EXPECT_GT(changed, 0.1) << bf16;
  }
  // A mask that does not broadcast onto the scores is a clear error at plan time.
  Tensor bad = Tensor::empty(DType::kF32, {2, 1, 1, 5});
  std::vector<Tensor> got;
  Status err = opt->run({{"x", x}, {"m", bad}}, &got);
  EXPECT_FALSE(err.ok());
}

TEST(Optimize, MatMulBiasActivationResidualBecomeFusedMatMuls) {
  OnnxBuilder b;
  b.input("x", kF, {-1, 5, 16});
  b.output("y", kF, {-1, 5, 16});
  b.random_f32("w", {16, 16}, 0.3f, 21);
  b.random_f32("bias", {16}, 0.3f, 22);
  b.random_f32("w2", {16, 16}, 0.3f, 23);
  b.node("MatMul", {"x", "w"}, {"m"});
  b.node("Add", {"bias", "m"}, {"mb"});
  b.node("Tanh", {"mb"}, {"g"});
  b.node("MatMul", {"g", "w2"}, {"m2"});
  b.node("Add", {"x", "m2"}, {"y"});
  auto s = expect_same_outputs(b, {2, 5, 16});
  const Graph& g = s->graph();
  ASSERT_EQ(g.nodes.size(), 2u);
  EXPECT_EQ(count_op(g, "FusedMatMul"), 2);
  EXPECT_EQ(g.nodes[0].attrs.at("activation").s, "Tanh");
  EXPECT_EQ(g.nodes[0].inputs.size(), 3u);  // A, B, bias
  EXPECT_EQ(g.nodes[1].inputs.size(), 4u);  // A, B, no bias, Z = x
  EXPECT_EQ(g.nodes[1].inputs[3], "x");
}

TEST(Optimize, GemmWithActivationAndBroadcastResidualFallsBackCorrectly) {
  // Z broadcasts ([1, 6] onto [batch, 6]): not a oneDNN post-op, the epilogue fallback runs.
  OnnxBuilder b;
  b.input("x", kF, {-1, 4});
  b.output("y", kF, {-1, 6});
  b.random_f32("w", {6, 4}, 0.5f, 31);
  b.random_f32("c", {6}, 0.5f, 32);
  b.random_f32("wz", {4, 6}, 0.5f, 33);
  auto* gm = b.node("Gemm", {"x", "w", "c"}, {"g"});
  OnnxBuilder::attr_int(gm, "transB", 1);
  OnnxBuilder::attr_ints(b.node("ReduceMean", {"x"}, {"xm"}), "axes", {0});  // [1, 4]
  b.node("MatMul", {"xm", "wz"}, {"z"});  // [1, 6], computed at run time
  b.node("Add", {"g", "z"}, {"s"});
  b.node("Sigmoid", {"s"}, {"y"});
  auto s = expect_same_outputs(b, {3, 4});
  EXPECT_EQ(count_op(s->graph(), "FusedGemm"), 1);
  EXPECT_EQ(count_op(s->graph(), "Sigmoid"), 0);
}

// tf2onnx's NHWC form of a residual block: a Transpose to NCHW before and one back to NHWC after
// every Conv, with Relu, a per-channel Mul (a constant [C] on NHWC's last axis), HardSwish as
// x * HardSigmoid(x), a residual Add of two NHWC values and a mean over H and W (keepdims 0).
OnnxBuilder nhwc_conv_block() {
  OnnxBuilder b;
  b.input("x", kF, {-1, 6, 6, 8});
  b.output("y", kF, {-1, 8});
  b.random_f32("w1", {8, 8, 3, 3}, 0.3f, 91);
  b.random_f32("b1", {8}, 0.1f, 92);
  b.random_f32("w2", {8, 8, 1, 1}, 0.3f, 93);
  b.random_f32("scale", {8}, 1.f, 94);
  auto conv = [&](const std::string& in, const std::string& w,
                  const std::vector<std::string>& extra, const std::string& out) {
    OnnxBuilder::attr_ints(b.node("Transpose", {in}, {out + "_nchw"}), "perm", {0, 3, 1, 2});
    std::vector<std::string> ins = {out + "_nchw", w};
    ins.insert(ins.end(), extra.begin(), extra.end());
    auto* c = b.node("Conv", ins, {out + "_c"}, out);
    if (w == "w1") OnnxBuilder::attr_ints(c, "pads", {1, 1, 1, 1});
    OnnxBuilder::attr_ints(b.node("Transpose", {out + "_c"}, {out}), "perm", {0, 2, 3, 1});
  };
  conv("x", "w1", {"b1"}, "c1");
  b.node("Relu", {"c1"}, {"r1"});
  b.node("Mul", {"r1", "scale"}, {"s1"});
  conv("s1", "w2", {}, "c2");
  auto* hs = b.node("HardSigmoid", {"c2"}, {"g2"});
  OnnxBuilder::attr_float(hs, "alpha", 1.f / 6);
  b.node("Mul", {"c2", "g2"}, {"h2"});
  b.node("Add", {"h2", "r1"}, {"sum"});
  auto* m = b.node("ReduceMean", {"sum"}, {"y"});
  OnnxBuilder::attr_ints(m, "axes", {1, 2});
  OnnxBuilder::attr_int(m, "keepdims", 0);
  return b;
}

std::vector<int64_t> perm_of(const Graph& g, const std::string& output) {
  for (const Node& n : g.nodes)
    if (n.op_type == "Transpose" && n.outputs[0] == output) return n.attrs.at("perm").ints;
  return {};
}

TEST(Optimize, TransposePairsAroundConvolutionsCancel) {
  {
    Graph g = import(nhwc_conv_block());
    ASSERT_EQ(count_op(g, "Transpose"), 4);
    OptimizeReport r;
    // Two regions: the first Transpose back to NHWC moves below the Relu and the scale and
    // cancels the second convolution's input Transpose, but is put back for the residual Add;
    // then that one and the second convolution's output Transpose meet at the Add and go
    // below the mean, whose axes are remapped (1, 2 -> 2, 3) with nothing left to transpose.
    EXPECT_EQ(eliminate_transposes(&g, &r), 2);
    EXPECT_EQ(count_op(g, "Transpose"), 1);
    EXPECT_EQ(perm_of(g, "c1_nchw"), (std::vector<int64_t>{0, 3, 1, 2}));  // the input's
    ASSERT_EQ(r.rewrites.size(), 2u);
    EXPECT_NE(r.rewrites[0].find(": 1 fewer Transpose"), std::string::npos) << r.rewrites[0];
    EXPECT_NE(r.rewrites[1].find(": 2 fewer Transposes"), std::string::npos) << r.rewrites[1];
    for (const Node& n : g.nodes)
      if (n.op_type == "ReduceMean") {
        EXPECT_EQ(n.attrs.at("axes").ints, (std::vector<int64_t>{2, 3}));
      }
    // The scale is stored permuted onto the channel axis of NCHW.
    for (const Node& n : g.nodes)
      if (n.op_type == "Mul" && n.inputs[0] == "r1_untransposed") {
        EXPECT_EQ(g.initializers.at(n.inputs[1]).shape(), (Shape{1, 8, 1, 1}));
      }
  }
  // With every pass: the block is the NCHW one behind the input's Transpose, the Relu and the
  // HardSwish fused into the convolutions.
  auto s = expect_same_outputs(nhwc_conv_block(), {3, 6, 6, 8});
  const Graph& g = s->graph();
  EXPECT_EQ(count_op(g, "Transpose"), 1);
  EXPECT_EQ(count_op(g, "FusedConv"), 2);
  EXPECT_EQ(count_op(g, "Relu") + count_op(g, "HardSigmoid"), 0);
}

// One Transpose and a reader of its output (x: [N, 4, 5, 6]).
OnnxBuilder transposes(const std::vector<int64_t>& p, const std::function<void(OnnxBuilder&)>& rest,
                       std::vector<int64_t> out_dims = {-1, 4, 5, 6}) {
  OnnxBuilder b;
  b.input("x", kF, {-1, 4, 5, 6});
  b.output("y", kF, out_dims);
  OnnxBuilder::attr_ints(b.node("Transpose", {"x"}, {"t"}, "first"), "perm", p);
  rest(b);
  return b;
}

TEST(Optimize, ConsecutiveTransposesCompose) {
  // Inverse permutations: both go, the Relu reads x.
  auto inverse = transposes({0, 2, 3, 1}, [](OnnxBuilder& b) {
    OnnxBuilder::attr_ints(b.node("Transpose", {"t"}, {"u"}), "perm", {0, 3, 1, 2});
    b.node("Relu", {"u"}, {"y"});
  });
  auto s = expect_same_outputs(inverse, {2, 4, 5, 6});
  EXPECT_EQ(count_op(s->graph(), "Transpose"), 0);
  // Not inverse: one Transpose by the composed permutation ((0,2,3,1) twice is (0,3,1,2)).
  auto twice =
      transposes({0, 2, 3, 1},
                 [](OnnxBuilder& b) {
                   OnnxBuilder::attr_ints(b.node("Transpose", {"t"}, {"y"}), "perm", {0, 2, 3, 1});
                 },
                 {-1, 6, 4, 5});
  s = expect_same_outputs(twice, {2, 4, 5, 6});
  EXPECT_EQ(count_op(s->graph(), "Transpose"), 1);
  EXPECT_EQ(perm_of(s->graph(), "y"), (std::vector<int64_t>{0, 3, 1, 2}));
  // The same through a Sigmoid and a Clip: the Transposes move below them.
  auto through =
      transposes({0, 2, 3, 1},
                 [](OnnxBuilder& b) {
                   b.initializer_f32("lo", {}, {-0.5f});
                   b.initializer_f32("hi", {}, {0.5f});
                   b.node("Sigmoid", {"t"}, {"sg"});
                   b.node("Clip", {"sg", "lo", "hi"}, {"cl"});
                   OnnxBuilder::attr_ints(b.node("Transpose", {"cl"}, {"y"}), "perm", {0, 2, 3, 1});
                 },
                 {-1, 6, 4, 5});
  s = expect_same_outputs(through, {2, 4, 5, 6});
  EXPECT_EQ(count_op(s->graph(), "Transpose"), 1);
  EXPECT_EQ(s->graph().nodes.back().op_type, "Transpose");
}

TEST(Optimize, TransposeBeforeReductionsGetsItsAxesRemapped) {
  // GlobalAveragePool of H and W swapped, swapped back: a ReduceMean over x's H and W.
  auto pool =
      transposes({0, 1, 3, 2},
                 [](OnnxBuilder& b) {
                   b.node("GlobalAveragePool", {"t"}, {"p"});
                   OnnxBuilder::attr_ints(b.node("Transpose", {"p"}, {"y"}), "perm", {0, 1, 3, 2});
                 },
                 {-1, 4, 1, 1});
  auto s = expect_same_outputs(pool, {2, 4, 5, 6});
  EXPECT_EQ(count_op(s->graph(), "Transpose"), 0);
  EXPECT_EQ(count_op(s->graph(), "ReduceMean"), 1);
  // After NHWC's Relu: a mean over H and W with keepdims 0 ("mean"), or with keepdims 1 and a
  // Squeeze of H and W ("squeeze"): what is left, [N, C], is in x's order, no Transpose stays.
  // "unordered": a max over W, squeezed, leaves [N, H, C] of NHWC, which x's [N, C, H] gives
  // only through a Transpose (0, 2, 1); with the Relu also read back in NCHW (through the
  // inverse Transpose, into a second output), the rewrite still saves one.
  for (const char* kind : {"mean", "squeeze", "unordered"}) {
    std::string k = kind;
    std::vector<int64_t> dims =
        k == "unordered" ? std::vector<int64_t>{-1, 5, 4} : std::vector<int64_t>{-1, 4};
    auto reduce = transposes(
        {0, 2, 3, 1},
        [&](OnnxBuilder& b) {
          b.node("Relu", {"t"}, {"r"});
          if (k == "mean") {
            auto* m = b.node("ReduceMean", {"r"}, {"y"});
            OnnxBuilder::attr_ints(m, "axes", {1, 2});
            OnnxBuilder::attr_int(m, "keepdims", 0);
          } else if (k == "squeeze") {
            OnnxBuilder::attr_ints(b.node("ReduceMean", {"r"}, {"m"}), "axes", {1, 2});
            b.initializer_i64("axes", {2}, {1, 2});
            b.node("Squeeze", {"m", "axes"}, {"y"});
          } else {
            OnnxBuilder::attr_ints(b.node("ReduceMax", {"r"}, {"m"}), "axes", {2});
            b.initializer_i64("axes", {1}, {-2});
            b.node("Squeeze", {"m", "axes"}, {"y"});
            b.output("back", kF, {-1, 4, 5, 6});
            OnnxBuilder::attr_ints(b.node("Transpose", {"r"}, {"rb"}), "perm", {0, 3, 1, 2});
            b.node("Sigmoid", {"rb"}, {"back"});
          }
        },
        dims);
    Graph g = import(reduce);
    EXPECT_EQ(eliminate_transposes(&g, nullptr), 1) << k;
    EXPECT_EQ(count_op(g, "Transpose"), k == "unordered" ? 1 : 0) << k;
    if (k == "unordered") {
      EXPECT_EQ(perm_of(g, "y"), (std::vector<int64_t>{0, 2, 1}));
    }
    expect_same_outputs(reduce, {2, 4, 5, 6});
  }
}

TEST(Optimize, TransposesThatMustStay) {
  // The Transpose's output is also read in its layout (a MatMul over NHWC's last axis) and by a
  // Relu that is a graph output: nothing cancels, nothing changes.
  auto two_readers = transposes({0, 2, 3, 1},
                                [](OnnxBuilder& b) {
                                  b.output("z", kF, {-1, 5, 6, 3});
                                  b.random_f32("w", {4, 3}, 0.5f, 95);
                                  b.node("Relu", {"t"}, {"y"});
                                  b.node("MatMul", {"t", "w"}, {"z"});
                                },
                                {-1, 5, 6, 4});
  {
    Graph g = import(two_readers);
    EXPECT_EQ(eliminate_transposes(&g, nullptr), 0);
    EXPECT_EQ(count_op(g, "Transpose"), 1);
  }
  expect_same_outputs(two_readers, {2, 4, 5, 6});
  // Same, with an inverse Transpose beside the MatMul: that pair cancels, the first Transpose
  // stays for the MatMul.
  auto with_inverse = transposes({0, 2, 3, 1}, [](OnnxBuilder& b) {
    b.output("z", kF, {-1, 5, 6, 3});
    b.random_f32("w", {4, 3}, 0.5f, 95);
    OnnxBuilder::attr_ints(b.node("Transpose", {"t"}, {"u"}), "perm", {0, 3, 1, 2});
    b.node("Relu", {"u"}, {"y"});
    b.node("MatMul", {"t", "w"}, {"z"});
  });
  auto s = expect_same_outputs(with_inverse, {2, 4, 5, 6});
  EXPECT_EQ(count_op(s->graph(), "Transpose"), 1);
  EXPECT_EQ(perm_of(s->graph(), "t"), (std::vector<int64_t>{0, 2, 3, 1}));
  // An Add of two differently transposed values, and of a transposed and a plain one (x is
  // [N, 4, 4, 4]): neither side can take the other's layout.
  for (bool plain : {false, true}) {
    OnnxBuilder b;
    b.input("x", kF, {-1, 4, 4, 4});
    b.output("y", kF, {-1, 4, 4, 4});
    OnnxBuilder::attr_ints(b.node("Transpose", {"x"}, {"a"}), "perm", {0, 2, 3, 1});
    if (!plain) OnnxBuilder::attr_ints(b.node("Transpose", {"x"}, {"c"}), "perm", {0, 3, 1, 2});
    b.node("Add", {"a", plain ? "x" : "c"}, {"s"});
    OnnxBuilder::attr_ints(b.node("Transpose", {"s"}, {"y"}), "perm", {0, 3, 1, 2});
    Graph g = import(b);
    EXPECT_EQ(eliminate_transposes(&g, nullptr), 0) << plain;
    EXPECT_EQ(count_op(g, "Transpose"), plain ? 2 : 3) << plain;
    expect_same_outputs(b, {2, 4, 4, 4});
  }
}

TEST(Optimize, CleanupPasses) {
  OnnxBuilder b;
  b.input("x", kF, {-1, 8});
  b.output("y", kF, {-1, 8});
  b.random_f32("a", {8}, 1.f, 41);
  b.random_f32("c", {8}, 1.f, 42);
  b.node("Add", {"a", "c"}, {"ac"}, "const_add");  // folded into an initializer
  b.node("Identity", {"x"}, {"xi"}, "identity");   // removed
  b.node("Dropout", {"xi"}, {"xd"}, "dropout");    // removed (inference)
  b.node("Mul", {"xd", "ac"}, {"m1"}, "mul_a");
  b.node("Mul", {"xd", "ac"}, {"m2"}, "mul_b");  // same as mul_a: merged
  b.node("Exp", {"x"}, {"unused"}, "dead");      // no consumer: removed
  b.node("Add", {"m1", "m2"}, {"y"}, "sum");
  auto s = expect_same_outputs(b, {3, 8});
  const Graph& g = s->graph();
  EXPECT_EQ(g.nodes.size(), 2u);  // one Mul, one Add
  EXPECT_EQ(count_op(g, "Identity") + count_op(g, "Dropout") + count_op(g, "Exp"), 0);
  std::map<std::string, int> by_pass;
  for (const PassStats& p : s->optimize_report().passes) by_pass[p.pass] = p.rewrites;
  EXPECT_EQ(by_pass["ConstantFolding"], 1);
  EXPECT_EQ(by_pass["IdentityElimination"], 2);
  EXPECT_EQ(by_pass["CommonSubexpressionElimination"], 1);
  EXPECT_EQ(by_pass["DeadNodeElimination"], 1);
}

TEST(Optimize, GraphOutputsKeepTheirNames) {
  // An Identity that produces a graph output, and a fusable Relu that is a graph output
  // while its input is also one: neither may be rewritten away.
  OnnxBuilder b;
  b.input("x", kF, {-1, 4});
  b.output("y", kF, {-1, 3});
  b.output("m", kF, {-1, 3});
  b.random_f32("w", {4, 3}, 1.f, 51);
  b.node("MatMul", {"x", "w"}, {"m"});
  b.node("Relu", {"m"}, {"r"});
  b.node("Identity", {"r"}, {"y"});
  auto s = expect_same_outputs(b, {2, 4});
  EXPECT_EQ(count_op(s->graph(), "MatMul"), 1);
  EXPECT_EQ(count_op(s->graph(), "Relu"), 1);
}

}  // namespace
}  // namespace dlsys
