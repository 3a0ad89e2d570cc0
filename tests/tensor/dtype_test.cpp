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
  for (DType t : {DType::kF32, DType::kBF16, DType::kF16, DType::kI8, DType::kU8, DType::kI32,
                  DType::kI64, DType::kBool})
    EXPECT_EQ(dtype_from_onnx(dtype_to_onnx(t)).value(), t);
  auto d = dtype_from_onnx(11);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("DOUBLE"), std::string::npos);
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

}  // namespace
}  // namespace dlsys
