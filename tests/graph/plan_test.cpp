// Plans: shape subgraphs are folded at build time, one plan per input-shape signature, reshape
// aliases are rebound per call, results match a hand computation.
#include <gtest/gtest.h>

#include <omp.h>

#include <thread>

#include "graph/onnx_import.h"
#include "graph/session.h"
#include "testing/compare.h"
#include "testing/onnx_builder.h"

namespace dlsys {
namespace {

using testing::OnnxBuilder;

std::unique_ptr<Session> load(const OnnxBuilder& b) {
  auto g = import_onnx_bytes(b.bytes(), "test.onnx");
  EXPECT_TRUE(g.ok()) << g.status().message();
  return Session::from_graph(std::move(g).value());
}

// Reference for tiny_mlp on one row.
std::vector<float> mlp_ref(const onnx::ModelProto& m, const float* x) {
  auto w = [&](int i) { return m.graph().initializer(i); };
  std::vector<float> h(8), y(3);
  for (int j = 0; j < 8; ++j) {
    float acc = w(1).float_data(j);
    for (int k = 0; k < 4; ++k) acc += x[k] * w(0).float_data(k * 8 + j);
    h[j] = acc > 0 ? acc : 0;
  }
  for (int j = 0; j < 3; ++j) {
    float acc = 0;
    for (int k = 0; k < 8; ++k) acc += h[k] * w(2).float_data(k * 3 + j);
    y[j] = acc;
  }
  return y;
}

// A plan built on one thread runs on others (a server warms a deployment's plans on a loader
// thread and runs them on its instances' threads). oneDNN's library-managed scratchpad is
// thread-local to the thread that created the primitive, so every primitive takes its scratchpad
// from dlsys instead (DnnlCall::exec). Convolutions at ResNet's sizes need one (Winograd on
// AVX-512, brgconv elsewhere); with the library's, running them here crashed on an AVX-512 EPYC.
TEST(Plan, RunsOnThreadsOtherThanTheOneThatBuiltIt) {
  OnnxBuilder b;
  b.input("x", onnx::TensorProto::FLOAT, {-1, 64, 56, 56});
  b.output("y", onnx::TensorProto::FLOAT, {-1, 64, 56, 56});
  b.random_f32("w1", {64, 64, 3, 3}, 0.05f, 1);
  b.random_f32("w2", {64, 64, 3, 3}, 0.05f, 2);
  OnnxBuilder::attr_ints(b.node("Conv", {"x", "w1"}, {"c1"}), "pads", {1, 1, 1, 1});
  b.node("Relu", {"c1"}, {"r1"});
  OnnxBuilder::attr_ints(b.node("Conv", {"r1", "w2"}, {"y"}), "pads", {1, 1, 1, 1});
  auto s = load(b);
  Tensor x = Tensor::empty(DType::kF32, {8, 64, 56, 56});
  for (int64_t i = 0; i < x.numel(); ++i) x.data_as<float>()[i] = static_cast<float>(i % 13) - 6;
  Tensor want;
  std::thread builder([&] {
    std::vector<Tensor> out;
    Status st = s->run({{"x", x}}, &out);
    ASSERT_TRUE(st.ok()) << st.message();
    want = out[0].clone();
  });
  builder.join();
  for (int t = 0; t < 2; ++t) {
    std::vector<Tensor> out;
    std::thread runner([&] {
      Status st = s->run({{"x", x}}, &out);
      ASSERT_TRUE(st.ok()) << st.message();
    });
    runner.join();
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(testing::compare_tensors(out[0], want, 0, 0), "") << "run " << t;
  }
}

// A step whose inputs hold fewer than 65,536 elements runs on one OpenMP thread (waking a
// sleeping thread costs more than such a step); larger ones run on the caller's threads, which
// the run leaves as it found them. Serving turns it off (PlanOptions::one_thread_small_steps).
TEST(Plan, SmallStepsRunOnOneThreadAndLargeOnesOnAll) {
  OnnxBuilder b;
  b.input("x", onnx::TensorProto::FLOAT, {-1, 8});
  b.output("y", onnx::TensorProto::FLOAT, {-1, 9000});
  b.random_f32("w", {8, 9000}, 0.5f, 3);
  b.node("Sigmoid", {"x"}, {"h"}, "small");
  b.node("MatMul", {"h", "w"}, {"y"}, "large");  // 8 x 9000 weights: over the threshold
  for (bool on : {true, false}) {
    auto g = import_onnx_bytes(b.bytes(), "test.onnx");
    ASSERT_TRUE(g.ok());
    SessionOptions o;
    o.one_thread_small_steps = on;
    auto s = Session::from_graph(std::move(g).value(), o);
    Tensor x = Tensor::zeros(DType::kF32, {2, 8});
    const int before = omp_get_max_threads();
    std::vector<Tensor> out;
    ASSERT_TRUE(s->run({{"x", x}}, &out).ok());
    EXPECT_EQ(omp_get_max_threads(), before);
    ASSERT_EQ(out[0].shape(), (Shape{2, 9000}));
    auto plan = s->plan_for({x});
    ASSERT_TRUE(plan.ok());
    int small = 0, large = 0;
    for (const PlanStepInfo& st : plan.value()->steps()) {
      if (st.name == "small") small += st.one_thread ? 1 : 2;
      if (st.name == "large") large += st.one_thread ? 1 : 2;
    }
    EXPECT_EQ(small, on ? 1 : 2) << "on " << on;
    EXPECT_EQ(large, 2) << "on " << on;
  }
}

// A Transpose whose consumers all take layouts (an NHWC exporter's Transpose before a Conv) is a
// view of its input's bytes: no step of its own, the conv reads the permuted strides; with a
// consumer that needs plain data (here a graph output) it copies. Both give the same result.
TEST(Plan, ATransposeBeforeAConvIsAViewNotACopy) {
  auto model = [](bool transposed_is_output) {
    OnnxBuilder b;
    b.input("x", onnx::TensorProto::FLOAT, {2, 8, 8, 3});
    b.output("y", onnx::TensorProto::FLOAT, {2, 4, 8, 8});
    if (transposed_is_output) b.output("t", onnx::TensorProto::FLOAT, {2, 3, 8, 8});
    b.random_f32("w", {4, 3, 3, 3}, 0.5f, 7);
    auto* t = b.node("Transpose", {"x"}, {"t"}, "to_nchw");
    OnnxBuilder::attr_ints(t, "perm", {0, 3, 1, 2});
    auto* c = b.node("Conv", {"t", "w"}, {"y"}, "conv");
    OnnxBuilder::attr_ints(c, "pads", {1, 1, 1, 1});
    auto g = import_onnx_bytes(b.bytes(), "test.onnx");
    EXPECT_TRUE(g.ok()) << g.status().to_string();
    return Session::from_graph(std::move(g).value(), SessionOptions{});
  };
  Tensor x = Tensor::empty(DType::kF32, {2, 8, 8, 3});
  for (int64_t i = 0; i < x.numel(); ++i)
    x.data_as<float>()[i] = 0.01f * static_cast<float>((i * 37) % 101) - 0.5f;
  auto view = model(false), copy = model(true);
  std::vector<Tensor> a, b;
  ASSERT_TRUE(view->run({{"x", x}}, &a).ok());
  ASSERT_TRUE(copy->run({{"x", x}}, &b).ok());
  auto steps_named = [&](Session& s, const std::string& name) {
    int n = 0;
    for (const PlanStepInfo& st : s.plan_for({x}).value()->steps()) n += st.name == name;
    return n;
  };
  EXPECT_EQ(steps_named(*view, "to_nchw"), 0) << "a view: no step";
  EXPECT_EQ(steps_named(*copy, "to_nchw"), 1) << "a graph output is plain: copied";
  ASSERT_EQ(a[0].shape(), (Shape{2, 4, 8, 8}));
  for (int64_t i = 0; i < a[0].numel(); ++i)
    ASSERT_NEAR(a[0].data_as<float>()[i], b[0].data_as<float>()[i], 1e-5) << i;
  // The copy is the transposition itself.
  const float* xs = x.data_as<float>();
  const float* ts = b[1].data_as<float>();
  for (int n = 0; n < 2; ++n)
    for (int c = 0; c < 3; ++c)
      for (int h = 0; h < 8; ++h)
        for (int w = 0; w < 8; ++w)
          ASSERT_EQ(ts[((n * 3 + c) * 8 + h) * 8 + w], xs[((n * 8 + h) * 8 + w) * 3 + c]);
}

TEST(Plan, OnePlanPerBatchSizeAndResultsMatchReference) {
  auto b = testing::tiny_mlp();
  auto s = load(b);
  for (int64_t batch : {1, 5, 1, 3}) {
    Tensor x = Tensor::empty(DType::kF32, {batch, 4});
    for (int64_t i = 0; i < x.numel(); ++i)
      x.data_as<float>()[i] = 0.3f * static_cast<float>((i * 13) % 7) - 1.f;
    std::vector<Tensor> out;
    ASSERT_TRUE(s->run({{"x", x}}, &out).ok());
    ASSERT_EQ(out[0].shape(), (Shape{batch, 3}));
    for (int64_t r = 0; r < batch; ++r) {
      auto want = mlp_ref(b.model(), x.data_as<float>() + r * 4);
      for (int j = 0; j < 3; ++j) EXPECT_NEAR(out[0].data_as<float>()[r * 3 + j], want[j], 1e-5);
    }
  }
  // Batch 1 was planned once and reused.
  auto p1 = s->plan_for_shapes({{1, 4}});
  auto p1b = s->plan_for_shapes({{1, 4}});
  ASSERT_TRUE(p1.ok() && p1b.ok());
  EXPECT_EQ(p1.value(), p1b.value());
  EXPECT_NE(p1.value(), s->plan_for_shapes({{5, 4}}).value());
}

TEST(Plan, ShapeSubgraphIsFoldedWhenThePlanIsBuilt) {
  // y = Reshape(x, Concat(Gather(Shape(x), 0), [-1])): flattens [batch, 2, 3] to [batch, 6]
  // the way PyTorch exports x.reshape(x.shape[0], -1).
  OnnxBuilder b(17);
  b.input("x", onnx::TensorProto::FLOAT, {-1, 2, 3});
  b.output("y", onnx::TensorProto::FLOAT, {-1, 6});
  b.initializer_i64("zero", {}, {0});
  b.initializer_i64("zero_axis", {1}, {0});
  b.initializer_i64("minus_one", {1}, {-1});
  b.node("Shape", {"x"}, {"s"}, "shape");
  b.node("Gather", {"s", "zero"}, {"n"}, "gather");
  b.node("Unsqueeze", {"n", "zero_axis"}, {"n1"}, "unsqueeze");
  auto* c = b.node("Concat", {"n1", "minus_one"}, {"target"}, "concat");
  OnnxBuilder::attr_int(c, "axis", 0);
  b.node("Reshape", {"x", "target"}, {"r"}, "reshape");
  b.node("Relu", {"r"}, {"y"}, "relu");
  auto s = load(b);
  Tensor x = Tensor::empty(DType::kF32, {4, 2, 3});
  for (int64_t i = 0; i < x.numel(); ++i) x.data_as<float>()[i] = static_cast<float>(i % 5) - 2.f;
  std::vector<Tensor> out;
  ASSERT_TRUE(s->run({{"x", x}}, &out).ok());
  EXPECT_EQ(out[0].shape(), (Shape{4, 6}));
  for (int64_t i = 0; i < x.numel(); ++i)
    EXPECT_EQ(out[0].data_as<float>()[i], std::max(0.f, x.data_as<float>()[i]));
  Plan* plan = s->plan_for_shapes({{4, 2, 3}}).value();
  EXPECT_EQ(plan->num_kernels(), 1u)
      << "only Relu should run; the shape subgraph and Reshape are free";
  int folded = 0;
  for (const auto& n : plan->nodes()) folded += n.folded;
  EXPECT_EQ(folded, 5);
}

TEST(Plan, ReshapeOfAnInputFollowsTheCallersBuffer) {
  OnnxBuilder b(17);
  b.input("x", onnx::TensorProto::FLOAT, {2, 3});
  b.output("y", onnx::TensorProto::FLOAT, {6});
  b.initializer_i64("shape", {1}, {6});
  b.node("Reshape", {"x", "shape"}, {"r"}, "reshape");
  b.node("Neg", {"r"}, {"y"}, "neg");
  auto s = load(b);
  for (float base : {1.f, 10.f}) {
    Tensor x = Tensor::empty(DType::kF32, {2, 3});
    for (int i = 0; i < 6; ++i) x.data_as<float>()[i] = base + static_cast<float>(i);
    std::vector<Tensor> out;
    ASSERT_TRUE(s->run({{"x", x}}, &out).ok());
    for (int i = 0; i < 6; ++i)
      EXPECT_EQ(out[0].data_as<float>()[i], -(base + static_cast<float>(i)));
  }
}

// Outputs are reported as soon as their last writing step has run, before the steps after it,
// once each, with the values run() returns (what overlaps a gradient's all-reduce with the
// rest of the backward pass).
TEST(Plan, ReportsEachOutputAsSoonAsItIsFinal) {
  OnnxBuilder b(17);
  b.input("x", onnx::TensorProto::FLOAT, {2, 3});
  b.output("z", onnx::TensorProto::FLOAT, {2, 3});
  b.output("a", onnx::TensorProto::FLOAT, {2, 3});
  b.output("v", onnx::TensorProto::FLOAT, {6});
  b.initializer_i64("shape", {1}, {6});
  b.node("Neg", {"x"}, {"a"}, "neg");
  b.node("Relu", {"a"}, {"r"}, "relu");
  b.node("Reshape", {"r", "shape"}, {"v"}, "view");  // a view: final when Relu has run
  b.node("Exp", {"r"}, {"e"}, "exp");
  b.node("Abs", {"e"}, {"z"}, "abs");
  auto g = import_onnx_bytes(b.bytes(), "test.onnx");
  ASSERT_TRUE(g.ok()) << g.status().message();
  SessionOptions so;
  so.optimize = false;
  auto s = Session::from_graph(std::move(g).value(), so);
  Tensor x = Tensor::empty(DType::kF32, {2, 3});
  for (int i = 0; i < 6; ++i) x.data_as<float>()[i] = static_cast<float>(i) - 2.5f;
  std::vector<size_t> order;
  std::vector<std::vector<float>> seen(3);
  std::vector<Tensor> out;
  ASSERT_TRUE(s->run({{"x", x}}, &out, [&](size_t o, const Tensor& t) {
                 order.push_back(o);
                 seen[o].assign(t.data_as<float>(), t.data_as<float>() + t.numel());
                 // Abs (the last step) has not run when a and v are reported.
                 if (o != 0) {
                   EXPECT_TRUE(seen[0].empty()) << "output " << o << " late";
                 }
               }).ok());
  EXPECT_EQ(order, (std::vector<size_t>{1, 2, 0})) << "a after Neg, v after Relu, z last";
  for (size_t o = 0; o < 3; ++o) {
    ASSERT_EQ(seen[o].size(), static_cast<size_t>(out[o].numel()));
    for (int64_t i = 0; i < out[o].numel(); ++i)
      EXPECT_EQ(seen[o][static_cast<size_t>(i)], out[o].data_as<float>()[i]);
  }
  Plan* plan = s->plan_for_shapes({{2, 3}}).value();
  const auto& at = plan->output_ready_steps();
  ASSERT_EQ(at.size(), 3u);
  EXPECT_LT(at[1], at[2]);
  EXPECT_LT(at[2], at[0]);
  EXPECT_EQ(at[0], static_cast<int>(plan->num_kernels()) - 1);
}

}  // namespace
}  // namespace dlsys
