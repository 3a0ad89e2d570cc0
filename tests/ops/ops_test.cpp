// Op-level checks that the conformance cases do not cover: registry completeness for the op
// set the engine promises, Gather's run-time index check, and the fast paths that the small
// conformance shapes never reach (row-broadcast arithmetic, SumToShapeOf's merged runs) against
// plain reference loops.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "graph/onnx_import.h"
#include "graph/session.h"
#include "ops/dnnl_util.h"
#include "ops/op_registry.h"
#include "testing/onnx_builder.h"

namespace dlsys {
namespace {

TEST(OpRegistry, HasTheWholePromisedOpSet) {
  const char* promised[] = {"Add",
                            "Sub",
                            "Mul",
                            "Div",
                            "Pow",
                            "Sqrt",
                            "Exp",
                            "Log",
                            "Neg",
                            "Abs",
                            "Reciprocal",
                            "Erf",
                            "Relu",
                            "LeakyRelu",
                            "Sigmoid",
                            "Tanh",
                            "Gelu",
                            "Clip",
                            "HardSigmoid",
                            "HardSwish",
                            "Softmax",
                            "LogSoftmax",
                            "Where",
                            "Equal",
                            "Less",
                            "Greater",
                            "Not",
                            "Cast",
                            "MatMul",
                            "Gemm",
                            "Conv",
                            "ConvTranspose",
                            "BatchNormalization",
                            "LayerNormalization",
                            "MaxPool",
                            "AveragePool",
                            "GlobalAveragePool",
                            "GlobalMaxPool",
                            "Reshape",
                            "Flatten",
                            "Transpose",
                            "Squeeze",
                            "Unsqueeze",
                            "Concat",
                            "Split",
                            "Slice",
                            "Gather",
                            "Shape",
                            "Constant",
                            "ConstantOfShape",
                            "Expand",
                            "Tile",
                            "Range",
                            "Identity",
                            "Dropout",
                            "ReduceMean",
                            "ReduceSum",
                            "ReduceMax",
                            "ArgMax"};
  for (const char* op : promised) EXPECT_NE(find_op(op), nullptr) << op << " is not registered";
}

TEST(Ops, GatherRejectsOutOfRangeIndicesAtRunTime) {
  testing::OnnxBuilder b(17);
  b.input("data", onnx::TensorProto::FLOAT, {3, 2});
  b.input("idx", onnx::TensorProto::INT64, {-1});
  b.output("y", onnx::TensorProto::FLOAT, {-1, 2});
  b.node("Gather", {"data", "idx"}, {"y"}, "lookup");
  auto g = import_onnx_bytes(b.bytes(), "g.onnx");
  ASSERT_TRUE(g.ok()) << g.status().message();
  auto s = Session::from_graph(std::move(g).value());
  float d[6] = {0, 1, 2, 3, 4, 5};
  Tensor data = Tensor::from_f32({3, 2}, d);
  // More than kMaxFixedElements indices, so the plan cannot specialize on them.
  std::vector<int64_t> idx(100, -1);
  std::vector<Tensor> out;
  ASSERT_TRUE(s->run({{"data", data}, {"idx", Tensor::from_i64({100}, idx.data())}}, &out).ok());
  EXPECT_EQ(out[0].data_as<float>()[0], 4.f);
  idx[50] = 3;
  Status st = s->run({{"data", data}, {"idx", Tensor::from_i64({100}, idx.data())}}, &out);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("index 3 is out of range"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("lookup"), std::string::npos) << st.message();
}

TEST(Ops, LossOpsRejectATargetOutsideTheClassesAndNameTheSample) {
  testing::OnnxBuilder b(17);
  b.input("x", onnx::TensorProto::FLOAT, {2, 3});
  b.input("t", onnx::TensorProto::INT64, {2});
  b.output("loss", onnx::TensorProto::FLOAT, {});
  auto* n = b.node("SoftmaxCrossEntropyLoss", {"x", "t"}, {"loss"}, "xent");
  testing::OnnxBuilder::attr_int(n, "ignore_index", -1);
  auto g = import_onnx_bytes(b.bytes(), "loss.onnx");
  ASSERT_TRUE(g.ok()) << g.status().message();
  auto s = Session::from_graph(std::move(g).value());
  float x[6] = {1, 2, 3, 0, 0, 0};
  std::vector<Tensor> out;
  // Sample 1 is ignored: the mean is sample 0's loss alone, -log(softmax(x0)[2]).
  int64_t ok[2] = {2, -1};
  ASSERT_TRUE(
      s->run({{"x", Tensor::from_f32({2, 3}, x)}, {"t", Tensor::from_i64({2}, ok)}}, &out).ok());
  const double want = -(3.0 - std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)));
  EXPECT_NEAR(out[0].data_as<float>()[0], want, 1e-6);
  int64_t bad[2] = {2, 3};
  Status st = s->run({{"x", Tensor::from_f32({2, 3}, x)}, {"t", Tensor::from_i64({2}, bad)}}, &out);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("target 3 at sample 1"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("xent"), std::string::npos) << st.message();
}

TEST(Ops, IndexOpsRejectOutOfRangeIndicesNamingTheNode) {
  testing::OnnxBuilder b(17);
  b.input("data", onnx::TensorProto::FLOAT, {3, 2});
  b.input("idx", onnx::TensorProto::INT64, {2, 1});
  b.input("upd", onnx::TensorProto::FLOAT, {2, 2});
  b.output("y", onnx::TensorProto::FLOAT, {3, 2});
  b.node("ScatterND", {"data", "idx", "upd"}, {"y"}, "place");
  auto g = import_onnx_bytes(b.bytes(), "scatter.onnx");
  ASSERT_TRUE(g.ok()) << g.status().message();
  auto s = Session::from_graph(std::move(g).value());
  float d[6] = {0, 1, 2, 3, 4, 5}, u[4] = {10, 11, 12, 13};
  int64_t idx[2] = {-1, 0};  // the last row, then the first
  std::vector<Tensor> out;
  auto run = [&] {
    return s->run({{"data", Tensor::from_f32({3, 2}, d)},
                   {"idx", Tensor::from_i64({2, 1}, idx)},
                   {"upd", Tensor::from_f32({2, 2}, u)}},
                  &out);
  };
  ASSERT_TRUE(run().ok());
  const std::vector<float> want = {12, 13, 2, 3, 10, 11};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(out[0].data_as<float>()[i], want[i]) << i;
  idx[1] = 3;
  Status st = run();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("index 3 is out of range for a dimension of 3"), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("place"), std::string::npos) << st.message();
}

// One node of `op` on graph inputs a (shape sa) and b (shape sb); returns its output.
Tensor run_binary(const std::string& op, const Tensor& a, const Tensor& b) {
  Graph g;
  g.opset = 17;
  for (auto [name, t] : {std::pair<const char*, const Tensor*>{"a", &a}, {"b", &b}}) {
    ValueInfo v{name, DType::kF32, true, {}};
    for (int64_t d : t->shape()) v.dims.push_back(Dim{d, ""});
    g.inputs.push_back(v);
  }
  g.nodes.push_back(Node{"n", op, "", {"a", "b"}, {"y"}, {}});
  g.outputs.push_back(ValueInfo{"y", DType::kF32, false, {}});
  auto s = Session::from_graph(g);
  std::vector<Tensor> out;
  Status st = s->run({{"a", a}, {"b", b}}, &out);
  EXPECT_TRUE(st.ok()) << op << ": " << st.message();
  return st.ok() ? out[0].clone() : Tensor();
}

Tensor random_tensor(const Shape& shape, std::mt19937* rng) {
  std::uniform_real_distribution<float> u(0.5f, 2.0f);  // away from 0: Div is well defined
  Tensor t = Tensor::empty(DType::kF32, shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = u(*rng);
  return t;
}

TEST(Ops, RowBroadcastArithmeticMatchesAPlainLoop) {
  std::mt19937 rng(1);
  Tensor full = random_tensor({4, 3, 40, 16}, &rng), row = random_tensor({4, 3, 40, 1}, &rng);
  for (const char* op : {"Add", "Sub", "Mul", "Div"})
    for (bool row_first : {false, true}) {
      Tensor y = row_first ? run_binary(op, row, full) : run_binary(op, full, row);
      ASSERT_TRUE(y.valid());
      ASSERT_EQ(y.shape(), full.shape());
      for (int64_t i = 0; i < full.numel(); ++i) {
        float x = full.data_as<float>()[i], r = row.data_as<float>()[i / 16];
        float a = row_first ? r : x, b = row_first ? x : r;
        float want = op[0] == 'A' ? a + b : op[0] == 'S' ? a - b : op[0] == 'M' ? a * b : a / b;
        ASSERT_NEAR(y.data_as<float>()[i], want, 1e-6f * std::abs(want) + 1e-7f)
            << op << (row_first ? " (row first)" : "") << " at " << i;
      }
    }
}

TEST(Ops, SumToShapeOfMatchesAPlainLoopForEveryPattern) {
  std::mt19937 rng(2);
  Shape dy_shape = {4, 6, 5, 700};  // over 65536 elements: the threaded path
  Tensor dy = random_tensor(dy_shape, &rng);
  // Leading runs summed, trailing summed, alternating, size-1 dims, and nothing summed.
  std::vector<Shape> likes = {{700},        {5, 1},         {6, 1, 700},    {4, 1, 5, 1},
                              {1, 6, 1, 1}, {4, 6, 1, 700}, {1, 1, 1, 700}, {4, 6, 5, 700}};
  for (const Shape& like : likes) {
    Tensor y = run_binary("SumToShapeOf", dy, Tensor::zeros(DType::kF32, like));
    ASSERT_TRUE(y.valid());
    ASSERT_EQ(y.shape(), like);
    std::vector<double> want(static_cast<size_t>(y.numel()), 0.0);
    size_t lead = dy_shape.size() - like.size();
    for (int64_t i = 0; i < dy.numel(); ++i) {
      int64_t rest = i, o = 0, stride = 1;
      for (size_t d = dy_shape.size(); d-- > 0;) {
        int64_t idx = rest % dy_shape[d];
        rest /= dy_shape[d];
        if (d >= lead && like[d - lead] != 1) {
          o += idx * stride;
          stride *= like[d - lead];
        }
      }
      want[static_cast<size_t>(o)] += dy.data_as<float>()[i];
    }
    for (int64_t i = 0; i < y.numel(); ++i)
      ASSERT_NEAR(y.data_as<float>()[i], want[static_cast<size_t>(i)], 1e-4 * want[i])
          << shape_str(like) << " at " << i;
  }
}

// A batch of activations times one constant weight matrix runs as one 2-D product [batch * M, K]
// x [K, N] (ops/matmul_ops.cpp): FusedMatMul(A [2, 3, 5, 16], B, bias, Z) with B given as
// [16, 24], as [1, 1, 16, 24] and transposed as [24, 16], y = relu(A B + bias + Z), checked
// against a plain loop in double.
TEST(Ops, BatchedMatMulWithOneWeightMatrixMatchesAPlainLoop) {
  std::mt19937 rng(7);
  const int64_t M = 5, K = 16, N = 24, rows = 2 * 3 * M;
  Tensor a = random_tensor({2, 3, M, K}, &rng), z = random_tensor({2, 3, M, N}, &rng);
  Tensor w = random_tensor({K, N}, &rng), bias = random_tensor({N}, &rng);
  for (int form = 0; form < 3; ++form) {
    Graph g;
    g.opset = 17;
    g.inputs.push_back(ValueInfo{"a", DType::kF32, true, {{2, ""}, {3, ""}, {M, ""}, {K, ""}}});
    g.inputs.push_back(ValueInfo{"z", DType::kF32, true, {{2, ""}, {3, ""}, {M, ""}, {N, ""}}});
    Tensor wf = form == 2 ? Tensor::empty(DType::kF32, {N, K}) : w.clone();
    if (form == 1) wf = Tensor::empty(DType::kF32, {1, 1, K, N});
    for (int64_t k = 0; k < K; ++k)
      for (int64_t n = 0; n < N; ++n)
        wf.data_as<float>()[form == 2 ? n * K + k : k * N + n] = w.data_as<float>()[k * N + n];
    g.initializers["w"] = wf;
    g.initializers["bias"] = bias;
    Node n{"mm", "FusedMatMul", "dlsys", {"a", "w", "bias", "z"}, {"y"}, {}};
    n.attrs["activation"] = Attribute::of_string("Relu");
    if (form == 2) n.attrs["transB"] = Attribute::of_int(1);
    g.nodes.push_back(n);
    g.outputs.push_back(ValueInfo{"y", DType::kF32, false, {}});
    auto s = Session::from_graph(g);
    std::vector<Tensor> out;
    Status st = s->run({{"a", a}, {"z", z}}, &out);
    ASSERT_TRUE(st.ok()) << st.message();
    ASSERT_EQ(out[0].shape(), (Shape{2, 3, M, N}));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < N; ++c) {
        double acc = bias.data_as<float>()[c] + z.data_as<float>()[r * N + c];
        for (int64_t k = 0; k < K; ++k)
          acc += double(a.data_as<float>()[r * K + k]) * w.data_as<float>()[k * N + c];
        ASSERT_NEAR(out[0].data_as<float>()[r * N + c], std::max(acc, 0.0), 1e-4 * std::abs(acc))
            << "form " << form << " at row " << r << ", column " << c;
      }
  }
}

// bf16 plans keep the activation between two matmuls in bf16 (ops/matmul_ops.cpp): the first
// writes it as a bf16 layout, the second reads it without a reorder; a value that is also a graph
// output stays f32. Both within bf16's error of a plain loop in double.
TEST(Ops, Bf16MatMulsPassTheirActivationInBf16) {
  if (!bf16_kernels_available()) GTEST_SKIP() << "no bf16 kernels on this CPU";
  std::mt19937 rng(11);
  const int64_t R = 24, K = 32, H = 64, N = 16;
  Tensor x = random_tensor({4, 6, K}, &rng), w1 = random_tensor({K, H}, &rng),
         w2 = random_tensor({H, N}, &rng);
  for (Tensor* w : {&w1, &w2})
    for (int64_t i = 0; i < w->numel(); ++i) w->data_as<float>()[i] -= 1.25f;  // both signs
  for (bool hidden_out : {false, true}) {
    Graph g;
    g.opset = 17;
    g.inputs.push_back(ValueInfo{"x", DType::kF32, true, {{4, ""}, {6, ""}, {K, ""}}});
    g.initializers["w1"] = w1;
    g.initializers["w2"] = w2;
    g.nodes.push_back(Node{"mm1", "MatMul", "", {"x", "w1"}, {"m"}, {}});
    g.nodes.push_back(Node{"relu", "Relu", "", {"m"}, {"h"}, {}});
    g.nodes.push_back(Node{"mm2", "MatMul", "", {"h", "w2"}, {"y"}, {}});
    g.outputs.push_back(ValueInfo{"y", DType::kF32, false, {}});
    if (hidden_out) g.outputs.push_back(ValueInfo{"h", DType::kF32, false, {}});
    SessionOptions o;
    o.precision = Precision::kBF16;
    auto s = Session::from_graph(g, o);
    std::vector<Tensor> out;
    Status st = s->run({{"x", x}}, &out);
    ASSERT_TRUE(st.ok()) << st.message();
    auto plan = s->plan_for({x});
    ASSERT_TRUE(plan.ok());
    int reorders = 0;
    bool first_blocked = false;
    for (const PlanStepInfo& step : plan.value()->steps()) {
      if (step.name == "mm1") first_blocked = step.blocked_output;
      reorders += step.op == "Reorder";
    }
    EXPECT_EQ(first_blocked, !hidden_out);
    EXPECT_EQ(reorders, 0);
    // y = relu(x w1) w2 in double.
    double peak = 0, err = 0;
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c < N; ++c) {
        double y = 0;
        for (int64_t j = 0; j < H; ++j) {
          double h = 0;
          for (int64_t k = 0; k < K; ++k)
            h += double(x.data_as<float>()[r * K + k]) * w1.data_as<float>()[k * H + j];
          y += std::max(h, 0.0) * w2.data_as<float>()[j * N + c];
        }
        peak = std::max(peak, std::fabs(y));
        err = std::max(err, std::fabs(y - out[0].data_as<float>()[r * N + c]));
      }
    EXPECT_GT(peak, 1.0);
    EXPECT_LT(err, 0.02 * peak) << "hidden output " << hidden_out;
  }
}

// Y[n, m, h, w] = sum over c, kh, kw of X[n, c, h + kh - 1, w + kw - 1] * W[m, c, kh, kw] + B[m]
// (3x3, stride 1, padding 1), in double.
std::vector<double> conv3x3_reference(const Tensor& x, const Tensor& w, const Tensor* b) {
  int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), Wd = x.dim(3), M = w.dim(0);
  std::vector<double> y(static_cast<size_t>(N * M * H * Wd), 0.0);
  const float *xp = x.data_as<float>(), *wp = w.data_as<float>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t q = 0; q < Wd; ++q) {
          double acc = b ? b->data_as<float>()[m] : 0.0;
          for (int64_t c = 0; c < C; ++c)
            for (int64_t i = 0; i < 3; ++i)
              for (int64_t j = 0; j < 3; ++j) {
                int64_t hh = h + i - 1, ww = q + j - 1;
                if (hh < 0 || hh >= H || ww < 0 || ww >= Wd) continue;
                acc += double(xp[((n * C + c) * H + hh) * Wd + ww]) *
                       wp[((m * C + c) * 3 + i) * 3 + j];
              }
          y[static_cast<size_t>(((n * M + m) * H + h) * Wd + q)] = acc;
        }
  return y;
}

// fp32 3x3 stride-1 convolutions with 16-channel multiples run on oneDNN's Winograd kernels,
// with the fused bias, Relu and residual (a plain graph input, converted into the kernel's
// nChw16c): y = relu(conv2(relu(conv1(x) + b1)) + z), checked against a plain loop.
TEST(Ops, WinogradConvolutionsMatchAPlainLoop) {
  testing::OnnxBuilder b(17);
  constexpr int kF = onnx::TensorProto::FLOAT;
  b.input("x", kF, {2, 16, 10, 10});
  b.input("z", kF, {2, 32, 10, 10});
  b.output("y", kF, {2, 32, 10, 10});
  b.random_f32("w1", {32, 16, 3, 3}, 0.2f, 1);
  b.random_f32("b1", {32}, 0.1f, 2);
  b.random_f32("w2", {32, 32, 3, 3}, 0.1f, 3);
  auto* c1 = b.node("Conv", {"x", "w1", "b1"}, {"c1"}, "conv1");
  testing::OnnxBuilder::attr_ints(c1, "pads", {1, 1, 1, 1});
  b.node("Relu", {"c1"}, {"r1"}, "relu1");
  auto* c2 = b.node("Conv", {"r1", "w2"}, {"c2"}, "conv2");
  testing::OnnxBuilder::attr_ints(c2, "pads", {1, 1, 1, 1});
  b.node("Add", {"c2", "z"}, {"s"}, "residual");
  b.node("Relu", {"s"}, {"y"}, "relu2");
  auto g = import_onnx_bytes(b.bytes(), "wino.onnx");
  ASSERT_TRUE(g.ok()) << g.status().message();
  Graph graph = std::move(g).value();
  Tensor w1 = graph.initializers.at("w1").clone(), b1 = graph.initializers.at("b1").clone(),
         w2 = graph.initializers.at("w2").clone();
  auto s = Session::from_graph(std::move(graph));
  std::mt19937 rng(11);
  Tensor x = random_tensor({2, 16, 10, 10}, &rng), z = random_tensor({2, 32, 10, 10}, &rng);
  std::vector<Tensor> out;
  Status st = s->run({{"x", x}, {"z", z}}, &out);
  ASSERT_TRUE(st.ok()) << st.message();
  auto plan = s->plan_for_shapes({{2, 16, 10, 10}, {2, 32, 10, 10}});
  ASSERT_TRUE(plan.ok());
  int wino = 0;
  bool z_converted = false;
  for (const PlanStepInfo& step : plan.value()->steps()) {
    // On every ISA the convolutions run on a jit kernel: oneDNN's reference one takes seconds
    // (an AVX2 CPU once got it for the residual conv, whose Z was forced into nChw16c for a
    // Winograd kernel it does not have).
    if (step.name.find("conv") != std::string::npos) {
      EXPECT_EQ(step.kernel.rfind("ref", 0), std::string::npos)
          << step.name << " runs on " << step.kernel << " (" << cpu_isa_name() << ")";
    }
    wino += step.kernel.find("wino") != std::string::npos;
    z_converted = z_converted || step.name == "to_layout(z)";
  }
  // oneDNN has Winograd kernels for AVX-512 only; elsewhere the direct kernels run (and the
  // numbers below must hold all the same).
  if (cpu_isa_name().rfind("avx512", 0) == 0) {
    EXPECT_EQ(wino, 2) << "both convolutions should run on Winograd kernels";
    EXPECT_TRUE(z_converted);
  } else {
    EXPECT_EQ(wino, 0) << cpu_isa_name() << " has no Winograd kernels";
  }
  // The reference: relu(conv2(relu(conv1(x) + b1)) + z).
  std::vector<double> r1 = conv3x3_reference(x, w1, &b1);
  Tensor r1t = Tensor::empty(DType::kF32, {2, 32, 10, 10});
  for (size_t i = 0; i < r1.size(); ++i) r1t.data_as<float>()[i] = float(std::max(r1[i], 0.0));
  std::vector<double> y = conv3x3_reference(r1t, w2, nullptr);
  double worst = 0, scale = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    double want = std::max(y[i] + z.data_as<float>()[i], 0.0);
    worst = std::max(worst, std::abs(out[0].data_as<float>()[i] - want));
    scale = std::max(scale, std::abs(want));
  }
  EXPECT_LE(worst, 1e-5 * scale) << "max abs error " << worst << " of max " << scale;
}

}  // namespace
}  // namespace dlsys
