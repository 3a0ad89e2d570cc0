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

}  // namespace dlsys
