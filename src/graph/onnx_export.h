// Writes a Graph as an ONNX model file (the trainer's export): nodes, attributes, initializers
// as raw little-endian data (STRING ones as string_data), declared inputs/outputs, the
// default-domain opset, and ai.onnx.ml opset 2 when a node is of that domain (LabelEncoder with
// keys_*/values_* attributes). The file is checked with the ONNX checker before it is written
// (atomically).
#pragma once

#include <string>

#include "core/status.h"
#include "graph/ir.h"

namespace dlsys {

// Serializes `g` to ONNX bytes after running the ONNX checker on it.
Result<std::string> export_onnx_bytes(const Graph& g);
// Writes `g` to `path` (temporary file, fsync, rename).
Status export_onnx_file(const Graph& g, const std::string& path);

}  // namespace dlsys
