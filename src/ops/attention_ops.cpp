// ScaledDotProductAttention(Q, K, V, M?) -> Y (domain dlsys): what the AttentionFusion pass makes
// of multi-head attention as exporters write it out (Transposes to head-major, MatMul, a scale,
// an optional additive mask, Softmax, MatMul, a Transpose back). Q is [B, Sq, H, Dh],
// K [B, Skv, H, Dh], V [B, Skv, H, Dv] and Y [B, Sq, H, Dv], all in the token-major layout the
// projections produce; M (f32) broadcasts onto the head-major scores [B, H, Sq, Skv]:
//   Y[b, i, h, :] = sum_j softmax_j(scale * Q[b, i, h, :] . K[b, j, h, :] + M[b, h, i, j])
//                   V[b, j, h, :]
// Three oneDNN primitives read the head-major views through strides (no transposes are
// materialized): scores = scale * Q K^T (matmul with a linear post-op), an in-place softmax over
// the last axis, Y = P V written straight into Y's token-major layout. The mask is added by a
// loop between the first two (a oneDNN binary post-op with M's broadcasts would leave the fast
// matmul kernels). In bf16 plans the two matmuls read bf16 copies of Q, K, V and the softmax
// writes P in bf16; scores, mask and softmax stay f32. The scores ([B, H, Sq, Skv]), and in bf16
// the copies and P, are the only scratch.
#include <algorithm>
#include <array>

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
  DnnlCall scores, softmax, context;
  Tensor scratch;  // the scores [B, H, Sq, Skv]
  AttentionGeometry geo;
  // bf16 plans: each distinct source of Q, K and V converted to bf16 (same layout) and the
  // probabilities written by the softmax in bf16; the scores, the mask and the softmax stay f32.
  bool bf16 = false;
  DnnlReorder to_bf16[3];  // Q, K, V (strided f32 views) -> dense head-major bf16
  Tensor low[3], probs;
  bool has_mask = false;
  std::array<int64_t, 4> dims{}, mask_strides{};  // [B, H, Sq, Skv]; 0 where M broadcasts

  // scores[b, h, i, j] += M[b, h, i, j] (broadcast).
  void add_mask(const float* m) {
    float* s = scratch.data_as<float>();
    int64_t rows = dims[0] * dims[1] * dims[2], n = dims[3], sj = mask_strides[3];
#pragma omp parallel for if (rows * n > 65536)
    for (int64_t r = 0; r < rows; ++r) {
      int64_t i = r % dims[2], h = r / dims[2] % dims[1], b = r / (dims[2] * dims[1]);
      const float* mr = m + b * mask_strides[0] + h * mask_strides[1] + i * mask_strides[2];
      float* sr = s + r * n;
      if (sj == 1) {
        for (int64_t j = 0; j < n; ++j) sr[j] += mr[j];
      } else {
        for (int64_t j = 0; j < n; ++j) sr[j] += mr[0];
      }
    }
  }

  Status run(const Tensor* const* in, Tensor* const* out) override {
    const void* qkv[3];
    for (int i = 0; i < 3; ++i) {
      qkv[i] = static_cast<const float*>(in[geo.src[i]]->data()) + geo.offset[i];
      if (bf16) {
        to_bf16[i].run(qkv[i], low[i].data());
        qkv[i] = low[i].data();
      }
    }
    void* p = bf16 ? probs.data() : scratch.data();
    scores.bind(DNNL_ARG_SRC, qkv[0]);
    scores.bind(DNNL_ARG_WEIGHTS, qkv[1]);
    scores.bind(DNNL_ARG_DST, scratch.data());
    scores.exec();
    if (has_mask) add_mask(in[geo.mask_input]->data_as<float>());
    softmax.bind(DNNL_ARG_SRC, scratch.data());
    softmax.bind(DNNL_ARG_DST, p);
    softmax.exec();
    context.bind(DNNL_ARG_SRC, p);
    context.bind(DNNL_ARG_WEIGHTS, qkv[2]);
    context.bind(DNNL_ARG_DST, out[0]->data());
    context.exec();
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
  kern->scratch = Tensor::empty(DType::kF32, {B, H, Sq, Skv});
  kern->bf16 = ctx.precision() == Precision::kBF16;
  dt cdt = kern->bf16 ? dt::bf16 : dt::f32;
  DLSYS_RETURN_IF_ERROR(dnnl_try(ctx, [&] {
    // Head-major views [B, H, S, D] of the token-major tensors, through strides.
    int64_t qr = geo.row[0], kr = geo.row[1], vr = geo.row[2];
    dnnl::memory::desc qd(dims{B, H, Sq, Dh}, dt::f32, dims{Sq * qr, Dh, qr, 1});
    dnnl::memory::desc ktd(dims{B, H, Dh, Skv}, dt::f32, dims{Skv * kr, Dh, 1, kr});
    dnnl::memory::desc vd(dims{B, H, Skv, Dv}, dt::f32, dims{Skv * vr, Dv, vr, 1});
    if (kern->bf16) {
      // The conversion to bf16 also makes the views dense (K transposed): the batched matmuls
      // then read plain [B, H, S, D] blocks instead of strided ones.
      dnnl::memory::desc* views[3] = {&qd, &ktd, &vd};
      for (int i = 0; i < 3; ++i) {
        dnnl::memory::desc dense(views[i]->dims(), dt::bf16, dnnl::memory::format_tag::abcd);
        kern->to_bf16[i].init(*views[i], dense);
        kern->low[i] = Tensor::empty(DType::kBF16, Shape(views[i]->dims()));
        *views[i] = dense;
      }
      kern->probs = Tensor::empty(DType::kBF16, {B, H, Sq, Skv});
    }
    dnnl::memory::desc sd(dims{B, H, Sq, Skv}, dt::f32, dims{H * Sq * Skv, Sq * Skv, Skv, 1});
    dnnl::memory::desc pd(dims{B, H, Sq, Skv}, cdt, dims{H * Sq * Skv, Sq * Skv, Skv, 1});
    // In bf16 plans Y is written in bf16 when its consumers take a layout (a MatMul: the output
    // projection), as a plain [B, Sq, H, Dv].
    bool y_bf16 = kern->bf16 && ctx.output_layout_free(0);
    dnnl::memory::desc yd(dims{B, H, Sq, Dv}, y_bf16 ? dt::bf16 : dt::f32,
                          dims{Sq * H * Dv, Dv, H * Dv, 1});
    if (y_bf16) ctx.set_output_layout(0, plain_md({B, Sq, H, Dv}, DType::kBF16));
    dnnl::primitive_attr scaled = dnnl_attr();
    dnnl::post_ops po;
    po.append_eltwise(1.f, dnnl::algorithm::eltwise_linear, scale, 0.f);
    scaled.set_post_ops(po);
    kern->scores.prim = dnnl::matmul(
        dnnl::matmul::primitive_desc(dnnl::matmul::desc(qd, ktd, sd), scaled, dnnl_engine()));
    kern->scores.add(DNNL_ARG_SRC, qd);
    kern->scores.add(DNNL_ARG_WEIGHTS, ktd);
    kern->scores.add(DNNL_ARG_DST, sd);
    kern->softmax.prim = dnnl::softmax_v2_forward(dnnl::softmax_v2_forward::primitive_desc(
        dnnl::softmax_v2_forward::desc(dnnl::prop_kind::forward_inference,
                                       dnnl::algorithm::softmax_accurate, sd, pd, 3),
        dnnl_attr(), dnnl_engine()));
    kern->softmax.add(DNNL_ARG_SRC, sd);
    kern->softmax.add(DNNL_ARG_DST, pd);
    kern->context.prim = dnnl::matmul(
        dnnl::matmul::primitive_desc(dnnl::matmul::desc(pd, vd, yd), dnnl_attr(), dnnl_engine()));
    kern->context.add(DNNL_ARG_SRC, pd);
    kern->context.add(DNNL_ARG_WEIGHTS, vd);
    kern->context.add(DNNL_ARG_DST, yd);
  }));
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
