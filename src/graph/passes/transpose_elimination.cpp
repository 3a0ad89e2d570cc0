// TransposeElimination: the Transpose pairs NHWC exporters (tf2onnx, keras2onnx) put around every
// convolution removed by moving each Transpose down past the ops that commute with it until it
// meets its inverse.
//
// From a Transpose T with permutation p (the source), a region grows over the values that are
// "in p's layout" (v = Transpose(v', p) for a v' the rewrite computes instead):
// - element-wise ops (unary activations; binary/variadic arithmetic whose other inputs are in the
//   layout, outputs of other Transposes with the same p, which join as sources, or constants of
//   rank <= p's, stored permuted) and ReduceMean & co. with keepdims (axes remapped), and
//   GlobalAveragePool (a ReduceMean over the remapped spatial axes) are members: they run on v';
// - a Transpose q reading v is a sink: it reads v' with the composed permutation, and goes away
//   when that is the identity;
// - a Reduce* without keepdims or a Squeeze with constant axes is an exit: it reads v' with its
//   axes remapped, followed by a Transpose of what is left only when that is not in order;
// - anything else reading v (and v being a graph output) needs v itself: a Transpose(v', p) is
//   put back after v's producer (for a source, the source stays).
// The region is rewritten only when that removes more Transposes than it adds, so the pass never
// makes the graph slower and terminates (every rewrite removes at least one Transpose). Graph
// outputs keep their names and values: the value under each name is unchanged.
#include <algorithm>
#include <map>
#include <set>

#include "graph/passes/graph_uses.h"
#include "graph/passes/optimize.h"
#include "graph/passes/pass_util.h"

namespace dlsys {

namespace {

using Perm = std::vector<int64_t>;

bool default_domain(const Node& n) {
  return n.domain.empty() || n.domain == "ai.onnx";
}

// The permutation of a Transpose node with an explicit, valid `perm` (without one the rank, and
// so the permutation, is unknown before shapes are).
bool transpose_perm(const Node& n, Perm* p) {
  if (n.op_type != "Transpose" || !default_domain(n) || n.inputs.size() != 1 ||
      n.outputs.size() != 1 || n.inputs[0].empty())
    return false;
  auto it = n.attrs.find("perm");
  if (it == n.attrs.end() || it->second.ints.empty()) return false;
  *p = it->second.ints;
  std::vector<bool> seen(p->size(), false);
  for (int64_t a : *p) {
    if (a < 0 || a >= static_cast<int64_t>(p->size()) || seen[a]) return false;
    seen[a] = true;
  }
  return true;
}

bool is_identity(const Perm& p) {
  for (size_t i = 0; i < p.size(); ++i)
    if (p[i] != static_cast<int64_t>(i)) return false;
  return true;
}

// Transpose(Transpose(x, p), q) == Transpose(x, compose(p, q)).
Perm compose(const Perm& p, const Perm& q) {
  Perm r(q.size());
  for (size_t i = 0; i < q.size(); ++i) r[i] = p[q[i]];
  return r;
}

Perm inverse(const Perm& p) {
  Perm inv(p.size());
  for (size_t i = 0; i < p.size(); ++i) inv[p[i]] = static_cast<int64_t>(i);
  return inv;
}

// Ops that act on each element alone: they commute with any Transpose of their input 0 (Clip's
// min/max are scalars).
bool unary_elementwise(const std::string& op) {
  static const std::set<std::string> ops = {"Relu",        "LeakyRelu",
                                            "Sigmoid",     "Tanh",
                                            "HardSigmoid", "HardSwish",
                                            "Elu",         "Selu",
                                            "Celu",        "Softplus",
                                            "Softsign",    "Abs",
                                            "Neg",         "Exp",
                                            "Log",         "Sqrt",
                                            "Reciprocal",  "Erf",
                                            "Gelu",        "Clip",
                                            "Floor",       "Ceil",
                                            "Round",       "Sign",
                                            "Cast",        "ThresholdedRelu",
                                            "Shrink"};
  return ops.count(op) > 0;
}

// Element-wise ops whose every input broadcasts against the others (numpy rules).
bool broadcast_elementwise(const std::string& op) {
  static const std::set<std::string> ops = {"Add", "Sub", "Mul", "Div",  "Pow",
                                            "Max", "Min", "Sum", "Mean", "PRelu"};
  return ops.count(op) > 0;
}

// Reductions whose axes are an attribute at opset 13 (ReduceSum's are an input from 13 on, all
// of them from 18: an initializer input is read too).
bool reduction(const std::string& op) {
  static const std::set<std::string> ops = {
      "ReduceMean", "ReduceMax", "ReduceMin",    "ReduceProd",      "ReduceSum",
      "ReduceL1",   "ReduceL2",  "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"};
  return ops.count(op) > 0;
}

int64_t int_attr(const Node& n, const char* name, int64_t def) {
  auto it = n.attrs.find(name);
  return it == n.attrs.end() ? def : it->second.i;
}

// The axes of a Reduce* or Squeeze node, normalized to [0, rank): from the `axes` attribute or
// an initializer in input 1. `from_input` says where they were. False when they are computed at
// run time or out of range; `all` is set for a reduction with no axes (over every axis).
bool node_axes(const Graph& g, const Node& n, int64_t rank, std::vector<int64_t>* axes,
               bool* from_input, bool* all) {
  axes->clear();
  *from_input = false;
  *all = false;
  std::vector<int64_t> raw;
  auto it = n.attrs.find("axes");
  if (it != n.attrs.end()) {
    raw = it->second.ints;
  } else if (n.inputs.size() > 1 && !n.inputs[1].empty()) {
    const Tensor* t = initializer(g, n.inputs[1]);
    if (!t || t->rank() > 1 || dtype_is_float(t->dtype()) || dtype_is_string(t->dtype()))
      return false;
    for (int64_t i = 0; i < t->numel(); ++i) raw.push_back(t->get_i64(i));
    *from_input = true;
  }
  if (raw.empty()) {
    if (n.op_type == "Squeeze" || int_attr(n, "noop_with_empty_axes", 0) != 0) return false;
    *all = true;
    return true;
  }
  for (int64_t a : raw) {
    if (a < -rank || a >= rank) return false;
    axes->push_back(a < 0 ? a + rank : a);
  }
  std::sort(axes->begin(), axes->end());
  return std::unique(axes->begin(), axes->end()) == axes->end();
}

// `t` broadcast to `rank` (leading 1s) and transposed by `perm`: out.dim(j) = in.dim(perm[j]).
Tensor permuted(const Tensor& t, int64_t rank, const Perm& perm) {
  Shape in(static_cast<size_t>(rank - t.rank()), 1);
  in.insert(in.end(), t.shape().begin(), t.shape().end());
  Shape out(rank);
  std::vector<int64_t> in_stride(rank, 1), src_stride(rank);
  for (int64_t i = rank - 2; i >= 0; --i) in_stride[i] = in_stride[i + 1] * in[i + 1];
  for (int64_t j = 0; j < rank; ++j) {
    out[j] = in[perm[j]];
    src_stride[j] = in_stride[perm[j]];
  }
  Tensor r = Tensor::empty(t.dtype(), out);
  const size_t es = dtype_size(t.dtype());
  const char* src = static_cast<const char*>(t.data());
  char* dst = static_cast<char*>(r.data());
  std::vector<int64_t> idx(rank, 0);
  for (int64_t o = 0; o < r.numel(); ++o) {
    int64_t s = 0;
    for (int64_t j = 0; j < rank; ++j) s += idx[j] * src_stride[j];
    std::copy(src + s * es, src + (s + 1) * es, dst + o * es);
    for (int64_t j = rank - 1; j >= 0; --j) {
      if (++idx[j] < out[j]) break;
      idx[j] = 0;
    }
  }
  return r;
}

// What a node reading an in-layout value becomes.
enum class Role { kMember, kSink, kExit };

struct Entry {
  Role role;
  std::vector<int64_t> axes;  // members and exits with axes: remapped onto v'
  bool axes_from_input = false;
  Perm after;  // exits: the Transpose their output needs (empty or identity: none)
};

// One candidate rewrite grown from a source Transpose.
class Region {
 public:
  Region(Graph* g, const GraphUses& u, const Perm& p) : g_(g), u_(u), p_(p) {}

  // Grows the region from the Transpose at `source` until no reader of an in-layout value can
  // join.
  void grow(int source) {
    add_source(source);
    bool changed = true;
    while (changed) {
      changed = false;
      for (size_t k = 0; k < values_.size(); ++k) {
        std::string v = values_[k];  // copied: classify() may append
        for (int c : u_.consumers(v))
          if (!entries_.count(c) && classify(c)) changed = true;
      }
    }
  }

  // Transposes removed minus Transposes added, were the region rewritten.
  int gain() const {
    int removed = 0, added = 0;
    for (int s : sources_) {
      if (needs_value(g_->nodes[s].outputs[0])) continue;  // stays
      ++removed;
    }
    for (const auto& [i, e] : entries_) {
      const Node& n = g_->nodes[i];
      if (e.role == Role::kSink) {
        Perm q;
        transpose_perm(n, &q);
        if (is_identity(compose(p_, q)) && !u_.is_graph_output(n.outputs[0])) ++removed;
      } else if (e.role == Role::kExit) {
        added += !e.after.empty() && !is_identity(e.after);
      } else if (needs_value(n.outputs[0])) {
        ++added;
      }
    }
    return removed - added;
  }

  // Rewrites the region (see the file comment). Returns a description for the report.
  std::string rewrite() {
    std::map<int, std::vector<Node>> after;  // nodes inserted after node i
    std::set<int> dropped;
    int members = 0;
    // Members first: each gets its v' name before anything reads it.
    for (auto& [i, e] : entries_) {
      if (e.role != Role::kMember) continue;
      ++members;
      Node& n = g_->nodes[i];
      const std::string v = n.outputs[0];
      std::string vp = fresh_name(*g_, v + "_untransposed");
      rename_[v] = vp;
      if (n.op_type == "GlobalAveragePool") {
        n.op_type = "ReduceMean";
        n.attrs.clear();
        n.attrs["keepdims"] = Attribute::of_int(1);
      }
      if (!e.axes.empty()) set_axes(&n, e);
      n.outputs[0] = vp;
      if (needs_value(v)) after[i].push_back(transpose_node(vp, v, p_, n.name));
    }
    for (auto& [i, e] : entries_) {
      Node& n = g_->nodes[i];
      if (e.role == Role::kMember) {
        read_untransposed(
            &n, unary_elementwise(n.op_type) || n.op_type == "ReduceMean" || reduction(n.op_type));
      } else if (e.role == Role::kSink) {
        Perm q;
        transpose_perm(n, &q);
        Perm r = compose(p_, q);
        read_untransposed(&n, true);
        if (!is_identity(r)) {
          n.attrs["perm"] = Attribute::of_ints(r);
        } else if (u_.is_graph_output(n.outputs[0])) {
          n.op_type = "Identity";
          n.attrs.clear();
        } else {
          replace_uses(g_, n.outputs[0], n.inputs[0]);
          dropped.insert(i);
        }
      } else {  // exit
        read_untransposed(&n, true);
        set_axes(&n, e);
        if (!e.after.empty() && !is_identity(e.after)) {
          std::string o = n.outputs[0];
          n.outputs[0] = fresh_name(*g_, o + "_untransposed");
          after[i].push_back(transpose_node(n.outputs[0], o, e.after, n.name));
        }
      }
    }
    for (int s : sources_)
      if (!needs_value(g_->nodes[s].outputs[0])) dropped.insert(s);
    std::string more =
        sources_.size() > 1 ? fmt::format(" and {} more", sources_.size() - 1) : std::string();
    std::string what =
        fmt::format("moved Transpose '{}' (perm {}){} down past {} ops: {} fewer Transpose{}",
                    g_->nodes[sources_[0]].name, fmt::join(p_, ","), more, members, gain_,
                    gain_ == 1 ? "" : "s");
    std::vector<Node> nodes;
    nodes.reserve(g_->nodes.size() + after.size());
    for (size_t i = 0; i < g_->nodes.size(); ++i) {
      if (static_cast<int>(i) == sources_[0]) resume_ = nodes.size();
      if (!dropped.count(static_cast<int>(i))) nodes.push_back(std::move(g_->nodes[i]));
      auto it = after.find(static_cast<int>(i));
      if (it != after.end())
        for (Node& t : it->second) nodes.push_back(std::move(t));
    }
    g_->nodes = std::move(nodes);
    return what;
  }

  void set_gain(int gain) { gain_ = gain; }
  // After rewrite(): the index, in the rewritten graph, of the first node at or after the
  // region's first source.
  size_t resume() const { return resume_; }

 private:
  void add_source(int i) {
    sources_.push_back(i);
    const Node& t = g_->nodes[i];
    source_of_[t.outputs[0]] = t.inputs[0];
    values_.push_back(t.outputs[0]);
  }

  bool in_layout(const std::string& v) const {
    return std::find(values_.begin(), values_.end(), v) != values_.end();
  }

  // A Transpose with the same permutation whose output can join as a source (not one that
  // already has a role: a sink reading the region).
  int same_perm_source(const std::string& v) const {
    int pi = u_.producer(v);
    if (pi < 0 || entries_.count(pi)) return -1;
    Perm q;
    if (!transpose_perm(g_->nodes[pi], &q) || q != p_) return -1;
    return pi;
  }

  // A constant input that can be stored permuted: rank <= p's, numeric.
  bool permutable_constant(const std::string& v) const {
    const Tensor* t = initializer(*g_, v);
    return t && t->rank() <= static_cast<int64_t>(p_.size()) && !dtype_is_string(t->dtype());
  }

  // Decides what node `c` (reading an in-layout value) becomes; false if it stays outside.
  bool classify(int c) {
    const Node& n = g_->nodes[c];
    if (!default_domain(n) || n.inputs.empty() || n.outputs.size() != 1 || n.outputs[0].empty())
      return false;
    const int64_t rank = static_cast<int64_t>(p_.size());
    Perm q;
    if (transpose_perm(n, &q)) {
      if (q.size() != p_.size()) return false;
      if (std::find(sources_.begin(), sources_.end(), c) != sources_.end()) return false;
      entries_[c] = Entry{Role::kSink, {}, false, {}};
      return true;
    }
    if (unary_elementwise(n.op_type)) {
      if (!in_layout(n.inputs[0])) return false;
      for (size_t k = 1; k < n.inputs.size(); ++k)
        if (in_layout(n.inputs[k])) return false;  // Clip's min/max must be scalars
      return member(c, {});
    }
    if (broadcast_elementwise(n.op_type)) {
      std::vector<int> joining;
      for (const std::string& in : n.inputs) {
        if (in.empty() || in_layout(in) || permutable_constant(in)) continue;
        int s = same_perm_source(in);
        if (s < 0) return false;
        joining.push_back(s);
      }
      for (int s : joining)
        if (std::find(sources_.begin(), sources_.end(), s) == sources_.end()) add_source(s);
      return member(c, {});
    }
    if (n.op_type == "GlobalAveragePool") {
      // It becomes a ReduceMean with an axes attribute (an input from opset 18).
      if (rank < 3 || g_->opset >= 18 || !in_layout(n.inputs[0])) return false;
      std::vector<int64_t> axes;
      for (int64_t a = 2; a < rank; ++a) axes.push_back(p_[a]);
      std::sort(axes.begin(), axes.end());
      return member(c, axes);
    }
    if (reduction(n.op_type) || n.op_type == "Squeeze") {
      if (!in_layout(n.inputs[0])) return false;
      std::vector<int64_t> axes;
      bool from_input = false, all = false;
      if (!node_axes(*g_, n, rank, &axes, &from_input, &all)) return false;
      std::vector<int64_t> mapped;
      std::vector<bool> reduced(rank, all);
      for (int64_t a : axes) {
        mapped.push_back(p_[a]);
        reduced[a] = true;
      }
      std::sort(mapped.begin(), mapped.end());
      bool keep = n.op_type != "Squeeze" && int_attr(n, "keepdims", 1) != 0;
      if (keep) {
        Entry e{Role::kMember, mapped, from_input, {}};
        entries_[c] = e;
        values_.push_back(n.outputs[0]);
        return true;
      }
      // What is left: the axes of v (in order) come from p[i] of v'; the result holds them in
      // the order of v', so a Transpose by their ranks restores v's order.
      std::vector<int64_t> kept;
      for (int64_t i = 0; i < rank; ++i)
        if (!reduced[i]) kept.push_back(p_[i]);
      std::vector<int64_t> sorted = kept;
      std::sort(sorted.begin(), sorted.end());
      Perm after;
      for (int64_t a : kept)
        after.push_back(std::lower_bound(sorted.begin(), sorted.end(), a) - sorted.begin());
      entries_[c] = Entry{Role::kExit, mapped, from_input, after};
      return true;
    }
    return false;
  }

  bool member(int c, std::vector<int64_t> axes) {
    entries_[c] = Entry{Role::kMember, std::move(axes), false, {}};
    values_.push_back(g_->nodes[c].outputs[0]);
    return true;
  }

  // True when something outside the region reads `v`, or it is a graph output.
  bool needs_value(const std::string& v) const {
    if (u_.is_graph_output(v)) return true;
    for (int c : u_.consumers(v))
      if (!entries_.count(c)) return true;
    return false;
  }

  // Points the node's in-layout inputs at their v' (and, for element-wise ops, its constants
  // at permuted copies); `first_only`: only input 0 carries the layout.
  void read_untransposed(Node* n, bool first_only) {
    for (size_t k = 0; k < n->inputs.size(); ++k) {
      std::string& in = n->inputs[k];
      if (in.empty()) continue;
      if (auto it = rename_.find(in); it != rename_.end()) {
        in = it->second;
      } else if (auto s = source_of_.find(in); s != source_of_.end()) {
        in = s->second;
      } else if (!first_only) {
        const Tensor* t = initializer(*g_, in);
        if (t && t->numel() > 1) {
          std::string name = fresh_name(*g_, in + "_permuted");
          g_->initializers[name] = permuted(*t, static_cast<int64_t>(p_.size()), inverse(p_));
          in = name;
        }
      }
      if (first_only) break;
    }
  }

  void set_axes(Node* n, const Entry& e) {
    if (e.axes.empty()) return;  // over every axis: unchanged
    if (!e.axes_from_input) {
      n->attrs["axes"] = Attribute::of_ints(e.axes);
      return;
    }
    std::string name = fresh_name(*g_, n->inputs[1] + "_remapped");
    g_->initializers[name] = Tensor::from_i64({static_cast<int64_t>(e.axes.size())}, e.axes.data());
    n->inputs[1] = name;
  }

  Node transpose_node(const std::string& in, const std::string& out, const Perm& perm,
                      const std::string& near) {
    Node t;
    t.name = fresh_name(*g_, near + "_transpose");
    t.op_type = "Transpose";
    t.inputs = {in};
    t.outputs = {out};
    t.attrs["perm"] = Attribute::of_ints(perm);
    return t;
  }

  Graph* g_;
  const GraphUses& u_;
  Perm p_;
  std::vector<int> sources_;
  std::map<std::string, std::string> source_of_;  // source output -> its input
  std::map<std::string, std::string> rename_;     // member output v -> v'
  std::vector<std::string> values_;               // in-layout values
  std::map<int, Entry> entries_;                  // node index -> its role
  int gain_ = 0;
  size_t resume_ = 0;
};

}  // namespace

int eliminate_transposes(Graph* g, OptimizeReport* report) {
  int n = 0;
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    Perm p;
    if (!transpose_perm(g->nodes[i], &p)) continue;
    GraphUses u(*g);
    Region r(g, u, p);
    r.grow(static_cast<int>(i));
    int gain = r.gain();
    if (gain <= 0) continue;
    r.set_gain(gain);
    note_rewrite(report, r.rewrite());
    ++n;
    // Go on from where the region started. A Transpose before it that the rewrite made movable
    // (rare) waits for the next round of optimize_graph(), which follows any change.
    i = r.resume() - 1;
  }
  return n;
}

}  // namespace dlsys
