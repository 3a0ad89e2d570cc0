// Models exported from PyTorch by scripts/export_models.py (an MLP, torchvision's ResNet-18 and
// MobileNetV2, a transformer encoder at opsets 14 and 17): dlsys's outputs must match PyTorch's
// within 1e-4 relative to the output's scale (max |dlsys - torch| <= 1e-4 * max |torch|).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "graph/session.h"
#include "ops/dnnl_util.h"
#include "tensor/npy.h"

namespace dlsys {
namespace {

std::string models_dir() {
  const char* env = std::getenv("DLSYS_MODELS_DIR");
  return env ? env : DLSYS_MODELS_DIR;
}

class PyTorchModel : public ::testing::TestWithParam<std::string> {};

TEST_P(PyTorchModel, MatchesPyTorch) {
  std::string stem = (std::filesystem::path(models_dir()) / GetParam()).string();
  auto s = Session::open(stem + ".onnx", SessionOptions{2});
  ASSERT_TRUE(s.ok()) << s.status().message();
  auto x = npy_read(stem + ".input.npy");
  auto want = npy_read(stem + ".output.npy");
  ASSERT_TRUE(x.ok() && want.ok()) << "run scripts/export_models.py first (ctest does)";
  std::vector<Tensor> out;
  Status st = s.value()->run({{"input", x.value()}}, &out);
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(out[0].shape(), want->shape());
  double max_ref = 0, max_err = 0, max_elem_rel = 0;
  for (int64_t i = 0; i < want->numel(); ++i) {
    double r = want->get_f64(i), g = out[0].get_f64(i);
    ASSERT_TRUE(std::isfinite(g)) << "element " << i;
    max_ref = std::max(max_ref, std::fabs(r));
    max_err = std::max(max_err, std::fabs(g - r));
    max_elem_rel = std::max(max_elem_rel, std::fabs(g - r) / (std::fabs(r) + 1e-3));
  }
  std::printf("%s: max |err| %.3g, max |ref| %.3g, relative %.3g, worst element relative %.3g\n",
              GetParam().c_str(), max_err, max_ref, max_err / max_ref, max_elem_rel);
  EXPECT_LE(max_err, 1e-4 * max_ref);
  // Batch is free: the same model at batch 1 gives the first row.
  Tensor x1 = x->slice_rows(0, 1);
  ASSERT_TRUE(s.value()->run({{"input", x1}}, &out).ok());
  int64_t row = want->numel() / want->shape()[0];
  for (int64_t i = 0; i < row; ++i)
    EXPECT_NEAR(out[0].get_f64(i), want->get_f64(i), 1e-4 * max_ref);
}

// bf16 precision (convolutions and matmuls in bf16 with f32 accumulation): the same argmax as
// PyTorch's fp32 output on every row, and the output within 5% of its scale (bf16 keeps 8 bits
// of mantissa). Skipped on CPUs without bf16 kernels in oneDNN (no AVX512-BF16 or AMX).
TEST_P(PyTorchModel, Bf16StaysCloseToPyTorch) {
  if (!bf16_kernels_available()) GTEST_SKIP() << "this CPU has no bf16 kernels in oneDNN 2.6";
  std::string stem = (std::filesystem::path(models_dir()) / GetParam()).string();
  SessionOptions o{2};
  o.precision = Precision::kBF16;
  auto s = Session::open(stem + ".onnx", o);
  ASSERT_TRUE(s.ok()) << s.status().message();
  auto x = npy_read(stem + ".input.npy");
  auto want = npy_read(stem + ".output.npy");
  ASSERT_TRUE(x.ok() && want.ok());
  std::vector<Tensor> out;
  ASSERT_TRUE(s.value()->run({{"input", x.value()}}, &out).ok());
  double max_ref = 0, max_err = 0;
  for (int64_t i = 0; i < want->numel(); ++i) {
    max_ref = std::max(max_ref, std::fabs(want->get_f64(i)));
    max_err = std::max(max_err, std::fabs(out[0].get_f64(i) - want->get_f64(i)));
  }
  std::printf("%s bf16: relative error %.3g\n", GetParam().c_str(), max_err / max_ref);
  EXPECT_LE(max_err, 5e-2 * max_ref);
  EXPECT_GT(max_err, 0.0) << "bf16 should differ from fp32 somewhere (is bf16 really used?)";
  int64_t rows = want->shape()[0], cls = want->numel() / rows;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t a = 0, b = 0;
    for (int64_t c = 1; c < cls; ++c) {
      if (want->get_f64(r * cls + c) > want->get_f64(r * cls + a)) a = c;
      if (out[0].get_f64(r * cls + c) > out[0].get_f64(r * cls + b)) b = c;
    }
    EXPECT_EQ(a, b) << "row " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(Exported, PyTorchModel,
                         ::testing::Values("mlp", "resnet18", "mobilenetv2", "encoder_opset14",
                                           "encoder_opset17"));

}  // namespace
}  // namespace dlsys
