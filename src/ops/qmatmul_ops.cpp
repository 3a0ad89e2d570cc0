// QMatMul (static, below) and QMatMulDynamic.
// QMatMulDynamic(A, Bq, bias?, Z?): dynamically quantized MatMul, made by the graph optimizer
// (DynamicQuantizedMatMulFusion) from MatMul(A, DequantizeLinear(Bq int8 constant)). Each run
// measures max |A|, quantizes A to s8 with scale max|A|/127, and runs an s8 x s8 oneDNN matmul
// with output scales w_scales[n], then A's scale, bias, Z and the activation as post-ops. Result:
// act(dequant(A_q) @ (Bq * w_scales) + bias + Z), f32.
// MatMulInteger and QLinearMatMul (ONNX, as older quantizers emit them): NumPy matmul semantics
// (batch broadcasting, 1-D operands), per-tensor or per-row (A) / per-column (B) zero points and
// scales, exact int32 sums on every CPU (see IntMatmul: oneDNN int8 where exact, else loops).
#include <cmath>

#include "ops/broadcast.h"
#include "ops/dnnl_util.h"
#include "ops/int_gemm.h"
#include "ops/op_registry.h"
#include "ops/post_ops.h"

namespace dlsys {
namespace {

using dt = dnnl::memory::data_type;

// The constant int8 weight B [K, N] converted once into the layout the primitive chose.
Tensor prepack_weights(const Tensor& bq, int64_t K, int64_t N, const dnnl::memory::desc& chosen) {
  return reorder_once(bq.data(), plain_md({K, N}, DType::kI8), chosen);
}

// Bias ([1, N]) and Z (`z_md`, the output's shape) as binary-add post-ops: appended to `po`
// and their arguments added to `call`, numbered from post-op `*post` on (advanced past them).
void add_bias_and_z(bool bias, bool z, int64_t N, const dnnl::memory::desc& z_md,
                    dnnl::post_ops* po, DnnlCall* call, int* post) {
  auto bias_md = plain_md({1, N}, DType::kF32);
  if (bias) {
    po->append_binary(dnnl::algorithm::binary_add, bias_md);
    call->add(DNNL_ARG_ATTR_MULTIPLE_POST_OP((*post)++) | DNNL_ARG_SRC_1, bias_md);
  }
  if (z) {
    po->append_binary(dnnl::algorithm::binary_add, z_md);
    call->add(DNNL_ARG_ATTR_MULTIPLE_POST_OP((*post)++) | DNNL_ARG_SRC_1, z_md);
  }
}

// A [.., K] (rank >= 2) times the constant 2-D int8 B [K, N]: sets M (A's rows, all leading
// dims flattened), K and N, or returns the error naming both shapes.
Status qmatmul_geometry(const BuildContext& ctx, int64_t* M, int64_t* K, int64_t* N) {
  const Shape &a = ctx.in_shape(0), &b = ctx.in_shape(1);
  if (a.size() < 2 || b.size() != 2 || !ctx.in_value(1))
    return ctx.error("needs A of rank >= 2 and a constant 2-D B, got {} and {}", shape_str(a),
                     shape_str(b));
  *K = a.back();
  *N = b[1];
  *M = shape_numel(a) / std::max<int64_t>(1, *K);
  if (b[0] != *K)
    return ctx.error("inner dimensions differ: A is {} and B is {}", shape_str(a), shape_str(b));
  return Status::OK();
}

// Binds what add_bias_and_z added (null pointers for the absent ones), from post-op `post` on.
void bind_bias_and_z(DnnlCall* call, int post, const Tensor* bias, const Tensor* z) {
  if (bias) call->bind(DNNL_ARG_ATTR_MULTIPLE_POST_OP(post++) | DNNL_ARG_SRC_1, bias->data());
  if (z) call->bind(DNNL_ARG_ATTR_MULTIPLE_POST_OP(post++) | DNNL_ARG_SRC_1, z->data());
}

struct DynMatmul {
  DnnlCall call;
  Tensor a_q, b_buf, scales;  // quantized A, B in oneDNN's layout, A's scale (one float)
  std::vector<float> w_scales;
  int64_t M = 0, K = 0, N = 0;
  bool has_bias = false, has_z = false;
};

Result<KernelPtr> build_qmatmul_dynamic(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32}));
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(1, {DType::kI8}));
  const Shape& a = ctx.in_shape(0);
  const Tensor* bq = ctx.in_value(1);
  auto st = std::make_shared<DynMatmul>();
  DLSYS_RETURN_IF_ERROR(qmatmul_geometry(ctx, &st->M, &st->K, &st->N));
  st->w_scales = ctx.attr_floats("w_scales");
  if (st->w_scales.empty() ||
      (st->w_scales.size() != 1 && static_cast<int64_t>(st->w_scales.size()) != st->N))
    return ctx.error("w_scales needs 1 or {} values, got {}", st->N, st->w_scales.size());
  Shape out(a.begin(), a.end() - 1);
  out.push_back(st->N);
  ctx.set_output(0, DType::kF32, out);
  st->has_bias = ctx.has_input(2);
  st->has_z = ctx.has_input(3);
  if (st->has_bias && (!ctx.in_value(2) || ctx.in_shape(2) != Shape{st->N}))
    return ctx.error("bias must be a constant of shape [{}]", st->N);
  if (st->has_z && ctx.in_shape(3) != out)
    return ctx.unsupported("Z {} must have the output's shape {}", shape_str(ctx.in_shape(3)),
                           shape_str(out));
  ActivationSpec act;
  DLSYS_ASSIGN_OR_RETURN(act, read_activation(ctx));
  int64_t M = st->M, K = st->K, N = st->N;
  int mask = st->w_scales.size() > 1 ? 2 : 0;
  DLSYS_RETURN_IF_ERROR(dnnl_try(ctx, [&] {
    auto src = plain_md({M, K}, DType::kI8);
    auto wei_any = dnnl::memory::desc({K, N}, dt::s8, dnnl::memory::format_tag::any);
    auto dst = plain_md({M, N}, DType::kF32);
    // A's scale changes every run: a scalar binary_mul post-op carries it (runtime output scales
    // would send oneDNN 2.6 from its brgemm kernel to a slower gemm); the constant per-column
    // weight scales stay output scales.
    dnnl::post_ops po;
    po.append_binary(dnnl::algorithm::binary_mul, plain_md({1, 1}, DType::kF32));
    st->call.add(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, plain_md({1, 1}, DType::kF32));
    int post = 1;
    add_bias_and_z(st->has_bias, st->has_z, N, dst, &po, &st->call, &post);
    if (act.present) po.append_eltwise(1.f, act.alg, act.alpha, act.beta);
    dnnl::primitive_attr attr = dnnl_attr();
    attr.set_output_scales(mask, st->w_scales);
    attr.set_post_ops(po);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, wei_any, dst), attr, dnnl_engine());
    st->call.prim = dnnl::matmul(pd);
    st->call.add(DNNL_ARG_SRC, src);
    st->call.add(DNNL_ARG_WEIGHTS, pd.weights_desc());
    st->call.add(DNNL_ARG_DST, dst);
    st->scales = Tensor::empty(DType::kF32, {1});
    st->a_q = Tensor::empty(DType::kI8, {M, K});
    st->b_buf = prepack_weights(*bq, K, N, pd.weights_desc());
  }));
  Tensor bias = st->has_bias ? *ctx.in_value(2) : Tensor();
  return make_kernel([st, bias](const Tensor* const* in, Tensor* const* o) {
    DynMatmul& d = *st;
    const float* x = in[0]->data_as<float>();
    int64_t n = d.M * d.K;
    float amax = 0;
#pragma omp parallel for reduction(max : amax) if (n > 32768)
    for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
    float sx = amax > 0 ? amax / 127.f : 1.f, inv = 1.f / sx;
    int8_t* q = d.a_q.data_as<int8_t>();
#pragma omp parallel for if (n > 32768)
    for (int64_t i = 0; i < n; ++i) q[i] = static_cast<int8_t>(std::nearbyint(x[i] * inv));
    d.scales.data_as<float>()[0] = sx;
    d.call.bind(DNNL_ARG_SRC, q);
    d.call.bind(DNNL_ARG_WEIGHTS, d.b_buf.data());
    d.call.bind(DNNL_ARG_DST, o[0]->data());
    d.call.bind(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, d.scales.data());
    bind_bias_and_z(&d.call, 1, d.has_bias ? &bias : nullptr, d.has_z ? in[3] : nullptr);
    d.call.exec();
    return Status::OK();
  });
}

// QMatMul(Aq, Bq, bias?, Z?): statically quantized MatMul, made by QuantizedMatMulFusion from
// MatMul(DequantizeLinear(Aq), DequantizeLinear(Bq int8 constant)) [-> QuantizeLinear]. Aq is
// u8 or s8 (attribute x_scale, zero point 0), Bq s8 [K, N] with w_scales (1 or N values). One
// oneDNN int8 matmul: output scales x_scale * w_scales[n], then bias, Z (f32, the output's shape)
// and the activation as post-ops; with y_scale/y_type the result is requantized to u8/s8 by a
// final 1/y_scale (oneDNN rounds and saturates), else it is f32.
struct StaticMatmul {
  DnnlCall call;
  Tensor b_buf;
  bool has_bias = false, has_z = false;
};

Result<KernelPtr> build_qmatmul_static(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kU8, DType::kI8}));
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(1, {DType::kI8}));
  const Shape& a = ctx.in_shape(0);
  const Tensor* bq = ctx.in_value(1);
  int64_t M = 0, K = 0, N = 0;
  DLSYS_RETURN_IF_ERROR(qmatmul_geometry(ctx, &M, &K, &N));
  float x_scale = ctx.attr_float("x_scale", 0.f);
  std::vector<float> w_scales = ctx.attr_floats("w_scales");
  if (!(x_scale > 0) || w_scales.empty() ||
      (w_scales.size() != 1 && static_cast<int64_t>(w_scales.size()) != N))
    return ctx.error("needs x_scale > 0 and 1 or {} w_scales, got {} and {}", N, x_scale,
                     w_scales.size());
  float y_scale = ctx.attr_float("y_scale", 0.f);
  int64_t y_type = ctx.attr_int("y_type", 0);
  bool quantized_out = y_scale > 0;
  if (quantized_out && y_type != 2 && y_type != 3)
    return ctx.error("y_type {} must be 2 (uint8) or 3 (int8)", y_type);
  DType out_dt = !quantized_out ? DType::kF32 : y_type == 2 ? DType::kU8 : DType::kI8;
  Shape out(a.begin(), a.end() - 1);
  out.push_back(N);
  ctx.set_output(0, out_dt, out);
  auto st = std::make_shared<StaticMatmul>();
  st->has_bias = ctx.has_input(2);
  st->has_z = ctx.has_input(3);
  if (st->has_bias &&
      (!ctx.in_value(2) || ctx.in_shape(2) != Shape{N} || ctx.in_dtype(2) != DType::kF32))
    return ctx.error("bias must be an f32 constant of shape [{}]", N);
  if (st->has_z && (ctx.in_shape(3) != out || ctx.in_dtype(3) != DType::kF32))
    return ctx.unsupported("Z {} must be f32 with the output's shape {}",
                           shape_str(ctx.in_shape(3)), shape_str(out));
  ActivationSpec act;
  DLSYS_ASSIGN_OR_RETURN(act, read_activation(ctx));
  std::vector<float> scales = w_scales;
  for (float& v : scales) v *= x_scale;
  DLSYS_RETURN_IF_ERROR(dnnl_try(ctx, [&] {
    auto src = plain_md({M, K}, ctx.in_dtype(0));
    auto wei_any = dnnl::memory::desc({K, N}, dt::s8, dnnl::memory::format_tag::any);
    auto dst = plain_md({M, N}, out_dt);
    auto fdst = plain_md({M, N}, DType::kF32);
    dnnl::post_ops po;
    int post = 0;
    add_bias_and_z(st->has_bias, st->has_z, N, fdst, &po, &st->call, &post);
    if (act.present) po.append_eltwise(1.f, act.alg, act.alpha, act.beta);
    if (quantized_out) po.append_eltwise(1.f, dnnl::algorithm::eltwise_linear, 1.f / y_scale, 0.f);
    dnnl::primitive_attr attr = dnnl_attr();
    attr.set_output_scales(scales.size() > 1 ? 2 : 0, scales);
    attr.set_post_ops(po);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, wei_any, dst), attr, dnnl_engine());
    st->call.prim = dnnl::matmul(pd);
    st->call.add(DNNL_ARG_SRC, src);
    st->call.add(DNNL_ARG_WEIGHTS, pd.weights_desc());
    st->call.add(DNNL_ARG_DST, dst);
    st->b_buf = prepack_weights(*bq, K, N, pd.weights_desc());
  }));
  Tensor bias = st->has_bias ? *ctx.in_value(2) : Tensor();
  return make_kernel([st, bias](const Tensor* const* in, Tensor* const* o) {
    StaticMatmul& d = *st;
    d.call.bind(DNNL_ARG_SRC, in[0]->data());
    d.call.bind(DNNL_ARG_WEIGHTS, d.b_buf.data());
    d.call.bind(DNNL_ARG_DST, o[0]->data());
    bind_bias_and_z(&d.call, 0, d.has_bias ? &bias : nullptr, d.has_z ? in[3] : nullptr);
    d.call.exec();
    return Status::OK();
  });
}

// Checks that input i (a zero point or scale of an integer matmul operand) is a scalar or 1-D
// with `n` values (`per` says what they run along).
Status check_int_param(const BuildContext& ctx, size_t i, int64_t n, const char* what,
                       const char* per) {
  if (!ctx.has_input(i)) return Status::OK();
  const Shape& s = ctx.in_shape(i);
  if (s.size() <= 1 && shape_numel(s) == 1) return Status::OK();
  if (s.size() == 1 && s[0] == n) return Status::OK();
  return ctx.error("{} must be a scalar or 1-D with {} values (one per {}), got {}", what, n, per,
                   shape_str(s));
}

// The matrices of A (input ia) and B (input ib) under NumPy matmul semantics.
struct IntMatmulGeometry {
  int64_t M = 0, K = 0, N = 0;
  Shape out;
  std::vector<int64_t> a_off, b_off;  // per output matrix: element offset of its A and B matrix
};

Status int_matmul_geometry(const BuildContext& ctx, size_t ia, size_t ib, IntMatmulGeometry* g) {
  Shape a = ctx.in_shape(ia), b = ctx.in_shape(ib);
  if (a.empty() || b.empty())
    return ctx.error("A {} and B {} must have rank >= 1", shape_str(a), shape_str(b));
  bool a1 = a.size() == 1, b1 = b.size() == 1;
  if (a1) a.insert(a.begin(), 1);
  if (b1) b.push_back(1);
  g->M = a[a.size() - 2];
  g->K = a.back();
  g->N = b.back();
  if (b[b.size() - 2] != g->K)
    return ctx.error("inner dimensions differ: A is {} and B is {}", shape_str(ctx.in_shape(ia)),
                     shape_str(ctx.in_shape(ib)));
  Shape ab(a.begin(), a.end() - 2), bb(b.begin(), b.end() - 2);
  DLSYS_ASSIGN_OR_RETURN(Shape batch, broadcast_shapes(ab, bb));
  std::vector<int64_t> sa = broadcast_strides(ab, batch), sb = broadcast_strides(bb, batch);
  int64_t count = shape_numel(batch);
  for (int64_t i = 0; i < count; ++i) {
    int64_t rem = i, oa = 0, ob = 0;
    for (int64_t d = static_cast<int64_t>(batch.size()) - 1; d >= 0; --d) {
      int64_t idx = rem % batch[d];
      rem /= batch[d];
      oa += idx * sa[d];
      ob += idx * sb[d];
    }
    g->a_off.push_back(oa * g->M * g->K);
    g->b_off.push_back(ob * g->K * g->N);
  }
  g->out = batch;
  if (!a1) g->out.push_back(g->M);
  if (!b1) g->out.push_back(g->N);
  return Status::OK();
}

// Per-run state of an integer matmul, and its two paths. Exact everywhere: where oneDNN's int8
// kernels sum exactly (VNNI, int8_kernels_exact()) and B is a 2-D constant, one oneDNN int8 matmul
// computes A·B' (s32) with B' = B as s8 (B - 128 for u8, its zero point shifted likewise), and
// the zero points enter as corrections: (A - za)(B' - zb') = A·B' - za·colsum(B') - zb'·rowsum(A)
// + K·za·zb'. Elsewhere both operands are widened with their zero points subtracted and
// multiplied by gemm_s32.
struct IntMatmul {
  IntMatmulGeometry g;
  DType a_type = DType::kU8, b_type = DType::kU8;
  std::vector<int32_t> a, b, c;
  int64_t a_numel = 0, b_numel = 0;
  bool onednn = false;
  DnnlCall call;
  Tensor b_buf;                 // B' prepacked in the primitive's layout
  std::vector<int64_t> colsum;  // per column of B'

  Status init(const BuildContext& ctx, size_t ia, size_t ib) {
    a_type = ctx.in_dtype(ia);
    b_type = ctx.in_dtype(ib);
    a_numel = shape_numel(ctx.in_shape(ia));
    b_numel = shape_numel(ctx.in_shape(ib));
    c.resize(g.a_off.size() * g.M * g.N);
    const Tensor* bv = ctx.in_value(ib);
    if (int8_kernels_exact() && bv && ctx.in_shape(ib).size() == 2 && !c.empty()) {
      int64_t rows = static_cast<int64_t>(g.a_off.size()) * g.M, K = g.K, N = g.N;
      Tensor bs = Tensor::empty(DType::kI8, {K, N});
      colsum.assign(N, 0);
      for (int64_t i = 0; i < K * N; ++i) {
        int32_t v = load_q8(bv->data(), b_type, i) - (b_type == DType::kU8 ? 128 : 0);
        bs.data_as<int8_t>()[i] = static_cast<int8_t>(v);
        colsum[i % N] += v;
      }
      Status st = dnnl_try(ctx, [&] {
        auto src = plain_md({rows, K}, a_type);
        auto wei_any = dnnl::memory::desc({K, N}, dt::s8, dnnl::memory::format_tag::any);
        auto dst = plain_md({rows, N}, DType::kI32);
        dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, wei_any, dst), dnnl_attr(),
                                        dnnl_engine());
        call.prim = dnnl::matmul(pd);
        call.add(DNNL_ARG_SRC, src);
        call.add(DNNL_ARG_WEIGHTS, pd.weights_desc());
        call.add(DNNL_ARG_DST, dst);
        b_buf = prepack_weights(bs, K, N, pd.weights_desc());
      });
      if (st.ok()) {
        onednn = true;
        return Status::OK();
      }
    }
    a.resize(a_numel);
    b.resize(b_numel);
    return Status::OK();
  }
  // C = (A - a_zp)(B - b_zp) per matrix; a_zp per row m when it has M values, b_zp per column.
  void run(const Tensor& at, const Tensor* azp, const Tensor& bt, const Tensor* bzp) {
    const void* ad = at.data();
    bool a_rows = azp && azp->numel() > 1, b_cols = bzp && bzp->numel() > 1;
    int64_t M = g.M, K = g.K, N = g.N;
    if (onednn) {
      call.bind(DNNL_ARG_SRC, ad);
      call.bind(DNNL_ARG_WEIGHTS, b_buf.data());
      call.bind(DNNL_ARG_DST, c.data());
      call.exec();
      int64_t rows = static_cast<int64_t>(c.size()) / N;
      int32_t shift = b_type == DType::kU8 ? 128 : 0;
#pragma omp parallel for if (rows * (K + N) > 65536)
      for (int64_t r = 0; r < rows; ++r) {
        int64_t za = azp ? load_q8(azp->data(), a_type, a_rows ? r % M : 0) : 0;
        int64_t rowsum = 0;
        for (int64_t k = 0; k < K; ++k) rowsum += load_q8(ad, a_type, r * K + k);
        int32_t* cr = c.data() + r * N;
        for (int64_t n = 0; n < N; ++n) {
          int64_t zb = (bzp ? load_q8(bzp->data(), b_type, b_cols ? n : 0) : 0) - shift;
          cr[n] = static_cast<int32_t>(cr[n] - za * colsum[n] - zb * rowsum + K * za * zb);
        }
      }
      return;
    }
    const void* bd = bt.data();
    for (int64_t i = 0; i < a_numel; ++i)
      a[i] = load_q8(ad, a_type, i) -
             (azp ? load_q8(azp->data(), a_type, a_rows ? (i / K) % M : 0) : 0);
    for (int64_t i = 0; i < b_numel; ++i)
      b[i] = load_q8(bd, b_type, i) - (bzp ? load_q8(bzp->data(), b_type, b_cols ? i % N : 0) : 0);
    for (size_t m = 0; m < g.a_off.size(); ++m)
      gemm_s32(M, N, K, a.data() + g.a_off[m], K, b.data() + g.b_off[m], N, c.data() + m * M * N,
               N);
  }
};

// MatMulInteger(A, B, a_zero_point?, b_zero_point?) -> int32 (A - a_zp) · (B - b_zp).
Result<KernelPtr> build_matmul_integer(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kU8, DType::kI8}));
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(1, {DType::kU8, DType::kI8}));
  auto st = std::make_shared<IntMatmul>();
  DLSYS_RETURN_IF_ERROR(int_matmul_geometry(ctx, 0, 1, &st->g));
  for (size_t i : {size_t{2}, size_t{3}})
    if (ctx.has_input(i) && ctx.in_dtype(i) != ctx.in_dtype(i - 2))
      return ctx.error("{} zero point type {} differs from {}'s type {}", i == 2 ? "a" : "b",
                       dtype_name(ctx.in_dtype(i)), i == 2 ? "A" : "B",
                       dtype_name(ctx.in_dtype(i - 2)));
  DLSYS_RETURN_IF_ERROR(check_int_param(ctx, 2, st->g.M, "a_zero_point", "row of A"));
  DLSYS_RETURN_IF_ERROR(check_int_param(ctx, 3, st->g.N, "b_zero_point", "column of B"));
  DLSYS_RETURN_IF_ERROR(st->init(ctx, 0, 1));
  ctx.set_output(0, DType::kI32, st->g.out);
  bool az = ctx.has_input(2), bz = ctx.has_input(3);
  return make_kernel([st, az, bz](const Tensor* const* in, Tensor* const* out) {
    st->run(*in[0], az ? in[2] : nullptr, *in[1], bz ? in[3] : nullptr);
    copy_bytes(out[0]->data(), st->c.data(), st->c.size() * sizeof(int32_t));
    return Status::OK();
  });
}

// QLinearMatMul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp) -> u8/i8 y =
// saturate(round((a - a_zp)·(b - b_zp) · a_scale·b_scale / y_scale) + y_zp). Scales and zero
// points are per tensor, per row of a (a's) or per column of b (b's and y's).
Result<KernelPtr> build_qlinear_matmul(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kU8, DType::kI8}));
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(3, {DType::kU8, DType::kI8}));
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(7, {DType::kU8, DType::kI8}));
  for (size_t i : {size_t{1}, size_t{4}, size_t{6}})
    DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(i, {DType::kF32}));
  auto st = std::make_shared<IntMatmul>();
  DLSYS_RETURN_IF_ERROR(int_matmul_geometry(ctx, 0, 3, &st->g));
  if (ctx.in_dtype(2) != ctx.in_dtype(0) || ctx.in_dtype(5) != ctx.in_dtype(3))
    return ctx.error("zero point types ({}, {}) must match a's and b's ({}, {})",
                     dtype_name(ctx.in_dtype(2)), dtype_name(ctx.in_dtype(5)),
                     dtype_name(ctx.in_dtype(0)), dtype_name(ctx.in_dtype(3)));
  int64_t M = st->g.M, N = st->g.N;
  DLSYS_RETURN_IF_ERROR(check_int_param(ctx, 1, M, "a_scale", "row of a"));
  DLSYS_RETURN_IF_ERROR(check_int_param(ctx, 2, M, "a_zero_point", "row of a"));
  DLSYS_RETURN_IF_ERROR(check_int_param(ctx, 4, N, "b_scale", "column of b"));
  DLSYS_RETURN_IF_ERROR(check_int_param(ctx, 5, N, "b_zero_point", "column of b"));
  DLSYS_RETURN_IF_ERROR(check_int_param(ctx, 6, N, "y_scale", "column of y"));
  DLSYS_RETURN_IF_ERROR(check_int_param(ctx, 7, N, "y_zero_point", "column of y"));
  DLSYS_RETURN_IF_ERROR(st->init(ctx, 0, 3));
  DType yt = ctx.in_dtype(7);
  ctx.set_output(0, yt, st->g.out);
  return make_kernel([st, yt](const Tensor* const* in, Tensor* const* out) {
    st->run(*in[0], in[2], *in[3], in[5]);
    const float *as = in[1]->data_as<float>(), *bs = in[4]->data_as<float>(),
                *ys = in[6]->data_as<float>();
    bool a_rows = in[1]->numel() > 1, b_cols = in[4]->numel() > 1, y_cols = in[6]->numel() > 1,
         yz_cols = in[7]->numel() > 1;
    int64_t M = st->g.M, N = st->g.N, n_out = static_cast<int64_t>(st->c.size());
    const void* yz = in[7]->data();
    void* y = out[0]->data();
#pragma omp parallel for if (n_out > 65536)
    for (int64_t i = 0; i < n_out; ++i) {
      int64_t n = i % N, m = (i / N) % M;
      float mult = as[a_rows ? m : 0] * bs[b_cols ? n : 0] / ys[y_cols ? n : 0];
      store_requantized(st->c[i], mult, load_q8(yz, yt, yz_cols ? n : 0), yt, y, i);
    }
    return Status::OK();
  });
}

}  // namespace

void register_qmatmul_ops(OpRegistry& r) {
  r.add("MatMulInteger", 2, 4, 1, 1, build_matmul_integer);
  r.add("QLinearMatMul", 8, 8, 1, 1, build_qlinear_matmul);
  r.add("QMatMulDynamic", 2, 4, 1, 1, build_qmatmul_dynamic);
  r.add("QMatMul", 2, 4, 1, 1, build_qmatmul_static);
}

}  // namespace dlsys
