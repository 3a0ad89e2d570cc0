// Who produces and who reads each value of a graph: the index every rewrite pass consults.
// Passes delete a node by clearing its op_type and call compact() at the end.
#pragma once

#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "graph/ir.h"

namespace dlsys {

class GraphUses {
 public:
  explicit GraphUses(const Graph& g);

  // Index of the node producing `value`, or -1 (graph input, initializer, unknown).
  int producer(const std::string& value) const;
  // Number of node inputs reading `value`.
  int uses(const std::string& value) const;
  bool is_graph_output(const std::string& value) const { return outputs_.count(value) > 0; }
  // True when exactly one node reads `value` and it is not a graph output (safe to fuse away).
  bool single_use(const std::string& value) const {
    return uses(value) == 1 && !is_graph_output(value);
  }
  // Indices of the nodes reading `value`, in graph order.
  std::vector<int> consumers(const std::string& value) const;

 private:
  std::unordered_map<std::string, int> producer_;
  std::unordered_map<std::string, std::vector<int>> consumers_;
  std::unordered_set<std::string> outputs_;
};

// Drops nodes whose op_type was cleared.
void compact(Graph* g);
// Replaces every read of `from` by `to` (node inputs only; graph outputs are untouched).
void replace_uses(Graph* g, const std::string& from, const std::string& to);
// The initializer holding `value`, or null.
const Tensor* initializer(const Graph& g, const std::string& value);
// A scalar float constant (initializer with one element of f32, f16 or bf16). f64 is left out:
// the fusions that match these constants make f32 kernels, which an f64 graph cannot use.
bool scalar_value(const Graph& g, const std::string& value, double* out);
// A name no value or node of `g` uses yet, built from `base`.
std::string fresh_name(const Graph& g, const std::string& base);

}  // namespace dlsys
