// Models at opsets 7-12 upgraded to 13 on import (graph/opset_upgrade.h): each is checked
// against the old opset's definition computed by hand here, not against dlsys's own output.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "graph/onnx_import.h"
#include "graph/session.h"
#include "testing/onnx_builder.h"

namespace dlsys {
namespace {

using testing::OnnxBuilder;

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// x[i] = a small deterministic pattern with distinct values per row.
Tensor pattern(const Shape& shape) {
  Tensor t = Tensor::empty(DType::kF32, shape);
  for (int64_t i = 0; i < t.numel(); ++i)
    t.data_as<float>()[i] = 0.25f * static_cast<float>((i * 7) % 13) - 1.f;
  return t;
}

// Imports `bytes` (expecting opset 13, converted from `want_converted_from`) and runs it.
Tensor run_model(const std::string& bytes, const std::map<std::string, Tensor>& inputs,
                 int want_converted_from) {
  auto g = import_onnx_bytes(bytes, "old.onnx");
  EXPECT_TRUE(g.ok()) << g.status().message();
  if (!g.ok()) return Tensor();
  EXPECT_EQ(g->opset, 13);
  EXPECT_EQ(g->converted_from_opset, want_converted_from);
  auto s = Session::from_graph(std::move(g).value());
  std::vector<Tensor> out;
  Status st = s->run(inputs, &out);
  EXPECT_TRUE(st.ok()) << st.message();
  if (!st.ok()) return Tensor();
  return out[0].clone();
}

Tensor run_model(const std::string& bytes, const Tensor& x, int want_converted_from) {
  return run_model(bytes, {{"x", x}}, want_converted_from);
}

// The opset-1..12 definition: x coerced to 2-D [prod(dims before axis), prod(dims from axis)],
// and each row normalized as a whole. kind: 0 Softmax, 1 LogSoftmax, 2 Hardmax.
std::vector<float> old_softmax(const Tensor& x, int axis, int kind) {
  int64_t cols = 1;
  for (size_t d = axis; d < x.shape().size(); ++d) cols *= x.shape()[d];
  int64_t rows = x.numel() / cols;
  std::vector<float> y(x.numel());
  const float* p = x.data_as<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = p + r * cols;
    double mx = row[0], sum = 0;
    int64_t arg = 0;
    for (int64_t c = 0; c < cols; ++c)
      if (row[c] > mx) mx = row[c], arg = c;
    for (int64_t c = 0; c < cols; ++c) sum += std::exp(row[c] - mx);
    for (int64_t c = 0; c < cols; ++c) {
      float v = kind == 0   ? static_cast<float>(std::exp(row[c] - mx) / sum)
                : kind == 1 ? static_cast<float>(row[c] - mx - std::log(sum))
                            : (c == arg ? 1.f : 0.f);
      y[r * cols + c] = v;
    }
  }
  return y;
}

void expect_near(const Tensor& got, const std::vector<float>& want, const Shape& shape) {
  ASSERT_EQ(got.shape(), shape);
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size()));
  for (int64_t i = 0; i < got.numel(); ++i)
    EXPECT_NEAR(got.data_as<float>()[i], want[i], 1e-5) << "element " << i;
}

// The known trap: ONNX 1.12's converter asserts on Softmax 12->13 when the input's shape is
// unknown. Here the input comes from a Reshape to a runtime shape of unknown length, so not even
// its rank is known, and the default axis (1) is not the last one.
TEST(OpsetUpgrade, SoftmaxFamilyWithUnknownShapeKeepsTheOldAxisMeaning) {
  const char* ops[] = {"Softmax", "LogSoftmax", "Hardmax"};
  for (int kind = 0; kind < 3; ++kind) {
    OnnxBuilder b(11);
    b.input("x", onnx::TensorProto::FLOAT, {-1, 12}, "batch");
    b.input("shape", onnx::TensorProto::INT64, {-1}, "rank");
    b.output("y", onnx::TensorProto::FLOAT, {-1, -1, -1}, "d");
    b.node("Reshape", {"x", "shape"}, {"t"}, "reshape");
    b.node(ops[kind], {"t"}, {"y"}, "sm");
    SCOPED_TRACE(ops[kind]);
    Tensor x = pattern({2, 12});
    Tensor shape = Tensor::empty(DType::kI64, {3});
    int64_t dims[] = {2, 3, 4};
    for (int i = 0; i < 3; ++i) shape.data_as<int64_t>()[i] = dims[i];
    Tensor x3 = pattern({2, 3, 4});
    expect_near(run_model(b.bytes(), {{"x", x}, {"shape", shape}}, 11), old_softmax(x3, 1, kind),
                {2, 3, 4});
  }
}

// Dynamic (symbolic) dims with a known rank: a non-last axis keeps its old meaning (the
// converter treats Hardmax as unchanged, which would be wrong), the last axis maps to -1.
TEST(OpsetUpgrade, SoftmaxFamilyWithSymbolicDims) {
  const char* ops[] = {"Softmax", "LogSoftmax", "Hardmax"};
  for (int kind = 0; kind < 3; ++kind)
    for (int axis : {0, 1, 2}) {
      OnnxBuilder b(12);
      b.input("x", onnx::TensorProto::FLOAT, {-1, 3, 4}, "batch");
      b.output("y", onnx::TensorProto::FLOAT, {-1, 3, 4}, "batch");
      OnnxBuilder::attr_int(b.node(ops[kind], {"x"}, {"y"}, "sm"), "axis", axis);
      SCOPED_TRACE(std::string(ops[kind]) + " axis " + std::to_string(axis));
      Tensor x = pattern({2, 3, 4});
      expect_near(run_model(b.bytes(), x, 12), old_softmax(x, axis, kind), {2, 3, 4});
    }
}

// Clip took min and max as attributes until opset 11.
TEST(OpsetUpgrade, ClipWithAttributesAtOpset10) {
  OnnxBuilder b(10);
  b.input("x", onnx::TensorProto::FLOAT, {-1, 5});
  b.output("y", onnx::TensorProto::FLOAT, {-1, 5});
  auto* n = b.node("Clip", {"x"}, {"y"}, "clip");
  OnnxBuilder::attr_float(n, "min", -0.5f);
  OnnxBuilder::attr_float(n, "max", 0.75f);
  Tensor x = pattern({2, 5});
  std::vector<float> want(10);
  for (int i = 0; i < 10; ++i) want[i] = std::min(0.75f, std::max(-0.5f, x.data_as<float>()[i]));
  expect_near(run_model(b.bytes(), x, 10), want, {2, 5});
}

// Upsample took scales as an attribute at opset 7 and became Resize at 10 (nearest: each output
// pixel copies input pixel (i / 2, j / 2) at scale 2).
TEST(OpsetUpgrade, UpsampleWithScalesAttributeAtOpset7) {
  OnnxBuilder b(7);
  b.input("x", onnx::TensorProto::FLOAT, {1, 1, 2, 3});
  b.output("y", onnx::TensorProto::FLOAT, {1, 1, 4, 6});
  auto* n = b.node("Upsample", {"x"}, {"y"}, "up");
  auto* a = n->add_attribute();
  a->set_name("scales");
  a->set_type(onnx::AttributeProto::FLOATS);
  for (float f : {1.f, 1.f, 2.f, 2.f}) a->add_floats(f);
  Tensor x = pattern({1, 1, 2, 3});
  std::vector<float> want(24);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 6; ++j) want[i * 6 + j] = x.data_as<float>()[(i / 2) * 3 + j / 2];
  expect_near(run_model(b.bytes(), x, 7), want, {1, 1, 4, 6});
}

// Squeeze took axes as an attribute until opset 13.
TEST(OpsetUpgrade, SqueezeAxesAttributeAtOpset11) {
  OnnxBuilder b(11);
  b.input("x", onnx::TensorProto::FLOAT, {2, 1, 3});
  b.output("y", onnx::TensorProto::FLOAT, {2, 3});
  OnnxBuilder::attr_ints(b.node("Squeeze", {"x"}, {"y"}, "sq"), "axes", {1});
  Tensor x = pattern({2, 1, 3});
  std::vector<float> want(x.data_as<float>(), x.data_as<float>() + 6);
  expect_near(run_model(b.bytes(), x, 11), want, {2, 3});
}

// Exporters leave custom domains in opset_import that no node uses: they do not block a model.
TEST(OpsetUpgrade, UnusedCustomDomainDoesNotBlock) {
  OnnxBuilder b(11);
  b.add_opset("com.microsoft", 1);
  b.add_opset("ai.onnx.ml", 2);
  b.input("x", onnx::TensorProto::FLOAT, {2, 3});
  b.output("y", onnx::TensorProto::FLOAT, {2, 3});
  OnnxBuilder::attr_int(b.node("Softmax", {"x"}, {"y"}, "sm"), "axis", 1);
  Tensor x = pattern({2, 3});
  expect_near(run_model(b.bytes(), x, 11), old_softmax(x, 1, 0), {2, 3});
}

// A node of another domain is reported as an unsupported op (the converter itself would throw a
// bare "unordered_map::at" on it).
TEST(OpsetUpgrade, UsedCustomDomainIsAnUnsupportedOp) {
  OnnxBuilder b(11);
  b.add_opset("com.microsoft", 1);
  b.input("x", onnx::TensorProto::FLOAT, {1, 3});
  b.output("y", onnx::TensorProto::FLOAT, {3});
  OnnxBuilder::attr_ints(b.node("Squeeze", {"x"}, {"s"}, "sq"), "axes", {0});
  b.node("Gelu", {"s"}, {"y"}, "the_gelu", "com.microsoft");
  auto r = import_onnx_bytes(b.bytes(), "ms.onnx");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(contains(r.status().message(),
                       "1 unsupported op: com.microsoft.Gelu (node "
                       "'the_gelu', com.microsoft opset 1)"))
      << r.status().message();
}

// An older opset whose ops did not change is relabelled, not converted, and still says so.
TEST(OpsetUpgrade, UnchangedOpsAreRelabelled) {
  OnnxBuilder b(9);
  b.input("x", onnx::TensorProto::FLOAT, {1, 2, 3, 3});
  b.output("y", onnx::TensorProto::FLOAT, {1, 2, 1, 1});
  b.node("GlobalAveragePool", {"x"}, {"y"}, "gap");
  auto g = import_onnx_bytes(b.bytes(), "gap.onnx");
  ASSERT_TRUE(g.ok()) << g.status().message();
  EXPECT_EQ(g->opset, 13);
  EXPECT_EQ(g->converted_from_opset, 9);
}

// BatchNormalization lost `spatial` at opset 9; the converter refuses spatial = 0. The error
// names the node, the op and both opsets, and the process survives.
TEST(OpsetUpgrade, UnconvertibleNodeIsNamed) {
  OnnxBuilder b(8);
  b.input("x", onnx::TensorProto::FLOAT, {1, 2, 3});
  b.output("y", onnx::TensorProto::FLOAT, {1, 2, 3});
  for (const char* p : {"scale", "bias", "mean", "var"}) b.initializer_f32(p, {2}, {1.f, 1.f});
  auto* n = b.node("BatchNormalization", {"x", "scale", "bias", "mean", "var"}, {"y"}, "the_bn");
  OnnxBuilder::attr_int(n, "spatial", 0);
  auto r = import_onnx_bytes(b.bytes(), "bn8.onnx");
  ASSERT_FALSE(r.ok());
  const std::string& m = r.status().message();
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported) << m;
  EXPECT_TRUE(contains(m, "node 'the_bn' (BatchNormalization)")) << m;
  EXPECT_TRUE(contains(m, "from opset 8 to opset 13")) << m;
  // An unnamed node is named by its place in the file as written, even after a Softmax before
  // it was rewritten into four nodes.
  OnnxBuilder c(8);
  c.input("x", onnx::TensorProto::FLOAT, {1, 2, 3});
  c.output("y", onnx::TensorProto::FLOAT, {1, 2, 3});
  for (const char* p : {"scale", "bias", "mean", "var"}) c.initializer_f32(p, {2}, {1.f, 1.f});
  c.node("Softmax", {"x"}, {"s"}, "");
  auto* bn = c.node("BatchNormalization", {"s", "scale", "bias", "mean", "var"}, {"y"}, "");
  OnnxBuilder::attr_int(bn, "spatial", 0);
  auto r2 = import_onnx_bytes(c.bytes(), "bn8.onnx");
  ASSERT_FALSE(r2.ok());
  EXPECT_TRUE(contains(r2.status().message(), "node 'BatchNormalization_1'"))
      << r2.status().message();
}

// Opsets below 7 are not converted: a changed op there is refused with the supported ranges.
TEST(OpsetUpgrade, BelowSevenIsRefused) {
  OnnxBuilder b(6);
  b.input("x", onnx::TensorProto::FLOAT, {1, 3});
  b.output("y", onnx::TensorProto::FLOAT, {3});
  OnnxBuilder::attr_ints(b.node("Squeeze", {"x"}, {"y"}, "sq"), "axes", {0});
  auto r = import_onnx_bytes(b.bytes(), "old.onnx");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(contains(r.status().message(), "opset 6")) << r.status().message();
  EXPECT_TRUE(contains(r.status().message(), "Squeeze")) << r.status().message();
  EXPECT_TRUE(contains(r.status().message(), "converts opsets 7 to 12")) << r.status().message();
}

// An opset-9 chain through ops the converter rewrites at every step: Upsample (to Resize at 10,
// roi at 11), Slice (attributes to inputs at 10), Pad and Clip (at 11), TopK (k an input at 10),
// Softmax (axis at 13).
OnnxBuilder opset9_chain() {
  OnnxBuilder b(9);
  b.input("x", onnx::TensorProto::FLOAT, {1, 2, 4, 4});
  b.output("y", onnx::TensorProto::FLOAT, {1, 2, 8, 3});
  b.initializer_f32("scales", {4}, {1.f, 1.f, 2.f, 2.f});
  b.node("Upsample", {"x", "scales"}, {"u"}, "up");
  auto* sl = b.node("Slice", {"u"}, {"s"}, "slice");
  OnnxBuilder::attr_ints(sl, "starts", {0});
  OnnxBuilder::attr_ints(sl, "ends", {6});
  OnnxBuilder::attr_ints(sl, "axes", {3});
  OnnxBuilder::attr_ints(b.node("Pad", {"s"}, {"p"}, "pad"), "pads", {0, 0, 0, 1, 0, 0, 0, 1});
  auto* clip = b.node("Clip", {"p"}, {"c"}, "clip");
  OnnxBuilder::attr_float(clip, "min", -0.5f);
  OnnxBuilder::attr_float(clip, "max", 0.5f);
  OnnxBuilder::attr_int(b.node("TopK", {"c"}, {"tv", "ti"}, "topk"), "k", 3);
  b.node("Softmax", {"tv"}, {"y"}, "sm");
  return b;
}

TEST(OpsetUpgrade, Opset9ChainConvertsAndRuns) {
  Tensor x = pattern({1, 2, 4, 4});
  Tensor y = run_model(opset9_chain().bytes(), x, 9);
  ASSERT_EQ(y.shape(), (Shape{1, 2, 8, 3}));
  // The old Softmax axis 1 normalizes each batch row (2 * 8 * 3 values) as a whole.
  double sum = 0;
  for (int64_t i = 0; i < y.numel(); ++i) sum += y.data_as<float>()[i];
  EXPECT_NEAR(sum, 1.0, 1e-5);
}

// Conversion is not a crash path: every truncation and many byte flips of old models the
// converter rewrites give a result or a clear error (graph_test runs under ASan). A flip once
// renamed the graph output to one nothing defines, which crashed libonnx's converter.
TEST(OpsetUpgrade, DamagedOldModelsFailCleanly) {
  OnnxBuilder b(11);
  b.input("x", onnx::TensorProto::FLOAT, {-1, 3, 4});
  b.output("y", onnx::TensorProto::FLOAT, {-1, 3, 4});
  b.initializer_f32("lo", {}, {-1.f});
  b.node("Unsqueeze", {"x"}, {"u"}, "unsq");
  OnnxBuilder::attr_ints(b.model().mutable_graph()->mutable_node(0), "axes", {0});
  OnnxBuilder::attr_ints(b.node("Squeeze", {"u"}, {"s"}, "sq"), "axes", {0});
  b.node("Softmax", {"s"}, {"y"}, "sm");
  for (const std::string& good : {b.bytes(), opset9_chain().bytes()}) {
    ASSERT_TRUE(import_onnx_bytes(good, "good.onnx").ok());
    for (size_t cut = 1; cut < good.size(); cut += 2) {
      auto r = import_onnx_bytes(good.substr(0, cut), "cut.onnx");
      if (!r.ok()) {
        EXPECT_TRUE(contains(r.status().message(), "cut.onnx")) << r.status().message();
      }
    }
    uint32_t seed = 11;
    for (int trial = 0; trial < 1500; ++trial) {
      std::string bad = good;
      seed = seed * 1664525u + 1013904223u;
      bad[(seed >> 8) % bad.size()] ^= static_cast<char>(1 + (seed >> 24) % 255);
      auto r = import_onnx_bytes(bad, "flip.onnx");
      if (!r.ok()) {
        EXPECT_TRUE(contains(r.status().message(), "flip.onnx")) << r.status().message();
      }
    }
  }
}

}  // namespace
}  // namespace dlsys
