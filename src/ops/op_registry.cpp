#include "ops/op_registry.h"

#include "core/check.h"

namespace dlsys {

void OpRegistry::add(const std::string& name, int min_in, int max_in, int min_out, int max_out,
                     BuildFn fn) {
  DLSYS_CHECK(!ops_.count(name), "op {} registered twice: check the register_*_ops functions",
              name);
  OpSchema s;
  s.name = name;
  s.min_inputs = min_in, s.max_inputs = max_in, s.min_outputs = min_out, s.max_outputs = max_out;
  s.build = fn;
  ops_[name] = std::move(s);
}

void OpRegistry::set_layout_inputs(const std::string& name, uint32_t mask) {
  DLSYS_CHECK(ops_.count(name), "set_layout_inputs({}) before add({}): register the op first", name,
              name);
  ops_[name].layout_inputs = mask;
}

void OpRegistry::set_strings(const std::string& name, uint32_t inputs, bool outputs) {
  DLSYS_CHECK(ops_.count(name), "set_strings({}) before add({}): register the op first", name,
              name);
  ops_[name].string_inputs = inputs;
  ops_[name].string_outputs = outputs;
}

void OpRegistry::set_composites(const std::string& name, uint32_t inputs, bool outputs) {
  DLSYS_CHECK(ops_.count(name), "set_composites({}) before add({}): register the op first", name,
              name);
  ops_[name].composite_inputs = inputs;
  ops_[name].composite_outputs = outputs;
}

void OpRegistry::set_domain(const std::string& name, const std::string& domain) {
  DLSYS_CHECK(ops_.count(name), "set_domain({}) before add({}): register the op first", name, name);
  ops_[name].domain = domain;
}

void OpRegistry::set_random(const std::string& name) {
  DLSYS_CHECK(ops_.count(name), "set_random({}) before add({}): register the op first", name, name);
  ops_[name].random = true;
}

const OpSchema* OpRegistry::find(const std::string& name) const {
  auto it = ops_.find(name);
  return it == ops_.end() ? nullptr : &it->second;
}

std::vector<std::string> OpRegistry::names() const {
  std::vector<std::string> out;
  for (auto& [k, v] : ops_) out.push_back(k);
  return out;
}

static const OpRegistry& registry() {
  static const OpRegistry r = [] {
    OpRegistry reg;
    register_unary_ops(reg);
    register_binary_ops(reg);
    register_matmul_ops(reg);
    register_conv_ops(reg);
    register_int_conv_ops(reg);
    register_random_ops(reg);
    register_optimizer_ops(reg);
    register_pool_ops(reg);
    register_norm_ops(reg);
    register_softmax_ops(reg);
    register_reduce_ops(reg);
    register_shape_ops(reg);
    register_tensor_ops(reg);
    register_quant_ops(reg);
    register_qmatmul_ops(reg);
    register_grad_ops(reg);
    register_conv_grad_ops(reg);
    register_attention_ops(reg);
    register_loss_ops(reg);
    register_resize_ops(reg);
    register_rnn_ops(reg);
    register_index_ops(reg);
    register_detection_ops(reg);
    register_value_shape_ops(reg);
    register_local_norm_ops(reg);
    register_linalg_ops(reg);
    register_grid_sample_ops(reg);
    register_unpool_ops(reg);
    register_signal_ops(reg);
    register_bitwise_ops(reg);
    register_ml_ops(reg);
    register_text_ops(reg);
    register_control_flow_ops(reg);
    register_sequence_ops(reg);
    return reg;
  }();
  return r;
}

const OpSchema* find_op(const std::string& op_type) {
  return registry().find(op_type);
}
std::vector<std::string> supported_ops() {
  return registry().names();
}

Result<KernelPtr> build_kernel(const OpSchema& schema, BuildContext& ctx) {
  auto string_ops = [] {
    std::string list;
    for (const auto& n : registry().names())
      if (registry().find(n)->string_inputs) list += (list.empty() ? "" : ", ") + n;
    return list;
  };
  for (size_t i = 0; i < ctx.num_inputs(); ++i)
    if (ctx.has_input(i) && ctx.in_dtype(i) == DType::kString && !(schema.string_inputs >> i & 1u))
      return ctx.unsupported(
          "input {} is a STRING tensor; {} takes numbers there (the ops that take strings: {})", i,
          ctx.op_type(), string_ops());
  for (size_t i = 0; i < ctx.num_inputs(); ++i) {
    const bool allowed =
        schema.composite_inputs == ~0u || (i < 32 && (schema.composite_inputs >> i & 1u));
    if (ctx.has_input(i) && dtype_is_composite(ctx.in_dtype(i)) && !allowed)
      return ctx.unsupported(
          "input {} is a {} value (a {}); {} takes a tensor there (the ops that take sequences "
          "and optionals: {})",
          i, dtype_name(ctx.in_dtype(i)),
          dtype_is_sequence(ctx.in_dtype(i)) ? "sequence" : "optional", ctx.op_type(), [] {
            std::string list;
            for (const auto& n : registry().names())
              if (registry().find(n)->composite_inputs) list += (list.empty() ? "" : ", ") + n;
            return list;
          }());
  }
  DLSYS_ASSIGN_OR_RETURN(KernelPtr k, schema.build(ctx));
  if (!schema.composite_outputs)
    for (size_t i = 0; i < ctx.num_outputs(); ++i) {
      const OutputDesc& od = ctx.outputs()[i];
      if (od.set && dtype_is_composite(od.dtype) && od.alias_of_input < 0)
        return ctx.unsupported("output {} would be a {} value; {} makes no sequences or optionals",
                               i, dtype_name(od.dtype), ctx.op_type());
    }
  if (!schema.string_outputs)
    for (size_t i = 0; i < ctx.num_outputs(); ++i) {
      const OutputDesc& od = ctx.outputs()[i];
      if (od.set && od.dtype == DType::kString && od.alias_of_input < 0)
        return ctx.unsupported("output {} would be a STRING tensor; {} makes no strings in dlsys",
                               i, ctx.op_type());
    }
  return k;
}

// ---- BuildContext -------------------------------------------------------------------------

dnnl::engine& dnnl_engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

dnnl::stream& dnnl_stream() {
  static dnnl::stream s(dnnl_engine());
  return s;
}

Result<SubgraphArity> BuildContext::subgraph_arity(const Graph& g) const {
  if (!subgraph_planner_)
    return unsupported(
        "its subgraphs are planned only when the whole graph is (not while "
        "folding constants)");
  return subgraph_planner_->arity(g);
}

Result<std::unique_ptr<SubgraphRunner>> BuildContext::plan_subgraph(
    const Graph& g, const std::vector<ValueDesc>& inputs) const {
  if (!subgraph_planner_)
    return unsupported(
        "its subgraphs are planned only when the whole graph is (not while "
        "folding constants)");
  auto r = subgraph_planner_->plan(g, inputs);
  if (!r.ok()) return r.status().with_context(where().substr(0, where().size() - 2));
  return r;
}

BuildContext::BuildContext(std::string node_name, std::string op_type, int opset,
                           const AttributeMap& attrs, std::vector<const ValueDesc*> inputs,
                           size_t num_outputs, std::vector<bool> output_used)
    : node_name_(std::move(node_name)),
      op_type_(std::move(op_type)),
      opset_(opset),
      attrs_(attrs),
      inputs_(std::move(inputs)),
      outputs_(num_outputs),
      used_(std::move(output_used)) {}

std::string BuildContext::where() const {
  return fmt::format("node '{}' ({}): ", node_name_, op_type_);
}

void BuildContext::set_output(size_t i, DType dtype, const Shape& shape) {
  if (i >= outputs_.size()) return;
  outputs_[i].dtype = dtype;
  outputs_[i].shape = shape;
  outputs_[i].set = true;
}

void BuildContext::set_output_value(size_t i, Tensor value) {
  if (i >= outputs_.size()) return;
  set_output(i, value.dtype(), value.shape());
  outputs_[i].value = std::move(value);
}

void BuildContext::set_output_dynamic(size_t i, DType dtype) {
  if (i >= outputs_.size()) return;
  set_output(i, dtype, {});
  outputs_[i].dynamic = true;
}

void BuildContext::alias_output(size_t i, size_t input, const Shape& shape) {
  if (i >= outputs_.size()) return;
  set_output(i, in_dtype(input), shape);
  outputs_[i].alias_of_input = static_cast<int>(input);
}

void BuildContext::set_output_layout(size_t i, const dnnl::memory::desc& md) {
  if (i < outputs_.size()) outputs_[i].layout = md;
}

const Attribute* BuildContext::attr(const std::string& name) const {
  auto it = attrs_.find(name);
  return it == attrs_.end() ? nullptr : &it->second;
}

int64_t BuildContext::attr_int(const std::string& name, int64_t def) const {
  const Attribute* a = attr(name);
  return a ? a->i : def;
}

float BuildContext::attr_float(const std::string& name, float def) const {
  const Attribute* a = attr(name);
  return a ? a->f : def;
}

std::string BuildContext::attr_string(const std::string& name, const std::string& def) const {
  const Attribute* a = attr(name);
  return a ? a->s : def;
}

std::vector<int64_t> BuildContext::attr_ints(const std::string& name) const {
  const Attribute* a = attr(name);
  return a ? a->ints : std::vector<int64_t>{};
}

std::vector<float> BuildContext::attr_floats(const std::string& name) const {
  const Attribute* a = attr(name);
  return a ? a->floats : std::vector<float>{};
}

Status BuildContext::plan_time_value_missing(size_t i, const char* what) const {
  // PlanCache and the planner look for "computable when the plan is built" to plan again with
  // the value known (needs_plan_time_value).
  missing_value_input_ = static_cast<int>(i);
  return unsupported(
      "input {} ('{}') must be computable when the plan is built (a constant, a function of "
      "input shapes, or a value of at most 64 numbers, which dlsys plans for per value)",
      i, what);
}

Result<std::vector<int64_t>> BuildContext::const_ints(size_t i, const char* what) const {
  const Tensor* v = in_value(i);
  if (!v) return plan_time_value_missing(i, what);
  if (v->dtype() != DType::kI64 && v->dtype() != DType::kI32)
    return error("input {} ('{}') must be int64 or int32, got {}", i, what, dtype_name(v->dtype()));
  std::vector<int64_t> out(static_cast<size_t>(v->numel()));
  for (int64_t k = 0; k < v->numel(); ++k) out[k] = v->get_i64(k);
  return out;
}

Result<std::vector<float>> BuildContext::const_floats(size_t i, const char* what) const {
  const Tensor* v = in_value(i);
  if (!v) return plan_time_value_missing(i, what);
  if (v->dtype() != DType::kF32)
    return error("input {} ('{}') must be float32, got {}", i, what, dtype_name(v->dtype()));
  return std::vector<float>(v->data_as<float>(), v->data_as<float>() + v->numel());
}

Status BuildContext::expect_dtype(size_t i, std::initializer_list<DType> allowed) const {
  for (DType d : allowed)
    if (in_dtype(i) == d) return Status::OK();
  std::string names;
  for (DType d : allowed) names += std::string(names.empty() ? "" : ", ") + dtype_name(d);
  return unsupported("input {} has dtype {}; this op supports {}", i, dtype_name(in_dtype(i)),
                     names);
}

}  // namespace dlsys
