// Matching the QuantizeLinear/DequantizeLinear nodes around an op, for the quantized passes.
// Internal to graph/passes. Only zero zero-points match (what `dlsys quantize` writes, and
// symmetric QDQ from other tools).
#pragma once

#include <string>
#include <vector>

#include "graph/ir.h"
#include "graph/passes/graph_uses.h"

namespace dlsys {

// A QuantizeLinear or DequantizeLinear node with constant scales and zero points that are all 0.
struct QdqMatch {
  Node* node = nullptr;
  std::string quantized;  // DQ: the quantized input; Q: the quantized output
  std::vector<float> scales;
  int64_t axis = 1;
  int qtype = 2;  // ONNX type of the quantized side: UINT8=2, INT8=3, INT32=6
};

// Reads node `n`'s scales (constant, positive, finite), axis and quantized type into `m`.
// False when the scales are not constant or a zero point is not 0.
bool read_qdq_params(const Graph& g, const Node& n, QdqMatch* m);

// The DequantizeLinear producing `value`, if it is one with zero zero-points.
bool match_dequantize(Graph* g, const GraphUses& u, const std::string& value, QdqMatch* m);

// The one QuantizeLinear reading `value` (per-tensor, to u8 or s8), when nothing else reads it.
bool match_single_quantize(Graph* g, const GraphUses& u, const std::string& value, QdqMatch* m);

}  // namespace dlsys
