// Op-level checks that the conformance cases do not cover: registry completeness for the op
// set the engine promises, Gather's run-time index check, and the fast paths that the small
// conformance shapes never reach (row-broadcast arithmetic, SumToShapeOf's merged runs) against
// plain reference loops.
#include <gtest/gtest.h>

#include <random>

#include "graph/onnx_import.h"
#include "graph/session.h"
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

}  // namespace
}  // namespace dlsys
