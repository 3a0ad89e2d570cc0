// Post-training quantization: the QDQ model dlsys writes passes the ONNX checker, runs on int8
// kernels after optimization (QConv, int8 MaxPool), and computes what the same QDQ graph computes
// op by op (QuantizeLinear/DequantizeLinear + f32 kernels), close to the float model.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <random>

#include "graph/onnx_import.h"
#include "graph/quantize/quantize.h"
#include "graph/session.h"
#include "ops/dnnl_util.h"
#include "tensor/npy.h"
#include "testing/onnx_builder.h"

namespace dlsys {
namespace {

using testing::OnnxBuilder;
constexpr int kF = onnx::TensorProto::FLOAT;

// A small residual CNN: Conv-Relu, MaxPool, a residual block (two convs, the second with the
// identity added), a 1x1 conv, global pool and a Gemm classifier.
OnnxBuilder residual_cnn() {
  OnnxBuilder b;
  b.input("x", kF, {-1, 3, 16, 16});
  b.output("y", kF, {-1, 10});
  b.random_f32("w0", {8, 3, 3, 3}, 0.4f, 1);
  b.random_f32("b0", {8}, 0.1f, 2);
  b.random_f32("w1", {8, 8, 3, 3}, 0.2f, 3);
  b.random_f32("b1", {8}, 0.1f, 4);
  b.random_f32("w2", {8, 8, 3, 3}, 0.2f, 5);
  b.random_f32("b2", {8}, 0.1f, 6);
  b.random_f32("w3", {16, 8, 1, 1}, 0.4f, 7);
  b.random_f32("wf", {10, 16}, 0.5f, 8);
  b.random_f32("bf", {10}, 0.1f, 9);
  auto conv = [&](const std::string& x, const std::string& w, const std::string& bias,
                  const std::string& y, int64_t k) {
    std::vector<std::string> in = {x, w};
    if (!bias.empty()) in.push_back(bias);
    auto* n = b.node("Conv", in, {y}, y + "_conv");
    OnnxBuilder::attr_ints(
        n, "pads", k == 3 ? std::vector<int64_t>{1, 1, 1, 1} : std::vector<int64_t>{0, 0, 0, 0});
  };
  conv("x", "w0", "b0", "c0", 3);
  b.node("Relu", {"c0"}, {"r0"}, "relu0");
  auto* mp = b.node("MaxPool", {"r0"}, {"p0"}, "pool0");
  OnnxBuilder::attr_ints(mp, "kernel_shape", {2, 2});
  OnnxBuilder::attr_ints(mp, "strides", {2, 2});
  conv("p0", "w1", "b1", "c1", 3);
  b.node("Relu", {"c1"}, {"r1"}, "relu1");
  conv("r1", "w2", "b2", "c2", 3);
  b.node("Add", {"c2", "p0"}, {"s2"}, "residual");
  b.node("Relu", {"s2"}, {"r2"}, "relu2");
  conv("r2", "w3", "", "c3", 1);
  b.node("GlobalAveragePool", {"c3"}, {"g3"}, "gap");
  b.node("Flatten", {"g3"}, {"f3"}, "flatten");
  auto* gemm = b.node("Gemm", {"f3", "wf", "bf"}, {"y"}, "fc");
  OnnxBuilder::attr_int(gemm, "transB", 1);
  return b;
}

Tensor random_images(int64_t n, uint32_t seed) {
  Tensor t = Tensor::empty(DType::kF32, {n, 3, 16, 16});
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = d(rng);
  return t;
}

class QuantizeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("dlsys_quantize_test_" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    float_path_ = (dir_ / "cnn.onnx").string();
    ASSERT_TRUE(write_file_atomic(float_path_, residual_cnn().bytes()).ok());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
  std::string float_path_;
};

int count_op(const Graph& g, const std::string& op) {
  int n = 0;
  for (const Node& node : g.nodes) n += node.op_type == op;
  return n;
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (int64_t i = 0; i < t.numel(); ++i) m = std::max(m, std::fabs(t.get_f64(i)));
  return m;
}

TEST_F(QuantizeTest, StaticQdqModelRunsOnInt8KernelsAndMatchesReference) {
  std::string out = (dir_ / "cnn.int8.onnx").string();
  QuantizeOptions o;
  auto rep = quantize_model(float_path_, random_images(32, 1), out, o);
  ASSERT_TRUE(rep.ok()) << rep.status().message();
  EXPECT_EQ(rep.value().weights_quantized, 5);  // 4 convs + the Gemm
  EXPECT_EQ(rep.value().calibration_samples, 32);
  // Every conv/gemm input, plus the MaxPool input that shares the pool output's scale.
  EXPECT_GE(rep.value().activations_quantized, 5);

  // The written file is a QDQ model that the ONNX checker accepts (import runs it).
  auto g = import_onnx_file(out);
  ASSERT_TRUE(g.ok()) << g.status().message();
  EXPECT_GT(count_op(g.value(), "QuantizeLinear"), 0);
  EXPECT_GT(count_op(g.value(), "DequantizeLinear"), 0);
  for (const auto& [name, t] : g.value().initializers)
    if (name == "w0_quantized") {
      EXPECT_EQ(t.dtype(), DType::kI8);
    }

  // Optimized: every conv runs as QConv, the pool on int8, the Gemm (transposed weight) as QMatMul.
  auto opt = Session::from_graph(g.value());
  if (!int8_kernels_exact()) {
    // No VNNI here: oneDNN's int8 sums would saturate, so the QDQ graph runs op by op.
    EXPECT_EQ(count_op(opt->graph(), "QConv") + count_op(opt->graph(), "QMatMul"), 0);
  } else {
    EXPECT_EQ(count_op(opt->graph(), "QConv"), 4);
    EXPECT_EQ(count_op(opt->graph(), "QMatMul"), 1);
    EXPECT_EQ(count_op(opt->graph(), "Gemm") + count_op(opt->graph(), "FusedGemm"), 0);
    EXPECT_EQ(count_op(opt->graph(), "Conv") + count_op(opt->graph(), "FusedConv"), 0);
    bool int8_pool = false;
    for (const auto& line : opt->optimize_report().rewrites)
      int8_pool =
          int8_pool || line.find("MaxPool 'pool0' runs on the quantized") != std::string::npos;
    EXPECT_TRUE(int8_pool);
  }

  // Reference: the same QDQ graph op by op (quantize, dequantize, f32 conv).
  SessionOptions plain;
  plain.optimize = false;
  auto ref = Session::from_graph(g.value(), plain);
  auto flt = Session::open(float_path_).value();
  Tensor x = random_images(16, 99);
  std::vector<Tensor> got, want, fl;
  ASSERT_TRUE(opt->run({{"x", x}}, &got).ok());
  Tensor got0 = got[0].clone();
  ASSERT_TRUE(ref->run({{"x", x}}, &want).ok());
  ASSERT_TRUE(flt->run({{"x", x}}, &fl).ok());
  double scale = max_abs(want[0]), err = 0, ferr = 0;
  for (int64_t i = 0; i < got0.numel(); ++i) {
    err = std::max(err, std::fabs(got0.get_f64(i) - want[0].get_f64(i)));
    ferr = std::max(ferr, std::fabs(got0.get_f64(i) - fl[0].get_f64(i)));
  }
  // int32 accumulation vs f32 on dequantized values differ only where a requantization rounds
  // the other way (one step of a tensor's scale); a wrong scale or bias would be far off.
  EXPECT_LT(err, 0.02 * scale) << "int8 kernels vs the QDQ graph op by op";
  EXPECT_LT(ferr, 0.1 * max_abs(fl[0])) << "int8 vs the float model";

  auto acc = compare_models(float_path_, out, x, 8, 0);
  ASSERT_TRUE(acc.ok()) << acc.status().message();
  EXPECT_EQ(acc.value().samples, 16);
  EXPECT_GE(acc.value().top1_agreement, 0.8);
  EXPECT_LT(acc.value().max_rel_error, 0.1);
}

// x[..., 64] -> MatMul 64x96 + bias -> Relu -> MatMul 96x10 (`lead`: x's dims before the 64).
OnnxBuilder two_layer_mlp(std::vector<int64_t> lead) {
  OnnxBuilder b;
  std::vector<int64_t> x = lead, y = lead;
  x.push_back(64);
  y.push_back(10);
  b.input("x", kF, x);
  b.output("y", kF, y);
  b.random_f32("w1", {64, 96}, 0.3f, 11);
  b.random_f32("b1", {96}, 0.1f, 12);
  b.random_f32("w2", {96, 10}, 0.3f, 13);
  b.node("MatMul", {"x", "w1"}, {"h"}, "fc1");
  b.node("Add", {"h", "b1"}, {"hb"}, "bias1");
  b.node("Relu", {"hb"}, {"r"}, "relu1");
  b.node("MatMul", {"r", "w2"}, {"y"}, "fc2");
  return b;
}

TEST_F(QuantizeTest, DynamicMatMulQuantizationRunsInt8AndStaysClose) {
  OnnxBuilder b = two_layer_mlp({-1});
  std::string in = (dir_ / "mlp.onnx").string(), out = (dir_ / "mlp.dyn.onnx").string();
  ASSERT_TRUE(write_file_atomic(in, b.bytes()).ok());
  QuantizeOptions o;
  o.dynamic = true;
  auto rep = quantize_model(in, Tensor(), out, o);
  ASSERT_TRUE(rep.ok()) << rep.status().message();
  EXPECT_EQ(rep.value().weights_quantized, 2);
  EXPECT_EQ(rep.value().activations_quantized, 0);
  auto g = import_onnx_file(out);
  ASSERT_TRUE(g.ok()) << g.status().message();
  auto opt = Session::from_graph(g.value());
  // Bias and Relu fuse through the dequantized weight; both MatMuls run on int8 (with VNNI).
  EXPECT_EQ(count_op(opt->graph(), "QMatMulDynamic"), int8_kernels_exact() ? 2 : 0);
  if (int8_kernels_exact())
    EXPECT_EQ(count_op(opt->graph(), "Add") + count_op(opt->graph(), "Relu"), 0);
  auto flt = Session::open(in).value();
  Tensor x = Tensor::empty(DType::kF32, {32, 64});
  std::mt19937 rng(5);
  std::normal_distribution<float> d(0.f, 1.f);
  for (int64_t i = 0; i < x.numel(); ++i) x.data_as<float>()[i] = d(rng);
  std::vector<Tensor> got, want;
  ASSERT_TRUE(opt->run({{"x", x}}, &got).ok());
  ASSERT_TRUE(flt->run({{"x", x}}, &want).ok());
  double err = 0;
  for (int64_t i = 0; i < got[0].numel(); ++i)
    err = std::max(err, std::fabs(got[0].get_f64(i) - want[0].get_f64(i)));
  // Two 8-bit quantizations per layer: about 1% of the output's scale, far below a wrong scale.
  EXPECT_LT(err, 0.03 * max_abs(want[0]));
  EXPECT_GT(err, 0.0);  // it did quantize
}

TEST_F(QuantizeTest, StaticMatMulQuantizationRunsOnInt8KernelsAndMatchesReference) {
  // x[batch, 5, 64] through the two-layer MLP: both MatMuls become QMatMul, the first
  // requantizing its output for the second (u8 after the Relu).
  OnnxBuilder b = two_layer_mlp({-1, 5});
  std::string in = (dir_ / "mlp.onnx").string(), out = (dir_ / "mlp.int8.onnx").string();
  ASSERT_TRUE(write_file_atomic(in, b.bytes()).ok());
  auto normal = [](Shape s, uint32_t seed) {
    Tensor t = Tensor::empty(DType::kF32, s);
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.f, 1.f);
    for (int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = d(rng);
    return t;
  };
  QuantizeOptions o;
  auto rep = quantize_model(in, normal({32, 5, 64}, 4), out, o);
  ASSERT_TRUE(rep.ok()) << rep.status().message();
  EXPECT_EQ(rep.value().weights_quantized, 2);
  auto g = import_onnx_file(out);
  ASSERT_TRUE(g.ok()) << g.status().message();
  auto opt = Session::from_graph(g.value());
  if (!int8_kernels_exact()) {
    EXPECT_EQ(count_op(opt->graph(), "QMatMul"), 0);  // no VNNI: op by op in f32
  } else {
    EXPECT_EQ(count_op(opt->graph(), "QMatMul"), 2);
    EXPECT_EQ(count_op(opt->graph(), "MatMul") + count_op(opt->graph(), "FusedMatMul"), 0);
    EXPECT_EQ(count_op(opt->graph(), "DequantizeLinear"), 0);  // int8 from input to output
    bool requantized = false;
    for (const auto& line : opt->optimize_report().rewrites)
      requantized = requantized || line.find("'fc1' into QMatMul (s8 -> u8)") != std::string::npos;
    EXPECT_TRUE(requantized);
  }

  SessionOptions plain;
  plain.optimize = false;
  auto ref = Session::from_graph(g.value(), plain);
  auto flt = Session::open(in).value();
  Tensor x = normal({16, 5, 64}, 99);
  std::vector<Tensor> got, want, fl;
  ASSERT_TRUE(opt->run({{"x", x}}, &got).ok());
  Tensor got0 = got[0].clone();
  ASSERT_TRUE(ref->run({{"x", x}}, &want).ok());
  ASSERT_TRUE(flt->run({{"x", x}}, &fl).ok());
  double err = 0, ferr = 0;
  for (int64_t i = 0; i < got0.numel(); ++i) {
    err = std::max(err, std::fabs(got0.get_f64(i) - want[0].get_f64(i)));
    ferr = std::max(ferr, std::fabs(got0.get_f64(i) - fl[0].get_f64(i)));
  }
  // As for QConv: only requantization rounding differs from the QDQ graph op by op.
  EXPECT_LT(err, 0.02 * max_abs(want[0])) << "int8 kernels vs the QDQ graph op by op";
  EXPECT_LT(ferr, 0.05 * max_abs(fl[0])) << "int8 vs the float model";
  EXPECT_GT(ferr, 0.0);  // it did quantize
}

TEST_F(QuantizeTest, PercentileCalibrationClipsTheRange) {
  std::string a = (dir_ / "minmax.onnx").string(), b = (dir_ / "pct.onnx").string();
  Tensor calib = random_images(16, 3);
  QuantizeOptions o;
  auto ra = quantize_model(float_path_, calib, a, o);
  o.method = CalibrationMethod::kPercentile;
  o.percentile = 99.0;
  auto rb = quantize_model(float_path_, calib, b, o);
  ASSERT_TRUE(ra.ok() && rb.ok());
  ASSERT_EQ(ra.value().tensors.size(), rb.value().tensors.size());
  int smaller = 0;
  for (size_t i = 0; i < ra.value().tensors.size(); ++i) {
    EXPECT_LE(rb.value().tensors[i].scale, ra.value().tensors[i].scale * 1.0001f);
    smaller += rb.value().tensors[i].scale < ra.value().tensors[i].scale;
  }
  EXPECT_GT(smaller, 0);
}

TEST_F(QuantizeTest, ErrorsNameTheProblem) {
  std::string out = (dir_ / "bad.onnx").string();
  QuantizeOptions o;
  Tensor ints = Tensor::zeros(DType::kI64, {4, 3, 16, 16});
  auto r = quantize_model(float_path_, ints, out, o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("calibration data is i64"), std::string::npos)
      << r.status().message();
  EXPECT_FALSE(std::filesystem::exists(out));

  // A model with nothing to quantize.
  OnnxBuilder b;
  b.input("x", kF, {-1, 4});
  b.output("y", kF, {-1, 4});
  b.node("Relu", {"x"}, {"y"});
  std::string relu = (dir_ / "relu.onnx").string();
  ASSERT_TRUE(write_file_atomic(relu, b.bytes()).ok());
  auto r2 = quantize_model(relu, Tensor::zeros(DType::kF32, {2, 4}), out, o);
  ASSERT_FALSE(r2.ok());
  EXPECT_NE(r2.status().message().find("nothing to quantize"), std::string::npos);
}

}  // namespace
}  // namespace dlsys
