// Resize (opsets 13-17, also what Upsample becomes after the version converter), as separable
// 1-D passes.
//
// Resize(X, roi?, scales?, sizes?): the output shape is `sizes`, or floor(X.shape * scales).
// Each output coordinate x of a dimension maps back to x_original by
// `coordinate_transformation_mode` (half_pixel, pytorch_half_pixel, align_corners, asymmetric,
// tf_half_pixel_for_nn, tf_crop_and_resize with `roi`), and takes its value from the taps around
// x_original: `mode` nearest (one tap, rounded by `nearest_mode`), linear (two), or cubic (four,
// Keys' kernel with `cubic_coeff_a`; `exclude_outside` drops taps outside the input and
// renormalizes). Taps past an edge repeat the edge value; tf_crop_and_resize gives
// `extrapolation_value` where x_original falls outside the input. These are the ONNX reference's
// rules (onnx/reference/ops/op_resize.py), including its "left pixel" convention: an integer
// x_original interpolates between x_original - 1 and x_original with ratio 1.
//
// The taps of every output index of every dimension are computed when the plan is built (roi,
// scales and sizes must be known then); run() applies one pass per dimension whose taps are not
// the identity, between two buffers made at build time. An n-linear or n-cubic Resize is the
// product of its 1-D interpolations, so the passes give the same values as the reference's
// nested form (and the extrapolation value survives later passes: every tap set sums to 1).
#include <cmath>

#include "ops/op_registry.h"

namespace dlsys {
namespace {

enum class Mode { kNearest, kLinear, kCubic };
enum class Transform {
  kHalfPixel,
  kPytorchHalfPixel,
  kAlignCorners,
  kAsymmetric,
  kTfHalfPixelForNn,
  kTfCropAndResize
};
enum class NearestMode { kRoundPreferFloor, kRoundPreferCeil, kFloor, kCeil };

// The taps of one dimension: for output index o, `k` input indices idx[o*k + t] (already clamped
// to the input) with weights w[o*k + t]; outside[o] means the extrapolation value.
struct DimTaps {
  int64_t in = 0, out = 0, k = 1;
  std::vector<int64_t> idx;
  std::vector<float> w;
  std::vector<char> outside;
  bool identity() const {
    if (in != out) return false;
    for (int64_t o = 0; o < out; ++o) {
      if (outside[o]) return false;
      for (int64_t t = 0; t < k; ++t) {
        const float want = idx[o * k + t] == o ? 1.f : 0.f;
        // Several taps may clamp onto index o: their weights add up.
        if (want == 0.f && w[o * k + t] != 0.f) return false;
      }
      float sum = 0;
      for (int64_t t = 0; t < k; ++t)
        if (idx[o * k + t] == o) sum += w[o * k + t];
      if (sum != 1.f) return false;
    }
    return true;
  }
};

struct ResizeAttrs {
  Mode mode = Mode::kNearest;
  Transform transform = Transform::kHalfPixel;
  NearestMode nearest = NearestMode::kRoundPreferFloor;
  double cubic_a = -0.75;
  bool exclude_outside = false;
  float extrapolation = 0.f;
};

Result<ResizeAttrs> read_attrs(BuildContext& ctx) {
  ResizeAttrs a;
  const std::string mode = ctx.attr_string("mode", "nearest");
  if (mode == "nearest")
    a.mode = Mode::kNearest;
  else if (mode == "linear")
    a.mode = Mode::kLinear;
  else if (mode == "cubic")
    a.mode = Mode::kCubic;
  else
    return ctx.error("mode '{}' is not one of nearest, linear, cubic", mode);
  const std::string tr = ctx.attr_string("coordinate_transformation_mode", "half_pixel");
  static const std::pair<const char*, Transform> transforms[] = {
      {"half_pixel", Transform::kHalfPixel},
      {"pytorch_half_pixel", Transform::kPytorchHalfPixel},
      {"align_corners", Transform::kAlignCorners},
      {"asymmetric", Transform::kAsymmetric},
      {"tf_half_pixel_for_nn", Transform::kTfHalfPixelForNn},
      {"tf_crop_and_resize", Transform::kTfCropAndResize}};
  bool found = false;
  for (const auto& [name, t] : transforms)
    if (tr == name) a.transform = t, found = true;
  if (!found)
    return ctx.error(
        "coordinate_transformation_mode '{}' is not one of half_pixel, pytorch_half_pixel, "
        "align_corners, asymmetric, tf_half_pixel_for_nn, tf_crop_and_resize",
        tr);
  const std::string nm = ctx.attr_string("nearest_mode", "round_prefer_floor");
  if (nm == "round_prefer_floor")
    a.nearest = NearestMode::kRoundPreferFloor;
  else if (nm == "round_prefer_ceil")
    a.nearest = NearestMode::kRoundPreferCeil;
  else if (nm == "floor")
    a.nearest = NearestMode::kFloor;
  else if (nm == "ceil")
    a.nearest = NearestMode::kCeil;
  else
    return ctx.error(
        "nearest_mode '{}' is not one of round_prefer_floor, round_prefer_ceil, "
        "floor, ceil",
        nm);
  a.cubic_a = ctx.attr_float("cubic_coeff_a", -0.75f);
  a.exclude_outside = ctx.attr_int("exclude_outside", 0) != 0;
  a.extrapolation = ctx.attr_float("extrapolation_value", 0.f);
  if (ctx.has_attr("antialias") && ctx.attr_int("antialias", 0) != 0)
    return ctx.unsupported("antialias=1 is not supported");
  return a;
}

// The taps of one dimension of `in` elements resized to `out` by `scale` (output_width =
// scale * in, as the reference computes it, which differs from `out` when floor() cut it);
// roi_start/roi_end for tf_crop_and_resize.
DimTaps dim_taps(const ResizeAttrs& a, int64_t in, int64_t out, double scale, double roi_start,
                 double roi_end) {
  DimTaps d;
  d.in = in;
  d.out = out;
  d.k = a.mode == Mode::kCubic ? 4 : (a.mode == Mode::kLinear ? 2 : 1);
  d.idx.resize(static_cast<size_t>(out * d.k));
  d.w.resize(static_cast<size_t>(out * d.k));
  d.outside.assign(static_cast<size_t>(out), 0);
  const double width = scale * static_cast<double>(in);
  for (int64_t o = 0; o < out; ++o) {
    const double x = static_cast<double>(o);
    double xo = 0;
    switch (a.transform) {
      case Transform::kHalfPixel:
        xo = (x + 0.5) / scale - 0.5;
        break;
      case Transform::kPytorchHalfPixel:
        xo = width > 1 ? (x + 0.5) / scale - 0.5 : 0.0;
        break;
      case Transform::kAlignCorners:
        xo = width == 1 ? 0.0 : x * static_cast<double>(in - 1) / (width - 1);
        break;
      case Transform::kAsymmetric:
        xo = x / scale;
        break;
      case Transform::kTfHalfPixelForNn:
        xo = (x + 0.5) / scale;
        break;
      case Transform::kTfCropAndResize:
        xo = width > 1 ? roi_start * static_cast<double>(in - 1) +
                             x * (roi_end - roi_start) * static_cast<double>(in - 1) / (width - 1)
                       : 0.5 * (roi_start + roi_end) * static_cast<double>(in - 1);
        if (xo < 0 || xo > static_cast<double>(in - 1)) d.outside[static_cast<size_t>(o)] = 1;
        break;
    }
    // The left pixel and the ratio in (0, 1] (an integer xo is its right neighbour's ratio 1).
    const double left = std::ceil(xo) - 1;
    const double ratio = xo - left;
    auto clamp = [&](double i) {
      return static_cast<int64_t>(std::min<double>(std::max<double>(i, 0), in - 1));
    };
    int64_t* idx = &d.idx[static_cast<size_t>(o * d.k)];
    float* w = &d.w[static_cast<size_t>(o * d.k)];
    if (a.mode == Mode::kNearest) {
      bool right = true;  // an integer xo is its own (right) pixel
      if (ratio < 1) {
        switch (a.nearest) {
          case NearestMode::kRoundPreferFloor:
            right = ratio > 0.5;
            break;
          case NearestMode::kRoundPreferCeil:
            right = ratio >= 0.5;
            break;
          case NearestMode::kFloor:
            right = false;
            break;
          case NearestMode::kCeil:
            right = true;
            break;
        }
      }
      idx[0] = clamp(right ? left + 1 : left);
      w[0] = 1.f;
    } else if (a.mode == Mode::kLinear) {
      idx[0] = clamp(left);
      idx[1] = clamp(left + 1);
      w[0] = static_cast<float>(1 - ratio);
      w[1] = static_cast<float>(ratio);
    } else {
      const double A = a.cubic_a, t = ratio, s = 1 - ratio;
      double c[4] = {((A * (t + 1) - 5 * A) * (t + 1) + 8 * A) * (t + 1) - 4 * A,
                     ((A + 2) * t - (A + 3)) * t * t + 1, ((A + 2) * s - (A + 3)) * s * s + 1,
                     ((A * (s + 1) - 5 * A) * (s + 1) + 8 * A) * (s + 1) - 4 * A};
      if (a.exclude_outside) {
        double sum = 0;
        for (int j = 0; j < 4; ++j) {
          const double i = left - 1 + j;
          if (i < 0 || i > static_cast<double>(in - 1)) c[j] = 0;
          sum += c[j];
        }
        for (double& v : c) v = sum != 0 ? v / sum : 0;
      }
      for (int j = 0; j < 4; ++j) {
        idx[j] = clamp(left - 1 + j);
        w[j] = static_cast<float>(c[j]);
      }
    }
  }
  return d;
}

Result<KernelPtr> build_resize(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32}));
  ResizeAttrs a;
  DLSYS_ASSIGN_OR_RETURN(a, read_attrs(ctx));
  const Shape& x = ctx.in_shape(0);
  const size_t rank = x.size();
  std::vector<float> scales, roi;
  std::vector<int64_t> sizes;
  if (ctx.has_input(3) && shape_numel(ctx.in_shape(3)) > 0) {
    DLSYS_ASSIGN_OR_RETURN(sizes, ctx.const_ints(3, "sizes"));
    if (sizes.size() != rank)
      return ctx.error("sizes has {} values for a rank-{} input {}", sizes.size(), rank,
                       shape_str(x));
  } else if (ctx.has_input(2) && shape_numel(ctx.in_shape(2)) > 0) {
    DLSYS_ASSIGN_OR_RETURN(scales, ctx.const_floats(2, "scales"));
    if (scales.size() != rank)
      return ctx.error("scales has {} values for a rank-{} input {}", scales.size(), rank,
                       shape_str(x));
  } else {
    return ctx.error("needs scales (input 2) or sizes (input 3)");
  }
  if (a.transform == Transform::kTfCropAndResize) {
    if (!ctx.has_input(1) || shape_numel(ctx.in_shape(1)) == 0)
      return ctx.error("coordinate_transformation_mode tf_crop_and_resize needs roi (input 1)");
    DLSYS_ASSIGN_OR_RETURN(roi, ctx.const_floats(1, "roi"));
    if (roi.size() != 2 * rank)
      return ctx.error("roi has {} values; a rank-{} input needs {} (starts, then ends)",
                       roi.size(), rank, 2 * rank);
  }
  Shape y(rank);
  std::vector<DimTaps> passes;
  std::vector<size_t> pass_dims;
  for (size_t i = 0; i < rank; ++i) {
    double scale;
    if (!sizes.empty()) {
      if (sizes[i] < 0) return ctx.error("sizes[{}] is negative ({})", i, sizes[i]);
      y[i] = sizes[i];
      scale = x[i] > 0 ? static_cast<double>(sizes[i]) / static_cast<double>(x[i]) : 1.0;
    } else {
      if (!(scales[i] > 0)) return ctx.error("scales[{}] must be positive, got {}", i, scales[i]);
      scale = scales[i];
      y[i] = static_cast<int64_t>(std::floor(static_cast<double>(x[i]) * scale));
    }
    if (x[i] == 0 || y[i] == 0) continue;
    DimTaps d = dim_taps(a, x[i], y[i], scale, roi.empty() ? 0.0 : roi[i],
                         roi.empty() ? 1.0 : roi[rank + i]);
    if (d.identity()) continue;
    passes.push_back(std::move(d));
    pass_dims.push_back(i);
  }
  ctx.set_output(0, DType::kF32, y);
  if (shape_numel(y) == 0 || shape_numel(x) == 0)
    return make_kernel([](const Tensor* const*, Tensor* const*) { return Status::OK(); });
  // The shapes between passes, and two buffers for them (the last pass writes the output).
  std::vector<Shape> shapes = {x};
  size_t biggest = 0;
  for (size_t p = 0; p < passes.size(); ++p) {
    Shape s = shapes.back();
    s[pass_dims[p]] = passes[p].out;
    shapes.push_back(s);
    if (p + 1 < passes.size()) biggest = std::max(biggest, static_cast<size_t>(shape_numel(s)));
  }
  auto buffers = std::make_shared<std::vector<std::vector<float>>>(2, std::vector<float>(biggest));
  const float extrap = a.extrapolation;
  auto plan = std::make_shared<std::vector<DimTaps>>(std::move(passes));
  return make_kernel(
      [plan, pass_dims, shapes, buffers, extrap](const Tensor* const* in, Tensor* const* out) {
        const float* src = in[0]->data_as<float>();
        float* dst_final = out[0]->data_as<float>();
        if (plan->empty()) {
          std::copy(src, src + in[0]->numel(), dst_final);
          return Status::OK();
        }
        for (size_t p = 0; p < plan->size(); ++p) {
          const DimTaps& d = (*plan)[p];
          const Shape& s = shapes[p];
          int64_t outer = 1, inner = 1;
          for (size_t i = 0; i < pass_dims[p]; ++i) outer *= s[i];
          for (size_t i = pass_dims[p] + 1; i < s.size(); ++i) inner *= s[i];
          float* dst = p + 1 == plan->size() ? dst_final : (*buffers)[p % 2].data();
          for (int64_t a = 0; a < outer; ++a) {
            const float* xs = src + a * d.in * inner;
            float* ys = dst + a * d.out * inner;
            for (int64_t o = 0; o < d.out; ++o) {
              float* yrow = ys + o * inner;
              if (d.outside[static_cast<size_t>(o)]) {
                std::fill(yrow, yrow + inner, extrap);
                continue;
              }
              const int64_t* idx = &d.idx[static_cast<size_t>(o * d.k)];
              const float* w = &d.w[static_cast<size_t>(o * d.k)];
              const float* x0 = xs + idx[0] * inner;
              for (int64_t b = 0; b < inner; ++b) yrow[b] = w[0] * x0[b];
              for (int64_t t = 1; t < d.k; ++t) {
                const float* xt = xs + idx[t] * inner;
                const float wt = w[t];
                for (int64_t b = 0; b < inner; ++b) yrow[b] += wt * xt[b];
              }
            }
          }
          src = dst;
        }
        return Status::OK();
      });
}

}  // namespace

void register_resize_ops(OpRegistry& r) {
  r.add("Resize", 1, 4, 1, 1, build_resize);
}

}  // namespace dlsys
