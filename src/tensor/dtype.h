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
//
// Sequences and optionals (ONNX sequence_type / optional_type) are composite dtypes: one of the
// enumerators above with a kind bit added, so that the element type is known at plan time
// (SequenceAt's output is a `sequence_of(kF32)`'s element, an f32 tensor). `sequence_of(e)`: a
// sequence of `e` tensors; `optional_of(v)`: an optional holding a tensor of dtype `v` or a
// sequence (`optional_of(sequence_of(e))`); a sequence of optionals is not represented. A tensor
// of a composite dtype holds TensorList objects (tensor/tensor.h), like kString holds strings:
// never in an arena, never raw bytes. Only ops whose schema says so take or make them
// (OpSchema::composite_inputs, ops/op_registry.h).
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

// Bytes per element (for kString, sizeof(std::string): the object, not its characters; for a
// composite, sizeof(TensorList)).
size_t dtype_size(DType t);
// Lower-case name: "f32", "bf16", "f16", "i8", "u8", "i32", "i64", "bool", "string", "f64",
// "i16", "u16", "u32", "u64"; composites "seq(f32)", "optional(f32)", "optional(seq(f32))".
const char* dtype_name(DType t);
// The ONNX TensorProto.DataType number for `t` (0, UNDEFINED, for a composite).
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

// Composite dtypes (see DType).
constexpr uint8_t kDTypeSequenceBit = 0x40, kDTypeOptionalBit = 0x80;
inline DType sequence_of(DType elem) {
  return static_cast<DType>(static_cast<uint8_t>(elem) | kDTypeSequenceBit);
}
inline DType optional_of(DType contained) {
  return static_cast<DType>(static_cast<uint8_t>(contained) | kDTypeOptionalBit);
}
inline bool dtype_is_optional(DType t) {
  return static_cast<uint8_t>(t) & kDTypeOptionalBit;
}
inline bool dtype_is_sequence(DType t) {
  return !dtype_is_optional(t) && (static_cast<uint8_t>(t) & kDTypeSequenceBit);
}
inline bool dtype_is_composite(DType t) {
  return static_cast<uint8_t>(t) & (kDTypeSequenceBit | kDTypeOptionalBit);
}
// Values that are objects, not numbers (strings and composites): they own their storage.
inline bool dtype_is_object(DType t) {
  return dtype_is_string(t) || dtype_is_composite(t);
}
// The element dtype of a sequence, or the contained dtype of an optional (a tensor dtype, or a
// sequence dtype); `t` itself for a tensor dtype.
inline DType element_dtype(DType t) {
  if (dtype_is_optional(t)) return static_cast<DType>(static_cast<uint8_t>(t) & ~kDTypeOptionalBit);
  if (dtype_is_sequence(t)) return static_cast<DType>(static_cast<uint8_t>(t) & ~kDTypeSequenceBit);
  return t;
}

// bf16 and f16 conversions (round to nearest even).
uint16_t f32_to_bf16(float f);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float f16_to_f32(uint16_t h);

}  // namespace dlsys
