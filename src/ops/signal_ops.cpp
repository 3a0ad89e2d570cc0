// Signal processing ops (opset 17): HannWindow, HammingWindow, BlackmanWindow, MelWeightMatrix,
// DFT and STFT.
//
// The windows and the mel matrix depend only on scalar inputs that fix their shapes, so they
// are computed when the plan is built (in double, rounded once to f32). DFT and STFT are plain
// loops (oneDNN has no transform): a direct O(n^2) transform per signal over twiddle factors
// computed once at plan time in double; fine for the short frames of audio front ends, slow for
// long signals. Complex values are a trailing dimension of 2 (real, imaginary), as ONNX has them.
#include <algorithm>
#include <cmath>

#include "ops/op_registry.h"

namespace dlsys {
namespace {

constexpr double kPi = 3.14159265358979323846;

KernelPtr no_kernel() {
  return make_kernel([](const Tensor* const*, Tensor* const*) { return Status::OK(); });
}

// One scalar integer input known at plan time.
Result<int64_t> const_scalar_int(BuildContext& ctx, size_t i, const char* what) {
  std::vector<int64_t> v;
  DLSYS_ASSIGN_OR_RETURN(v, ctx.const_ints(i, what));
  if (v.size() != 1) return ctx.error("{} (input {}) must be one value, got {}", what, i, v.size());
  return v[0];
}

Status expect_f32_output(BuildContext& ctx) {
  const int64_t t = ctx.attr_int("output_datatype", 1);
  if (t != 1)
    return ctx.unsupported("output_datatype {} ({}); dlsys computes these in float (1)", t,
                           onnx_type_name(static_cast<int>(t)));
  return Status::OK();
}

// ---- Windows -----------------------------------------------------------------------------------

// w[n] = a0 - a1 cos(2 pi n / N) + a2 cos(4 pi n / N), N = size (periodic) or size - 1.
Result<KernelPtr> build_window(BuildContext& ctx, double a0, double a1, double a2) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kI32, DType::kI64}));
  DLSYS_RETURN_IF_ERROR(expect_f32_output(ctx));
  int64_t size;
  DLSYS_ASSIGN_OR_RETURN(size, const_scalar_int(ctx, 0, "size"));
  if (size < 0) return ctx.error("size must be >= 0, got {}", size);
  const bool periodic = ctx.attr_int("periodic", 1) != 0;
  const double N = static_cast<double>(periodic ? size : size - 1);
  Tensor w = Tensor::empty(DType::kF32, {size});
  for (int64_t n = 0; n < size; ++n) {
    // A symmetric window of one sample has N = 0: its one value is the centre's, 1.
    const double t = N > 0 ? static_cast<double>(n) / N : 0.0;
    w.data_as<float>()[n] =
        N > 0 ? static_cast<float>(a0 - a1 * std::cos(2 * kPi * t) + a2 * std::cos(4 * kPi * t))
              : 1.f;
  }
  ctx.set_output_value(0, std::move(w));
  return no_kernel();
}

Result<KernelPtr> build_hann(BuildContext& ctx) {
  return build_window(ctx, 0.5, 0.5, 0);
}
Result<KernelPtr> build_hamming(BuildContext& ctx) {
  return build_window(ctx, 25.0 / 46, 21.0 / 46, 0);
}
Result<KernelPtr> build_blackman(BuildContext& ctx) {
  return build_window(ctx, 0.42, 0.5, 0.08);
}

// ---- MelWeightMatrix ---------------------------------------------------------------------------

// Triangular filters over the DFT bins, as the ONNX definition computes them: num_mel_bins + 2
// points evenly spaced in mel between the edges, mapped to bins floor((dft_length + 1) f / rate).
Result<KernelPtr> build_mel_weight_matrix(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(expect_f32_output(ctx));
  int64_t bins, dft, rate;
  DLSYS_ASSIGN_OR_RETURN(bins, const_scalar_int(ctx, 0, "num_mel_bins"));
  DLSYS_ASSIGN_OR_RETURN(dft, const_scalar_int(ctx, 1, "dft_length"));
  DLSYS_ASSIGN_OR_RETURN(rate, const_scalar_int(ctx, 2, "sample_rate"));
  std::vector<float> lo, hi;
  DLSYS_ASSIGN_OR_RETURN(lo, ctx.const_floats(3, "lower_edge_hertz"));
  DLSYS_ASSIGN_OR_RETURN(hi, ctx.const_floats(4, "upper_edge_hertz"));
  if (lo.size() != 1 || hi.size() != 1)
    return ctx.error("lower_edge_hertz and upper_edge_hertz must be one value each");
  if (bins < 1 || dft < 1 || rate < 1)
    return ctx.error("num_mel_bins {}, dft_length {} and sample_rate {} must be positive", bins,
                     dft, rate);
  if (!(lo[0] >= 0 && lo[0] < hi[0]))
    return ctx.error("edges [{}, {}] Hz must satisfy 0 <= lower < upper", lo[0], hi[0]);
  const int64_t spec = dft / 2 + 1;
  auto to_mel = [](double hz) { return 2595.0 * std::log10(1.0 + hz / 700.0); };
  const double mlo = to_mel(lo[0]), mhi = to_mel(hi[0]);
  const double step = (mhi - mlo) / static_cast<double>(bins + 2);
  std::vector<int64_t> f(static_cast<size_t>(bins + 2));
  for (int64_t i = 0; i < bins + 2; ++i) {
    const double hz = 700.0 * (std::pow(10.0, (i * step + mlo) / 2595.0) - 1.0);
    f[i] = static_cast<int64_t>(std::floor(static_cast<double>(dft + 1) * hz / rate));
  }
  Tensor out = Tensor::zeros(DType::kF32, {spec, bins});
  float* o = out.data_as<float>();
  // Bins past the spectrum (an upper edge above sample_rate / 2) are dropped.
  auto set = [&](int64_t j, int64_t i, double v) {
    if (j >= 0 && j < spec) o[j * bins + i] = static_cast<float>(v);
  };
  for (int64_t i = 0; i < bins; ++i) {
    const int64_t l = f[i], c = f[i + 1], h = f[i + 2];
    if (c == l)
      set(c, i, 1.0);
    else
      for (int64_t j = l; j <= c; ++j) set(j, i, static_cast<double>(j - l) / (c - l));
    for (int64_t j = c; j < h; ++j) set(j, i, static_cast<double>(h - j) / (h - c));
  }
  ctx.set_output_value(0, std::move(out));
  return no_kernel();
}

// ---- DFT and STFT ------------------------------------------------------------------------------

// cos and sin of 2 pi k / n for k in [0, n), in double.
struct Twiddles {
  std::vector<double> c, s;
  explicit Twiddles(int64_t n) : c(static_cast<size_t>(n)), s(static_cast<size_t>(n)) {
    for (int64_t k = 0; k < n; ++k) {
      c[k] = std::cos(2 * kPi * k / n);
      s[k] = std::sin(2 * kPi * k / n);
    }
  }
};

// X[k] = sum_j x[j] e^(-+2 pi i jk/n) for k < out_len, over the `len` given samples of x (the rest
// zero); x and X step by `xs` and `ys` complex values; `cplx`: x holds (re, im) pairs, else reals.
// `window` (may be null) multiplies sample j.
void dft_line(const float* x, int64_t xs, bool cplx, int64_t len, const float* window,
              const Twiddles& tw, int64_t n, int64_t out_len, bool inverse, float* y, int64_t ys) {
  const int64_t xw = cplx ? 2 : 1;
  const double sign = inverse ? 1.0 : -1.0, scale = inverse ? 1.0 / n : 1.0;
  for (int64_t k = 0; k < out_len; ++k) {
    double re = 0, im = 0;
    for (int64_t j = 0; j < len; ++j) {
      const double w = window ? window[j] : 1.0;
      const double a = x[j * xs * xw] * w, b = cplx ? x[j * xs * xw + 1] * w : 0.0;
      const int64_t t = (j * k) % n;
      const double c = tw.c[t], s = sign * tw.s[t];
      re += a * c - b * s;
      im += a * s + b * c;
    }
    y[k * ys * 2] = static_cast<float>(re * scale);
    y[k * ys * 2 + 1] = static_cast<float>(im * scale);
  }
}

Result<KernelPtr> build_dft(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32}));
  const Shape& x = ctx.in_shape(0);
  const int64_t rank = static_cast<int64_t>(x.size());
  if (rank < 3 || (x.back() != 1 && x.back() != 2))
    return ctx.error("input {} must be [batch, ..., 1 or 2] (real or complex signals)",
                     shape_str(x));
  // Negative axes count from the back of the whole shape (the complex dimension included).
  const int64_t axis0 = ctx.attr_int("axis", 1), axis = axis0 < 0 ? axis0 + rank : axis0;
  if (axis < 0 || axis > rank - 2)
    return ctx.error("axis {} must be in [{}, {}] for input {} (not the last, complex, dimension)",
                     axis0, -rank, rank - 2, shape_str(x));
  const bool inverse = ctx.attr_int("inverse", 0) != 0;
  const bool onesided = ctx.attr_int("onesided", 0) != 0;
  const bool cplx = x.back() == 2;
  if (onesided && cplx) return ctx.error("onesided needs a real input (last dimension 1)");
  const int64_t len = x[static_cast<size_t>(axis)];
  int64_t n = len;
  if (ctx.has_input(1)) {
    DLSYS_ASSIGN_OR_RETURN(n, const_scalar_int(ctx, 1, "dft_length"));
  }
  if (n < 1) return ctx.error("dft_length must be >= 1, got {}", n);
  const int64_t out_len = onesided ? n / 2 + 1 : n;
  Shape y = x;
  y.back() = 2;
  y[static_cast<size_t>(axis)] = out_len;
  ctx.set_output(0, DType::kF32, y);
  const AxisSplit sp = split_at_axis(Shape(x.begin(), x.end() - 1), axis);
  auto tw = std::make_shared<Twiddles>(n);
  const int64_t used = std::min(len, n), xw = cplx ? 2 : 1;
  return make_kernel([=](const Tensor* const* in, Tensor* const* out) {
    const float* X = in[0]->data_as<float>();
    float* Y = out[0]->data_as<float>();
    for (int64_t o = 0; o < sp.outer; ++o)
      for (int64_t i = 0; i < sp.inner; ++i)
        dft_line(X + ((o * len) * sp.inner + i) * xw, sp.inner, cplx, used, nullptr, *tw, n,
                 out_len, inverse, Y + ((o * out_len) * sp.inner + i) * 2, sp.inner);
    return Status::OK();
  });
}

Result<KernelPtr> build_stft(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32}));
  const Shape& x = ctx.in_shape(0);
  if (x.size() != 3 || (x[2] != 1 && x[2] != 2))
    return ctx.error("signal {} must be [batch, length, 1 or 2]", shape_str(x));
  int64_t step;
  DLSYS_ASSIGN_OR_RETURN(step, const_scalar_int(ctx, 1, "frame_step"));
  if (step < 1) return ctx.error("frame_step must be >= 1, got {}", step);
  const bool has_window = ctx.has_input(2);
  int64_t frame = -1;
  if (has_window) {
    DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(2, {DType::kF32}));
    if (ctx.in_shape(2).size() != 1)
      return ctx.error("window {} must be 1-D", shape_str(ctx.in_shape(2)));
    frame = ctx.in_shape(2)[0];
  }
  if (ctx.has_input(3)) {
    int64_t fl;
    DLSYS_ASSIGN_OR_RETURN(fl, const_scalar_int(ctx, 3, "frame_length"));
    if (has_window && fl != frame)
      return ctx.error("frame_length {} differs from the window's length {}", fl, frame);
    frame = fl;
  }
  if (frame < 0) return ctx.error("needs a window (input 2) or a frame_length (input 3)");
  const int64_t B = x[0], L = x[1];
  if (frame < 1 || frame > L)
    return ctx.error("frame length {} must be in [1, {}] (the signal's length)", frame, L);
  const bool cplx = x[2] == 2;
  const bool onesided = ctx.attr_int("onesided", 1) != 0;
  if (onesided && cplx) return ctx.error("onesided needs a real signal (last dimension 1)");
  const int64_t frames = (L - frame) / step + 1, bins = onesided ? frame / 2 + 1 : frame;
  ctx.set_output(0, DType::kF32, {B, frames, bins, 2});
  auto tw = std::make_shared<Twiddles>(frame);
  const int64_t xw = cplx ? 2 : 1;
  return make_kernel([=](const Tensor* const* in, Tensor* const* out) {
    const float* X = in[0]->data_as<float>();
    const float* win = has_window ? in[2]->data_as<float>() : nullptr;
    float* Y = out[0]->data_as<float>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t f = 0; f < frames; ++f)
        dft_line(X + (b * L + f * step) * xw, 1, cplx, frame, win, *tw, frame, bins, false,
                 Y + ((b * frames + f) * bins) * 2, 1);
    return Status::OK();
  });
}

}  // namespace

void register_signal_ops(OpRegistry& r) {
  r.add("HannWindow", 1, 1, 1, 1, build_hann);
  r.add("HammingWindow", 1, 1, 1, 1, build_hamming);
  r.add("BlackmanWindow", 1, 1, 1, 1, build_blackman);
  r.add("MelWeightMatrix", 5, 5, 1, 1, build_mel_weight_matrix);
  r.add("DFT", 1, 2, 1, 1, build_dft);
  r.add("STFT", 2, 4, 1, 1, build_stft);
}

}  // namespace dlsys
