// Sequences and optionals on models built here, against values computed by hand: a Loop that
// appends to a list with SequenceInsert and stacks it at the end with ConcatFromSequence (what
// torch.jit.script exports for `out.append(...)` in a loop, then `torch.stack(out)`),
// SplitToSequence then SequenceAt, SequenceErase and SequenceLength, SequenceMap, optionals,
// and the errors: a position out of range names the node and the position, a sequence fed to a
// tensor op is refused when the plan is built. The ONNX conformance cases (test_sequence_*,
// test_loop13_seq, test_loop16_seq_none, test_if_seq, test_optional_*) check the same ops
// against ONNX's outputs.
#include <gtest/gtest.h>

#include "graph/onnx_import.h"
#include "graph/session.h"
#include "testing/onnx_builder.h"

namespace dlsys {
namespace {

using testing::OnnxBuilder;

constexpr int kF32 = onnx::TensorProto::FLOAT;
constexpr int kBool = onnx::TensorProto::BOOL;
constexpr int kI64 = onnx::TensorProto::INT64;

Result<std::unique_ptr<Session>> Open(const OnnxBuilder& b) {
  DLSYS_ASSIGN_OR_RETURN(Graph g, import_onnx_bytes(b.bytes(), "sequence.onnx"));
  return Session::from_graph(std::move(g));
}

// Declares `v` a sequence of `elem` tensors (or an optional of one, `optional`).
void SetSequenceType(onnx::ValueInfoProto* v, const std::string& name, int elem,
                     bool optional = false) {
  v->set_name(name);
  onnx::TypeProto* t = v->mutable_type();
  if (optional) t = t->mutable_optional_type()->mutable_elem_type();
  t->mutable_sequence_type()->mutable_elem_type()->mutable_tensor_type()->set_elem_type(elem);
}
void SequenceInput(OnnxBuilder& b, const std::string& name, int elem) {
  SetSequenceType(b.model().mutable_graph()->add_input(), name, elem);
}
void SequenceOutput(OnnxBuilder& b, const std::string& name, int elem) {
  SetSequenceType(b.model().mutable_graph()->add_output(), name, elem);
}

Tensor Bool(bool v) {
  Tensor t = Tensor::empty(DType::kBool, {});
  t.data_as<uint8_t>()[0] = v;
  return t;
}

Tensor I64(int64_t v) {
  return Tensor::from_i64({}, &v);
}

Tensor F32(const Shape& s, const std::vector<float>& v) {
  return Tensor::from_f32(s, v.data());
}

std::vector<float> Values(const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) v[static_cast<size_t>(i)] = t.data_as<float>()[i];
  return v;
}

// out = []; for i in range(M): out.append(x * i + b); y = stack(out); n = len(out)
// As exported: SequenceEmpty before the Loop, SequenceInsert in the body (the list is carried),
// ConcatFromSequence(new_axis=1) and SequenceLength after it.
OnnxBuilder AppendInLoop() {
  OnnxBuilder body;
  body.input("i", kI64, {});
  body.input("c", kBool, {});
  SetSequenceType(body.model().mutable_graph()->add_input(), "acc", kF32);
  body.output("c_out", kBool, {});
  SetSequenceType(body.model().mutable_graph()->add_output(), "acc_out", kF32);
  body.node("Identity", {"c"}, {"c_out"});
  auto* cast = body.node("Cast", {"i"}, {"i_f"});
  OnnxBuilder::attr_int(cast, "to", kF32);
  body.node("Mul", {"x", "i_f"}, {"xi"});
  body.node("Add", {"xi", "b"}, {"item"});
  body.node("SequenceInsert", {"acc", "item"}, {"acc_out"}, "append");
  OnnxBuilder b;
  b.input("M", kI64, {});
  b.input("x", kF32, {3});
  b.output("y", kF32, {-1, 3});
  b.output("n", kI64, {});
  b.initializer_f32("b", {3}, {10, 20, 30});
  b.initializer_i64("go", {}, {1});
  auto* c = b.node("Cast", {"go"}, {"cond"});
  OnnxBuilder::attr_int(c, "to", kBool);
  auto* e = b.node("SequenceEmpty", {}, {"empty"});
  OnnxBuilder::attr_int(e, "dtype", kF32);
  auto* loop = b.node("Loop", {"M", "cond", "empty"}, {"list"}, "loop");
  OnnxBuilder::attr_graph(loop, "body", body);
  auto* cat = b.node("ConcatFromSequence", {"list"}, {"y"}, "stack");
  OnnxBuilder::attr_int(cat, "axis", 0);
  OnnxBuilder::attr_int(cat, "new_axis", 1);
  b.node("SequenceLength", {"list"}, {"n"});
  return b;
}

TEST(Sequences, LoopAppendsToAListThatIsStackedAfterIt) {
  auto s = Open(AppendInLoop());
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  const std::vector<float> x = {1, 2, 3};
  std::vector<Tensor> out;
  for (int64_t m : {3, 5, 1}) {
    Status st = (*s)->run({{"M", I64(m)}, {"x", F32({3}, x)}}, &out);
    ASSERT_TRUE(st.ok()) << st.to_string();
    ASSERT_EQ(out[0].shape(), (Shape{m, 3})) << "M " << m;
    std::vector<float> want;
    for (int64_t i = 0; i < m; ++i)
      for (int k = 0; k < 3; ++k) want.push_back(x[k] * static_cast<float>(i) + 10.f * (k + 1));
    EXPECT_EQ(Values(out[0]), want) << "M " << m;
    ASSERT_EQ(out[1].dtype(), DType::kI64);
    EXPECT_EQ(out[1].data_as<int64_t>()[0], m);
  }
  // No iteration: an empty list, which ConcatFromSequence cannot stack; the error names it.
  Status st = (*s)->run({{"M", I64(0)}, {"x", F32({3}, x)}}, &out);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("'stack'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("empty"), std::string::npos) << st.message();
}

// seq = SplitToSequence(x, split); y = SequenceAt(seq, pos); also the pieces of one row with
// keepdims = 0 (z = SequenceAt(rows, 3)).
OnnxBuilder SplitThenAt() {
  OnnxBuilder b;
  b.input("x", kF32, {5, 2});
  b.input("pos", kI64, {});
  b.output("y", kF32, {-1, 2});
  b.output("z", kF32, {2});
  b.initializer_i64("split", {2}, {2, 3});
  b.initializer_i64("three", {}, {3});
  b.node("SplitToSequence", {"x", "split"}, {"seq"});
  b.node("SequenceAt", {"seq", "pos"}, {"y"}, "at");
  auto* rows = b.node("SplitToSequence", {"x"}, {"rows"});
  OnnxBuilder::attr_int(rows, "keepdims", 0);
  b.node("SequenceAt", {"rows", "three"}, {"z"});
  return b;
}

TEST(Sequences, SplitToSequenceThenSequenceAt) {
  auto s = Open(SplitThenAt());
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  const std::vector<float> x = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  std::vector<Tensor> out;
  Status st = (*s)->run({{"x", F32({5, 2}, x)}, {"pos", I64(1)}}, &out);
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_EQ(out[0].shape(), (Shape{3, 2}));
  EXPECT_EQ(Values(out[0]), (std::vector<float>{4, 5, 6, 7, 8, 9}));
  ASSERT_EQ(out[1].shape(), (Shape{2}));
  EXPECT_EQ(Values(out[1]), (std::vector<float>{6, 7}));
  // A negative position counts from the end.
  st = (*s)->run({{"x", F32({5, 2}, x)}, {"pos", I64(-2)}}, &out);
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_EQ(out[0].shape(), (Shape{2, 2}));
  EXPECT_EQ(Values(out[0]), (std::vector<float>{0, 1, 2, 3}));
}

TEST(Sequences, SequenceAtOutOfRangeNamesTheNodeAndThePosition) {
  auto s = Open(SplitThenAt());
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  const std::vector<float> x(10, 1.f);
  std::vector<Tensor> out;
  for (int64_t pos : {2, -3}) {
    Status st = (*s)->run({{"x", F32({5, 2}, x)}, {"pos", I64(pos)}}, &out);
    ASSERT_FALSE(st.ok()) << pos;
    EXPECT_NE(st.message().find("node 'at' (SequenceAt)"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("position " + std::to_string(pos)), std::string::npos)
        << st.message();
    EXPECT_NE(st.message().find("a sequence of 2 tensors"), std::string::npos) << st.message();
  }
}

// seq = [a, b, c]; e = SequenceErase(seq, pos); n = SequenceLength(e); y = SequenceAt(e, 1);
// last = SequenceErase(seq) (the default: the last item), n_last = its length.
TEST(Sequences, SequenceEraseAndSequenceLength) {
  OnnxBuilder b;
  b.input("pos", kI64, {});
  b.output("n", kI64, {});
  b.output("y", kF32, {2});
  b.output("n_last", kI64, {});
  SequenceOutput(b, "last", kF32);
  b.initializer_f32("a", {2}, {1, 2});
  b.initializer_f32("b", {2}, {3, 4});
  b.initializer_f32("c", {2}, {5, 6});
  b.initializer_i64("one", {}, {1});
  b.node("SequenceConstruct", {"a", "b", "c"}, {"seq"});
  b.node("SequenceErase", {"seq", "pos"}, {"e"});
  b.node("SequenceLength", {"e"}, {"n"});
  b.node("SequenceAt", {"e", "one"}, {"y"});
  b.node("SequenceErase", {"seq"}, {"last"});
  b.node("SequenceLength", {"last"}, {"n_last"});
  auto s = Open(b);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  std::vector<Tensor> out;
  // Erasing b: [a, c]; item 1 is c. Erasing item -3 (a): [b, c].
  for (auto [pos, want] : std::vector<std::pair<int64_t, std::vector<float>>>{
           {1, {5, 6}}, {-3, {5, 6}}, {2, {3, 4}}}) {
    Status st = (*s)->run({{"pos", I64(pos)}}, &out);
    ASSERT_TRUE(st.ok()) << st.to_string();
    EXPECT_EQ(out[0].data_as<int64_t>()[0], 2);
    EXPECT_EQ(Values(out[1]), want) << "pos " << pos;
    EXPECT_EQ(out[2].data_as<int64_t>()[0], 2);
    ASSERT_EQ(out[3].dtype(), sequence_of(DType::kF32));
    ASSERT_EQ(out[3].list()->items.size(), 2u);
    EXPECT_EQ(Values(out[3].list()->items[0]), (std::vector<float>{1, 2}));
    EXPECT_EQ(Values(out[3].list()->items[1]), (std::vector<float>{3, 4}));
  }
  Status st = (*s)->run({{"pos", I64(3)}}, &out);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("SequenceErase"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("position 3"), std::string::npos) << st.message();
}

// A sequence graph input, mapped item by item: y = SequenceMap(seq, w; body: item * w), and
// passed through Identity.
TEST(Sequences, SequenceMapRunsTheBodyPerItemOfAGraphInput) {
  OnnxBuilder body;
  body.input("item", kF32, {-1});
  body.input("wt", kF32, {1});
  body.output("scaled", kF32, {-1});
  body.node("Mul", {"item", "wt"}, {"scaled"});
  OnnxBuilder b;
  SequenceInput(b, "seq", kF32);
  b.input("w", kF32, {1});
  SequenceOutput(b, "y", kF32);
  SequenceOutput(b, "same", kF32);
  auto* n = b.node("SequenceMap", {"seq", "w"}, {"y"}, "map");
  OnnxBuilder::attr_graph(n, "body", body);
  b.node("Identity", {"seq"}, {"same"});
  auto s = Open(b);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  Tensor seq = Tensor::sequence(DType::kF32, {F32({2}, {1, 2}), F32({3}, {3, 4, 5})});
  std::vector<Tensor> out;
  Status st = (*s)->run({{"seq", seq}, {"w", F32({1}, {10})}}, &out);
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_EQ(out[0].dtype(), sequence_of(DType::kF32));
  const auto& items = out[0].list()->items;
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(Values(items[0]), (std::vector<float>{10, 20}));
  EXPECT_EQ(Values(items[1]), (std::vector<float>{30, 40, 50}));
  ASSERT_EQ(out[1].list()->items.size(), 2u);
  EXPECT_EQ(Values(out[1].list()->items[1]), (std::vector<float>{3, 4, 5}));
  // The graph input's items are untouched.
  EXPECT_EQ(Values(seq.list()->items[0]), (std::vector<float>{1, 2}));
}

TEST(Sequences, ASequenceFedToATensorOpIsRefusedWhenPlanning) {
  OnnxBuilder b;
  b.input("x", kF32, {2});
  b.output("y", kF32, {2});
  b.node("SequenceConstruct", {"x"}, {"seq"});
  b.node("Relu", {"seq"}, {"y"}, "relu_of_list");
  auto s = Open(b);
  Status st = s.status();
  std::vector<Tensor> out;
  if (s.ok()) st = (*s)->run({{"x", F32({2}, {1, -1})}}, &out);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kUnsupported) << st.to_string();
  EXPECT_NE(st.message().find("relu_of_list"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("input 0 is a seq(f32) value"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("Relu takes a tensor there"), std::string::npos) << st.message();
}

// opt = Optional(x) when c, else an empty optional (If); has = OptionalHasElement(opt);
// y = OptionalGetElement(opt).
TEST(Sequences, OptionalsThroughAnIf) {
  OnnxBuilder then_b, else_b;
  // then: Optional(x); else: Optional() of type tensor(float).
  auto set_opt_tensor = [](onnx::ValueInfoProto* v, const std::string& name) {
    v->set_name(name);
    v->mutable_type()
        ->mutable_optional_type()
        ->mutable_elem_type()
        ->mutable_tensor_type()
        ->set_elem_type(kF32);
  };
  set_opt_tensor(then_b.model().mutable_graph()->add_output(), "t");
  then_b.node("Optional", {"x"}, {"t"});
  set_opt_tensor(else_b.model().mutable_graph()->add_output(), "e");
  auto* none = else_b.node("Optional", {}, {"e"});
  auto* a = none->add_attribute();
  a->set_name("type");
  a->set_type(onnx::AttributeProto::TYPE_PROTO);
  a->mutable_tp()->mutable_tensor_type()->set_elem_type(kF32);
  OnnxBuilder b;
  b.input("x", kF32, {2});
  b.input("c", kBool, {});
  b.output("has", kBool, {});
  b.output("y", kF32, {2});
  set_opt_tensor(b.model().mutable_graph()->add_value_info(), "opt");
  auto* n = b.node("If", {"c"}, {"opt"}, "maybe");
  OnnxBuilder::attr_graph(n, "then_branch", then_b);
  OnnxBuilder::attr_graph(n, "else_branch", else_b);
  b.node("OptionalHasElement", {"opt"}, {"has"});
  b.node("OptionalGetElement", {"opt"}, {"y"}, "get");
  auto s = Open(b);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  std::vector<Tensor> out;
  Status st = (*s)->run({{"x", F32({2}, {7, 8})}, {"c", Bool(true)}}, &out);
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(out[0].data_as<uint8_t>()[0], 1);
  EXPECT_EQ(Values(out[1]), (std::vector<float>{7, 8}));
  st = (*s)->run({{"x", F32({2}, {7, 8})}, {"c", Bool(false)}}, &out);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("node 'get' (OptionalGetElement): the optional is empty"),
            std::string::npos)
      << st.message();
}

}  // namespace
}  // namespace dlsys
