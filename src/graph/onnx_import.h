// ONNX import through the real ONNX protobuf schema and checker (libonnx).
#pragma once

#include <string>

#include "graph/ir.h"

namespace dlsys {

// Reads and validates an ONNX model file. Errors name the problem and the place: a file that
// is not ONNX, an opset outside 13-17, the ONNX checker's complaint, every unsupported op with
// its node name (in one message), an unsupported element type.
Result<Graph> import_onnx_file(const std::string& path);
// The same from bytes in memory; `where` names the source in messages.
Result<Graph> import_onnx_bytes(const std::string& bytes, const std::string& where);
// Parses a serialized onnx.TensorProto (as in the conformance cases' .pb files).
Result<Tensor> parse_onnx_tensor(const std::string& bytes, const std::string& where);
// Parses a value of dtype `declared`: a serialized onnx.SequenceProto for a sequence dtype, an
// onnx.OptionalProto for an optional one (tensor/dtype.h), else a TensorProto. Errors name
// `where` and an item whose dtype differs from the declared element dtype.
Result<Tensor> parse_onnx_value(const std::string& bytes, DType declared, const std::string& where);

}  // namespace dlsys
