// Gradients of Conv, for training graphs (src/train/autodiff); not ONNX ops. Both carry the
// forward Conv's attributes (group, kernel_shape, strides, dilations, pads, auto_pad):
//   ConvGradInput(dY, W, X) -> dX            (X only gives the shape)
//   ConvGradWeight(dY, X, W) -> dW, dB?      (W only gives the shape; dB = sum of dY over N, HW)
// On oneDNN's convolution backward primitives, in the layouts oneDNN prefers (in a training plan,
// the forward Conv's: training_activation_tag). Inputs are converted from the plain NCHW the
// graph uses by the planner (convert_input), so that the forward Conv and both gradients
// convert X and dY once each; outputs are reordered back to plain here. In a bf16 plan, dY, W
// and X are converted to bf16 and the gradients come out in f32 (mixed-precision training).
#include "ops/conv_geometry.h"
#include "ops/dnnl_util.h"
#include "ops/op_registry.h"

namespace dlsys {
namespace {

using dims = dnnl::memory::dims;
using tag = dnnl::memory::format_tag;

// One primitive argument in plain layout on the graph side and maybe another inside oneDNN.
struct ArgLayout {
  int arg = 0;
  bool reorder = false;  // converted here (outputs, and inputs known at plan time)
  DnnlReorder r;
  Tensor buf;
  // Binds input data: already in the primitive's layout (converted by the planner), or a
  // plan-time constant converted here.
  void bind_input(DnnlCall& call, const void* data) {
    if (reorder) {
      r.run(data, buf.data());
      call.bind(arg, buf.data());
    } else {
      call.bind(arg, data);
    }
  }
  void bind_output(DnnlCall& call, void* plain) { call.bind(arg, reorder ? buf.data() : plain); }
  void finish_output(void* plain) {
    if (reorder) r.run(buf.data(), plain);
  }
};

// Input `index` of the node, seen as `plain` (its bytes; grouped weights get oneDNN's 5-D dims),
// bound to primitive argument `arg` in layout `chosen`: the planner converts it (shared with
// other kernels wanting the same) unless it is a plan-time constant or `plain` has other dims
// than the value.
void prepare_input(BuildContext& ctx, DnnlCall& call, ArgLayout* a, size_t index, int arg,
                   const dnnl::memory::desc& plain, const dnnl::memory::desc& chosen) {
  a->arg = arg;
  call.add(arg, chosen);
  if (plain == chosen) return;
  if (!ctx.in_value(index) && plain == plain_md(ctx.in_shape(index), ctx.in_dtype(index))) {
    ctx.convert_input(index, chosen);
    return;
  }
  a->reorder = true;
  a->r.init(plain, chosen);
  a->buf = Tensor::empty(DType::kU8, {static_cast<int64_t>(chosen.get_size())});
}

// Output bound to `arg` in layout `chosen`, reordered to `plain` after the primitive runs.
void prepare_output(DnnlCall& call, ArgLayout* a, int arg, const dnnl::memory::desc& plain,
                    const dnnl::memory::desc& chosen) {
  a->arg = arg;
  call.add(arg, chosen);
  if (plain == chosen) return;
  a->reorder = true;
  a->r.init(chosen, plain);
  a->buf = Tensor::empty(DType::kU8, {static_cast<int64_t>(chosen.get_size())});
}

// The data type the primitives compute in: bf16 in a bf16 plan (inputs reordered into it; the
// gradients stay f32, accumulated in f32 by oneDNN), else f32.
dnnl::memory::data_type compute_type(const BuildContext& ctx) {
  return ctx.precision() == Precision::kBF16 ? dnnl::memory::data_type::bf16
                                             : dnnl::memory::data_type::f32;
}

dnnl::convolution_forward::primitive_desc forward_hint(const ConvGeometry& g, const Shape& x,
                                                       bool bias, dnnl::memory::data_type cdt,
                                                       tag act) {
  dnnl::memory::desc src(dims(x.begin(), x.end()), cdt, act);
  dnnl::memory::desc wei(g.weights, cdt, tag::any);
  dnnl::memory::desc dst(dims(g.out.begin(), g.out.end()), cdt, act);
  auto kind = dnnl::prop_kind::forward_training;
  auto alg = dnnl::algorithm::convolution_direct;
  if (bias) {
    dnnl::memory::desc b({g.out[1]}, dnnl::memory::data_type::f32, tag::any);
    return {dnnl::convolution_forward::desc(kind, alg, src, wei, b, dst, g.strides, g.dilations,
                                            g.pad_l, g.pad_r),
            dnnl_engine()};
  }
  return {dnnl::convolution_forward::desc(kind, alg, src, wei, dst, g.strides, g.dilations, g.pad_l,
                                          g.pad_r),
          dnnl_engine()};
}

// Checks the inputs of either gradient (dY, X, W all f32; X and W of rank 3-5; dY the
// convolution's output shape) and resolves the forward Conv's geometry into `geo`.
Status grad_geometry(const BuildContext& ctx, const Shape& x, const Shape& w, ConvGeometry* geo) {
  for (size_t i = 0; i < 3; ++i) DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(i, {DType::kF32}));
  if (x.size() < 3 || x.size() > 5 || w.size() != x.size())
    return ctx.error("X {} and W {} must both have rank 3, 4 or 5", shape_str(x), shape_str(w));
  DLSYS_RETURN_IF_ERROR(conv_geometry(ctx, x, w, geo));
  if (ctx.in_shape(0) != geo->out)
    return ctx.error("dY has shape {}, but the convolution of X {} by W {} gives {}",
                     shape_str(ctx.in_shape(0)), shape_str(x), shape_str(w), shape_str(geo->out));
  return Status::OK();
}

Result<KernelPtr> build_conv_grad_input(BuildContext& ctx) {
  const Shape &w = ctx.in_shape(1), &x = ctx.in_shape(2);
  ConvGeometry geo;
  DLSYS_RETURN_IF_ERROR(grad_geometry(ctx, x, w, &geo));
  ctx.set_output(0, DType::kF32, x);
  struct State {
    DnnlCall call;
    ArgLayout dy, wei, dx;
  };
  auto st = std::make_shared<State>();
  DLSYS_RETURN_IF_ERROR(dnnl_try(ctx, [&] {
    auto cdt = compute_type(ctx);
    tag act = training_activation_tag(ctx, x, geo);
    auto hint = forward_hint(geo, x, false, cdt, act);
    dnnl::memory::desc dx_any(dims(x.begin(), x.end()), dnnl::memory::data_type::f32, act);
    dnnl::memory::desc wei_any(geo.weights, cdt, tag::any);
    dnnl::memory::desc dy_any(dims(geo.out.begin(), geo.out.end()), cdt, act);
    dnnl::convolution_backward_data::desc d(dnnl::algorithm::convolution_direct, dx_any, wei_any,
                                            dy_any, geo.strides, geo.dilations, geo.pad_l,
                                            geo.pad_r);
    dnnl::convolution_backward_data::primitive_desc pd(d, dnnl_attr(), dnnl_engine(), hint);
    st->call.prim = dnnl::convolution_backward_data(pd);
    prepare_input(ctx, st->call, &st->dy, 0, DNNL_ARG_DIFF_DST, plain_md(geo.out, DType::kF32),
                  pd.diff_dst_desc());
    prepare_input(ctx, st->call, &st->wei, 1, DNNL_ARG_WEIGHTS,
                  plain_md(Shape(geo.weights.begin(), geo.weights.end()), DType::kF32),
                  pd.weights_desc());
    prepare_output(st->call, &st->dx, DNNL_ARG_DIFF_SRC, plain_md(x, DType::kF32),
                   pd.diff_src_desc());
  }));
  return make_kernel([st](const Tensor* const* in, Tensor* const* o) {
    st->dy.bind_input(st->call, in[0]->data());
    st->wei.bind_input(st->call, in[1]->data());
    st->dx.bind_output(st->call, o[0]->data());
    st->call.exec();
    st->dx.finish_output(o[0]->data());
    return Status::OK();
  });
}

Result<KernelPtr> build_conv_grad_weight(BuildContext& ctx) {
  const Shape &x = ctx.in_shape(1), &w = ctx.in_shape(2);
  ConvGeometry geo;
  DLSYS_RETURN_IF_ERROR(grad_geometry(ctx, x, w, &geo));
  bool bias = ctx.num_outputs() > 1 && ctx.output_used(1);
  ctx.set_output(0, DType::kF32, w);
  if (ctx.num_outputs() > 1) ctx.set_output(1, DType::kF32, {w[0]});
  struct State {
    DnnlCall call;
    ArgLayout dy, src, dw, db;
    bool bias = false;
  };
  auto st = std::make_shared<State>();
  st->bias = bias;
  DLSYS_RETURN_IF_ERROR(dnnl_try(ctx, [&] {
    auto cdt = compute_type(ctx);
    tag act = training_activation_tag(ctx, x, geo);
    auto hint = forward_hint(geo, x, bias, cdt, act);
    dnnl::memory::desc src_any(dims(x.begin(), x.end()), cdt, act);
    dnnl::memory::desc dw_any(geo.weights, dnnl::memory::data_type::f32, tag::any);
    dnnl::memory::desc dy_any(dims(geo.out.begin(), geo.out.end()), cdt, act);
    auto alg = dnnl::algorithm::convolution_direct;
    auto d =
        bias ? dnnl::convolution_backward_weights::desc(
                   alg, src_any, dw_any, plain_md({w[0]}, DType::kF32), dy_any, geo.strides,
                   geo.dilations, geo.pad_l, geo.pad_r)
             : dnnl::convolution_backward_weights::desc(alg, src_any, dw_any, dy_any, geo.strides,
                                                        geo.dilations, geo.pad_l, geo.pad_r);
    dnnl::convolution_backward_weights::primitive_desc pd(d, dnnl_attr(), dnnl_engine(), hint);
    st->call.prim = dnnl::convolution_backward_weights(pd);
    prepare_input(ctx, st->call, &st->dy, 0, DNNL_ARG_DIFF_DST, plain_md(geo.out, DType::kF32),
                  pd.diff_dst_desc());
    prepare_input(ctx, st->call, &st->src, 1, DNNL_ARG_SRC, plain_md(x, DType::kF32),
                  pd.src_desc());
    prepare_output(st->call, &st->dw, DNNL_ARG_DIFF_WEIGHTS,
                   plain_md(Shape(geo.weights.begin(), geo.weights.end()), DType::kF32),
                   pd.diff_weights_desc());
    if (bias)
      prepare_output(st->call, &st->db, DNNL_ARG_DIFF_BIAS, plain_md({w[0]}, DType::kF32),
                     pd.diff_bias_desc());
  }));
  return make_kernel([st](const Tensor* const* in, Tensor* const* o) {
    st->dy.bind_input(st->call, in[0]->data());
    st->src.bind_input(st->call, in[1]->data());
    st->dw.bind_output(st->call, o[0]->data());
    if (st->bias) st->db.bind_output(st->call, o[1]->data());
    st->call.exec();
    st->dw.finish_output(o[0]->data());
    if (st->bias) st->db.finish_output(o[1]->data());
    return Status::OK();
  });
}

}  // namespace

void register_conv_grad_ops(OpRegistry& r) {
  r.add("ConvGradInput", 3, 3, 1, 1, build_conv_grad_input);
  r.add("ConvGradWeight", 3, 3, 1, 2, build_conv_grad_weight);
}

}  // namespace dlsys
