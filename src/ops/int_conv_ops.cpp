// ConvInteger and QLinearConv, the integer convolutions older quantizers (ONNX Runtime's
// QOperator format, TFLite converters) emit. Results are the spec's exact int32 sums on every
// CPU: on oneDNN's int8 convolution where its sums are exact (int8_kernels_exact(): VNNI or
// AMX), else on int32 loops (int_gemm.h). QLinearConv requantizes the sums in double.
#include <algorithm>

#include "ops/conv_geometry.h"
#include "ops/dnnl_util.h"
#include "ops/int_gemm.h"
#include "ops/op_registry.h"

namespace dlsys {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

// Where and how IntConv writes its result: int32 sums (ConvInteger), or (`mult` set) sums plus
// `bias` requantized to u8/i8 with a multiplier and zero point per output channel (QLinearConv).
struct IntConvOutput {
  DType type = DType::kI32;
  void* data = nullptr;
  const double* mult = nullptr;   // x_scale * w_scale[m] / y_scale (formed in float), per channel
  const int32_t* bias = nullptr;  // per channel, or null
  double zp = 0;

  void* slot(int64_t i) const { return static_cast<char*>(data) + i * dtype_size(type); }

  // One (image, channel m) row of `count` pixels: out[j] = finish(src[j] - zw * sums[j]) (sums
  // may be null). Contiguous and branch-free, so it vectorizes.
  void finish_row(const int32_t* src, const int32_t* sums, int32_t zw, int64_t count, int64_t m,
                  void* out) const {
    if (type == DType::kI32) {
      int32_t* o = static_cast<int32_t*>(out);
      if (sums)
#pragma omp simd
        for (int64_t j = 0; j < count; ++j) o[j] = src[j] - zw * sums[j];
      else
        std::copy_n(src, count, o);
    } else if (type == DType::kU8) {
      finish_q8(src, sums, zw, count, m, static_cast<uint8_t*>(out), 0.0, 255.0);
    } else {
      finish_q8(src, sums, zw, count, m, static_cast<int8_t*>(out), -128.0, 127.0);
    }
  }

  // Channels m0 .. m0 + count of one pixel (8-bit output): out[j] = finish(src[j] - zw[j] *
  // wsum) (zw may be null), channel-wise multipliers and biases. Contiguous: it vectorizes.
  void finish_channels(const int32_t* src, int32_t wsum, const int32_t* zw, int64_t count,
                       int64_t m0, void* out) const {
    if (type == DType::kU8)
      finish_channels_q8(src, wsum, zw, count, m0, static_cast<uint8_t*>(out), 0.0, 255.0);
    else
      finish_channels_q8(src, wsum, zw, count, m0, static_cast<int8_t*>(out), -128.0, 127.0);
  }

  template <typename T>
  void finish_channels_q8(const int32_t* src, int32_t wsum, const int32_t* zw, int64_t count,
                          int64_t m0, T* o, double lo, double hi) const {
    const double* k = mult + m0;
    const int32_t* b = bias ? bias + m0 : nullptr;
    double z = zp;
    if (zw) {
#pragma omp simd
      for (int64_t j = 0; j < count; ++j)
        o[j] = static_cast<T>(requantize_value(
            (src[j] - static_cast<double>(zw[j]) * wsum + (b ? b[j] : 0)) * k[j], z, lo, hi));
    } else {
#pragma omp simd
      for (int64_t j = 0; j < count; ++j)
        o[j] = static_cast<T>(requantize_value((src[j] + (b ? b[j] : 0)) * k[j], z, lo, hi));
    }
  }

  template <typename T>
  void finish_q8(const int32_t* src, const int32_t* sums, int32_t zw, int64_t count, int64_t m,
                 T* o, double lo, double hi) const {
    double b = bias ? bias[m] : 0, k = mult[m];
    if (sums) {
#pragma omp simd
      for (int64_t j = 0; j < count; ++j)
        o[j] = static_cast<T>(
            requantize_value((src[j] - static_cast<double>(zw) * sums[j] + b) * k, zp, lo, hi));
    } else {
#pragma omp simd
      for (int64_t j = 0; j < count; ++j)
        o[j] = static_cast<T>(requantize_value((src[j] + b) * k, zp, lo, hi));
    }
  }
};

// conv(x - x_zp, w - w_zp) in exact int32, w_zp per tensor or per output channel.
//
// oneDNN path: one int8 convolution computes conv(x - x_zp, w') in s32, x_zp its run-time source
// zero point (oneDNN counts padding as the zero point, i.e. 0 after subtraction, as ONNX does),
// w' = w as s8 (u8 weights shifted by -128, their zero point with them). A weight zero point
// zw' = w_zp - shift that is not 0 enters as a correction, conv(x - x_zp, w' - zw') =
// conv(x - x_zp, w') - zw'[m] * S, with S the window sums of x - x_zp per group: a second
// oneDNN convolution with all-ones weights and one output channel per group. Both write
// channels-last; run() hands each NCHW element to the caller's `emit` while it transposes.
//
// Loop path: per image and group, the zero-point-subtracted input is unfolded into columns
// [C/group * kernel, output pixels] (padding reads as the zero point, 0 after subtraction) and
// multiplied by W - w_zp [M/group, C/group * kernel] (gemm_s32). Spatial ranks 1 to 3 run as 3-D
// with unit leading dims.
struct IntConv {
  int64_t N = 0, C = 0, M = 0, G = 1, Cg = 0, Mg = 0, R = 0, P = 0, kk = 1;
  int64_t in[3] = {1, 1, 1}, k[3] = {1, 1, 1}, out[3] = {1, 1, 1};
  int64_t s[3] = {1, 1, 1}, d[3] = {1, 1, 1}, pad[3] = {0, 0, 0};
  DType x_type = DType::kU8, w_type = DType::kU8;
  Shape out_shape;
  // Loop path: W - w_zp [M, R]; columns [R, P]. Both paths: the sums [N, M, P] (NCHW).
  std::vector<int32_t> w, col, acc;
  // oneDNN path.
  bool onednn = false;
  bool wei_runtime = false;  // weights not constant: shifted and reordered every run
  bool has_sums = false;     // the all-ones convolution exists (zw' may be non-zero)
  int32_t w_shift = 0;       // 128 for u8 weights
  bool src_zp_attr = true;   // x's zero point may be non-zero: the primitives take it
  bool src_reorder = false;  // a constant x, converted to channels-last by src_r each run
  bool out_cl = false;       // the 8-bit output stays channels-last (out_md)
  dnnl::memory::desc out_md;
  int32_t src_zp = 0;  // bound as the convolutions' source zero point
  DnnlCall conv, ones;
  DnnlReorder src_r, wei_r, dst_r, sums_r;  // dst_r, sums_r: channels-last to NCHW
  Tensor src_buf, wei_s8, wei_buf, ones_buf, dst, sums, sums_nchw;  // dst, sums channels-last
  std::vector<int32_t> zw;  // zw' per output channel, this run

  // Reads the Conv attributes for X (input 0) and W (input `iw`, zero point `iwz`); sizes the
  // buffers and, where oneDNN's int8 sums are exact, creates its convolutions.
  // `out_type` is the output's dtype (i32, or u8/i8 for QLinearConv). Input 0 may arrive in
  // oneDNN's channels-last layout (a layout input), and an 8-bit output is left channels-last
  // where every consumer accepts a layout (out_cl; the caller sets the output's layout).
  Status init(BuildContext& ctx, size_t iw, size_t iwz, DType out_type) {
    const Shape &x = ctx.in_shape(0), &ws = ctx.in_shape(iw);
    if (x.size() < 3 || x.size() > 5 || ws.size() != x.size())
      return ctx.error("x {} and w {} must both have rank 3, 4 or 5", shape_str(x), shape_str(ws));
    ConvGeometry geo;
    DLSYS_RETURN_IF_ERROR(conv_geometry(ctx, x, ws, &geo));
    size_t nsp = x.size() - 2, off = 3 - nsp;
    for (size_t i = 0; i < nsp; ++i) {
      in[off + i] = x[2 + i];
      k[off + i] = ws[2 + i];
      out[off + i] = geo.out[2 + i];
      s[off + i] = geo.strides[i];
      d[off + i] = geo.dilations[i] + 1;
      pad[off + i] = geo.pad_l[i];
    }
    N = x[0];
    C = x[1];
    M = ws[0];
    G = geo.group;
    Cg = C / G;
    Mg = M / G;
    kk = k[0] * k[1] * k[2];
    R = Cg * kk;
    P = out[0] * out[1] * out[2];
    x_type = ctx.in_dtype(0);
    w_type = ctx.in_dtype(iw);
    out_shape = geo.out;
    zw.assign(M, 0);
    if (int8_kernels_exact() && N > 0 && init_onednn(ctx, geo, iw, iwz, out_type))
      return Status::OK();
    if (!ctx.in_layout(0).is_zero()) ctx.convert_input(0, plain_md(x, x_type));
    w.resize(M * R);
    col.resize(R * P);
    acc.resize(N * M * P);
    std::fill(zw.begin(), zw.end(), 0);  // the loops subtract w_zp themselves
    return Status::OK();
  }

  // The oneDNN convolutions; false (the loops run) when oneDNN has no exact kernel for them.
  bool init_onednn(BuildContext& ctx, const ConvGeometry& geo, size_t iw, size_t iwz,
                   DType out_type) {
    const Shape& x = ctx.in_shape(0);
    w_shift = w_type == DType::kU8 ? 128 : 0;
    const Tensor* wv = ctx.in_value(iw);
    const Tensor* wz = ctx.has_input(iwz) ? ctx.in_value(iwz) : nullptr;
    wei_runtime = wv == nullptr;
    const Tensor* xz = ctx.has_input(2) ? ctx.in_value(2) : nullptr;
    src_zp_attr = ctx.has_input(2) && !(xz && load_q8(xz->data(), x_type, 0) == 0);
    // The correction is needed unless every zw' is known to be 0.
    has_sums = true;
    if (!ctx.has_input(iwz) || wz) {
      has_sums = false;
      for (int64_t m = 0; m < M; ++m)
        has_sums |= (wz ? load_q8(wz->data(), w_type, wz->numel() > 1 ? m : 0) : 0) != w_shift;
    }
    tag cl = channels_last_tag(x.size());
    dnnl::memory::dims xd(x.begin(), x.end()), od(out_shape.begin(), out_shape.end());
    const dnnl::memory::dims &sd = geo.strides, &dil = geo.dilations, &pl = geo.pad_l,
                             &pr = geo.pad_r;
    Status st = dnnl_try(ctx, [&] {
      dnnl::memory::desc src(xd, to_dnnl(x_type), cl), dst_md(od, dt::s32, cl);
      dnnl::primitive_attr attr = dnnl_attr();
      // A zero point known to be 0 (absent, or a constant 0: activations after a Relu) leaves
      // the attribute out, which lets oneDNN pick its brgemm kernels.
      if (src_zp_attr) attr.set_zero_points(DNNL_ARG_SRC, 0, {DNNL_RUNTIME_S32_VAL});
      auto make = [&](const dnnl::memory::dims& wdims, const dnnl::memory::desc& dmd) {
        dnnl::memory::desc wei(wdims, dt::s8, tag::any);
        dnnl::convolution_forward::desc cd(dnnl::prop_kind::forward_inference,
                                           dnnl::algorithm::convolution_direct, src, wei, dmd, sd,
                                           dil, pl, pr);
        return dnnl::convolution_forward::primitive_desc(cd, attr, dnnl_engine());
      };
      auto pd = make(geo.weights, dst_md);
      std::string impl = pd.impl_info_str();
      if (impl.rfind("ref", 0) == 0) return;  // slower than the loops
      conv.prim = dnnl::convolution_forward(pd);
      conv.add(DNNL_ARG_SRC, src);
      conv.add(DNNL_ARG_WEIGHTS, pd.weights_desc());
      conv.add(DNNL_ARG_DST, dst_md);
      if (src_zp_attr)
        conv.add(DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, plain_md({1}, DType::kI32));
      auto wei_plain = plain_md(Shape(geo.weights.begin(), geo.weights.end()), DType::kI8);
      wei_s8 = Tensor::empty(DType::kI8, {M * R});
      if (wei_runtime) {
        wei_r.init(wei_plain, pd.weights_desc());
        wei_buf = Tensor::empty(DType::kU8, {static_cast<int64_t>(pd.weights_desc().get_size())});
      } else {
        shift_weights(wv->data());
        wei_buf = reorder_once(wei_s8.data(), wei_plain, pd.weights_desc());
      }
      if (has_sums) {
        // All-ones weights with one output channel per group: [G, 1, C/G, k...] or [1, C, k...].
        dnnl::memory::dims ow = geo.weights;
        if (G > 1)
          ow[1] = 1;
        else
          ow[0] = 1;
        dnnl::memory::dims sdims = od;
        sdims[1] = G;
        dnnl::memory::desc sums_md(sdims, dt::s32, cl);
        auto opd = make(ow, sums_md);
        if (std::string(opd.impl_info_str()).rfind("ref", 0) == 0) return;
        ones.prim = dnnl::convolution_forward(opd);
        ones.add(DNNL_ARG_SRC, src);
        ones.add(DNNL_ARG_WEIGHTS, opd.weights_desc());
        ones.add(DNNL_ARG_DST, sums_md);
        if (src_zp_attr)
          ones.add(DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, plain_md({1}, DType::kI32));
        Tensor one = Tensor::empty(DType::kI8, {G * R});
        std::fill_n(one.data_as<int8_t>(), one.numel(), int8_t{1});
        ones_buf = reorder_once(one.data(), plain_md(Shape(ow.begin(), ow.end()), DType::kI8),
                                opd.weights_desc());
        sums = Tensor::empty(DType::kI32, {N * P * G});
        sums_nchw = Tensor::empty(DType::kI32, {N * P * G});
        sums_r.init(sums_md, plain_md(Shape(sdims.begin(), sdims.end()), DType::kI32));
      }
      // x in channels-last: a constant is converted here once per run; anything else by the
      // planner (a conversion step consumers share), unless it already arrives so.
      if (ctx.in_value(0)) {
        src_r.init(plain_md(x, x_type), src);
        src_buf = Tensor::empty(x_type, x);
        src_reorder = true;
      } else if (ctx.in_layout(0) != src) {
        ctx.convert_input(0, src);
      }
      dst = Tensor::empty(DType::kI32, {N * P * M});
      out_cl = out_type != DType::kI32 && ctx.output_layout_free(0);
      if (out_cl) {
        out_md = dnnl::memory::desc(od, to_dnnl(out_type), cl);
      } else {
        dst_r.init(dst_md, plain_md(out_shape, DType::kI32));
        acc.resize(N * M * P);
      }
      ctx.set_impl(impl);
      onednn = true;
    });
    return st.ok() && onednn;
  }

  // wei_s8 = w - w_shift as s8 (plain [M, C/G, k...]).
  void shift_weights(const void* wd) {
    int8_t* o = wei_s8.data_as<int8_t>();
    for (int64_t i = 0; i < M * R; ++i)
      o[i] = static_cast<int8_t>(load_q8(wd, w_type, i) - w_shift);
  }

  // Writes conv(x - x_zp, w - w_zp) (+ bias, requantized when `y.mult` is set) into y.data in
  // NCHW.
  void run(const Tensor& xt, const Tensor* xzp, const Tensor& wt, const Tensor* wzp,
           const IntConvOutput& y) {
    if (onednn) {
      run_onednn(xt, xzp, wt, wzp, y);
      return;
    }
    run_loops(xt, xzp, wt, wzp);
    finish(y, nullptr);
  }

  // acc is NCHW: each (image, channel) row of P pixels is finished into y, corrected by
  // zw'[m] times the row (image, group of m) of `sums` ([N, G, P]) when that is given.
  void finish(const IntConvOutput& y, const int32_t* sums_nchw) {
#pragma omp parallel for if (N * M * P > 65536)
    for (int64_t r = 0; r < N * M; ++r) {
      int64_t n = r / M, m = r % M;
      y.finish_row(acc.data() + r * P, sums_nchw ? sums_nchw + (n * G + m / Mg) * P : nullptr,
                   zw[m], P, m, y.slot(r * P));
    }
  }

  void run_onednn(const Tensor& xt, const Tensor* xzp, const Tensor& wt, const Tensor* wzp,
                  const IntConvOutput& y) {
    src_zp = xzp ? load_q8(xzp->data(), x_type, 0) : 0;
    bool any_zw = false;
    for (int64_t m = 0; m < M; ++m) {
      zw[m] = (wzp ? load_q8(wzp->data(), w_type, wzp->numel() > 1 ? m : 0) : 0) - w_shift;
      any_zw |= zw[m] != 0;
    }
    if (wei_runtime) {
      shift_weights(wt.data());
      wei_r.run(wei_s8.data(), wei_buf.data());
    }
    const void* src = xt.data();
    if (src_reorder) {
      src_r.run(src, src_buf.data());
      src = src_buf.data();
    }
    conv.bind(DNNL_ARG_SRC, src);
    conv.bind(DNNL_ARG_WEIGHTS, wei_buf.data());
    conv.bind(DNNL_ARG_DST, dst.data());
    if (src_zp_attr) conv.bind(DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, &src_zp);
    conv.exec();
    // has_sums is false only when every zw' is 0 (known when the plan was built).
    bool correct = has_sums && any_zw;
    if (correct) {
      ones.bind(DNNL_ARG_SRC, src);
      ones.bind(DNNL_ARG_WEIGHTS, ones_buf.data());
      ones.bind(DNNL_ARG_DST, sums.data());
      if (src_zp_attr) ones.bind(DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, &src_zp);
      ones.exec();
    }
    if (out_cl) {
      // Channels-last in and out: each pixel's M channels are finished in one contiguous row.
      const int32_t* a = dst.data_as<int32_t>();
      const int32_t* sm = correct ? sums.data_as<int32_t>() : nullptr;
#pragma omp parallel for if (N * M * P > 65536)
      for (int64_t pix = 0; pix < N * P; ++pix)
        for (int64_t g = 0; g < G; ++g)
          y.finish_channels(a + pix * M + g * Mg, sm ? sm[pix * G + g] : 0,
                            sm ? zw.data() + g * Mg : nullptr, Mg, g * Mg,
                            y.slot(pix * M + g * Mg));
      return;
    }
    // oneDNN's channels-last sums to NCHW (its jit reorder), then finished row by row.
    dst_r.run(dst.data(), acc.data());
    if (correct) sums_r.run(sums.data(), sums_nchw.data());
    finish(y, correct ? sums_nchw.data_as<int32_t>() : nullptr);
  }

  // acc = conv(x - x_zp, w - w_zp) by the loops.
  void run_loops(const Tensor& xt, const Tensor* xzp, const Tensor& wt, const Tensor* wzp) {
    int32_t xz = xzp ? load_q8(xzp->data(), x_type, 0) : 0;
    bool w_per = wzp && wzp->numel() > 1;
    for (int64_t i = 0; i < M * R; ++i)
      w[i] = load_q8(wt.data(), w_type, i) -
             (wzp ? load_q8(wzp->data(), w_type, w_per ? i / R : 0) : 0);
    const void* xd = xt.data();
    int64_t isp = in[0] * in[1] * in[2];
    for (int64_t n = 0; n < N; ++n)
      for (int64_t g = 0; g < G; ++g) {
        int64_t base = (n * C + g * Cg) * isp;
#pragma omp parallel for if (R * P > 65536)
        for (int64_t r = 0; r < R; ++r) {
          int64_t c = r / kk, q = r % kk;
          int64_t kd = q / (k[1] * k[2]), kh = (q / k[2]) % k[1], kw = q % k[2];
          int32_t* row = col.data() + r * P;
          for (int64_t od = 0; od < out[0]; ++od) {
            int64_t id = od * s[0] - pad[0] + kd * d[0];
            for (int64_t oh = 0; oh < out[1]; ++oh) {
              int64_t ih = oh * s[1] - pad[1] + kh * d[1];
              for (int64_t ow = 0; ow < out[2]; ++ow) {
                int64_t iw = ow * s[2] - pad[2] + kw * d[2];
                bool inside =
                    id >= 0 && id < in[0] && ih >= 0 && ih < in[1] && iw >= 0 && iw < in[2];
                *row++ =
                    inside
                        ? load_q8(xd, x_type, base + c * isp + (id * in[1] + ih) * in[2] + iw) - xz
                        : 0;
              }
            }
          }
        }
        gemm_s32(Mg, P, R, w.data() + g * Mg * R, R, col.data(), P,
                 acc.data() + (n * M + g * Mg) * P, P);
      }
  }
};

// Checks that input i is a scalar, or (when per_channel) 1-D with M values.
Status check_conv_param(const BuildContext& ctx, size_t i, int64_t M, bool per_channel,
                        const char* what) {
  if (!ctx.has_input(i)) return Status::OK();
  const Shape& s = ctx.in_shape(i);
  if (s.size() <= 1 && shape_numel(s) == 1) return Status::OK();
  if (per_channel && s.size() == 1 && s[0] == M) return Status::OK();
  if (per_channel)
    return ctx.error("{} must be a scalar or 1-D with {} values (one per output channel), got {}",
                     what, M, shape_str(s));
  return ctx.error("{} must be a scalar, got {}", what, shape_str(s));
}

// ConvInteger(x, w, x_zero_point?, w_zero_point?) -> int32 conv(x - x_zp, w - w_zp).
Result<KernelPtr> build_conv_integer(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kU8, DType::kI8}));
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(1, {DType::kU8, DType::kI8}));
  for (size_t i : {size_t{2}, size_t{3}})
    if (ctx.has_input(i) && ctx.in_dtype(i) != ctx.in_dtype(i - 2))
      return ctx.error("{} zero point type {} differs from {}'s type {}", i == 2 ? "x" : "w",
                       dtype_name(ctx.in_dtype(i)), i == 2 ? "x" : "w",
                       dtype_name(ctx.in_dtype(i - 2)));
  if (ctx.in_shape(0).size() >= 2 && ctx.in_shape(1).size() >= 1) {
    int64_t M = ctx.in_shape(1)[0];
    DLSYS_RETURN_IF_ERROR(check_conv_param(ctx, 2, M, false, "x_zero_point"));
    DLSYS_RETURN_IF_ERROR(check_conv_param(ctx, 3, M, true, "w_zero_point"));
  }
  auto st = std::make_shared<IntConv>();
  DLSYS_RETURN_IF_ERROR(st->init(ctx, 1, 3, DType::kI32));
  ctx.set_output(0, DType::kI32, st->out_shape);
  bool xz = ctx.has_input(2), wz = ctx.has_input(3);
  return make_kernel([st, xz, wz](const Tensor* const* in, Tensor* const* out) {
    IntConvOutput y;
    y.data = out[0]->data();
    st->run(*in[0], xz ? in[2] : nullptr, *in[1], wz ? in[3] : nullptr, y);
    return Status::OK();
  });
}

// QLinearConv(x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B?) -> u8/i8 y =
// saturate(round((conv(x - x_zp, w - w_zp) + B) · x_scale·w_scale / y_scale) + y_zp); w's scale
// and zero point per tensor or per output channel, B int32 per output channel.
Result<KernelPtr> build_qlinear_conv(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kU8, DType::kI8}));
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(3, {DType::kU8, DType::kI8}));
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(7, {DType::kU8, DType::kI8}));
  for (size_t i : {size_t{1}, size_t{4}, size_t{6}})
    DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(i, {DType::kF32}));
  if (ctx.in_dtype(2) != ctx.in_dtype(0) || ctx.in_dtype(5) != ctx.in_dtype(3))
    return ctx.error("zero point types ({}, {}) must match x's and w's ({}, {})",
                     dtype_name(ctx.in_dtype(2)), dtype_name(ctx.in_dtype(5)),
                     dtype_name(ctx.in_dtype(0)), dtype_name(ctx.in_dtype(3)));
  if (ctx.in_shape(3).empty()) return ctx.error("w must have rank 3, 4 or 5, got a scalar");
  int64_t M = ctx.in_shape(3)[0];
  DLSYS_RETURN_IF_ERROR(check_conv_param(ctx, 1, M, false, "x_scale"));
  DLSYS_RETURN_IF_ERROR(check_conv_param(ctx, 2, M, false, "x_zero_point"));
  DLSYS_RETURN_IF_ERROR(check_conv_param(ctx, 4, M, true, "w_scale"));
  DLSYS_RETURN_IF_ERROR(check_conv_param(ctx, 5, M, true, "w_zero_point"));
  DLSYS_RETURN_IF_ERROR(check_conv_param(ctx, 6, M, false, "y_scale"));
  DLSYS_RETURN_IF_ERROR(check_conv_param(ctx, 7, M, false, "y_zero_point"));
  if (ctx.has_input(8)) {
    DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(8, {DType::kI32}));
    if (ctx.in_shape(8) != Shape{M})
      return ctx.error("B must be 1-D with {} values (one per output channel), got {}", M,
                       shape_str(ctx.in_shape(8)));
  }
  auto st = std::make_shared<IntConv>();
  DType yt = ctx.in_dtype(7);
  DLSYS_RETURN_IF_ERROR(st->init(ctx, 3, 5, yt));
  ctx.set_output(0, yt, st->out_shape);
  if (st->out_cl) ctx.set_output_layout(0, st->out_md);
  bool has_bias = ctx.has_input(8);
  auto mult = std::make_shared<std::vector<double>>(M);
  return make_kernel([st, yt, has_bias, mult](const Tensor* const* in, Tensor* const* out) {
    float xs = in[1]->data_as<float>()[0], ys = in[6]->data_as<float>()[0];
    const float* ws = in[4]->data_as<float>();
    bool w_per = in[4]->numel() > 1;
    // The multiplier in float, as the spec forms it; its product with the sum in double.
    for (int64_t m = 0; m < st->M; ++m) (*mult)[m] = xs * ws[w_per ? m : 0] / ys;
    IntConvOutput y;
    y.type = yt;
    y.data = out[0]->data();
    y.mult = mult->data();
    y.bias = has_bias ? in[8]->data_as<int32_t>() : nullptr;
    y.zp = load_q8(in[7]->data(), yt, 0);
    st->run(*in[0], in[2], *in[3], in[5], y);
    return Status::OK();
  });
}

}  // namespace

void register_int_conv_ops(OpRegistry& r) {
  r.add("ConvInteger", 2, 4, 1, 1, build_conv_integer);
  r.add("QLinearConv", 8, 9, 1, 1, build_qlinear_conv);
  r.set_layout_inputs("ConvInteger", 1u);
  r.set_layout_inputs("QLinearConv", 1u);
}

}  // namespace dlsys
