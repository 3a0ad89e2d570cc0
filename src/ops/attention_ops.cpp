// ScaledDotProductAttention(Q, K, V) -> Y (domain dlsys): what the AttentionFusion pass makes of
// multi-head attention as exporters write it out (Transposes to head-major, MatMul, a scale,
// Softmax, MatMul, a Transpose back). Q is [B, Sq, H, Dh], K [B, Skv, H, Dh], V [B, Skv, H, Dv]
// and Y [B, Sq, H, Dv], all in the token-major layout the projections produce:
//   Y[b, i, h, :] = sum_j softmax_j(scale * Q[b, i, h, :] . K[b, j, h, :]) V[b, j, h, :]
// Three oneDNN primitives read the head-major views through strides (no transposes are
// materialized): scores = scale * Q K^T (matmul with a linear post-op), an in-place softmax over
// the last axis, Y = P V written straight into Y's token-major layout. The scores
// ([B, H, Sq, Skv]) are the only scratch.
#include "ops/dnnl_util.h"
#include "ops/op_registry.h"

namespace dlsys {
namespace {

using dims = dnnl::memory::dims;
using dt = dnnl::memory::data_type;

struct AttentionKernel : Kernel {
  DnnlCall scores, softmax, context;
  Tensor scratch;  // the scores [B, H, Sq, Skv]

  Status run(const Tensor* const* in, Tensor* const* out) override {
    scores.bind(DNNL_ARG_SRC, in[0]->data());
    scores.bind(DNNL_ARG_WEIGHTS, in[1]->data());
    scores.bind(DNNL_ARG_DST, scratch.data());
    scores.exec();
    softmax.bind(DNNL_ARG_SRC, scratch.data());
    softmax.bind(DNNL_ARG_DST, scratch.data());
    softmax.exec();
    context.bind(DNNL_ARG_SRC, scratch.data());
    context.bind(DNNL_ARG_WEIGHTS, in[2]->data());
    context.bind(DNNL_ARG_DST, out[0]->data());
    context.exec();
    return Status::OK();
  }
};

Result<KernelPtr> build_attention(BuildContext& ctx) {
  for (size_t i = 0; i < 3; ++i) DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(i, {DType::kF32}));
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
  if (B * Sq * Skv * H == 0)
    return make_kernel([](const Tensor* const*, Tensor* const*) { return Status::OK(); });
  kern->scratch = Tensor::empty(DType::kF32, {B, H, Sq, Skv});
  DLSYS_RETURN_IF_ERROR(dnnl_try(ctx, [&] {
    // Head-major views [B, H, S, D] of the token-major tensors, through strides.
    dnnl::memory::desc qd(dims{B, H, Sq, Dh}, dt::f32, dims{Sq * H * Dh, Dh, H * Dh, 1});
    dnnl::memory::desc ktd(dims{B, H, Dh, Skv}, dt::f32, dims{Skv * H * Dh, Dh, 1, H * Dh});
    dnnl::memory::desc sd(dims{B, H, Sq, Skv}, dt::f32, dims{H * Sq * Skv, Sq * Skv, Skv, 1});
    dnnl::memory::desc vd(dims{B, H, Skv, Dv}, dt::f32, dims{Skv * H * Dv, Dv, H * Dv, 1});
    dnnl::memory::desc yd(dims{B, H, Sq, Dv}, dt::f32, dims{Sq * H * Dv, Dv, H * Dv, 1});
    dnnl::primitive_attr scaled;
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
                                       dnnl::algorithm::softmax_accurate, sd, sd, 3),
        dnnl_engine()));
    kern->softmax.add(DNNL_ARG_SRC, sd);
    kern->softmax.add(DNNL_ARG_DST, sd);
    kern->context.prim =
        dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(sd, vd, yd), dnnl_engine()));
    kern->context.add(DNNL_ARG_SRC, sd);
    kern->context.add(DNNL_ARG_WEIGHTS, vd);
    kern->context.add(DNNL_ARG_DST, yd);
  }));
  return KernelPtr(std::move(kern));
}

}  // namespace

void register_attention_ops(OpRegistry& r) {
  r.add("ScaledDotProductAttention", 3, 3, 1, 1, build_attention);
}

}  // namespace dlsys
