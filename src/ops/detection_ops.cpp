// Object-detection ops, as plain loops (oneDNN has neither): NonMaxSuppression and RoiAlign.
//
// NonMaxSuppression's output size is the number of boxes it keeps, which depends on every input
// value. With boxes and scores known at plan time it selects them then (a constant output);
// with boxes a network computes, its output is dynamic (BuildContext::set_output_dynamic): the
// kernel selects per run and the nodes that read the selection are planned once its size is
// known. The thresholds and the per-class maximum must be known at plan time (constants, or
// small values the plan is specialized on).
#include <algorithm>
#include <cmath>
#include <numeric>

#include "ops/op_registry.h"

namespace dlsys {
namespace {

// ---- NonMaxSuppression -------------------------------------------------------------------------

struct Box {
  float y1, x1, y2, x2;  // corners, y1 <= y2 and x1 <= x2
  float area() const { return (y2 - y1) * (x2 - x1); }
};

// Box i of batch b: [y1, x1, y2, x2] with either corner first, or [xc, yc, w, h].
Box read_box(const float* b, bool center) {
  if (center) return {b[1] - b[3] / 2, b[0] - b[2] / 2, b[1] + b[3] / 2, b[0] + b[2] / 2};
  return {std::min(b[0], b[2]), std::min(b[1], b[3]), std::max(b[0], b[2]), std::max(b[1], b[3])};
}

float iou(const Box& a, const Box& b) {
  const float ih = std::min(a.y2, b.y2) - std::max(a.y1, b.y1);
  const float iw = std::min(a.x2, b.x2) - std::max(a.x1, b.x1);
  if (ih <= 0 || iw <= 0) return 0.f;
  const float inter = ih * iw;
  const float uni = a.area() + b.area() - inter;
  return uni > 0 ? inter / uni : 0.f;
}

Result<KernelPtr> build_non_max_suppression(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32}));
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(1, {DType::kF32}));
  const Shape& bs = ctx.in_shape(0);
  const Shape& ss = ctx.in_shape(1);
  if (bs.size() != 3 || bs[2] != 4)
    return ctx.error("boxes {} must be [batches, boxes, 4]", shape_str(bs));
  if (ss.size() != 3 || ss[0] != bs[0] || ss[2] != bs[1])
    return ctx.error("scores {} must be [{}, classes, {}] for boxes {}", shape_str(ss), bs[0],
                     bs[1], shape_str(bs));
  const int64_t center = ctx.attr_int("center_point_box", 0);
  if (center != 0 && center != 1)
    return ctx.error("center_point_box must be 0 or 1, got {}", center);
  int64_t max_out = 0;
  float iou_th = 0.f, score_th = 0.f;
  bool has_score_th = false;
  if (ctx.has_input(2)) {
    std::vector<int64_t> v;
    DLSYS_ASSIGN_OR_RETURN(v, ctx.const_ints(2, "max_output_boxes_per_class"));
    if (v.size() > 1)
      return ctx.error("max_output_boxes_per_class must be one value, got {}", v.size());
    if (!v.empty()) max_out = v[0];
  }
  for (size_t i = 3; i < 5; ++i) {
    if (!ctx.has_input(i)) continue;
    const char* what = i == 3 ? "iou_threshold" : "score_threshold";
    std::vector<float> v;
    DLSYS_ASSIGN_OR_RETURN(v, ctx.const_floats(i, what));
    if (v.size() > 1) return ctx.error("{} must be one value, got {}", what, v.size());
    if (v.empty()) continue;
    if (i == 3)
      iou_th = v[0];
    else
      score_th = v[0], has_score_th = true;
  }
  if (iou_th < 0 || iou_th > 1) return ctx.error("iou_threshold {} is outside [0, 1]", iou_th);
  const int64_t B = bs[0], N = bs[1], C = ss[1];
  // (batch, class, box) triples of the boxes kept, for these boxes and scores.
  auto select = [=](const Tensor& boxes, const Tensor& scores) {
    std::vector<int64_t> selected;
    std::vector<Box> bx(static_cast<size_t>(N));
    std::vector<int64_t> order, kept;
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t i = 0; i < N; ++i)
        bx[i] = read_box(boxes.data_as<float>() + (b * N + i) * 4, center == 1);
      for (int64_t c = 0; c < C; ++c) {
        const float* sc = scores.data_as<float>() + (b * C + c) * N;
        order.clear();
        for (int64_t i = 0; i < N; ++i)
          if (!has_score_th || sc[i] > score_th) order.push_back(i);
        // Highest score first; ties keep the lower box index first (as ONNX Runtime).
        std::stable_sort(order.begin(), order.end(),
                         [&](int64_t i, int64_t j) { return sc[i] > sc[j]; });
        kept.clear();
        for (int64_t i : order) {
          if (static_cast<int64_t>(kept.size()) >= max_out) break;
          bool keep = true;
          for (int64_t k : kept)
            if (iou(bx[i], bx[k]) > iou_th) {
              keep = false;
              break;
            }
          if (keep) kept.push_back(i);
        }
        for (int64_t k : kept) selected.insert(selected.end(), {b, c, k});
      }
    }
    const int64_t n = static_cast<int64_t>(selected.size()) / 3;
    return Tensor::from_i64({n, 3}, selected.data());
  };
  const Tensor* boxes = ctx.in_value(0);
  const Tensor* scores = ctx.in_value(1);
  if (boxes && scores) {
    ctx.set_output_value(0, select(*boxes, *scores));
    return make_kernel([](const Tensor* const*, Tensor* const*) { return Status::OK(); });
  }
  ctx.set_output_dynamic(0, DType::kI64);
  return make_kernel([select](const Tensor* const* in, Tensor* const* out) {
    *out[0] = select(*in[0], *in[1]);
    return Status::OK();
  });
}

// ---- RoiAlign ----------------------------------------------------------------------------------

// One bilinear sample's four taps (offsets into a [H, W] plane) and weights.
struct Tap4 {
  int64_t o[4] = {0, 0, 0, 0};
  float w[4] = {0, 0, 0, 0};
};

// ONNX Runtime's RoiAlign sample: outside [-1, H] x [-1, W] it is zero; inside, coordinates
// are clamped to the plane and the taps at the last row/column repeat.
Tap4 roi_tap(float y, float x, int64_t H, int64_t W) {
  Tap4 t;
  if (y < -1.f || y > static_cast<float>(H) || x < -1.f || x > static_cast<float>(W)) return t;
  y = std::max(y, 0.f);
  x = std::max(x, 0.f);
  int64_t y0 = static_cast<int64_t>(y), x0 = static_cast<int64_t>(x), y1, x1;
  if (y0 >= H - 1) {
    y0 = y1 = H - 1;
    y = static_cast<float>(y0);
  } else {
    y1 = y0 + 1;
  }
  if (x0 >= W - 1) {
    x0 = x1 = W - 1;
    x = static_cast<float>(x0);
  } else {
    x1 = x0 + 1;
  }
  const float ly = y - static_cast<float>(y0), lx = x - static_cast<float>(x0);
  const float hy = 1.f - ly, hx = 1.f - lx;
  t.o[0] = y0 * W + x0, t.o[1] = y0 * W + x1, t.o[2] = y1 * W + x0, t.o[3] = y1 * W + x1;
  t.w[0] = hy * hx, t.w[1] = hy * lx, t.w[2] = ly * hx, t.w[3] = ly * lx;
  return t;
}

Result<KernelPtr> build_roi_align(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32}));
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(1, {DType::kF32}));
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(2, {DType::kI64}));
  const Shape& x = ctx.in_shape(0);
  const Shape& rois = ctx.in_shape(1);
  if (x.size() != 4) return ctx.error("X {} must be [N, C, H, W]", shape_str(x));
  if (rois.size() != 2 || rois[1] != 4)
    return ctx.error("rois {} must be [num_rois, 4]", shape_str(rois));
  if (ctx.in_shape(2) != Shape{rois[0]})
    return ctx.error("batch_indices {} must be [{}]", shape_str(ctx.in_shape(2)), rois[0]);
  const std::string mode = ctx.attr_string("mode", "avg");
  if (mode != "avg" && mode != "max") return ctx.error("mode '{}' is not avg or max", mode);
  const std::string ctm = ctx.attr_string("coordinate_transformation_mode",
                                          ctx.opset() >= 16 ? "half_pixel" : "output_half_pixel");
  if (ctm != "half_pixel" && ctm != "output_half_pixel")
    return ctx.error("coordinate_transformation_mode '{}' is not half_pixel or output_half_pixel",
                     ctm);
  const int64_t oh = ctx.attr_int("output_height", 1), ow = ctx.attr_int("output_width", 1);
  const int64_t ratio = ctx.attr_int("sampling_ratio", 0);
  const float scale = ctx.attr_float("spatial_scale", 1.f);
  if (oh < 1 || ow < 1 || ratio < 0)
    return ctx.error("output_height {}, output_width {} must be >= 1 and sampling_ratio {} >= 0",
                     oh, ow, ratio);
  const int64_t R = rois[0], N = x[0], C = x[1], H = x[2], W = x[3];
  ctx.set_output(0, DType::kF32, {R, C, oh, ow});
  const bool half = ctm == "half_pixel", is_max = mode == "max";
  std::string node = ctx.node_name();
  // One accumulator per channel, sized here: the taps depend on the rois' values, so each
  // sample's taps are computed per run and applied to every channel.
  auto acc = std::make_shared<std::vector<float>>(static_cast<size_t>(C));
  return make_kernel([=](const Tensor* const* in, Tensor* const* out) {
    const float* X = in[0]->data_as<float>();
    const float* roi = in[1]->data_as<float>();
    const int64_t* bi = in[2]->data_as<int64_t>();
    float* Y = out[0]->data_as<float>();
    float* a = acc->data();
    const float off = half ? 0.5f : 0.f;
    for (int64_t r = 0; r < R; ++r) {
      const int64_t b = bi[r];
      if (b < 0 || b >= N)
        return Status::Invalid("node '{}': batch_indices[{}] is {}; it must be in [0, {})", node, r,
                               b, N);
      const float* q = roi + r * 4;
      const float x1 = q[0] * scale - off, y1 = q[1] * scale - off;
      float rw = q[2] * scale - off - x1, rh = q[3] * scale - off - y1;
      if (!half) rw = std::max(rw, 1.f), rh = std::max(rh, 1.f);
      const float bh = rh / static_cast<float>(oh), bw = rw / static_cast<float>(ow);
      const int64_t gh = ratio > 0 ? ratio : static_cast<int64_t>(std::ceil(rh / oh));
      const int64_t gw = ratio > 0 ? ratio : static_cast<int64_t>(std::ceil(rw / ow));
      const float count = static_cast<float>(std::max<int64_t>(gh * gw, 1));
      const float* img = X + b * C * H * W;
      for (int64_t ph = 0; ph < oh; ++ph)
        for (int64_t pw = 0; pw < ow; ++pw) {
          bool first = true;
          std::fill(a, a + C, 0.f);
          for (int64_t iy = 0; iy < gh; ++iy) {
            const float yy = y1 + ph * bh + (iy + 0.5f) * bh / static_cast<float>(gh);
            for (int64_t ix = 0; ix < gw; ++ix) {
              const float xx = x1 + pw * bw + (ix + 0.5f) * bw / static_cast<float>(gw);
              const Tap4 t = roi_tap(yy, xx, H, W);
              for (int64_t c = 0; c < C; ++c) {
                const float* plane = img + c * H * W;
                if (is_max) {
                  float m = t.w[0] * plane[t.o[0]];
                  for (int j = 1; j < 4; ++j) m = std::max(m, t.w[j] * plane[t.o[j]]);
                  a[c] = first ? m : std::max(a[c], m);
                } else {
                  for (int j = 0; j < 4; ++j) a[c] += t.w[j] * plane[t.o[j]];
                }
              }
              first = false;
            }
          }
          for (int64_t c = 0; c < C; ++c)
            Y[((r * C + c) * oh + ph) * ow + pw] = is_max ? a[c] : a[c] / count;
        }
    }
    return Status::OK();
  });
}

}  // namespace

void register_detection_ops(OpRegistry& r) {
  r.add("NonMaxSuppression", 2, 5, 1, 1, build_non_max_suppression);
  r.add("RoiAlign", 3, 3, 1, 1, build_roi_align);
}

}  // namespace dlsys
