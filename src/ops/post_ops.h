// The epilogue of the fused ops (FusedConv, FusedMatMul, FusedGemm): Y = act(op(...) + Z).
// As oneDNN post-ops when Z has the output's shape (binary add, then eltwise), else as a
// fallback pass after the primitive (broadcast add, then an in-place eltwise primitive).
#pragma once

#include "ops/dnnl_util.h"

namespace dlsys {

// The fused activation named by the node's `activation` / `activation_params` attributes.
struct ActivationSpec {
  bool present = false;
  dnnl::algorithm alg = dnnl::algorithm::undef;
  float alpha = 0, beta = 0;
};

// Reads the `<prefix>activation` / `<prefix>activation_params` attributes; an unknown name is an
// Unsupported error naming it.
Result<ActivationSpec> read_activation(const BuildContext& ctx, const std::string& prefix = "");

// Runs Y += broadcast(Z); Y = act(Y) on a plain f32 output, for shapes oneDNN's binary post-op
// does not take. Prepared once; run() allocates nothing.
class EpilogueFallback {
 public:
  // `z` is Z's shape (empty optional: no add), `act` may be absent.
  Status init(const BuildContext& ctx, const Shape& out, const Shape* z, const ActivationSpec& act);
  void run(float* y, const float* z);
  bool active() const { return has_z_ || has_act_; }

 private:
  bool has_z_ = false, has_act_ = false;
  Shape out_;
  std::vector<int64_t> z_strides_;
  DnnlCall eltwise_;
};

}  // namespace dlsys
