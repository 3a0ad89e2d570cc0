// Dtype dispatch for plain C++ kernels: binds `T` to the element type and runs the body; and
// store_element, which writes one element of any numeric, f16/bf16 or bool tensor.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "tensor/dtype.h"
#include "tensor/tensor.h"

// Numeric types whose arithmetic is native in C++ (f32, f64, i8, u8, i16, u16, i32, u32, i64,
// u64).
#define DLSYS_DISPATCH_NUMERIC(dtype, T, ...) \
  switch (dtype) {                            \
    case ::dlsys::DType::kF32: {              \
      using T = float;                        \
      __VA_ARGS__;                            \
      break;                                  \
    }                                         \
    case ::dlsys::DType::kI32: {              \
      using T = int32_t;                      \
      __VA_ARGS__;                            \
      break;                                  \
    }                                         \
    case ::dlsys::DType::kI64: {              \
      using T = int64_t;                      \
      __VA_ARGS__;                            \
      break;                                  \
    }                                         \
    case ::dlsys::DType::kI8: {               \
      using T = int8_t;                       \
      __VA_ARGS__;                            \
      break;                                  \
    }                                         \
    case ::dlsys::DType::kU8: {               \
      using T = uint8_t;                      \
      __VA_ARGS__;                            \
      break;                                  \
    }                                         \
    case ::dlsys::DType::kF64: {              \
      using T = double;                       \
      __VA_ARGS__;                            \
      break;                                  \
    }                                         \
    case ::dlsys::DType::kI16: {              \
      using T = int16_t;                      \
      __VA_ARGS__;                            \
      break;                                  \
    }                                         \
    case ::dlsys::DType::kU16: {              \
      using T = uint16_t;                     \
      __VA_ARGS__;                            \
      break;                                  \
    }                                         \
    case ::dlsys::DType::kU32: {              \
      using T = uint32_t;                     \
      __VA_ARGS__;                            \
      break;                                  \
    }                                         \
    case ::dlsys::DType::kU64: {              \
      using T = uint64_t;                     \
      __VA_ARGS__;                            \
      break;                                  \
    }                                         \
    default:                                  \
      break;                                  \
  }

// Any dtype, by element size only (for copies, gathers and transposes).
#define DLSYS_DISPATCH_BYTES(dtype, T, ...) \
  switch (::dlsys::dtype_size(dtype)) {     \
    case 1: {                               \
      using T = uint8_t;                    \
      __VA_ARGS__;                          \
      break;                                \
    }                                       \
    case 2: {                               \
      using T = uint16_t;                   \
      __VA_ARGS__;                          \
      break;                                \
    }                                       \
    case 4: {                               \
      using T = uint32_t;                   \
      __VA_ARGS__;                          \
      break;                                \
    }                                       \
    default: {                              \
      using T = uint64_t;                   \
      __VA_ARGS__;                          \
      break;                                \
    }                                       \
  }

namespace dlsys {

// Writes element i of `dst`: `f` when is_f (a float value), else `v` (an integer, exact for
// int64). A float becomes an integer truncated toward zero (NaN and inf give 0).
inline void store_element(Tensor& dst, int64_t i, double f, int64_t v, bool is_f) {
  switch (dst.dtype()) {
    case DType::kBF16:
      dst.data_as<uint16_t>()[i] = f32_to_bf16(static_cast<float>(is_f ? f : v));
      break;
    case DType::kF16:
      dst.data_as<uint16_t>()[i] = f32_to_f16(static_cast<float>(is_f ? f : v));
      break;
    case DType::kBool:
      dst.data_as<uint8_t>()[i] = is_f ? (f != 0) : (v != 0);
      break;
    default:
      DLSYS_DISPATCH_NUMERIC(dst.dtype(), T, {
        if constexpr (std::is_floating_point_v<T>) {
          dst.data_as<T>()[i] = is_f ? static_cast<T>(f) : static_cast<T>(v);
        } else {
          int64_t iv = v;
          if (is_f) iv = std::isfinite(f) ? static_cast<int64_t>(f) : 0;
          dst.data_as<T>()[i] = static_cast<T>(iv);
        }
      });
      break;
  }
}

}  // namespace dlsys
