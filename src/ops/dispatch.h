// Dtype dispatch for plain C++ kernels: binds `T` to the element type and runs the body.
#pragma once

#include <cstdint>

#include "tensor/dtype.h"

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
