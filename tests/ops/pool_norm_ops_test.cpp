// Checks of the training-mode outputs of inference ops beyond what the conformance cases reach:
// MaxPool's Indices with padding, dilation, ties and both storage orders, and after a Conv that
// hands X over in a blocked layout; BatchNormalization's training mode on rank-2 input with a
// non-default momentum; Dropout's training_mode given as a graph input (the plan specialized on
// its value). Every expectation is computed here by a direct loop, never taken from dlsys.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
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
TEST(PoolNormOps, MaxPoolIndicesPaddingDilationTiesStorageOrder) {
  const int64_t N = 2, C = 2, H = 4, W = 5, KH = 2, KW = 3, SH = 2, SW = 1, DW = 2;
  const int64_t PT = 1, PL = 0, PB = 0, PR = 1;
  const int64_t OH = (H + PT + PB - KH) / SH + 1, OW = (W + PL + PR - ((KW - 1) * DW + 1)) / SW + 1;
  std::vector<float> x(N * C * H * W);
  std::mt19937 rng(9);
  std::uniform_int_distribution<int> d(-3, 3);  // few distinct values: many ties
  for (float& v : x) v = static_cast<float>(d(rng));
  for (int64_t order : {0, 1}) {
    std::vector<Tensor> out;
    Status st = run_node(
        "MaxPool", {{"x", testing::make_tensor(DType::kF32, {N, C, H, W}, x)}}, 2,
        [&](onnx::NodeProto* n) {
          testing::OnnxBuilder::attr_ints(n, "kernel_shape", {KH, KW});
          testing::OnnxBuilder::attr_ints(n, "strides", {SH, SW});
          testing::OnnxBuilder::attr_ints(n, "dilations", {1, DW});
          testing::OnnxBuilder::attr_ints(n, "pads", {PT, PL, PB, PR});
          testing::OnnxBuilder::attr_int(n, "storage_order", order);
        },
        &out);
    ASSERT_TRUE(st.ok()) << st.to_string();
    ASSERT_EQ(out[1].dtype(), DType::kI64);
    ASSERT_EQ(out[1].shape(), (Shape{N, C, OH, OW}));
    for (int64_t nc = 0; nc < N * C; ++nc)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          float best = -std::numeric_limits<float>::infinity();
          int64_t want = -1;
          for (int64_t kh = 0; kh < KH; ++kh)
            for (int64_t kw = 0; kw < KW; ++kw) {
              int64_t h = oh * SH - PT + kh, w = ow * SW - PL + kw * DW;
              if (h < 0 || h >= H || w < 0 || w >= W) continue;
              float v = x[(nc * H + h) * W + w];
              if (v > best) {  // the first maximum in row-major window order
                best = v;
                want = nc * H * W + (order ? w * H + h : h * W + w);
              }
            }
          int64_t o = (nc * OH + oh) * OW + ow;
          EXPECT_EQ(out[0].data_as<float>()[o], best);
          EXPECT_EQ(out[1].data_as<int64_t>()[o], want) << "order " << order << " at " << o;
        }
  }
}

// A Conv before the MaxPool hands it X in oneDNN's blocked layout (16 channels): the Indices
// loop must read X as plain NCHW. The 1x1 identity convolution keeps X's values.
TEST(PoolNormOps, MaxPoolIndicesAfterConvBlockedLayout) {
  const int64_t C = 16, H = 6, W = 6, OH = 3, OW = 3;
  std::vector<float> x(C * H * W), w(C * C, 0.f);
  std::mt19937 rng(13);
  std::normal_distribution<float> d(0.f, 1.f);
  for (float& v : x) v = d(rng);
  for (int64_t c = 0; c < C; ++c) w[c * C + c] = 1.f;
  testing::OnnxBuilder b(17);
  b.input("x", onnx::TensorProto::FLOAT, {1, C, H, W});
  b.initializer_f32("w", {C, C, 1, 1}, w);
  b.output("y", onnx::TensorProto::FLOAT, {});
  b.output("i", onnx::TensorProto::INT64, {});
  b.node("Conv", {"x", "w"}, {"c"}, "conv");
  auto* n = b.node("MaxPool", {"c"}, {"y", "i"}, "pool");
  testing::OnnxBuilder::attr_ints(n, "kernel_shape", {2, 2});
  testing::OnnxBuilder::attr_ints(n, "strides", {2, 2});
  auto g = import_onnx_bytes(b.bytes(), "t.onnx");
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  auto sess = Session::from_graph(std::move(g).value());
  std::vector<Tensor> out;
  Status st = sess->run({{"x", testing::make_tensor(DType::kF32, {1, C, H, W}, x)}}, &out);
  ASSERT_TRUE(st.ok()) << st.to_string();
  for (int64_t c = 0; c < C; ++c)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        float best = -std::numeric_limits<float>::infinity();
        int64_t want = -1;
        for (int64_t h = 2 * oh; h < 2 * oh + 2; ++h)
          for (int64_t w2 = 2 * ow; w2 < 2 * ow + 2; ++w2)
            if (x[(c * H + h) * W + w2] > best) {
              best = x[(c * H + h) * W + w2];
              want = (c * H + h) * W + w2;
            }
        int64_t o = (c * OH + oh) * OW + ow;
        EXPECT_FLOAT_EQ(out[0].data_as<float>()[o], best) << o;
        EXPECT_EQ(out[1].data_as<int64_t>()[o], want) << o;
      }
}

TEST(PoolNormOps, BatchNormTrainingModeRank2Momentum) {
  const int64_t N = 5, C = 3;
  std::vector<float> x(N * C);
  std::mt19937 rng(11);
  std::normal_distribution<float> d(2.f, 3.f);
  for (float& v : x) v = d(rng);
  std::vector<float> scale = {1.f, 0.5f, -2.f}, bias = {0.f, 1.f, 3.f}, mean = {0.1f, -1.f, 4.f},
                     var = {1.f, 2.f, 0.5f};
  const float momentum = 0.7f, eps = 1e-3f;
  std::vector<Tensor> out;
  Status st = run_node(
      "BatchNormalization",
      {{"x", testing::make_tensor(DType::kF32, {N, C}, x)},
       {"s", testing::make_tensor(DType::kF32, {C}, scale)},
       {"b", testing::make_tensor(DType::kF32, {C}, bias)},
       {"m", testing::make_tensor(DType::kF32, {C}, mean)},
       {"v", testing::make_tensor(DType::kF32, {C}, var)}},
      3,
      [&](onnx::NodeProto* n) {
        testing::OnnxBuilder::attr_int(n, "training_mode", 1);
        auto* a = n->add_attribute();
        a->set_name("momentum");
        a->set_type(onnx::AttributeProto::FLOAT);
        a->set_f(momentum);
        a = n->add_attribute();
        a->set_name("epsilon");
        a->set_type(onnx::AttributeProto::FLOAT);
        a->set_f(eps);
      },
      &out);
  ASSERT_TRUE(st.ok()) << st.to_string();
  for (int64_t c = 0; c < C; ++c) {
    double m = 0, v = 0;
    for (int64_t n = 0; n < N; ++n) m += x[n * C + c];
    m /= N;
    for (int64_t n = 0; n < N; ++n) v += (x[n * C + c] - m) * (x[n * C + c] - m);
    v /= N;  // biased, as the spec's reference (numpy var)
    for (int64_t n = 0; n < N; ++n)
      EXPECT_NEAR(out[0].data_as<float>()[n * C + c],
                  (x[n * C + c] - m) / std::sqrt(v + eps) * scale[c] + bias[c], 1e-5);
    EXPECT_NEAR(out[1].data_as<float>()[c], mean[c] * momentum + m * (1 - momentum), 1e-5);
    EXPECT_NEAR(out[2].data_as<float>()[c], var[c] * momentum + v * (1 - momentum), 1e-4);
  }
}

TEST(PoolNormOps, DropoutTrainingModeFromGraphInput) {
  std::vector<float> x = {1.f, -2.f, 3.f, 4.f, -5.f, 6.f};
  auto run = [&](bool training, float ratio, std::vector<Tensor>* out) {
    return run_node("Dropout",
                    {{"x", testing::make_tensor(DType::kF32, {2, 3}, x)},
                     {"r", testing::make_tensor(DType::kF32, {}, std::vector<float>{ratio})},
                     {"t", testing::make_tensor(DType::kBool, {}, std::vector<uint8_t>{training})}},
                    2, nullptr, out);
  };
  std::vector<Tensor> out;
  // Inference (whatever the ratio) and training with ratio 0: y = x, mask all true.
  for (auto [training, ratio] : {std::pair{false, 0.5f}, std::pair{true, 0.f}}) {
    Status st = run(training, ratio, &out);
    ASSERT_TRUE(st.ok()) << st.to_string();
    for (size_t i = 0; i < x.size(); ++i) {
      EXPECT_EQ(out[0].data_as<float>()[i], x[i]);
      EXPECT_EQ(out[1].data_as<uint8_t>()[i], 1);
    }
  }
  // Training with a positive ratio draws a mask (random_ops_test.cpp checks its statistics):
  // the kept elements are x / (1 - ratio), the others 0. A ratio of 1 or more is refused,
  // naming the node.
  Status st = run(true, 0.5f, &out);
  ASSERT_TRUE(st.ok()) << st.to_string();
  for (size_t i = 0; i < x.size(); ++i)
    EXPECT_EQ(out[0].data_as<float>()[i], out[1].data_as<uint8_t>()[i] ? x[i] * 2.f : 0.f) << i;
  st = run(true, 1.f, &out);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("(Dropout): ratio must be in [0, 1), got 1"), std::string::npos)
      << st.to_string();
}

}  // namespace
}  // namespace dlsys
