#include "ops/post_ops.h"

#include "ops/broadcast.h"

namespace dlsys {

Result<ActivationSpec> read_activation(const BuildContext& ctx, const std::string& prefix) {
  ActivationSpec a;
  std::string name = ctx.attr_string(prefix + "activation", "");
  if (name.empty()) return a;
  std::vector<float> p = ctx.attr_floats(prefix + "activation_params");
  auto param = [&](size_t i, float def) { return i < p.size() ? p[i] : def; };
  using alg = dnnl::algorithm;
  a.present = true;
  if (name == "Relu") {
    a.alg = alg::eltwise_relu;
  } else if (name == "LeakyRelu") {
    a.alg = alg::eltwise_relu;
    a.alpha = param(0, 0.01f);
  } else if (name == "Sigmoid") {
    a.alg = alg::eltwise_logistic;
  } else if (name == "Tanh") {
    a.alg = alg::eltwise_tanh;
  } else if (name == "Elu") {
    a.alg = alg::eltwise_elu;
    a.alpha = param(0, 1.f);
  } else if (name == "Gelu") {
    a.alg = alg::eltwise_gelu_erf;
  } else if (name == "GeluTanh") {
    a.alg = alg::eltwise_gelu_tanh;
  } else if (name == "HardSwish") {
    a.alg = alg::eltwise_hardswish;
  } else if (name == "Clip") {
    a.alg = alg::eltwise_clip_v2;
    a.alpha = param(0, -3.4e38f);
    a.beta = param(1, 3.4e38f);
  } else {
    return ctx.unsupported(
        "activation '{}' is not one of Relu, LeakyRelu, Sigmoid, Tanh, Elu, Gelu, GeluTanh, "
        "HardSwish, Clip",
        name);
  }
  return a;
}

Status EpilogueFallback::init(const BuildContext& ctx, const Shape& out, const Shape* z,
                              const ActivationSpec& act) {
  out_ = out;
  if (z) {
    auto br = broadcast_shapes(*z, out);
    if (!br.ok() || br.value() != out)
      return ctx.unsupported("the summed input Z {} does not broadcast to the output {}",
                             shape_str(*z), shape_str(out));
    has_z_ = true;
    z_strides_ = broadcast_strides(*z, out);
  }
  if (act.present) {
    has_act_ = true;
    return dnnl_try(ctx, [&] {
      auto md = plain_md({shape_numel(out)}, DType::kF32);
      auto d = dnnl::eltwise_forward::desc(dnnl::prop_kind::forward_inference, act.alg, md,
                                           act.alpha, act.beta);
      eltwise_.prim = dnnl::eltwise_forward(
          dnnl::eltwise_forward::primitive_desc(d, dnnl_attr(), dnnl_engine()));
      eltwise_.add(DNNL_ARG_SRC, md);
      eltwise_.add(DNNL_ARG_DST, md);
    });
  }
  return Status::OK();
}

void EpilogueFallback::run(float* y, const float* z) {
  if (has_z_) {
    std::vector<int64_t> idx(out_.size(), 0);
    int64_t n = shape_numel(out_);
    for (int64_t i = 0; i < n; ++i) {
      int64_t off = 0;
      for (size_t d = 0; d < out_.size(); ++d) off += idx[d] * z_strides_[d];
      y[i] += z[off];
      for (size_t d = out_.size(); d-- > 0;) {
        if (++idx[d] < out_[d]) break;
        idx[d] = 0;
      }
    }
  }
  if (has_act_) {
    eltwise_.bind(DNNL_ARG_SRC, y);
    eltwise_.bind(DNNL_ARG_DST, y);
    eltwise_.exec();
  }
}

}  // namespace dlsys
