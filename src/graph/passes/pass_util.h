// Helpers the rewrite passes share (beyond the use index in graph_uses.h). Internal to
// graph/passes: nothing outside this folder includes it.
#pragma once

#include <string>
#include <vector>

#include "graph/ir.h"
#include "graph/passes/graph_uses.h"

namespace dlsys {

struct OptimizeReport;

// Appends `line` to the report's rewrite log (no-op when `r` is null).
void note_rewrite(OptimizeReport* r, std::string line);

// True for ops marked random (OpSchema::random: Random*, Multinomial, Bernoulli, Dropout, whose
// training mode draws a mask): never folded or merged.
bool nondeterministic(const std::string& op);

// |a - b| <= tol * max(1, |b|): matching constants exporters write with rounding.
bool nearly_equal(double a, double b, double tol = 1e-3);

// The node producing `value` when it has op type `op` and `value` is read once; else null.
Node* single_use_producer(Graph* g, const GraphUses& u, const std::string& value, const char* op);

// Conv or FusedConv.
bool is_conv_like(const std::string& op);
// Ops a bias, residual or activation can be fused into: Conv, MatMul, Gemm and their Fused*.
bool fusable_producer(const std::string& op);
// "Fused" + op, unless op already is a fused op.
std::string fused_name(const std::string& op);

// Moves producer `p` into the slot of node `at` (a later node it is being merged with), so the
// fused node runs where every input of both is available: it becomes Fused<op> in domain dlsys
// with `outputs`, and `p`'s slot is marked deleted (compact() drops it).
void merge_into(Graph* g, Node* p, size_t at, std::vector<std::string> outputs);

// A constant weight: an initializer, or DequantizeLinear of one (a quantized model's weight,
// kept unfolded for the quantized passes). Returns the stored tensor (for its shape), or null.
const Tensor* constant_weight(const Graph& g, const GraphUses& u, const std::string& value);

}  // namespace dlsys
