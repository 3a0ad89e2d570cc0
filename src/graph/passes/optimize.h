// Graph rewrite passes: rewrites of the IR that keep every graph output's value (up to
// floating-point reassociation inside fused kernels) and make plans smaller and faster. They run
// once per Session, before any plan is built, and need no shapes.
//
// optimize_graph() runs them in the order written in optimize.cpp (the one place the order is
// kept, each pass with the reason for its place); each pass is in its own file, named after it,
// and README.md says what each one matches. The fused ops they make (FusedConv, FusedMatMul,
// FusedGemm, QConv, QMatMul, ...) are documented in src/ops/README.md.
#pragma once

#include <string>
#include <vector>

#include "graph/ir.h"

namespace dlsys {

struct OptimizeOptions {
  bool fold_constants = true;
  bool fuse = true;  // the fusion passes (cleanup always runs)
  // PointwiseDepthwiseFusion: its kernel runs oneDNN's fused primitive where the 1x1 output is
  // large (>= 8 MiB: MobileNetV2 at batch 32) and the two convolutions below that
  // (src/graph/passes/README.md).
  bool fuse_pointwise_depthwise = true;
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
// Each appends one line per rewrite to `report` when it is non-null.
// `keep_weight_dequantize`: leave DequantizeLinear of int8 weights unfolded, for the quantized
// passes (which run after the others) to turn into int8 kernels.
int fold_constants(Graph* g, int64_t max_bytes, OptimizeReport* report,
                   bool keep_weight_dequantize = false);
int eliminate_identities(Graph* g, OptimizeReport* report);
int eliminate_common_subexpressions(Graph* g, OptimizeReport* report);
int eliminate_dead_nodes(Graph* g, OptimizeReport* report);
// TransposeElimination: Transposes moved down past element-wise ops, reductions and Squeeze
// until they meet their inverse and cancel (the pairs NHWC exporters put around convolutions);
// rewrites only where that leaves fewer Transposes. Returns the number of regions rewritten.
int eliminate_transposes(Graph* g, OptimizeReport* report);
int fold_conv_batchnorm(Graph* g, OptimizeReport* report);
int fuse_gelu(Graph* g, OptimizeReport* report);
int fuse_hardswish(Graph* g, OptimizeReport* report);
int fuse_layernorm(Graph* g, OptimizeReport* report);
int fuse_attention(Graph* g, OptimizeReport* report);
int pack_attention_inputs(Graph* g, OptimizeReport* report);
int fuse_matmul_bias(Graph* g, OptimizeReport* report);
int fuse_residual_add(Graph* g, OptimizeReport* report);
int fuse_activations(Graph* g, OptimizeReport* report);
int fuse_quantized_conv(Graph* g, OptimizeReport* report);
int fuse_quantized_maxpool(Graph* g, OptimizeReport* report);
int fuse_quantized_matmul(Graph* g, OptimizeReport* report);
int fuse_dynamic_quantized_matmul(Graph* g, OptimizeReport* report);
int fuse_pointwise_depthwise(Graph* g, OptimizeReport* report);

}  // namespace dlsys
