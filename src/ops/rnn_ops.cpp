// The recurrent layers of the default ONNX domain: RNN, GRU and LSTM (opset 14 semantics, which
// opsets 7-13 share but for `layout`), on oneDNN's RNN primitives where they fit, else as loops
// around oneDNN's sgemm.
//
// oneDNN's primitives (vanilla_rnn, gru, lbr_gru, lstm; one unidirectional primitive per
// direction) take the node when: W, R and B are known at plan time (weights reordered once, to
// oneDNN's preferred layout), layout 0, no sequence_lens, no clip, the default activations (RNN:
// Relu, Tanh or Sigmoid), no peepholes and no input_forget. Gate orders differ: ONNX's LSTM is
// (i, o, f, c), oneDNN's (i, f, c, o); GRU is (z, r, h) in both. Biases: oneDNN has one per gate
// (Wb + Rb), and lbr_gru a fourth for R_h's (Rbh, inside r's product).
//
// Shapes (layout 0; layout 1 swaps the first two dims of X, Y, and puts batch first in the
// states): X [S, B, I]; W [D, G*H, I]; R [D, G*H, H]; B [D, 2*G*H] (W's biases, then R's);
// sequence_lens [B] (int32); initial_h (and LSTM's initial_c) [D, B, H]; LSTM's P [D, 3*H]
// (peepholes i, o, f). Outputs: Y [S, D, B, H], Y_h (and Y_c) [D, B, H]. D is 2 for
// `direction` bidirectional, else 1; G is 1 (RNN), 3 (GRU: z, r, h) or 4 (LSTM: i, o, f, c).
//
// The loops: per direction, X W^T for every step is one sgemm before the loop; each step then adds
// H_{t-1} R^T (one sgemm for the batch) and the biases, clips (`clip`, on the activations'
// inputs) and applies the gates' activations (`activations`, with `activation_alpha/beta`; the
// defaults Tanh for RNN, Sigmoid/Tanh for GRU, Sigmoid/Tanh/Tanh for LSTM). GRU's
// `linear_before_reset` and LSTM's `input_forget` are honoured. A batch entry whose
// sequence_lens is L runs L steps (from L-1 down to 0 in the reverse direction): its Y is 0 after
// them and its Y_h is the state after its last step.
#include <cmath>
#include <cstring>
#include <unordered_map>

#include "ops/dnnl_util.h"
#include "ops/op_registry.h"

namespace dlsys {
namespace {

enum class Cell { kRnn, kGru, kLstm };

// One of the activation functions the recurrent ops name (ONNX's list).
struct Activation {
  enum Kind {
    kRelu,
    kTanh,
    kSigmoid,
    kAffine,
    kLeakyRelu,
    kThresholdedRelu,
    kScaledTanh,
    kHardSigmoid,
    kElu,
    kSoftsign,
    kSoftplus
  } kind = kTanh;
  float alpha = 0, beta = 0;
  float operator()(float x) const {
    switch (kind) {
      case kRelu:
        return x > 0 ? x : 0.f;
      case kTanh:
        return std::tanh(x);
      case kSigmoid:
        return 1.f / (1.f + std::exp(-x));
      case kAffine:
        return alpha * x + beta;
      case kLeakyRelu:
        return x >= 0 ? x : alpha * x;
      case kThresholdedRelu:
        return x > alpha ? x : 0.f;
      case kScaledTanh:
        return alpha * std::tanh(beta * x);
      case kHardSigmoid:
        return std::max(0.f, std::min(1.f, alpha * x + beta));
      case kElu:
        return x >= 0 ? x : alpha * (std::exp(x) - 1.f);
      case kSoftsign:
        return x / (1.f + std::fabs(x));
      case kSoftplus:
        return std::log1p(std::exp(x));
    }
    return x;
  }
};

// The activations of every direction (`per_dir` each), with their alpha/beta consumed in order
// from activation_alpha/beta by the functions that take them (else ONNX's defaults).
Result<std::vector<Activation>> read_activations(BuildContext& ctx, Cell cell, int dirs) {
  static const std::vector<std::string> defaults[] = {
      {"Tanh"}, {"Sigmoid", "Tanh"}, {"Sigmoid", "Tanh", "Tanh"}};
  const auto& def = defaults[static_cast<int>(cell)];
  const size_t per_dir = def.size();
  std::vector<std::string> names;
  if (const Attribute* a = ctx.attr("activations")) names = a->strings;
  if (names.empty())
    for (int d = 0; d < dirs; ++d) names.insert(names.end(), def.begin(), def.end());
  if (names.size() != per_dir * static_cast<size_t>(dirs))
    return ctx.error("activations has {} names; {} directions need {} each", names.size(), dirs,
                     per_dir);
  std::vector<float> alphas = ctx.attr_floats("activation_alpha");
  std::vector<float> betas = ctx.attr_floats("activation_beta");
  size_t ai = 0, bi = 0;
  auto next = [](const std::vector<float>& v, size_t* i, float def) {
    return *i < v.size() ? v[(*i)++] : def;
  };
  std::vector<Activation> out;
  for (const std::string& n : names) {
    Activation a;
    if (n == "Relu") {
      a.kind = Activation::kRelu;
    } else if (n == "Tanh") {
      a.kind = Activation::kTanh;
    } else if (n == "Sigmoid") {
      a.kind = Activation::kSigmoid;
    } else if (n == "Affine") {
      a.kind = Activation::kAffine;
      a.alpha = next(alphas, &ai, 1.f);
      a.beta = next(betas, &bi, 0.f);
    } else if (n == "LeakyRelu") {
      a.kind = Activation::kLeakyRelu;
      a.alpha = next(alphas, &ai, 0.01f);
    } else if (n == "ThresholdedRelu") {
      a.kind = Activation::kThresholdedRelu;
      a.alpha = next(alphas, &ai, 1.f);
    } else if (n == "ScaledTanh") {
      a.kind = Activation::kScaledTanh;
      a.alpha = next(alphas, &ai, 1.f);
      a.beta = next(betas, &bi, 1.f);
    } else if (n == "HardSigmoid") {
      a.kind = Activation::kHardSigmoid;
      a.alpha = next(alphas, &ai, 0.2f);
      a.beta = next(betas, &bi, 0.5f);
    } else if (n == "Elu") {
      a.kind = Activation::kElu;
      a.alpha = next(alphas, &ai, 1.f);
    } else if (n == "Softsign") {
      a.kind = Activation::kSoftsign;
    } else if (n == "Softplus") {
      a.kind = Activation::kSoftplus;
    } else {
      return ctx.error("activation '{}' is not one of ONNX's recurrent activations", n);
    }
    out.push_back(a);
  }
  return out;
}

struct RnnGeometry {
  Cell cell = Cell::kRnn;
  int64_t seq = 0, batch = 0, input = 0, hidden = 0, gates = 1;
  int dirs = 1;
  bool reverse_only = false;  // direction "reverse"
  bool layout1 = false;       // batch-first tensors
  float clip = 0;             // 0: no clip
  bool linear_before_reset = false, input_forget = false;
  bool has_b = false, has_lens = false, has_h0 = false, has_c0 = false, has_p = false;
  std::vector<Activation> act;  // per direction: RNN f; GRU f, g; LSTM f, g, h

  // Flat offsets of Y (t, d, b) and of a state (d, b) in the layout.
  int64_t y_at(int64_t t, int d, int64_t b) const {
    return (layout1 ? (b * seq + t) * dirs + d : (t * dirs + d) * batch + b) * hidden;
  }
  int64_t state_at(int d, int64_t b) const {
    return (layout1 ? b * dirs + d : d * batch + b) * hidden;
  }
};

// The scratch a run needs, made once when the plan is built.
struct RnnScratch {
  std::vector<float> x;       // X as [S, B, I] (layout 1 is copied into it)
  std::vector<float> xw;      // X W^T + Wb + Rb: [S, B, G*H]
  std::vector<float> hr;      // H R^T of one step: [B, G*H]
  std::vector<float> h, c;    // the running states [B, H]
  std::vector<float> rh;      // GRU without linear_before_reset: r (.) H_{t-1}, [B, H]
  std::vector<int32_t> lens;  // per batch entry
};

Status check_shape(BuildContext& ctx, size_t i, const char* what, const Shape& want) {
  if (ctx.in_shape(i) != want)
    return ctx.error("{} (input {}) is {}; expected {}", what, i, shape_str(ctx.in_shape(i)),
                     shape_str(want));
  return Status::OK();
}

Result<RnnGeometry> rnn_setup(BuildContext& ctx, Cell cell) {
  RnnGeometry g;
  g.cell = cell;
  g.gates = cell == Cell::kRnn ? 1 : (cell == Cell::kGru ? 3 : 4);
  for (size_t i : {size_t{0}, size_t{1}, size_t{2}})
    DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(i, {DType::kF32}));
  const std::string dir = ctx.attr_string("direction", "forward");
  if (dir == "bidirectional")
    g.dirs = 2;
  else if (dir == "reverse")
    g.reverse_only = true;
  else if (dir != "forward")
    return ctx.error("direction '{}' is not one of forward, reverse, bidirectional", dir);
  g.layout1 = ctx.attr_int("layout", 0) == 1;
  const Shape& x = ctx.in_shape(0);
  if (x.size() != 3) return ctx.error("X is {}; expected rank 3", shape_str(x));
  g.seq = g.layout1 ? x[1] : x[0];
  g.batch = g.layout1 ? x[0] : x[1];
  g.input = x[2];
  const Shape& w = ctx.in_shape(1);
  if (w.size() != 3 || w[0] != g.dirs || w[2] != g.input || w[1] % g.gates != 0)
    return ctx.error("W is {}; expected [{}, {}*hidden_size, {}]", shape_str(w), g.dirs, g.gates,
                     g.input);
  g.hidden = ctx.attr_int("hidden_size", w[1] / g.gates);
  if (g.hidden * g.gates != w[1])
    return ctx.error("hidden_size {} does not match W {}", g.hidden, shape_str(w));
  const int64_t gh = g.gates * g.hidden;
  DLSYS_RETURN_IF_ERROR(check_shape(ctx, 2, "R", {g.dirs, gh, g.hidden}));
  if (ctx.has_input(3)) {
    DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(3, {DType::kF32}));
    DLSYS_RETURN_IF_ERROR(check_shape(ctx, 3, "B", {g.dirs, 2 * gh}));
    g.has_b = true;
  }
  if (ctx.has_input(4)) {
    DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(4, {DType::kI32}));
    DLSYS_RETURN_IF_ERROR(check_shape(ctx, 4, "sequence_lens", {g.batch}));
    g.has_lens = true;
  }
  const Shape state =
      g.layout1 ? Shape{g.batch, g.dirs, g.hidden} : Shape{g.dirs, g.batch, g.hidden};
  if (ctx.has_input(5)) {
    DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(5, {DType::kF32}));
    DLSYS_RETURN_IF_ERROR(check_shape(ctx, 5, "initial_h", state));
    g.has_h0 = true;
  }
  if (cell == Cell::kLstm && ctx.has_input(6)) {
    DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(6, {DType::kF32}));
    DLSYS_RETURN_IF_ERROR(check_shape(ctx, 6, "initial_c", state));
    g.has_c0 = true;
  }
  if (cell == Cell::kLstm && ctx.has_input(7)) {
    DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(7, {DType::kF32}));
    DLSYS_RETURN_IF_ERROR(check_shape(ctx, 7, "P", {g.dirs, 3 * g.hidden}));
    g.has_p = true;
  }
  g.clip = ctx.has_attr("clip") ? ctx.attr_float("clip", 0.f) : 0.f;
  if (ctx.has_attr("clip") && !(g.clip > 0))
    return ctx.error("clip must be positive, got {}", g.clip);
  g.linear_before_reset = ctx.attr_int("linear_before_reset", 0) != 0;
  g.input_forget = ctx.attr_int("input_forget", 0) != 0;
  DLSYS_ASSIGN_OR_RETURN(g.act, read_activations(ctx, cell, g.dirs));
  const Shape y =
      g.layout1 ? Shape{g.batch, g.seq, g.dirs, g.hidden} : Shape{g.seq, g.dirs, g.batch, g.hidden};
  ctx.set_output(0, DType::kF32, y);
  for (size_t o = 1; o < ctx.num_outputs(); ++o) ctx.set_output(o, DType::kF32, state);
  return g;
}

// C[M, N] (row stride ldc) = A[M, K] B[N, K]^T + beta * C.
void gemm_nt(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
             int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  dnnl::sgemm('N', 'T', m, n, k, 1.f, a, lda, b, ldb, beta, c, ldc);
}

// One direction d over the whole sequence.
void run_direction(const RnnGeometry& g, RnnScratch& s, int d, bool reverse, const float* W,
                   const float* R, const float* B, const float* h0, const float* c0, const float* P,
                   float* Y, float* Yh, float* Yc) {
  const int64_t H = g.hidden, GH = g.gates * H, N = g.batch, T = g.seq;
  const float* Wd = W + d * GH * g.input;
  const float* Rd = R + d * GH * H;
  const float* Wb = B ? B + d * 2 * GH : nullptr;
  const float* Rb = B ? Wb + GH : nullptr;
  const size_t per_dir = g.act.size() / static_cast<size_t>(g.dirs);
  const Activation* act = &g.act[static_cast<size_t>(d) * per_dir];
  // X W^T for every step, plus both biases (GRU's Rbh stays apart under linear_before_reset).
  gemm_nt(T * N, GH, g.input, s.x.data(), g.input, Wd, g.input, 0.f, s.xw.data(), GH);
  if (B) {
    for (int64_t r = 0; r < T * N; ++r) {
      float* row = &s.xw[static_cast<size_t>(r * GH)];
      for (int64_t j = 0; j < GH; ++j) {
        const bool rbh_apart = g.cell == Cell::kGru && j >= 2 * H;
        row[j] += Wb[j] + (rbh_apart ? 0.f : Rb[j]);
      }
    }
  }
  for (int64_t b = 0; b < N; ++b) {
    for (int64_t j = 0; j < H; ++j) {
      s.h[static_cast<size_t>(b * H + j)] = h0 ? h0[g.state_at(d, b) + j] : 0.f;
      if (g.cell == Cell::kLstm)
        s.c[static_cast<size_t>(b * H + j)] = c0 ? c0[g.state_at(d, b) + j] : 0.f;
    }
  }
  auto clip = [&](float v) { return g.clip > 0 ? std::max(-g.clip, std::min(g.clip, v)) : v; };
  float* h = s.h.data();
  float* c = s.c.data();
  for (int64_t step = 0; step < T; ++step) {
    const int64_t t = reverse ? T - 1 - step : step;
    // Every entry steps together; one whose sequence is shorter than t (ended, or, reversed,
    // not begun) keeps its state and writes zeros.
    auto active = [&](int64_t b) { return t < s.lens[static_cast<size_t>(b)]; };
    if (g.cell == Cell::kGru && !g.linear_before_reset) {
      gemm_nt(N, 2 * H, H, h, H, Rd, H, 0.f, s.hr.data(), GH);
    } else {
      gemm_nt(N, GH, H, h, H, Rd, H, 0.f, s.hr.data(), GH);
    }
    for (int64_t b = 0; b < N; ++b) {
      if (!active(b)) continue;
      const float* xw = &s.xw[static_cast<size_t>((t * N + b) * GH)];
      const float* hr = &s.hr[static_cast<size_t>(b * GH)];
      float* hb = h + b * H;
      if (g.cell == Cell::kRnn) {
        for (int64_t j = 0; j < H; ++j) hb[j] = act[0](clip(xw[j] + hr[j]));
      } else if (g.cell == Cell::kLstm) {
        float* cb = c + b * H;
        const float* Pi = P ? P + d * 3 * H : nullptr;
        const float* Po = Pi ? Pi + H : nullptr;
        const float* Pf = Pi ? Pi + 2 * H : nullptr;
        for (int64_t j = 0; j < H; ++j) {
          const float cprev = cb[j];
          const float i = act[0](clip(xw[j] + hr[j] + (Pi ? Pi[j] * cprev : 0.f)));
          const float f =
              g.input_forget
                  ? 1.f - i
                  : act[0](clip(xw[2 * H + j] + hr[2 * H + j] + (Pf ? Pf[j] * cprev : 0.f)));
          const float cc = act[1](clip(xw[3 * H + j] + hr[3 * H + j]));
          const float cnew = f * cprev + i * cc;
          const float o = act[0](clip(xw[H + j] + hr[H + j] + (Po ? Po[j] * cnew : 0.f)));
          cb[j] = cnew;
          hb[j] = o * act[2](cnew);
        }
      }
    }
    if (g.cell == Cell::kGru) {
      // z and r for the batch, then the candidate h.
      float* rh = s.rh.data();
      for (int64_t b = 0; b < N; ++b) {
        const float* xw = &s.xw[static_cast<size_t>((t * N + b) * GH)];
        float* hr = &s.hr[static_cast<size_t>(b * GH)];
        for (int64_t j = 0; j < H; ++j) {
          hr[j] = act[0](clip(xw[j] + hr[j]));              // z
          hr[H + j] = act[0](clip(xw[H + j] + hr[H + j]));  // r
          if (!g.linear_before_reset) rh[b * H + j] = hr[H + j] * h[b * H + j];
        }
      }
      if (!g.linear_before_reset) gemm_nt(N, H, H, rh, H, Rd + 2 * H * H, H, 0.f, rh + N * H, H);
      for (int64_t b = 0; b < N; ++b) {
        if (!active(b)) continue;
        const float* xw = &s.xw[static_cast<size_t>((t * N + b) * GH)];
        const float* hr = &s.hr[static_cast<size_t>(b * GH)];
        float* hb = h + b * H;
        for (int64_t j = 0; j < H; ++j) {
          float pre;
          if (g.linear_before_reset)
            pre = xw[2 * H + j] + hr[H + j] * (hr[2 * H + j] + (Rb ? Rb[2 * H + j] : 0.f));
          else
            pre = xw[2 * H + j] + rh[(N + b) * H + j] + (Rb ? Rb[2 * H + j] : 0.f);
          const float cand = act[1](clip(pre));
          const float z = hr[j];
          hb[j] = (1.f - z) * cand + z * hb[j];
        }
      }
    }
    if (Y)
      for (int64_t b = 0; b < N; ++b) {
        float* y = Y + g.y_at(t, d, b);
        if (active(b))
          std::copy(h + b * H, h + (b + 1) * H, y);
        else
          std::fill(y, y + H, 0.f);
      }
  }
  for (int64_t b = 0; b < N; ++b) {
    if (Yh) std::copy(h + b * H, h + (b + 1) * H, Yh + g.state_at(d, b));
    if (Yc) std::copy(c + b * H, c + (b + 1) * H, Yc + g.state_at(d, b));
  }
}

// ---- the oneDNN path ------------------------------------------------------------------------

// Whether oneDNN's RNN primitives compute this node exactly (see the banner).
bool fits_onednn(const BuildContext& ctx, const RnnGeometry& g) {
  if (g.layout1 || g.has_lens || g.clip > 0 || g.has_p || g.input_forget) return false;
  if (!ctx.in_value(1) || !ctx.in_value(2) || (g.has_b && !ctx.in_value(3))) return false;
  for (size_t i = 0; i < g.act.size(); ++i) {
    const Activation::Kind k = g.act[i].kind;
    const size_t per_dir = g.act.size() / static_cast<size_t>(g.dirs);
    const size_t j = i % per_dir;
    if (g.cell == Cell::kRnn) {
      if (k != Activation::kRelu && k != Activation::kTanh && k != Activation::kSigmoid)
        return false;
      if (g.act[i].kind != g.act[0].kind) return false;
    } else if (k != (j == 0 ? Activation::kSigmoid : Activation::kTanh)) {
      return false;
    }
  }
  return true;
}

// oneDNN's RNN primitives run many small parallel regions per step; with OpenMP's passive
// waiting each one wakes a sleeping thread, and on 2 threads the bidirectional LSTM classifier
// took 3.5 ms at batch 1 and 4.8 ms at batch 32 against 0.04 and 0.6 ms on one thread (0.5 ms
// when the threads spin, which a shared machine cannot afford). So they are created and run on
// one thread (OneOmpThread, ops/dnnl_util.h).

// One direction's primitive (with the calling thread's scratchpad: DnnlCall), its weights in
// oneDNN's layout, and its state and output buffers.
struct DnnlDirection {
  DnnlCall call;
  Tensor weights_layer, weights_iter, bias, dst_layer, src_iter, dst_iter, src_iter_c, dst_iter_c;
};

Result<KernelPtr> build_rnn_onednn(BuildContext& ctx, const RnnGeometry& g) {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  const int64_t T = g.seq, N = g.batch, I = g.input, H = g.hidden, G = g.gates;
  const bool lbr = g.cell == Cell::kGru && g.linear_before_reset;
  const int64_t GB = lbr ? 4 : G;  // bias gates
  // oneDNN gate k is ONNX gate onnx_gate[k].
  const std::vector<int64_t> onnx_gate =
      g.cell == Cell::kLstm ? std::vector<int64_t>{0, 2, 3, 1} : std::vector<int64_t>{0, 1, 2};
  const float* W = ctx.in_value(1)->data_as<float>();
  const float* R = ctx.in_value(2)->data_as<float>();
  const float* B = g.has_b ? ctx.in_value(3)->data_as<float>() : nullptr;
  auto md = [](dnnl::memory::dims d, tag t) { return dnnl::memory::desc(d, dt::f32, t); };
  auto dirs = std::make_shared<std::vector<DnnlDirection>>(static_cast<size_t>(g.dirs));
  dnnl::engine& eng = dnnl_engine();

  try {
    OneOmpThread one;  // primitives made for one thread (see OneOmpThread)
    for (int d = 0; d < g.dirs; ++d) {
      DnnlDirection& dd = (*dirs)[static_cast<size_t>(d)];
      const auto direction = (g.reverse_only || d == 1)
                                 ? dnnl::rnn_direction::unidirectional_right2left
                                 : dnnl::rnn_direction::unidirectional_left2right;
      const auto src_layer = md({T, N, I}, tag::tnc), dst_layer = md({T, N, H}, tag::tnc);
      const auto state = md({1, 1, N, H}, tag::ldnc);
      const auto wl_any = dnnl::memory::desc({1, 1, I, G, H}, dt::f32, tag::any);
      const auto wi_any = dnnl::memory::desc({1, 1, H, G, H}, dt::f32, tag::any);
      const auto bias = md({1, 1, GB, H}, tag::ldgo);
      const auto fwd = dnnl::prop_kind::forward_inference;
      dnnl::memory::desc wl_md, wi_md;
      if (g.cell == Cell::kLstm) {
        dnnl::lstm_forward::primitive_desc p(
            dnnl::lstm_forward::desc(fwd, direction, src_layer, state, state, wl_any, wi_any, bias,
                                     dst_layer, state, state),
            dnnl_attr(), eng);
        wl_md = p.weights_layer_desc();
        wi_md = p.weights_iter_desc();
        dd.call.prim = dnnl::lstm_forward(p);
      } else if (g.cell == Cell::kGru && lbr) {
        dnnl::lbr_gru_forward::primitive_desc p(
            dnnl::lbr_gru_forward::desc(fwd, direction, src_layer, state, wl_any, wi_any, bias,
                                        dst_layer, state),
            dnnl_attr(), eng);
        wl_md = p.weights_layer_desc();
        wi_md = p.weights_iter_desc();
        dd.call.prim = dnnl::lbr_gru_forward(p);
      } else if (g.cell == Cell::kGru) {
        dnnl::gru_forward::primitive_desc p(
            dnnl::gru_forward::desc(fwd, direction, src_layer, state, wl_any, wi_any, bias,
                                    dst_layer, state),
            dnnl_attr(), eng);
        wl_md = p.weights_layer_desc();
        wi_md = p.weights_iter_desc();
        dd.call.prim = dnnl::gru_forward(p);
      } else {
        const Activation::Kind k = g.act[0].kind;
        const auto alg = k == Activation::kRelu   ? dnnl::algorithm::eltwise_relu
                         : k == Activation::kTanh ? dnnl::algorithm::eltwise_tanh
                                                  : dnnl::algorithm::eltwise_logistic;
        dnnl::vanilla_rnn_forward::primitive_desc p(
            dnnl::vanilla_rnn_forward::desc(fwd, alg, direction, src_layer, state, wl_any, wi_any,
                                            bias, dst_layer, state),
            dnnl_attr(), eng);
        wl_md = p.weights_layer_desc();
        wi_md = p.weights_iter_desc();
        dd.call.prim = dnnl::vanilla_rnn_forward(p);
      }
      // ONNX's weights as ldigo ([input][gate][unit]), then reordered to oneDNN's choice.
      std::vector<float> wl(static_cast<size_t>(I * G * H)), wi(static_cast<size_t>(H * G * H));
      std::vector<float> b(static_cast<size_t>(GB * H), 0.f);
      const float* Wd = W + d * G * H * I;
      const float* Rd = R + d * G * H * H;
      for (int64_t k = 0; k < G; ++k)
        for (int64_t u = 0; u < H; ++u) {
          const int64_t row = onnx_gate[static_cast<size_t>(k)] * H + u;
          for (int64_t i = 0; i < I; ++i)
            wl[static_cast<size_t>((i * G + k) * H + u)] = Wd[row * I + i];
          for (int64_t i = 0; i < H; ++i)
            wi[static_cast<size_t>((i * G + k) * H + u)] = Rd[row * H + i];
          if (B) {
            const float wb = B[d * 2 * G * H + row], rb = B[d * 2 * G * H + G * H + row];
            const bool apart = lbr && k == 2;  // Rbh goes inside r's product: the fourth gate
            b[static_cast<size_t>(k * H + u)] = wb + (apart ? 0.f : rb);
            if (apart) b[static_cast<size_t>(3 * H + u)] = rb;
          }
        }
      dd.weights_layer = reorder_once(wl.data(), md({1, 1, I, G, H}, tag::ldigo), wl_md);
      dd.weights_iter = reorder_once(wi.data(), md({1, 1, H, G, H}, tag::ldigo), wi_md);
      dd.bias = Tensor::from_f32({GB, H}, b.data());
      dd.dst_layer = Tensor::empty(DType::kF32, {T, N, H});  // copied into Y's direction d
      dd.src_iter = Tensor::zeros(DType::kF32, {N, H});      // zeros unless initial_h is given
      dd.dst_iter = Tensor::empty(DType::kF32, {N, H});
      DnnlCall& c = dd.call;
      c.add(DNNL_ARG_SRC_LAYER, src_layer);
      c.add(DNNL_ARG_SRC_ITER, state);
      c.add(DNNL_ARG_WEIGHTS_LAYER, wl_md);
      c.add(DNNL_ARG_WEIGHTS_ITER, wi_md);
      c.add(DNNL_ARG_BIAS, bias);
      c.add(DNNL_ARG_DST_LAYER, dst_layer);
      c.add(DNNL_ARG_DST_ITER, state);
      c.bind(DNNL_ARG_WEIGHTS_LAYER, dd.weights_layer.data());
      c.bind(DNNL_ARG_WEIGHTS_ITER, dd.weights_iter.data());
      c.bind(DNNL_ARG_BIAS, dd.bias.data());
      c.bind(DNNL_ARG_DST_LAYER, dd.dst_layer.data());
      c.bind(DNNL_ARG_SRC_ITER, dd.src_iter.data());
      c.bind(DNNL_ARG_DST_ITER, dd.dst_iter.data());
      if (g.cell == Cell::kLstm) {
        dd.src_iter_c = Tensor::zeros(DType::kF32, {N, H});
        dd.dst_iter_c = Tensor::empty(DType::kF32, {N, H});
        c.add(DNNL_ARG_SRC_ITER_C, state);
        c.add(DNNL_ARG_DST_ITER_C, state);
        c.bind(DNNL_ARG_SRC_ITER_C, dd.src_iter_c.data());
        c.bind(DNNL_ARG_DST_ITER_C, dd.dst_iter_c.data());
      }
    }
  } catch (const dnnl::error& e) {
    return ctx.unsupported("oneDNN has no RNN primitive for this node ({})", e.what());
  }
  ctx.set_impl(fmt::format("onednn_{}", g.cell == Cell::kLstm  ? "lstm"
                                        : lbr                  ? "lbr_gru"
                                        : g.cell == Cell::kGru ? "gru"
                                                               : "rnn"));
  const size_t outs = ctx.num_outputs();
  return make_kernel([g, dirs, outs](const Tensor* const* in, Tensor* const* out) -> Status {
    const int64_t T = g.seq, N = g.batch, H = g.hidden;
    const size_t state_bytes = static_cast<size_t>(N * H) * sizeof(float);
    float* Y = out[0] ? out[0]->data_as<float>() : nullptr;
    float* Yh = outs > 1 && out[1] ? out[1]->data_as<float>() : nullptr;
    float* Yc = outs > 2 && out[2] ? out[2]->data_as<float>() : nullptr;
    for (int d = 0; d < g.dirs; ++d) {
      DnnlDirection& dd = (*dirs)[static_cast<size_t>(d)];
      dd.call.bind(DNNL_ARG_SRC_LAYER, in[0]->data());
      // The initial states are read in place (a direction's [N, H] block is contiguous).
      dd.call.bind(DNNL_ARG_SRC_ITER,
                   g.has_h0 ? in[5]->data_as<float>() + d * N * H : dd.src_iter.data_as<float>());
      if (g.cell == Cell::kLstm)
        dd.call.bind(DNNL_ARG_SRC_ITER_C, g.has_c0 ? in[6]->data_as<float>() + d * N * H
                                                   : dd.src_iter_c.data_as<float>());
      {
        OneOmpThread one;
        dd.call.exec();
      }
      dnnl_stream().wait();
      const float* y = dd.dst_layer.data_as<float>();
      if (Y)
        for (int64_t t = 0; t < T; ++t)
          std::memcpy(Y + (t * g.dirs + d) * N * H, y + t * N * H, state_bytes);
      if (Yh) std::memcpy(Yh + d * N * H, dd.dst_iter.data(), state_bytes);
      if (Yc) std::memcpy(Yc + d * N * H, dd.dst_iter_c.data(), state_bytes);
    }
    return Status::OK();
  });
}

// ---- the loops -------------------------------------------------------------------------------

Result<KernelPtr> build_rnn(BuildContext& ctx, Cell cell) {
  RnnGeometry g;
  DLSYS_ASSIGN_OR_RETURN(g, rnn_setup(ctx, cell));
  if (fits_onednn(ctx, g)) {
    auto k = build_rnn_onednn(ctx, g);
    if (k.ok()) return k;  // else the loops below, which take every case
  }
  auto s = std::make_shared<RnnScratch>();
  const int64_t GH = g.gates * g.hidden;
  s->x.resize(static_cast<size_t>(g.seq * g.batch * g.input));
  s->xw.resize(static_cast<size_t>(g.seq * g.batch * GH));
  s->hr.resize(static_cast<size_t>(g.batch * GH));
  s->h.resize(static_cast<size_t>(g.batch * g.hidden));
  s->c.resize(static_cast<size_t>(g.batch * g.hidden));
  s->rh.resize(static_cast<size_t>(2 * g.batch * g.hidden));
  s->lens.resize(static_cast<size_t>(g.batch));
  const size_t outs = ctx.num_outputs();
  std::string node = ctx.node_name();
  return make_kernel([g, s, outs, node](const Tensor* const* in, Tensor* const* out) {
    const int64_t N = g.batch, T = g.seq, I = g.input;
    const float* X = in[0]->data_as<float>();
    if (g.layout1) {
      for (int64_t b = 0; b < N; ++b)
        for (int64_t t = 0; t < T; ++t)
          std::copy(X + (b * T + t) * I, X + (b * T + t + 1) * I,
                    &s->x[static_cast<size_t>((t * N + b) * I)]);
    } else {
      std::copy(X, X + T * N * I, s->x.data());
    }
    for (int64_t b = 0; b < N; ++b) {
      const int32_t len = g.has_lens ? in[4]->data_as<int32_t>()[b] : static_cast<int32_t>(T);
      if (len < 0 || len > T)
        return Status::Invalid("node '{}': sequence_lens[{}] is {}; it must be in [0, {}]", node, b,
                               len, T);
      s->lens[static_cast<size_t>(b)] = len;
    }
    float* Y = out[0] ? out[0]->data_as<float>() : nullptr;
    float* Yh = outs > 1 && out[1] ? out[1]->data_as<float>() : nullptr;
    float* Yc = outs > 2 && out[2] ? out[2]->data_as<float>() : nullptr;
    const float* B = g.has_b ? in[3]->data_as<float>() : nullptr;
    const float* h0 = g.has_h0 ? in[5]->data_as<float>() : nullptr;
    const float* c0 = g.has_c0 ? in[6]->data_as<float>() : nullptr;
    const float* P = g.has_p ? in[7]->data_as<float>() : nullptr;
    for (int d = 0; d < g.dirs; ++d) {
      const bool reverse = g.reverse_only || d == 1;
      run_direction(g, *s, d, reverse, in[1]->data_as<float>(), in[2]->data_as<float>(), B, h0, c0,
                    P, Y, Yh, Yc);
    }
    return Status::OK();
  });
}

}  // namespace

void register_rnn_ops(OpRegistry& r) {
  r.add("RNN", 3, 6, 1, 2, [](BuildContext& c) { return build_rnn(c, Cell::kRnn); });
  r.add("GRU", 3, 6, 1, 2, [](BuildContext& c) { return build_rnn(c, Cell::kGru); });
  r.add("LSTM", 3, 8, 1, 3, [](BuildContext& c) { return build_rnn(c, Cell::kLstm); });
}

}  // namespace dlsys
