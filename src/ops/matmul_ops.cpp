// MatMul (NumPy semantics, batch broadcasting) and Gemm on oneDNN's matmul primitive.
#include "ops/broadcast.h"
#include "ops/dnnl_util.h"
#include "ops/op_registry.h"

namespace dlsys {
namespace {

Result<KernelPtr> build_matmul(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32}));
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(1, {DType::kF32}));
  Shape a = ctx.in_shape(0), b = ctx.in_shape(1);
  if (a.empty() || b.empty())
    return ctx.error("inputs must have rank >= 1, got {} and {}", shape_str(a), shape_str(b));
  bool a_vec = a.size() == 1, b_vec = b.size() == 1;
  if (a_vec) a.insert(a.begin(), 1);
  if (b_vec) b.push_back(1);
  int64_t M = a[a.size() - 2], K = a.back(), K2 = b[b.size() - 2], N = b.back();
  if (K != K2)
    return ctx.error("inner dimensions differ: A is {} and B is {} ({} vs {})",
                     shape_str(ctx.in_shape(0)), shape_str(ctx.in_shape(1)), K, K2);
  Shape ba(a.begin(), a.end() - 2), bb(b.begin(), b.end() - 2);
  auto br = broadcast_shapes(ba, bb);
  if (!br.ok()) return ctx.error("batch dimensions: {}", br.status().message());
  Shape batch = br.value();
  size_t r = batch.size() + 2;
  auto pad = [&](Shape s) {
    Shape p(r - s.size(), 1);
    p.insert(p.end(), s.begin(), s.end());
    return p;
  };
  Shape pa = pad(a), pb = pad(b);
  Shape pc = batch;
  pc.push_back(M);
  pc.push_back(N);
  Shape out = batch;
  if (!a_vec) out.push_back(M);
  if (!b_vec) out.push_back(N);
  ctx.set_output(0, DType::kF32, out);
  if (shape_numel(pc) == 0 || K == 0) {
    return make_kernel([](const Tensor* const*, Tensor* const* o) {
      std::fill_n(o[0]->data_as<float>(), o[0]->numel(), 0.f);
      return Status::OK();
    });
  }
  auto call = std::make_shared<DnnlCall>();
  DLSYS_RETURN_IF_ERROR(dnnl_try(ctx, [&] {
    auto mda = plain_md(pa, DType::kF32), mdb = plain_md(pb, DType::kF32);
    auto mdc = plain_md(pc, DType::kF32);
    call->prim = dnnl::matmul(
        dnnl::matmul::primitive_desc(dnnl::matmul::desc(mda, mdb, mdc), dnnl_engine()));
    call->add(DNNL_ARG_SRC, mda);
    call->add(DNNL_ARG_WEIGHTS, mdb);
    call->add(DNNL_ARG_DST, mdc);
  }));
  return make_kernel([call](const Tensor* const* in, Tensor* const* o) {
    call->bind(DNNL_ARG_SRC, in[0]->data());
    call->bind(DNNL_ARG_WEIGHTS, in[1]->data());
    call->bind(DNNL_ARG_DST, o[0]->data());
    call->exec();
    return Status::OK();
  });
}

Result<KernelPtr> build_gemm(BuildContext& ctx) {
  for (size_t i = 0; i < ctx.num_inputs(); ++i)
    if (ctx.has_input(i)) DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(i, {DType::kF32}));
  const Shape &a = ctx.in_shape(0), &b = ctx.in_shape(1);
  if (a.size() != 2 || b.size() != 2)
    return ctx.error("A and B must be 2-D, got {} and {}", shape_str(a), shape_str(b));
  bool ta = ctx.attr_int("transA", 0) != 0, tb = ctx.attr_int("transB", 0) != 0;
  float alpha = ctx.attr_float("alpha", 1.f), beta = ctx.attr_float("beta", 1.f);
  int64_t M = ta ? a[1] : a[0], K = ta ? a[0] : a[1];
  int64_t K2 = tb ? b[1] : b[0], N = tb ? b[0] : b[1];
  if (K != K2)
    return ctx.error("inner dimensions differ: A {} (transA={}) and B {} (transB={})", shape_str(a),
                     ta, shape_str(b), tb);
  Shape out = {M, N};
  ctx.set_output(0, DType::kF32, out);
  bool has_c = ctx.has_input(2) && beta != 0.f;
  Shape cs;
  if (has_c) {
    cs = ctx.in_shape(2);
    auto br = broadcast_shapes(cs, out);
    if (!br.ok() || br.value() != out)
      return ctx.error("C of shape {} does not broadcast to {}", shape_str(cs), shape_str(out));
  }
  // Bias through oneDNN when C is known now (pre-scaled by beta/alpha; alpha is the output scale).
  Tensor bias;
  if (has_c && ctx.in_value(2) && alpha != 0.f) {
    Shape c2 = cs;
    while (c2.size() < 2) c2.insert(c2.begin(), 1);
    bias = Tensor::empty(DType::kF32, c2);
    const float* c = ctx.in_value(2)->data_as<float>();
    for (int64_t i = 0; i < bias.numel(); ++i) bias.data_as<float>()[i] = c[i] * beta / alpha;
  }
  if (M == 0 || N == 0)
    return make_kernel([](const Tensor* const*, Tensor* const*) { return Status::OK(); });
  auto call = std::make_shared<DnnlCall>();
  bool use_bias = bias.valid() && bias.numel() > 0;
  DLSYS_RETURN_IF_ERROR(dnnl_try(ctx, [&] {
    auto mda = ta ? strided_md({M, K}, DType::kF32, {1, M}) : plain_md({M, K}, DType::kF32);
    auto mdb = tb ? strided_md({K, N}, DType::kF32, {1, K}) : plain_md({K, N}, DType::kF32);
    auto mdc = plain_md(out, DType::kF32);
    dnnl::primitive_attr attr;
    if (alpha != 1.f) attr.set_output_scales(0, {alpha});
    dnnl::memory::desc mdbias =
        use_bias ? plain_md(bias.shape(), DType::kF32) : dnnl::memory::desc();
    auto d =
        use_bias ? dnnl::matmul::desc(mda, mdb, mdbias, mdc) : dnnl::matmul::desc(mda, mdb, mdc);
    call->prim = dnnl::matmul(dnnl::matmul::primitive_desc(d, attr, dnnl_engine()));
    call->add(DNNL_ARG_SRC, mda);
    call->add(DNNL_ARG_WEIGHTS, mdb);
    call->add(DNNL_ARG_DST, mdc);
    if (use_bias) call->add(DNNL_ARG_BIAS, mdbias);
  }));
  bool runtime_c = has_c && !use_bias;
  std::vector<int64_t> cst = runtime_c ? broadcast_strides(cs, out) : std::vector<int64_t>{};
  return make_kernel(
      [call, bias, use_bias, runtime_c, cst, beta, N](const Tensor* const* in, Tensor* const* o) {
        call->bind(DNNL_ARG_SRC, in[0]->data());
        call->bind(DNNL_ARG_WEIGHTS, in[1]->data());
        call->bind(DNNL_ARG_DST, o[0]->data());
        if (use_bias) call->bind(DNNL_ARG_BIAS, bias.data());
        call->exec();
        if (runtime_c) {
          float* y = o[0]->data_as<float>();
          const float* c = in[2]->data_as<float>();
          int64_t n = o[0]->numel();
          for (int64_t i = 0; i < n; ++i) y[i] += beta * c[(i / N) * cst[0] + (i % N) * cst[1]];
        }
        return Status::OK();
      });
}

}  // namespace

void register_matmul_ops(OpRegistry& r) {
  r.add("MatMul", 2, 2, 1, 1, build_matmul);
  r.add("Gemm", 2, 3, 1, 1, build_gemm);
}

}  // namespace dlsys
