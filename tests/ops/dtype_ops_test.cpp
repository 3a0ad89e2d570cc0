// The element types without a oneDNN type (f64, i16, u16, u32, u64): TensorProto reading, Cast
// between every pair of dtypes, and the plain C++ kernels that take them. Expected values are
// computed by hand (or with Python's exact integers and IEEE doubles), never by dlsys.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "graph/onnx_import.h"
#include "graph/session.h"
#include "ops/dnnl_util.h"

namespace dlsys {
namespace {

constexpr DType kAll[] = {DType::kF32, DType::kBF16, DType::kF16,  DType::kI8,  DType::kU8,
                          DType::kI32, DType::kI64,  DType::kBool, DType::kF64, DType::kI16,
                          DType::kU16, DType::kU32,  DType::kU64};

template <typename T>
Tensor make(DType t, const Shape& shape, std::initializer_list<T> values) {
  Tensor x = Tensor::empty(t, shape);
  EXPECT_EQ(sizeof(T), dtype_size(t));
  EXPECT_EQ(static_cast<int64_t>(values.size()), x.numel());
  std::memcpy(x.data(), values.begin(), values.size() * sizeof(T));
  return x;
}

// Runs one node `op` on inputs x0, x1, ... (graph inputs of their dtypes and shapes); `out` is
// the declared output dtype. Returns the output, or an invalid tensor after a failed check.
// `constants` follow the inputs as initializers (for inputs an op needs when the plan is built);
// `more_outputs` name the node's outputs after the first (not graph outputs).
Tensor run_node(const std::string& op, const std::vector<Tensor>& in, DType out,
                AttributeMap attrs = {}, const std::vector<Tensor>& constants = {},
                const std::vector<std::string>& more_outputs = {}) {
  Graph g;
  g.opset = 17;
  std::map<std::string, Tensor> feeds;
  std::vector<std::string> names;
  for (size_t i = 0; i < in.size(); ++i) {
    ValueInfo v{"x" + std::to_string(i), in[i].dtype(), true, {}};
    for (int64_t d : in[i].shape()) v.dims.push_back(Dim{d, ""});
    g.inputs.push_back(v);
    names.push_back(v.name);
    feeds[v.name] = in[i];
  }
  for (size_t i = 0; i < constants.size(); ++i) {
    names.push_back("c" + std::to_string(i));
    g.initializers[names.back()] = constants[i];
  }
  std::vector<std::string> outputs = {"y"};
  outputs.insert(outputs.end(), more_outputs.begin(), more_outputs.end());
  g.nodes.push_back(Node{"n", op, "", names, outputs, std::move(attrs)});
  g.outputs.push_back(ValueInfo{"y", out, false, {}});
  auto s = Session::from_graph(g);
  std::vector<Tensor> got;
  Status st = s->run(feeds, &got);
  EXPECT_TRUE(st.ok()) << op << ": " << st.message();
  if (!st.ok()) return Tensor();
  EXPECT_EQ(got[0].dtype(), out) << op;
  return got[0].clone();
}

// Relu, Abs and Neg on a dtype their loop does not cover are refused naming it (their output was
// left unwritten before).
TEST(WideDtypes, ElementwiseLoopsRefuseDtypesTheyDoNotCover) {
  for (const char* op : {"Relu", "Abs", "Neg"}) {
    Graph g;
    g.opset = 17;
    ValueInfo x{"x", DType::kBool, true, {Dim{4, ""}}};
    g.inputs.push_back(x);
    g.nodes.push_back(Node{"n", op, "", {"x"}, {"y"}, {}});
    g.outputs.push_back(ValueInfo{"y", DType::kBool, false, {}});
    auto s = Session::from_graph(g);
    std::vector<Tensor> got;
    Status st = s->run({{"x", Tensor::empty(DType::kBool, {4})}}, &got);
    EXPECT_EQ(st.code(), StatusCode::kUnsupported) << op;
    EXPECT_NE(st.message().find("bool"), std::string::npos) << st.message();
  }
}

// f16 and bf16 elementwise math (unary loops, binary arithmetic, Mod): widened to f32, computed,
// rounded back once; the values here are exact in both formats.
TEST(WideDtypes, HalfPrecisionArithmeticRoundsOnce) {
  for (DType t : {DType::kF16, DType::kBF16}) {
    auto half = [t](std::initializer_list<float> v) {
      Tensor x = Tensor::empty(t, {static_cast<int64_t>(v.size())});
      int64_t i = 0;
      for (float f : v)
        x.data_as<uint16_t>()[i++] = t == DType::kF16 ? f32_to_f16(f) : f32_to_bf16(f);
      return x;
    };
    auto values = [t](const Tensor& y) {
      std::vector<float> v;
      for (int64_t i = 0; i < y.numel(); ++i)
        v.push_back(t == DType::kF16 ? f16_to_f32(y.data_as<uint16_t>()[i])
                                     : bf16_to_f32(y.data_as<uint16_t>()[i]));
      return v;
    };
    Tensor a = half({-1.5f, 2.f, 0.25f, -8.f}), b = half({2.f, -3.f, 0.5f, 3.f});
    EXPECT_EQ(values(run_node("Relu", {a}, t)), (std::vector<float>{0, 2, 0.25f, 0}));
    EXPECT_EQ(values(run_node("Abs", {a}, t)), (std::vector<float>{1.5f, 2, 0.25f, 8}));
    EXPECT_EQ(values(run_node("Neg", {a}, t)), (std::vector<float>{1.5f, -2, -0.25f, 8}));
    EXPECT_EQ(values(run_node("Max", {a, b}, t)), (std::vector<float>{2, 2, 0.5f, 3}));
    EXPECT_EQ(values(run_node("Min", {a, b}, t)), (std::vector<float>{-1.5f, -3, 0.25f, -8}));
    EXPECT_EQ(values(run_node("Add", {a, b}, t)), (std::vector<float>{0.5f, -1, 0.75f, -5}));
    EXPECT_EQ(values(run_node("Mul", {a, b}, t)), (std::vector<float>{-3, -6, 0.125f, -24}));
    AttributeMap fmod;
    fmod["fmod"] = Attribute::of_int(1);
    EXPECT_EQ(values(run_node("Mod", {a, b}, t, fmod)), (std::vector<float>{-1.5f, 2, 0.25f, -2}));
  }
}

TEST(WideDtypes, HaveNoOneDnnTypeAndOnnxNamesRoundTrip) {
  for (DType t : {DType::kF64, DType::kI16, DType::kU16, DType::kU32, DType::kU64}) {
    EXPECT_FALSE(dnnl_has(t)) << dtype_name(t);
    EXPECT_EQ(to_dnnl(t), dnnl::memory::data_type::undef) << dtype_name(t);
  }
  EXPECT_TRUE(dnnl_has(DType::kF32));
  EXPECT_FALSE(dnnl_has(DType::kI64));
  // ONNX TensorProto.DataType numbers from onnx.proto.
  EXPECT_EQ(dtype_to_onnx(DType::kF64), 11);
  EXPECT_EQ(dtype_to_onnx(DType::kI16), 5);
  EXPECT_EQ(dtype_to_onnx(DType::kU16), 4);
  EXPECT_EQ(dtype_to_onnx(DType::kU32), 12);
  EXPECT_EQ(dtype_to_onnx(DType::kU64), 13);
}

TEST(WideDtypes, TensorProtoTypedFieldsAndRawData) {
  auto parse = [](const onnx::TensorProto& p) {
    auto t = parse_onnx_tensor(p.SerializeAsString(), "t.pb");
    EXPECT_TRUE(t.ok()) << t.status().message();
    return t.ok() ? t.value() : Tensor();
  };
  onnx::TensorProto d;
  d.set_data_type(onnx::TensorProto::DOUBLE);
  d.add_dims(2);
  d.add_double_data(0.1);
  d.add_double_data(-4503599627370497.0);  // 2^52 + 1: not a float
  Tensor td = parse(d);
  ASSERT_EQ(td.dtype(), DType::kF64);
  EXPECT_EQ(td.data_as<double>()[0], 0.1);
  EXPECT_EQ(td.data_as<double>()[1], -4503599627370497.0);

  onnx::TensorProto u;  // uint64 and uint32 come in uint64_data
  u.set_data_type(onnx::TensorProto::UINT64);
  u.add_dims(2);
  u.add_uint64_data(18446744073709551615ull);
  u.add_uint64_data(3);
  Tensor tu = parse(u);
  ASSERT_EQ(tu.dtype(), DType::kU64);
  EXPECT_EQ(tu.data_as<uint64_t>()[0], 18446744073709551615ull);
  EXPECT_EQ(tu.data_as<uint64_t>()[1], 3u);
  u.set_data_type(onnx::TensorProto::UINT32);
  u.set_uint64_data(0, 4294967295u);
  Tensor tu32 = parse(u);
  ASSERT_EQ(tu32.dtype(), DType::kU32);
  EXPECT_EQ(tu32.data_as<uint32_t>()[0], 4294967295u);

  onnx::TensorProto s;  // int16 and uint16 come in int32_data
  s.set_data_type(onnx::TensorProto::INT16);
  s.add_dims(2);
  s.add_int32_data(-32768);
  s.add_int32_data(123);
  Tensor ts = parse(s);
  ASSERT_EQ(ts.dtype(), DType::kI16);
  EXPECT_EQ(ts.data_as<int16_t>()[0], -32768);
  EXPECT_EQ(ts.data_as<int16_t>()[1], 123);
  s.set_data_type(onnx::TensorProto::UINT16);
  s.set_int32_data(0, 65535);
  Tensor tus = parse(s);
  ASSERT_EQ(tus.dtype(), DType::kU16);
  EXPECT_EQ(tus.data_as<uint16_t>()[0], 65535);

  onnx::TensorProto r;  // raw little-endian bytes: 1.5 is 0x3FF8000000000000
  r.set_data_type(onnx::TensorProto::DOUBLE);
  r.add_dims(1);
  r.set_raw_data(std::string("\x00\x00\x00\x00\x00\x00\xf8\x3f", 8));
  Tensor tr = parse(r);
  ASSERT_EQ(tr.dtype(), DType::kF64);
  EXPECT_EQ(tr.data_as<double>()[0], 1.5);
  r.set_raw_data(std::string(4, '\0'));
  auto short_raw = parse_onnx_tensor(r.SerializeAsString(), "t.pb");
  ASSERT_FALSE(short_raw.ok());
  EXPECT_NE(short_raw.status().message().find("needs 8"), std::string::npos)
      << short_raw.status().message();
}

TEST(WideDtypes, CastBetweenEveryPairOfDtypes) {
  // 0, 1, 2 and 100 are exact in every dtype (bool: nonzero is true).
  const double values[] = {0, 1, 2, 100};
  const uint16_t kBf16[] = {0, 0x3F80, 0x4000, 0x42C8};  // the same in bfloat16
  const uint16_t kF16[] = {0, 0x3C00, 0x4000, 0x5640};   // and in IEEE half
  for (DType from : kAll)
    for (DType to : kAll) {
      Tensor x = Tensor::empty(from, {4});
      // Built from the bit patterns by hand, not by dlsys's own conversion.
      for (int64_t i = 0; i < 4; ++i) {
        double v = from == DType::kBool ? (values[i] != 0) : values[i];
        switch (from) {
          case DType::kF32:
            x.data_as<float>()[i] = static_cast<float>(v);
            break;
          case DType::kF64:
            x.data_as<double>()[i] = v;
            break;
          case DType::kBF16:
            x.data_as<uint16_t>()[i] = kBf16[i];
            break;
          case DType::kF16:
            x.data_as<uint16_t>()[i] = kF16[i];
            break;
          case DType::kI8:
          case DType::kU8:
          case DType::kBool:
            x.data_as<uint8_t>()[i] = static_cast<uint8_t>(v);
            break;
          case DType::kI16:
          case DType::kU16:
            x.data_as<uint16_t>()[i] = static_cast<uint16_t>(v);
            break;
          case DType::kI32:
          case DType::kU32:
            x.data_as<uint32_t>()[i] = static_cast<uint32_t>(v);
            break;
          case DType::kI64:
          case DType::kU64:
            x.data_as<uint64_t>()[i] = static_cast<uint64_t>(v);
            break;
        }
      }
      AttributeMap a;
      a["to"] = Attribute::of_int(dtype_to_onnx(to));
      Tensor y = run_node("Cast", {x}, to, a);
      ASSERT_TRUE(y.valid()) << dtype_name(from) << " -> " << dtype_name(to);
      for (int64_t i = 0; i < 4; ++i) {
        double want = (from == DType::kBool || to == DType::kBool) ? (values[i] != 0) : values[i];
        EXPECT_EQ(y.get_f64(i), want)
            << dtype_name(from) << " -> " << dtype_name(to) << " element " << i;
      }
    }
}

TEST(WideDtypes, CastEdgeValues) {
  auto cast = [](const Tensor& x, DType to) {
    AttributeMap a;
    a["to"] = Attribute::of_int(dtype_to_onnx(to));
    return run_node("Cast", {x}, to, a);
  };
  // u64 beyond INT64_MAX keeps its value as a double and wraps into i64 (as numpy's astype).
  Tensor big = make<uint64_t>(DType::kU64, {2}, {18446744073709551615ull, 9223372036854775808ull});
  Tensor bd = cast(big, DType::kF64);
  EXPECT_EQ(bd.data_as<double>()[0], 18446744073709551616.0);
  EXPECT_EQ(bd.data_as<double>()[1], 9223372036854775808.0);
  Tensor bi = cast(big, DType::kI64);
  EXPECT_EQ(bi.data_as<int64_t>()[0], -1);
  EXPECT_EQ(bi.data_as<int64_t>()[1], std::numeric_limits<int64_t>::min());
  // Floats truncate toward zero; 2^63 and 3e9 fit u64 and u32.
  Tensor f = make<double>(DType::kF64, {3}, {-1.75, 9223372036854775808.0, 3e9});
  Tensor fi16 = cast(f, DType::kI16);
  EXPECT_EQ(fi16.data_as<int16_t>()[0], -1);
  Tensor fu64 = cast(f, DType::kU64);
  EXPECT_EQ(fu64.data_as<uint64_t>()[1], 9223372036854775808ull);
  EXPECT_EQ(fu64.data_as<uint64_t>()[2], 3000000000ull);
  Tensor fu32 = cast(f, DType::kU32);
  EXPECT_EQ(fu32.data_as<uint32_t>()[2], 3000000000u);
  // Integers wrap into narrower ones: -1 is 65535 as u16; 70000 is 4464 as i16.
  Tensor n = make<int64_t>(DType::kI64, {2}, {-1, 70000});
  Tensor nu16 = cast(n, DType::kU16);
  EXPECT_EQ(nu16.data_as<uint16_t>()[0], 65535);
  Tensor ni16 = cast(n, DType::kI16);
  EXPECT_EQ(ni16.data_as<int16_t>()[1], 4464);
  // f64 -> f16 and bf16 round once: 1 + 2^-11 + 2^-40 lies just above the midpoint of 1 and the
  // next half 1 + 2^-10 (0x3C01), and of 1 and the next bfloat16 1 + 2^-7 (0x3F81) when 2^-11
  // becomes 2^-8. Rounding through float first would land on the midpoint and tie to 1.0.
  Tensor mid = make<double>(DType::kF64, {2},
                            {1 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40),
                             1 + std::ldexp(1.0, -8) + std::ldexp(1.0, -40)});
  Tensor h = cast(mid, DType::kF16);
  EXPECT_EQ(h.data_as<uint16_t>()[0], 0x3C01);
  Tensor bh = cast(mid, DType::kBF16);
  EXPECT_EQ(bh.data_as<uint16_t>()[1], 0x3F81);
  // The same for an i64 beyond float's 24 bits: 2^30 + 2^22 + 1 lies just above the midpoint of
  // the bfloat16s 2^30 and 2^30 + 2^23 (0x4E81).
  Tensor big_i = make<int64_t>(DType::kI64, {1}, {(int64_t{1} << 30) + (int64_t{1} << 22) + 1});
  EXPECT_EQ(cast(big_i, DType::kBF16).data_as<uint16_t>()[0], 0x4E81);
  // f64 -> f32 rounds once: 0.1 becomes the float nearest 0.1.
  Tensor tenth = make<double>(DType::kF64, {1}, {0.1});
  EXPECT_EQ(cast(tenth, DType::kF32).data_as<float>()[0], 0.1f);
}

TEST(WideDtypes, ArithmeticKeepsEachTypesRange) {
  // f64 holds 2^52 + 1, f32 would not: the difference is exactly 1.
  Tensor a = make<double>(DType::kF64, {2}, {4503599627370497.0, 0.5});
  Tensor b = make<double>(DType::kF64, {2}, {4503599627370496.0, 0.25});
  Tensor d = run_node("Sub", {a, b}, DType::kF64);
  EXPECT_EQ(d.data_as<double>()[0], 1.0);
  EXPECT_EQ(d.data_as<double>()[1], 0.25);
  // u64 compares unsigned: 2^63 + 1 is larger than 7.
  Tensor u = make<uint64_t>(DType::kU64, {2}, {9223372036854775809ull, 5});
  Tensor v = make<uint64_t>(DType::kU64, {2}, {7, 18446744073709551615ull});
  Tensor mx = run_node("Max", {u, v}, DType::kU64);
  EXPECT_EQ(mx.data_as<uint64_t>()[0], 9223372036854775809ull);
  EXPECT_EQ(mx.data_as<uint64_t>()[1], 18446744073709551615ull);
  Tensor mn = run_node("Min", {u, v, v}, DType::kU64);
  EXPECT_EQ(mn.data_as<uint64_t>()[0], 7u);
  EXPECT_EQ(mn.data_as<uint64_t>()[1], 5u);
  Tensor gt = run_node("Greater", {u, v}, DType::kBool);
  EXPECT_EQ(gt.data_as<uint8_t>()[0], 1);
  EXPECT_EQ(gt.data_as<uint8_t>()[1], 0);
  // Mod: u32 4000000000 % 7 = 3 (Python); i16 with fmod=0 takes the divisor's sign: -7 % 3 = 2,
  // 7 % -3 = -2.
  Tensor m32 = run_node(
      "Mod",
      {make<uint32_t>(DType::kU32, {1}, {4000000000u}), make<uint32_t>(DType::kU32, {1}, {7u})},
      DType::kU32);
  EXPECT_EQ(m32.data_as<uint32_t>()[0], 3u);
  Tensor m16 = run_node(
      "Mod", {make<int16_t>(DType::kI16, {2}, {-7, 7}), make<int16_t>(DType::kI16, {2}, {3, -3})},
      DType::kI16);
  EXPECT_EQ(m16.data_as<int16_t>()[0], 2);
  EXPECT_EQ(m16.data_as<int16_t>()[1], -2);
  // f64 Mod needs fmod=1 and keeps the dividend's sign: fmod(-7.5, 2) = -1.5.
  AttributeMap fm;
  fm["fmod"] = Attribute::of_int(1);
  Tensor mf =
      run_node("Mod", {make<double>(DType::kF64, {1}, {-7.5}), make<double>(DType::kF64, {1}, {2})},
               DType::kF64, fm);
  EXPECT_EQ(mf.data_as<double>()[0], -1.5);
  // Pow with a u64 exponent: 2^3, 3^2.
  Tensor p = run_node(
      "Pow", {make<float>(DType::kF32, {2}, {2, 3}), make<uint64_t>(DType::kU64, {2}, {3, 2})},
      DType::kF32);
  EXPECT_EQ(p.data_as<float>()[0], 8.f);
  EXPECT_EQ(p.data_as<float>()[1], 9.f);
}

TEST(WideDtypes, F64MathRunsInDouble) {
  // Known constants to double precision (a float computation would be off by ~1e-8).
  struct Case {
    const char* op;
    double x, want;
  };
  for (const Case& c : {Case{"Sqrt", 2, M_SQRT2}, Case{"Exp", 1, M_E}, Case{"Log", 10, M_LN10},
                        Case{"Reciprocal", 3, 1.0 / 3}, Case{"Sigmoid", 0, 0.5},
                        Case{"Atan", 1, M_PI_4}, Case{"Floor", -1.5, -2}, Case{"Ceil", -1.5, -1},
                        Case{"Round", 2.5, 2}, Case{"Tanh", 0, 0}}) {
    Tensor y = run_node(c.op, {make<double>(DType::kF64, {1}, {c.x})}, DType::kF64);
    ASSERT_TRUE(y.valid()) << c.op;
    EXPECT_NEAR(y.data_as<double>()[0], c.want, 1e-15) << c.op;
  }
  Tensor nan =
      run_node("IsNaN", {make<double>(DType::kF64, {3}, {NAN, 1.0, INFINITY})}, DType::kBool);
  EXPECT_EQ(nan.data_as<uint8_t>()[0], 1);
  EXPECT_EQ(nan.data_as<uint8_t>()[1], 0);
  EXPECT_EQ(nan.data_as<uint8_t>()[2], 0);
}

TEST(WideDtypes, ReductionsScansAndIndexOps) {
  // CumSum in double: 0.1, 0.1 + 0.2, 0.1 + 0.2 + 0.3 as IEEE doubles sum them.
  Tensor x = make<double>(DType::kF64, {3}, {0.1, 0.2, 0.3});
  const int64_t zero = 0;
  Tensor c = run_node("CumSum", {x}, DType::kF64, {}, {Tensor::from_i64({}, &zero)});
  EXPECT_EQ(c.data_as<double>()[1], 0.1 + 0.2);
  EXPECT_EQ(c.data_as<double>()[2], 0.1 + 0.2 + 0.3);
  // ReduceLogSumExp of {0, log 3} (f64): log(1 + 3) = log 4.
  AttributeMap keep;
  keep["keepdims"] = Attribute::of_int(0);
  Tensor l = run_node("ReduceLogSumExp", {make<double>(DType::kF64, {2}, {0.0, std::log(3.0)})},
                      DType::kF64, keep);
  EXPECT_NEAR(l.data_as<double>()[0], std::log(4.0), 1e-15);
  // Transpose of a u16 [2, 3] (no oneDNN type: the plain copy).
  Tensor t = run_node("Transpose", {make<uint16_t>(DType::kU16, {2, 3}, {1, 2, 3, 4, 5, 65535})},
                      DType::kU16);
  ASSERT_EQ(t.shape(), (Shape{3, 2}));
  const uint16_t want_t[] = {1, 4, 2, 5, 3, 65535};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(t.data_as<uint16_t>()[i], want_t[i]) << i;
  // EyeLike with dtype DOUBLE, k = 1 on [2, 3]: ones at (0, 1) and (1, 2).
  AttributeMap e;
  e["dtype"] = Attribute::of_int(11);
  e["k"] = Attribute::of_int(1);
  Tensor eye = run_node("EyeLike", {Tensor::zeros(DType::kF32, {2, 3})}, DType::kF64, e);
  const double want_e[] = {0, 1, 0, 0, 0, 1};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(eye.data_as<double>()[i], want_e[i]) << i;
  // ScatterElements with reduction max on u64 compares unsigned: max(2^63 + 5, 7) = 2^63 + 5,
  // max(1, 2^64 - 1) = 2^64 - 1.
  Attribute red;
  red.kind = Attribute::Kind::kString;
  red.s = "max";
  const int64_t at[2] = {1, 0};
  Tensor sc = run_node(
      "ScatterElements",
      {make<uint64_t>(DType::kU64, {3}, {1, 9223372036854775813ull, 3}), Tensor::from_i64({2}, at),
       make<uint64_t>(DType::kU64, {2}, {7, 18446744073709551615ull})},
      DType::kU64, {{"reduction", red}});
  EXPECT_EQ(sc.data_as<uint64_t>()[0], 18446744073709551615ull);
  EXPECT_EQ(sc.data_as<uint64_t>()[1], 9223372036854775813ull);
  EXPECT_EQ(sc.data_as<uint64_t>()[2], 3u);
  // OneHot of u16 indices {2, 0}, depth 3, values {off 0, on 1}.
  const int64_t depth = 3;
  Tensor oh = run_node("OneHot", {make<uint16_t>(DType::kU16, {2}, {2, 0})}, DType::kF32, {},
                       {Tensor::from_i64({1}, &depth), make<float>(DType::kF32, {2}, {0, 1})});
  ASSERT_EQ(oh.shape(), (Shape{2, 3}));
  const float want_oh[] = {0, 0, 1, 1, 0, 0};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(oh.data_as<float>()[i], want_oh[i]) << i;
  // TopK (K = 2, largest) of a u16: 65535 and 7.
  const int64_t two = 2;
  Tensor k = run_node("TopK", {make<uint16_t>(DType::kU16, {3}, {3, 65535, 7})}, DType::kU16, {},
                      {Tensor::from_i64({1}, &two)}, {"indices"});
  ASSERT_EQ(k.shape(), Shape{2});
  EXPECT_EQ(k.data_as<uint16_t>()[0], 65535);
  EXPECT_EQ(k.data_as<uint16_t>()[1], 7);
}

}  // namespace
}  // namespace dlsys
