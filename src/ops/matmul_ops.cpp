// MatMul (NumPy semantics, batch broadcasting) and Gemm on oneDNN's matmul primitive.
#include <algorithm>

#include "ops/broadcast.h"
#include "ops/dnnl_util.h"
#include "ops/op_registry.h"
#include "ops/post_ops.h"

namespace dlsys {
namespace {

using dt = dnnl::memory::data_type;

// One oneDNN matmul with everything around it prepared: in bf16 precision the activations are
// reordered to bf16 per call and constant weights once (in oneDNN's preferred layout); the
// epilogue act(Y + Z) runs as post-ops when Z has the output's shape, else as a fallback pass.
struct MatmulCore {
  DnnlCall call;
  bool a_reorder = false, b_reorder = false, has_bias = false, z_post = false;
  DnnlReorder a_r, b_r;
  Tensor a_buf, b_buf, bias;  // b_buf holds converted constant weights when b_const
  bool b_const = false;
  bool c_bf16 = false;  // the output is written as plain bf16 (see init's `bf16_out`)
  EpilogueFallback epilogue;

  // `a`, `b`: descriptors of the inputs as stored (f32, maybe strided; `a` may be plain bf16, a
  // bf16 plan's activation a MatMul left in bf16); `c`: the plain f32 output. `bf16_out`: its
  // consumers accept a bf16 output (Z stays f32); taken unless an f32 epilogue pass follows.
  // `b_value`: B when constant. `bias_md`/`bias_value`: optional constant bias. `z`: Z's shape
  // when present. `runtime_tail`: work the caller does after the primitive (Gemm's runtime C),
  // which forces the epilogue to run after it too.
  Status init(const BuildContext& ctx, const dnnl::memory::desc& a, const dnnl::memory::desc& b,
              const dnnl::memory::desc& c, const Tensor* b_value, const Tensor& bias_value,
              const dnnl::memory::desc& bias_md, const Shape* z, const Shape& out,
              dnnl::primitive_attr attr, bool runtime_tail, bool bf16_out = false) {
    ActivationSpec act;
    DLSYS_ASSIGN_OR_RETURN(act, read_activation(ctx));
    z_post = z && *z == out && !runtime_tail;
    bool fallback = (z && !z_post) || (act.present && runtime_tail);
    c_bf16 = bf16_out && !fallback;
    dt cdt = ctx.precision() == Precision::kBF16 ? dt::bf16 : dt::f32;
    has_bias = bias_value.valid() && bias_value.data();
    bias = bias_value;
    DLSYS_RETURN_IF_ERROR(dnnl_try(ctx, [&] {
      dnnl::post_ops po;
      if (z_post) po.append_binary(dnnl::algorithm::binary_add, c);
      if (act.present && !fallback) po.append_eltwise(1.f, act.alg, act.alpha, act.beta);
      attr.set_post_ops(po);
      dnnl::memory::desc ma = a, mb = b;
      if (cdt != dt::f32) ma = dnnl::memory::desc(a.dims(), cdt, dnnl::memory::format_tag::any);
      if (b_value)
        mb = dnnl::memory::desc(b.dims(), cdt, dnnl::memory::format_tag::any);
      else if (cdt != dt::f32)
        mb = dnnl::memory::desc(b.dims(), cdt, dnnl::memory::format_tag::any);
      dnnl::memory::desc dst = c;
      if (c_bf16) {
        const auto& st = c.data.format_desc.blocking.strides;
        dst = dnnl::memory::desc(c.dims(), dt::bf16, dnnl::memory::dims(st, st + c.data.ndims));
      }
      auto d =
          has_bias ? dnnl::matmul::desc(ma, mb, bias_md, dst) : dnnl::matmul::desc(ma, mb, dst);
      dnnl::matmul::primitive_desc pd(d, attr, dnnl_engine());
      call.prim = dnnl::matmul(pd);
      call.add(DNNL_ARG_SRC, pd.src_desc());
      call.add(DNNL_ARG_WEIGHTS, pd.weights_desc());
      call.add(DNNL_ARG_DST, dst);
      if (has_bias) call.add(DNNL_ARG_BIAS, bias_md);
      if (z_post) call.add(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, c);
      if (pd.src_desc() != a) {
        a_reorder = true;
        a_r.init(a, pd.src_desc());
        a_buf = Tensor::empty(DType::kU8, {static_cast<int64_t>(pd.src_desc().get_size())});
      }
      if (pd.weights_desc() != b) {
        b_r.init(b, pd.weights_desc());
        b_buf = Tensor::empty(DType::kU8, {static_cast<int64_t>(pd.weights_desc().get_size())});
        if (b_value) {
          b_r.run(b_value->data(), b_buf.data());
          dnnl_stream().wait();
          b_const = true;
        } else {
          b_reorder = true;
        }
      }
    }));
    if (fallback) DLSYS_RETURN_IF_ERROR(epilogue.init(ctx, out, z, act));
    return Status::OK();
  }

  void run(const void* a, const void* b, const void* z, void* c) {
    if (a_reorder) {
      a_r.run(a, a_buf.data());
      a = a_buf.data();
    }
    if (b_const) {
      b = b_buf.data();
    } else if (b_reorder) {
      b_r.run(b, b_buf.data());
      b = b_buf.data();
    }
    call.bind(DNNL_ARG_SRC, a);
    call.bind(DNNL_ARG_WEIGHTS, b);
    call.bind(DNNL_ARG_DST, c);
    if (has_bias) call.bind(DNNL_ARG_BIAS, bias.data());
    if (z_post) call.bind(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, z);
    call.exec();
  }
};

// MatMul(A, B) and FusedMatMul(A, B, bias?, Z?) = act(A @ B + bias + Z).
Result<KernelPtr> build_matmul(BuildContext& ctx) {
  for (size_t i = 0; i < 4; ++i)
    if (ctx.has_input(i)) DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(i, {DType::kF32}));
  Shape a = ctx.in_shape(0), b = ctx.in_shape(1);
  if (a.empty() || b.empty())
    return ctx.error("inputs must have rank >= 1, got {} and {}", shape_str(a), shape_str(b));
  // FusedMatMul may read A and/or B transposed in their last two dimensions (what the autodiff
  // emits for the gradients of a batched MatMul): the primitive reads them through strides.
  bool ta = ctx.attr_int("transA", 0) != 0, tb = ctx.attr_int("transB", 0) != 0;
  if ((ta && a.size() < 2) || (tb && b.size() < 2))
    return ctx.error("transA/transB need operands of rank >= 2, got {} and {}", shape_str(a),
                     shape_str(b));
  if (ta) std::swap(a[a.size() - 1], a[a.size() - 2]);
  if (tb) std::swap(b[b.size() - 1], b[b.size() - 2]);
  bool a_vec = a.size() == 1, b_vec = b.size() == 1;
  if (a_vec) a.insert(a.begin(), 1);
  if (b_vec) b.push_back(1);
  int64_t M = a[a.size() - 2], K = a.back(), K2 = b[b.size() - 2], N = b.back();
  if (K != K2)
    return ctx.error("inner dimensions differ: A is {} and B is {} ({} vs {})",
                     shape_str(ctx.in_shape(0)), shape_str(ctx.in_shape(1)), K, K2);
  Shape ba(a.begin(), a.end() - 2), bb(b.begin(), b.end() - 2);
  auto br = broadcast_shapes(ba, bb);
  if (!br.ok()) return ctx.error("batch dimensions: {}", br.status().message());
  Shape batch = br.value();
  size_t r = batch.size() + 2;
  auto pad = [&](Shape s) {
    Shape p(r - s.size(), 1);
    p.insert(p.end(), s.begin(), s.end());
    return p;
  };
  Shape pa = pad(a), pb = pad(b);
  Shape pc = batch;
  pc.push_back(M);
  pc.push_back(N);
  Shape out = batch;
  if (!a_vec) out.push_back(M);
  if (!b_vec) out.push_back(N);
  ctx.set_output(0, DType::kF32, out);
  Tensor bias;
  dnnl::memory::desc bias_md;
  if (ctx.has_input(2)) {
    const Tensor* bv = ctx.in_value(2);
    if (!bv || ctx.in_shape(2) != Shape{N})
      return ctx.error("bias must be a constant of shape [{}], got {}", N,
                       shape_str(ctx.in_shape(2)));
    bias = *bv;
    Shape bs(r, 1);
    bs.back() = N;
    bias_md = plain_md(bs, DType::kF32);
  }
  Shape zs = ctx.has_input(3) ? ctx.in_shape(3) : Shape{};
  if (shape_numel(pc) == 0 || K == 0) {
    if (ctx.has_input(2) || ctx.has_input(3) || ctx.has_attr("activation"))
      return ctx.unsupported("empty inputs with a fused epilogue");
    return make_kernel([](const Tensor* const*, Tensor* const* o) {
      std::fill_n(o[0]->data_as<float>(), o[0]->numel(), 0.f);
      return Status::OK();
    });
  }
  // A logical [.., R, C] view of an operand stored as [.., C, R] when transposed.
  auto operand_md = [](const Shape& logical, bool transposed) {
    if (!transposed) return plain_md(logical, DType::kF32);
    Shape stored = logical;
    size_t n = stored.size();
    std::swap(stored[n - 1], stored[n - 2]);
    std::vector<int64_t> st = shape_strides(stored);
    std::swap(st[n - 1], st[n - 2]);
    return strided_md(logical, DType::kF32, st);
  };
  // A batch of activations times one matrix of weights (B's batch dimensions all 1, A stored
  // plainly) is one 2-D product [batch * M, K] x [K, N]: oneDNN then packs B in its blocked
  // layout once (it keeps a broadcast 3-D B plain and repacks it on every call) and splits the
  // larger M over threads.
  bool b_single = std::all_of(pb.begin(), pb.end() - 2, [](int64_t d) { return d == 1; });
  if (b_single && !ta && r > 2) {
    int64_t rows = shape_numel(pc) / N;
    pa = {rows, K};
    pb = {K, N};
    pc = {rows, N};
    if (bias.valid()) bias_md = plain_md({1, N}, DType::kF32);
  }
  // bf16 plans keep activations between matmuls in bf16: A may arrive so (from a MatMul or
  // attention that wrote it), and the output is written so when every consumer accepts a
  // layout (ops/op_registry.h, layout_inputs) and no f32 epilogue pass follows. Any other layout
  // A arrives in is converted to plain f32 first.
  bool bf16 = ctx.precision() == Precision::kBF16;
  dnnl::memory::desc a_md = operand_md(pa, ta);
  const dnnl::memory::desc& given = ctx.in_layout(0);
  if (!given.is_zero()) {
    if (bf16 && !ta && !a_vec && given == plain_md(ctx.in_shape(0), DType::kBF16))
      a_md = plain_md(pa, DType::kBF16);
    else
      ctx.convert_input(0, plain_md(ctx.in_shape(0), DType::kF32));
  }
  bool bf16_out = bf16 && ctx.output_layout_free(0) && !a_vec && !b_vec;
  auto core = std::make_shared<MatmulCore>();
  DLSYS_RETURN_IF_ERROR(core->init(ctx, a_md, operand_md(pb, tb), plain_md(pc, DType::kF32),
                                   ctx.in_value(1), bias, bias_md, ctx.has_input(3) ? &zs : nullptr,
                                   out, dnnl_attr(), false, bf16_out));
  if (core->c_bf16) ctx.set_output_layout(0, plain_md(out, DType::kBF16));
  bool has_z = ctx.has_input(3);
  return make_kernel([core, has_z](const Tensor* const* in, Tensor* const* o) {
    const float* z = has_z ? in[3]->data_as<float>() : nullptr;
    core->run(in[0]->data(), in[1]->data(), z, o[0]->data());
    if (core->epilogue.active()) core->epilogue.run(o[0]->data_as<float>(), z);
    return Status::OK();
  });
}

// Gemm(A, B, C?) and FusedGemm(A, B, C?, Z?) = act(alpha A' B' + beta C + Z).
Result<KernelPtr> build_gemm(BuildContext& ctx) {
  for (size_t i = 0; i < ctx.num_inputs(); ++i)
    if (ctx.has_input(i)) DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(i, {DType::kF32}));
  const Shape &a = ctx.in_shape(0), &b = ctx.in_shape(1);
  if (a.size() != 2 || b.size() != 2)
    return ctx.error("A and B must be 2-D, got {} and {}", shape_str(a), shape_str(b));
  bool ta = ctx.attr_int("transA", 0) != 0, tb = ctx.attr_int("transB", 0) != 0;
  float alpha = ctx.attr_float("alpha", 1.f), beta = ctx.attr_float("beta", 1.f);
  int64_t M = ta ? a[1] : a[0], K = ta ? a[0] : a[1];
  int64_t K2 = tb ? b[1] : b[0], N = tb ? b[0] : b[1];
  if (K != K2)
    return ctx.error("inner dimensions differ: A {} (transA={}) and B {} (transB={})", shape_str(a),
                     ta, shape_str(b), tb);
  Shape out = {M, N};
  ctx.set_output(0, DType::kF32, out);
  bool has_c = ctx.has_input(2) && beta != 0.f;
  Shape cs;
  if (has_c) {
    cs = ctx.in_shape(2);
    auto br = broadcast_shapes(cs, out);
    if (!br.ok() || br.value() != out)
      return ctx.error("C of shape {} does not broadcast to {}", shape_str(cs), shape_str(out));
  }
  // Bias through oneDNN when C is known now (pre-scaled by beta/alpha; alpha is the output scale).
  Tensor bias;
  if (has_c && ctx.in_value(2) && alpha != 0.f) {
    Shape c2 = cs;
    while (c2.size() < 2) c2.insert(c2.begin(), 1);
    bias = Tensor::empty(DType::kF32, c2);
    const float* c = ctx.in_value(2)->data_as<float>();
    for (int64_t i = 0; i < bias.numel(); ++i) bias.data_as<float>()[i] = c[i] * beta / alpha;
  }
  if (M == 0 || N == 0)
    return make_kernel([](const Tensor* const*, Tensor* const*) { return Status::OK(); });
  bool use_bias = bias.valid() && bias.numel() > 0;
  bool runtime_c = has_c && !use_bias;
  Shape zs = ctx.has_input(3) ? ctx.in_shape(3) : Shape{};
  auto core = std::make_shared<MatmulCore>();
  dnnl::primitive_attr attr = dnnl_attr();
  if (alpha != 1.f) attr.set_output_scales(0, {alpha});
  auto mda = ta ? strided_md({M, K}, DType::kF32, {1, M}) : plain_md({M, K}, DType::kF32);
  auto mdb = tb ? strided_md({K, N}, DType::kF32, {1, K}) : plain_md({K, N}, DType::kF32);
  DLSYS_RETURN_IF_ERROR(core->init(
      ctx, mda, mdb, plain_md(out, DType::kF32), ctx.in_value(1), use_bias ? bias : Tensor(),
      use_bias ? plain_md(bias.shape(), DType::kF32) : dnnl::memory::desc(),
      ctx.has_input(3) ? &zs : nullptr, out, attr, runtime_c));
  std::vector<int64_t> cst = runtime_c ? broadcast_strides(cs, out) : std::vector<int64_t>{};
  bool has_z = ctx.has_input(3);
  return make_kernel(
      [core, runtime_c, cst, beta, N, has_z](const Tensor* const* in, Tensor* const* o) {
        const float* z = has_z ? in[3]->data_as<float>() : nullptr;
        core->run(in[0]->data(), in[1]->data(), z, o[0]->data());
        if (runtime_c) {
          float* y = o[0]->data_as<float>();
          const float* c = in[2]->data_as<float>();
          int64_t n = o[0]->numel();
          for (int64_t i = 0; i < n; ++i) y[i] += beta * c[(i / N) * cst[0] + (i % N) * cst[1]];
        }
        if (core->epilogue.active()) core->epilogue.run(o[0]->data_as<float>(), z);
        return Status::OK();
      });
}

}  // namespace

void register_matmul_ops(OpRegistry& r) {
  r.add("MatMul", 2, 2, 1, 1, build_matmul);
  r.add("Gemm", 2, 3, 1, 1, build_gemm);
  // Made by the graph optimizer: FusedMatMul(A, B, bias?, Z?) and FusedGemm(A, B, C?, Z?), with
  // optional `activation` / `activation_params` attributes (see ops/post_ops.h).
  r.add("FusedMatMul", 2, 4, 1, 1, build_matmul);
  // A in a layout: bf16 plans pass bf16 activations between matmuls (build_matmul).
  r.set_layout_inputs("MatMul", 1u);
  r.set_layout_inputs("FusedMatMul", 1u);
  r.add("FusedGemm", 2, 4, 1, 1, build_gemm);
}

}  // namespace dlsys
