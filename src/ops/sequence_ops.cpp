// Sequence and optional values (tensor/dtype.h, composite dtypes): SequenceEmpty,
// SequenceConstruct, SequenceInsert, SequenceErase, SequenceAt, SequenceLength, SplitToSequence,
// ConcatFromSequence, SequenceMap, Optional, OptionalHasElement, OptionalGetElement.
//
// A sequence or optional is a rank-0 tensor holding one TensorList. An op that makes one writes
// the list of its output slot (a value that owns its storage, never in the arena), so its shape
// is static ({}) and nothing after it is planned at run time. Items are immutable: what enters a
// list is a clone of the input, what leaves it (SequenceAt, OptionalGetElement) a clone of the
// item, as a dynamic output (BuildContext::set_output_dynamic) since its shape is known only
// then. Positions are checked when the kernel runs; errors name the node, the position and the
// range.
#include <cstring>

#include "ops/op_registry.h"

namespace dlsys {
namespace {

constexpr int kManyValues = 1 << 16;  // the variadic ops' arity bound

Status expect_sequence(const BuildContext& ctx, size_t i) {
  if (!dtype_is_sequence(ctx.in_dtype(i)))
    return ctx.error("input {} must be a sequence, got a {} value", i, dtype_name(ctx.in_dtype(i)));
  return Status::OK();
}

Status expect_position(const BuildContext& ctx, size_t i) {
  if (!ctx.has_input(i)) return Status::OK();
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(i, {DType::kI32, DType::kI64}));
  if (shape_numel(ctx.in_shape(i)) != 1)
    return ctx.error("the position must be one value, got shape {}", shape_str(ctx.in_shape(i)));
  return Status::OK();
}

// Resolves `pos` (negative counts from the end) against a sequence of `n` items; `end_ok`: n
// itself is allowed (inserting at the back).
Result<int64_t> resolve_position(const std::string& node, const char* op, int64_t pos, int64_t n,
                                 bool end_ok) {
  const int64_t hi = end_ok ? n : n - 1;
  const int64_t p = pos < 0 ? pos + n : pos;
  if (p < 0 || p > hi)
    return Status::Invalid(
        "node '{}' ({}): position {} is out of range for a sequence of {} tensors (expected {} "
        "to {})",
        node, op, pos, n, -n, hi);
  return p;
}

// ---- Making sequences --------------------------------------------------------------------------

Result<KernelPtr> build_sequence_empty(BuildContext& ctx) {
  auto dt = dtype_from_onnx(static_cast<int>(ctx.attr_int("dtype", 1)));
  if (!dt.ok()) return ctx.unsupported("dtype: {}", dt.status().message());
  ctx.set_output(0, sequence_of(dt.value()), {});
  return make_kernel([](const Tensor* const*, Tensor* const* out) -> Status {
    out[0]->list()->items.clear();
    return Status::OK();
  });
}

Result<KernelPtr> build_sequence_construct(BuildContext& ctx) {
  const DType dt = ctx.in_dtype(0);
  for (size_t i = 1; i < ctx.num_inputs(); ++i)
    if (ctx.in_dtype(i) != dt)
      return ctx.error("input {} is {} and input 0 is {}: a sequence's tensors share one dtype", i,
                       dtype_name(ctx.in_dtype(i)), dtype_name(dt));
  ctx.set_output(0, sequence_of(dt), {});
  const size_t n = ctx.num_inputs();
  return make_kernel([n](const Tensor* const* in, Tensor* const* out) -> Status {
    std::vector<Tensor> items;
    for (size_t i = 0; i < n; ++i) items.push_back(in[i]->clone());
    out[0]->list()->items = std::move(items);
    return Status::OK();
  });
}

Result<KernelPtr> build_sequence_insert(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(expect_sequence(ctx, 0));
  const DType elem = element_dtype(ctx.in_dtype(0));
  if (ctx.in_dtype(1) != elem)
    return ctx.error("inserts a {} tensor into a {}: the dtypes must match",
                     dtype_name(ctx.in_dtype(1)), dtype_name(ctx.in_dtype(0)));
  DLSYS_RETURN_IF_ERROR(expect_position(ctx, 2));
  ctx.set_output(0, ctx.in_dtype(0), {});
  const std::string node = ctx.node_name();
  const bool has_pos = ctx.has_input(2);
  return make_kernel([node, has_pos](const Tensor* const* in, Tensor* const* out) -> Status {
    std::vector<Tensor> items = in[0]->list()->items;
    const int64_t n = static_cast<int64_t>(items.size());
    int64_t at = n;
    if (has_pos) {
      DLSYS_ASSIGN_OR_RETURN(at,
                             resolve_position(node, "SequenceInsert", in[2]->get_i64(0), n, true));
    }
    items.insert(items.begin() + at, in[1]->clone());
    out[0]->list()->items = std::move(items);
    return Status::OK();
  });
}

Result<KernelPtr> build_sequence_erase(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(expect_sequence(ctx, 0));
  DLSYS_RETURN_IF_ERROR(expect_position(ctx, 1));
  ctx.set_output(0, ctx.in_dtype(0), {});
  const std::string node = ctx.node_name();
  const bool has_pos = ctx.has_input(1);
  return make_kernel([node, has_pos](const Tensor* const* in, Tensor* const* out) -> Status {
    std::vector<Tensor> items = in[0]->list()->items;
    const int64_t n = static_cast<int64_t>(items.size());
    int64_t at;
    DLSYS_ASSIGN_OR_RETURN(
        at, resolve_position(node, "SequenceErase", has_pos ? in[1]->get_i64(0) : -1, n, false));
    items.erase(items.begin() + at);
    out[0]->list()->items = std::move(items);
    return Status::OK();
  });
}

// SplitToSequence(input, split?; axis, keepdims): pieces along `axis`. No split: pieces of one
// (the axis dropped unless keepdims); a scalar split: pieces of that length (the last may be
// shorter); a 1-D split: the pieces' lengths, which must add up to the axis.
Result<KernelPtr> build_split_to_sequence(BuildContext& ctx) {
  const DType dt = ctx.in_dtype(0);
  if (dtype_is_object(dt))
    return ctx.unsupported("splits numeric tensors, got a {} tensor", dtype_name(dt));
  const int64_t r = static_cast<int64_t>(ctx.in_shape(0).size());
  int64_t axis = ctx.attr_int("axis", 0);
  if (axis < -r || axis >= r)
    return ctx.error("axis {} is out of range for a rank-{} input", axis, r);
  if (axis < 0) axis += r;
  const bool keepdims = ctx.attr_int("keepdims", 1) != 0;
  const bool has_split = ctx.has_input(1);
  if (has_split) {
    DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(1, {DType::kI32, DType::kI64}));
    if (ctx.in_shape(1).size() > 1)
      return ctx.error("split must be a scalar or 1-D, got shape {}", shape_str(ctx.in_shape(1)));
  }
  ctx.set_output(0, sequence_of(dt), {});
  const std::string node = ctx.node_name();
  return make_kernel([=](const Tensor* const* in, Tensor* const* out) -> Status {
    const Tensor& x = *in[0];
    const int64_t len = x.dim(axis);
    std::vector<int64_t> sizes;
    if (!has_split) {
      sizes.assign(static_cast<size_t>(len), 1);
    } else if (in[1]->rank() == 0) {
      const int64_t k = in[1]->get_i64(0);
      if (k <= 0)
        return Status::Invalid("node '{}' (SplitToSequence): split {} must be positive", node, k);
      for (int64_t at = 0; at < len; at += k) sizes.push_back(std::min(k, len - at));
    } else {
      int64_t sum = 0;
      for (int64_t i = 0; i < in[1]->numel(); ++i) {
        const int64_t k = in[1]->get_i64(i);
        if (k < 0)
          return Status::Invalid("node '{}' (SplitToSequence): split[{}] = {} is negative", node, i,
                                 k);
        sizes.push_back(k);
        sum += k;
      }
      if (sum != len)
        return Status::Invalid(
            "node '{}' (SplitToSequence): the split lengths add up to {}, axis {} has {}", node,
            sum, axis, len);
    }
    const AxisSplit rw = split_at_axis(x.shape(), axis);
    const int64_t row = rw.inner * static_cast<int64_t>(dtype_size(x.dtype()));  // bytes
    std::vector<Tensor> items;
    int64_t at = 0;
    for (int64_t k : sizes) {
      Shape s = x.shape();
      s[static_cast<size_t>(axis)] = k;
      Tensor piece = Tensor::empty(x.dtype(), s);
      const char* src = static_cast<const char*>(x.data());
      char* dst = static_cast<char*>(piece.data());
      for (int64_t o = 0; o < rw.outer; ++o)
        std::memcpy(dst + o * k * row, src + (o * rw.n + at) * row, static_cast<size_t>(k * row));
      if (!has_split && !keepdims) s.erase(s.begin() + axis);
      items.push_back(piece.view(s));
      at += k;
    }
    out[0]->list()->items = std::move(items);
    return Status::OK();
  });
}

// ---- Reading sequences -------------------------------------------------------------------------

Result<KernelPtr> build_sequence_at(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(expect_sequence(ctx, 0));
  if (!ctx.has_input(1)) return ctx.error("needs the position input");
  DLSYS_RETURN_IF_ERROR(expect_position(ctx, 1));
  ctx.set_output_dynamic(0, element_dtype(ctx.in_dtype(0)));
  const std::string node = ctx.node_name();
  return make_kernel([node](const Tensor* const* in, Tensor* const* out) -> Status {
    const std::vector<Tensor>& items = in[0]->list()->items;
    int64_t at;
    DLSYS_ASSIGN_OR_RETURN(at, resolve_position(node, "SequenceAt", in[1]->get_i64(0),
                                                static_cast<int64_t>(items.size()), false));
    *out[0] = items[static_cast<size_t>(at)].clone();
    return Status::OK();
  });
}

Result<KernelPtr> build_sequence_length(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(expect_sequence(ctx, 0));
  ctx.set_output(0, DType::kI64, {});
  return make_kernel([](const Tensor* const* in, Tensor* const* out) -> Status {
    out[0]->data_as<int64_t>()[0] = static_cast<int64_t>(in[0]->list()->items.size());
    return Status::OK();
  });
}

// ConcatFromSequence(seq; axis, new_axis): the items joined along `axis`, or stacked along a new
// axis there (new_axis = 1). Items must agree on every other dimension.
Result<KernelPtr> build_concat_from_sequence(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(expect_sequence(ctx, 0));
  const DType elem = element_dtype(ctx.in_dtype(0));
  if (dtype_is_object(elem))
    return ctx.unsupported("joins numeric tensors, got a {}", dtype_name(ctx.in_dtype(0)));
  if (!ctx.has_attr("axis")) return ctx.error("needs the attribute 'axis'");
  const int64_t axis_attr = ctx.attr_int("axis", 0);
  const bool new_axis = ctx.attr_int("new_axis", 0) != 0;
  ctx.set_output_dynamic(0, elem);
  const std::string node = ctx.node_name();
  return make_kernel([=](const Tensor* const* in, Tensor* const* out) -> Status {
    const std::vector<Tensor>& items = in[0]->list()->items;
    if (items.empty())
      return Status::Invalid("node '{}' (ConcatFromSequence): the sequence is empty", node);
    const Shape& first = items[0].shape();
    const int64_t r = static_cast<int64_t>(first.size());
    const int64_t hi = new_axis ? r : r - 1;
    if (axis_attr < -hi - 1 || axis_attr > hi)
      return Status::Invalid(
          "node '{}' (ConcatFromSequence): axis {} is out of range for rank-{} items{}", node,
          axis_attr, r, new_axis ? " stacked on a new axis" : "");
    const int64_t axis = axis_attr < 0 ? axis_attr + hi + 1 : axis_attr;
    Shape joined = first;
    if (new_axis) joined.insert(joined.begin() + axis, 0);
    int64_t total = 0;
    for (size_t j = 0; j < items.size(); ++j) {
      const Shape& s = items[j].shape();
      bool fits = static_cast<int64_t>(s.size()) == r;
      for (int64_t d = 0; fits && d < r; ++d) fits = s[d] == first[d] || (!new_axis && d == axis);
      if (!fits)
        return Status::Invalid(
            "node '{}' (ConcatFromSequence): item {} has shape {} and item 0 {}: they must "
            "agree except along axis {}",
            node, j, shape_str(s), shape_str(first),
            new_axis ? std::string("(new)") : fmt::format("{}", axis));
      total += new_axis ? 1 : s[static_cast<size_t>(axis)];
    }
    joined[static_cast<size_t>(axis)] = total;
    Tensor y = Tensor::empty(elem, joined);
    const AxisSplit yr = split_at_axis(joined, axis);
    const int64_t row = yr.inner * static_cast<int64_t>(dtype_size(elem));  // bytes
    char* dst = static_cast<char*>(y.data());
    int64_t at = 0;
    for (const Tensor& t : items) {
      const int64_t k = new_axis ? 1 : t.dim(axis);
      const char* src = static_cast<const char*>(t.data());
      for (int64_t o = 0; o < yr.outer; ++o)
        std::memcpy(dst + (o * yr.n + at) * row, src + o * k * row, static_cast<size_t>(k * row));
      at += k;
    }
    *out[0] = std::move(y);
    return Status::OK();
  });
}

// SequenceMap(input_sequence, additional_inputs...; body): runs the body once per item; the
// additional inputs that are sequences give it their item at the same position, the tensors
// are given whole. Output k is the sequence of the body's output k. The body is planned when the
// node is, for the items' shapes when the sequence is known then, else for rank-0 items (and
// planned again for the shapes a run brings: SubgraphRunner::run).
Result<KernelPtr> build_sequence_map(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(expect_sequence(ctx, 0));
  const Attribute* a = ctx.attr("body");
  if (!a || a->kind != Attribute::Kind::kGraph || !a->g)
    return ctx.error("needs the subgraph attribute 'body'");
  DLSYS_ASSIGN_OR_RETURN(SubgraphArity arity, ctx.subgraph_arity(*a->g));
  const size_t n_outer = arity.outer_inputs;
  if (ctx.num_inputs() < 1 + n_outer)
    return Status::Internal("SequenceMap: {} inputs for {} outer values", ctx.num_inputs(),
                            n_outer);
  const size_t n_in = ctx.num_inputs() - n_outer;
  if (arity.inputs != ctx.num_inputs())
    return ctx.error("the body takes {} inputs, the node gives it {}", arity.inputs - n_outer,
                     n_in);
  if (arity.outputs != ctx.num_outputs())
    return ctx.error("the node has {} outputs, its body {}", ctx.num_outputs(), arity.outputs);
  std::vector<bool> is_seq(n_in);
  std::vector<ValueDesc> descs;
  for (size_t i = 0; i < ctx.num_inputs(); ++i) {
    ValueDesc d = ctx.input(i);
    if (i < n_in && dtype_is_sequence(d.dtype)) {
      is_seq[i] = true;
      const Tensor* v = ctx.in_value(i);
      d.dtype = element_dtype(d.dtype);
      d.shape = v && !v->list()->items.empty() ? v->list()->items[0].shape() : Shape{};
      d.value = nullptr;
    } else if (dtype_is_composite(d.dtype)) {
      return ctx.unsupported("input {} is a {} value: the body takes tensors", i,
                             dtype_name(d.dtype));
    }
    descs.push_back(d);
  }
  bool placeholders = false;
  for (size_t i = 0; i < n_in; ++i) placeholders = placeholders || (is_seq[i] && !ctx.in_value(i));
  auto planned = ctx.plan_subgraph(*a->g, descs);
  if (!planned.ok())
    return planned.status().with_context(
        placeholders ? "body (planned for rank-0 items: the sequences' items are known only when "
                       "the node runs)"
                     : "body");
  std::unique_ptr<SubgraphRunner> body = std::move(planned).value();
  for (size_t k = 0; k < ctx.num_outputs(); ++k) {
    const DType odt = body->output_dtypes()[k];
    if (dtype_is_object(odt))
      return ctx.unsupported("body output {} is a {} value: SequenceMap collects tensors", k,
                             dtype_name(odt));
    ctx.set_output(k, sequence_of(odt), {});
  }
  struct State {
    std::unique_ptr<SubgraphRunner> body;
    std::vector<bool> is_seq;
    std::vector<DType> odt;
    size_t n_total = 0, n_out = 0;
    std::string node;
    std::vector<Tensor> ins, outs;
  };
  auto st = std::make_shared<State>();
  st->body = std::move(body);
  st->is_seq = is_seq;
  st->odt = st->body->output_dtypes();
  st->n_total = ctx.num_inputs();
  st->n_out = ctx.num_outputs();
  st->node = ctx.node_name();
  st->ins.resize(st->n_total);
  return make_kernel([st](const Tensor* const* in, Tensor* const* out) -> Status {
    const size_t n = in[0]->list()->items.size();
    for (size_t i = 1; i < st->is_seq.size(); ++i)
      if (st->is_seq[i] && in[i]->list()->items.size() != n)
        return Status::Invalid(
            "node '{}' (SequenceMap): input {} has {} tensors and the input sequence {}: "
            "sequences are mapped item by item",
            st->node, i, in[i]->list()->items.size(), n);
    std::vector<std::vector<Tensor>> results(st->n_out);
    for (size_t j = 0; j < n; ++j) {
      for (size_t i = 0; i < st->n_total; ++i)
        st->ins[i] = i < st->is_seq.size() && st->is_seq[i] ? in[i]->list()->items[j] : *in[i];
      Status s = st->body->run(st->ins, &st->outs);
      if (!s.ok())
        return s.with_context(fmt::format("node '{}' (SequenceMap), item {}", st->node, j));
      for (size_t k = 0; k < st->n_out; ++k) results[k].push_back(st->outs[k].clone());
    }
    for (size_t k = 0; k < st->n_out; ++k)
      if (out[k]) out[k]->list()->items = std::move(results[k]);
    return Status::OK();
  });
}

// ---- Optionals ---------------------------------------------------------------------------------

// Optional(input?; type): an optional holding the input, or an empty one of `type`.
Result<KernelPtr> build_optional(BuildContext& ctx) {
  if (ctx.has_input(0)) {
    if (dtype_is_optional(ctx.in_dtype(0)))
      return ctx.unsupported("an optional of an optional ({}) is not represented",
                             dtype_name(ctx.in_dtype(0)));
    ctx.set_output(0, optional_of(ctx.in_dtype(0)), {});
    return make_kernel([](const Tensor* const* in, Tensor* const* out) -> Status {
      out[0]->list()->items.assign(1, in[0]->clone());
      return Status::OK();
    });
  }
  if (!ctx.has_attr("type")) return ctx.error("without an input it needs the attribute 'type'");
  const DType inner = static_cast<DType>(ctx.attr_int("type", 0));
  if (dtype_is_optional(inner))
    return ctx.unsupported("an optional of an optional ({}) is not represented", dtype_name(inner));
  ctx.set_output(0, optional_of(inner), {});
  return make_kernel([](const Tensor* const*, Tensor* const* out) -> Status {
    out[0]->list()->items.clear();
    return Status::OK();
  });
}

// OptionalHasElement(input?): whether the optional holds a value (a tensor or sequence input
// always does; no input never).
Result<KernelPtr> build_optional_has_element(BuildContext& ctx) {
  ctx.set_output(0, DType::kBool, {});
  const bool has = ctx.has_input(0);
  const bool optional = has && dtype_is_optional(ctx.in_dtype(0));
  return make_kernel([has, optional](const Tensor* const* in, Tensor* const* out) -> Status {
    out[0]->data_as<uint8_t>()[0] = optional ? !in[0]->list()->items.empty() : has;
    return Status::OK();
  });
}

// OptionalGetElement(input): the optional's value (an error naming the node when it is empty); a
// tensor or sequence input is passed through.
Result<KernelPtr> build_optional_get_element(BuildContext& ctx) {
  if (!dtype_is_optional(ctx.in_dtype(0))) {
    ctx.alias_output(0, 0, ctx.in_shape(0));
    return KernelPtr();
  }
  const DType inner = element_dtype(ctx.in_dtype(0));
  const bool seq = dtype_is_sequence(inner);
  if (seq)
    ctx.set_output(0, inner, {});
  else
    ctx.set_output_dynamic(0, inner);
  const std::string node = ctx.node_name();
  return make_kernel([node, seq](const Tensor* const* in, Tensor* const* out) -> Status {
    const std::vector<Tensor>& items = in[0]->list()->items;
    if (items.empty())
      return Status::Invalid(
          "node '{}' (OptionalGetElement): the optional is empty (check with "
          "OptionalHasElement first)",
          node);
    if (seq)
      out[0]->list()->items = items[0].list()->items;
    else
      *out[0] = items[0].clone();
    return Status::OK();
  });
}

}  // namespace

void register_sequence_ops(OpRegistry& r) {
  r.add("SequenceEmpty", 0, 0, 1, 1, build_sequence_empty);
  r.add("SequenceConstruct", 1, kManyValues, 1, 1, build_sequence_construct);
  r.add("SequenceInsert", 2, 3, 1, 1, build_sequence_insert);
  r.add("SequenceErase", 1, 2, 1, 1, build_sequence_erase);
  r.add("SequenceAt", 2, 2, 1, 1, build_sequence_at);
  r.add("SequenceLength", 1, 1, 1, 1, build_sequence_length);
  r.add("SplitToSequence", 1, 2, 1, 1, build_split_to_sequence);
  r.add("ConcatFromSequence", 1, 1, 1, 1, build_concat_from_sequence);
  r.add("SequenceMap", 1, kManyValues, 1, kManyValues, build_sequence_map);
  r.add("Optional", 0, 1, 1, 1, build_optional);
  r.add("OptionalHasElement", 0, 1, 1, 1, build_optional_has_element);
  r.add("OptionalGetElement", 1, 1, 1, 1, build_optional_get_element);
  for (const char* op : {"SequenceEmpty", "SequenceConstruct", "SplitToSequence"})
    r.set_composites(op, 0u, true);
  for (const char* op : {"SequenceInsert", "SequenceErase", "SequenceMap"})
    r.set_composites(op, ~0u, true);
  for (const char* op : {"SequenceAt", "SequenceLength", "ConcatFromSequence"})
    r.set_composites(op, 1u, false);
  for (const char* op : {"Optional", "OptionalGetElement"}) r.set_composites(op, 1u, true);
  r.set_composites("OptionalHasElement", 1u, false);
}

}  // namespace dlsys
