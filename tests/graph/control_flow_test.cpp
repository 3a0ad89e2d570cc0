// If, Loop and Scan on models built here, against values computed by hand: subgraphs that read
// outer values (also from a nested If), branches taken at run time, loop-carried values, scan
// outputs, early exit (with scan outputs: as many rows as iterations ran), and branches of
// different shapes (the taken branch's shape, a dynamic output). The ONNX conformance cases
// (test_if, test_loop11, test_scan9_sum, Range expanded into a Loop) and a scripted PyTorch model
// (pytorch_models_test: scripted_control) check the same ops against ONNX's and PyTorch's outputs.
#include <gtest/gtest.h>

#include "graph/onnx_import.h"
#include "graph/session.h"
#include "testing/onnx_builder.h"

namespace dlsys {
namespace {

using testing::OnnxBuilder;

constexpr int kF32 = onnx::TensorProto::FLOAT;
constexpr int kBool = onnx::TensorProto::BOOL;
constexpr int kI64 = onnx::TensorProto::INT64;

Result<std::unique_ptr<Session>> Open(const OnnxBuilder& b) {
  DLSYS_ASSIGN_OR_RETURN(Graph g, import_onnx_bytes(b.bytes(), "control.onnx"));
  return Session::from_graph(std::move(g));
}

Tensor Bool(bool v) {
  Tensor t = Tensor::empty(DType::kBool, {});
  t.data_as<uint8_t>()[0] = v;
  return t;
}

Tensor I64(int64_t v) {
  return Tensor::from_i64({}, &v);
}

std::vector<float> Values(const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) v[static_cast<size_t>(i)] = t.data_as<float>()[i];
  return v;
}

const std::vector<float> kX = {1, -2, 3, -4, 5, -6};

// y = If(c1, then: x + w, else: If(c2, then: -x, else: x * x)); w is an outer initializer, x an
// outer graph input read by both levels.
OnnxBuilder NestedIf() {
  OnnxBuilder then_b, inner_then, inner_else, else_b;
  then_b.output("t", kF32, {2, 3});
  then_b.node("Add", {"x", "w"}, {"t"});
  inner_then.output("n", kF32, {2, 3});
  inner_then.node("Neg", {"x"}, {"n"});
  inner_else.output("q", kF32, {2, 3});
  inner_else.node("Mul", {"x", "x"}, {"q"});
  else_b.output("e", kF32, {2, 3});
  auto* inner = else_b.node("If", {"c2"}, {"e"}, "inner_if");
  OnnxBuilder::attr_graph(inner, "then_branch", inner_then);
  OnnxBuilder::attr_graph(inner, "else_branch", inner_else);
  OnnxBuilder b;
  b.input("x", kF32, {2, 3});
  b.input("c1", kBool, {});
  b.input("c2", kBool, {});
  b.output("y", kF32, {2, 3});
  b.initializer_f32("w", {3}, {10, 20, 30});
  auto* n = b.node("If", {"c1"}, {"y"}, "outer_if");
  OnnxBuilder::attr_graph(n, "then_branch", then_b);
  OnnxBuilder::attr_graph(n, "else_branch", else_b);
  return b;
}

TEST(ControlFlow, IfTakesTheBranchTheConditionSaysAtRunTimeAndReadsOuterValues) {
  auto s = Open(NestedIf());
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  Tensor x = Tensor::from_f32({2, 3}, kX.data());
  std::vector<Tensor> out;
  for (bool c1 : {true, false}) {
    for (bool c2 : {true, false}) {
      ASSERT_TRUE((*s)->run({{"x", x}, {"c1", Bool(c1)}, {"c2", Bool(c2)}}, &out).ok());
      std::vector<float> want(6);
      for (size_t i = 0; i < 6; ++i) {
        const float w = 10.f * static_cast<float>(i % 3 + 1);
        want[i] = c1 ? kX[i] + w : c2 ? -kX[i] : kX[i] * kX[i];
      }
      EXPECT_EQ(Values(out[0]), want) << "c1 " << c1 << " c2 " << c2;
    }
  }
  // Its inputs are one bool, but its branches' work is not: the If is no small step run on one
  // thread (PlanOptions::one_thread_small_steps).
  auto plan = (*s)->plan_for({x, Bool(true), Bool(true)});
  ASSERT_TRUE(plan.ok());
  int ifs = 0;
  for (const PlanStepInfo& st : plan.value()->steps())
    if (st.op == "If") {
      ++ifs;
      EXPECT_FALSE(st.one_thread) << st.name;
    }
  EXPECT_EQ(ifs, 1);
}

TEST(ControlFlow, BranchesOfDifferentShapesGiveTheTakenBranchsShape) {
  auto make = [](bool cond_is_constant) {
    OnnxBuilder then_b, else_b;
    then_b.output("t", kF32, {-1});
    then_b.node("Identity", {"x"}, {"t"});
    else_b.output("e", kF32, {-1});
    else_b.initializer_i64("starts", {1}, {0});
    else_b.initializer_i64("ends", {1}, {2});
    else_b.node("Slice", {"x", "starts", "ends"}, {"e"});
    OnnxBuilder b;
    b.input("x", kF32, {4});
    if (cond_is_constant) {
      b.node("Constant", {}, {"c"});
      auto* k = b.model().mutable_graph()->mutable_node(0);
      auto* a = k->add_attribute();
      a->set_name("value");
      a->set_type(onnx::AttributeProto::TENSOR);
      a->mutable_t()->set_data_type(kBool);
      a->mutable_t()->add_int32_data(0);
    } else {
      b.input("c", kBool, {});
    }
    b.output("y", kF32, {-1});
    auto* n = b.node("If", {"c"}, {"y"}, "shape_if");
    OnnxBuilder::attr_graph(n, "then_branch", then_b);
    OnnxBuilder::attr_graph(n, "else_branch", else_b);
    return b;
  };
  const std::vector<float> x4 = {1, 2, 3, 4};
  Tensor x = Tensor::from_f32({4}, x4.data());
  std::vector<Tensor> out;
  auto open = Open(make(false));
  ASSERT_TRUE(open.ok()) << open.status().to_string();
  // The condition is known only at run time: the output's shape is the taken branch's
  // (a dynamic output), and both branches run in turn through one session.
  Status st = (*open)->run({{"x", x}, {"c", Bool(true)}}, &out);
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(out[0].shape(), (Shape{4}));
  st = (*open)->run({{"x", x}, {"c", Bool(false)}}, &out);
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(Values(out[0]), (std::vector<float>{1, 2}));
  st = (*open)->run({{"x", x}, {"c", Bool(true)}}, &out);
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(Values(out[0]), x4);
  // The condition is a constant: only the else branch is planned, and its shape is the output's.
  auto known = Open(make(true));
  ASSERT_TRUE(known.ok()) << known.status().to_string();
  st = (*known)->run({{"x", x}}, &out);
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(Values(out[0]), (std::vector<float>{1, 2}));
}

// Loop(M, cond, s0) with body (i, c, s) -> (c_out, s + x, s + x): s is carried, its value after
// each iteration is scanned; c_out = i < stop_before. x is an outer value.
OnnxBuilder Accumulate(bool with_scan, int64_t stop_before) {
  OnnxBuilder body;
  body.input("i", kI64, {});
  body.input("c", kBool, {});
  body.input("s", kF32, {3});
  body.output("c_out", kBool, {});
  body.output("s_out", kF32, {3});
  if (with_scan) body.output("scan", kF32, {3});
  body.initializer_i64("limit", {}, {stop_before});
  body.node("Less", {"i", "limit"}, {"c_out"});
  body.node("Add", {"s", "x"}, {"s_out"});
  if (with_scan) body.node("Identity", {"s_out"}, {"scan"});
  OnnxBuilder b;
  b.input("M", kI64, {});
  b.input("x", kF32, {3});
  b.input("s0", kF32, {3});
  b.output("s_final", kF32, {3});
  if (with_scan) b.output("all", kF32, {-1, 3});
  b.initializer_i64("go", {}, {1});
  b.node("Cast", {"go"}, {"cond"});
  OnnxBuilder::attr_int(b.model().mutable_graph()->mutable_node(0), "to", kBool);
  std::vector<std::string> outs = {"s_final"};
  if (with_scan) outs.push_back("all");
  auto* n = b.node("Loop", {"M", "cond", "s0"}, outs, "acc");
  OnnxBuilder::attr_graph(n, "body", body);
  return b;
}

TEST(ControlFlow, LoopCarriesValuesScansThemAndStopsWhenTheBodySays) {
  const std::vector<float> x3 = {1, 2, 3}, s3 = {100, 200, 300};
  Tensor x = Tensor::from_f32({3}, x3.data()), s0 = Tensor::from_f32({3}, s3.data());
  std::vector<Tensor> out;
  // Four iterations (the body's condition stays true), every value scanned.
  auto scan = Open(Accumulate(true, 100));
  ASSERT_TRUE(scan.ok()) << scan.status().to_string();
  Status st = (*scan)->run({{"M", I64(4)}, {"x", x}, {"s0", s0}}, &out);
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(Values(out[0]), (std::vector<float>{104, 208, 312}));
  ASSERT_EQ(out[1].shape(), (Shape{4, 3}));
  EXPECT_EQ(Values(out[1]),
            (std::vector<float>{101, 202, 303, 102, 204, 306, 103, 206, 309, 104, 208, 312}));
  // Another M: planned again for it (the scan's length); zero iterations give s0 back.
  ASSERT_TRUE((*scan)->run({{"M", I64(0)}, {"x", x}, {"s0", s0}}, &out).ok());
  EXPECT_EQ(Values(out[0]), s3);
  EXPECT_EQ(out[1].shape(), (Shape{0, 3}));
  // The body says stop after iteration 2 (i < 2 is false there): three iterations of ten.
  auto stop = Open(Accumulate(false, 2));
  ASSERT_TRUE(stop.ok()) << stop.status().to_string();
  st = (*stop)->run({{"M", I64(10)}, {"x", x}, {"s0", s0}}, &out);
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(Values(out[0]), (std::vector<float>{103, 206, 309}));
  // With scan outputs, stopping early gives as many rows as iterations ran (3 of 10).
  auto early = Open(Accumulate(true, 2));
  ASSERT_TRUE(early.ok());
  st = (*early)->run({{"M", I64(10)}, {"x", x}, {"s0", s0}}, &out);
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_EQ(out[1].shape(), (Shape{3, 3}));
  EXPECT_EQ(Values(out[1]), (std::vector<float>{101, 202, 303, 102, 204, 306, 103, 206, 309}));
  EXPECT_EQ(Values(out[0]), (std::vector<float>{103, 206, 309}));
}

// Scan: a running sum over axis 1 of x [2, 4], read backwards (direction 1), scanned outputs
// stacked along axis 1 in reverse too.
TEST(ControlFlow, ScanSlicesAlongAnAxisInEitherDirection) {
  OnnxBuilder body;
  body.input("acc", kF32, {2});
  body.input("col", kF32, {2});
  body.output("acc_out", kF32, {2});
  body.output("seen", kF32, {2});
  body.node("Add", {"acc", "col"}, {"acc_out"});
  body.node("Identity", {"acc_out"}, {"seen"});
  OnnxBuilder b;
  b.input("init", kF32, {2});
  b.input("x", kF32, {2, 4});
  b.output("total", kF32, {2});
  b.output("partial", kF32, {2, 4});
  auto* n = b.node("Scan", {"init", "x"}, {"total", "partial"}, "sum");
  OnnxBuilder::attr_int(n, "num_scan_inputs", 1);
  OnnxBuilder::attr_ints(n, "scan_input_axes", {1});
  OnnxBuilder::attr_ints(n, "scan_input_directions", {1});
  OnnxBuilder::attr_ints(n, "scan_output_axes", {1});
  OnnxBuilder::attr_ints(n, "scan_output_directions", {1});
  OnnxBuilder::attr_graph(n, "body", body);
  auto s = Open(b);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  const std::vector<float> xv = {1, 2, 3, 4, 10, 20, 30, 40}, iv = {0.5f, -0.5f};
  std::vector<Tensor> out;
  Status st = (*s)->run(
      {{"init", Tensor::from_f32({2}, iv.data())}, {"x", Tensor::from_f32({2, 4}, xv.data())}},
      &out);
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(Values(out[0]), (std::vector<float>{10.5f, 99.5f}));
  // Step t reads column 3 - t and writes column 3 - t: each column holds the sum from it to the
  // end.
  EXPECT_EQ(Values(out[1]),
            (std::vector<float>{10.5f, 9.5f, 7.5f, 4.5f, 99.5f, 89.5f, 69.5f, 39.5f}));
}

}  // namespace
}  // namespace dlsys
