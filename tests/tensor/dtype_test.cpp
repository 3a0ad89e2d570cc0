#include <gtest/gtest.h>

#include <cmath>

#include "tensor/tensor.h"

namespace dlsys {
namespace {

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f)), 1.0f);
  // 1 + 2^-8 is halfway between two bf16 values: ties go to even (1.0).
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + std::ldexp(1.0f, -8))), 1.0f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8))), 1.0f + std::ldexp(1.0f, -6));
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

TEST(DType, F16MatchesIeeeHalf) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(1e6f), 0x7c00);                   // overflow to inf
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  for (float v : {0.1f, 3.14159f, -1000.5f, 6.1e-5f})
    EXPECT_NEAR(f16_to_f32(f32_to_f16(v)), v, std::fabs(v) * 1e-3);
}

TEST(DType, OnnxMappingRoundTrips) {
  for (DType t :
       {DType::kF32, DType::kBF16, DType::kF16, DType::kI8, DType::kU8, DType::kI32, DType::kI64,
        DType::kBool, DType::kF64, DType::kI16, DType::kU16, DType::kU32, DType::kU64})
    EXPECT_EQ(dtype_from_onnx(dtype_to_onnx(t)).value(), t);
  auto d = dtype_from_onnx(14);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("COMPLEX64"), std::string::npos);
}

TEST(DType, WideTypesSizesNamesAndElementReads) {
  struct Want {
    DType t;
    size_t size;
    const char* name;
    const char* npy;
  };
  for (const Want& w : {Want{DType::kF64, 8, "f64", "<f8"}, Want{DType::kI16, 2, "i16", "<i2"},
                        Want{DType::kU16, 2, "u16", "<u2"}, Want{DType::kU32, 4, "u32", "<u4"},
                        Want{DType::kU64, 8, "u64", "<u8"}}) {
    EXPECT_EQ(dtype_size(w.t), w.size) << w.name;
    EXPECT_STREQ(dtype_name(w.t), w.name);
    EXPECT_STREQ(dtype_npy_descr(w.t), w.npy);
  }
  EXPECT_TRUE(dtype_is_float(DType::kF64));
  EXPECT_FALSE(dtype_is_float(DType::kU64));
  Tensor d = Tensor::empty(DType::kF64, {1});
  d.data_as<double>()[0] = -2.5;
  EXPECT_EQ(d.get_f64(0), -2.5);
  EXPECT_EQ(d.get_i64(0), -2);
  Tensor s = Tensor::empty(DType::kI16, {1});
  s.data_as<int16_t>()[0] = -32768;
  EXPECT_EQ(s.get_i64(0), -32768);
  Tensor u16 = Tensor::empty(DType::kU16, {1});
  u16.data_as<uint16_t>()[0] = 65535;
  EXPECT_EQ(u16.get_i64(0), 65535);
  Tensor u32 = Tensor::empty(DType::kU32, {1});
  u32.data_as<uint32_t>()[0] = 4294967295u;
  EXPECT_EQ(u32.get_i64(0), 4294967295);
  EXPECT_EQ(u32.get_f64(0), 4294967295.0);
  Tensor u64 = Tensor::empty(DType::kU64, {1});
  u64.data_as<uint64_t>()[0] = 18446744073709551615ull;
  EXPECT_EQ(u64.get_f64(0), 18446744073709551616.0);
  EXPECT_EQ(u64.get_i64(0), -1);  // the bit pattern
}

TEST(Tensor, StorageIsAlignedAndViewsShare) {
  Tensor t = Tensor::zeros(DType::kF32, {4, 3});
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % 64, 0u);
  Tensor v = t.view({12});
  v.data_as<float>()[5] = 2.f;
  EXPECT_EQ(t.data_as<float>()[5], 2.f);
  Tensor rows = t.slice_rows(1, 3);
  EXPECT_EQ(rows.shape(), (Shape{2, 3}));
  EXPECT_EQ(rows.data_as<float>()[2], 2.f);
  Tensor c = t.clone();
  c.data_as<float>()[5] = 0.f;
  EXPECT_EQ(t.data_as<float>()[5], 2.f);
}

// Sequences and optionals: the element dtype travels in the dtype; a composite tensor holds one
// list; clone() copies the list and shares the items.
TEST(DType, CompositeDTypesKeepTheirElementType) {
  const DType seq = sequence_of(DType::kI64);
  const DType opt = optional_of(sequence_of(DType::kF32));
  EXPECT_STREQ(dtype_name(seq), "seq(i64)");
  EXPECT_STREQ(dtype_name(optional_of(DType::kBool)), "optional(bool)");
  EXPECT_STREQ(dtype_name(opt), "optional(seq(f32))");
  EXPECT_TRUE(dtype_is_sequence(seq) && !dtype_is_optional(seq));
  EXPECT_TRUE(dtype_is_optional(opt) && !dtype_is_sequence(opt));
  EXPECT_EQ(element_dtype(seq), DType::kI64);
  EXPECT_EQ(element_dtype(opt), sequence_of(DType::kF32));
  EXPECT_EQ(element_dtype(element_dtype(opt)), DType::kF32);
  EXPECT_EQ(element_dtype(DType::kF32), DType::kF32);
  EXPECT_FALSE(dtype_is_composite(DType::kString));
  EXPECT_TRUE(dtype_is_object(DType::kString) && dtype_is_object(seq));
  EXPECT_EQ(dtype_to_onnx(seq), 0);

  const float a[] = {1, 2}, b[] = {3};
  Tensor s = Tensor::sequence(DType::kF32, {Tensor::from_f32({2}, a), Tensor::from_f32({1}, b)});
  EXPECT_EQ(s.dtype(), sequence_of(DType::kF32));
  EXPECT_EQ(s.rank(), 0);
  Tensor c = s.clone();
  ASSERT_EQ(c.list()->items.size(), 2u);
  EXPECT_NE(c.list(), s.list());                                    // its own list
  EXPECT_EQ(c.list()->items[1].data(), s.list()->items[1].data());  // the same items
  c.list()->items.pop_back();
  EXPECT_EQ(s.list()->items.size(), 2u);
  Tensor none = Tensor::optional(DType::kF32, nullptr);
  EXPECT_EQ(none.dtype(), optional_of(DType::kF32));
  EXPECT_TRUE(none.list()->items.empty());
}

}  // namespace
}  // namespace dlsys
