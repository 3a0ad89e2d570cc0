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
#include <array>

#include "ops/dnnl_util.h"
#include "ops/op_registry.h"

namespace dlsys {
namespace {

using dims = dnnl::memory::dims;
using dt = dnnl::memory::data_type;

struct AttentionKernel : Kernel {
  DnnlCall scores, softmax, context;
  Tensor scratch;  // the scores [B, H, Sq, Skv]
  // bf16 plans: Q, K and V converted to bf16 (same token-major layout) and the probabilities
  // written by the softmax in bf16; the scores, the mask and the softmax stay f32.
  bool bf16 = false;
  DnnlReorder to_bf16[3];
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
    const void* qkv[3] = {in[0]->data(), in[1]->data(), in[2]->data()};
    for (int i = 0; bf16 && i < 3; ++i) {
      to_bf16[i].run(qkv[i], low[i].data());
      qkv[i] = low[i].data();
    }
    void* p = bf16 ? probs.data() : scratch.data();
    scores.bind(DNNL_ARG_SRC, qkv[0]);
    scores.bind(DNNL_ARG_WEIGHTS, qkv[1]);
    scores.bind(DNNL_ARG_DST, scratch.data());
    scores.exec();
    if (has_mask) add_mask(in[3]->data_as<float>());
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

Result<KernelPtr> build_attention(BuildContext& ctx) {
  for (size_t i = 0; i < 4; ++i)
    if (ctx.has_input(i)) DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(i, {DType::kF32}));
  const Shape &q = ctx.in_shape(0), &k = ctx.in_shape(1), &v = ctx.in_shape(2);
  if (q.size() != 4 || k.size() != 4 || v.size() != 4)
    return ctx.error("Q {}, K {} and V {} must all be [batch, seq, heads, head_dim]", shape_str(q),
                     shape_str(k), shape_str(v));
  int64_t B = q[0], Sq = q[1], H = q[2], Dh = q[3], Skv = k[1], Dv = v[3];
  if (k[0] != B || v[0] != B || k[2] != H || v[2] != H || k[3] != Dh || v[1] != Skv)
    return ctx.error(
        "Q {}, K {} and V {} do not fit: batch and heads must agree, K and V share their "
        "sequence length, Q and K their head size",
        shape_str(q), shape_str(k), shape_str(v));
  float scale = ctx.attr_float("scale", 1.0f);
  ctx.set_output(0, DType::kF32, {B, Sq, H, Dv});
  auto kern = std::make_unique<AttentionKernel>();
  kern->dims = {B, H, Sq, Skv};
  if (ctx.has_input(3)) {
    // M's dims, right-aligned onto [B, H, Sq, Skv]: each 1 (broadcast) or equal.
    const Shape& m = ctx.in_shape(3);
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
    if (kern->bf16) {
      for (int i = 0; i < 3; ++i) {
        const Shape& s = ctx.in_shape(i);
        kern->to_bf16[i].init(plain_md(s, DType::kF32), plain_md(s, DType::kBF16));
        kern->low[i] = Tensor::empty(DType::kBF16, s);
      }
      kern->probs = Tensor::empty(DType::kBF16, {B, H, Sq, Skv});
    }
    // Head-major views [B, H, S, D] of the token-major tensors, through strides.
    dnnl::memory::desc qd(dims{B, H, Sq, Dh}, cdt, dims{Sq * H * Dh, Dh, H * Dh, 1});
    dnnl::memory::desc ktd(dims{B, H, Dh, Skv}, cdt, dims{Skv * H * Dh, Dh, 1, H * Dh});
    dnnl::memory::desc sd(dims{B, H, Sq, Skv}, dt::f32, dims{H * Sq * Skv, Sq * Skv, Skv, 1});
    dnnl::memory::desc pd(dims{B, H, Sq, Skv}, cdt, dims{H * Sq * Skv, Sq * Skv, Skv, 1});
    dnnl::memory::desc vd(dims{B, H, Skv, Dv}, cdt, dims{Skv * H * Dv, Dv, H * Dv, 1});
    dnnl::memory::desc yd(dims{B, H, Sq, Dv}, dt::f32, dims{Sq * H * Dv, Dv, H * Dv, 1});
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

}  // namespace

void register_attention_ops(OpRegistry& r) {
  r.add("ScaledDotProductAttention", 3, 4, 1, 1, build_attention);
}

}  // namespace dlsys
