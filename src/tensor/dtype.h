// Element types of tensors, with their ONNX and NumPy spellings.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/status.h"

namespace dlsys {

// kString: each element is a std::string the tensor owns (variable length, so never in a plan's
// activation arena, never raw bytes to copy or compare). Only ops whose schema says so take or
// make string tensors (OpSchema::string_inputs/string_outputs, ops/op_registry.h); the planner
// refuses a string tensor for any other op, naming the node.
// kF64, kI16, kU16, kU32 and kU64 have no oneDNN type: only the plain C++ kernels take them.
enum class DType : uint8_t {
  kF32,
  kBF16,
  kF16,
  kI8,
  kU8,
  kI32,
  kI64,
  kBool,
  kString,
  kF64,
  kI16,
  kU16,
  kU32,
  kU64
};

// Bytes per element (for kString, sizeof(std::string): the object, not its characters).
size_t dtype_size(DType t);
// Lower-case name: "f32", "bf16", "f16", "i8", "u8", "i32", "i64", "bool", "string", "f64",
// "i16", "u16", "u32", "u64".
const char* dtype_name(DType t);
// The ONNX TensorProto.DataType number for `t`.
int dtype_to_onnx(DType t);
// The dtype for an ONNX TensorProto.DataType number; Unsupported names the ONNX type.
Result<DType> dtype_from_onnx(int onnx_type);
// Name of an ONNX TensorProto.DataType number ("DOUBLE", "STRING", ...), for messages.
const char* onnx_type_name(int onnx_type);
// NumPy descr string for `t` ("<f4", "|b1", ...); bf16 and string have none and return "".
const char* dtype_npy_descr(DType t);
// True for the floating-point dtypes (f32, bf16, f16, f64).
bool dtype_is_float(DType t);
inline bool dtype_is_string(DType t) {
  return t == DType::kString;
}

// bf16 and f16 conversions (round to nearest even).
uint16_t f32_to_bf16(float f);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float f16_to_f32(uint16_t h);

}  // namespace dlsys
