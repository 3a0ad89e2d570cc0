// The one registry of ops: ONNX op type -> schema (arity) and build function (type and shape
// inference plus a kernel prepared for concrete shapes).
#pragma once

#include <string>
#include <vector>

#include "ops/kernel.h"

namespace dlsys {

struct OpSchema {
  std::string name;
  int min_inputs = 0, max_inputs = 0;
  int min_outputs = 1, max_outputs = 1;
  BuildFn build = nullptr;
  // Bit i set: input i may arrive in a oneDNN layout (ValueDesc::layout); the planner reorders
  // other inputs to plain before the op.
  uint32_t layout_inputs = 0;
  // Bit i set: input i may be a STRING tensor (DType::kString); build_kernel() refuses string
  // inputs elsewhere, so no numeric kernel ever reads std::string objects as numbers.
  uint32_t string_inputs = 0;
  // The op may make STRING outputs (its kernel constructs them properly).
  bool string_outputs = false;
  // Bit i set: input i may be a sequence or an optional (a composite dtype, tensor/dtype.h); all
  // bits set: every input (control flow). build_kernel() refuses composite inputs elsewhere.
  uint32_t composite_inputs = 0;
  // The op may make sequence or optional outputs.
  bool composite_outputs = false;
  // The ONNX domain of the op: "" (ai.onnx) or "ai.onnx.ml" (LabelEncoder).
  std::string domain;
  // The op draws random values (RandomNormal, Bernoulli, Dropout in training mode, ...): the
  // planner never evaluates it when the plan is built, even on constant inputs, and the
  // optimizer neither folds nor merges it.
  bool random = false;
};

// The schema for op `op_type` (of the domain its OpSchema::domain names), or null if dlsys does
// not implement it.
const OpSchema* find_op(const std::string& op_type);
// Runs schema.build(ctx), refusing STRING inputs and outputs the op does not declare
// (string_inputs / string_outputs), and sequence/optional inputs and outputs likewise
// (composite_inputs / composite_outputs), with an Unsupported error naming the node. Every planner
// and graph pass builds kernels through this.
Result<KernelPtr> build_kernel(const OpSchema& schema, BuildContext& ctx);
// Every supported op type, sorted.
std::vector<std::string> supported_ops();
// Lowest and highest default-domain opset dlsys accepts.
constexpr int kMinOpset = 13;
constexpr int kMaxOpset = 17;

// Registration, one call per op family file (explicit: static libraries drop unused globals).
class OpRegistry;
void register_unary_ops(OpRegistry& r);
void register_binary_ops(OpRegistry& r);
void register_matmul_ops(OpRegistry& r);
void register_conv_ops(OpRegistry& r);
void register_int_conv_ops(OpRegistry& r);
void register_random_ops(OpRegistry& r);
void register_optimizer_ops(OpRegistry& r);
void register_pool_ops(OpRegistry& r);
void register_norm_ops(OpRegistry& r);
void register_softmax_ops(OpRegistry& r);
void register_reduce_ops(OpRegistry& r);
void register_shape_ops(OpRegistry& r);
void register_tensor_ops(OpRegistry& r);
void register_quant_ops(OpRegistry& r);
void register_qmatmul_ops(OpRegistry& r);
void register_grad_ops(OpRegistry& r);
void register_conv_grad_ops(OpRegistry& r);
void register_attention_ops(OpRegistry& r);
void register_loss_ops(OpRegistry& r);
void register_resize_ops(OpRegistry& r);
void register_rnn_ops(OpRegistry& r);
void register_index_ops(OpRegistry& r);
void register_detection_ops(OpRegistry& r);
void register_value_shape_ops(OpRegistry& r);
void register_local_norm_ops(OpRegistry& r);
void register_linalg_ops(OpRegistry& r);
void register_grid_sample_ops(OpRegistry& r);
void register_unpool_ops(OpRegistry& r);
void register_signal_ops(OpRegistry& r);
void register_bitwise_ops(OpRegistry& r);
void register_ml_ops(OpRegistry& r);
void register_text_ops(OpRegistry& r);
void register_control_flow_ops(OpRegistry& r);
void register_sequence_ops(OpRegistry& r);

class OpRegistry {
 public:
  void add(const std::string& name, int min_in, int max_in, int min_out, int max_out, BuildFn fn);
  void set_layout_inputs(const std::string& name, uint32_t mask);
  // Declares which inputs of `name` may be STRING and whether it makes STRING outputs.
  void set_strings(const std::string& name, uint32_t inputs, bool outputs);
  // Declares which inputs of `name` may be sequences or optionals (~0u: all) and whether it
  // makes them.
  void set_composites(const std::string& name, uint32_t inputs, bool outputs);
  void set_domain(const std::string& name, const std::string& domain);
  // Marks `name` as drawing random values (OpSchema::random).
  void set_random(const std::string& name);
  const OpSchema* find(const std::string& name) const;
  std::vector<std::string> names() const;

 private:
  std::map<std::string, OpSchema> ops_;
};

}  // namespace dlsys
