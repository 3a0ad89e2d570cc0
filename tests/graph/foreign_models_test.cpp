// Models in the shape tf2onnx and paddle2onnx emit, built by scripts/tf_style_models.py (a ctest
// fixture, which also writes ONNX Runtime's outputs on the same seeded inputs through
// bench/engine/run_model.mjs): tf_cnn_nhwc (opset 9, NHWC input, a Transpose pair around every
// Conv, Constant weights, HardSwish chains, Clip/Slice/Squeeze/Unsqueeze with attributes),
// tf_cnn_nchw (the same network without the Transposes) and paddle_style (opset 11: Clip and
// Slice with inputs, Resize with roi/scales, a Shape -> Gather -> Concat -> Reshape flatten,
// Softmax). dlsys's outputs must match ONNX Runtime's within 1e-4 relative to the output's scale
// (max |dlsys - ort| <= 1e-4 * max |ort|), at batch 1 and 8, with the rewrite passes on and off;
// the NHWC and NCHW networks must agree, and after TransposeElimination the NHWC graph keeps only
// the Transpose of its input. Last, an integer-quantized network (scripts/quantized_models.py).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "graph/session.h"
#include "ops/dnnl_util.h"
#include "tensor/npy.h"

namespace dlsys {
namespace {

std::string models_dir() {
  const char* env = std::getenv("DLSYS_FOREIGN_MODELS_DIR");
  return env ? env : DLSYS_FOREIGN_MODELS_DIR;
}

std::string stem_path(const std::string& stem) {
  return (std::filesystem::path(models_dir()) / stem).string();
}

// ONNX Runtime's output `name` from a run_model.mjs JSON file, as an f32 tensor.
Result<Tensor> read_ort_output(const std::string& path, const std::string& name) {
  std::ifstream f(path);
  if (!f)
    return Status::NotFound(
        "{} is missing: run scripts/tf_style_models.py DIR --ort-reference (the ctest fixture "
        "foreign_models_export does)",
        path);
  std::stringstream ss;
  ss << f.rdbuf();
  auto j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (!j.is_object() || !j.contains(name) || !j[name].contains("dims") || !j[name].contains("data"))
    return Status::Invalid("{} has no output '{}': {}", path, name, ss.str().substr(0, 200));
  Shape shape = j[name]["dims"].get<Shape>();
  std::vector<float> data = j[name]["data"].get<std::vector<float>>();
  if (static_cast<int64_t>(data.size()) != shape_numel(shape))
    return Status::Invalid("{}: output '{}' has {} values for dims {}", path, name, data.size(),
                           shape_str(shape));
  return Tensor::from_f32(shape, data.data());
}

// max |got - want| over max |want| (asserting the shapes agree and every value is finite).
double relative_error(const Tensor& got, const Tensor& want) {
  EXPECT_EQ(got.shape(), want.shape());
  if (got.shape() != want.shape()) return INFINITY;
  double max_ref = 0, max_err = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    double r = want.get_f64(i), g = got.get_f64(i);
    EXPECT_TRUE(std::isfinite(g)) << "element " << i;
    max_ref = std::max(max_ref, std::fabs(r));
    max_err = std::max(max_err, std::fabs(g - r));
  }
  EXPECT_GT(max_ref, 0.0) << "an all-zero reference checks nothing";
  return max_err / max_ref;
}

constexpr double kTol = 1e-4;

struct Case {
  std::string stem;
  bool optimize;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.stem << (c.optimize ? " (optimized)" : " (as given)");
}

class ForeignModel : public ::testing::TestWithParam<Case> {};

TEST_P(ForeignModel, MatchesOnnxRuntime) {
  const Case& c = GetParam();
  SessionOptions o;
  o.threads = 2;
  o.optimize = c.optimize;
  auto s = Session::open(stem_path(c.stem) + ".onnx", o);
  ASSERT_TRUE(s.ok()) << s.status().message();
  // Exported at opset 9 or 11: upgraded to 13 on import.
  EXPECT_EQ(s.value()->graph().converted_from_opset, c.stem == "paddle_style" ? 11 : 9);
  const std::string out_name = s.value()->graph().outputs.at(0).name;
  for (int batch : {1, 8}) {
    SCOPED_TRACE("batch " + std::to_string(batch));
    std::string base = stem_path(c.stem) + ".b" + std::to_string(batch);
    auto x = npy_read(base + ".input.npy");
    ASSERT_TRUE(x.ok()) << x.status().message() << " (the fixture foreign_models_export writes it)";
    ASSERT_EQ(x->shape()[0], batch);
    auto want = read_ort_output(base + ".ort.json", out_name);
    ASSERT_TRUE(want.ok()) << want.status().message();
    std::vector<Tensor> out;
    Status st = s.value()->run({{"input", x.value()}}, &out);
    ASSERT_TRUE(st.ok()) << st.message();
    ASSERT_EQ(out.size(), 1u);
    double rel = relative_error(out[0], want.value());
    std::printf("%s batch %d (%s): max |dlsys - ort| / max |ort| = %.3g\n", c.stem.c_str(), batch,
                c.optimize ? "optimized" : "as given", rel);
    EXPECT_LE(rel, kTol);
  }
}

INSTANTIATE_TEST_SUITE_P(Exported, ForeignModel,
                         ::testing::Values(Case{"tf_cnn_nhwc", true}, Case{"tf_cnn_nchw", true},
                                           Case{"paddle_style", true}, Case{"tf_cnn_nhwc", false},
                                           Case{"tf_cnn_nchw", false}, Case{"paddle_style", false}),
                         [](const ::testing::TestParamInfo<Case>& i) {
                           return i.param.stem + (i.param.optimize ? "_optimized" : "_as_given");
                         });

int count_op(const Graph& g, const std::string& op) {
  int n = 0;
  for (const Node& node : g.nodes) n += node.op_type == op;
  return n;
}

// The NHWC network is the NCHW one with a Transpose pair around every Conv: on the same input
// (transposed) both give the same logits, and after TransposeElimination (and the fusions) the
// NHWC graph is the NCHW one behind the one Transpose of its input.
TEST(ForeignModels, NhwcAndNchwNetworksAgree) {
  SessionOptions o;
  o.threads = 2;
  auto nhwc = Session::open(stem_path("tf_cnn_nhwc") + ".onnx", o);
  auto nchw = Session::open(stem_path("tf_cnn_nchw") + ".onnx", o);
  ASSERT_TRUE(nhwc.ok()) << nhwc.status().message();
  ASSERT_TRUE(nchw.ok()) << nchw.status().message();
  const Graph& g = nhwc.value()->graph();
  EXPECT_EQ(count_op(g, "Transpose"), 1);
  for (const Node& n : g.nodes)
    if (n.op_type == "Transpose") {
      EXPECT_EQ(n.inputs.at(0), "input") << "the Transpose left is not the input's";
    }
  EXPECT_EQ(g.nodes.size(), nchw.value()->graph().nodes.size() + 1);
  for (const char* op : {"FusedConv", "Conv", "Mul", "Add", "ReduceMean"})
    EXPECT_EQ(count_op(g, op), count_op(nchw.value()->graph(), op)) << op;
  int regions = 0;
  for (const PassStats& p : nhwc.value()->optimize_report().passes)
    if (p.pass == "TransposeElimination") regions = p.rewrites;
  EXPECT_EQ(regions, 4);
  for (int batch : {1, 8}) {
    SCOPED_TRACE("batch " + std::to_string(batch));
    std::string b = ".b" + std::to_string(batch) + ".input.npy";
    auto xh = npy_read(stem_path("tf_cnn_nhwc") + b);
    auto xc = npy_read(stem_path("tf_cnn_nchw") + b);
    ASSERT_TRUE(xh.ok() && xc.ok()) << "the fixture foreign_models_export writes the inputs";
    // The NCHW input is the NHWC one transposed (the script writes it so).
    ASSERT_EQ(xc->shape(), (Shape{batch, 3, 32, 32}));
    for (int64_t i = 0; i < xh->numel(); ++i) {
      int64_t c = i % 3, w = i / 3 % 32, h = i / 96 % 32, n = i / 3072;
      ASSERT_EQ(xh->get_f64(i), xc->get_f64(((n * 3 + c) * 32 + h) * 32 + w)) << i;
    }
    std::vector<Tensor> yh, yc;
    ASSERT_TRUE(nhwc.value()->run({{"input", xh.value()}}, &yh).ok());
    ASSERT_TRUE(nchw.value()->run({{"input", xc.value()}}, &yc).ok());
    EXPECT_LE(relative_error(yh[0], yc[0]), kTol);
  }
}

// A ResNet-18-shaped network quantized as ONNX Runtime's quantizers write it
// (scripts/quantized_models.py: QLinearConv with s8 and u8 weights, ConvInteger with static and
// run-time zero points, DynamicQuantizeLinear, MaxPool on u8). Its logits must equal, within
// float rounding of the final average and Gemm, the numpy evaluation of the ONNX operator
// definitions (exact integer sums) on every CPU, and ONNX Runtime's where oneDNN's int8 sums are
// exact (VNNI, AMX: there ONNX Runtime's are too; without VNNI its u8 x s8 kernels may saturate).
// Where oneDNN's sums are exact, every integer convolution must run on a oneDNN kernel.
TEST(ForeignModels, QuantizedResNetMatchesTheSpecAndOnnxRuntime) {
  const std::string stem = stem_path("qop_resnet_small");
  for (bool optimize : {true, false}) {
    SCOPED_TRACE(optimize ? "optimized" : "as given");
    SessionOptions o;
    o.threads = 2;
    o.optimize = optimize;
    auto s = Session::open(stem + ".onnx", o);
    ASSERT_TRUE(s.ok()) << s.status().message();
    EXPECT_EQ(count_op(s.value()->graph(), "QLinearConv"), 9);
    EXPECT_EQ(count_op(s.value()->graph(), "ConvInteger"), 11);
    for (int batch : {1, 8}) {
      SCOPED_TRACE("batch " + std::to_string(batch));
      std::string base = stem + ".b" + std::to_string(batch);
      auto x = npy_read(base + ".input.npy");
      auto want = npy_read(base + ".reference.npy");
      ASSERT_TRUE(x.ok() && want.ok()) << "the fixture quantized_models_export writes them";
      std::vector<Tensor> out;
      Status st = s.value()->run({{"input", x.value()}}, &out);
      ASSERT_TRUE(st.ok()) << st.message();
      double rel = relative_error(out[0], want.value());
      std::printf("qop_resnet_small batch %d: max |dlsys - spec| / max |spec| = %.3g\n", batch,
                  rel);
      EXPECT_LE(rel, 1e-5);
      auto ort = read_ort_output(base + ".ort.json", "logits");
      ASSERT_TRUE(ort.ok()) << ort.status().message();
      double rel_ort = relative_error(out[0], ort.value());
      std::printf("qop_resnet_small batch %d: max |dlsys - ort| / max |ort| = %.3g (%s)\n", batch,
                  rel_ort, cpu_isa_name().c_str());
      if (int8_kernels_exact()) EXPECT_LE(rel_ort, 1e-5);
      auto bound = s.value()->bind_inputs({{"input", x.value()}});
      ASSERT_TRUE(bound.ok());
      int on_onednn = 0, integer_convs = 0;
      for (const PlanStepInfo& step : s.value()->plan_for(bound.value()).value()->steps())
        if (step.op == "QLinearConv" || step.op == "ConvInteger") {
          ++integer_convs;
          on_onednn += !step.kernel.empty();
        }
      EXPECT_EQ(integer_convs, 20);
      EXPECT_EQ(on_onednn, int8_kernels_exact() ? 20 : 0) << cpu_isa_name();
    }
  }
}

}  // namespace
}  // namespace dlsys
