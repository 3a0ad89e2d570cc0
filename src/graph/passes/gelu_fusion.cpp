// GeluFusion: the Erf-based GELU in the orders exporters emit -> Gelu.
#include <cmath>

#include "graph/passes/graph_uses.h"
#include "graph/passes/optimize.h"
#include "graph/passes/pass_util.h"

namespace dlsys {

int fuse_gelu(Graph* g, OptimizeReport* report) {
  int n = 0;
  GraphUses u(*g);
  const double kSqrt2 = std::sqrt(2.0);
  // True when `add` is Add(Erf(x / sqrt2), 1) read once; sets *x.
  auto match_erf_part = [&](const std::string& add_out, std::string* x, std::vector<Node*>* parts) {
    Node* add = single_use_producer(g, u, add_out, "Add");
    if (!add) return false;
    for (int k = 0; k < 2; ++k) {
      double one;
      if (!scalar_value(*g, add->inputs[1 - k], &one) || !nearly_equal(one, 1.0)) continue;
      Node* erf = single_use_producer(g, u, add->inputs[k], "Erf");
      if (!erf) continue;
      int di = u.producer(erf->inputs[0]);
      if (di < 0 || !u.single_use(erf->inputs[0])) continue;
      Node* d = &g->nodes[di];
      double c;
      if (d->op_type == "Div" && scalar_value(*g, d->inputs[1], &c) && nearly_equal(c, kSqrt2)) {
        *x = d->inputs[0];
      } else if (d->op_type == "Mul" && scalar_value(*g, d->inputs[1], &c) &&
                 nearly_equal(c, 1.0 / kSqrt2)) {
        *x = d->inputs[0];
      } else if (d->op_type == "Mul" && scalar_value(*g, d->inputs[0], &c) &&
                 nearly_equal(c, 1.0 / kSqrt2)) {
        *x = d->inputs[1];
      } else {
        continue;
      }
      *parts = {add, erf, d};
      return true;
    }
    return false;
  };
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    Node& fin = g->nodes[i];
    if (fin.op_type != "Mul" || fin.inputs.size() != 2) continue;
    std::string x;
    std::vector<Node*> parts;
    bool found = false;
    for (int k = 0; k < 2 && !found; ++k) {
      double half;
      const std::string &a = fin.inputs[k], &b = fin.inputs[1 - k];
      if (scalar_value(*g, b, &half) && nearly_equal(half, 0.5)) {
        // (x * (1 + erf(x / sqrt2))) * 0.5
        Node* m = single_use_producer(g, u, a, "Mul");
        if (!m) continue;
        for (int q = 0; q < 2 && !found; ++q) {
          std::string x2;
          std::vector<Node*> ep;
          if (match_erf_part(m->inputs[q], &x2, &ep) && x2 == m->inputs[1 - q]) {
            x = x2;
            parts = ep;
            parts.push_back(m);
            found = true;
          }
        }
      } else {
        // (x * 0.5) * (1 + erf(x / sqrt2))
        Node* h = single_use_producer(g, u, a, "Mul");
        if (!h) continue;
        for (int q = 0; q < 2 && !found; ++q) {
          if (!scalar_value(*g, h->inputs[1 - q], &half) || !nearly_equal(half, 0.5)) continue;
          std::string x2;
          std::vector<Node*> ep;
          if (match_erf_part(b, &x2, &ep) && x2 == h->inputs[q]) {
            x = x2;
            parts = ep;
            parts.push_back(h);
            found = true;
          }
        }
      }
    }
    if (!found) continue;
    note_rewrite(report,
                 fmt::format("fused Erf-based GELU ending at Mul '{}' into Gelu", fin.name));
    for (Node* p : parts) p->op_type.clear();
    fin.op_type = "Gelu";
    fin.domain = "dlsys";
    fin.inputs = {x};
    fin.attrs.clear();
    ++n;
    u = GraphUses(*g);
  }
  compact(g);
  return n;
}

}  // namespace dlsys
