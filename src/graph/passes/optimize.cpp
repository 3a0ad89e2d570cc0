// The order of the rewrite passes: the one place it is written down (README.md's table follows
// it). Each pass is in its own file, named after it.
#include "graph/passes/optimize.h"

#include "ops/dnnl_util.h"

namespace dlsys {

OptimizeReport optimize_graph(Graph* g, const OptimizeOptions& opts) {
  OptimizeReport r;
  r.nodes_before = static_cast<int>(g->nodes.size());
  // Runs a pass's result into the report: its rewrite count is added under `name` (a pass that
  // runs in several rounds has one entry, in the order of its first run).
  auto run = [&](const char* name, int changes) {
    for (auto& p : r.passes)
      if (p.pass == name) {
        p.rewrites += changes;
        return changes;
      }
    r.passes.push_back(PassStats{name, changes});
    return changes;
  };

  // Cleanup and float fusions, repeated until a round changes nothing (at most 8 rounds): a
  // rewrite can expose work for a pass earlier in the list.
  for (int round = 0; round < 8; ++round) {
    int changes = 0;
    // Constants first, so that matchers see initializers; with fusion on, DequantizeLinear of
    // int8 weights stays for the quantized passes below.
    if (opts.fold_constants)
      changes += run("ConstantFolding", fold_constants(g, opts.max_folded_bytes, &r, opts.fuse));
    // Identity and inference Dropout sit between ops the fusions match.
    changes += run("IdentityElimination", eliminate_identities(g, &r));
    // The same op on the same inputs and attributes computed once.
    changes += run("CommonSubexpressionElimination", eliminate_common_subexpressions(g, &r));
    // Drops what the passes above disconnected: its readers would fail single-use checks.
    changes += run("DeadNodeElimination", eliminate_dead_nodes(g, &r));
    if (opts.fuse) {
      // Before every fusion: NHWC exports put a Transpose between each Conv and its BN, Add or
      // activation; after the cleanup, so that constants (Clip bounds, per-channel scales,
      // Squeeze axes) are initializers.
      changes += run("TransposeElimination", eliminate_transposes(g, &r));
      // Before the epilogue fusions: BN sits between a Conv and its Add/Relu.
      changes += run("ConvBatchNormFolding", fold_conv_batchnorm(g, &r));
      // Before ActivationFusion, which then takes the Gelu into its producer.
      changes += run("GeluFusion", fuse_gelu(g, &r));
      // x * HardSigmoid(x) and x * relu6(x + 3) / 6 -> HardSwish, for ActivationFusion likewise.
      changes += run("HardSwishFusion", fuse_hardswish(g, &r));
      // One LayerNormalization kernel instead of nine element-wise ops.
      changes += run("LayerNormFusion", fuse_layernorm(g, &r));
      // Before ResidualAddFusion, which would take an unscaled scores MatMul + mask Add.
      changes += run("AttentionFusion", fuse_attention(g, &r));
      // Q, K and V sliced from one QKV projection are read from it in place.
      changes += run("AttentionInputPacking", pack_attention_inputs(g, &r));
      // The bias first: FusedMatMul(A, B, bias) can still take a residual and an activation.
      changes += run("MatMulBiasFusion", fuse_matmul_bias(g, &r));
      // Before ActivationFusion: the activation applies to op + bias + Z.
      changes += run("ResidualAddFusion", fuse_residual_add(g, &r));
      // Last of the float epilogue: the producer's post-op chain is then complete.
      changes += run("ActivationFusion", fuse_activations(g, &r));
    }
    if (changes == 0) break;
  }
  if (!opts.fuse) {
    r.nodes_after = static_cast<int>(g->nodes.size());
    return r;
  }

  // Quantized passes, once, after the fixed point (they need the Conv + Relu + residual fusions
  // done), and only where int8 sums are exact (VNNI: see int8_kernels_exact).
  if (int8_kernels_exact()) {
    // DQ -> Conv [-> Q] -> QConv, the next tensor's quantization and an int8 residual folded in.
    int q = run("QuantizedConvFusion", fuse_quantized_conv(g, &r));
    // MaxPool between a DQ and a Q at one scale runs on the int8 values.
    q += run("QuantizedMaxPoolFusion", fuse_quantized_maxpool(g, &r));
    // DQ(activation) x DQ(int8 weight) [-> Q] -> QMatMul.
    q += run("QuantizedMatMulFusion", fuse_quantized_matmul(g, &r));
    // What is left of MatMul x DQ(int8 weight) quantizes its activation per run.
    q += run("DynamicQuantizedMatMulFusion", fuse_dynamic_quantized_matmul(g, &r));
    if (q > 0) eliminate_dead_nodes(g, &r);
  }
  // Weights of int8 patterns nothing above took become f32 constants again.
  if (opts.fold_constants && fold_constants(g, opts.max_folded_bytes, &r) > 0)
    eliminate_dead_nodes(g, &r);
  // Last: the quantized passes above need the float convolutions as they were.
  if (opts.fuse_pointwise_depthwise &&
      run("PointwiseDepthwiseFusion", fuse_pointwise_depthwise(g, &r)) > 0)
    eliminate_dead_nodes(g, &r);

  r.nodes_after = static_cast<int>(g->nodes.size());
  return r;
}

}  // namespace dlsys
