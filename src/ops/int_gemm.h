// Exact integer arithmetic for the ONNX integer ops (MatMulInteger, ConvInteger, QLinearMatMul,
// QLinearConv): 8-bit operands are widened to int32 with their zero points subtracted, and the
// products are summed in int32, so results equal the spec's on every CPU. (MatMulInteger and
// QLinearMatMul with a constant 2-D B use oneDNN's int8 matmul instead where it sums exactly,
// int8_kernels_exact(); without VNNI its u8 x s8 pair sums saturate in int16.)
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "tensor/tensor.h"

namespace dlsys {

// C[M, N] = A[M, K] * B[K, N], row-major int32 with leading dimensions lda, ldb, ldc.
// Exact while every |sum| < 2^31 (K up to 33,000 for zero-point-subtracted 8-bit operands).
// Parallel over rows of C when the product is large.
void gemm_s32(int64_t M, int64_t N, int64_t K, const int32_t* A, int64_t lda, const int32_t* B,
              int64_t ldb, int32_t* C, int64_t ldc);

// Element i of a u8 or i8 tensor's data (`t` says which), widened to int32.
inline int32_t load_q8(const void* data, DType t, int64_t i) {
  return t == DType::kU8 ? static_cast<const uint8_t*>(data)[i]
                         : static_cast<const int8_t*>(data)[i];
}

// round-half-to-even(v) + zero_point, saturated to [lo, hi]. Rounds by adding and subtracting
// 1.5 * 2^52 (the FPU's round-to-nearest-even does it), which equals std::nearbyint for |v| <
// 2^51 and saturates the same beyond; branch-free, so loops over it vectorize (a nearbyint call
// per element kept QLinearConv's epilogue several times slower than its oneDNN convolution).
inline double requantize_value(double v, double zero_point, double lo, double hi) {
  constexpr double kRound = 6755399441055744.0;  // 1.5 * 2^52
  double r = (v + kRound) - kRound + zero_point;
  return std::min(hi, std::max(lo, r));
}

// round-half-to-even(acc * multiplier) + zero_point, saturated to u8 or i8 (`t`) and stored at
// element i of `out`. `multiplier` is scale_in / scale_out (in float, as the spec computes it);
// the product is formed in double so that it is exact for every int32 acc.
inline void store_requantized(double acc, float multiplier, int32_t zero_point, DType t, void* out,
                              int64_t i) {
  double v = acc * static_cast<double>(multiplier);
  if (t == DType::kU8)
    static_cast<uint8_t*>(out)[i] = static_cast<uint8_t>(requantize_value(v, zero_point, 0, 255));
  else
    static_cast<int8_t*>(out)[i] = static_cast<int8_t>(requantize_value(v, zero_point, -128, 127));
}

}  // namespace dlsys
