// Op-level checks that the conformance cases do not cover: registry completeness for the op
// set the engine promises, and Gather's run-time index check.
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace dlsys
