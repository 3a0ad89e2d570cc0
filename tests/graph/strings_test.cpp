// STRING tensors end to end: string inputs and initializers, ai.onnx.ml LabelEncoder (every key
// and value type, defaults, opset 1's classes_strings), Cast from STRING, export and import of
// string graphs, and the refusal of a string tensor by any op that takes numbers (naming the
// node). Expected values are written out by hand from the ONNX-ML operator definitions.
#include <gtest/gtest.h>

#include <cmath>

#include "graph/onnx_export.h"
#include "graph/onnx_import.h"
#include "graph/session.h"
#include "testing/onnx_builder.h"

namespace dlsys {
namespace {

using testing::OnnxBuilder;

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// A model x -> LabelEncoder(ai.onnx.ml opset 2) -> y, the encoder's attributes set by `attrs`.
template <typename F>
OnnxBuilder label_encoder(int in_type, int out_type, F attrs) {
  OnnxBuilder b(17);
  b.add_opset("ai.onnx.ml", 2);
  b.input("x", in_type, {-1});
  b.output("y", out_type, {-1});
  attrs(b.node("LabelEncoder", {"x"}, {"y"}, "enc", "ai.onnx.ml"));
  return b;
}

Result<std::vector<Tensor>> run(const std::string& bytes, const std::string& input, Tensor x) {
  DLSYS_ASSIGN_OR_RETURN(Graph g, import_onnx_bytes(bytes, "m.onnx"));
  auto s = Session::from_graph(std::move(g));
  std::vector<Tensor> out;
  DLSYS_RETURN_IF_ERROR(s->run({{input, x}}, &out));
  // The outputs are views of the plan's buffers: deep copies outlive the session.
  for (Tensor& t : out) t = t.clone();
  return out;
}

TEST(StringTensor, OwnsItsStringsAndClonesDeeply) {
  Tensor t = Tensor::from_strings({2, 2}, {"a", "bb", "", std::string(100, 'x')});
  EXPECT_EQ(t.dtype(), DType::kString);
  EXPECT_EQ(t.strings()[1], "bb");
  Tensor c = t.clone();
  c.strings()[1] = "changed";
  EXPECT_EQ(t.strings()[1], "bb") << "clone() copies the strings, not their pointers";
  EXPECT_EQ(c.strings()[3], std::string(100, 'x'));
  Tensor z = Tensor::zeros(DType::kString, {3});
  EXPECT_EQ(z.strings()[2], "") << "zeros() of strings: empty strings, not zeroed bytes";
  Tensor rows = t.slice_rows(1, 2);
  EXPECT_EQ(rows.strings()[1], std::string(100, 'x'));
  EXPECT_EQ(dtype_from_onnx(8).value(), DType::kString);
  EXPECT_EQ(dtype_to_onnx(DType::kString), 8);
  EXPECT_STREQ(dtype_name(DType::kString), "string");
}

TEST(LabelEncoder, StringsToInt64WithDefault) {
  auto b = label_encoder(onnx::TensorProto::STRING, onnx::TensorProto::INT64, [](auto* n) {
    OnnxBuilder::attr_strings(n, "keys_strings", {"red", "green", "blue"});
    OnnxBuilder::attr_ints(n, "values_int64s", {2, 1, 0});
    OnnxBuilder::attr_int(n, "default_int64", -7);
  });
  auto out = run(b.bytes(), "x", Tensor::from_strings({5}, {"blue", "purple", "red", "", "green"}));
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  ASSERT_EQ((*out)[0].dtype(), DType::kI64);
  const int64_t* y = (*out)[0].data_as<int64_t>();
  EXPECT_EQ(std::vector<int64_t>(y, y + 5), (std::vector<int64_t>{0, -7, 2, -7, 1}));
}

TEST(LabelEncoder, StringsToFloatsDefaultsToMinusZero) {
  auto b = label_encoder(onnx::TensorProto::STRING, onnx::TensorProto::FLOAT, [](auto* n) {
    OnnxBuilder::attr_strings(n, "keys_strings", {"a", "b"});
    OnnxBuilder::attr_floats(n, "values_floats", {0.5f, -1.25f});
  });
  auto out = run(b.bytes(), "x", Tensor::from_strings({3}, {"b", "c", "a"}));
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  const float* y = (*out)[0].data_as<float>();
  EXPECT_EQ(y[0], -1.25f);
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_TRUE(std::signbit(y[1])) << "ONNX-ML's default_float is -0.0";
  EXPECT_EQ(y[2], 0.5f);
}

TEST(LabelEncoder, Int64AndFloatKeysToStrings) {
  auto ints = label_encoder(onnx::TensorProto::INT64, onnx::TensorProto::STRING, [](auto* n) {
    OnnxBuilder::attr_ints(n, "keys_int64s", {1, 3});
    OnnxBuilder::attr_strings(n, "values_strings", {"one", "three"});
  });
  const int64_t x[] = {3, 2, 1};
  auto a = run(ints.bytes(), "x", Tensor::from_i64({3}, x));
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  ASSERT_EQ((*a)[0].dtype(), DType::kString);
  EXPECT_EQ((*a)[0].strings()[0], "three");
  EXPECT_EQ((*a)[0].strings()[1], "_Unused") << "ONNX-ML's default_string";
  EXPECT_EQ((*a)[0].strings()[2], "one");
  auto floats = label_encoder(onnx::TensorProto::FLOAT, onnx::TensorProto::STRING, [](auto* n) {
    OnnxBuilder::attr_floats(n, "keys_floats", {1.5f, NAN});
    OnnxBuilder::attr_strings(n, "values_strings", {"x", "nan"});
    OnnxBuilder::attr_string(n, "default_string", "?");
  });
  const float f[] = {NAN, 1.5f, 2.0f};
  auto c = run(floats.bytes(), "x", Tensor::from_f32({3}, f));
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ((*c)[0].strings()[0], "nan") << "a NaN key matches a NaN input";
  EXPECT_EQ((*c)[0].strings()[1], "x");
  EXPECT_EQ((*c)[0].strings()[2], "?");
}

TEST(LabelEncoder, Opset1ClassesStrings) {
  OnnxBuilder b(17);
  b.add_opset("ai.onnx.ml", 1);
  b.input("x", onnx::TensorProto::STRING, {-1});
  b.output("y", onnx::TensorProto::INT64, {-1});
  auto* n = b.node("LabelEncoder", {"x"}, {"y"}, "enc", "ai.onnx.ml");
  OnnxBuilder::attr_strings(n, "classes_strings", {"cat", "dog"});
  OnnxBuilder::attr_int(n, "default_int64", 9);
  auto out = run(b.bytes(), "x", Tensor::from_strings({3}, {"dog", "cow", "cat"}));
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  const int64_t* y = (*out)[0].data_as<int64_t>();
  EXPECT_EQ(std::vector<int64_t>(y, y + 3), (std::vector<int64_t>{1, 9, 0}));
}

TEST(LabelEncoder, BadTablesAndInputsAreNamed) {
  auto mismatch = label_encoder(onnx::TensorProto::STRING, onnx::TensorProto::INT64, [](auto* n) {
    OnnxBuilder::attr_strings(n, "keys_strings", {"a", "b"});
    OnnxBuilder::attr_ints(n, "values_int64s", {1});
  });
  auto r = run(mismatch.bytes(), "x", Tensor::from_strings({1}, {"a"}));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(contains(r.status().message(), "node 'enc' (LabelEncoder)")) << r.status().message();
  EXPECT_TRUE(contains(r.status().message(), "2 keys and 1 values")) << r.status().message();
  auto twice = label_encoder(onnx::TensorProto::STRING, onnx::TensorProto::INT64, [](auto* n) {
    OnnxBuilder::attr_strings(n, "keys_strings", {"a", "a"});
    OnnxBuilder::attr_ints(n, "values_int64s", {1, 2});
  });
  r = run(twice.bytes(), "x", Tensor::from_strings({1}, {"a"}));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(contains(r.status().message(), "listed twice")) << r.status().message();
  // String keys, but an int64 input.
  auto wrong = label_encoder(onnx::TensorProto::INT64, onnx::TensorProto::INT64, [](auto* n) {
    OnnxBuilder::attr_strings(n, "keys_strings", {"a"});
    OnnxBuilder::attr_ints(n, "values_int64s", {1});
  });
  const int64_t one = 1;
  r = run(wrong.bytes(), "x", Tensor::from_i64({1}, &one));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(contains(r.status().message(), "the input must be string")) << r.status().message();
}

TEST(LabelEncoder, OnlyInTheMlDomain) {
  // LabelEncoder is not an ai.onnx op: in the default domain it is an unsupported op.
  OnnxBuilder b(17);
  b.input("x", onnx::TensorProto::STRING, {-1});
  b.output("y", onnx::TensorProto::STRING, {-1});
  b.node("LabelEncoder", {"x"}, {"y"}, "enc");
  auto g = import_onnx_bytes(b.bytes(), "m.onnx");
  ASSERT_FALSE(g.ok());
  EXPECT_TRUE(contains(g.status().message(), "LabelEncoder")) << g.status().message();
  // Nor in a domain of its own.
  OnnxBuilder c(17);
  c.add_opset("com.example", 1);
  c.input("x", onnx::TensorProto::STRING, {-1});
  c.output("y", onnx::TensorProto::STRING, {-1});
  c.node("LabelEncoder", {"x"}, {"y"}, "enc", "com.example");
  g = import_onnx_bytes(c.bytes(), "m.onnx");
  ASSERT_FALSE(g.ok());
  EXPECT_TRUE(
      contains(g.status().message(), "com.example.LabelEncoder (node 'enc', com.example opset 1)"))
      << g.status().message();
}

TEST(StringGuard, NumericOpsRefuseStringsNamingTheNode) {
  OnnxBuilder b(17);
  b.input("x", onnx::TensorProto::STRING, {-1});
  b.output("y", onnx::TensorProto::STRING, {-1});
  b.node("Relu", {"x"}, {"y"}, "the_relu");
  auto r = run(b.bytes(), "x", Tensor::from_strings({2}, {"1", "2"}));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
  EXPECT_TRUE(contains(r.status().message(), "node 'the_relu' (Relu)")) << r.status().message();
  EXPECT_TRUE(contains(r.status().message(), "input 0 is a STRING tensor")) << r.status().message();
  EXPECT_TRUE(contains(r.status().message(), "LabelEncoder")) << r.status().message();
  // A constant string input is refused the same way (constant folding must not run the kernel).
  OnnxBuilder c(17);
  c.initializer_strings("s", {2}, {"a", "b"});
  c.input("x", onnx::TensorProto::FLOAT, {2});
  c.output("y", onnx::TensorProto::FLOAT, {2});
  c.node("Add", {"x", "s"}, {"y"}, "add_strings");
  const float x[] = {1, 2};
  r = run(c.bytes(), "x", Tensor::from_f32({2}, x));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(contains(r.status().message(), "node 'add_strings' (Add)")) << r.status().message();
}

TEST(StringGuard, CastReadsNumbersFromStringsAndRefusesBoolToString) {
  OnnxBuilder b(17);
  b.input("x", onnx::TensorProto::STRING, {-1});
  b.output("y", onnx::TensorProto::FLOAT, {-1});
  OnnxBuilder::attr_int(b.node("Cast", {"x"}, {"y"}, "c"), "to", onnx::TensorProto::FLOAT);
  auto out = run(b.bytes(), "x", Tensor::from_strings({4}, {"1.5", "-2e3", "NaN", "-INF"}));
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  const float* y = (*out)[0].data_as<float>();
  EXPECT_EQ(y[0], 1.5f);
  EXPECT_EQ(y[1], -2000.0f);
  EXPECT_TRUE(std::isnan(y[2]));
  EXPECT_EQ(y[3], -INFINITY);
  auto bad = run(b.bytes(), "x", Tensor::from_strings({1}, {"twelve"}));
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(contains(bad.status().message(), "'twelve', not a number")) << bad.status().message();
  OnnxBuilder to(17);
  to.input("x", onnx::TensorProto::BOOL, {2});
  to.output("y", onnx::TensorProto::STRING, {2});
  OnnxBuilder::attr_int(to.node("Cast", {"x"}, {"y"}, "to_str"), "to", onnx::TensorProto::STRING);
  auto r = run(to.bytes(), "x", Tensor::zeros(DType::kBool, {2}));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(contains(r.status().message(), "node 'to_str' (Cast)")) << r.status().message();
  EXPECT_TRUE(contains(r.status().message(), "BOOL to STRING")) << r.status().message();
}

TEST(StringGraph, InitializersShapesAndRepeatedRuns) {
  // A string initializer through Reshape, and a string input through Identity and LabelEncoder.
  OnnxBuilder b(17);
  b.add_opset("ai.onnx.ml", 2);
  b.initializer_strings("names", {2}, {"p", "q"});
  b.initializer_i64("shape", {2}, {1, 2});
  b.input("x", onnx::TensorProto::STRING, {-1, 1});
  b.output("names2d", onnx::TensorProto::STRING, {1, 2});
  b.output("same", onnx::TensorProto::STRING, {-1, 1});
  b.output("codes", onnx::TensorProto::INT64, {-1, 1});
  b.node("Reshape", {"names", "shape"}, {"names2d"}, "reshape");
  b.node("Identity", {"x"}, {"same"}, "id");
  auto* n = b.node("LabelEncoder", {"x"}, {"codes"}, "enc", "ai.onnx.ml");
  OnnxBuilder::attr_strings(n, "keys_strings", {"p", "q"});
  OnnxBuilder::attr_ints(n, "values_int64s", {5, 6});
  auto g = import_onnx_bytes(b.bytes(), "m.onnx");
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  auto s = Session::from_graph(std::move(g).value());
  // Small inputs may be fixed into a plan (Session::kMaxFixedElements); strings never are, so a
  // second run with other strings of the same shape gives the new answers.
  for (const std::vector<std::string>& x :
       {std::vector<std::string>{"q", "p"}, std::vector<std::string>{"p", "zz"}}) {
    std::vector<Tensor> out;
    // Kept alive: the output "same" is a view of this input.
    Tensor in = Tensor::from_strings({2, 1}, x);
    ASSERT_TRUE(s->run({{"x", in}}, &out).ok());
    ASSERT_EQ(out.size(), 3u);
    EXPECT_EQ(out[0].shape(), (Shape{1, 2}));
    EXPECT_EQ(out[0].strings()[1], "q");
    EXPECT_EQ(out[1].strings()[0], x[0]);
    EXPECT_EQ(out[1].strings()[1], x[1]);
    for (int i = 0; i < 2; ++i)
      EXPECT_EQ(out[2].data_as<int64_t>()[i], x[i] == "p" ? 5 : x[i] == "q" ? 6 : -1) << x[i];
  }
  // A number where the model takes strings is refused before any kernel runs.
  std::vector<Tensor> out;
  const float f[] = {1, 2};
  Status st = s->run({{"x", Tensor::from_f32({2, 1}, f)}}, &out);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(contains(st.message(), "expected dtype string, got f32")) << st.message();
}

TEST(StringGraph, ConstantsOfStringsMergeOnlyWhenEqual) {
  // Common-subexpression elimination compares string constants by their strings.
  OnnxBuilder b(17);
  for (const char* out : {"p", "q", "r"}) b.output(out, onnx::TensorProto::STRING, {2});
  auto constant = [&](const std::string& out, const std::vector<std::string>& v) {
    auto* n = b.node("Constant", {}, {out}, "const_" + out);
    auto* a = n->add_attribute();
    a->set_name("value");
    a->set_type(onnx::AttributeProto::TENSOR);
    a->mutable_t()->set_data_type(onnx::TensorProto::STRING);
    a->mutable_t()->add_dims(2);
    for (const auto& x : v) a->mutable_t()->add_string_data(x);
  };
  constant("p", {"a", "b"});
  constant("q", {"a", "b"});
  constant("r", {"a", "c"});
  auto g = import_onnx_bytes(b.bytes(), "m.onnx");
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  auto s = Session::from_graph(std::move(g).value());
  std::vector<Tensor> out;
  Status st = s->run({}, &out);
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].strings()[1], "b");
  EXPECT_EQ(out[1].strings()[1], "b");
  EXPECT_EQ(out[2].strings()[1], "c") << "a different string constant stays itself";
}

TEST(StringGraph, ExportWritesStringsAndTheMlOpset) {
  Graph g;
  g.opset = 17;
  g.inputs.push_back(ValueInfo{"color", DType::kString, true, {Dim{-1, "batch"}, Dim{1, ""}}});
  g.outputs.push_back(ValueInfo{"code", DType::kF32, true, {Dim{-1, "batch"}, Dim{1, ""}}});
  g.outputs.push_back(ValueInfo{"vocab", DType::kString, true, {Dim{2, ""}}});
  g.initializers["vocab_const"] = Tensor::from_strings({2}, {"blue", "red"});
  Node enc;
  enc.name = "enc";
  enc.op_type = "LabelEncoder";
  enc.domain = "ai.onnx.ml";
  enc.inputs = {"color"};
  enc.outputs = {"code"};
  Attribute keys;
  keys.kind = Attribute::Kind::kStrings;
  keys.strings = {"blue", "red"};
  Attribute values;
  values.kind = Attribute::Kind::kFloats;
  values.floats = {0, 1};
  enc.attrs["keys_strings"] = keys;
  enc.attrs["values_floats"] = values;
  enc.attrs["default_float"] = Attribute::of_float(-1);
  g.nodes.push_back(enc);
  Node id;
  id.name = "id";
  id.op_type = "Identity";
  id.inputs = {"vocab_const"};
  id.outputs = {"vocab"};
  g.nodes.push_back(id);
  auto bytes = export_onnx_bytes(g);
  ASSERT_TRUE(bytes.ok()) << bytes.status().to_string();
  onnx::ModelProto m;
  ASSERT_TRUE(m.ParseFromString(*bytes));
  bool ml = false;
  for (const auto& o : m.opset_import())
    ml = ml || (o.domain() == "ai.onnx.ml" && o.version() == 2);
  EXPECT_TRUE(ml) << "the exported model imports ai.onnx.ml opset 2";
  ASSERT_EQ(m.graph().initializer_size(), 1);
  EXPECT_EQ(m.graph().initializer(0).string_data_size(), 2);
  EXPECT_FALSE(m.graph().initializer(0).has_raw_data());
  auto back = import_onnx_bytes(*bytes, "exported.onnx");
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  auto s = Session::from_graph(std::move(back).value());
  std::vector<Tensor> out;
  ASSERT_TRUE(
      s->run({{"color", Tensor::from_strings({3, 1}, {"red", "green", "blue"})}}, &out).ok());
  const float* code = out[0].data_as<float>();
  EXPECT_EQ(std::vector<float>(code, code + 3), (std::vector<float>{1, -1, 0}));
  EXPECT_EQ(out[1].strings()[0], "blue");
}

// StringNormalizer: case changes at run time; stopwords (case-insensitive by default) on a
// constant input, where the output's length is known when the plan is built; all words removed
// leave one empty string; stopwords on a graph input, where the length is known only per run.
TEST(StringNormalizer, ChangesCaseAndRemovesStopwords) {
  auto normalizer = [](const std::string& action, std::vector<std::string> stop, bool constant,
                       std::vector<int64_t> dims, std::vector<std::string> words) {
    OnnxBuilder b(17);
    if (constant)
      b.initializer_strings("x", dims, words);
    else
      b.input("x", onnx::TensorProto::STRING, dims);
    b.output("y", onnx::TensorProto::STRING, {});
    auto* n = b.node("StringNormalizer", {"x"}, {"y"}, "norm");
    OnnxBuilder::attr_string(n, "case_change_action", action);
    if (!stop.empty()) OnnxBuilder::attr_strings(n, "stopwords", stop);
    return b;
  };
  auto strings = [](const Tensor& t) {
    return std::vector<std::string>(t.strings(), t.strings() + t.numel());
  };
  // Run time: no stopwords, the input's shape.
  auto upper = normalizer("UPPER", {}, false, {3}, {});
  auto r = run(upper.bytes(), "x", Tensor::from_strings({3}, {"Monday", "tuesday", "ß1a"}));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(strings((*r)[0]), (std::vector<std::string>{"MONDAY", "TUESDAY", "ß1A"}));
  // A constant [1, C]: "monday" and "THE" are stopwords whatever their case.
  auto lower = normalizer("LOWER", {"monday", "the"}, true, {1, 4}, {"Monday", "is", "THE", "Day"});
  auto g = import_onnx_bytes(lower.bytes(), "m.onnx");
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  auto s = Session::from_graph(std::move(g).value());
  std::vector<Tensor> out;
  ASSERT_TRUE(s->run({}, &out).ok());
  EXPECT_EQ(out[0].shape(), (Shape{1, 2}));
  EXPECT_EQ(strings(out[0]), (std::vector<std::string>{"is", "day"}));
  // Every word a stopword: one empty string.
  auto empty = normalizer("NONE", {"a", "b"}, true, {2}, {"A", "b"});
  auto ge = import_onnx_bytes(empty.bytes(), "m.onnx");
  ASSERT_TRUE(ge.ok());
  auto se = Session::from_graph(std::move(ge).value());
  ASSERT_TRUE(se->run({}, &out).ok());
  EXPECT_EQ(out[0].shape(), (Shape{1}));
  EXPECT_EQ(strings(out[0]), (std::vector<std::string>{""}));
  // Stopwords on a graph input: the length is known only when it runs, per text.
  auto dynamic = normalizer("UPPER", {"a"}, false, {3}, {});
  r = run(dynamic.bytes(), "x", Tensor::from_strings({3}, {"a", "b", "A"}));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(strings((*r)[0]), (std::vector<std::string>{"B"}));
  r = run(dynamic.bytes(), "x", Tensor::from_strings({3}, {"c", "b", "d"}));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(strings((*r)[0]), (std::vector<std::string>{"C", "B", "D"}));
}

// Cast to STRING: floats as the shortest text that reads back to the same float (what NumPy
// prints for float32), integers in decimal, NaN/INF/-INF as the cast from STRING reads them;
// and back again to the same values.
TEST(StringTensor, CastNumbersToStringAndBack) {
  auto cast = [](int from, int to) {
    OnnxBuilder b(17);
    b.input("x", from, {-1});
    b.output("y", to, {-1});
    OnnxBuilder::attr_int(b.node("Cast", {"x"}, {"y"}, "cast"), "to", to);
    return b;
  };
  const std::vector<float> f = {0.039187793f, 0.1f, -2.5f, 1e20f, 7.f, NAN, INFINITY, -INFINITY};
  auto r = run(cast(onnx::TensorProto::FLOAT, onnx::TensorProto::STRING).bytes(), "x",
               Tensor::from_f32({8}, f.data()));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const Tensor& text = (*r)[0];
  EXPECT_EQ(
      std::vector<std::string>(text.strings(), text.strings() + 8),
      (std::vector<std::string>{"0.039187793", "0.1", "-2.5", "1e+20", "7", "NaN", "INF", "-INF"}));
  auto back = run(cast(onnx::TensorProto::STRING, onnx::TensorProto::FLOAT).bytes(), "x", text);
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  for (int i = 0; i < 5; ++i) EXPECT_EQ((*back)[0].data_as<float>()[i], f[i]) << i;
  EXPECT_TRUE(std::isnan((*back)[0].data_as<float>()[5]));
  EXPECT_EQ((*back)[0].data_as<float>()[7], -INFINITY);
  const std::vector<int64_t> n = {-9000000000000LL, 0, 42};
  auto ints = run(cast(onnx::TensorProto::INT64, onnx::TensorProto::STRING).bytes(), "x",
                  Tensor::from_i64({3}, n.data()));
  ASSERT_TRUE(ints.ok()) << ints.status().to_string();
  EXPECT_EQ(std::vector<std::string>((*ints)[0].strings(), (*ints)[0].strings() + 3),
            (std::vector<std::string>{"-9000000000000", "0", "42"}));
}

}  // namespace
}  // namespace dlsys
