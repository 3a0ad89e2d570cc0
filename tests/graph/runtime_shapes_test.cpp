// Run-time shapes (graph/plan.h): nodes whose output shape depends on values computed while
// running (NonZero, NonMaxSuppression on computed boxes, a Loop whose carried value grows), and
// nodes that need such a value while being planned (TopK's K computed from data), split the plan;
// what follows is planned when the run gets there, per shape. Every expected value is computed
// by hand in the test. Also: a session fixes only the graph inputs whose values a plan needs.
#include <gtest/gtest.h>

#include "graph/onnx_import.h"
#include "graph/session.h"
#include "testing/onnx_builder.h"

namespace dlsys {
namespace {

using testing::OnnxBuilder;

constexpr int kF32 = onnx::TensorProto::FLOAT;
constexpr int kI64 = onnx::TensorProto::INT64;
constexpr int kBool = onnx::TensorProto::BOOL;

Result<std::unique_ptr<Session>> Open(const OnnxBuilder& b) {
  DLSYS_ASSIGN_OR_RETURN(Graph g, import_onnx_bytes(b.bytes(), "runtime_shapes.onnx"));
  return Session::from_graph(std::move(g));
}

std::vector<float> F32(const Tensor& t) {
  return std::vector<float>(t.data_as<float>(), t.data_as<float>() + t.numel());
}
std::vector<int64_t> I64s(const Tensor& t) {
  return std::vector<int64_t>(t.data_as<int64_t>(), t.data_as<int64_t>() + t.numel());
}

// y = Transpose(NonZero(Relu(x))) + 1, s = ReduceSum(y): NonZero's count depends on x's values,
// computed in the plan (Relu), so the nodes after it are planned per count.
OnnxBuilder NonZeroThenMore() {
  OnnxBuilder b;
  b.input("x", kF32, {2, 3});
  b.output("y", kI64, {-1, 2});
  b.output("s", kI64, {});
  b.initializer_i64("one", {}, {1});
  b.node("Relu", {"x"}, {"r"});
  b.node("NonZero", {"r"}, {"nz"});
  b.node("Transpose", {"nz"}, {"t"});
  b.node("Add", {"t", "one"}, {"y"});
  auto* n = b.node("ReduceSum", {"y"}, {"s"});
  OnnxBuilder::attr_int(n, "keepdims", 0);
  return b;
}

TEST(RuntimeShapes, NodesAfterADynamicOutputArePlannedPerShape) {
  auto s = Open(NonZeroThenMore());
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  const float a[6] = {1, -1, 2, -3, 0, 4};     // positive at (0,0), (0,2), (1,2)
  const float b[6] = {-1, 5, -1, -1, -1, -1};  // positive at (0,1)
  Tensor xa = Tensor::from_f32({2, 3}, a), xb = Tensor::from_f32({2, 3}, b);
  std::vector<Tensor> out;
  for (int round = 0; round < 2; ++round) {
    ASSERT_TRUE((*s)->run({{"x", xa}}, &out).ok());
    ASSERT_EQ(out[0].shape(), (Shape{3, 2}));
    EXPECT_EQ(I64s(out[0]), (std::vector<int64_t>{1, 1, 1, 3, 2, 3}));
    EXPECT_EQ(I64s(out[1]), (std::vector<int64_t>{11}));
    ASSERT_TRUE((*s)->run({{"x", xb}}, &out).ok());
    ASSERT_EQ(out[0].shape(), (Shape{1, 2}));
    EXPECT_EQ(I64s(out[0]), (std::vector<int64_t>{1, 2}));
    EXPECT_EQ(I64s(out[1]), (std::vector<int64_t>{3}));
  }
  // One plan for the input shape; it runs Relu and NonZero, then hands over.
  auto plan = (*s)->plan_for_shapes({{2, 3}});
  ASSERT_TRUE(plan.ok());
  EXPECT_FALSE(plan.value()->static_shapes());
  EXPECT_EQ(plan.value()->continuation_nodes(), 3u);
  EXPECT_EQ(plan.value()->num_kernels(), 2u);
}

// v = TopK(x, K) with K = the number of positive elements of x, computed in the graph: TopK is
// planned when K is known, once per K. x has 80 elements, more than a plan is specialized on,
// so only the split before TopK can know K.
TEST(RuntimeShapes, AValueComputedWhileRunningIsKnownWhenTheRestIsPlanned) {
  OnnxBuilder b;
  b.input("x", kF32, {80});
  b.output("v", kF32, {-1});
  b.initializer_f32("zero", {}, {0.f});
  b.initializer_i64("shape1", {1}, {1});
  b.node("Greater", {"x", "zero"}, {"pos"});
  auto* c = b.node("Cast", {"pos"}, {"posi"});
  OnnxBuilder::attr_int(c, "to", kI64);
  auto* r = b.node("ReduceSum", {"posi"}, {"k0"});
  OnnxBuilder::attr_int(r, "keepdims", 0);
  b.node("Reshape", {"k0", "shape1"}, {"k"});
  b.node("TopK", {"x", "k"}, {"v", "i"});
  auto s = Open(b);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  std::vector<float> a(80, -1.f), d(80, -2.f);
  a[5] = 3, a[17] = 7, a[60] = 2;
  d[79] = 9;
  std::vector<Tensor> out;
  Status st = (*s)->run({{"x", Tensor::from_f32({80}, a.data())}}, &out);
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(F32(out[0]), (std::vector<float>{7, 3, 2}));
  st = (*s)->run({{"x", Tensor::from_f32({80}, d.data())}}, &out);
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(F32(out[0]), (std::vector<float>{9}));
}

// A computed value too large to plan per value keeps the error, and says why.
TEST(RuntimeShapes, ALargeComputedShapeArgumentIsRefusedWithTheReason) {
  OnnxBuilder b;
  b.input("x", kF32, {100});
  b.input("d", kF32, {-1});
  b.output("y", kF32, {-1});
  b.node("Cast", {"x"}, {"xi"});
  OnnxBuilder::attr_int(b.model().mutable_graph()->mutable_node(0), "to", kI64);
  b.node("Expand", {"d", "xi"}, {"y"});
  auto s = Open(b);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  std::vector<float> ones(100, 1.f);
  const float d1[1] = {2.f};
  std::vector<Tensor> out;
  Status st = (*s)->run(
      {{"x", Tensor::from_f32({100}, ones.data())}, {"d", Tensor::from_f32({1}, d1)}}, &out);
  EXPECT_EQ(st.code(), StatusCode::kUnsupported) << st.to_string();
  EXPECT_NE(st.message().find("computed while running"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("at most 64 numbers"), std::string::npos) << st.message();
}

// A greedy decoder's shape: tokens [1, t] grow by one per iteration (Concat), the next token is
// a function of the last one, and the body stops when it produces 0. next = (3 * last + 1) % 7.
TEST(RuntimeShapes, ALoopCarriedSequenceGrowsAndStopsEarly) {
  OnnxBuilder body;
  body.input("i", kI64, {});
  body.input("c", kBool, {});
  body.input("tokens", kI64, {1, -1});
  body.output("c_out", kBool, {});
  body.output("tokens_out", kI64, {1, -1});
  body.output("step", kI64, {1});
  body.initializer_i64("last_at", {1}, {-1});
  body.initializer_i64("three", {}, {3});
  body.initializer_i64("one", {}, {1});
  body.initializer_i64("seven", {}, {7});
  body.initializer_i64("zero", {}, {0});
  auto* g = body.node("Gather", {"tokens", "last_at"}, {"last"});  // [1, 1]
  OnnxBuilder::attr_int(g, "axis", 1);
  body.node("Mul", {"last", "three"}, {"m"});
  body.node("Add", {"m", "one"}, {"a"});
  body.node("Mod", {"a", "seven"}, {"next"});
  auto* cat = body.node("Concat", {"tokens", "next"}, {"tokens_out"});
  OnnxBuilder::attr_int(cat, "axis", 1);
  body.node("Equal", {"next", "zero"}, {"stop"});
  body.node("Not", {"stop"}, {"c_out"});  // [1, 1]: one element
  body.node("Identity", {"i"}, {"i_copy"});
  body.initializer_i64("shape1", {1}, {1});
  body.node("Reshape", {"i_copy", "shape1"}, {"step"});
  OnnxBuilder b;
  b.input("start", kI64, {1, 1});
  b.input("M", kI64, {});
  b.output("tokens_final", kI64, {1, -1});
  b.output("steps", kI64, {-1, 1});
  b.initializer_i64("go", {}, {1});
  auto* c = b.node("Cast", {"go"}, {"cond"});
  OnnxBuilder::attr_int(c, "to", kBool);
  auto* n = b.node("Loop", {"M", "cond", "start"}, {"tokens_final", "steps"}, "decode");
  OnnxBuilder::attr_graph(n, "body", body);
  auto s = Open(b);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  std::vector<Tensor> out;
  auto run = [&](int64_t start, int64_t m) {
    int64_t st0[1] = {start};
    Status st = (*s)->run(
        {{"start", Tensor::from_i64({1, 1}, st0)}, {"M", Tensor::from_i64({}, &m)}}, &out);
    EXPECT_TRUE(st.ok()) << st.to_string();
  };
  // 1 -> 4 -> 6 -> 5 -> 2 -> 0: stops after the iteration that made 0 (five iterations).
  run(1, 10);
  EXPECT_EQ(I64s(out[0]), (std::vector<int64_t>{1, 4, 6, 5, 2, 0}));
  EXPECT_EQ(out[0].shape(), (Shape{1, 6}));
  EXPECT_EQ(I64s(out[1]), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(out[1].shape(), (Shape{5, 1}));
  // M bounds it: 3 -> 3 -> 3 ... (3 * 3 + 1 = 10 = 3 mod 7) for M = 4 iterations.
  run(3, 4);
  EXPECT_EQ(I64s(out[0]), (std::vector<int64_t>{3, 3, 3, 3, 3}));
  EXPECT_EQ(out[1].shape(), (Shape{4, 1}));
  // Zero iterations: the start, and no scan rows.
  run(1, 0);
  EXPECT_EQ(I64s(out[0]), (std::vector<int64_t>{1}));
  EXPECT_EQ(out[1].shape(), (Shape{0, 1}));
}

// A detector head: boxes computed by the network (here boxes + offset) go through
// NonMaxSuppression; the selected box indices pick the boxes' scores with Gather.
TEST(RuntimeShapes, NonMaxSuppressionOnComputedBoxesFeedsTheNodesAfterIt) {
  OnnxBuilder b;
  b.input("boxes_in", kF32, {1, 4, 4});
  b.input("offset", kF32, {1});
  b.input("scores", kF32, {1, 1, 4});
  b.output("picked", kF32, {-1});
  b.initializer_i64("max_out", {1}, {10});
  b.initializer_f32("iou", {1}, {0.5f});
  b.initializer_i64("col", {}, {2});
  b.initializer_i64("flat", {1}, {-1});
  b.node("Add", {"boxes_in", "offset"}, {"boxes"});
  b.node("NonMaxSuppression", {"boxes", "scores", "max_out", "iou"}, {"sel"});
  auto* g = b.node("Gather", {"sel", "col"}, {"box_idx"});  // [n]
  OnnxBuilder::attr_int(g, "axis", 1);
  b.node("Reshape", {"scores", "flat"}, {"flat_scores"});
  b.node("Gather", {"flat_scores", "box_idx"}, {"picked"});
  auto s = Open(b);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  // Boxes 0 and 1 overlap almost fully (IoU 90/100), box 2 overlaps 0 by 50/150, box 3 is apart.
  const float boxes[16] = {0, 0, 10, 10, 0, 1, 10, 10, 0, 5, 10, 15, 20, 20, 30, 30};
  const float off[1] = {100.f};
  const float sc1[4] = {0.9f, 0.8f, 0.7f, 0.6f};
  const float sc2[4] = {0.5f, 0.95f, 0.1f, 0.2f};
  std::vector<Tensor> out;
  auto run = [&](const float* sc) {
    Status st = (*s)->run({{"boxes_in", Tensor::from_f32({1, 4, 4}, boxes)},
                           {"offset", Tensor::from_f32({1}, off)},
                           {"scores", Tensor::from_f32({1, 1, 4}, sc)}},
                          &out);
    EXPECT_TRUE(st.ok()) << st.to_string();
  };
  run(sc1);  // keeps 0 (drops 1: IoU 0.9 with 0), 2, 3
  EXPECT_EQ(F32(out[0]), (std::vector<float>{0.9f, 0.7f, 0.6f}));
  run(sc2);  // keeps 1 (drops 0), 3, 2 (IoU with 1 is 50/140)
  EXPECT_EQ(F32(out[0]), (std::vector<float>{0.95f, 0.2f, 0.1f}));
}

// Reshape's shape comes from a graph input: the session plans per value of that input only, not
// per value of the other small input.
TEST(RuntimeShapes, ASessionFixesOnlyTheInputsWhoseValuesAPlanNeeds) {
  OnnxBuilder b;
  b.input("x", kF32, {6});
  b.input("shape", kI64, {2});
  b.input("bias", kF32, {1});
  b.output("y", kF32, {-1, -1});
  b.node("Add", {"x", "bias"}, {"xb"});
  b.node("Reshape", {"xb", "shape"}, {"y"});
  auto s = Open(b);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  const float x[6] = {0, 1, 2, 3, 4, 5};
  std::vector<Tensor> inputs;
  auto plan_of = [&](int64_t rows, float bias) {
    const int64_t shape[2] = {rows, 6 / rows};
    std::map<std::string, Tensor> in = {{"x", Tensor::from_f32({6}, x)},
                                        {"shape", Tensor::from_i64({2}, shape)},
                                        {"bias", Tensor::from_f32({1}, &bias)}};
    std::vector<Tensor> out;
    Status st = (*s)->run(in, &out);
    EXPECT_TRUE(st.ok()) << st.to_string();
    EXPECT_EQ(out[0].shape(), (Shape{rows, 6 / rows}));
    EXPECT_EQ(out[0].data_as<float>()[5], 5 + bias);
    auto bound = (*s)->bind_inputs(in);
    return (*s)->plan_for(bound.value()).value();
  };
  Plan* p2 = plan_of(2, 1.f);
  EXPECT_EQ(plan_of(2, 7.f), p2);  // another bias: the same plan
  EXPECT_NE(plan_of(3, 1.f), p2);  // another shape value: its own plan
}

}  // namespace
}  // namespace dlsys
