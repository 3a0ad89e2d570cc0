// GridSample (opset 16): samples X [N, C, H, W] at the normalized (x, y) points of a grid
// [N, Ho, Wo, 2], giving [N, C, Ho, Wo]. A plain loop (oneDNN has no sampler) following the
// definition ONNX took from PyTorch's grid_sample: `mode` bilinear / nearest (ties to even) /
// bicubic (A = -0.75), `padding_mode` zeros / border / reflection, `align_corners`.
// Bilinear and nearest move the sample point into the image first (border, reflection);
// bicubic pads each of its 16 taps instead.
#include <algorithm>
#include <cmath>

#include "ops/op_registry.h"

namespace dlsys {
namespace {

enum class Padding { kZeros, kBorder, kReflection };

struct Axis {
  int64_t size;
  bool align;
  Padding pad;

  // Normalized [-1, 1] -> pixel coordinate.
  float unnormalize(float c) const {
    return align ? (c + 1) / 2 * static_cast<float>(size - 1)
                 : ((c + 1) * static_cast<float>(size) - 1) / 2;
  }
  float clip(float c) const { return std::min(static_cast<float>(size - 1), std::max(c, 0.f)); }
  // Reflects c about [low, high] (given doubled), as PyTorch's reflect_coordinates.
  static float reflect(float c, float twice_low, float twice_high) {
    if (twice_low == twice_high) return 0.f;
    const float lo = twice_low / 2, span = (twice_high - twice_low) / 2;
    c = std::fabs(c - lo);
    const float extra = std::fmod(c, span);
    const int64_t flips = static_cast<int64_t>(std::floor(c / span));
    return flips % 2 == 0 ? extra + lo : span - extra + lo;
  }
  // The padding mode applied to a pixel coordinate (zeros: unchanged).
  float pad_coord(float c) const {
    if (pad == Padding::kBorder) return clip(c);
    if (pad == Padding::kReflection) {
      c = align ? reflect(c, 0, 2.f * static_cast<float>(size - 1))
                : reflect(c, -1, 2.f * static_cast<float>(size) - 1);
      return clip(c);
    }
    return c;
  }
  bool inside(int64_t i) const { return i >= 0 && i < size; }
};

float cubic_near(float x, float A) {
  return ((A + 2) * x - (A + 3)) * x * x + 1;
}
float cubic_far(float x, float A) {
  return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
}

Result<KernelPtr> build_grid_sample(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32}));
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(1, {DType::kF32}));
  const Shape& x = ctx.in_shape(0);
  const Shape& g = ctx.in_shape(1);
  if (x.size() != 4)
    return ctx.unsupported("X {} is not 4-D; dlsys samples [N, C, H, W] images", shape_str(x));
  if (g.size() != 4 || g[0] != x[0] || g[3] != 2)
    return ctx.error("grid {} must be [{}, H_out, W_out, 2]", shape_str(g), x[0]);
  const std::string mode = ctx.attr_string("mode", "bilinear");
  if (mode != "bilinear" && mode != "nearest" && mode != "bicubic")
    return ctx.error("mode '{}' is not bilinear, nearest or bicubic", mode);
  const std::string pm = ctx.attr_string("padding_mode", "zeros");
  Padding pad;
  if (pm == "zeros")
    pad = Padding::kZeros;
  else if (pm == "border")
    pad = Padding::kBorder;
  else if (pm == "reflection")
    pad = Padding::kReflection;
  else
    return ctx.error("padding_mode '{}' is not zeros, border or reflection", pm);
  const bool align = ctx.attr_int("align_corners", 0) != 0;
  const int64_t N = x[0], C = x[1], H = x[2], W = x[3], Ho = g[1], Wo = g[2];
  ctx.set_output(0, DType::kF32, {N, C, Ho, Wo});
  const Axis ax{W, align, pad}, ay{H, align, pad};
  const int m = mode == "bilinear" ? 0 : mode == "nearest" ? 1 : 2;
  return make_kernel([=](const Tensor* const* in, Tensor* const* out) {
    const float* X = in[0]->data_as<float>();
    const float* G = in[1]->data_as<float>();
    float* Y = out[0]->data_as<float>();
    for (int64_t n = 0; n < N; ++n)
      for (int64_t p = 0; p < Ho * Wo; ++p) {
        const float gx = G[(n * Ho * Wo + p) * 2], gy = G[(n * Ho * Wo + p) * 2 + 1];
        for (int64_t c = 0; c < C; ++c) {
          const float* plane = X + (n * C + c) * H * W;
          auto value = [&](int64_t yi, int64_t xi) {
            return ax.inside(xi) && ay.inside(yi) ? plane[yi * W + xi] : 0.f;
          };
          float v = 0;
          if (m == 0) {
            const float ix = ax.pad_coord(ax.unnormalize(gx));
            const float iy = ay.pad_coord(ay.unnormalize(gy));
            const int64_t x0 = static_cast<int64_t>(std::floor(ix));
            const int64_t y0 = static_cast<int64_t>(std::floor(iy));
            const float lx = ix - static_cast<float>(x0), ly = iy - static_cast<float>(y0);
            v = value(y0, x0) * (1 - lx) * (1 - ly) + value(y0, x0 + 1) * lx * (1 - ly) +
                value(y0 + 1, x0) * (1 - lx) * ly + value(y0 + 1, x0 + 1) * lx * ly;
          } else if (m == 1) {
            const float ix = ax.pad_coord(ax.unnormalize(gx));
            const float iy = ay.pad_coord(ay.unnormalize(gy));
            v = value(static_cast<int64_t>(std::nearbyint(iy)),
                      static_cast<int64_t>(std::nearbyint(ix)));
          } else {
            const float ix = ax.unnormalize(gx), iy = ay.unnormalize(gy);
            const float fx = std::floor(ix), fy = std::floor(iy);
            const float tx = ix - fx, ty = iy - fy;
            const float A = -0.75f;
            const float cx[4] = {cubic_far(tx + 1, A), cubic_near(tx, A), cubic_near(1 - tx, A),
                                 cubic_far(2 - tx, A)};
            const float cy[4] = {cubic_far(ty + 1, A), cubic_near(ty, A), cubic_near(1 - ty, A),
                                 cubic_far(2 - ty, A)};
            for (int j = 0; j < 4; ++j) {
              const int64_t yi = static_cast<int64_t>(ay.pad_coord(fy - 1 + static_cast<float>(j)));
              float row = 0;
              for (int i = 0; i < 4; ++i) {
                const int64_t xi =
                    static_cast<int64_t>(ax.pad_coord(fx - 1 + static_cast<float>(i)));
                row += cx[i] * value(yi, xi);
              }
              v += cy[j] * row;
            }
          }
          Y[((n * C + c) * Ho * Wo) + p] = v;
        }
      }
    return Status::OK();
  });
}

}  // namespace

void register_grid_sample_ops(OpRegistry& r) {
  r.add("GridSample", 2, 2, 1, 1, build_grid_sample);
}

}  // namespace dlsys
