// Graph optimization passes: rewrites of the IR that keep every graph output's value (up to
// floating-point reassociation inside fused kernels) and make plans smaller and faster. They run
// once per Session, before any plan is built, and need no shapes.
//
// Cleanup: ConstantFolding (nodes whose inputs are all initializers become initializers),
// IdentityElimination (Identity, inference Dropout), CommonSubexpressionElimination,
// DeadNodeElimination (and unused initializers).
// Fusion: ConvBatchNormFolding (BN scale/shift folded into the conv's weights and bias),
// GeluFusion (Erf-based GELU -> Gelu), LayerNormFusion (ReduceMean/Sub/Pow/Sqrt/Div/Mul/Add ->
// LayerNormalization), AttentionFusion (Transpose/MatMul/scale/[mask Add]/Softmax/MatMul/Transpose
// of multi-head attention -> ScaledDotProductAttention), MatMulBiasFusion (MatMul + Add of a 1-D
// constant -> FusedMatMul), ResidualAddFusion (Conv/MatMul/Gemm + Add -> Fused* with a summed input
// Z) and ActivationFusion (Relu, Clip, LeakyRelu, Sigmoid, Tanh, Gelu, Elu, HardSwish -> the
// producer's oneDNN post-op). The fused ops (FusedConv, FusedMatMul, FusedGemm) are documented in
// src/ops/README.md.
// Quantized (after the others reach a fixed point): QuantizedConvFusion (DequantizeLinear ->
// Conv/FusedConv [-> QuantizeLinear] -> QConv on int8 kernels, the next tensor's quantization
// and an int8 residual folded in), QuantizedMaxPoolFusion (DQ -> MaxPool -> Q at one scale ->
// MaxPool on int8), QuantizedMatMulFusion (MatMul or Gemm of DQ(u8/s8 activation) and DQ(int8
// weights) [-> Q] -> QMatMul on an int8 oneDNN matmul), DynamicQuantizedMatMulFusion
// (MatMul/FusedMatMul of a float activation and DequantizeLinear(int8 weights) -> QMatMulDynamic).
// Then the int8 weights nothing fused are dequantized by constant folding.
// Last: PointwiseDepthwiseFusion (a 1x1 Conv read only by a 3x3 depthwise Conv, pads 1, stride 1
// or 2 -> FusedConvDepthwise, one oneDNN convolution with a depthwise post-op).
#pragma once

#include <string>
#include <vector>

#include "graph/ir.h"

namespace dlsys {

struct OptimizeOptions {
  bool fold_constants = true;
  bool fuse = true;                     // the fusion passes (cleanup always runs)
  int64_t max_folded_bytes = 64 << 20;  // constant folding never creates a larger initializer
};

struct PassStats {
  std::string pass;
  int rewrites = 0;  // how many times the pass changed the graph
};

struct OptimizeReport {
  int nodes_before = 0, nodes_after = 0;
  std::vector<PassStats> passes;
  std::vector<std::string>
      rewrites;  // one line per rewrite: "FusedConv 'x' <- Conv 'x' + Relu 'y'"
};

// Runs every pass to a fixed point. Never fails: a rewrite that does not apply is skipped.
OptimizeReport optimize_graph(Graph* g, const OptimizeOptions& opts = {});

// The individual passes, each returning the number of rewrites (tests call them one by one).
// `keep_weight_dequantize`: leave DequantizeLinear of int8 weights unfolded, for the quantized
// passes (which run after the others) to turn into int8 kernels.
int fold_constants(Graph* g, int64_t max_bytes, OptimizeReport* report,
                   bool keep_weight_dequantize = false);
int eliminate_identities(Graph* g, OptimizeReport* report);
int eliminate_common_subexpressions(Graph* g, OptimizeReport* report);
int eliminate_dead_nodes(Graph* g, OptimizeReport* report);
int fold_conv_batchnorm(Graph* g, OptimizeReport* report);
int fuse_gelu(Graph* g, OptimizeReport* report);
int fuse_layernorm(Graph* g, OptimizeReport* report);
int fuse_attention(Graph* g, OptimizeReport* report);
int fuse_matmul_bias(Graph* g, OptimizeReport* report);
int fuse_residual_add(Graph* g, OptimizeReport* report);
int fuse_activations(Graph* g, OptimizeReport* report);
int fuse_quantized_conv(Graph* g, OptimizeReport* report);
int fuse_quantized_maxpool(Graph* g, OptimizeReport* report);
int fuse_quantized_matmul(Graph* g, OptimizeReport* report);
int fuse_dynamic_quantized_matmul(Graph* g, OptimizeReport* report);
int fuse_pointwise_depthwise(Graph* g, OptimizeReport* report);

}  // namespace dlsys
