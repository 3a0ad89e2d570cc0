// BatchNormalization (inference) and LayerNormalization on oneDNN's normalization primitives;
// LayerNormalization falls back to a plain loop when its Mean / InvStdDev outputs are used.
// BatchNormTraining, BatchNormGrad and LayerNormGrad are for training graphs (src/train/autodiff).
#include <cmath>

#include "ops/broadcast.h"
#include "ops/dnnl_util.h"
#include "ops/op_registry.h"

namespace dlsys {
namespace {

Result<KernelPtr> build_batch_norm(BuildContext& ctx) {
  for (size_t i = 0; i < 5; ++i) DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(i, {DType::kF32}));
  if (ctx.attr_int("training_mode", 0) != 0 || ctx.output_used(1) || ctx.output_used(2))
    return ctx.unsupported("training mode (running statistics outputs) is not supported");
  const Shape& x = ctx.in_shape(0);
  if (x.size() < 2) return ctx.error("X must have rank >= 2, got {}", shape_str(x));
  int64_t C = x[1];
  for (size_t i = 1; i < 5; ++i)
    if (ctx.in_shape(i) != Shape{C})
      return ctx.error("input {} has shape {}, expected [{}]", i, shape_str(ctx.in_shape(i)), C);
  float eps = ctx.attr_float("epsilon", 1e-5f);
  ctx.set_output(0, DType::kF32, x);
  if (shape_numel(x) == 0)
    return make_kernel([](const Tensor* const*, Tensor* const*) { return Status::OK(); });
  // oneDNN wants at least 3 dims for a spatial batch norm of rank-2 data: view [N, C] as [N, C, 1].
  Shape xv = x;
  if (xv.size() == 2) xv.push_back(1);
  auto md = plain_md(xv, DType::kF32);
  auto cmd = plain_md({C}, DType::kF32);
  auto call = std::make_shared<DnnlCall>();
  DLSYS_RETURN_IF_ERROR(dnnl_try(ctx, [&] {
    auto flags = dnnl::normalization_flags::use_global_stats |
                 dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
    auto d =
        dnnl::batch_normalization_forward::desc(dnnl::prop_kind::forward_inference, md, eps, flags);
    call->prim = dnnl::batch_normalization_forward(
        dnnl::batch_normalization_forward::primitive_desc(d, dnnl_engine()));
    call->add(DNNL_ARG_SRC, md);
    call->add(DNNL_ARG_DST, md);
    call->add(DNNL_ARG_SCALE, cmd);
    call->add(DNNL_ARG_SHIFT, cmd);
    call->add(DNNL_ARG_MEAN, cmd);
    call->add(DNNL_ARG_VARIANCE, cmd);
  }));
  return make_kernel([call](const Tensor* const* in, Tensor* const* o) {
    call->bind(DNNL_ARG_SRC, in[0]->data());
    call->bind(DNNL_ARG_SCALE, in[1]->data());
    call->bind(DNNL_ARG_SHIFT, in[2]->data());
    call->bind(DNNL_ARG_MEAN, in[3]->data());
    call->bind(DNNL_ARG_VARIANCE, in[4]->data());
    call->bind(DNNL_ARG_DST, o[0]->data());
    call->exec();
    return Status::OK();
  });
}

Result<KernelPtr> build_layer_norm(BuildContext& ctx) {
  for (size_t i = 0; i < 3; ++i)
    if (ctx.has_input(i)) DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(i, {DType::kF32}));
  const Shape& x = ctx.in_shape(0);
  int64_t axis = normalize_axis(ctx.attr_int("axis", -1), static_cast<int64_t>(x.size()));
  if (axis < 0)
    return ctx.error("axis {} is out of range for X {}", ctx.attr_int("axis", -1), shape_str(x));
  float eps = ctx.attr_float("epsilon", 1e-5f);
  Shape norm_shape(x.begin() + axis, x.end());
  int64_t inner = shape_numel(norm_shape), outer = shape_numel(x) / std::max<int64_t>(inner, 1);
  for (size_t i = 1; i < 3; ++i) {
    if (!ctx.has_input(i)) continue;
    auto r = broadcast_shapes(ctx.in_shape(i), norm_shape);
    if (!r.ok() || r.value() != norm_shape)
      return ctx.error("input {} of shape {} does not broadcast to the normalized shape {}", i,
                       shape_str(ctx.in_shape(i)), shape_str(norm_shape));
  }
  Shape stat_shape = x;
  for (size_t i = axis; i < x.size(); ++i) stat_shape[i] = 1;
  ctx.set_output(0, DType::kF32, x);
  ctx.set_output(1, DType::kF32, stat_shape);
  ctx.set_output(2, DType::kF32, stat_shape);
  bool full_params = shape_numel(ctx.in_shape(1)) == inner &&
                     (!ctx.has_input(2) || shape_numel(ctx.in_shape(2)) == inner);
  bool stats_used = ctx.output_used(1) || ctx.output_used(2);
  if (!stats_used && full_params && outer > 0 && inner > 0) {
    auto md = plain_md({outer, inner}, DType::kF32);
    auto cmd = plain_md({inner}, DType::kF32);
    bool has_bias = ctx.has_input(2);
    auto call = std::make_shared<DnnlCall>();
    DLSYS_RETURN_IF_ERROR(dnnl_try(ctx, [&] {
      auto flags = dnnl::normalization_flags::use_scale;
      if (has_bias) flags = flags | dnnl::normalization_flags::use_shift;
      auto d = dnnl::layer_normalization_forward::desc(dnnl::prop_kind::forward_inference, md, eps,
                                                       flags);
      call->prim = dnnl::layer_normalization_forward(
          dnnl::layer_normalization_forward::primitive_desc(d, dnnl_engine()));
      call->add(DNNL_ARG_SRC, md);
      call->add(DNNL_ARG_DST, md);
      call->add(DNNL_ARG_SCALE, cmd);
      if (has_bias) call->add(DNNL_ARG_SHIFT, cmd);
    }));
    return make_kernel([call, has_bias](const Tensor* const* in, Tensor* const* o) {
      call->bind(DNNL_ARG_SRC, in[0]->data());
      call->bind(DNNL_ARG_SCALE, in[1]->data());
      if (has_bias) call->bind(DNNL_ARG_SHIFT, in[2]->data());
      call->bind(DNNL_ARG_DST, o[0]->data());
      call->exec();
      return Status::OK();
    });
  }
  // Plain loop: statistics in double, scale and bias broadcast over the normalized shape
  // (their per-position offsets computed here, once).
  std::vector<int64_t> sst = broadcast_strides(ctx.in_shape(1), norm_shape);
  std::vector<int64_t> bst = ctx.has_input(2) ? broadcast_strides(ctx.in_shape(2), norm_shape)
                                              : std::vector<int64_t>(norm_shape.size(), 0);
  std::vector<int64_t> nst = shape_strides(norm_shape);
  std::vector<int64_t> sidx(inner), bidx(inner);
  for (int64_t j = 0; j < inner; ++j) {
    int64_t rem = j, so = 0, bo = 0;
    for (size_t d = 0; d < norm_shape.size(); ++d) {
      int64_t idx = rem / nst[d];
      rem %= nst[d];
      so += idx * sst[d];
      bo += idx * bst[d];
    }
    sidx[j] = so;
    bidx[j] = bo;
  }
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    const float* X = in[0]->data_as<float>();
    const float* S = in[1]->data_as<float>();
    const float* B = in[2] ? in[2]->data_as<float>() : nullptr;
    float* Y = o[0]->data_as<float>();
    float* mean_out = o[1] ? o[1]->data_as<float>() : nullptr;
    float* inv_out = o[2] ? o[2]->data_as<float>() : nullptr;
    for (int64_t r = 0; r < outer; ++r) {
      const float* xr = X + r * inner;
      double sum = 0, sq = 0;
      for (int64_t j = 0; j < inner; ++j) sum += xr[j];
      double mean = sum / inner;
      for (int64_t j = 0; j < inner; ++j) sq += (xr[j] - mean) * (xr[j] - mean);
      double inv = 1.0 / std::sqrt(sq / inner + eps);
      for (int64_t j = 0; j < inner; ++j)
        Y[r * inner + j] =
            static_cast<float>((xr[j] - mean) * inv * S[sidx[j]] + (B ? B[bidx[j]] : 0.f));
      if (mean_out) mean_out[r] = static_cast<float>(mean);
      if (inv_out) inv_out[r] = static_cast<float>(inv);
    }
    return Status::OK();
  });
}

// BatchNormTraining(X, scale, B) -> Y, mean, var, var_unbiased?: batch normalization with the
// statistics of this batch (over N and the spatial dims; var is biased, as the normalization uses
// it; var_unbiased = var * n / (n - 1) is what running statistics average). What
// the autodiff puts in place of BatchNormalization in training graphs; the trainer folds mean and
// var into the running statistics.
// BatchNormGrad(dY, X, scale, mean, var) -> dX, dscale, dB: its gradient. Both on oneDNN.
Status batch_norm_shapes(const BuildContext& ctx, size_t x_in, Shape* xv, int64_t* C) {
  const Shape& x = ctx.in_shape(x_in);
  if (x.size() < 2) return ctx.error("X must have rank >= 2, got {}", shape_str(x));
  *C = x[1];
  *xv = x;
  if (xv->size() == 2) xv->push_back(1);  // oneDNN wants a spatial dim
  return Status::OK();
}

Result<KernelPtr> build_batch_norm_training(BuildContext& ctx) {
  for (size_t i = 0; i < 3; ++i) DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(i, {DType::kF32}));
  Shape xv;
  int64_t C = 0;
  DLSYS_RETURN_IF_ERROR(batch_norm_shapes(ctx, 0, &xv, &C));
  for (size_t i = 1; i < 3; ++i)
    if (ctx.in_shape(i) != Shape{C})
      return ctx.error("input {} has shape {}, expected [{}]", i, shape_str(ctx.in_shape(i)), C);
  float eps = ctx.attr_float("epsilon", 1e-5f);
  ctx.set_output(0, DType::kF32, ctx.in_shape(0));
  ctx.set_output(1, DType::kF32, {C});
  ctx.set_output(2, DType::kF32, {C});
  if (ctx.num_outputs() > 3) ctx.set_output(3, DType::kF32, {C});
  int64_t count = C > 0 ? shape_numel(xv) / C : 0;
  if (count < 1) return ctx.error("X {} has no rows to normalize", shape_str(xv));
  float unbias = count > 1 ? static_cast<float>(count) / static_cast<float>(count - 1) : 1.f;
  auto md = plain_md(xv, DType::kF32), cmd = plain_md({C}, DType::kF32);
  auto call = std::make_shared<DnnlCall>();
  auto mean_buf = std::make_shared<Tensor>(Tensor::empty(DType::kF32, {C}));
  auto var_buf = std::make_shared<Tensor>(Tensor::empty(DType::kF32, {C}));
  DLSYS_RETURN_IF_ERROR(dnnl_try(ctx, [&] {
    auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
    auto d =
        dnnl::batch_normalization_forward::desc(dnnl::prop_kind::forward_training, md, eps, flags);
    call->prim = dnnl::batch_normalization_forward(
        dnnl::batch_normalization_forward::primitive_desc(d, dnnl_engine()));
    for (int a : {DNNL_ARG_SRC, DNNL_ARG_DST}) call->add(a, md);
    for (int a : {DNNL_ARG_SCALE, DNNL_ARG_SHIFT, DNNL_ARG_MEAN, DNNL_ARG_VARIANCE})
      call->add(a, cmd);
  }));
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    call->bind(DNNL_ARG_SRC, in[0]->data());
    call->bind(DNNL_ARG_SCALE, in[1]->data());
    call->bind(DNNL_ARG_SHIFT, in[2]->data());
    call->bind(DNNL_ARG_DST, o[0]->data());
    call->bind(DNNL_ARG_MEAN, o[1] ? o[1]->data() : mean_buf->data());
    float* var = o[2] ? o[2]->data_as<float>() : var_buf->data_as<float>();
    call->bind(DNNL_ARG_VARIANCE, var);
    call->exec();
    if (o[3])
      for (int64_t c = 0; c < C; ++c) o[3]->data_as<float>()[c] = var[c] * unbias;
    return Status::OK();
  });
}

Result<KernelPtr> build_batch_norm_grad(BuildContext& ctx) {
  for (size_t i = 0; i < 5; ++i) DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(i, {DType::kF32}));
  Shape xv;
  int64_t C = 0;
  DLSYS_RETURN_IF_ERROR(batch_norm_shapes(ctx, 1, &xv, &C));
  if (ctx.in_shape(0) != ctx.in_shape(1))
    return ctx.error("dY {} and X {} must have one shape", shape_str(ctx.in_shape(0)),
                     shape_str(ctx.in_shape(1)));
  for (size_t i = 2; i < 5; ++i)
    if (ctx.in_shape(i) != Shape{C})
      return ctx.error("input {} has shape {}, expected [{}]", i, shape_str(ctx.in_shape(i)), C);
  float eps = ctx.attr_float("epsilon", 1e-5f);
  ctx.set_output(0, DType::kF32, ctx.in_shape(1));
  ctx.set_output(1, DType::kF32, {C});
  ctx.set_output(2, DType::kF32, {C});
  auto md = plain_md(xv, DType::kF32), cmd = plain_md({C}, DType::kF32);
  auto call = std::make_shared<DnnlCall>();
  auto dscale = std::make_shared<Tensor>(Tensor::empty(DType::kF32, {C}));
  auto dshift = std::make_shared<Tensor>(Tensor::empty(DType::kF32, {C}));
  DLSYS_RETURN_IF_ERROR(dnnl_try(ctx, [&] {
    auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
    auto fd =
        dnnl::batch_normalization_forward::desc(dnnl::prop_kind::forward_training, md, eps, flags);
    dnnl::batch_normalization_forward::primitive_desc fpd(fd, dnnl_engine());
    auto bd =
        dnnl::batch_normalization_backward::desc(dnnl::prop_kind::backward, md, md, eps, flags);
    dnnl::batch_normalization_backward::primitive_desc bpd(bd, dnnl_engine(), fpd);
    call->prim = dnnl::batch_normalization_backward(bpd);
    for (int a : {DNNL_ARG_DIFF_DST, DNNL_ARG_SRC, DNNL_ARG_DIFF_SRC}) call->add(a, md);
    // oneDNN 2.6 checks that a shift is bound in backward too (it does not read it).
    for (int a : {DNNL_ARG_SCALE, DNNL_ARG_SHIFT, DNNL_ARG_MEAN, DNNL_ARG_VARIANCE,
                  DNNL_ARG_DIFF_SCALE, DNNL_ARG_DIFF_SHIFT})
      call->add(a, cmd);
  }));
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    call->bind(DNNL_ARG_DIFF_DST, in[0]->data());
    call->bind(DNNL_ARG_SRC, in[1]->data());
    call->bind(DNNL_ARG_SCALE, in[2]->data());
    call->bind(DNNL_ARG_SHIFT, dshift->data());
    call->bind(DNNL_ARG_MEAN, in[3]->data());
    call->bind(DNNL_ARG_VARIANCE, in[4]->data());
    call->bind(DNNL_ARG_DIFF_SRC, o[0]->data());
    call->bind(DNNL_ARG_DIFF_SCALE, o[1] ? o[1]->data() : dscale->data());
    call->bind(DNNL_ARG_DIFF_SHIFT, o[2] ? o[2]->data() : dshift->data());
    call->exec();
    return Status::OK();
  });
}

// LayerNormGrad(dY, X, scale, mean, inv_std) -> dX, dscale, dB: the gradient of
// LayerNormalization (axis attribute as there) given its Mean and InvStdDev outputs. Scale must
// have the full normalized shape (what layernorm layers and exporters produce). Plain loops, sums
// in double:
//   xhat = (x - mean) * inv; g = dY * scale
//   dX = inv * (g - mean(g) - xhat * mean(g * xhat)); dscale = sum_rows dY * xhat; dB = sum dY
Result<KernelPtr> build_layer_norm_grad(BuildContext& ctx) {
  for (size_t i = 0; i < 5; ++i) DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(i, {DType::kF32}));
  const Shape& x = ctx.in_shape(1);
  if (ctx.in_shape(0) != x)
    return ctx.error("dY {} and X {} must have one shape", shape_str(ctx.in_shape(0)),
                     shape_str(x));
  int64_t axis = normalize_axis(ctx.attr_int("axis", -1), static_cast<int64_t>(x.size()));
  if (axis < 0)
    return ctx.error("axis {} is out of range for X {}", ctx.attr_int("axis", -1), shape_str(x));
  Shape norm_shape(x.begin() + axis, x.end());
  int64_t inner = shape_numel(norm_shape), outer = shape_numel(x) / std::max<int64_t>(inner, 1);
  if (shape_numel(ctx.in_shape(2)) != inner)
    return ctx.unsupported(
        "scale {} must have the normalized shape {} (broadcast scales have no "
        "gradient yet)",
        shape_str(ctx.in_shape(2)), shape_str(norm_shape));
  if (shape_numel(ctx.in_shape(3)) != outer || shape_numel(ctx.in_shape(4)) != outer)
    return ctx.error("mean and inv_std must hold {} values (one per normalized row)", outer);
  ctx.set_output(0, DType::kF32, x);
  ctx.set_output(1, DType::kF32, ctx.in_shape(2));
  ctx.set_output(2, DType::kF32, ctx.in_shape(2));
  auto acc = std::make_shared<std::vector<double>>(2 * inner);
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    const float *dy = in[0]->data_as<float>(), *X = in[1]->data_as<float>();
    const float *S = in[2]->data_as<float>(), *M = in[3]->data_as<float>();
    const float* I = in[4]->data_as<float>();
    float* dx = o[0]->data_as<float>();
    std::vector<double>& a = *acc;
    std::fill(a.begin(), a.end(), 0.0);
    for (int64_t r = 0; r < outer; ++r) {
      const float *xr = X + r * inner, *gr = dy + r * inner;
      double mean = M[r], inv = I[r], sg = 0, sgx = 0;
      for (int64_t j = 0; j < inner; ++j) {
        double xh = (xr[j] - mean) * inv, g = gr[j] * static_cast<double>(S[j]);
        sg += g;
        sgx += g * xh;
        a[j] += gr[j] * xh;
        a[inner + j] += gr[j];
      }
      sg /= static_cast<double>(inner);
      sgx /= static_cast<double>(inner);
      for (int64_t j = 0; j < inner; ++j) {
        double xh = (xr[j] - mean) * inv, g = gr[j] * static_cast<double>(S[j]);
        dx[r * inner + j] = static_cast<float>(inv * (g - sg - xh * sgx));
      }
    }
    for (int k = 1; k < 3; ++k)
      if (o[k])
        for (int64_t j = 0; j < inner; ++j)
          o[k]->data_as<float>()[j] = static_cast<float>(a[(k - 1) * inner + j]);
    return Status::OK();
  });
}

}  // namespace

void register_norm_ops(OpRegistry& r) {
  r.add("BatchNormalization", 5, 5, 1, 3, build_batch_norm);
  r.add("LayerNormalization", 2, 3, 1, 3, build_layer_norm);
  r.add("BatchNormTraining", 3, 3, 1, 4, build_batch_norm_training);
  r.add("BatchNormGrad", 5, 5, 1, 3, build_batch_norm_grad);
  r.add("LayerNormGrad", 5, 5, 1, 3, build_layer_norm_grad);
}

}  // namespace dlsys
