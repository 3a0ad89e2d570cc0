// Checks of the ONNX integer-quantized ops beyond what the conformance cases reach: per-row and
// per-column zero points and scales, i8 operands, batch broadcasting, grouped / strided / dilated
// integer convolutions with per-channel weight zero points, saturation, and the errors for
// mis-shaped quantization parameters. Every expectation is computed here by a direct loop
// (no im2col, no shared helper), never taken from dlsys.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <random>

#include "graph/onnx_import.h"
#include "graph/session.h"
#include "ops/dnnl_util.h"
#include "testing/onnx_builder.h"
#include "testing/run_node.h"

namespace dlsys {
namespace {

using In = testing::NodeInput;
using testing::run_node;
template <typename T>
std::vector<T> random_ints(int64_t n, int lo, int hi, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<T> v(n);
  for (T& x : v) x = static_cast<T>(d(rng));
  return v;
}

// saturate(round_half_even(v) + zp) for the reference computations.
int requant(double v, int zp, int lo, int hi) {
  double r = std::nearbyint(v) + zp;
  return static_cast<int>(std::min<double>(hi, std::max<double>(lo, r)));
}

TEST(IntQuantOps, MatMulIntegerPerRowAndPerColumnZeroPointsBroadcastBatch) {
  const int64_t B = 2, M = 3, K = 5, N = 4;
  auto a = random_ints<int8_t>(B * M * K, -128, 127, 1);
  auto b = random_ints<int8_t>(K * N, -128, 127, 2);
  std::vector<int8_t> azp = {-3, 0, 7}, bzp = {5, -128, 127, 0};
  std::vector<Tensor> out;
  ASSERT_TRUE(run_node("MatMulInteger",
                       {{"A", testing::make_tensor(DType::kI8, {B, M, K}, a)},
                        {"Bm", testing::make_tensor(DType::kI8, {K, N}, b)},
                        {"az", testing::make_tensor(DType::kI8, {M}, azp)},
                        {"bz", testing::make_tensor(DType::kI8, {N}, bzp)}},
                       1, nullptr, &out)
                  .ok());
  ASSERT_EQ(out[0].dtype(), DType::kI32);
  ASSERT_EQ(out[0].shape(), (Shape{B, M, N}));
  for (int64_t bb = 0; bb < B; ++bb)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        int64_t want = 0;
        for (int64_t k = 0; k < K; ++k)
          want += (a[(bb * M + m) * K + k] - azp[m]) * (b[k * N + n] - bzp[n]);
        EXPECT_EQ(out[0].data_as<int32_t>()[(bb * M + m) * N + n], want) << bb << m << n;
      }
}

TEST(IntQuantOps, MatMulIntegerLargeSumsStayExact) {
  // 255 * 255 * 512 needs more than int16 pair sums: what the non-VNNI int8 kernels saturate.
  const int64_t M = 2, K = 512, N = 3;
  std::vector<uint8_t> a(M * K, 255), b(K * N, 255);
  std::vector<Tensor> out;
  ASSERT_TRUE(run_node("MatMulInteger",
                       {{"A", testing::make_tensor(DType::kU8, {M, K}, a)},
                        {"Bm", testing::make_tensor(DType::kU8, {K, N}, b)}},
                       1, nullptr, &out)
                  .ok());
  for (int64_t i = 0; i < M * N; ++i) EXPECT_EQ(out[0].data_as<int32_t>()[i], 255 * 255 * K);
}

// A constant B takes oneDNN's int8 matmul where it sums exactly (VNNI) and the zero points as
// corrections; u8 and s8 B, per-row a_zp and per-column b_zp, sums past int16.
TEST(IntQuantOps, MatMulIntegerConstantWeights) {
  const int64_t B = 2, M = 3, K = 300, N = 5;
  for (DType bt : {DType::kU8, DType::kI8}) {
    auto a = random_ints<uint8_t>(B * M * K, 0, 255, 21);
    std::vector<uint8_t> azp = {0, 255, 17};
    int lo = bt == DType::kU8 ? 0 : -128, hi = bt == DType::kU8 ? 255 : 127;
    auto b = random_ints<int>(K * N, lo, hi, 22);
    auto bzp = random_ints<int>(N, lo, hi, 23);
    Tensor bq = Tensor::empty(bt, {K, N}), bz = Tensor::empty(bt, {N});
    for (int64_t i = 0; i < K * N; ++i) {
      if (bt == DType::kU8)
        bq.data_as<uint8_t>()[i] = static_cast<uint8_t>(b[i]);
      else
        bq.data_as<int8_t>()[i] = static_cast<int8_t>(b[i]);
    }
    for (int64_t n = 0; n < N; ++n) {
      if (bt == DType::kU8)
        bz.data_as<uint8_t>()[n] = static_cast<uint8_t>(bzp[n]);
      else
        bz.data_as<int8_t>()[n] = static_cast<int8_t>(bzp[n]);
    }
    std::vector<Tensor> out;
    Status st = run_node("MatMulInteger",
                         {{"A", testing::make_tensor(DType::kU8, {B, M, K}, a)},
                          {"Bm", bq, true},
                          {"az", testing::make_tensor(DType::kU8, {M}, azp)},
                          {"bz", bz}},
                         1, nullptr, &out);
    ASSERT_TRUE(st.ok()) << st.to_string();
    ASSERT_EQ(out[0].shape(), (Shape{B, M, N}));
    for (int64_t r = 0; r < B * M; ++r)
      for (int64_t n = 0; n < N; ++n) {
        int64_t want = 0;
        for (int64_t k = 0; k < K; ++k)
          want += (a[r * K + k] - azp[r % M]) * (b[k * N + n] - bzp[n]);
        EXPECT_EQ(out[0].data_as<int32_t>()[r * N + n], want)
            << dtype_name(bt) << " row " << r << " col " << n;
      }
  }
}

TEST(IntQuantOps, QLinearMatMulPerColumnScalesSaturatesI8) {
  const int64_t M = 4, K = 6, N = 3;
  auto a = random_ints<uint8_t>(M * K, 0, 255, 3);
  auto b = random_ints<int8_t>(K * N, -128, 127, 4);
  float as = 0.02f, ys = 0.03f;
  std::vector<float> bs = {0.01f, 0.05f, 0.003f};
  std::vector<int8_t> bzp = {0, 3, -2};
  uint8_t azp = 128;
  int8_t yzp = -5;
  std::vector<Tensor> out;
  ASSERT_TRUE(run_node("QLinearMatMul",
                       {{"a", testing::make_tensor(DType::kU8, {M, K}, a)},
                        {"as", testing::make_tensor(DType::kF32, {}, std::vector<float>{as})},
                        {"az", testing::make_tensor(DType::kU8, {}, std::vector<uint8_t>{azp})},
                        {"b", testing::make_tensor(DType::kI8, {K, N}, b)},
                        {"bs", testing::make_tensor(DType::kF32, {N}, bs)},
                        {"bz", testing::make_tensor(DType::kI8, {N}, bzp)},
                        {"ys", testing::make_tensor(DType::kF32, {}, std::vector<float>{ys})},
                        {"yz", testing::make_tensor(DType::kI8, {}, std::vector<int8_t>{yzp})}},
                       1, nullptr, &out)
                  .ok());
  ASSERT_EQ(out[0].dtype(), DType::kI8);
  int saturated = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      int64_t acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += (a[m * K + k] - azp) * (b[k * N + n] - bzp[n]);
      double real = static_cast<double>(acc) * as * bs[n];
      int want = requant(real / ys, yzp, -128, 127);
      saturated += want == 127 || want == -128;
      EXPECT_EQ(out[0].data_as<int8_t>()[m * N + n], want) << m << "," << n;
    }
  EXPECT_GT(saturated, 0);  // the data reaches the clamp
  EXPECT_LT(saturated, M * N);
}

// Direct grouped convolution of (x - xz) and (w - wz[m]) over 2-D images.
std::vector<int64_t> conv_ref(const std::vector<uint8_t>& x, int xz, const std::vector<int8_t>& w,
                              const std::vector<int8_t>& wz, int64_t N, int64_t C, int64_t H,
                              int64_t W, int64_t M, int64_t G, int64_t KH, int64_t KW, int64_t s,
                              int64_t d, int64_t p, int64_t OH, int64_t OW) {
  std::vector<int64_t> y(N * M * OH * OW, 0);
  int64_t Cg = C / G, Mg = M / G;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          int64_t acc = 0;
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t kh = 0; kh < KH; ++kh)
              for (int64_t kw = 0; kw < KW; ++kw) {
                int64_t ih = oh * s - p + kh * d, iw = ow * s - p + kw * d;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                int64_t ci = (m / Mg) * Cg + c;
                acc += (x[((n * C + ci) * H + ih) * W + iw] - xz) *
                       (w[((m * Cg + c) * KH + kh) * KW + kw] - wz[wz.size() > 1 ? m : 0]);
              }
          y[((n * M + m) * OH + oh) * OW + ow] = acc;
        }
  return y;
}

void conv_attrs(onnx::NodeProto* n) {
  testing::OnnxBuilder::attr_int(n, "group", 2);
  testing::OnnxBuilder::attr_ints(n, "strides", {2, 2});
  testing::OnnxBuilder::attr_ints(n, "dilations", {2, 2});
  testing::OnnxBuilder::attr_ints(n, "pads", {1, 1, 1, 1});
}

TEST(IntQuantOps, ConvIntegerGroupedStridedDilatedPerChannelZeroPoint) {
  const int64_t N = 2, C = 4, H = 7, W = 6, M = 6, G = 2, K = 3;
  const int64_t OH = (H + 2 - 5) / 2 + 1, OW = (W + 2 - 5) / 2 + 1;
  auto x = random_ints<uint8_t>(N * C * H * W, 0, 255, 5);
  auto w = random_ints<int8_t>(M * (C / G) * K * K, -128, 127, 6);
  std::vector<int8_t> wz = {0, 1, -1, 5, -7, 100};
  uint8_t xz = 100;
  std::vector<Tensor> out;
  Status st = run_node("ConvInteger",
                       {{"x", testing::make_tensor(DType::kU8, {N, C, H, W}, x)},
                        {"w", testing::make_tensor(DType::kI8, {M, C / G, K, K}, w)},
                        {"xz", testing::make_tensor(DType::kU8, {}, std::vector<uint8_t>{xz})},
                        {"wz", testing::make_tensor(DType::kI8, {M}, wz)}},
                       1, conv_attrs, &out);
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_EQ(out[0].shape(), (Shape{N, M, OH, OW}));
  auto want = conv_ref(x, xz, w, wz, N, C, H, W, M, G, K, K, 2, 2, 1, OH, OW);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(out[0].data_as<int32_t>()[i], want[i]) << i;
}

TEST(IntQuantOps, QLinearConvPerChannelScaleZeroPointAndBias) {
  const int64_t N = 1, C = 4, H = 6, W = 5, M = 4, G = 2, K = 3;
  const int64_t OH = (H + 2 - 5) / 2 + 1, OW = (W + 2 - 5) / 2 + 1;
  auto x = random_ints<uint8_t>(N * C * H * W, 0, 255, 7);
  auto w = random_ints<int8_t>(M * (C / G) * K * K, -128, 127, 8);
  std::vector<int8_t> wz = {0, 2, -3, 9};
  std::vector<float> ws = {0.002f, 0.01f, 0.0007f, 0.004f};
  std::vector<int32_t> bias = {1000, -2500, 0, 77};
  float xs = 0.03f, ys = 0.2f;
  uint8_t xz = 7, yz = 120;
  std::vector<Tensor> out;
  Status st = run_node("QLinearConv",
                       {{"x", testing::make_tensor(DType::kU8, {N, C, H, W}, x)},
                        {"xs", testing::make_tensor(DType::kF32, {}, std::vector<float>{xs})},
                        {"xz", testing::make_tensor(DType::kU8, {}, std::vector<uint8_t>{xz})},
                        {"w", testing::make_tensor(DType::kI8, {M, C / G, K, K}, w)},
                        {"ws", testing::make_tensor(DType::kF32, {M}, ws)},
                        {"wz", testing::make_tensor(DType::kI8, {M}, wz)},
                        {"ys", testing::make_tensor(DType::kF32, {}, std::vector<float>{ys})},
                        {"yz", testing::make_tensor(DType::kU8, {}, std::vector<uint8_t>{yz})},
                        {"B", testing::make_tensor(DType::kI32, {M}, bias)}},
                       1, conv_attrs, &out);
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_EQ(out[0].dtype(), DType::kU8);
  auto acc = conv_ref(x, xz, w, wz, N, C, H, W, M, G, K, K, 2, 2, 1, OH, OW);
  for (size_t i = 0; i < acc.size(); ++i) {
    int64_t m = (i / (OH * OW)) % M;
    double real = static_cast<double>(acc[i] + bias[m]) * xs * ws[m];
    EXPECT_NEAR(out[0].data_as<uint8_t>()[i], requant(real / ys, yz, 0, 255), 0) << i;
  }
}

// One integer convolution of the sweep below: dtypes, geometry, and which inputs are constants.
struct IntConvCase {
  std::string name;
  DType xt, wt;
  int64_t N, C, M, G;
  std::vector<int64_t> in, k, strides, dilations, pads;  // pads: begins then ends
  int xz;
  std::vector<int> wz;  // empty: no w_zero_point input
  bool w_const, wz_const;
  bool xz_const = true;
};

// conv(x - xz, w - wz[m]) by a direct loop over 1-3 spatial dims (unit leading dims).
std::vector<int64_t> int_conv_ref(const IntConvCase& c, const std::vector<int>& x,
                                  const std::vector<int>& w, const std::vector<int64_t>& out) {
  size_t nsp = c.in.size(), off = 3 - nsp;
  int64_t I[3] = {1, 1, 1}, K[3] = {1, 1, 1}, O[3] = {1, 1, 1}, S[3] = {1, 1, 1}, D[3] = {1, 1, 1},
          PB[3] = {0, 0, 0};
  for (size_t i = 0; i < nsp; ++i) {
    I[off + i] = c.in[i];
    K[off + i] = c.k[i];
    O[off + i] = out[i];
    S[off + i] = c.strides[i];
    D[off + i] = c.dilations[i];
    PB[off + i] = c.pads[i];
  }
  int64_t Cg = c.C / c.G, Mg = c.M / c.G, isp = I[0] * I[1] * I[2], osp = O[0] * O[1] * O[2];
  std::vector<int64_t> y(c.N * c.M * osp, 0);
  for (int64_t n = 0; n < c.N; ++n)
    for (int64_t m = 0; m < c.M; ++m) {
      int wzm = c.wz.empty() ? 0 : c.wz[c.wz.size() > 1 ? m : 0];
      for (int64_t o = 0; o < osp; ++o) {
        int64_t o0 = o / (O[1] * O[2]), o1 = (o / O[2]) % O[1], o2 = o % O[2];
        int64_t acc = 0;
        for (int64_t ci = 0; ci < Cg; ++ci)
          for (int64_t k0 = 0; k0 < K[0]; ++k0)
            for (int64_t k1 = 0; k1 < K[1]; ++k1)
              for (int64_t k2 = 0; k2 < K[2]; ++k2) {
                int64_t i0 = o0 * S[0] - PB[0] + k0 * D[0], i1 = o1 * S[1] - PB[1] + k1 * D[1],
                        i2 = o2 * S[2] - PB[2] + k2 * D[2];
                if (i0 < 0 || i0 >= I[0] || i1 < 0 || i1 >= I[1] || i2 < 0 || i2 >= I[2]) continue;
                int64_t xc = (m / Mg) * Cg + ci;
                int xv = x[(n * c.C + xc) * isp + (i0 * I[1] + i1) * I[2] + i2];
                int wv = w[((m * Cg + ci) * K[0] + k0) * K[1] * K[2] + k1 * K[2] + k2];
                acc += static_cast<int64_t>(xv - c.xz) * (wv - wzm);
              }
        y[(n * c.M + m) * osp + o] = acc;
      }
    }
  return y;
}

Tensor int8_tensor(DType t, const Shape& shape, const std::vector<int>& v) {
  Tensor r = Tensor::empty(t, shape);
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == DType::kU8)
      r.data_as<uint8_t>()[i] = static_cast<uint8_t>(v[i]);
    else
      r.data_as<int8_t>()[i] = static_cast<int8_t>(v[i]);
  }
  return r;
}

// ConvInteger over u8/s8 inputs and weights, 1-3 spatial dims, groups and depthwise, strides,
// dilations, asymmetric pads, zero points absent, per tensor or per channel, constant or fed:
// equal to the direct loop. Where oneDNN's int8 sums are exact (VNNI, AMX) the node must run on
// a oneDNN kernel (zero points as its source zero point and a window-sum correction), else on
// the loops.
TEST(IntQuantOps, ConvIntegerOnOneDnnEqualsTheDirectLoop) {
  const DType u8 = DType::kU8, s8 = DType::kI8;
  // One case per line: name, x and w types, N C M group, spatial dims, kernel, strides,
  // dilations, pads, x_zp, w_zp, w constant, w_zp constant[, x_zp constant].
  // clang-format off
  std::vector<IntConvCase> cases = {
      {"2d u8 x s8 w, no w zp", u8, s8, 2, 16, 32, 1, {9, 9}, {3, 3}, {1, 1}, {1, 1}, {1, 1, 1, 1}, 100, {}, true, true},
      {"2d s8 x u8 w, per-channel zp, groups, stride, dilation", s8, u8, 1, 8, 6, 2, {10, 9}, {3, 3}, {2, 1}, {2, 2}, {1, 2, 2, 0}, -5, {0, 128, 127, 255, 3, 200}, true, true},
      {"1d u8 x u8 w fed, scalar zp fed", u8, u8, 3, 5, 7, 1, {17}, {4}, {2}, {1}, {0, 3}, 255, {131}, false, false},
      {"3d s8 x s8 w fed, depthwise, per-channel zp", s8, s8, 1, 4, 4, 4, {5, 6, 4}, {3, 2, 3}, {1, 2, 1}, {1, 1, 2}, {1, 0, 2, 1, 1, 0}, 17, {-3, 0, 9, -128}, false, true},
      {"2d depthwise u8, zp 0 given", u8, s8, 2, 32, 32, 32, {12, 12}, {3, 3}, {2, 2}, {1, 1}, {1, 1, 1, 1}, 3, {0}, true, true},
      {"2d u8 w with zp 128 (no correction)", u8, u8, 1, 24, 16, 1, {7, 7}, {1, 1}, {1, 1}, {1, 1}, {0, 0, 0, 0}, 9, {128}, true, true},
      {"2d x zp a constant 0 (no source zero point)", u8, s8, 2, 16, 16, 1, {8, 8}, {3, 3}, {1, 1}, {1, 1}, {1, 1, 1, 1}, 0, {}, true, true},
      {"2d x zp fed", u8, s8, 1, 8, 8, 1, {6, 6}, {3, 3}, {1, 1}, {1, 1}, {1, 1, 1, 1}, 77, {2}, true, true, false},
  };
  // clang-format on

  uint32_t seed = 100;
  for (const IntConvCase& c : cases) {
    SCOPED_TRACE(c.name);
    size_t nsp = c.in.size();
    Shape xs = {c.N, c.C}, wsh = {c.M, c.C / c.G};
    std::vector<int64_t> out;
    for (size_t i = 0; i < nsp; ++i) {
      xs.push_back(c.in[i]);
      wsh.push_back(c.k[i]);
      int64_t ext = (c.k[i] - 1) * c.dilations[i] + 1;
      out.push_back((c.in[i] + c.pads[i] + c.pads[nsp + i] - ext) / c.strides[i] + 1);
    }
    auto range = [](DType t) { return t == DType::kU8 ? std::pair{0, 255} : std::pair{-128, 127}; };
    auto x = random_ints<int>(shape_numel(xs), range(c.xt).first, range(c.xt).second, ++seed);
    auto w = random_ints<int>(shape_numel(wsh), range(c.wt).first, range(c.wt).second, ++seed);
    std::vector<In> inputs = {{"x", int8_tensor(c.xt, xs, x)},
                              {"w", int8_tensor(c.wt, wsh, w), c.w_const},
                              {"xz", int8_tensor(c.xt, {}, {c.xz}), c.xz_const}};
    if (!c.wz.empty()) {
      Shape zs = c.wz.size() > 1 ? Shape{c.M} : Shape{};
      inputs.push_back({"wz", int8_tensor(c.wt, zs, c.wz), c.wz_const});
    }
    auto attrs = [&](onnx::NodeProto* n) {
      testing::OnnxBuilder::attr_int(n, "group", c.G);
      testing::OnnxBuilder::attr_ints(n, "strides", c.strides);
      testing::OnnxBuilder::attr_ints(n, "dilations", c.dilations);
      testing::OnnxBuilder::attr_ints(n, "pads", c.pads);
    };
    std::vector<Tensor> got;
    std::string kernel;
    Status st = run_node("ConvInteger", inputs, 1, attrs, &got, "q", &kernel);
    ASSERT_TRUE(st.ok()) << st.to_string();
    if (int8_kernels_exact()) {
      EXPECT_FALSE(kernel.empty()) << "expected a oneDNN int8 kernel on " << cpu_isa_name();
      EXPECT_EQ(kernel.rfind("ref", 0), std::string::npos) << kernel;
    } else {
      EXPECT_EQ(kernel, "") << "oneDNN's int8 sums are not exact on " << cpu_isa_name();
    }
    Shape os = {c.N, c.M};
    os.insert(os.end(), out.begin(), out.end());
    ASSERT_EQ(got[0].shape(), os);
    auto want = int_conv_ref(c, x, w, out);
    int64_t bad = 0;
    for (size_t i = 0; i < want.size(); ++i)
      if (got[0].data_as<int32_t>()[i] != want[i] && bad++ < 5)
        ADD_FAILURE() << "element " << i << ": " << got[0].data_as<int32_t>()[i]
                      << " != " << want[i];
    EXPECT_EQ(bad, 0);
  }
}

// QLinearConv with u8 weights whose per-channel zero points are not 128 (the oneDNN path's
// window-sum correction), fed weights, and a bias: requantized like the spec, in double.
TEST(IntQuantOps, QLinearConvU8WeightsPerChannelZeroPointsMatchTheLoop) {
  // clang-format off
  IntConvCase c{"", DType::kU8, DType::kU8, 2, 6, 4, 1, {8, 7}, {3, 3}, {1, 1}, {1, 1}, {1, 1, 1, 1}, 31, {128, 0, 77, 255}, false, true};
  // clang-format on
  auto x = random_ints<int>(2 * 6 * 8 * 7, 0, 255, 41);
  auto w = random_ints<int>(4 * 6 * 9, 0, 255, 42);
  std::vector<float> ws = {0.002f, 0.0011f, 0.0007f, 0.004f};
  std::vector<int32_t> bias = {1000, -2500, 0, 77};
  float xs = 0.03f, ys = 0.5f;
  int yz = 128;
  std::vector<Tensor> got;
  std::string kernel;
  Status st = run_node(
      "QLinearConv",
      {{"x", int8_tensor(DType::kU8, {2, 6, 8, 7}, x)},
       {"xs", testing::make_tensor(DType::kF32, {}, std::vector<float>{xs}), true},
       {"xz", int8_tensor(DType::kU8, {}, {c.xz}), true},
       {"w", int8_tensor(DType::kU8, {4, 6, 3, 3}, w)},
       {"ws", testing::make_tensor(DType::kF32, {4}, ws), true},
       {"wz", int8_tensor(DType::kU8, {4}, c.wz), true},
       {"ys", testing::make_tensor(DType::kF32, {}, std::vector<float>{ys}), true},
       {"yz", int8_tensor(DType::kU8, {}, {yz}), true},
       {"B", testing::make_tensor(DType::kI32, {4}, bias), true}},
      1,
      [](onnx::NodeProto* n) {
        testing::OnnxBuilder::attr_ints(n, "pads", {1, 1, 1, 1});
      },
      &got, "q", &kernel);
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(kernel.empty(), !int8_kernels_exact()) << kernel;
  auto acc = int_conv_ref(c, x, w, {8, 7});
  int64_t clamped = 0;
  for (size_t i = 0; i < acc.size(); ++i) {
    int64_t m = (i / 56) % 4;
    float mult = xs * ws[m] / ys;
    int want = requant(static_cast<double>(acc[i] + bias[m]) * mult, yz, 0, 255);
    clamped += want == 0 || want == 255;
    ASSERT_EQ(got[0].data_as<uint8_t>()[i], want) << i;
  }
  EXPECT_LT(clamped, static_cast<int64_t>(acc.size()) / 2);  // the values are not all clamped
}

TEST(IntQuantOps, DynamicQuantizeLinearAllZeroAndAllNegative) {
  std::vector<Tensor> out;
  ASSERT_TRUE(
      run_node("DynamicQuantizeLinear",
               {{"x", testing::make_tensor(DType::kF32, {3}, std::vector<float>{0.f, 0.f, 0.f})}},
               3, nullptr, &out)
          .ok());
  EXPECT_FLOAT_EQ(out[1].data_as<float>()[0], 1.f / 255.f);
  EXPECT_EQ(out[2].data_as<uint8_t>()[0], 0);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(out[0].data_as<uint8_t>()[i], 0);
  // All negative: the range is [min x, 0], so the zero point is 255 and min x maps to 0.
  ASSERT_TRUE(run_node("DynamicQuantizeLinear",
                       {{"x", testing::make_tensor(DType::kF32, {3},
                                                   std::vector<float>{-2.55f, -1.f, 0.f})}},
                       3, nullptr, &out)
                  .ok());
  EXPECT_FLOAT_EQ(out[1].data_as<float>()[0], 2.55f / 255.f);
  EXPECT_EQ(out[2].data_as<uint8_t>()[0], 255);
  EXPECT_EQ(out[0].data_as<uint8_t>()[0], 0);
  EXPECT_EQ(out[0].data_as<uint8_t>()[1], 155);
  EXPECT_EQ(out[0].data_as<uint8_t>()[2], 255);
}

TEST(IntQuantOps, MisShapedZeroPointIsNamed) {
  std::vector<Tensor> out;
  Status st =
      run_node("MatMulInteger",
               {{"A", testing::make_tensor(DType::kU8, {2, 3}, std::vector<uint8_t>(6, 1))},
                {"Bm", testing::make_tensor(DType::kU8, {3, 4}, std::vector<uint8_t>(12, 1))},
                {"", Tensor()},
                {"bz", testing::make_tensor(DType::kU8, {3}, std::vector<uint8_t>(3, 0))}},
               1, nullptr, &out);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("node 'q' (MatMulInteger)"), std::string::npos) << st.to_string();
  EXPECT_NE(st.message().find("b_zero_point must be a scalar or 1-D with 4 values"),
            std::string::npos)
      << st.to_string();
}

}  // namespace
}  // namespace dlsys
