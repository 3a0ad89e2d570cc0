// Malformed and unsupported models, and wrong inputs: every case is a clear error, never a crash
// (this binary also runs under ASan/UBSan in `make test`).
#include <gtest/gtest.h>

#include <random>

#include "graph/onnx_import.h"
#include "graph/session.h"
#include "testing/onnx_builder.h"

namespace dlsys {
namespace {

using testing::OnnxBuilder;

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

TEST(ImportErrors, EmptyTextAndRandomBytesAreNotOnnx) {
  auto e = import_onnx_bytes("", "empty.onnx");
  ASSERT_FALSE(e.ok());
  EXPECT_TRUE(contains(e.status().message(), "empty.onnx")) << e.status().message();
  auto t = import_onnx_bytes("this is a text file, not a model\n", "notes.txt");
  ASSERT_FALSE(t.ok());
  EXPECT_TRUE(contains(t.status().message(), "not an ONNX model")) << t.status().message();
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::string noise(1 + rng() % 4096, '\0');
    for (char& c : noise) c = static_cast<char>(rng());
    auto r = import_onnx_bytes(noise, "noise.onnx");
    EXPECT_FALSE(r.ok());
    EXPECT_TRUE(contains(r.status().message(), "noise.onnx")) << r.status().message();
  }
}

TEST(ImportErrors, TruncatedModelsFailCleanly) {
  std::string good = testing::tiny_mlp().bytes();
  ASSERT_TRUE(import_onnx_bytes(good, "mlp.onnx").ok());
  for (size_t cut = 1; cut < good.size(); cut += 3) {
    auto r = import_onnx_bytes(good.substr(0, cut), "mlp.onnx");
    EXPECT_FALSE(r.ok()) << "a model cut at byte " << cut << " was accepted";
  }
}

TEST(ImportErrors, MissingFileSaysWhich) {
  auto r = import_onnx_file("/nonexistent/dir/model.onnx");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kIOError);
  EXPECT_TRUE(contains(r.status().message(), "/nonexistent/dir/model.onnx"));
}

TEST(ImportErrors, OpsetOutsideRangeNamesTheOpsetAndTheFix) {
  auto b = testing::tiny_mlp(18);
  auto r = import_onnx_bytes(b.bytes(), "new.onnx");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
  EXPECT_TRUE(contains(r.status().message(), "opset 18")) << r.status().message();
  EXPECT_TRUE(contains(r.status().message(), "13 to 17"));
}

// A model that declares only another domain (the ONNX training cases declare only
// ai.onnx.preview.training) runs when it has no default-domain node, and a default-domain node
// without the default domain's opset is refused, naming it.
TEST(ImportErrors, ModelOfAnotherDomainOnlyRunsButDefaultOpsNeedTheirOpset) {
  auto build = [](bool with_relu) {
    testing::OnnxBuilder b;
    b.model().mutable_opset_import(0)->set_domain("ai.onnx.preview.training");
    b.model().mutable_opset_import(0)->set_version(1);
    b.input("R", onnx::TensorProto::FLOAT, {});
    b.input("T", onnx::TensorProto::INT64, {});
    for (const char* n : {"X", "G", "V"}) b.input(n, onnx::TensorProto::FLOAT, {2});
    b.output("X_new", onnx::TensorProto::FLOAT, {2});
    b.output("V_new", onnx::TensorProto::FLOAT, {2});
    auto* m = b.node("Momentum", {"R", "T", "X", "G", "V"}, {"X_new", "V_new"}, "m");
    m->set_domain("ai.onnx.preview.training");
    testing::OnnxBuilder::attr_float(m, "alpha", 0.5f);
    testing::OnnxBuilder::attr_float(m, "beta", 1.f);
    testing::OnnxBuilder::attr_string(m, "mode", "standard");
    testing::OnnxBuilder::attr_float(m, "norm_coefficient", 0.f);
    if (with_relu) {
      b.output("Y", onnx::TensorProto::FLOAT, {2});
      b.node("Relu", {"X"}, {"Y"}, "relu");
    }
    return b;
  };
  auto g = import_onnx_bytes(build(false).bytes(), "momentum.onnx");
  ASSERT_TRUE(g.ok()) << g.status().message();
  auto s = Session::from_graph(std::move(g).value());
  std::vector<Tensor> out;
  Tensor t = Tensor::empty(DType::kI64, {});
  t.data_as<int64_t>()[0] = 1;
  ASSERT_TRUE(s->run({{"R", Tensor::from_f32({}, std::vector<float>{0.1f}.data())},
                      {"T", t},
                      {"X", Tensor::from_f32({2}, std::vector<float>{1.f, 2.f}.data())},
                      {"G", Tensor::from_f32({2}, std::vector<float>{-1.f, 4.f}.data())},
                      {"V", Tensor::from_f32({2}, std::vector<float>{2.f, 0.f}.data())}},
                     &out)
                  .ok());
  // V_new = 0.5 V + G, X_new = X - 0.1 V_new.
  EXPECT_FLOAT_EQ(out[1].data_as<float>()[0], 0.f);
  EXPECT_FLOAT_EQ(out[1].data_as<float>()[1], 4.f);
  EXPECT_FLOAT_EQ(out[0].data_as<float>()[0], 1.f);
  EXPECT_FLOAT_EQ(out[0].data_as<float>()[1], 1.6f);
  auto bad = import_onnx_bytes(build(true).bytes(), "momentum_relu.onnx");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(contains(bad.status().message(), "opset 0 of the default ONNX domain"))
      << bad.status().message();
}

TEST(ImportErrors, OlderOpsetIsUpgradedOrRefused) {
  // GlobalAveragePool has not changed since opset 1, so an opset-11 model using it means the same
  // at 13; Squeeze changed at 13 (axes became an input): at opset 11 ONNX's version converter
  // upgrades it, at opset 6 (below what dlsys converts) the model is refused. The ONNX schema
  // registry decides which ops changed. (opset_upgrade_test.cpp checks the converted results.)
  OnnxBuilder b(11);
  b.input("x", onnx::TensorProto::FLOAT, {1, 2, 3, 3});
  b.output("y", onnx::TensorProto::FLOAT, {1, 2, 1, 1});
  b.node("GlobalAveragePool", {"x"}, {"y"}, "gap");
  auto ok = import_onnx_bytes(b.bytes(), "gap.onnx");
  EXPECT_TRUE(ok.ok()) << ok.status().message();
  for (int opset : {11, 6}) {
    OnnxBuilder c(opset);
    c.input("x", onnx::TensorProto::FLOAT, {1, 3});
    c.output("y", onnx::TensorProto::FLOAT, {3});
    auto* s = c.node("Squeeze", {"x"}, {"y"}, "sq");
    OnnxBuilder::attr_ints(s, "axes", {0});
    auto r = import_onnx_bytes(c.bytes(), "old.onnx");
    if (opset == 11) {
      EXPECT_TRUE(r.ok()) << r.status().message();
      continue;
    }
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(contains(r.status().message(), "opset 6")) << r.status().message();
    EXPECT_TRUE(contains(r.status().message(), "Squeeze")) << r.status().message();
  }
}

TEST(ImportErrors, EveryUnsupportedOpIsListedWithItsNode) {
  // Ops from domains dlsys does not implement, so the test does not go stale as ai.onnx coverage
  // grows (it once used Tan and Atan, which are now supported).
  OnnxBuilder b(17);
  b.add_opset("com.example", 1);
  b.add_opset("org.other", 1);
  b.input("x", onnx::TensorProto::FLOAT, {4});
  b.output("z", onnx::TensorProto::FLOAT, {4});
  b.node("Relu", {"x"}, {"a"}, "ok_relu");
  b.node("Warp", {"a"}, {"b"}, "the_warp", "org.other");
  b.node("FancyOp", {"b"}, {"c"}, "custom1", "com.example");
  b.node("Bend", {"c"}, {"z"}, "the_bend", "org.other");
  auto r = import_onnx_bytes(b.bytes(), "m.onnx");
  ASSERT_FALSE(r.ok());
  const std::string& m = r.status().message();
  EXPECT_TRUE(contains(m, "3 unsupported ops")) << m;
  // Each with its domain and the opset the model declares for it.
  EXPECT_TRUE(contains(m, "org.other.Warp (node 'the_warp', org.other opset 1)")) << m;
  EXPECT_TRUE(contains(m, "com.example.FancyOp (node 'custom1', com.example opset 1)")) << m;
  EXPECT_TRUE(contains(m, "org.other.Bend (node 'the_bend', org.other opset 1)")) << m;
  EXPECT_FALSE(contains(m, "ok_relu")) << m;
}

TEST(ImportErrors, CheckerRejectsBrokenGraphs) {
  OnnxBuilder b(17);
  b.input("x", onnx::TensorProto::FLOAT, {4});
  b.output("y", onnx::TensorProto::FLOAT, {4});
  b.node("Relu", {"missing_value"}, {"y"}, "r");
  auto r = import_onnx_bytes(b.bytes(), "broken.onnx");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(contains(r.status().message(), "broken.onnx")) << r.status().message();
}

TEST(InputErrors, WrongNameDtypeAndShapeSayExpectedAndGot) {
  auto g = import_onnx_bytes(testing::tiny_mlp().bytes(), "mlp.onnx");
  ASSERT_TRUE(g.ok()) << g.status().message();
  auto s = Session::from_graph(std::move(g).value());
  std::vector<Tensor> out;
  Tensor good = Tensor::zeros(DType::kF32, {2, 4});

  Status wrong_name = s->run({{"X", good}}, &out);
  ASSERT_FALSE(wrong_name.ok());
  EXPECT_TRUE(contains(wrong_name.message(), "no input 'X'")) << wrong_name.message();
  EXPECT_TRUE(contains(wrong_name.message(), "x (f32 [batch, 4])")) << wrong_name.message();

  Status missing = s->run({}, &out);
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(contains(missing.message(), "input 'x'")) << missing.message();

  Status wrong_dtype = s->run({{"x", Tensor::zeros(DType::kI64, {2, 4})}}, &out);
  ASSERT_FALSE(wrong_dtype.ok());
  EXPECT_TRUE(contains(wrong_dtype.message(), "expected dtype f32, got i64"))
      << wrong_dtype.message();

  Status wrong_shape = s->run({{"x", Tensor::zeros(DType::kF32, {2, 5})}}, &out);
  ASSERT_FALSE(wrong_shape.ok());
  EXPECT_TRUE(contains(wrong_shape.message(), "expected shape [batch, 4], got [2, 5]"))
      << wrong_shape.message();

  Status wrong_rank = s->run({{"x", Tensor::zeros(DType::kF32, {8})}}, &out);
  ASSERT_FALSE(wrong_rank.ok());
  EXPECT_TRUE(contains(wrong_rank.message(), "rank")) << wrong_rank.message();

  ASSERT_TRUE(s->run({{"x", good}}, &out).ok());
  EXPECT_EQ(out[0].shape(), (Shape{2, 3}));
}

TEST(InputErrors, ShapeErrorsInsideTheGraphNameTheNode) {
  OnnxBuilder b(17);
  b.input("x", onnx::TensorProto::FLOAT, {-1, 6});
  b.output("y", onnx::TensorProto::FLOAT, {-1, 4});
  b.initializer_i64("shape", {2}, {-1, 4});
  b.node("Reshape", {"x", "shape"}, {"y"}, "bad_reshape");
  auto g = import_onnx_bytes(b.bytes(), "r.onnx");
  ASSERT_TRUE(g.ok()) << g.status().message();
  auto s = Session::from_graph(std::move(g).value());
  std::vector<Tensor> out;
  ASSERT_TRUE(s->run({{"x", Tensor::zeros(DType::kF32, {2, 6})}}, &out).ok());  // 12 = 3 x 4
  Status st =
      s->run({{"x", Tensor::zeros(DType::kF32, {1, 6})}}, &out);  // 6 is not a multiple of 4
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(contains(st.message(), "node 'bad_reshape' (Reshape)")) << st.message();
}

}  // namespace
}  // namespace dlsys
