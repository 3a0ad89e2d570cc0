// ScaledDotProductAttention(Q, K, V, M?) -> Y (domain dlsys): what the AttentionFusion pass makes
// of multi-head attention as exporters write it out (Transposes to head-major, MatMul, a scale,
// an optional additive mask, Softmax, MatMul, a Transpose back). Q is [B, Sq, H, Dh],
// K [B, Skv, H, Dh], V [B, Skv, H, Dv] and Y [B, Sq, H, Dv], all in the token-major layout the
// projections produce; M (f32) broadcasts onto the head-major scores [B, H, Sq, Skv]:
//   Y[b, i, h, :] = sum_j softmax_j(scale * Q[b, i, h, :] . K[b, j, h, :] + M[b, h, i, j])
//                   V[b, j, h, :]
// One parallel region over the (batch, head) pairs; each thread runs, per pair, oneDNN primitives
// made for one thread on its own buffers: scores = scale * Q K^T (a matmul reading the head's
// strided view, with a linear post-op), the mask added by a loop, a softmax over the last axis,
// Y = P V written straight into Y's token-major layout. A head's scores [Sq, Skv] stay in the
// thread's cache between the three steps, and the run costs one wake-up of the thread team instead
// of one per primitive. In bf16 plans each pair's Q, K^T and V are first converted to dense bf16
// blocks and the softmax writes P in bf16; scores, mask and softmax stay f32, and Y is written in
// bf16 when its consumers take a layout. The pairs are the unit of parallel work: a model with
// fewer (batch x heads) than threads runs its attention on fewer threads.
#include <omp.h>

#include <algorithm>
#include <array>
#include <memory>
#include <vector>

#include "ops/dnnl_util.h"
#include "ops/op_registry.h"

namespace dlsys {
namespace {

using dims = dnnl::memory::dims;
using dt = dnnl::memory::data_type;

// Where Q, K and V are read: the tensor each comes from (input index), the element offset of its
// first value there and the elements between consecutive tokens (H * Dh when the tensor holds
// only Q; the whole row of a packed QKV projection otherwise).
struct AttentionGeometry {
  int64_t B = 0, Sq = 0, Skv = 0, H = 0, Dh = 0, Dv = 0;
  int src[3] = {0, 1, 2};
  int64_t offset[3] = {0, 0, 0}, row[3] = {0, 0, 0};
  int mask_input = -1;  // the input holding M, or -1
};

struct AttentionKernel : Kernel {
  AttentionGeometry geo;
  bool bf16 = false, y_bf16 = false, has_mask = false;
  std::array<int64_t, 4> dims{}, mask_strides{};  // [B, H, Sq, Skv]; 0 where M broadcasts
  // The primitives for one (batch, head) pair, made for one thread, and their descriptors.
  dnnl::primitive to_q, to_k, to_v, scores, softmax, context;
  dnnl::memory::desc q_view, k_view, v_view;  // the pair's f32 views of the inputs
  dnnl::memory::desc q_md, kt_md, v_md;       // what the matmuls read (the views, or bf16 copies)
  dnnl::memory::desc s_md, p_md, y_md;        // scores (f32), probabilities, the pair's Y view
  // One thread's calls and buffers.
  struct Lane {
    DnnlCall to_q, to_k, to_v, scores, softmax, context;
    Tensor q, kt, v, s, p;
  };
  std::vector<std::unique_ptr<Lane>> lanes;  // one per thread, grown on the first larger run

  void add_lane() {
    auto l = std::make_unique<Lane>();
    int64_t Sq = dims[2], Skv = dims[3], Dh = geo.Dh, Dv = geo.Dv;
    if (bf16) {
      l->to_q.prim = to_q, l->to_k.prim = to_k, l->to_v.prim = to_v;
      l->to_q.add(DNNL_ARG_FROM, q_view), l->to_q.add(DNNL_ARG_TO, q_md);
      l->to_k.add(DNNL_ARG_FROM, k_view), l->to_k.add(DNNL_ARG_TO, kt_md);
      l->to_v.add(DNNL_ARG_FROM, v_view), l->to_v.add(DNNL_ARG_TO, v_md);
      l->q = Tensor::empty(DType::kBF16, {Sq, Dh});
      l->kt = Tensor::empty(DType::kBF16, {Dh, Skv});
      l->v = Tensor::empty(DType::kBF16, {Skv, Dv});
      l->p = Tensor::empty(DType::kBF16, {Sq, Skv});
    }
    l->s = Tensor::empty(DType::kF32, {Sq, Skv});
    l->scores.prim = scores, l->softmax.prim = softmax, l->context.prim = context;
    l->scores.add(DNNL_ARG_SRC, q_md), l->scores.add(DNNL_ARG_WEIGHTS, kt_md);
    l->scores.add(DNNL_ARG_DST, s_md);
    l->softmax.add(DNNL_ARG_SRC, s_md), l->softmax.add(DNNL_ARG_DST, p_md);
    l->context.add(DNNL_ARG_SRC, p_md), l->context.add(DNNL_ARG_WEIGHTS, v_md);
    l->context.add(DNNL_ARG_DST, y_md);
    lanes.push_back(std::move(l));
  }

  // scores[i, j] += M[b, h, i, j] (broadcast) for one pair.
  void add_mask(const float* m, int64_t b, int64_t h, float* s) const {
    const float* mb = m + b * mask_strides[0] + h * mask_strides[1];
    int64_t n = dims[3], sj = mask_strides[3];
    for (int64_t i = 0; i < dims[2]; ++i) {
      const float* mr = mb + i * mask_strides[2];
      float* sr = s + i * n;
      if (sj == 1) {
        for (int64_t j = 0; j < n; ++j) sr[j] += mr[j];
      } else {
        for (int64_t j = 0; j < n; ++j) sr[j] += mr[0];
      }
    }
  }

  // One (batch, head) pair on lane `l`.
  void pair(Lane& l, const float* const* src, const float* mask, char* y, int64_t b,
            int64_t h) const {
    int64_t Sq = dims[2], Skv = dims[3], H = dims[1];
    const float* at[3];
    for (int i = 0; i < 3; ++i) {
      int64_t S = i == 0 ? Sq : Skv, D = i == 2 ? geo.Dv : geo.Dh;
      at[i] = src[i] + geo.offset[i] + b * S * geo.row[i] + h * D;
    }
    const void *q = at[0], *k = at[1], *v = at[2];
    if (bf16) {
      DnnlCall* to[3] = {&l.to_q, &l.to_k, &l.to_v};
      Tensor* dst[3] = {&l.q, &l.kt, &l.v};
      for (int i = 0; i < 3; ++i) {
        to[i]->bind(DNNL_ARG_FROM, at[i]);
        to[i]->bind(DNNL_ARG_TO, dst[i]->data());
        to[i]->exec();
      }
      q = l.q.data(), k = l.kt.data(), v = l.v.data();
    }
    l.scores.bind(DNNL_ARG_SRC, q);
    l.scores.bind(DNNL_ARG_WEIGHTS, k);
    l.scores.bind(DNNL_ARG_DST, l.s.data());
    l.scores.exec();
    if (mask) add_mask(mask, b, h, l.s.data_as<float>());
    void* p = bf16 ? l.p.data() : l.s.data();
    l.softmax.bind(DNNL_ARG_SRC, l.s.data());
    l.softmax.bind(DNNL_ARG_DST, p);
    l.softmax.exec();
    size_t es = y_bf16 ? 2 : 4;
    l.context.bind(DNNL_ARG_SRC, p);
    l.context.bind(DNNL_ARG_WEIGHTS, v);
    l.context.bind(DNNL_ARG_DST, y + ((b * Sq * H + h) * geo.Dv) * es);
    l.context.exec();
  }

  Status run(const Tensor* const* in, Tensor* const* out) override {
    int threads = std::max(1, omp_get_max_threads());
    while (static_cast<int>(lanes.size()) < threads) add_lane();
    const float* src[3];
    for (int i = 0; i < 3; ++i) src[i] = in[geo.src[i]]->data_as<float>();
    const float* mask = has_mask ? in[geo.mask_input]->data_as<float>() : nullptr;
    char* y = static_cast<char*>(out[0]->data());
    const int64_t pairs = dims[0] * dims[1];
#pragma omp parallel for schedule(static) if (pairs > 1 && threads > 1)
    for (int64_t bh = 0; bh < pairs; ++bh)
      pair(*lanes[static_cast<size_t>(omp_get_thread_num())], src, mask, y, bh / dims[1],
           bh % dims[1]);
    return Status::OK();
  }
};

// The kernel for `geo`.
Result<KernelPtr> make_attention(BuildContext& ctx, const AttentionGeometry& geo) {
  int64_t B = geo.B, Sq = geo.Sq, H = geo.H, Dh = geo.Dh, Skv = geo.Skv, Dv = geo.Dv;
  float scale = ctx.attr_float("scale", 1.0f);
  ctx.set_output(0, DType::kF32, {B, Sq, H, Dv});
  auto kern = std::make_unique<AttentionKernel>();
  kern->geo = geo;
  kern->dims = {B, H, Sq, Skv};
  if (geo.mask_input >= 0) {
    // M's dims, right-aligned onto [B, H, Sq, Skv]: each 1 (broadcast) or equal.
    const Shape& m = ctx.in_shape(geo.mask_input);
    bool fits = m.size() <= 4;
    int64_t stride = 1;
    for (size_t d = 0; fits && d < m.size(); ++d) {
      size_t md = m.size() - 1 - d, at = 3 - d;
      fits = m[md] == 1 || m[md] == kern->dims[at];
      kern->mask_strides[at] = m[md] == 1 ? 0 : stride;
      stride *= m[md];
    }
    if (!fits)
      return ctx.error("the mask {} does not broadcast onto the scores [B, H, Sq, Skv] = {}",
                       shape_str(m), shape_str({B, H, Sq, Skv}));
    kern->has_mask = true;
  }
  if (B * Sq * Skv * H == 0)
    return make_kernel([](const Tensor* const*, Tensor* const*) { return Status::OK(); });
  kern->bf16 = ctx.precision() == Precision::kBF16;
  // In bf16 plans Y is written in bf16 when its consumers take a layout (a MatMul: the output
  // projection), as a plain [B, Sq, H, Dv].
  kern->y_bf16 = kern->bf16 && ctx.output_layout_free(0);
  dt cdt = kern->bf16 ? dt::bf16 : dt::f32;
  // Made for one thread: each runs inside the region over the pairs.
  OneOmpThread one;
  DLSYS_RETURN_IF_ERROR(dnnl_try(ctx, [&] {
    AttentionKernel& k = *kern;
    // One pair's views of the token-major tensors, through strides.
    int64_t qr = geo.row[0], kr = geo.row[1], vr = geo.row[2];
    k.q_view = dnnl::memory::desc(dims{Sq, Dh}, dt::f32, dims{qr, 1});
    k.k_view = dnnl::memory::desc(dims{Dh, Skv}, dt::f32, dims{1, kr});  // K^T
    k.v_view = dnnl::memory::desc(dims{Skv, Dv}, dt::f32, dims{vr, 1});
    k.q_md = k.q_view, k.kt_md = k.k_view, k.v_md = k.v_view;
    if (k.bf16) {
      k.q_md = dnnl::memory::desc(dims{Sq, Dh}, dt::bf16, dnnl::memory::format_tag::ab);
      k.kt_md = dnnl::memory::desc(dims{Dh, Skv}, dt::bf16, dnnl::memory::format_tag::ab);
      k.v_md = dnnl::memory::desc(dims{Skv, Dv}, dt::bf16, dnnl::memory::format_tag::ab);
      k.to_q = dnnl::reorder(dnnl::reorder::primitive_desc(dnnl_engine(), k.q_view, dnnl_engine(),
                                                           k.q_md, dnnl_attr()));
      k.to_k = dnnl::reorder(dnnl::reorder::primitive_desc(dnnl_engine(), k.k_view, dnnl_engine(),
                                                           k.kt_md, dnnl_attr()));
      k.to_v = dnnl::reorder(dnnl::reorder::primitive_desc(dnnl_engine(), k.v_view, dnnl_engine(),
                                                           k.v_md, dnnl_attr()));
    }
    k.s_md = dnnl::memory::desc(dims{Sq, Skv}, dt::f32, dnnl::memory::format_tag::ab);
    k.p_md = dnnl::memory::desc(dims{Sq, Skv}, cdt, dnnl::memory::format_tag::ab);
    k.y_md = dnnl::memory::desc(dims{Sq, Dv}, k.y_bf16 ? dt::bf16 : dt::f32, dims{H * Dv, 1});
    dnnl::primitive_attr scaled = dnnl_attr();
    dnnl::post_ops po;
    po.append_eltwise(1.f, dnnl::algorithm::eltwise_linear, scale, 0.f);
    scaled.set_post_ops(po);
    k.scores = dnnl::matmul(dnnl::matmul::primitive_desc(
        dnnl::matmul::desc(k.q_md, k.kt_md, k.s_md), scaled, dnnl_engine()));
    k.softmax = dnnl::softmax_v2_forward(dnnl::softmax_v2_forward::primitive_desc(
        dnnl::softmax_v2_forward::desc(dnnl::prop_kind::forward_inference,
                                       dnnl::algorithm::softmax_accurate, k.s_md, k.p_md, 1),
        dnnl_attr(), dnnl_engine()));
    k.context = dnnl::matmul(dnnl::matmul::primitive_desc(
        dnnl::matmul::desc(k.p_md, k.v_md, k.y_md), dnnl_attr(), dnnl_engine()));
    k.add_lane();
  }));
  if (kern->y_bf16) ctx.set_output_layout(0, plain_md({B, Sq, H, Dv}, DType::kBF16));
  return KernelPtr(std::move(kern));
}

Result<KernelPtr> build_attention(BuildContext& ctx) {
  for (size_t i = 0; i < 4; ++i)
    if (ctx.has_input(i)) DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(i, {DType::kF32}));
  const Shape &q = ctx.in_shape(0), &k = ctx.in_shape(1), &v = ctx.in_shape(2);
  if (q.size() != 4 || k.size() != 4 || v.size() != 4)
    return ctx.error("Q {}, K {} and V {} must all be [batch, seq, heads, head_dim]", shape_str(q),
                     shape_str(k), shape_str(v));
  AttentionGeometry geo;
  geo.B = q[0], geo.Sq = q[1], geo.H = q[2], geo.Dh = q[3], geo.Skv = k[1], geo.Dv = v[3];
  if (k[0] != geo.B || v[0] != geo.B || k[2] != geo.H || v[2] != geo.H || k[3] != geo.Dh ||
      v[1] != geo.Skv)
    return ctx.error(
        "Q {}, K {} and V {} do not fit: batch and heads must agree, K and V share their "
        "sequence length, Q and K their head size",
        shape_str(q), shape_str(k), shape_str(v));
  geo.row[0] = geo.row[1] = geo.H * geo.Dh;
  geo.row[2] = geo.H * geo.Dv;
  if (ctx.has_input(3)) geo.mask_input = 3;
  return make_attention(ctx, geo);
}

// PackedScaledDotProductAttention(X, Sq, Sk, Sv, q0, q1, k0, k1, v0, v1, M?): Q, K and V are the
// column ranges [q0, q1), [k0, k1), [v0, v1) of X's last axis (a fused QKV projection,
// [.., 3 * H * Dh]; bounds as Slice takes them), each reshaped to its S = [B, Seq, H, D] as
// Reshape would (0 copies the dimension, -1 is inferred); shapes and bounds must be known when
// the plan is built. Made by the AttentionInputPacking pass from Slice -> Reshape ->
// ScaledDotProductAttention: the kernel reads the projection in place through strides instead of
// three copies.
Result<KernelPtr> build_packed_attention(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32}));
  if (ctx.has_input(10)) DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(10, {DType::kF32}));
  const Shape& x = ctx.in_shape(0);
  if (x.size() < 2) return ctx.error("X {} must have rank >= 2", shape_str(x));
  int64_t W = x.back(), T = shape_numel(x) / std::max<int64_t>(W, 1);
  const char* names[3] = {"Q", "K", "V"};
  Shape heads[3];  // [B, Seq, H, D] of Q, K, V
  int64_t start[3];
  for (int i = 0; i < 3; ++i) {
    std::vector<int64_t> b1, e1, s;
    DLSYS_ASSIGN_OR_RETURN(b1, ctx.const_ints(4 + 2 * i, "start"));
    DLSYS_ASSIGN_OR_RETURN(e1, ctx.const_ints(5 + 2 * i, "end"));
    DLSYS_ASSIGN_OR_RETURN(s, ctx.const_ints(1 + i, "shape"));
    if (b1.size() != 1 || e1.size() != 1)
      return ctx.error("the bounds of {} must be one number each", names[i]);
    int64_t b = std::clamp<int64_t>(b1[0] < 0 ? b1[0] + W : b1[0], 0, W);
    int64_t e = std::clamp<int64_t>(e1[0] < 0 ? e1[0] + W : e1[0], 0, W);
    int64_t D = std::max<int64_t>(e - b, 0);
    start[i] = b;
    // Reshape of the slice [x[0], .., x[r-2], D] to S.
    Shape sliced = x;
    sliced.back() = D;
    int64_t known = 1, infer = -1;
    for (size_t d = 0; d < s.size(); ++d) {
      if (s[d] == 0 && d < sliced.size()) s[d] = sliced[d];
      if (s[d] == -1 && infer < 0) {
        infer = static_cast<int64_t>(d);
      } else {
        known *= s[d];
      }
    }
    if (infer >= 0 && known > 0) s[infer] = T * D / known;
    if (s.size() != 4 || s[0] * s[1] != T || s[2] * s[3] != D || s[2] <= 0 || s[3] <= 0)
      return ctx.error(
          "{}'s shape {} is not [batch, seq, heads, head_dim] of columns [{}, {}) of X {}",
          names[i], shape_str(s), b, e, shape_str(x));
    heads[i] = s;
  }
  if (heads[0] != heads[1] || heads[2][0] != heads[0][0] || heads[2][1] != heads[0][1] ||
      heads[2][2] != heads[0][2])
    return ctx.error(
        "Q {}, K {} and V {} do not fit: batch, sequence and heads must agree, Q and "
        "K their head size",
        shape_str(heads[0]), shape_str(heads[1]), shape_str(heads[2]));
  AttentionGeometry geo;
  geo.B = heads[0][0], geo.Sq = geo.Skv = heads[0][1], geo.H = heads[0][2];
  geo.Dh = heads[0][3], geo.Dv = heads[2][3];
  for (int i = 0; i < 3; ++i) {
    geo.src[i] = 0;
    geo.offset[i] = start[i];
    geo.row[i] = W;
  }
  if (ctx.has_input(10)) geo.mask_input = 10;
  return make_attention(ctx, geo);
}

}  // namespace

void register_attention_ops(OpRegistry& r) {
  r.add("ScaledDotProductAttention", 3, 4, 1, 1, build_attention);
  r.add("PackedScaledDotProductAttention", 10, 11, 1, 1, build_packed_attention);
}

}  // namespace dlsys
