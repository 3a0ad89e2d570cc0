// Checks of the detection, normalization, linear-algebra and signal ops beyond what the ONNX
// conformance cases reach: Einsum in f32 (the cases are float64), LRN's even window, long
// InstanceNormalization rows, DFT zero-padding and one-sided output, and the errors for values
// that are only known at run time or out of range. Every expectation is computed here by a
// plain loop or a closed form, never taken from dlsys.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <random>

#include "graph/onnx_import.h"
#include "graph/session.h"
#include "testing/onnx_builder.h"
#include "testing/run_node.h"

namespace dlsys {
namespace {

using In = testing::NodeInput;
using testing::run_node;
void attr_string(onnx::NodeProto* n, const std::string& name, const std::string& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(v);
}

Tensor random_f32(const Shape& shape, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  Tensor t = Tensor::empty(DType::kF32, shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = d(rng);
  return t;
}

void expect_near(const Tensor& got, const std::vector<double>& want, double tol, const char* what) {
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size())) << what;
  for (size_t i = 0; i < want.size(); ++i)
    ASSERT_NEAR(got.data_as<float>()[i], want[i], tol * (1 + std::fabs(want[i])))
        << what << " at " << i;
}

TEST(EinsumOp, BatchMatMulDiagonalAndImplicitOutputMatchPlainLoops) {
  Tensor a = random_f32({3, 2, 4}, 1), b = random_f32({3, 4, 5}, 2);
  std::vector<Tensor> out;
  auto eq = [](const char* e) {
    return [e](onnx::NodeProto* n) { attr_string(n, "equation", e); };
  };
  ASSERT_TRUE(run_node("Einsum", {{"a", a}, {"b", b}}, 1, eq("bij, bjk -> bik"), &out).ok());
  std::vector<double> want;
  for (int bt = 0; bt < 3; ++bt)
    for (int i = 0; i < 2; ++i)
      for (int k = 0; k < 5; ++k) {
        double s = 0;
        for (int j = 0; j < 4; ++j)
          s += double(a.data_as<float>()[(bt * 2 + i) * 4 + j]) *
               b.data_as<float>()[(bt * 4 + j) * 5 + k];
        want.push_back(s);
      }
  EXPECT_EQ(out[0].shape(), (Shape{3, 2, 5}));
  expect_near(out[0], want, 1e-5, "bij,bjk->bik");

  // Batched diagonal through an ellipsis: y[b, i] = x[b, i, i].
  Tensor x = random_f32({2, 3, 3}, 3);
  ASSERT_TRUE(run_node("Einsum", {{"x", x}}, 1, eq("...ii ->...i"), &out).ok());
  want.clear();
  for (int bt = 0; bt < 2; ++bt)
    for (int i = 0; i < 3; ++i) want.push_back(x.data_as<float>()[(bt * 3 + i) * 3 + i]);
  EXPECT_EQ(out[0].shape(), (Shape{2, 3}));
  expect_near(out[0], want, 0, "...ii->...i");

  // Implicit output: "ij,jk" sums j and keeps i, k in alphabetical order (a matrix product);
  // "ba" is the transpose (labels sorted: a, b).
  Tensor m = random_f32({2, 4}, 4), n = random_f32({4, 3}, 5);
  ASSERT_TRUE(run_node("Einsum", {{"m", m}, {"n", n}}, 1, eq("ij,jk"), &out).ok());
  want.clear();
  for (int i = 0; i < 2; ++i)
    for (int k = 0; k < 3; ++k) {
      double s = 0;
      for (int j = 0; j < 4; ++j)
        s += double(m.data_as<float>()[i * 4 + j]) * n.data_as<float>()[j * 3 + k];
      want.push_back(s);
    }
  expect_near(out[0], want, 1e-5, "ij,jk");
  ASSERT_TRUE(run_node("Einsum", {{"m", m}}, 1, eq("ba"), &out).ok());
  EXPECT_EQ(out[0].shape(), (Shape{4, 2}));
  want.clear();
  for (int j = 0; j < 4; ++j)
    for (int i = 0; i < 2; ++i) want.push_back(m.data_as<float>()[i * 4 + j]);
  expect_near(out[0], want, 0, "ba");

  // Contractions whose operands and output need reordering around the batched product
  // (attention scores; a transposed product written transposed), and one with a broadcast
  // label (size 1 in one operand), which takes the loop.
  Tensor q = random_f32({2, 3, 4, 5}, 20), kt = random_f32({2, 6, 4, 5}, 21);
  ASSERT_TRUE(run_node("Einsum", {{"q", q}, {"k", kt}}, 1, eq("bqhd,bkhd->bhqk"), &out).ok());
  EXPECT_EQ(out[0].shape(), (Shape{2, 4, 3, 6}));
  want.clear();
  for (int bt = 0; bt < 2; ++bt)
    for (int h = 0; h < 4; ++h)
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 6; ++j) {
          double acc = 0;
          for (int d = 0; d < 5; ++d)
            acc += double(q.data_as<float>()[((bt * 3 + i) * 4 + h) * 5 + d]) *
                   kt.data_as<float>()[((bt * 6 + j) * 4 + h) * 5 + d];
          want.push_back(acc);
        }
  expect_near(out[0], want, 1e-5, "bqhd,bkhd->bhqk");
  Tensor p = random_f32({3, 4}, 22), r = random_f32({5, 4}, 23), r1 = random_f32({1, 4}, 24);
  ASSERT_TRUE(run_node("Einsum", {{"p", p}, {"r", r}}, 1, eq("ij,kj->ki"), &out).ok());
  want.clear();
  for (int kk = 0; kk < 5; ++kk)
    for (int i = 0; i < 3; ++i) {
      double acc = 0;
      for (int j = 0; j < 4; ++j)
        acc += double(p.data_as<float>()[i * 4 + j]) * r.data_as<float>()[kk * 4 + j];
      want.push_back(acc);
    }
  expect_near(out[0], want, 1e-5, "ij,kj->ki");
  ASSERT_TRUE(run_node("Einsum", {{"p", p}, {"r", r1}}, 1, eq("ij,ij->i"), &out).ok());
  want.clear();
  for (int i = 0; i < 3; ++i) {
    double acc = 0;
    for (int j = 0; j < 4; ++j)
      acc += double(p.data_as<float>()[i * 4 + j]) * r1.data_as<float>()[j];
    want.push_back(acc);
  }
  expect_near(out[0], want, 1e-5, "ij,ij->i (broadcast i)");

  // A label whose sizes disagree is an error naming the equation.
  Status st = run_node("Einsum", {{"m", m}, {"b", b}}, 1, eq("ij,jkl->ikl"), &out);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("label 'j'"), std::string::npos) << st.message();
}

TEST(LrnOp, EvenWindowPutsTheExtraChannelAfterTheCentre) {
  // ONNX: channels [c - floor((size-1)/2), c + ceil((size-1)/2)]; size 4 -> [c-1, c+2].
  Tensor x = random_f32({2, 6, 3, 2}, 7);
  const float alpha = 0.3f, beta = 0.6f, bias = 1.5f;
  for (int64_t size : {3, 4}) {
    std::vector<Tensor> out;
    ASSERT_TRUE(run_node(
                    "LRN", {{"x", x}}, 1,
                    [&](onnx::NodeProto* n) {
                      testing::OnnxBuilder::attr_int(n, "size", size);
                      testing::OnnxBuilder::attr_float(n, "alpha", alpha);
                      testing::OnnxBuilder::attr_float(n, "beta", beta);
                      testing::OnnxBuilder::attr_float(n, "bias", bias);
                    },
                    &out)
                    .ok());
    std::vector<double> want;
    const float* X = x.data_as<float>();
    const int64_t lo = (size - 1) / 2, hi = size / 2;
    for (int64_t nb = 0; nb < 2; ++nb)
      for (int64_t c = 0; c < 6; ++c)
        for (int64_t s = 0; s < 6; ++s) {
          double sq = 0;
          for (int64_t k = std::max<int64_t>(0, c - lo); k <= std::min<int64_t>(5, c + hi); ++k)
            sq += double(X[(nb * 6 + k) * 6 + s]) * X[(nb * 6 + k) * 6 + s];
          want.push_back(X[(nb * 6 + c) * 6 + s] / std::pow(bias + alpha / size * sq, beta));
        }
    expect_near(out[0], want, 1e-5, size == 3 ? "LRN size 3" : "LRN size 4");
  }
}

TEST(InstanceNormOp, MatchesAPlainLoopOnLongRows) {
  Tensor x = random_f32({2, 3, 17, 19}, 9), s = random_f32({3}, 10), b = random_f32({3}, 11);
  std::vector<Tensor> out;
  ASSERT_TRUE(run_node(
                  "InstanceNormalization", {{"x", x}, {"s", s}, {"b", b}}, 1,
                  [](onnx::NodeProto* n) { testing::OnnxBuilder::attr_float(n, "epsilon", 1e-3f); },
                  &out)
                  .ok());
  std::vector<double> want;
  const int64_t S = 17 * 19;
  for (int64_t r = 0; r < 6; ++r) {
    const float* row = x.data_as<float>() + r * S;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < S; ++i) mean += row[i];
    mean /= S;
    for (int64_t i = 0; i < S; ++i) var += (row[i] - mean) * (row[i] - mean);
    var /= S;
    for (int64_t i = 0; i < S; ++i)
      want.push_back(s.data_as<float>()[r % 3] * (row[i] - mean) / std::sqrt(var + 1e-3) +
                     b.data_as<float>()[r % 3]);
  }
  expect_near(out[0], want, 1e-4, "InstanceNormalization");
}

TEST(DftOp, ZeroPadsToDftLengthAndKeepsOneSide) {
  // x[j] = cos(2 pi 3 j / 16) for j < 16; with dft_length 16 the spectrum is 8 at bins 3 and 13.
  // Given only 12 samples and dft_length 16, the transform is of the zero-padded signal:
  // X[k] = sum_{j<12} x[j] e^{-2 pi i jk/16}, computed here directly.
  Tensor x = Tensor::empty(DType::kF32, {1, 12, 1});
  for (int j = 0; j < 12; ++j)
    x.data_as<float>()[j] = static_cast<float>(std::cos(2 * M_PI * 3 * j / 16));
  int64_t len = 16;
  std::vector<Tensor> out;
  ASSERT_TRUE(run_node(
                  "DFT", {{"x", x}, {"len", Tensor::from_i64({}, &len)}}, 1,
                  [](onnx::NodeProto* n) { testing::OnnxBuilder::attr_int(n, "onesided", 1); },
                  &out)
                  .ok());
  EXPECT_EQ(out[0].shape(), (Shape{1, 9, 2}));
  std::vector<double> want;
  for (int k = 0; k < 9; ++k) {
    double re = 0, im = 0;
    for (int j = 0; j < 12; ++j) {
      re += std::cos(2 * M_PI * 3 * j / 16) * std::cos(2 * M_PI * j * k / 16);
      im -= std::cos(2 * M_PI * 3 * j / 16) * std::sin(2 * M_PI * j * k / 16);
    }
    want.push_back(re);
    want.push_back(im);
  }
  expect_near(out[0], want, 1e-5, "DFT padded");
  // axis -2 counts from the back of [1, 12, 1]: the same signal axis.
  ASSERT_TRUE(run_node(
                  "DFT", {{"x", x}, {"len", Tensor::from_i64({}, &len)}}, 1,
                  [](onnx::NodeProto* n) {
                    testing::OnnxBuilder::attr_int(n, "onesided", 1);
                    testing::OnnxBuilder::attr_int(n, "axis", -2);
                  },
                  &out)
                  .ok());
  expect_near(out[0], want, 1e-5, "DFT padded, axis -2");
  // The full 16 samples: the closed form, 8 at bin 3, 0 elsewhere in the one-sided half.
  Tensor full = Tensor::empty(DType::kF32, {1, 16, 1});
  for (int j = 0; j < 16; ++j)
    full.data_as<float>()[j] = static_cast<float>(std::cos(2 * M_PI * 3 * j / 16));
  ASSERT_TRUE(run_node(
                  "DFT", {{"x", full}}, 1,
                  [](onnx::NodeProto* n) { testing::OnnxBuilder::attr_int(n, "onesided", 1); },
                  &out)
                  .ok());
  want.assign(18, 0.0);
  want[6] = 8;
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_NEAR(out[0].data_as<float>()[i], want[i], 1e-5) << i;
}

TEST(DetectionOps, RoiAlignAveragesAndMaxesItsSamplesByHand) {
  // X[i][j] = 4i + j on a 4x4 plane; ROI (0, 0)-(2, 2), one output cell, 2x2 samples.
  Tensor x = Tensor::empty(DType::kF32, {1, 1, 4, 4});
  for (int i = 0; i < 16; ++i) x.data_as<float>()[i] = static_cast<float>(i);
  float roi[4] = {0, 0, 2, 2};
  int64_t batch = 0;
  // half_pixel: the samples fall on pixel centres (0,0), (0,1), (1,0), (1,1): values 0, 1, 4, 5.
  // output_half_pixel: at (0.5,0.5), (0.5,1.5), (1.5,0.5), (1.5,1.5): 2.5, 3.5, 6.5, 7.5.
  // max mode (ONNX Runtime's): the largest weighted tap of any sample: 5 (weight 1) on pixel
  // centres; 0.25 * 10 between them.
  struct Case {
    const char* ctm;
    const char* mode;
    float want;
  } cases[] = {{"half_pixel", "avg", 2.5f},
               {"half_pixel", "max", 5.f},
               {"output_half_pixel", "avg", 5.f},
               {"output_half_pixel", "max", 2.5f}};
  for (const Case& c : cases) {
    std::vector<Tensor> out;
    ASSERT_TRUE(run_node(
                    "RoiAlign",
                    {{"x", x},
                     {"rois", Tensor::from_f32({1, 4}, roi)},
                     {"bi", Tensor::from_i64({1}, &batch)}},
                    1,
                    [&](onnx::NodeProto* n) {
                      attr_string(n, "coordinate_transformation_mode", c.ctm);
                      attr_string(n, "mode", c.mode);
                      testing::OnnxBuilder::attr_int(n, "sampling_ratio", 2);
                    },
                    &out)
                    .ok());
    ASSERT_EQ(out[0].shape(), (Shape{1, 1, 1, 1}));
    EXPECT_NEAR(out[0].data_as<float>()[0], c.want, 1e-6) << c.ctm << " " << c.mode;
  }
}

TEST(DetectionOps, NonMaxSuppressionSelectsPerRunWhenItsBoxesAreKnownOnlyThen) {
  // 20 boxes = 80 values: more than a plan is specialized on, so the boxes are known only at run
  // time and the output's length is too (a dynamic output). The selection is checked against
  // greedy NMS's definition: kept boxes in decreasing score, at most max_out, no two kept boxes
  // over the IoU threshold, and every box scoring above the last kept one either kept or
  // suppressed by a kept box that scores higher.
  const float max_iou = 0.3f;
  const int64_t max_out = 6;
  for (uint32_t seed : {12u, 40u}) {
    Tensor boxes = random_f32({1, 20, 4}, seed), scores = random_f32({1, 1, 20}, seed + 1);
    std::vector<Tensor> out;
    Status st = run_node("NonMaxSuppression",
                         {{"boxes", boxes},
                          {"scores", scores},
                          {"max_out", Tensor::from_i64({1}, &max_out)},
                          {"iou", Tensor::from_f32({1}, &max_iou)}},
                         1, nullptr, &out, "nms");
    ASSERT_TRUE(st.ok()) << st.to_string();
    ASSERT_EQ(out[0].rank(), 2);
    ASSERT_EQ(out[0].shape()[1], 3);
    const int64_t n = out[0].shape()[0];
    ASSERT_GE(n, 1);
    ASSERT_LE(n, max_out);
    const float* b = boxes.data_as<float>();
    const float* sc = scores.data_as<float>();
    auto iou = [&](int64_t i, int64_t j) {
      auto lo = [](float p, float q) { return std::min(p, q); };
      auto hi = [](float p, float q) { return std::max(p, q); };
      const float* p = b + i * 4;
      const float* q = b + j * 4;
      float ay1 = lo(p[0], p[2]), ax1 = lo(p[1], p[3]), ay2 = hi(p[0], p[2]), ax2 = hi(p[1], p[3]);
      float by1 = lo(q[0], q[2]), bx1 = lo(q[1], q[3]), by2 = hi(q[0], q[2]), bx2 = hi(q[1], q[3]);
      float ih = lo(ay2, by2) - hi(ay1, by1), iw = lo(ax2, bx2) - hi(ax1, bx1);
      if (ih <= 0 || iw <= 0) return 0.f;
      float inter = ih * iw;
      return inter / ((ay2 - ay1) * (ax2 - ax1) + (by2 - by1) * (bx2 - bx1) - inter);
    };
    std::vector<int64_t> kept;
    for (int64_t r = 0; r < n; ++r) {
      const int64_t* t = out[0].data_as<int64_t>() + r * 3;
      EXPECT_EQ(t[0], 0);
      EXPECT_EQ(t[1], 0);
      ASSERT_GE(t[2], 0);
      ASSERT_LT(t[2], 20);
      if (!kept.empty()) EXPECT_GE(sc[kept.back()], sc[t[2]]);
      for (int64_t k : kept) EXPECT_LE(iou(k, t[2]), max_iou) << k << " and " << t[2];
      kept.push_back(t[2]);
    }
    for (int64_t i = 0; i < 20; ++i) {
      if (std::find(kept.begin(), kept.end(), i) != kept.end()) continue;
      if (n == max_out && sc[i] <= sc[kept.back()]) continue;
      bool suppressed = false;
      for (int64_t k : kept) suppressed = suppressed || (sc[k] >= sc[i] && iou(k, i) > max_iou);
      EXPECT_TRUE(suppressed) << "box " << i << " (score " << sc[i] << ") was neither kept nor "
                              << "suppressed";
    }
  }
}

TEST(DetectionOps, MaxUnpoolAndRoiAlignRejectOutOfRangeIndicesNamingTheNode) {
  Tensor x = random_f32({1, 1, 2, 2}, 14);
  int64_t idx[4] = {0, 3, 8, 16};  // 16 is outside the 4x4 output
  std::vector<Tensor> out;
  Status st = run_node(
      "MaxUnpool", {{"x", x}, {"i", Tensor::from_i64({1, 1, 2, 2}, idx)}}, 1,
      [](onnx::NodeProto* n) {
        testing::OnnxBuilder::attr_ints(n, "kernel_shape", {2, 2});
        testing::OnnxBuilder::attr_ints(n, "strides", {2, 2});
      },
      &out, "unpool");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("index 16"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("unpool"), std::string::npos) << st.message();

  float roi[4] = {0, 0, 1, 1};
  int64_t batch = 1;  // X has one image
  st = run_node(
      "RoiAlign",
      {{"x", x}, {"rois", Tensor::from_f32({1, 4}, roi)}, {"bi", Tensor::from_i64({1}, &batch)}}, 1,
      nullptr, &out, "align");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("batch_indices[0] is 1"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("align"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace dlsys
