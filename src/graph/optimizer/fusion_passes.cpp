// ConvBatchNormFolding, GeluFusion, LayerNormFusion, AttentionFusion, MatMulBiasFusion,
// ResidualAddFusion, ActivationFusion.
#include <cmath>
#include <cstring>

#include "graph/optimizer/graph_uses.h"
#include "graph/optimizer/optimize.h"
#include "ops/dnnl_util.h"

namespace dlsys {
namespace {

void note(OptimizeReport* r, std::string line) {
  if (r) r->rewrites.push_back(std::move(line));
}

bool near(double a, double b, double tol = 1e-3) {
  return std::fabs(a - b) <= tol * std::max(1.0, std::fabs(b));
}

// The node producing `value` when it has op type `op` and `value` is read once; else null.
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

// Moves producer `p` into the slot of node `at` (a later node it is being merged with), so the
// fused node runs where every input of both is available.
void merge_into(Graph* g, Node* p, size_t at, std::vector<std::string> outputs) {
  Node merged = std::move(*p);
  p->op_type.clear();
  merged.op_type = fused_name(merged.op_type);
  merged.domain = "dlsys";
  merged.outputs = std::move(outputs);
  g->nodes[at] = std::move(merged);
}

// A constant weight: an initializer, or DequantizeLinear of one (a quantized model's weight,
// kept unfolded for the quantized passes). Returns the stored tensor (for its shape).
const Tensor* constant_weight(const Graph& g, const GraphUses& u, const std::string& value) {
  if (const Tensor* t = initializer(g, value)) return t;
  int p = u.producer(value);
  if (p < 0 || g.nodes[p].op_type != "DequantizeLinear") return nullptr;
  return initializer(g, g.nodes[p].inputs[0]);
}

}  // namespace

int fold_conv_batchnorm(Graph* g, OptimizeReport* report) {
  int n = 0;
  GraphUses u(*g);
  for (size_t j = 0; j < g->nodes.size(); ++j) {
    Node& bn = g->nodes[j];
    if (bn.op_type != "BatchNormalization" || bn.inputs.size() != 5) continue;
    if (bn.attrs.count("training_mode") && bn.attrs.at("training_mode").i != 0) continue;
    bool extra_outputs = false;
    for (size_t k = 1; k < bn.outputs.size(); ++k)
      extra_outputs = extra_outputs || (!bn.outputs[k].empty() && u.uses(bn.outputs[k]) > 0);
    if (extra_outputs) continue;
    int pi = u.producer(bn.inputs[0]);
    if (pi < 0 || !u.single_use(bn.inputs[0])) continue;
    Node& conv = g->nodes[pi];
    if (!is_conv_like(conv.op_type) || conv.inputs.size() > 3 || conv.attrs.count("activation"))
      continue;
    const Tensor* w = initializer(*g, conv.inputs[1]);
    const Tensor* b = conv.inputs.size() > 2 && !conv.inputs[2].empty()
                          ? initializer(*g, conv.inputs[2])
                          : nullptr;
    if (!w || w->dtype() != DType::kF32 || w->rank() < 3) continue;
    if (conv.inputs.size() > 2 && !conv.inputs[2].empty() && !b) continue;
    int64_t M = w->dim(0);
    const Tensor* p[4];
    bool ok = true;
    for (int k = 0; k < 4; ++k) {
      p[k] = initializer(*g, bn.inputs[1 + k]);
      ok = ok && p[k] && p[k]->numel() == M && dtype_is_float(p[k]->dtype());
    }
    if (!ok || (b && b->numel() != M)) continue;
    double eps = bn.attrs.count("epsilon") ? bn.attrs.at("epsilon").f : 1e-5;
    Tensor w2 = w->clone(), b2 = Tensor::empty(DType::kF32, {M});
    int64_t per = w->numel() / M;
    for (int64_t c = 0; c < M; ++c) {
      double scale = p[0]->get_f64(c) / std::sqrt(p[3]->get_f64(c) + eps);
      float* wc = w2.data_as<float>() + c * per;
      for (int64_t i = 0; i < per; ++i) wc[i] = static_cast<float>(wc[i] * scale);
      double bias = b ? b->get_f64(c) : 0.0;
      b2.data_as<float>()[c] =
          static_cast<float>((bias - p[2]->get_f64(c)) * scale + p[1]->get_f64(c));
    }
    std::string wn = fresh_name(*g, conv.inputs[1] + "_bnfolded");
    g->initializers[wn] = w2;
    std::string bname = fresh_name(*g, conv.name + "_bnfolded_bias");
    g->initializers[bname] = b2;
    note(report, fmt::format("folded BatchNormalization '{}' into {} '{}'", bn.name, conv.op_type,
                             conv.name));
    Node merged = std::move(conv);
    conv.op_type.clear();
    merged.inputs.resize(3);
    merged.inputs[1] = wn;
    merged.inputs[2] = bname;
    merged.outputs = {bn.outputs[0]};
    g->nodes[j] = std::move(merged);
    ++n;
    u = GraphUses(*g);
  }
  compact(g);
  return n;
}

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
      if (!scalar_value(*g, add->inputs[1 - k], &one) || !near(one, 1.0)) continue;
      Node* erf = single_use_producer(g, u, add->inputs[k], "Erf");
      if (!erf) continue;
      int di = u.producer(erf->inputs[0]);
      if (di < 0 || !u.single_use(erf->inputs[0])) continue;
      Node* d = &g->nodes[di];
      double c;
      if (d->op_type == "Div" && scalar_value(*g, d->inputs[1], &c) && near(c, kSqrt2)) {
        *x = d->inputs[0];
      } else if (d->op_type == "Mul" && scalar_value(*g, d->inputs[1], &c) &&
                 near(c, 1.0 / kSqrt2)) {
        *x = d->inputs[0];
      } else if (d->op_type == "Mul" && scalar_value(*g, d->inputs[0], &c) &&
                 near(c, 1.0 / kSqrt2)) {
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
      if (scalar_value(*g, b, &half) && near(half, 0.5)) {
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
          if (!scalar_value(*g, h->inputs[1 - q], &half) || !near(half, 0.5)) continue;
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
    note(report, fmt::format("fused Erf-based GELU ending at Mul '{}' into Gelu", fin.name));
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

int fuse_layernorm(Graph* g, OptimizeReport* report) {
  int n = 0;
  GraphUses u(*g);
  auto last_axis_mean = [&](Node* r) {
    if (!r) return false;
    auto ax = r->attrs.find("axes");
    bool keep = !r->attrs.count("keepdims") || r->attrs.at("keepdims").i != 0;
    return keep && r->inputs.size() == 1 && ax != r->attrs.end() &&
           ax->second.ints == std::vector<int64_t>{-1};
  };
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    Node& div = g->nodes[i];
    if (div.op_type != "Div" || div.inputs.size() != 2) continue;
    const std::string& d = div.inputs[0];
    Node* sqrt = single_use_producer(g, u, div.inputs[1], "Sqrt");
    int si = u.producer(d);
    if (!sqrt || si < 0 || g->nodes[si].op_type != "Sub") continue;
    Node* sub = &g->nodes[si];
    const std::string& x = sub->inputs[0];
    Node* mean = single_use_producer(g, u, sub->inputs[1], "ReduceMean");
    if (!last_axis_mean(mean) || mean->inputs[0] != x) continue;
    Node* add = single_use_producer(g, u, sqrt->inputs[0], "Add");
    if (!add) continue;
    double eps = 0;
    int vk = -1;
    for (int k = 0; k < 2; ++k)
      if (scalar_value(*g, add->inputs[1 - k], &eps)) vk = k;
    if (vk < 0) continue;
    Node* var = single_use_producer(g, u, add->inputs[vk], "ReduceMean");
    if (!last_axis_mean(var)) continue;
    int pi = u.producer(var->inputs[0]);
    if (pi < 0 || !u.single_use(var->inputs[0])) continue;
    Node* pw = &g->nodes[pi];
    double two = 0;
    bool square = (pw->op_type == "Pow" && pw->inputs[0] == d &&
                   scalar_value(*g, pw->inputs[1], &two) && two == 2.0) ||
                  (pw->op_type == "Mul" && pw->inputs[0] == d && pw->inputs[1] == d);
    int d_reads = pw->op_type == "Mul" ? 3 : 2;
    if (!square || u.uses(d) != d_reads || u.is_graph_output(d)) continue;
    // Optional affine tail: Mul by a 1-D constant, then Add of a 1-D constant.
    std::vector<Node*> parts = {mean, sub, pw, var, add, sqrt};
    std::string out = div.outputs[0], gamma, beta;
    Node* last = &div;
    auto one_d_const = [&](const std::string& v) {
      const Tensor* t = initializer(*g, v);
      return t && t->rank() == 1 && t->dtype() == DType::kF32;
    };
    if (u.single_use(out)) {
      Node& c = g->nodes[u.consumers(out)[0]];
      int k = c.inputs[0] == out ? 1 : 0;
      if (c.op_type == "Mul" && c.inputs.size() == 2 && one_d_const(c.inputs[k])) {
        gamma = c.inputs[k];
        parts.push_back(last);
        last = &c;
        out = c.outputs[0];
        if (u.single_use(out)) {
          Node& a = g->nodes[u.consumers(out)[0]];
          int q = a.inputs[0] == out ? 1 : 0;
          if (a.op_type == "Add" && a.inputs.size() == 2 && one_d_const(a.inputs[q])) {
            beta = a.inputs[q];
            parts.push_back(last);
            last = &a;
            out = a.outputs[0];
          }
        }
      }
    }
    if (gamma.empty()) continue;  // LayerNormalization needs a scale
    note(report, fmt::format("fused decomposed layer norm ending at {} '{}' into "
                             "LayerNormalization",
                             last->op_type, last->name));
    for (Node* p : parts) p->op_type.clear();
    Node ln;
    ln.name = last->name;
    ln.op_type = "LayerNormalization";
    ln.inputs = {x, gamma};
    if (!beta.empty()) ln.inputs.push_back(beta);
    ln.outputs = {out};
    ln.attrs["axis"] = Attribute::of_int(-1);
    ln.attrs["epsilon"] = Attribute::of_float(static_cast<float>(eps));
    *last = std::move(ln);
    ++n;
    u = GraphUses(*g);
  }
  compact(g);
  return n;
}

int fuse_matmul_bias(Graph* g, OptimizeReport* report) {
  int n = 0;
  GraphUses u(*g);
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    Node& add = g->nodes[i];
    if (add.op_type != "Add" || add.inputs.size() != 2) continue;
    for (int k = 0; k < 2; ++k) {
      Node* mm = single_use_producer(g, u, add.inputs[k], "MatMul");
      const Tensor* bias = initializer(*g, add.inputs[1 - k]);
      if (!mm || !bias || bias->rank() != 1 || bias->dtype() != DType::kF32) continue;
      const Tensor* w = constant_weight(*g, u, mm->inputs[1]);
      if (!w || w->rank() != 2 || w->dim(1) != bias->numel()) continue;
      note(report,
           fmt::format("fused MatMul '{}' + bias Add '{}' into FusedMatMul", mm->name, add.name));
      std::string b = add.inputs[1 - k];
      mm->inputs.push_back(b);
      merge_into(g, mm, i, add.outputs);
      ++n;
      u = GraphUses(*g);
      break;
    }
  }
  compact(g);
  return n;
}

int fuse_residual_add(Graph* g, OptimizeReport* report) {
  int n = 0;
  GraphUses u(*g);
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    Node& add = g->nodes[i];
    if (add.op_type != "Add" || add.inputs.size() != 2 || add.inputs[0] == add.inputs[1]) continue;
    for (int k = 0; k < 2; ++k) {
      int pi = u.producer(add.inputs[k]);
      if (pi < 0 || !u.single_use(add.inputs[k])) continue;
      Node* p = &g->nodes[pi];
      if (!fusable_producer(p->op_type) || p->attrs.count("activation") || p->inputs.size() > 3 ||
          p->outputs.size() != 1)
        continue;
      std::string z = add.inputs[1 - k];
      if (initializer(*g, z)) continue;  // a constant addend is a bias, not a residual
      note(report,
           fmt::format("fused residual Add '{}' into {} '{}'", add.name, p->op_type, p->name));
      p->inputs.resize(3);
      p->inputs.push_back(z);
      merge_into(g, p, i, add.outputs);
      ++n;
      u = GraphUses(*g);
      break;
    }
  }
  compact(g);
  return n;
}

int fuse_activations(Graph* g, OptimizeReport* report) {
  int n = 0;
  GraphUses u(*g);
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    Node& act = g->nodes[i];
    const std::string& op = act.op_type;
    std::vector<float> params;
    std::string name = op;
    auto fattr = [&](const char* a, float def) {
      return act.attrs.count(a) ? act.attrs.at(a).f : def;
    };
    if (op == "Relu" || op == "Sigmoid" || op == "Tanh" || op == "HardSwish") {
    } else if (op == "LeakyRelu") {
      params = {fattr("alpha", 0.01f)};
    } else if (op == "Elu") {
      params = {fattr("alpha", 1.f)};
    } else if (op == "Gelu") {
      if (act.attrs.count("approximate") && act.attrs.at("approximate").s == "tanh")
        name = "GeluTanh";
    } else if (op == "Clip") {
      double lo = -3.4e38, hi = 3.4e38;
      bool ok = true;
      if (act.inputs.size() > 1 && !act.inputs[1].empty())
        ok = ok && scalar_value(*g, act.inputs[1], &lo);
      if (act.inputs.size() > 2 && !act.inputs[2].empty())
        ok = ok && scalar_value(*g, act.inputs[2], &hi);
      if (!ok) continue;
      params = {static_cast<float>(lo), static_cast<float>(hi)};
    } else {
      continue;
    }
    if (act.inputs.empty() || act.outputs.size() != 1) continue;
    int pi = u.producer(act.inputs[0]);
    if (pi < 0 || !u.single_use(act.inputs[0])) continue;
    Node* p = &g->nodes[pi];
    if (!fusable_producer(p->op_type) || p->attrs.count("activation") || p->outputs.size() != 1)
      continue;
    note(report, fmt::format("fused {} '{}' into {} '{}'", op, act.name, p->op_type, p->name));
    Attribute a, ap;
    a.kind = Attribute::Kind::kString;
    a.s = name;
    ap.kind = Attribute::Kind::kFloats;
    ap.floats = params;
    p->attrs["activation"] = a;
    p->attrs["activation_params"] = ap;
    merge_into(g, p, i, act.outputs);
    ++n;
    u = GraphUses(*g);
  }
  compact(g);
  return n;
}

// Multi-head attention as PyTorch exports it when written out by hand (and as other exporters
// do for the same code):
//   Qh = Transpose(Q, [0,2,1,3]); Kt = Transpose(K, [0,2,3,1]); Vh = Transpose(V, [0,2,1,3])
//   P = Softmax(MatMul(Qh, Kt) / c [+ M], axis=-1)   (or * c, or unscaled; M an additive mask)
//   Y = Transpose(MatMul(P, Vh), [0,2,1,3])
// with Q, K, V [batch, seq, heads, head_dim] -> ScaledDotProductAttention(Q, K, V, M?, scale) = Y.
// Every value in between must be read once (never so in a training graph, whose backward pass
// reads them again).
int fuse_attention(Graph* g, OptimizeReport* report) {
  int n = 0;
  GraphUses u(*g);
  const std::vector<int64_t> kHeads = {0, 2, 1, 3}, kKeysT = {0, 2, 3, 1};
  auto transpose_of = [&](const std::string& v, const std::vector<int64_t>& perm) -> Node* {
    Node* t = single_use_producer(g, u, v, "Transpose");
    if (!t || !t->attrs.count("perm") || t->attrs.at("perm").ints != perm) return nullptr;
    return t;
  };
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    Node& back = g->nodes[i];
    if (back.op_type != "Transpose" || !back.attrs.count("perm") ||
        back.attrs.at("perm").ints != kHeads)
      continue;
    Node* mm2 = single_use_producer(g, u, back.inputs[0], "MatMul");
    if (!mm2) continue;
    Node* sm = single_use_producer(g, u, mm2->inputs[0], "Softmax");
    if (!sm) continue;
    int64_t axis = sm->attrs.count("axis") ? sm->attrs.at("axis").i : -1;
    if (axis != -1 && axis != 3) continue;  // the last axis: every opset's Softmax agrees there
    // Q K^T behind the Softmax input, optionally scaled: Div/Mul by a scalar constant.
    auto scaled_scores = [&](const std::string& v, double* scale, Node** scaler) -> Node* {
      *scale = 1.0;
      *scaler = nullptr;
      std::string scores = v;
      int pi = u.producer(v);
      double c = 0;
      if (pi >= 0 && u.single_use(v)) {
        Node& p = g->nodes[pi];
        if (p.op_type == "Div" && scalar_value(*g, p.inputs[1], &c) && c != 0) {
          *scale = 1.0 / c;
          scores = p.inputs[0];
          *scaler = &p;
        } else if (p.op_type == "Mul") {
          for (int k = 0; k < 2 && !*scaler; ++k)
            if (scalar_value(*g, p.inputs[1 - k], &c)) {
              *scale = c;
              scores = p.inputs[k];
              *scaler = &p;
            }
        }
      }
      return single_use_producer(g, u, scores, "MatMul");
    };
    double scale = 1.0;
    Node *scaler = nullptr, *masker = nullptr;
    std::string mask;
    Node* mm1 = scaled_scores(sm->inputs[0], &scale, &scaler);
    // An additive mask: Softmax(Add(scaled scores, M)), M broadcast onto the scores.
    Node* add = mm1 ? nullptr : single_use_producer(g, u, sm->inputs[0], "Add");
    for (int k = 0; add && k < 2 && !mm1; ++k) {
      if (!u.single_use(add->inputs[k])) continue;
      mm1 = scaled_scores(add->inputs[k], &scale, &scaler);
      if (mm1) {
        masker = add;
        mask = add->inputs[1 - k];
      }
    }
    if (!mm1) continue;
    Node* tq = transpose_of(mm1->inputs[0], kHeads);
    Node* tk = transpose_of(mm1->inputs[1], kKeysT);
    Node* tv = transpose_of(mm2->inputs[1], kHeads);
    if (!tq || !tk || !tv) continue;
    note(report,
         fmt::format("fused attention ending at Transpose '{}' (MatMul '{}', Softmax '{}', MatMul "
                     "'{}', scale {:.6g}{}) into ScaledDotProductAttention",
                     back.name, mm1->name, sm->name, mm2->name, scale,
                     masker ? fmt::format(", mask '{}'", mask) : std::string()));
    Node fused;
    fused.name = back.name;
    fused.op_type = "ScaledDotProductAttention";
    fused.domain = "dlsys";
    fused.inputs = {tq->inputs[0], tk->inputs[0], tv->inputs[0]};
    if (masker) fused.inputs.push_back(mask);
    fused.outputs = {back.outputs[0]};
    fused.attrs["scale"] = Attribute::of_float(static_cast<float>(scale));
    for (Node* p : {tq, tk, tv, mm1, sm, mm2}) p->op_type.clear();
    if (scaler) scaler->op_type.clear();
    if (masker) masker->op_type.clear();
    back = std::move(fused);
    ++n;
    u = GraphUses(*g);
  }
  compact(g);
  return n;
}

namespace {

// The integer list attribute `name`, or `def` when absent.
std::vector<int64_t> ints_or(const Node& n, const char* name, std::vector<int64_t> def) {
  auto it = n.attrs.find(name);
  return it == n.attrs.end() ? def : it->second.ints;
}

// True when 2-D conv node `n` has a `kernel`-square window (or no kernel_shape), the same
// `pad` on every side (no auto_pad), stride `stride` and no dilation.
bool conv_window_is(const Node& n, int64_t kernel, int64_t pad, int64_t stride) {
  auto ap = n.attrs.find("auto_pad");
  if (ap != n.attrs.end() && ap->second.s != "NOTSET" && !ap->second.s.empty()) return false;
  using v = std::vector<int64_t>;
  return ints_or(n, "kernel_shape", {kernel, kernel}) == v{kernel, kernel} &&
         ints_or(n, "pads", {0, 0, 0, 0}) == v{pad, pad, pad, pad} &&
         ints_or(n, "strides", {1, 1}) == v{stride, stride} &&
         ints_or(n, "dilations", {1, 1}) == v{1, 1};
}

// An f32 initializer of exactly shape `s` (or no value at all when `name` is empty and
// `optional`).
bool constant_of_shape(const Graph& g, const std::string& name, const Shape& s, bool optional) {
  if (name.empty()) return optional;
  const Tensor* t = initializer(g, name);
  return t && t->dtype() == DType::kF32 && t->shape() == s;
}

}  // namespace

int fuse_pointwise_depthwise(Graph* g, OptimizeReport* report) {
  int n = 0;
  GraphUses u(*g);
  for (size_t i = 0; i < g->nodes.size(); ++i) {
    Node& dw = g->nodes[i];
    if (!is_conv_like(dw.op_type) || dw.inputs.size() < 2 || dw.inputs.size() > 3) continue;
    const Tensor* wd = initializer(*g, dw.inputs[1]);
    if (!wd || wd->dtype() != DType::kF32 || wd->rank() != 4) continue;
    std::vector<int64_t> strides = ints_or(dw, "strides", {1, 1});
    int64_t M = wd->dim(0), stride = strides.empty() ? 0 : strides[0];
    int64_t group = dw.attrs.count("group") ? dw.attrs.at("group").i : 1;
    if (group != M || M < 2 || wd->shape() != Shape{M, 1, 3, 3}) continue;
    if ((stride != 1 && stride != 2) || !conv_window_is(dw, 3, 1, stride)) continue;
    if (!constant_of_shape(*g, dw.inputs.size() > 2 ? dw.inputs[2] : "", {M}, true)) continue;
    int pi = u.producer(dw.inputs[0]);
    if (pi < 0 || !u.single_use(dw.inputs[0])) continue;
    Node& pw = g->nodes[pi];
    if (!is_conv_like(pw.op_type) || pw.inputs.size() < 2 || pw.inputs.size() > 3) continue;
    const Tensor* w = initializer(*g, pw.inputs[1]);
    if (!w || w->dtype() != DType::kF32 || w->rank() != 4 || w->dim(0) != M) continue;
    if (w->dim(2) != 1 || w->dim(3) != 1) continue;
    if (pw.attrs.count("group") && pw.attrs.at("group").i != 1) continue;
    if (!conv_window_is(pw, 1, 0, 1)) continue;
    if (!constant_of_shape(*g, pw.inputs.size() > 2 ? pw.inputs[2] : "", {M}, true)) continue;
    note(report, fmt::format("fused 1x1 {} '{}' and depthwise {} '{}' (stride {}) into "
                             "FusedConvDepthwise",
                             pw.op_type, pw.name, dw.op_type, dw.name, stride));
    Node fused;
    fused.name = dw.name;
    fused.op_type = "FusedConvDepthwise";
    fused.domain = "dlsys";
    fused.inputs = {pw.inputs[0], pw.inputs[1], pw.inputs.size() > 2 ? pw.inputs[2] : "",
                    dw.inputs[1], dw.inputs.size() > 2 ? dw.inputs[2] : ""};
    while (fused.inputs.back().empty()) fused.inputs.pop_back();
    fused.outputs = dw.outputs;
    for (const char* a : {"activation", "activation_params"}) {
      if (pw.attrs.count(a)) fused.attrs[a] = pw.attrs.at(a);
      if (dw.attrs.count(a)) fused.attrs[std::string("dw_") + a] = dw.attrs.at(a);
    }
    fused.attrs["dw_stride"] = Attribute::of_int(stride);
    pw.op_type.clear();
    dw = std::move(fused);
    ++n;
    u = GraphUses(*g);
  }
  compact(g);
  return n;
}

OptimizeReport optimize_graph(Graph* g, const OptimizeOptions& opts) {
  OptimizeReport r;
  r.nodes_before = static_cast<int>(g->nodes.size());
  auto run = [&](const char* name, int changes) {
    for (auto& p : r.passes)
      if (p.pass == name) {
        p.rewrites += changes;
        return changes;
      }
    r.passes.push_back(PassStats{name, changes});
    return changes;
  };
  for (int round = 0; round < 8; ++round) {
    int changes = 0;
    if (opts.fold_constants)
      changes += run("ConstantFolding", fold_constants(g, opts.max_folded_bytes, &r, opts.fuse));
    changes += run("IdentityElimination", eliminate_identities(g, &r));
    changes += run("CommonSubexpressionElimination", eliminate_common_subexpressions(g, &r));
    changes += run("DeadNodeElimination", eliminate_dead_nodes(g, &r));
    if (opts.fuse) {
      changes += run("ConvBatchNormFolding", fold_conv_batchnorm(g, &r));
      changes += run("GeluFusion", fuse_gelu(g, &r));
      changes += run("LayerNormFusion", fuse_layernorm(g, &r));
      changes += run("AttentionFusion", fuse_attention(g, &r));
      changes += run("MatMulBiasFusion", fuse_matmul_bias(g, &r));
      changes += run("ResidualAddFusion", fuse_residual_add(g, &r));
      changes += run("ActivationFusion", fuse_activations(g, &r));
    }
    if (changes == 0) break;
  }
  if (opts.fuse) {
    // int8 kernels only where their sums are exact (VNNI): see int8_kernels_exact.
    if (int8_kernels_exact()) {
      int q = run("QuantizedConvFusion", fuse_quantized_conv(g, &r));
      q += run("QuantizedMaxPoolFusion", fuse_quantized_maxpool(g, &r));
      q += run("QuantizedMatMulFusion", fuse_quantized_matmul(g, &r));
      q += run("DynamicQuantizedMatMulFusion", fuse_dynamic_quantized_matmul(g, &r));
      if (q > 0) eliminate_dead_nodes(g, &r);
    }
    // Weights of int8 patterns nothing above took become f32 constants again.
    if (opts.fold_constants && fold_constants(g, opts.max_folded_bytes, &r) > 0)
      eliminate_dead_nodes(
          g, &r);  // Last: the quantized passes above need the float convolutions as they were.
    if (run("PointwiseDepthwiseFusion", fuse_pointwise_depthwise(g, &r)) > 0)
      eliminate_dead_nodes(g, &r);
  }
  r.nodes_after = static_cast<int>(g->nodes.size());
  return r;
}

}  // namespace dlsys
