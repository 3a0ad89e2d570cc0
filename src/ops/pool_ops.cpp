// MaxPool, AveragePool (auto_pad, ceil_mode, dilations, count_include_pad) and the global
// pools, on oneDNN's pooling_v2 primitive over plain layouts; PoolGrad, their gradient for
// training graphs (src/train/autodiff). MaxPool's Indices output takes a loop.
#include <limits>

#include "ops/dnnl_util.h"
#include "ops/op_registry.h"

namespace dlsys {
namespace {

using dims = dnnl::memory::dims;

// X may arrive in a oneDNN layout (from a conv); the output keeps oneDNN's layout when every
// consumer accepts one, else it is reordered to plain f32.
Result<KernelPtr> make_pool(BuildContext& ctx, dnnl::algorithm alg, const Shape& x,
                            const Shape& out, dims kernel, dims strides, dims dil, dims pl,
                            dims pr) {
  DType t = ctx.in_dtype(0);  // f32, or u8/i8 for MaxPool
  ctx.set_output(0, t, out);
  auto call = std::make_shared<DnnlCall>();
  auto src = ctx.in_layout(0).is_zero() ? plain_md(x, t) : ctx.in_layout(0);
  auto dst_plain = plain_md(out, t);
  // oneDNN pools u8/s8 on plain NCHW with its reference kernel (30x slower than jit_int on
  // channels-last for ResNet-18's first MaxPool): a plain int8 input is converted to
  // channels-last by the planner, and the output stays channels-last where consumers accept it.
  bool int8_plain = ctx.in_layout(0).is_zero() && (t == DType::kU8 || t == DType::kI8);
  if (int8_plain) {
    src = dnnl::memory::desc(dims(x.begin(), x.end()), to_dnnl(t), channels_last_tag(x.size()));
    ctx.convert_input(0, src);
  }
  auto reorder = std::make_shared<DnnlReorder>();
  Tensor dst_buf, ws;
  DLSYS_RETURN_IF_ERROR(dnnl_try(ctx, [&] {
    auto dst_tag = int8_plain ? channels_last_tag(out.size()) : dnnl::memory::format_tag::any;
    dnnl::memory::desc dst =
        ctx.in_layout(0).is_zero() && !int8_plain
            ? dst_plain
            : dnnl::memory::desc(dims(out.begin(), out.end()), src.data_type(), dst_tag);
    auto d = dnnl::pooling_v2_forward::desc(dnnl::prop_kind::forward_inference, alg, src, dst,
                                            strides, kernel, dil, pl, pr);
    dnnl::pooling_v2_forward::primitive_desc pd(d, dnnl_attr(), dnnl_engine());
    call->prim = dnnl::pooling_v2_forward(pd);
    call->add(DNNL_ARG_SRC, src);
    call->add(DNNL_ARG_DST, pd.dst_desc());
    if (pd.workspace_desc().get_size() > 0) {
      call->add(DNNL_ARG_WORKSPACE, pd.workspace_desc());
      ws = Tensor::empty(DType::kU8, {static_cast<int64_t>(pd.workspace_desc().get_size())});
    }
    if (pd.dst_desc() != dst_plain) {
      if (ctx.output_layout_free(0)) {
        ctx.set_output_layout(0, pd.dst_desc());
      } else {
        reorder->init(pd.dst_desc(), dst_plain);
        dst_buf = Tensor::empty(DType::kU8, {static_cast<int64_t>(pd.dst_desc().get_size())});
      }
    }
  }));
  return make_kernel([call, ws, reorder, dst_buf](const Tensor* const* in, Tensor* const* o) {
    call->bind(DNNL_ARG_SRC, in[0]->data());
    call->bind(DNNL_ARG_DST, dst_buf.valid() && dst_buf.data() ? dst_buf.data() : o[0]->data());
    if (ws.valid() && ws.data()) call->bind(DNNL_ARG_WORKSPACE, ws.data());
    call->exec();
    if (dst_buf.valid() && dst_buf.data()) reorder->run(dst_buf.data(), o[0]->data());
    return Status::OK();
  });
}

// A pool's algorithm and geometry, resolved against X's shape.
struct PoolGeometry {
  dnnl::algorithm alg = dnnl::algorithm::pooling_max;
  Shape out;
  dims kernel, strides, dil, pl, pr;
};

Status pool_geometry(const BuildContext& ctx, bool is_max, const Shape& x, PoolGeometry* g) {
  if (x.size() < 3 || x.size() > 5) return ctx.error("X must have rank 3-5, got {}", shape_str(x));
  size_t nsp = x.size() - 2;
  std::vector<int64_t> k = ctx.attr_ints("kernel_shape");
  if (k.size() != nsp) return ctx.error("kernel_shape needs {} values, got {}", nsp, k.size());
  std::vector<int64_t> s =
      ctx.has_attr("strides") ? ctx.attr_ints("strides") : std::vector<int64_t>(nsp, 1);
  std::vector<int64_t> d =
      ctx.has_attr("dilations") ? ctx.attr_ints("dilations") : std::vector<int64_t>(nsp, 1);
  std::vector<int64_t> pads =
      ctx.has_attr("pads") ? ctx.attr_ints("pads") : std::vector<int64_t>(2 * nsp, 0);
  if (s.size() != nsp || d.size() != nsp || pads.size() != 2 * nsp)
    return ctx.error("strides/dilations need {} values and pads {}", nsp, 2 * nsp);
  std::string auto_pad = ctx.attr_string("auto_pad", "NOTSET");
  bool ceil_mode = ctx.attr_int("ceil_mode", 0) != 0;
  bool include_pad = ctx.attr_int("count_include_pad", 0) != 0;
  Shape out = {x[0], x[1]};
  dims pl(nsp), pr(nsp), dil(nsp);
  for (size_t i = 0; i < nsp; ++i) {
    if (k[i] < 1 || s[i] < 1 || d[i] < 1)
      return ctx.error("kernel, strides, dilations must be >= 1");
    int64_t in = x[2 + i], ext = (k[i] - 1) * d[i] + 1;
    int64_t pb = pads[i], pe = pads[nsp + i];
    int64_t o;
    if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      o = (in + s[i] - 1) / s[i];
      int64_t total = std::max<int64_t>(0, (o - 1) * s[i] + ext - in);
      pb = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      pe = total - pb;
    } else {
      if (auto_pad == "VALID") pb = pe = 0;
      int64_t span = in + pb + pe - ext;
      if (span < 0) return ctx.error("kernel is larger than the padded input {}", shape_str(x));
      o = (ceil_mode ? (span + s[i] - 1) / s[i] : span / s[i]) + 1;
      if (ceil_mode && (o - 1) * s[i] >= in + pb) --o;
    }
    out.push_back(o);
    pl[i] = pb;
    pr[i] = (o - 1) * s[i] + ext - in - pb;
    dil[i] = d[i] - 1;
  }
  g->alg = is_max ? dnnl::algorithm::pooling_max
                  : (include_pad ? dnnl::algorithm::pooling_avg_include_padding
                                 : dnnl::algorithm::pooling_avg_exclude_padding);
  g->out = out;
  g->kernel = dims(k.begin(), k.end());
  g->strides = dims(s.begin(), s.end());
  g->dil = dil;
  g->pl = pl;
  g->pr = pr;
  return Status::OK();
}

// The global pools: one window over every spatial position.
Status global_pool_geometry(const BuildContext& ctx, bool is_max, const Shape& x, PoolGeometry* g) {
  if (x.size() < 3 || x.size() > 5) return ctx.error("X must have rank 3-5, got {}", shape_str(x));
  size_t nsp = x.size() - 2;
  g->out = {x[0], x[1]};
  g->kernel.clear();
  for (size_t i = 0; i < nsp; ++i) {
    g->out.push_back(1);
    g->kernel.push_back(x[2 + i]);
  }
  g->strides = dims(nsp, 1);
  g->dil = g->pl = g->pr = dims(nsp, 0);
  g->alg = is_max ? dnnl::algorithm::pooling_max : dnnl::algorithm::pooling_avg_exclude_padding;
  return Status::OK();
}

// MaxPool with its Indices output (int64): a loop over each window that keeps the first maximum
// and its flat index into X, row-major (storage_order 0) or with the spatial dimensions counted
// column-major (storage_order 1), as ONNX defines. X arriving in a oneDNN layout is reordered to
// plain first.
template <typename T>
void max_pool_with_indices(const T* x, T* y, int64_t* idx, const Shape& xs, const PoolGeometry& g,
                           bool col_major) {
  int64_t in[3] = {1, 1, 1}, out[3] = {1, 1, 1}, k[3] = {1, 1, 1}, s[3] = {1, 1, 1},
          d[3] = {1, 1, 1}, p[3] = {0, 0, 0};
  size_t nsp = xs.size() - 2, off = 3 - nsp;
  for (size_t i = 0; i < nsp; ++i) {
    in[off + i] = xs[2 + i];
    out[off + i] = g.out[2 + i];
    k[off + i] = g.kernel[i];
    s[off + i] = g.strides[i];
    d[off + i] = g.dil[i] + 1;
    p[off + i] = g.pl[i];
  }
  int64_t isp = in[0] * in[1] * in[2], osp = out[0] * out[1] * out[2];
  int64_t planes = xs[0] * xs[1];
#pragma omp parallel for if (planes * osp > 4096)
  for (int64_t nc = 0; nc < planes; ++nc) {
    const T* xp = x + nc * isp;
    for (int64_t o = 0; o < osp; ++o) {
      int64_t od = o / (out[1] * out[2]), oh = (o / out[2]) % out[1], ow = o % out[2];
      T best = std::numeric_limits<T>::lowest();
      int64_t bd = -1, bh = -1, bw = -1;
      for (int64_t kd = 0; kd < k[0]; ++kd) {
        int64_t id = od * s[0] - p[0] + kd * d[0];
        if (id < 0 || id >= in[0]) continue;
        for (int64_t kh = 0; kh < k[1]; ++kh) {
          int64_t ih = oh * s[1] - p[1] + kh * d[1];
          if (ih < 0 || ih >= in[1]) continue;
          for (int64_t kw = 0; kw < k[2]; ++kw) {
            int64_t iw = ow * s[2] - p[2] + kw * d[2];
            if (iw < 0 || iw >= in[2]) continue;
            T v = xp[(id * in[1] + ih) * in[2] + iw];
            if (bd < 0 || v > best) {
              best = v;
              bd = id;
              bh = ih;
              bw = iw;
            }
          }
        }
      }
      y[nc * osp + o] = best;
      int64_t flat =
          col_major ? bd + bh * in[0] + bw * in[0] * in[1] : (bd * in[1] + bh) * in[2] + bw;
      idx[nc * osp + o] = nc * isp + flat;
    }
  }
}

Result<KernelPtr> build_max_pool_indices(BuildContext& ctx, const PoolGeometry& g) {
  const Shape& x = ctx.in_shape(0);
  DType t = ctx.in_dtype(0);
  int64_t order = ctx.attr_int("storage_order", 0);
  if (order != 0 && order != 1) return ctx.error("storage_order must be 0 or 1, got {}", order);
  ctx.set_output(0, t, g.out);
  ctx.set_output(1, DType::kI64, g.out);
  auto to_plain = std::make_shared<DnnlReorder>();
  Tensor plain;
  if (!ctx.in_layout(0).is_zero()) {
    DLSYS_RETURN_IF_ERROR(dnnl_try(ctx, [&] { to_plain->init(ctx.in_layout(0), plain_md(x, t)); }));
    plain = Tensor::empty(t, x);
  }
  bool col_major = order == 1;
  return make_kernel(
      [g, x, t, col_major, to_plain, plain](const Tensor* const* in, Tensor* const* out) {
        const void* src = in[0]->data();
        if (plain.valid() && plain.data()) {
          to_plain->run(src, plain.data());
          dnnl_stream().wait();
          src = plain.data();
        }
        int64_t* idx = out[1]->data_as<int64_t>();
        if (t == DType::kF32)
          max_pool_with_indices(static_cast<const float*>(src), out[0]->data_as<float>(), idx, x, g,
                                col_major);
        else if (t == DType::kU8)
          max_pool_with_indices(static_cast<const uint8_t*>(src), out[0]->data_as<uint8_t>(), idx,
                                x, g, col_major);
        else
          max_pool_with_indices(static_cast<const int8_t*>(src), out[0]->data_as<int8_t>(), idx, x,
                                g, col_major);
        return Status::OK();
      });
}

Result<KernelPtr> build_pool(BuildContext& ctx, bool is_max) {
  if (is_max)
    DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32, DType::kU8, DType::kI8}));
  else
    DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32}));
  const Shape& x = ctx.in_shape(0);
  PoolGeometry g;
  DLSYS_RETURN_IF_ERROR(pool_geometry(ctx, is_max, x, &g));
  if (ctx.output_used(1)) return build_max_pool_indices(ctx, g);
  return make_pool(ctx, g.alg, x, g.out, g.kernel, g.strides, g.dil, g.pl, g.pr);
}

Result<KernelPtr> build_global_pool(BuildContext& ctx, bool is_max) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32}));
  const Shape& x = ctx.in_shape(0);
  PoolGeometry g;
  DLSYS_RETURN_IF_ERROR(global_pool_geometry(ctx, is_max, x, &g));
  return make_pool(ctx, g.alg, x, g.out, g.kernel, g.strides, g.dil, g.pl, g.pr);
}

// PoolGrad(dY, X) -> dX: the gradient of the pool named by the `pool` attribute (MaxPool,
// AveragePool, GlobalMaxPool, GlobalAveragePool), which carries that pool's attributes. Max
// pooling reruns the forward pass in training mode for oneDNN's workspace (where each maximum
// was), then scatters dY there; average pooling spreads dY over each window.
Result<KernelPtr> build_pool_grad(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32}));
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(1, {DType::kF32}));
  std::string pool = ctx.attr_string("pool", "");
  const Shape& x = ctx.in_shape(1);
  PoolGeometry g;
  if (pool == "MaxPool" || pool == "AveragePool")
    DLSYS_RETURN_IF_ERROR(pool_geometry(ctx, pool == "MaxPool", x, &g));
  else if (pool == "GlobalMaxPool" || pool == "GlobalAveragePool")
    DLSYS_RETURN_IF_ERROR(global_pool_geometry(ctx, pool == "GlobalMaxPool", x, &g));
  else
    return ctx.error("pool='{}' is not MaxPool, AveragePool, GlobalMaxPool or GlobalAveragePool",
                     pool);
  if (ctx.in_shape(0) != g.out)
    return ctx.error("dY has shape {}, but {} of X {} gives {}", shape_str(ctx.in_shape(0)), pool,
                     shape_str(x), shape_str(g.out));
  ctx.set_output(0, DType::kF32, x);
  bool is_max = g.alg == dnnl::algorithm::pooling_max;
  struct State {
    DnnlCall fwd, bwd;
    Tensor fwd_dst, ws;
    bool is_max = false;
  };
  auto st = std::make_shared<State>();
  st->is_max = is_max;
  DLSYS_RETURN_IF_ERROR(dnnl_try(ctx, [&] {
    auto src = plain_md(x, DType::kF32), dst = plain_md(g.out, DType::kF32);
    auto fd = dnnl::pooling_v2_forward::desc(dnnl::prop_kind::forward_training, g.alg, src, dst,
                                             g.strides, g.kernel, g.dil, g.pl, g.pr);
    dnnl::pooling_v2_forward::primitive_desc fpd(fd, dnnl_attr(), dnnl_engine());
    auto bd =
        dnnl::pooling_v2_backward::desc(g.alg, src, dst, g.strides, g.kernel, g.dil, g.pl, g.pr);
    dnnl::pooling_v2_backward::primitive_desc bpd(bd, dnnl_attr(), dnnl_engine(), fpd);
    st->bwd.prim = dnnl::pooling_v2_backward(bpd);
    st->bwd.add(DNNL_ARG_DIFF_DST, dst);
    st->bwd.add(DNNL_ARG_DIFF_SRC, src);
    if (is_max) {
      st->fwd.prim = dnnl::pooling_v2_forward(fpd);
      st->fwd.add(DNNL_ARG_SRC, src);
      st->fwd.add(DNNL_ARG_DST, dst);
      st->fwd.add(DNNL_ARG_WORKSPACE, fpd.workspace_desc());
      st->bwd.add(DNNL_ARG_WORKSPACE, fpd.workspace_desc());
      st->fwd_dst = Tensor::empty(DType::kF32, g.out);
      st->ws = Tensor::empty(DType::kU8, {static_cast<int64_t>(fpd.workspace_desc().get_size())});
    }
  }));
  return make_kernel([st](const Tensor* const* in, Tensor* const* o) {
    if (st->is_max) {
      st->fwd.bind(DNNL_ARG_SRC, in[1]->data());
      st->fwd.bind(DNNL_ARG_DST, st->fwd_dst.data());
      st->fwd.bind(DNNL_ARG_WORKSPACE, st->ws.data());
      st->fwd.exec();
      st->bwd.bind(DNNL_ARG_WORKSPACE, st->ws.data());
    }
    st->bwd.bind(DNNL_ARG_DIFF_DST, in[0]->data());
    st->bwd.bind(DNNL_ARG_DIFF_SRC, o[0]->data());
    st->bwd.exec();
    return Status::OK();
  });
}

}  // namespace

void register_pool_ops(OpRegistry& r) {
  r.add("MaxPool", 1, 1, 1, 2, [](BuildContext& c) { return build_pool(c, true); });
  r.add("AveragePool", 1, 1, 1, 1, [](BuildContext& c) { return build_pool(c, false); });
  r.add("GlobalMaxPool", 1, 1, 1, 1, [](BuildContext& c) { return build_global_pool(c, true); });
  r.add("GlobalAveragePool", 1, 1, 1, 1,
        [](BuildContext& c) { return build_global_pool(c, false); });
  r.add("PoolGrad", 2, 2, 1, 1, build_pool_grad);
  for (const char* op : {"MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool"})
    r.set_layout_inputs(op, 1u);
}

}  // namespace dlsys
