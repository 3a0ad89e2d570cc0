// Conv (groups, depthwise, dilation, auto_pad, 1-3 spatial dims) and ConvTranspose on oneDNN's
// convolution and deconvolution primitives. oneDNN picks its preferred (blocked) layouts;
// reorders at the edges of the kernel convert from and to the plain NCHW the graph uses.
#include <cstring>

#include "ops/conv_geometry.h"
#include "ops/dnnl_util.h"
#include "ops/op_registry.h"
#include "ops/post_ops.h"

namespace dlsys {
namespace {

using dims = dnnl::memory::dims;

struct SpatialAttrs {
  std::vector<int64_t> kernel, strides, dilations, pad_begin, pad_end;
  std::string auto_pad;
};

// Reads kernel_shape/strides/dilations/pads/auto_pad for `nsp` spatial dims.
Status read_spatial(const BuildContext& ctx, size_t nsp, const Shape& w_spatial, SpatialAttrs* a) {
  a->kernel = ctx.has_attr("kernel_shape") ? ctx.attr_ints("kernel_shape") : w_spatial;
  a->strides = ctx.has_attr("strides") ? ctx.attr_ints("strides") : std::vector<int64_t>(nsp, 1);
  a->dilations =
      ctx.has_attr("dilations") ? ctx.attr_ints("dilations") : std::vector<int64_t>(nsp, 1);
  std::vector<int64_t> pads =
      ctx.has_attr("pads") ? ctx.attr_ints("pads") : std::vector<int64_t>(2 * nsp, 0);
  a->auto_pad = ctx.attr_string("auto_pad", "NOTSET");
  if (a->kernel.size() != nsp || a->strides.size() != nsp || a->dilations.size() != nsp ||
      pads.size() != 2 * nsp)
    return ctx.error("kernel_shape/strides/dilations need {} values and pads {}, got {}/{}/{}/{}",
                     nsp, 2 * nsp, a->kernel.size(), a->strides.size(), a->dilations.size(),
                     pads.size());
  for (size_t i = 0; i < nsp; ++i) {
    if (a->strides[i] < 1 || a->dilations[i] < 1 || a->kernel[i] < 1)
      return ctx.error("kernel, strides and dilations must be >= 1");
    if (pads[i] < 0 || pads[nsp + i] < 0) return ctx.error("pads must be >= 0");
  }
  a->pad_begin.assign(pads.begin(), pads.begin() + nsp);
  a->pad_end.assign(pads.begin() + nsp, pads.end());
  if (a->auto_pad != "NOTSET" && a->auto_pad != "VALID" && a->auto_pad != "SAME_UPPER" &&
      a->auto_pad != "SAME_LOWER")
    return ctx.error("auto_pad='{}' is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER",
                     a->auto_pad);
  return Status::OK();
}

// Everything a conv kernel needs at run time: the primitive, prepared reorders and weights.
struct ConvState {
  DnnlCall call;
  bool src_reorder = false, dst_reorder = false, wei_reorder_runtime = false;
  bool z_post_op = false, z_to_plain = false, has_z = false;
  DnnlReorder src_r, dst_r, wei_r, z_r;
  Tensor src_buf, dst_buf, wei_buf, z_buf;  // oneDNN-layout scratch (and prepared weights)
  bool has_bias = false;
  Tensor bias_buf;     // int8: the bias in accumulator units (B / (x_scale * w_scale[c]))
  size_t z_bytes = 0;  // bytes of Z copied into dst before a sum post-op
  EpilogueFallback epilogue;
};

Tensor buffer_for(const dnnl::memory::desc& md) {
  return Tensor::empty(DType::kU8, {static_cast<int64_t>(md.get_size())});
}

using dt = dnnl::memory::data_type;

// The number formats of one convolution. Float: src/weights in f32 or bf16. Int8 (QConv): u8/s8
// src, s8 weights, dst in u8/s8/f32, with per-channel output scales, a sum scale for Z and an
// optional final scale (the next tensor's 1/y_scale when the activation cannot absorb it).
struct ConvNumerics {
  bool int8 = false;
  dt src = dt::f32, wei = dt::f32;
  DType out = DType::kF32;           // the output value's dtype
  std::vector<float> output_scales;  // int8: per output channel
  std::vector<float> acc_scales;     // int8: x_scale * w_scale[c], the accumulator's units
  float sum_scale = 1.f;             // scale of Z in the sum post-op
  float final_scale = 0.f;           // non-zero: eltwise_linear(final_scale) after the activation
  DType wei_dtype = DType::kF32;     // the weight input's dtype
  bool winograd = false;             // try oneDNN's Winograd convolution first (use_winograd)
};

// A descriptor like `md` with another data type (same dims and layout).
dnnl::memory::desc with_dtype(const dnnl::memory::desc& md, dt t) {
  dnnl_memory_desc_t d = md.data;
  d.data_type = static_cast<dnnl_data_type_t>(t);
  return dnnl::memory::desc(d);
}

// The shared tail of Conv, FusedConv, QConv and ConvTranspose. `make_pd(src, wei, dst, attr)`
// creates the primitive descriptor from oneDNN-chosen (format any) descriptors. Handles:
// - the input arriving in a oneDNN layout (ctx.in_layout(0)): reordered only if the primitive
//   wants another one;
// - the output staying in oneDNN's layout when every consumer accepts it;
// - bf16 precision: src/weights/dst in bf16, f32 bias, weights converted once;
// - int8 (num.int8): output scales, a prescaled bias, Z added with a scaled sum post-op;
// - the epilogue act(Y + Z) as post-ops, or as a fallback pass when Z broadcasts;
// - `act_tag` other than `any`: src and dst in that layout (training_activation_tag).
// A src conversion is left to the planner (convert_input), which shares it between kernels.
template <typename MakePD>
Result<KernelPtr> conv_kernel(BuildContext& ctx, const Shape& x, const Shape& out,
                              const dnnl::memory::desc& wei_plain, MakePD make_pd,
                              const ConvNumerics& num = {},
                              dnnl::memory::format_tag act_tag = dnnl::memory::format_tag::any) {
  ActivationSpec act;
  DLSYS_ASSIGN_OR_RETURN(act, read_activation(ctx));
  auto st = std::make_shared<ConvState>();
  st->has_bias = ctx.has_input(2);
  bool has_z = ctx.has_input(3);
  bool z_post = has_z && ctx.in_shape(3) == out;
  bool fallback = has_z && !z_post;
  if (num.int8 && fallback)
    return ctx.unsupported("the int8 convolution needs Z of the output's shape {}, got {}",
                           shape_str(out), shape_str(ctx.in_shape(3)));
  dt cdt = ctx.precision() == Precision::kBF16 ? dt::bf16 : dt::f32;
  dt src_dt = num.int8 ? num.src : cdt, wei_dt = num.int8 ? num.wei : cdt;
  dt out_dt = to_dnnl(num.out);
  auto src_given = ctx.in_layout(0).is_zero() ? plain_md(x, ctx.in_dtype(0)) : ctx.in_layout(0);
  auto dst_plain = plain_md(out, num.out);
  bool free_out = ctx.output_layout_free(0) && !fallback;
  auto any = dnnl::memory::format_tag::any;
  dnnl::memory::dims xd(x.begin(), x.end()), od(out.begin(), out.end());
  dnnl::memory::desc dst_md;
  if (z_post) {
    // dst takes Z's layout: Z is copied into it and added by the sum post-op.
    dnnl::memory::desc z_md =
        ctx.in_layout(3).is_zero() ? plain_md(out, ctx.in_dtype(3)) : ctx.in_layout(3);
    // Float: dst is Z's layout as stored (bf16 when the producer kept bf16). Int8: Z's layout
    // with the output's type, which must have Z's element size.
    dst_md = num.int8 ? with_dtype(z_md, out_dt) : z_md;
    if (num.winograd) {
      // Winograd writes nChw16c only: Z is converted into it (once, shared) when it is not.
      dst_md = dnnl::memory::desc(od, out_dt, dnnl::memory::format_tag::aBcd16b);
      if (dst_md != z_md) ctx.convert_input(3, dst_md);
    }
    if (num.int8 && dtype_size(ctx.in_dtype(3)) != dtype_size(num.out))
      return ctx.unsupported("Z ({}) and the output ({}) must have the same element size",
                             dtype_name(ctx.in_dtype(3)), dtype_name(num.out));
  } else {
    dst_md = dnnl::memory::desc(od, free_out && !num.int8 ? cdt : out_dt, act_tag);
  }
  DLSYS_RETURN_IF_ERROR(dnnl_try(ctx, [&] {
    dnnl::post_ops po;
    // The residual Z is added with a sum post-op (dst = conv + dst): every oneDNN conv
    // implementation takes it, where a full-tensor binary post-op sends the AVX-512 brgconv
    // kernels to the reference implementation (~300x slower). run() copies Z into dst first.
    if (z_post) {
      if (num.int8 && ctx.in_dtype(3) != num.out)
        po.append_sum(num.sum_scale, to_dnnl(ctx.in_dtype(3)));
      else
        po.append_sum(num.sum_scale);
    }
    if (act.present && !fallback) po.append_eltwise(1.f, act.alg, act.alpha, act.beta);
    if (num.final_scale != 0.f)
      po.append_eltwise(1.f, dnnl::algorithm::eltwise_linear, num.final_scale, 0.f);
    dnnl::primitive_attr attr = dnnl_attr();
    attr.set_post_ops(po);
    if (num.int8) attr.set_output_scales(num.output_scales.size() > 1 ? 2 : 0, num.output_scales);
    dnnl::memory::desc src_any(xd, src_dt, act_tag);
    dnnl::memory::desc wei_any(wei_plain.dims(), wei_dt, any);
    auto pd = make_pd(src_any, wei_any, dst_md, attr);
    ctx.set_impl(pd.second.impl_info_str());
    st->call.prim = decltype(pd.first)(pd.second);
    st->call.add(DNNL_ARG_SRC, pd.second.src_desc());
    st->call.add(DNNL_ARG_WEIGHTS, pd.second.weights_desc());
    st->call.add(DNNL_ARG_DST, pd.second.dst_desc());
    if (st->has_bias) st->call.add(DNNL_ARG_BIAS, pd.second.bias_desc());
    st->z_bytes = dst_md.get_size();
    if (pd.second.src_desc() != src_given) {
      if (ctx.in_value(0)) {
        st->src_reorder = true;
        st->src_r.init(src_given, pd.second.src_desc());
        st->src_buf = buffer_for(pd.second.src_desc());
      } else {
        ctx.convert_input(0, pd.second.src_desc());
      }
    }
    dnnl::memory::desc dst = pd.second.dst_desc();
    if (z_post || free_out) {
      if (dst != dst_plain) ctx.set_output_layout(0, dst);
    } else if (dst != dst_plain) {
      st->dst_reorder = true;
      st->dst_r.init(dst, dst_plain);
      st->dst_buf = buffer_for(dst);
    }
    if (pd.second.weights_desc() != wei_plain) {
      st->wei_buf = buffer_for(pd.second.weights_desc());
      st->wei_r.init(wei_plain, pd.second.weights_desc());
      if (ctx.in_value(1)) {
        st->wei_r.run(ctx.in_value(1)->data(), st->wei_buf.data());
        dnnl_stream().wait();
      } else {
        st->wei_reorder_runtime = true;
      }
    } else if (ctx.in_value(1)) {
      st->wei_buf = *ctx.in_value(1);
    }
    if (fallback && !ctx.in_layout(3).is_zero()) {
      st->z_to_plain = true;
      st->z_r.init(ctx.in_layout(3), plain_md(ctx.in_shape(3), DType::kF32));
      st->z_buf = Tensor::empty(DType::kF32, ctx.in_shape(3));
    }
  }));
  if (num.int8 && st->has_bias) {
    // oneDNN computes dst = output_scale * (acc + bias): the bias goes in accumulator units.
    const Tensor* b = ctx.in_value(2);
    if (!b) return ctx.unsupported("the int8 convolution needs a constant bias");
    int64_t M = b->numel();
    st->bias_buf = Tensor::empty(DType::kF32, {M});
    for (int64_t c = 0; c < M; ++c) {
      float s = num.acc_scales.size() > 1 ? num.acc_scales[c] : num.acc_scales[0];
      st->bias_buf.data_as<float>()[c] = b->data_as<float>()[c] / s;
    }
  }
  st->z_post_op = z_post;
  st->has_z = has_z;
  if (fallback) {
    Shape zs = ctx.in_shape(3);
    DLSYS_RETURN_IF_ERROR(st->epilogue.init(ctx, out, &zs, act));
  }
  return make_kernel([st](const Tensor* const* in, Tensor* const* o) {
    ConvState& c = *st;
    const void* src = in[0]->data();
    if (c.src_reorder) {
      c.src_r.run(src, c.src_buf.data());
      src = c.src_buf.data();
    }
    const void* wei = c.wei_buf.data() ? c.wei_buf.data() : in[1]->data();
    if (c.wei_reorder_runtime) {
      c.wei_r.run(in[1]->data(), c.wei_buf.data());
      wei = c.wei_buf.data();
    }
    c.call.bind(DNNL_ARG_SRC, src);
    c.call.bind(DNNL_ARG_WEIGHTS, wei);
    if (c.has_bias)
      c.call.bind(DNNL_ARG_BIAS, c.bias_buf.data() ? c.bias_buf.data() : in[2]->data());
    if (c.z_post_op && in[3]->data() != o[0]->data())
      copy_bytes(o[0]->data(), in[3]->data(), c.z_bytes);
    c.call.bind(DNNL_ARG_DST, c.dst_reorder ? c.dst_buf.data() : o[0]->data());
    c.call.exec();
    if (c.dst_reorder) c.dst_r.run(c.dst_buf.data(), o[0]->data());
    if (c.epilogue.active()) {
      const float* z = nullptr;
      if (c.has_z) {
        z = in[3]->data_as<float>();
        if (c.z_to_plain) {
          c.z_r.run(z, c.z_buf.data());
          z = c.z_buf.data_as<float>();
        }
      }
      c.epilogue.run(o[0]->data_as<float>(), z);
    }
    return Status::OK();
  });
}

// X, W (and B) are f32; X and W have the same rank, 3 to 5 (1-3 spatial dims).
Status check_conv_inputs(const BuildContext& ctx) {
  for (size_t i = 0; i < 4; ++i)
    if (ctx.has_input(i)) DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(i, {DType::kF32}));
  const Shape &x = ctx.in_shape(0), &w = ctx.in_shape(1);
  if (x.size() < 3 || x.size() > 5 || w.size() != x.size())
    return ctx.error("X {} and W {} must both have rank 3, 4 or 5", shape_str(x), shape_str(w));
  return Status::OK();
}

}  // namespace

Status conv_geometry(const BuildContext& ctx, const Shape& x, const Shape& w, ConvGeometry* geo) {
  size_t nsp = x.size() - 2;
  int64_t g = ctx.attr_int("group", 1);
  int64_t N = x[0], C = x[1], M = w[0];
  if (g < 1 || C % g != 0 || M % g != 0 || w[1] != C / g)
    return ctx.error("W {} does not fit X {} with group={} (W[1] must be C/group = {})",
                     shape_str(w), shape_str(x), g, g > 0 ? C / g : 0);
  SpatialAttrs a;
  DLSYS_RETURN_IF_ERROR(read_spatial(ctx, nsp, Shape(w.begin() + 2, w.end()), &a));
  Shape out = {N, M};
  for (size_t i = 0; i < nsp; ++i) {
    int64_t in = x[2 + i], ext = (a.kernel[i] - 1) * a.dilations[i] + 1, s = a.strides[i];
    if (a.kernel[i] != w[2 + i]) return ctx.error("kernel_shape disagrees with W {}", shape_str(w));
    if (a.auto_pad == "VALID") {
      a.pad_begin[i] = a.pad_end[i] = 0;
    } else if (a.auto_pad == "SAME_UPPER" || a.auto_pad == "SAME_LOWER") {
      int64_t o = (in + s - 1) / s;
      int64_t total = std::max<int64_t>(0, (o - 1) * s + ext - in);
      int64_t small = total / 2;
      a.pad_begin[i] = a.auto_pad == "SAME_UPPER" ? small : total - small;
      a.pad_end[i] = total - a.pad_begin[i];
    }
    int64_t o = (in + a.pad_begin[i] + a.pad_end[i] - ext) / s + 1;
    if (o < 1)
      return ctx.error("output would be empty: input {} is smaller than the kernel", shape_str(x));
    out.push_back(o);
  }
  geo->group = g;
  geo->out = out;
  geo->weights = g > 1 ? dims{g, M / g, C / g} : dims{M, C};
  for (size_t i = 0; i < nsp; ++i) geo->weights.push_back(w[2 + i]);
  geo->strides.assign(a.strides.begin(), a.strides.end());
  geo->dilations.clear();
  for (int64_t d : a.dilations) geo->dilations.push_back(d - 1);
  geo->pad_l.assign(a.pad_begin.begin(), a.pad_begin.end());
  geo->pad_r.assign(a.pad_end.begin(), a.pad_end.end());
  return Status::OK();
}

dnnl::memory::format_tag training_activation_tag(const BuildContext& ctx, const Shape& x,
                                                 const ConvGeometry& geo) {
  bool blocked =
      ctx.training() && x.size() == 4 && geo.group == 1 && x[1] % 16 == 0 && geo.out[1] % 16 == 0;
  return blocked ? dnnl::memory::format_tag::aBcd16b : dnnl::memory::format_tag::any;
}

namespace {

// Winograd convolution (oneDNN's F(2x2, 3x3) and F(4x4, 3x3) AVX-512 kernels, jit_fp32_wino_2x3
// and jit_wino_4x3, which oneDNN picks between) for fp32 inference: 3x3 kernels, stride 1, no
// dilation, no groups, channels in multiples of 16 (their nChw16c blocking). Fewer
// multiplications than the direct convolution: ResNet-18 runs 1.3-1.4x faster, with logits
// within 1e-6 relative of the direct kernel's. Not for bf16 or int8 (oneDNN has no such kernels)
// nor training plans (the gradients use the direct layouts). When oneDNN has no Winograd kernel
// for the post-ops, the direct one runs.
// Whether oneDNN has a Winograd kernel on this CPU (AVX-512 only; probed once with a small
// convolution). Without one, choosing Winograd would still force Z into nChw16c, and the direct
// kernel oneDNN then falls back to on AVX2 is its reference implementation (seconds per conv).
bool winograd_kernels_available() {
  static const bool ok = [] {
    try {
      using tag = dnnl::memory::format_tag;
      dnnl::memory::desc src({1, 16, 8, 8}, dt::f32, tag::any),
          wei({16, 16, 3, 3}, dt::f32, tag::any), dst({1, 16, 8, 8}, dt::f32, tag::any);
      dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference,
                                        dnnl::algorithm::convolution_winograd, src, wei, dst,
                                        {1, 1}, {1, 1}, {1, 1});
      dnnl::convolution_forward::primitive_desc pd(d, dnnl_engine());
      return true;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return ok;
}

bool use_winograd(const BuildContext& ctx, const Shape& x, const Shape& w, const ConvGeometry& geo,
                  const ConvNumerics& num) {
  if (num.int8 || ctx.precision() != Precision::kF32 || ctx.training()) return false;
  if (!winograd_kernels_available()) return false;
  if (x.size() != 4 || geo.group != 1 || w[2] != 3 || w[3] != 3) return false;
  for (size_t i = 0; i < 2; ++i)
    if (geo.strides[i] != 1 || geo.dilations[i] != 0) return false;
  return x[1] % 16 == 0 && w[0] % 16 == 0;
}

// Conv, FusedConv and (with int8 numerics) QConv: shape inference, then the primitive.
Result<KernelPtr> build_conv_with(BuildContext& ctx, const ConvNumerics& num) {
  const Shape &x = ctx.in_shape(0), &w = ctx.in_shape(1);
  ConvGeometry geo;
  DLSYS_RETURN_IF_ERROR(conv_geometry(ctx, x, w, &geo));
  const Shape& out = geo.out;
  int64_t M = w[0];
  ctx.set_output(0, num.out, out);
  if (ctx.has_input(2) && (ctx.in_shape(2) != Shape{M}))
    return ctx.error("B has shape {}, expected [{}]", shape_str(ctx.in_shape(2)), M);
  auto wei_plain = plain_md(Shape(geo.weights.begin(), geo.weights.end()), num.wei_dtype);
  bool has_bias = ctx.has_input(2);
  const dims &sd = geo.strides, &dil = geo.dilations, &pl = geo.pad_l, &pr = geo.pad_r;
  ConvNumerics chosen = num;
  chosen.winograd = use_winograd(ctx, x, w, geo, num);
  return conv_kernel(
      ctx, x, out, wei_plain,
      [&](const dnnl::memory::desc& src, const dnnl::memory::desc& wei,
          const dnnl::memory::desc& dst, const dnnl::primitive_attr& attr) {
        auto kind = dnnl::prop_kind::forward_inference;
        auto make = [&](dnnl::algorithm alg) {
          auto d = has_bias
                       ? dnnl::convolution_forward::desc(
                             kind, alg, src, wei, plain_md({M}, DType::kF32), dst, sd, dil, pl, pr)
                       : dnnl::convolution_forward::desc(kind, alg, src, wei, dst, sd, dil, pl, pr);
          return std::make_pair(dnnl::convolution_forward(),
                                dnnl::convolution_forward::primitive_desc(d, attr, dnnl_engine()));
        };
        if (chosen.winograd) {
          try {
            return make(dnnl::algorithm::convolution_winograd);
          } catch (const dnnl::error&) {
            // No Winograd kernel for these post-ops or shapes: the direct one below.
          }
        }
        return make(dnnl::algorithm::convolution_direct);
      },
      chosen, num.int8 ? dnnl::memory::format_tag::any : training_activation_tag(ctx, x, geo));
}

Result<KernelPtr> build_conv(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(check_conv_inputs(ctx));
  return build_conv_with(ctx, ConvNumerics{});
}

// QConv(Xq, Wq, B?, Zq?): the int8 convolution the graph optimizer makes from a QDQ pattern
// (QuantizedConvFusion). Xq is u8/s8 with scale `x_scale`, Wq s8 [M, C/group, k...] with
// per-channel `w_scales`, B f32 in real units. The output is f32, or u8/s8 with scale `y_scale`
// (`y_type`: ONNX UINT8=2, INT8=3) when the next QuantizeLinear was folded in. Zq (the residual)
// has the output's element size: u8/s8 with `z_scale` for an int8 output, f32 for f32. Zero
// points are all 0. Result: quantize(act(x_scale*w_scale*conv(Xq, Wq) + B + z_scale*Zq)).
Result<KernelPtr> build_qconv(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kU8, DType::kI8}));
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(1, {DType::kI8}));
  if (ctx.has_input(2)) DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(2, {DType::kF32}));
  const Shape &x = ctx.in_shape(0), &w = ctx.in_shape(1);
  if (x.size() < 3 || x.size() > 5 || w.size() != x.size())
    return ctx.error("X {} and W {} must both have rank 3, 4 or 5", shape_str(x), shape_str(w));
  ConvNumerics num;
  num.int8 = true;
  num.src = to_dnnl(ctx.in_dtype(0));
  num.wei = dt::s8;
  num.wei_dtype = DType::kI8;
  float sx = ctx.attr_float("x_scale", 0.f), sy = ctx.attr_float("y_scale", 0.f);
  std::vector<float> sw = ctx.attr_floats("w_scales");
  int64_t M = w[0];
  if (!(sx > 0) || sw.empty() || (sw.size() != 1 && static_cast<int64_t>(sw.size()) != M))
    return ctx.error("needs x_scale > 0 and 1 or {} w_scales (got {} and {} values)", M, sx,
                     sw.size());
  if (sy > 0) {
    int64_t yt = ctx.attr_int("y_type", 2);
    if (yt != 2 && yt != 3) return ctx.error("y_type {} is not UINT8 (2) or INT8 (3)", yt);
    num.out = yt == 2 ? DType::kU8 : DType::kI8;
  }
  // With an int8 output, 1/y_scale folds into the output scales when the activation commutes
  // with a positive scale (none or Relu); otherwise it is a final linear post-op.
  std::string act = ctx.attr_string("activation", "");
  std::vector<float> ap = ctx.attr_floats("activation_params");
  bool homogeneous = act.empty() || (act == "Relu") || (act == "LeakyRelu");
  float k = sy > 0 && homogeneous ? 1.f / sy : 1.f;
  if (sy > 0 && !homogeneous) num.final_scale = 1.f / sy;
  for (float s : sw) {
    num.acc_scales.push_back(sx * s);
    num.output_scales.push_back(sx * s * k);
  }
  if (ctx.has_input(3)) {
    DType zt = ctx.in_dtype(3);
    float sz = ctx.attr_float("z_scale", 0.f);
    if (num.out == DType::kF32) {
      if (zt != DType::kF32)
        return ctx.error("an f32 output needs an f32 Z, got {}", dtype_name(zt));
      num.sum_scale = 1.f;
    } else {
      if ((zt != DType::kU8 && zt != DType::kI8) || !(sz > 0))
        return ctx.error("an int8 output needs a u8/s8 Z with z_scale > 0 (got {}, {})",
                         dtype_name(zt), sz);
      num.sum_scale = sz * k;
    }
  }
  return build_conv_with(ctx, num);
}

// What FusedConvDepthwise keeps: the fused primitive (weights and biases bound once) and the
// reorder of its output to plain when a consumer needs plain.
struct ConvDepthwiseState {
  DnnlCall call;
  // Unfused (a small 1x1 output): the depthwise convolution runs after `call`, which writes the
  // 1x1 output into the calling thread's buffer of `mid_bytes` (mid_buffer).
  bool unfused = false;
  DnnlCall dw_call;
  size_t mid_bytes = 0;
  bool dst_reorder = false;
  DnnlReorder dst_r;
  Tensor dst_buf, wei, dw_wei, bias, dw_bias;
};

// The calling thread's buffer for an unfused FusedConvDepthwise's 1x1 output, grown to at least
// `bytes` (kernels of one plan run one at a time per thread; nothing else uses it).
void* mid_buffer(size_t bytes) {
  thread_local GrowingBuffer buf;
  return buf.grow(bytes, "convolution buffer");
}

// From this size of the 1x1 output (f32 bytes) up, FusedConvDepthwise runs oneDNN's fused kernel;
// below it the two convolutions, whose output then stays in cache anyway. MobileNetV2, dlsys
// bench, 2 threads, interleaved: fused at batch 32 (15-154 MB outputs) 190-199 vs 211-217 ms
// quiet and 293-329 vs 355-396 ms beside a busy process; at batch 1 (at most 4.8 MB) 9.8-10.0 vs
// 8.4-9.4 ms.
constexpr int64_t kFuseMinBytes = 8 << 20;

// A constant input converted once from plain f32 `plain` into `want`; zeros of `want`'s size when
// the input is absent (a missing bias).
Tensor prepared_constant(const BuildContext& ctx, size_t i, const dnnl::memory::desc& plain,
                         const dnnl::memory::desc& want) {
  if (ctx.has_input(i)) return reorder_once(ctx.in_value(i)->data(), plain, want);
  Tensor t = buffer_for(want);
  std::memset(t.data(), 0, want.get_size());
  return t;
}

// FusedConvDepthwise(X, W, B?, Wdw, Bdw?) = dw_act(DepthwiseConv3x3(act(Conv1x1(X, W) + B), Wdw,
// stride dw_stride, pads 1) + Bdw), made by PointwiseDepthwiseFusion from MobileNet's expand +
// depthwise pair. One oneDNN 1x1 convolution with a depthwise post-op (append_dw): the 1x1
// output (the block's widest tensor) is produced a few rows at a time and consumed by the
// depthwise kernel while in cache instead of going through memory. oneDNN falls back to running
// the two convolutions one after the other (ref_fused_convolution) where it has no fused kernel.
// Activations are nChw16c, whatever layout X arrives in: on channels-last tensors oneDNN 2.6's
// jit_1x1 kernel with a depthwise post-op writes wrong values (up to 10x the output scale, and
// different from run to run; seen on AVX-512 and AVX2 EPYCs, caught by
// Optimize.PointwiseDepthwiseFusionMatchesAtMobileNetShapes). Below kFuseMinBytes of 1x1 output
// the kernel runs the two convolutions instead (same layouts), the 1x1 output in a per-thread
// buffer.
Result<KernelPtr> build_conv_depthwise(BuildContext& ctx) {
  for (size_t i = 0; i < 5; ++i)
    if (ctx.has_input(i)) DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(i, {DType::kF32}));
  if (!ctx.has_input(3)) return ctx.error("needs the depthwise weights Wdw (input 3)");
  const Shape &x = ctx.in_shape(0), &w = ctx.in_shape(1);
  if (x.size() != 4 || w.size() != 4 || w[1] != x[1] || w[2] != 1 || w[3] != 1)
    return ctx.error("X {} and W {} must be [N, C, H, W] and [M, C, 1, 1]", shape_str(x),
                     shape_str(w));
  int64_t M = w[0], stride = ctx.attr_int("dw_stride", 1);
  if (ctx.in_shape(3) != Shape{M, 1, 3, 3})
    return ctx.error("Wdw {} must be [{}, 1, 3, 3]", shape_str(ctx.in_shape(3)), M);
  if (stride != 1 && stride != 2) return ctx.error("dw_stride {} must be 1 or 2", stride);
  for (size_t i : {1, 2, 3, 4}) {
    if (!ctx.has_input(i)) continue;
    if ((i == 2 || i == 4) && ctx.in_shape(i) != Shape{M})
      return ctx.error("bias {} has shape {}, expected [{}]", i, shape_str(ctx.in_shape(i)), M);
    if (!ctx.in_value(i)) return ctx.unsupported("input {} must be a constant", i);
  }
  Shape out = {x[0], M, (x[2] - 1) / stride + 1, (x[3] - 1) / stride + 1};
  ctx.set_output(0, DType::kF32, out);
  ActivationSpec act, dw_act;
  DLSYS_ASSIGN_OR_RETURN(act, read_activation(ctx));
  DLSYS_ASSIGN_OR_RETURN(dw_act, read_activation(ctx, "dw_"));
  auto st = std::make_shared<ConvDepthwiseState>();
  dt cdt = ctx.precision() == Precision::kBF16 ? dt::bf16 : dt::f32;
  bool free_out = ctx.output_layout_free(0);
  dims xd(x.begin(), x.end()), mid(xd);
  mid[1] = M;
  auto src_given = ctx.in_layout(0).is_zero() ? plain_md(x, DType::kF32) : ctx.in_layout(0);
  auto tag = dnnl::memory::format_tag::aBcd16b;
  st->unfused = x[0] * M * x[2] * x[3] * 4 < kFuseMinBytes;
  DLSYS_RETURN_IF_ERROR(dnnl_try(ctx, [&] {
    dnnl::post_ops po;
    if (act.present) po.append_eltwise(1.f, act.alg, act.alpha, act.beta);
    if (!st->unfused) {
      po.append_dw(cdt, dt::f32, free_out ? cdt : dt::f32, 3, stride, 1, 0, {});
      if (dw_act.present) po.append_eltwise(1.f, dw_act.alg, dw_act.alpha, dw_act.beta);
    }
    dnnl::primitive_attr attr = dnnl_attr();
    attr.set_post_ops(po);
    // Unfused, oneDNN picks the layouts (its brgemm kernels prefer channels-last), reading X as
    // it arrives when it arrives in a oneDNN layout of the compute type.
    auto io_tag = st->unfused ? dnnl::memory::format_tag::any : tag;
    dnnl::memory::desc src_md(xd, cdt, io_tag);
    if (st->unfused && !ctx.in_layout(0).is_zero() && ctx.in_layout(0).data_type() == cdt)
      src_md = ctx.in_layout(0);
    dnnl::convolution_forward::desc d(
        dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src_md,
        dnnl::memory::desc({M, x[1], 1, 1}, cdt, dnnl::memory::format_tag::any),
        plain_md({M}, DType::kF32), dnnl::memory::desc(mid, cdt, io_tag), {1, 1}, {0, 0}, {0, 0});
    dnnl::convolution_forward::primitive_desc pd(d, attr, dnnl_engine());
    ctx.set_impl(pd.impl_info_str());
    auto arg_md = [&](int arg) { return pd.query_md(dnnl::query::exec_arg_md, arg); };
    st->call.prim = dnnl::convolution_forward(pd);
    st->call.add(DNNL_ARG_SRC, pd.src_desc());
    st->call.add(DNNL_ARG_DST, pd.dst_desc());
    st->wei = prepared_constant(ctx, 1, plain_md(w, DType::kF32), pd.weights_desc());
    st->bias = prepared_constant(ctx, 2, plain_md({M}, DType::kF32), pd.bias_desc());
    const dnnl::memory::desc dw_plain = plain_md({M, 1, 1, 3, 3}, DType::kF32);
    std::vector<std::pair<int, Tensor*>> constants = {{DNNL_ARG_WEIGHTS, &st->wei},
                                                      {DNNL_ARG_BIAS, &st->bias}};
    dnnl::memory::desc dst;
    if (st->unfused) {
      // The depthwise convolution on its own, reading the 1x1 output in nChw16c.
      dnnl::post_ops dpo;
      if (dw_act.present) dpo.append_eltwise(1.f, dw_act.alg, dw_act.alpha, dw_act.beta);
      dnnl::primitive_attr dattr = dnnl_attr();
      dattr.set_post_ops(dpo);
      dims od(out.begin(), out.end());
      dnnl::convolution_forward::desc dd(
          dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, pd.dst_desc(),
          dnnl::memory::desc({M, 1, 1, 3, 3}, cdt, dnnl::memory::format_tag::any),
          plain_md({M}, DType::kF32), dnnl::memory::desc(od, free_out ? cdt : dt::f32, io_tag),
          {stride, stride}, {1, 1}, {1, 1});
      dnnl::convolution_forward::primitive_desc dpd(dd, dattr, dnnl_engine());
      st->dw_call.prim = dnnl::convolution_forward(dpd);
      st->dw_call.add(DNNL_ARG_SRC, dpd.src_desc());
      st->dw_call.add(DNNL_ARG_DST, dpd.dst_desc());
      st->dw_wei = prepared_constant(ctx, 3, dw_plain, dpd.weights_desc());
      st->dw_bias = prepared_constant(ctx, 4, plain_md({M}, DType::kF32), dpd.bias_desc());
      st->dw_call.add(DNNL_ARG_WEIGHTS, dpd.weights_desc());
      st->dw_call.bind(DNNL_ARG_WEIGHTS, st->dw_wei.data());
      st->dw_call.add(DNNL_ARG_BIAS, dpd.bias_desc());
      st->dw_call.bind(DNNL_ARG_BIAS, st->dw_bias.data());
      st->mid_bytes = pd.dst_desc().get_size();
      dst = dpd.dst_desc();
      ctx.set_impl(std::string(pd.impl_info_str()) + " + " + dpd.impl_info_str() + " (unfused)");
    } else {
      const int dw_wei = DNNL_ARG_ATTR_POST_OP_DW | DNNL_ARG_WEIGHTS;
      const int dw_bias = DNNL_ARG_ATTR_POST_OP_DW | DNNL_ARG_BIAS;
      st->dw_wei = prepared_constant(ctx, 3, dw_plain, arg_md(dw_wei));
      st->dw_bias = prepared_constant(ctx, 4, plain_md({M}, DType::kF32), arg_md(dw_bias));
      constants.push_back({dw_wei, &st->dw_wei});
      constants.push_back({dw_bias, &st->dw_bias});
      dst = pd.dst_desc();
    }
    for (auto& [arg, t] : constants) {
      st->call.add(arg, arg_md(arg));
      st->call.bind(arg, t->data());
    }
    if (pd.src_desc() != src_given) ctx.convert_input(0, pd.src_desc());
    auto dst_plain = plain_md(out, DType::kF32);
    if (free_out) {
      if (dst != dst_plain) ctx.set_output_layout(0, dst);
    } else if (dst != dst_plain) {
      st->dst_reorder = true;
      st->dst_r.init(dst, dst_plain);
      st->dst_buf = buffer_for(dst);
    }
  }));
  return make_kernel([st](const Tensor* const* in, Tensor* const* o) {
    ConvDepthwiseState& c = *st;
    void* y = c.dst_reorder ? c.dst_buf.data() : o[0]->data();
    c.call.bind(DNNL_ARG_SRC, in[0]->data());
    if (c.unfused) {
      void* mid = mid_buffer(c.mid_bytes);
      c.call.bind(DNNL_ARG_DST, mid);
      c.call.exec();
      c.dw_call.bind(DNNL_ARG_SRC, mid);
      c.dw_call.bind(DNNL_ARG_DST, y);
      c.dw_call.exec();
    } else {
      c.call.bind(DNNL_ARG_DST, y);
      c.call.exec();
    }
    if (c.dst_reorder) c.dst_r.run(c.dst_buf.data(), o[0]->data());
    return Status::OK();
  });
}

Result<KernelPtr> build_conv_transpose(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(check_conv_inputs(ctx));
  const Shape &x = ctx.in_shape(0), &w = ctx.in_shape(1);
  size_t nsp = x.size() - 2;
  int64_t g = ctx.attr_int("group", 1);
  int64_t N = x[0], C = x[1];
  if (g < 1 || w[0] != C || C % g != 0)
    return ctx.error("W {} does not fit X {} with group={} (W[0] must be C)", shape_str(w),
                     shape_str(x), g);
  int64_t Mg = w[1], M = Mg * g, Cg = C / g;
  SpatialAttrs a;
  DLSYS_RETURN_IF_ERROR(read_spatial(ctx, nsp, Shape(w.begin() + 2, w.end()), &a));
  std::vector<int64_t> opad = ctx.has_attr("output_padding") ? ctx.attr_ints("output_padding")
                                                             : std::vector<int64_t>(nsp, 0);
  std::vector<int64_t> oshape = ctx.attr_ints("output_shape");
  if (opad.size() != nsp) return ctx.error("output_padding needs {} values", nsp);
  if (!oshape.empty() && oshape.size() != nsp) {
    if (oshape.size() == nsp + 2)
      oshape.erase(oshape.begin(), oshape.begin() + 2);
    else
      return ctx.error("output_shape needs {} values", nsp);
  }
  Shape out = {N, M};
  for (size_t i = 0; i < nsp; ++i) {
    int64_t in = x[2 + i], ext = (a.kernel[i] - 1) * a.dilations[i] + 1, s = a.strides[i];
    int64_t target = -1;
    if (!oshape.empty())
      target = oshape[i];
    else if (a.auto_pad == "SAME_UPPER" || a.auto_pad == "SAME_LOWER")
      target = in * s;
    if (a.auto_pad == "VALID") a.pad_begin[i] = a.pad_end[i] = 0;
    if (target >= 0) {
      int64_t total = s * (in - 1) + opad[i] + ext - target;
      if (total < 0) {
        // A larger output_shape than the natural one: the extra rows/columns come at the end.
        a.pad_begin[i] = 0;
        a.pad_end[i] = total;
      } else if (a.auto_pad == "SAME_UPPER") {
        a.pad_begin[i] = total / 2;
        a.pad_end[i] = total - total / 2;
      } else {
        a.pad_begin[i] = total - total / 2;
        a.pad_end[i] = total / 2;
      }
    }
    int64_t o = s * (in - 1) + opad[i] + ext - a.pad_begin[i] - a.pad_end[i];
    if (o < 1) return ctx.error("output would be empty");
    out.push_back(o);
  }
  ctx.set_output(0, DType::kF32, out);
  if (ctx.has_input(2) && (ctx.in_shape(2) != Shape{M}))
    return ctx.error("B has shape {}, expected [{}]", shape_str(ctx.in_shape(2)), M);
  // ONNX W is [g][Cg][Mg][k...]; oneDNN wants dims (g, o=Mg, i=Cg, k...): describe by strides.
  int64_t ksz = 1;
  for (size_t i = 0; i < nsp; ++i) ksz *= w[2 + i];
  Shape wd = g > 1 ? Shape{g, Mg, Cg} : Shape{Mg, Cg};
  std::vector<int64_t> wst = g > 1 ? std::vector<int64_t>{Cg * Mg * ksz, ksz, Mg * ksz}
                                   : std::vector<int64_t>{ksz, Mg * ksz};
  std::vector<int64_t> kst = shape_strides(Shape(w.begin() + 2, w.end()));
  for (size_t i = 0; i < nsp; ++i) {
    wd.push_back(w[2 + i]);
    wst.push_back(kst[i]);
  }
  auto wei_plain = strided_md(wd, DType::kF32, wst);
  bool has_bias = ctx.has_input(2);
  dims dil, sd(a.strides.begin(), a.strides.end());
  for (int64_t d : a.dilations) dil.push_back(d - 1);
  dims pl(a.pad_begin.begin(), a.pad_begin.end()), pr;
  for (size_t i = 0; i < nsp; ++i) pr.push_back(a.pad_end[i] - opad[i]);
  return conv_kernel(
      ctx, x, out, wei_plain,
      [&](const dnnl::memory::desc& src, const dnnl::memory::desc& wei,
          const dnnl::memory::desc& dst, const dnnl::primitive_attr& attr) {
        auto kind = dnnl::prop_kind::forward_inference;
        auto alg = dnnl::algorithm::deconvolution_direct;
        auto d = has_bias
                     ? dnnl::deconvolution_forward::desc(
                           kind, alg, src, wei, plain_md({M}, DType::kF32), dst, sd, dil, pl, pr)
                     : dnnl::deconvolution_forward::desc(kind, alg, src, wei, dst, sd, dil, pl, pr);
        return std::make_pair(dnnl::deconvolution_forward(),
                              dnnl::deconvolution_forward::primitive_desc(d, attr, dnnl_engine()));
      });
}

}  // namespace

void register_conv_ops(OpRegistry& r) {
  r.add("Conv", 2, 3, 1, 1, build_conv);
  r.add("ConvTranspose", 2, 3, 1, 1, build_conv_transpose);
  // FusedConv(X, W, B?, Z?): act(Conv(X, W) + B + Z), made by the graph optimizer; attributes
  // are Conv's plus `activation` and `activation_params`. X and Z may arrive in oneDNN layouts.
  r.add("FusedConv", 2, 4, 1, 1, build_conv);
  r.set_layout_inputs("Conv", 1u);
  r.set_layout_inputs("FusedConv", 1u | 8u);
  // FusedConvDepthwise(X, W, B?, Wdw, Bdw?): a 1x1 convolution and the 3x3 depthwise one reading
  // it (build_conv_depthwise), made by PointwiseDepthwiseFusion.
  r.add("FusedConvDepthwise", 4, 5, 1, 1, build_conv_depthwise);
  r.set_layout_inputs("FusedConvDepthwise", 1u);
  r.add("QConv", 2, 4, 1, 1, build_qconv);
  r.set_layout_inputs("QConv", 1u | 8u);
}

}  // namespace dlsys
