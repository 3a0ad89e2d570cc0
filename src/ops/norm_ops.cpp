// BatchNormalization (inference) and LayerNormalization on oneDNN's normalization primitives;
// LayerNormalization falls back to a plain loop when its Mean / InvStdDev outputs are used, and
// BatchNormalization with training_mode=1 (batch statistics, running mean/var outputs) is a loop.
// BatchNormTraining, BatchNormGrad and LayerNormGrad are for training graphs (src/train/autodiff):
// plain loops, threaded over channels / rows.
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "ops/broadcast.h"
#include "ops/dnnl_util.h"
#include "ops/op_registry.h"

namespace dlsys {
namespace {

Result<KernelPtr> build_batch_norm_train_mode(BuildContext& ctx);

Result<KernelPtr> build_batch_norm(BuildContext& ctx) {
  for (size_t i = 0; i < 5; ++i) DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(i, {DType::kF32}));
  if (ctx.attr_int("training_mode", 0) != 0) return build_batch_norm_train_mode(ctx);
  if (ctx.output_used(1) || ctx.output_used(2))
    return ctx.error("running_mean and running_var are outputs only with training_mode=1");
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
        dnnl::batch_normalization_forward::primitive_desc(d, dnnl_attr(), dnnl_engine()));
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
          dnnl::layer_normalization_forward::primitive_desc(d, dnnl_attr(), dnnl_engine()));
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
// Attribute relu=1: Y = max(0, batchnorm(X)) (a Relu taken in by the autodiff). Attribute
// sync=1 (both ops; train.sync_batch_norm): the statistics are the whole batch's, over the
// processes of BuildContext::cross_process (synced_batch_norm_training below).
// BatchNormGrad(dY, X, scale, mean, var, Y?) -> dX, dscale, dB: its gradient; given Y (the output
// of a BatchNormTraining with relu=1), dY counts only where Y > 0.
// Both are plain loops over one channel at a time (threads split the channels): a channel's N
// rows of H*W values are read from memory once and then stay in cache for the second and third
// pass, where oneDNN's kernels for plain NCHW sweep the whole tensor per pass.
struct ChannelLayout {
  int64_t N = 0, C = 0, inner = 0;  // X viewed as [N, C, inner]
  int64_t count() const { return N * inner; }
  int64_t offset(int64_t n, int64_t c) const { return (n * C + c) * inner; }
};

Status channel_layout(const BuildContext& ctx, size_t x_in, ChannelLayout* l) {
  const Shape& x = ctx.in_shape(x_in);
  if (x.size() < 2) return ctx.error("X must have rank >= 2, got {}", shape_str(x));
  l->N = x[0];
  l->C = x[1];
  l->inner = 1;
  for (size_t d = 2; d < x.size(); ++d) l->inner *= x[d];
  if (l->count() < 1) return ctx.error("X {} has no values to normalize", shape_str(x));
  return Status::OK();
}

// Mean and biased variance of channel c of x, summed in double (the variance around the mean:
// no cancellation).
void channel_moments(const float* x, const ChannelLayout& l, int64_t c, float* mean, double* var) {
  const int64_t inner = l.inner;
  double n = static_cast<double>(l.count()), sum = 0;
  for (int64_t r = 0; r < l.N; ++r) {
    const float* xr = x + l.offset(r, c);
    float acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = 0; i < inner; ++i) acc += xr[i];
    sum += acc;
  }
  float m = static_cast<float>(sum / n);
  double sq = 0;
  for (int64_t r = 0; r < l.N; ++r) {
    const float* xr = x + l.offset(r, c);
    float acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = 0; i < inner; ++i) acc += (xr[i] - m) * (xr[i] - m);
    sq += acc;
  }
  *mean = m;
  *var = sq / n;
}

// Channel c of Y = X * a + b, through a Relu when `relu`.
void normalize_channel(const float* x, float* y, const ChannelLayout& l, int64_t c, float a,
                       float b, bool relu) {
  const int64_t inner = l.inner;
  for (int64_t r = 0; r < l.N; ++r) {
    int64_t off = l.offset(r, c);
    if (relu) {
#pragma omp simd
      for (int64_t i = 0; i < inner; ++i) y[off + i] = std::max(x[off + i] * a + b, 0.0f);
    } else {
#pragma omp simd
      for (int64_t i = 0; i < inner; ++i) y[off + i] = x[off + i] * a + b;
    }
  }
}

// BatchNormTraining's statistics outputs for channel c (each when used): the mean, the biased
// variance and the unbiased one.
void write_channel_stats(Tensor* const* o, int64_t c, float mean, double var, double unbias) {
  if (o[1]) o[1]->data_as<float>()[c] = mean;
  if (o[2]) o[2]->data_as<float>()[c] = static_cast<float>(var);
  if (o[3]) o[3]->data_as<float>()[c] = static_cast<float>(var * unbias);
}

// BatchNormGrad's first pass over channel c: with a fused Relu (y given), dY masked by Y > 0
// into dX, which is then g; else g is dY. Returns the sums of g and of g * (X - mean).
const float* channel_grad_sums(const float* dy, const float* y, float* dx, const float* x,
                               const ChannelLayout& l, int64_t c, float m, double* sum_g,
                               double* sum_g_xm) {
  const int64_t inner = l.inner;
  if (y) {
    for (int64_t r = 0; r < l.N; ++r) {
      int64_t off = l.offset(r, c);
#pragma omp simd
      for (int64_t i = 0; i < inner; ++i) dx[off + i] = y[off + i] > 0.f ? dy[off + i] : 0.f;
    }
  }
  const float* g = y ? dx : dy;
  double s1 = 0, s2 = 0;
  for (int64_t r = 0; r < l.N; ++r) {
    int64_t off = l.offset(r, c);
    float a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
    for (int64_t i = 0; i < inner; ++i) {
      a += g[off + i];
      b += g[off + i] * (x[off + i] - m);
    }
    s1 += a;
    s2 += b;
  }
  *sum_g = s1;
  *sum_g_xm = s2;
  return g;
}

// BatchNormGrad's second pass over channel c: dX = k * (g - mean(g) - xhat * mean(g * xhat)).
void channel_dx(const float* g, const float* x, float* dx, const ChannelLayout& l, int64_t c,
                float m, float inv, float k, float mdy, float mdyx) {
  const int64_t inner = l.inner;
  for (int64_t r = 0; r < l.N; ++r) {
    int64_t off = l.offset(r, c);
#pragma omp simd
    for (int64_t i = 0; i < inner; ++i)
      dx[off + i] = k * (g[off + i] - mdy - (x[off + i] - m) * inv * mdyx);
  }
}

// BatchNormalization with training_mode=1 (ONNX opset 14+): Y normalized with this batch's mean
// and biased variance; outputs running_mean = input_mean * momentum + mean * (1 - momentum) and
// likewise running_var (from the biased variance, as the spec's reference computes it).
Result<KernelPtr> build_batch_norm_train_mode(BuildContext& ctx) {
  ChannelLayout l;
  DLSYS_RETURN_IF_ERROR(channel_layout(ctx, 0, &l));
  int64_t C = l.C;
  for (size_t i = 1; i < 5; ++i)
    if (ctx.in_shape(i) != Shape{C})
      return ctx.error("input {} has shape {}, expected [{}]", i, shape_str(ctx.in_shape(i)), C);
  float eps = ctx.attr_float("epsilon", 1e-5f);
  float momentum = ctx.attr_float("momentum", 0.9f);
  ctx.set_output(0, DType::kF32, ctx.in_shape(0));
  for (size_t k = 1; k < ctx.num_outputs(); ++k) ctx.set_output(k, DType::kF32, {C});
  bool run_mean = ctx.output_used(1), run_var = ctx.output_used(2);
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    const float *x = in[0]->data_as<float>(), *scale = in[1]->data_as<float>(),
                *shift = in[2]->data_as<float>(), *in_mean = in[3]->data_as<float>(),
                *in_var = in[4]->data_as<float>();
    float* y = o[0]->data_as<float>();
    const int64_t inner = l.inner;
#pragma omp parallel for schedule(static) if (l.N * l.C * l.inner > 32768)
    for (int64_t c = 0; c < l.C; ++c) {
      float m;
      double var;
      channel_moments(x, l, c, &m, &var);
      float a = static_cast<float>(scale[c] / std::sqrt(var + eps));
      float b = shift[c] - m * a;
      for (int64_t r = 0; r < l.N; ++r) {
        int64_t off = l.offset(r, c);
#pragma omp simd
        for (int64_t i = 0; i < inner; ++i) y[off + i] = x[off + i] * a + b;
      }
      if (run_mean) o[1]->data_as<float>()[c] = in_mean[c] * momentum + m * (1 - momentum);
      if (run_var)
        o[2]->data_as<float>()[c] = in_var[c] * momentum + static_cast<float>(var) * (1 - momentum);
    }
    return Status::OK();
  });
}

// Synchronized batch norm (attribute sync=1, with BuildContext::cross_process): the statistics
// are those of the whole batch over every process (each holding an equal part of it). Forward:
// each process's channel means and sums of squared deviations (two passes, as channel_moments)
// are gathered and combined in process order (Chan et al.: M2 = sum M2_p + sum n (mean_p -
// mean)^2), one exchange of 2C floats. Backward: the sums of dY and dY * xhat, gathered and
// added in process order, one exchange of 2C floats. Every process combines the same parts in
// the same order: the same bits everywhere. The parameter gradients (dscale, dB) stay this
// process's share, to be all-reduced with the others.
KernelPtr synced_batch_norm_training(ChannelLayout l, float eps, bool relu,
                                     const CrossProcess* cp) {
  const size_t P = static_cast<size_t>(cp->processes()), C = static_cast<size_t>(l.C);
  // This process's [means | M2s], then every process's.
  auto mine = std::make_shared<std::vector<float>>(2 * C);
  auto all = std::make_shared<std::vector<float>>(2 * C * P);
  auto combined = std::make_shared<std::vector<double>>(2 * C);  // [mean | var]
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    const float *x = in[0]->data_as<float>(), *scale = in[1]->data_as<float>(),
                *shift = in[2]->data_as<float>();
    float* y = o[0]->data_as<float>();
    float* st = mine->data();
    double* mv = combined->data();
    const double n = static_cast<double>(l.count()), total = n * static_cast<double>(P);
    const bool big = l.N * l.C * l.inner > 32768;
#pragma omp parallel for schedule(static) if (big)
    for (int64_t c = 0; c < l.C; ++c) {
      float m;
      double var;
      channel_moments(x, l, c, &m, &var);
      st[c] = m;
      st[C + static_cast<size_t>(c)] = static_cast<float>(var * n);
    }
    DLSYS_RETURN_IF_ERROR(cp->gather(st, 2 * C, all->data()));
    const float* a = all->data();
    for (size_t c = 0; c < C; ++c) {
      double mean = 0;
      for (size_t p = 0; p < P; ++p) mean += a[p * 2 * C + c];
      mean /= static_cast<double>(P);
      double m2 = 0;
      for (size_t p = 0; p < P; ++p) {
        const double d = a[p * 2 * C + c] - mean;
        m2 += a[p * 2 * C + C + c] + n * d * d;
      }
      mv[c] = mean;
      mv[C + c] = m2 / total;
    }
    const double unbias = total > 1 ? total / (total - 1) : 1.0;
#pragma omp parallel for schedule(static) if (big)
    for (int64_t c = 0; c < l.C; ++c) {
      const float m = static_cast<float>(mv[c]);
      const double var = mv[C + static_cast<size_t>(c)];
      const float sa = static_cast<float>(scale[c] / std::sqrt(var + eps));
      normalize_channel(x, y, l, c, sa, shift[c] - m * sa, relu);
      write_channel_stats(o, c, m, var, unbias);
    }
    return Status::OK();
  });
}

// BatchNormGrad's synchronized form: the means of dY and dY * xhat are over the whole batch.
KernelPtr synced_batch_norm_grad(ChannelLayout l, float eps, bool masked, const CrossProcess* cp) {
  const size_t P = static_cast<size_t>(cp->processes()), C = static_cast<size_t>(l.C);
  auto mine = std::make_shared<std::vector<float>>(2 * C);  // [sum dY | sum dY * xhat]
  auto all = std::make_shared<std::vector<float>>(2 * C * P);
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    const float *dy = in[0]->data_as<float>(), *x = in[1]->data_as<float>(),
                *scale = in[2]->data_as<float>(), *mean = in[3]->data_as<float>(),
                *var = in[4]->data_as<float>();
    float* dx = o[0]->data_as<float>();
    float* st = mine->data();
    const float* y = masked ? in[5]->data_as<float>() : nullptr;
    const float* g = masked ? dx : dy;
    const bool big = l.N * l.C * l.inner > 32768;
#pragma omp parallel for schedule(static) if (big)
    for (int64_t c = 0; c < l.C; ++c) {
      const float inv = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var[c]) + eps));
      double sum_dy = 0, sum_dy_xhat = 0;
      channel_grad_sums(dy, y, dx, x, l, c, mean[c], &sum_dy, &sum_dy_xhat);
      st[c] = static_cast<float>(sum_dy);
      st[C + static_cast<size_t>(c)] = static_cast<float>(sum_dy_xhat * inv);
      if (o[1]) o[1]->data_as<float>()[c] = st[C + static_cast<size_t>(c)];
      if (o[2]) o[2]->data_as<float>()[c] = st[c];
    }
    DLSYS_RETURN_IF_ERROR(cp->gather(st, 2 * C, all->data()));
    const double total = static_cast<double>(l.count()) * static_cast<double>(P);
#pragma omp parallel for schedule(static) if (big)
    for (int64_t c = 0; c < l.C; ++c) {
      double s1 = 0, s2 = 0;
      for (size_t p = 0; p < P; ++p) {
        s1 += (*all)[p * 2 * C + static_cast<size_t>(c)];
        s2 += (*all)[p * 2 * C + C + static_cast<size_t>(c)];
      }
      const float m = mean[c],
                  inv = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var[c]) + eps));
      const float k = scale[c] * inv, mdy = static_cast<float>(s1 / total),
                  mdyx = static_cast<float>(s2 / total);
      channel_dx(g, x, dx, l, c, m, inv, k, mdy, mdyx);
    }
    return Status::OK();
  });
}

Result<KernelPtr> build_batch_norm_training(BuildContext& ctx) {
  for (size_t i = 0; i < 3; ++i) DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(i, {DType::kF32}));
  ChannelLayout l;
  DLSYS_RETURN_IF_ERROR(channel_layout(ctx, 0, &l));
  int64_t C = l.C;
  for (size_t i = 1; i < 3; ++i)
    if (ctx.in_shape(i) != Shape{C})
      return ctx.error("input {} has shape {}, expected [{}]", i, shape_str(ctx.in_shape(i)), C);
  float eps = ctx.attr_float("epsilon", 1e-5f);
  bool relu = ctx.attr_int("relu", 0) != 0;
  ctx.set_output(0, DType::kF32, ctx.in_shape(0));
  for (size_t k = 1; k < ctx.num_outputs() && k < 4; ++k) ctx.set_output(k, DType::kF32, {C});
  if (ctx.attr_int("sync", 0) && ctx.cross_process())
    return synced_batch_norm_training(l, eps, relu, ctx.cross_process());
  double n = static_cast<double>(l.count());
  double unbias = l.count() > 1 ? n / (n - 1) : 1.0;
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    const float *x = in[0]->data_as<float>(), *scale = in[1]->data_as<float>(),
                *shift = in[2]->data_as<float>();
    float* y = o[0]->data_as<float>();
#pragma omp parallel for schedule(static) if (l.N * l.C * l.inner > 32768)
    for (int64_t c = 0; c < l.C; ++c) {
      float m;
      double var;
      channel_moments(x, l, c, &m, &var);
      float a = static_cast<float>(scale[c] / std::sqrt(var + eps));
      normalize_channel(x, y, l, c, a, shift[c] - m * a, relu);
      write_channel_stats(o, c, m, var, unbias);
    }
    return Status::OK();
  });
}

// dX = scale * inv * (dY - mean(dY) - xhat * mean(dY * xhat)), dscale = sum dY * xhat,
// dB = sum dY, with xhat = (X - mean) * inv and inv = 1 / sqrt(var + eps).
Result<KernelPtr> build_batch_norm_grad(BuildContext& ctx) {
  for (size_t i = 0; i < 5; ++i) DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(i, {DType::kF32}));
  ChannelLayout l;
  DLSYS_RETURN_IF_ERROR(channel_layout(ctx, 1, &l));
  int64_t C = l.C;
  if (ctx.in_shape(0) != ctx.in_shape(1))
    return ctx.error("dY {} and X {} must have one shape", shape_str(ctx.in_shape(0)),
                     shape_str(ctx.in_shape(1)));
  for (size_t i = 2; i < 5; ++i)
    if (ctx.in_shape(i) != Shape{C})
      return ctx.error("input {} has shape {}, expected [{}]", i, shape_str(ctx.in_shape(i)), C);
  bool masked = ctx.has_input(5);
  if (masked && ctx.in_shape(5) != ctx.in_shape(1))
    return ctx.error("Y {} (the fused Relu's output) must have X's shape {}",
                     shape_str(ctx.in_shape(5)), shape_str(ctx.in_shape(1)));
  float eps = ctx.attr_float("epsilon", 1e-5f);
  ctx.set_output(0, DType::kF32, ctx.in_shape(1));
  ctx.set_output(1, DType::kF32, {C});
  ctx.set_output(2, DType::kF32, {C});
  if (ctx.attr_int("sync", 0) && ctx.cross_process())
    return synced_batch_norm_grad(l, eps, masked, ctx.cross_process());
  double n = static_cast<double>(l.count());
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    const float *dy = in[0]->data_as<float>(), *x = in[1]->data_as<float>(),
                *scale = in[2]->data_as<float>(), *mean = in[3]->data_as<float>(),
                *var = in[4]->data_as<float>();
    float* dx = o[0]->data_as<float>();
    // With a fused Relu, dY counts only where its output Y is positive: dY is masked into dX
    // first (dX is then read in place of dY).
    const float* y = masked ? in[5]->data_as<float>() : nullptr;
#pragma omp parallel for schedule(static) if (l.N * l.C * l.inner > 32768)
    for (int64_t c = 0; c < l.C; ++c) {
      float m = mean[c],
            inv = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var[c]) + eps));
      double sum_dy = 0, sum_dy_xhat = 0;
      const float* g = channel_grad_sums(dy, y, dx, x, l, c, m, &sum_dy, &sum_dy_xhat);
      sum_dy_xhat *= inv;
      float k = scale[c] * inv, mdy = static_cast<float>(sum_dy / n),
            mdyx = static_cast<float>(sum_dy_xhat / n);
      channel_dx(g, x, dx, l, c, m, inv, k, mdy, mdyx);
      if (o[1]) o[1]->data_as<float>()[c] = static_cast<float>(sum_dy_xhat);
      if (o[2]) o[2]->data_as<float>()[c] = static_cast<float>(sum_dy);
    }
    return Status::OK();
  });
}

// LayerNormGrad(dY, X, scale, mean, inv_std) -> dX, dscale, dB: the gradient of
// LayerNormalization (axis attribute as there) given its Mean and InvStdDev outputs. Scale must
// have the full normalized shape (what layernorm layers and exporters produce). Plain loops,
// threads split the rows (each keeps its own dscale/dB sums):
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
  // Per-thread sums of dY * xhat and dY (one row of 2 * inner per thread), added up at the end.
  int slots = std::max(1, omp_get_max_threads());
  auto acc = std::make_shared<std::vector<float>>(static_cast<size_t>(slots) * 2 * inner);
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    const float *dy = in[0]->data_as<float>(), *X = in[1]->data_as<float>();
    const float *S = in[2]->data_as<float>(), *M = in[3]->data_as<float>();
    const float* I = in[4]->data_as<float>();
    float* dx = o[0]->data_as<float>();
    std::vector<float>& a = *acc;
    std::fill(a.begin(), a.end(), 0.0f);
    int used = 1;
#pragma omp parallel num_threads(slots) if (outer * inner > 32768)
    {
      int t = omp_get_thread_num();
      if (t == 0) used = std::min(slots, omp_get_num_threads());
      float* mine = a.data() + static_cast<size_t>(t) * 2 * inner;  // t < slots: num_threads
#pragma omp for schedule(static)
      for (int64_t r = 0; r < outer; ++r) {
        const float *xr = X + r * inner, *gr = dy + r * inner;
        float mean = M[r], inv = I[r], sg = 0, sgx = 0;
#pragma omp simd reduction(+ : sg, sgx)
        for (int64_t j = 0; j < inner; ++j) {
          float xh = (xr[j] - mean) * inv, g = gr[j] * S[j];
          sg += g;
          sgx += g * xh;
        }
        sg /= static_cast<float>(inner);
        sgx /= static_cast<float>(inner);
        float* dxr = dx + r * inner;
#pragma omp simd
        for (int64_t j = 0; j < inner; ++j) {
          float xh = (xr[j] - mean) * inv;
          dxr[j] = inv * (gr[j] * S[j] - sg - xh * sgx);
        }
#pragma omp simd
        for (int64_t j = 0; j < inner; ++j) {
          mine[j] += gr[j] * ((xr[j] - mean) * inv);
          mine[inner + j] += gr[j];
        }
      }
    }
    for (int k = 1; k < 3; ++k) {
      if (!o[k]) continue;
      float* out = o[k]->data_as<float>();
      for (int64_t j = 0; j < inner; ++j) {
        float sum = 0;
        for (int t = 0; t < used; ++t)
          sum += a[static_cast<size_t>(t) * 2 * inner + (k - 1) * inner + j];
        out[j] = sum;
      }
    }
    return Status::OK();
  });
}

}  // namespace

void register_norm_ops(OpRegistry& r) {
  r.add("BatchNormalization", 5, 5, 1, 3, build_batch_norm);
  r.add("LayerNormalization", 2, 3, 1, 3, build_layer_norm);
  r.add("BatchNormTraining", 3, 3, 1, 4, build_batch_norm_training);
  r.add("BatchNormGrad", 5, 6, 1, 3, build_batch_norm_grad);
  r.add("LayerNormGrad", 5, 5, 1, 3, build_layer_norm_grad);
}

}  // namespace dlsys
