// QuantizeLinear and DequantizeLinear (ONNX opset 13): per-tensor or per-axis scales and zero
// points, u8/i8 quantized values (i32 too for DequantizeLinear, as quantized biases use).
// Loops on plain data (vectorized for a per-tensor scale); a value arriving in a oneDNN layout
// (the int8 convolution chain's output) is converted by a oneDNN reorder with scales when the
// zero point is 0, else reordered to plain first. Rounding is to nearest even, as the spec says.
// DynamicQuantizeLinear (u8, scale and zero point from the input's range) is a min/max pass and
// the per-tensor quantize loop.
#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/dnnl_util.h"
#include "ops/op_registry.h"

namespace dlsys {
namespace {

// Scale and zero point of one Q/DQ node, resolved for the input shape.
struct QuantParams {
  int64_t axis_dim = 1, inner = 1;  // per-axis: element i uses index (i / inner) % axis_dim
  bool per_axis = false;
  DType qtype = DType::kU8;
};

// Checks scale (input 1) and zero point (input 2) against x (input 0) and the axis attribute.
Status read_quant_params(const BuildContext& ctx, DType qtype_default, QuantParams* q) {
  const Shape& x = ctx.in_shape(0);
  const Shape& s = ctx.in_shape(1);
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(1, {DType::kF32}));
  q->qtype = qtype_default;
  if (ctx.has_input(2)) {
    q->qtype = ctx.in_dtype(2);
    if (ctx.in_shape(2) != s)
      return ctx.error("zero point shape {} differs from scale shape {}",
                       shape_str(ctx.in_shape(2)), shape_str(s));
  }
  if (shape_numel(s) == 1 && s.size() <= 1) return Status::OK();
  if (s.size() != 1)
    return ctx.error("scale must be a scalar or 1-D (per-axis), got {}", shape_str(s));
  int64_t r = static_cast<int64_t>(x.size());
  int64_t axis = ctx.attr_int("axis", 1);
  if (axis < -r || axis >= r) return ctx.error("axis {} is out of range for rank {}", axis, r);
  if (axis < 0) axis += r;
  if (x[axis] != s[0])
    return ctx.error("per-axis scale has {} values, but axis {} of {} has {}", s[0], axis,
                     shape_str(x), x[axis]);
  q->per_axis = true;
  q->axis_dim = s[0];
  for (int64_t d = axis + 1; d < r; ++d) q->inner *= x[d];
  return Status::OK();
}

// Runs body(begin, end) over [0, n) in chunks, split across the team when n is large: the body's
// loop is the one that vectorizes.
template <typename F>
void for_chunks(int64_t n, F body) {
  constexpr int64_t kChunk = 16384;
  int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for if (n > 65536)
  for (int64_t c = 0; c < chunks; ++c) body(c * kChunk, std::min(n, (c + 1) * kChunk));
}

template <typename Q>
void quantize_loop(const float* x, Q* y, int64_t n, const float* scale, const Q* zp,
                   const QuantParams& p) {
  constexpr float lo = std::numeric_limits<Q>::min(), hi = std::numeric_limits<Q>::max();
  if (!p.per_axis) {  // one scale: a loop the compiler vectorizes (division and rounding too)
    float s = scale[0], z = zp ? static_cast<float>(zp[0]) : 0.f;
    for_chunks(n, [x, y, s, z](int64_t b, int64_t e) {
      // Locals: stores through Q* (a char type) may alias the closure's members.
      const float* xs = x;
      Q* ys = y;
      float sv = s, zv = z, lov = lo, hiv = hi;
#pragma omp simd
      for (int64_t i = b; i < e; ++i)
        ys[i] = static_cast<Q>(std::min(hiv, std::max(lov, std::nearbyint(xs[i] / sv) + zv)));
    });
    return;
  }
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    int64_t c = (i / p.inner) % p.axis_dim;
    float v = std::nearbyint(x[i] / scale[c]) + (zp ? static_cast<float>(zp[c]) : 0.f);
    y[i] = static_cast<Q>(std::min(hi, std::max(lo, v)));
  }
}

template <typename Q>
void dequantize_loop(const Q* x, float* y, int64_t n, const float* scale, const Q* zp,
                     const QuantParams& p) {
  if (!p.per_axis && sizeof(Q) == 1) {  // 8-bit values: x - zp is exact in int32
    float s = scale[0];
    int32_t z = zp ? static_cast<int32_t>(zp[0]) : 0;
    for_chunks(n, [&](int64_t b, int64_t e) {
#pragma omp simd
      for (int64_t i = b; i < e; ++i) y[i] = static_cast<float>(static_cast<int32_t>(x[i]) - z) * s;
    });
    return;
  }
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    int64_t c = p.per_axis ? (i / p.inner) % p.axis_dim : 0;
    int64_t z = zp ? static_cast<int64_t>(zp[c]) : 0;
    y[i] = static_cast<float>(static_cast<int64_t>(x[i]) - z) * scale[c];
  }
}

bool zero_point_is_zero(const BuildContext& ctx) {
  const Tensor* z = ctx.in_value(2);
  if (!ctx.has_input(2)) return true;
  if (!z) return false;
  for (int64_t i = 0; i < z->numel(); ++i)
    if (z->get_i64(i) != 0) return false;
  return true;
}

// The layout path: x arrives blocked. With known scales and a zero zero-point, one oneDNN
// reorder converts in place of the loop and keeps the layout; otherwise reorder to plain first.
struct LayoutQuant {
  bool direct = false;
  DnnlReorder direct_r, to_plain_r;
  Tensor plain;  // plain copy of x (indirect path)
};

// Prepares `lq` for input 0 in a oneDNN layout; `out_dtype` is the output's dtype, `invert`
// uses 1/scale (quantize). Sets the output's layout when the direct path applies.
Status prepare_layout(BuildContext& ctx, DType out_dtype, bool invert, const QuantParams& qp,
                      LayoutQuant* lq) {
  const Tensor* scale = ctx.in_value(1);
  return dnnl_try(ctx, [&] {
    const dnnl::memory::desc& src = ctx.in_layout(0);
    if (scale && zero_point_is_zero(ctx)) {
      std::vector<float> s(scale->numel());
      for (int64_t i = 0; i < scale->numel(); ++i) {
        float v = scale->data_as<float>()[i];
        s[i] = invert ? 1.f / v : v;
      }
      dnnl_memory_desc_t d = src.data;
      d.data_type = static_cast<dnnl_data_type_t>(to_dnnl(out_dtype));
      dnnl::memory::desc dst(d);
      dnnl::primitive_attr attr = dnnl_attr();
      int mask = 0;
      if (qp.per_axis) {
        int64_t r = static_cast<int64_t>(ctx.in_shape(0).size());
        int64_t a = ctx.attr_int("axis", 1);
        if (a < 0) a += r;
        mask = 1 << a;
      }
      attr.set_output_scales(mask, s);
      lq->direct_r.call.prim = dnnl::reorder(
          dnnl::reorder::primitive_desc(dnnl_engine(), src, dnnl_engine(), dst, attr));
      lq->direct_r.call.add(DNNL_ARG_FROM, src);
      lq->direct_r.call.add(DNNL_ARG_TO, dst);
      lq->direct = true;
      ctx.set_output_layout(0, dst);
    } else {
      lq->to_plain_r.init(src, plain_md(ctx.in_shape(0), ctx.in_dtype(0)));
      lq->plain = Tensor::empty(ctx.in_dtype(0), ctx.in_shape(0));
    }
  });
}

Result<KernelPtr> build_quantize(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32}));
  QuantParams qp;
  DLSYS_RETURN_IF_ERROR(read_quant_params(ctx, DType::kU8, &qp));
  if (qp.qtype != DType::kU8 && qp.qtype != DType::kI8)
    return ctx.unsupported("zero point type {} (QuantizeLinear outputs u8 or i8 here)",
                           dtype_name(qp.qtype));
  ctx.set_output(0, qp.qtype, ctx.in_shape(0));
  auto lq = std::make_shared<LayoutQuant>();
  if (!ctx.in_layout(0).is_zero())
    DLSYS_RETURN_IF_ERROR(prepare_layout(ctx, qp.qtype, /*invert=*/true, qp, lq.get()));
  bool has_zp = ctx.has_input(2);
  return make_kernel([qp, has_zp, lq](const Tensor* const* in, Tensor* const* out) {
    if (lq->direct) {
      lq->direct_r.run(in[0]->data(), out[0]->data());
      return Status::OK();
    }
    const float* x = in[0]->data_as<float>();
    if (lq->plain.valid() && lq->plain.data()) {
      lq->to_plain_r.run(x, lq->plain.data());
      dnnl_stream().wait();
      x = lq->plain.data_as<float>();
    }
    const float* s = in[1]->data_as<float>();
    int64_t n = out[0]->numel();
    if (qp.qtype == DType::kU8)
      quantize_loop(x, out[0]->data_as<uint8_t>(), n, s,
                    has_zp ? in[2]->data_as<uint8_t>() : nullptr, qp);
    else
      quantize_loop(x, out[0]->data_as<int8_t>(), n, s, has_zp ? in[2]->data_as<int8_t>() : nullptr,
                    qp);
    return Status::OK();
  });
}

Result<KernelPtr> build_dequantize(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kU8, DType::kI8, DType::kI32}));
  QuantParams qp;
  DLSYS_RETURN_IF_ERROR(read_quant_params(ctx, ctx.in_dtype(0), &qp));
  if (ctx.has_input(2) && qp.qtype != ctx.in_dtype(0))
    return ctx.error("zero point type {} differs from x's type {}", dtype_name(qp.qtype),
                     dtype_name(ctx.in_dtype(0)));
  DType t = ctx.in_dtype(0);
  ctx.set_output(0, DType::kF32, ctx.in_shape(0));
  auto lq = std::make_shared<LayoutQuant>();
  if (!ctx.in_layout(0).is_zero())
    DLSYS_RETURN_IF_ERROR(prepare_layout(ctx, DType::kF32, /*invert=*/false, qp, lq.get()));
  bool has_zp = ctx.has_input(2);
  return make_kernel([qp, has_zp, lq, t](const Tensor* const* in, Tensor* const* out) {
    if (lq->direct) {
      lq->direct_r.run(in[0]->data(), out[0]->data());
      return Status::OK();
    }
    const void* x = in[0]->data();
    if (lq->plain.valid() && lq->plain.data()) {
      lq->to_plain_r.run(x, lq->plain.data());
      dnnl_stream().wait();
      x = lq->plain.data();
    }
    const float* s = in[1]->data_as<float>();
    float* y = out[0]->data_as<float>();
    int64_t n = out[0]->numel();
    const void* zp = has_zp ? in[2]->data() : nullptr;
    if (t == DType::kU8)
      dequantize_loop(static_cast<const uint8_t*>(x), y, n, s, static_cast<const uint8_t*>(zp), qp);
    else if (t == DType::kI8)
      dequantize_loop(static_cast<const int8_t*>(x), y, n, s, static_cast<const int8_t*>(zp), qp);
    else
      dequantize_loop(static_cast<const int32_t*>(x), y, n, s, static_cast<const int32_t*>(zp), qp);
    return Status::OK();
  });
}

// DynamicQuantizeLinear(x) -> (y u8, y_scale, y_zero_point): the u8 range [0, 255] spread over
// [min(0, min x), max(0, max x)] (scale 1/255 when both are 0), zero point rounded half to even,
// every step in float as the spec computes it.
Result<KernelPtr> build_dynamic_quantize(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32}));
  ctx.set_output(0, DType::kU8, ctx.in_shape(0));
  ctx.set_output(1, DType::kF32, {});
  ctx.set_output(2, DType::kU8, {});
  return make_kernel([](const Tensor* const* in, Tensor* const* out) {
    const float* x = in[0]->data_as<float>();
    int64_t n = in[0]->numel();
    float lo = 0.f, hi = 0.f;
#pragma omp parallel for simd reduction(min : lo) reduction(max : hi) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) {
      lo = std::min(lo, x[i]);
      hi = std::max(hi, x[i]);
    }
    float scale = (hi == lo ? 1.f : hi - lo) / 255.f;
    float zp = std::nearbyint(std::min(255.f, std::max(0.f, 0.f - lo / scale)));
    out[1]->data_as<float>()[0] = scale;
    out[2]->data_as<uint8_t>()[0] = static_cast<uint8_t>(zp);
    QuantParams per_tensor;
    quantize_loop(x, out[0]->data_as<uint8_t>(), n, out[1]->data_as<float>(),
                  out[2]->data_as<uint8_t>(), per_tensor);
    return Status::OK();
  });
}

}  // namespace

void register_quant_ops(OpRegistry& r) {
  r.add("DynamicQuantizeLinear", 1, 1, 3, 3, build_dynamic_quantize);
  r.add("QuantizeLinear", 2, 3, 1, 1, build_quantize);
  r.add("DequantizeLinear", 2, 3, 1, 1, build_dequantize);
  r.set_layout_inputs("QuantizeLinear", 1u);
  r.set_layout_inputs("DequantizeLinear", 1u);
}

}  // namespace dlsys
