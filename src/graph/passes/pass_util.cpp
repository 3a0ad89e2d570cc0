#include "graph/passes/pass_util.h"

#include <algorithm>
#include <cmath>

#include "graph/passes/optimize.h"
#include "ops/op_registry.h"

namespace dlsys {

void note_rewrite(OptimizeReport* r, std::string line) {
  if (r) r->rewrites.push_back(std::move(line));
}

bool nondeterministic(const std::string& op) {
  const OpSchema* s = find_op(op);
  return s && s->random;
}

bool nearly_equal(double a, double b, double tol) {
  return std::fabs(a - b) <= tol * std::max(1.0, std::fabs(b));
}

Node* single_use_producer(Graph* g, const GraphUses& u, const std::string& value, const char* op) {
  int p = u.producer(value);
  if (p < 0 || !u.single_use(value)) return nullptr;
  Node& n = g->nodes[p];
  return n.op_type == op ? &n : nullptr;
}

bool is_conv_like(const std::string& op) {
  return op == "Conv" || op == "FusedConv";
}

bool fusable_producer(const std::string& op) {
  return op == "Conv" || op == "FusedConv" || op == "MatMul" || op == "FusedMatMul" ||
         op == "Gemm" || op == "FusedGemm";
}

std::string fused_name(const std::string& op) {
  return op.rfind("Fused", 0) == 0 ? op : "Fused" + op;
}

void merge_into(Graph* g, Node* p, size_t at, std::vector<std::string> outputs) {
  Node merged = std::move(*p);
  p->op_type.clear();
  merged.op_type = fused_name(merged.op_type);
  merged.domain = "dlsys";
  merged.outputs = std::move(outputs);
  g->nodes[at] = std::move(merged);
}

const Tensor* constant_weight(const Graph& g, const GraphUses& u, const std::string& value) {
  if (const Tensor* t = initializer(g, value)) return t;
  int p = u.producer(value);
  if (p < 0 || g.nodes[p].op_type != "DequantizeLinear") return nullptr;
  return initializer(g, g.nodes[p].inputs[0]);
}

}  // namespace dlsys
