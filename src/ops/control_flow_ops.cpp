// Control flow: If, Loop and Scan. Each node's subgraphs (graph/ir.h: Graph::outer_inputs says
// how they read outer values) are planned once, when the node is, for the shapes the node sees
// (BuildContext::plan_subgraph), and run through those plans: nothing is imported or planned
// per run (a body run with other shapes is planned for them on first use, then cached).
//   - If: when both branches give the same shapes (or the condition is known at plan time, and
//     only its branch is planned) the outputs are planned buffers; otherwise they are dynamic
//     (BuildContext::set_output_dynamic): the taken branch's own buffers, and what reads them is
//     planned once their shapes are known (graph/plan.h, "Run-time shapes").
//   - Loop: static when every carried value keeps its shape and the scan outputs' length is
//     known at plan time (M known, and a body that passes its condition through): carried
//     values then live in two buffers per value, written in turn (Carried), and scan rows are
//     written in place. Otherwise dynamic: carried values are copied per iteration (a decoded
//     sequence that grows by one token), scan rows are collected and stacked when the loop
//     stops (an early exit gives fewer rows).
//   - Scan: a loop-carried value keeps its dtype and shape across iterations.
// Sequences and optionals (rank-0 values holding a list, tensor/dtype.h) pass through If's
// outputs and Loop's carried values like tensors of an unchanging shape; copying one copies its
// list (copy_into). They cannot be scan outputs or go through Scan.
#include <algorithm>
#include <cstring>
#include <limits>

#include "ops/op_registry.h"

namespace dlsys {
namespace {

constexpr int kManyValues = 1 << 16;  // the variadic ops' arity bound
// A Loop body that needs its iteration number at plan time is planned once per iteration, up
// to this many.
constexpr int64_t kMaxUnrolledIterations = 256;

// A sequence or optional is copied as its list (the items are shared: never written).
void copy_into(const Tensor& src, Tensor* dst) {
  if (!dst) return;
  if (dtype_is_composite(src.dtype()))
    *dst->list() = *src.list();
  else if (src.nbytes())
    std::memcpy(dst->data(), src.data(), src.nbytes());
}

// Copies slice `index` of `src` along `axis` into `dst` (shape without that axis).
void take_slice(const Tensor& src, int64_t axis, int64_t index, Tensor* dst) {
  const AxisSplit a = split_at_axis(src.shape(), axis);
  const int64_t row = a.inner * static_cast<int64_t>(dtype_size(src.dtype()));  // bytes
  const char* s = static_cast<const char*>(src.data());
  char* d = static_cast<char*>(dst->data());
  for (int64_t o = 0; o < a.outer; ++o)
    std::memcpy(d + o * row, s + (o * a.n + index) * row, static_cast<size_t>(row));
}

// Writes `slice` as slice `index` of `dst` along `axis`.
void put_slice(const Tensor& slice, int64_t axis, int64_t index, Tensor* dst) {
  const AxisSplit a = split_at_axis(dst->shape(), axis);
  const int64_t row = a.inner * static_cast<int64_t>(dtype_size(dst->dtype()));  // bytes
  const char* s = static_cast<const char*>(slice.data());
  char* d = static_cast<char*>(dst->data());
  for (int64_t o = 0; o < a.outer; ++o)
    std::memcpy(d + (o * a.n + index) * row, s + o * row, static_cast<size_t>(row));
}

// The node's subgraph attribute `name` and its arity, or an error naming it.
struct Sub {
  const Graph* g = nullptr;
  SubgraphArity arity;
};
Result<Sub> subgraph(const BuildContext& ctx, const char* name) {
  const Attribute* a = ctx.attr(name);
  if (!a || a->kind != Attribute::Kind::kGraph || !a->g)
    return ctx.error("needs the subgraph attribute '{}'", name);
  DLSYS_ASSIGN_OR_RETURN(SubgraphArity arity, ctx.subgraph_arity(*a->g));
  return Sub{a->g.get(), arity};
}

// The descriptors of the node's trailing inputs: the outer values its subgraphs read.
std::vector<ValueDesc> outer_descs(const BuildContext& ctx, size_t first) {
  std::vector<ValueDesc> out;
  for (size_t i = first; i < ctx.num_inputs(); ++i) out.push_back(ctx.input(i));
  return out;
}

bool truthy(const Tensor& t) {
  return t.numel() > 0 && t.data_as<uint8_t>()[0] != 0;
}

// Loop and Scan: loop-carried value i enters as `in[i]` and must leave the body with the same
// dtype and shape (body output first_out + i); sets node outputs 0..n-1 to them.
Status check_and_set_carried(BuildContext& ctx, const ValueDesc* in, size_t n,
                             const std::vector<DType>& odt, const std::vector<Shape>& osh,
                             size_t first_out) {
  for (size_t i = 0; i < n; ++i) {
    if (odt[first_out + i] != in[i].dtype || osh[first_out + i] != in[i].shape)
      return ctx.unsupported(
          "loop-carried value {} enters as {} {} and leaves the body as {} {}: values whose "
          "dtype or shape changes between iterations are not supported",
          i, dtype_name(in[i].dtype), shape_str(in[i].shape), dtype_name(odt[first_out + i]),
          shape_str(osh[first_out + i]));
    ctx.set_output(i, in[i].dtype, in[i].shape);
  }
  return Status::OK();
}

// Loop-carried values in two buffer sets written in turn: an iteration's outputs may be views of
// the body plan's buffers, which its next run overwrites.
struct Carried {
  std::vector<Tensor> bufs[2];
  int cur = -1;  // the set holding the current values (-1: still the node's inputs)

  void allocate(const ValueDesc* in, size_t n) {
    for (auto& b : bufs)
      for (size_t i = 0; i < n; ++i) b.push_back(Tensor::empty(in[i].dtype, in[i].shape));
  }
  // Copies the body's outputs [from, from + n) into the other set and makes that set the body's
  // inputs [at, at + n) for the next iteration.
  void advance(const std::vector<Tensor>& outs, size_t from, std::vector<Tensor>* ins, size_t at) {
    const int next = cur == 0 ? 1 : 0;
    for (size_t i = 0; i < bufs[next].size(); ++i) {
      copy_into(outs[from + i], &bufs[next][i]);
      (*ins)[at + i] = bufs[next][i];
    }
    cur = next;
  }
};

// ---- If ---------------------------------------------------------------------------------------

Result<KernelPtr> build_if(BuildContext& ctx) {
  DLSYS_ASSIGN_OR_RETURN(Sub then_g, subgraph(ctx, "then_branch"));
  DLSYS_ASSIGN_OR_RETURN(Sub else_g, subgraph(ctx, "else_branch"));
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kBool}));
  if (shape_numel(ctx.in_shape(0)) != 1)
    return ctx.error("the condition must have one element, got shape {}",
                     shape_str(ctx.in_shape(0)));
  const size_t n_outer = then_g.arity.outer_inputs;
  if (ctx.num_inputs() != 1 + n_outer)
    return Status::Internal("If: {} inputs for {} outer values", ctx.num_inputs(), n_outer);
  std::vector<ValueDesc> outer = outer_descs(ctx, 1);
  const Tensor* known = ctx.in_value(0);
  std::unique_ptr<SubgraphRunner> then_r, else_r;
  if (!known || truthy(*known)) {
    auto r = ctx.plan_subgraph(*then_g.g, outer);
    if (!r.ok()) return r.status().with_context("then_branch");
    then_r = std::move(r).value();
  }
  if (!known || !truthy(*known)) {
    auto r = ctx.plan_subgraph(*else_g.g, outer);
    if (!r.ok()) return r.status().with_context("else_branch");
    else_r = std::move(r).value();
  }
  const SubgraphRunner& first = then_r ? *then_r : *else_r;
  if (first.output_dtypes().size() != ctx.num_outputs())
    return ctx.error("the node has {} outputs, its branches {}", ctx.num_outputs(),
                     first.output_dtypes().size());
  // Outputs are dynamic when their shape depends on the branch taken, or on values inside it.
  bool dynamic = !first.static_shapes();
  if (then_r && else_r) {
    if (else_r->output_dtypes().size() != then_r->output_dtypes().size())
      return ctx.error("then_branch has {} outputs, else_branch {}", then_r->output_dtypes().size(),
                       else_r->output_dtypes().size());
    dynamic = dynamic || !else_r->static_shapes();
    for (size_t i = 0; i < ctx.num_outputs(); ++i) {
      if (then_r->output_dtypes()[i] != else_r->output_dtypes()[i])
        return ctx.error("output {} is {} in then_branch and {} in else_branch", i,
                         dtype_name(then_r->output_dtypes()[i]),
                         dtype_name(else_r->output_dtypes()[i]));
      dynamic = dynamic || then_r->output_shapes()[i] != else_r->output_shapes()[i];
    }
  }
  for (size_t i = 0; i < ctx.num_outputs(); ++i) {
    if (first.output_dtypes()[i] == DType::kString)
      return ctx.unsupported("output {} is a STRING tensor, which control flow does not carry", i);
    if (dynamic)
      ctx.set_output_dynamic(i, first.output_dtypes()[i]);
    else
      ctx.set_output(i, first.output_dtypes()[i], first.output_shapes()[i]);
  }
  struct State {
    std::unique_ptr<SubgraphRunner> then_r, else_r;
    size_t n_outer = 0, n_out = 0;
    bool dynamic = false;
    std::vector<Tensor> ins, outs;
  };
  auto st = std::make_shared<State>();
  st->then_r = std::move(then_r);
  st->else_r = std::move(else_r);
  st->n_outer = n_outer;
  st->n_out = ctx.num_outputs();
  st->dynamic = dynamic;
  st->ins.resize(n_outer);
  return make_kernel([st](const Tensor* const* in, Tensor* const* out) -> Status {
    SubgraphRunner* r = truthy(*in[0]) ? st->then_r.get() : st->else_r.get();
    if (!r) return Status::Internal("If: the branch taken was not planned");
    for (size_t i = 0; i < st->n_outer; ++i) st->ins[i] = *in[1 + i];
    DLSYS_RETURN_IF_ERROR(r->run(st->ins, &st->outs));
    for (size_t i = 0; i < st->n_out; ++i) {
      if (!out[i]) continue;
      if (st->dynamic)
        *out[i] = st->outs[i];  // the branch's buffer, valid until this node runs again
      else
        copy_into(st->outs[i], out[i]);
    }
    return Status::OK();
  });
}

// ---- Loop -------------------------------------------------------------------------------------

Result<KernelPtr> build_loop(BuildContext& ctx) {
  DLSYS_ASSIGN_OR_RETURN(Sub body, subgraph(ctx, "body"));
  const size_t n_outer = body.arity.outer_inputs;
  if (ctx.num_inputs() < 2 + n_outer)
    return Status::Internal("Loop: {} inputs for {} outer values", ctx.num_inputs(), n_outer);
  const size_t n_state = ctx.num_inputs() - 2 - n_outer;
  if (body.arity.inputs != 2 + n_state + n_outer)
    return ctx.error(
        "the body takes {} inputs; a Loop with {} loop-carried values gives it {} "
        "(iteration number, condition, the values)",
        body.arity.inputs - n_outer, n_state, 2 + n_state);
  if (body.arity.outputs < 1 + n_state)
    return ctx.error(
        "the body gives {} outputs, fewer than the condition and {} loop-carried "
        "values",
        body.arity.outputs, n_state);
  const size_t n_scan = body.arity.outputs - 1 - n_state;
  if (ctx.num_outputs() != n_state + n_scan)
    return ctx.error("the node has {} outputs; its body makes {} loop-carried and {} scan outputs",
                     ctx.num_outputs(), n_state, n_scan);
  const bool has_m = ctx.has_input(0), has_cond = ctx.has_input(1);
  if (has_m) {
    DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kI64}));
    if (shape_numel(ctx.in_shape(0)) != 1) return ctx.error("M must have one element");
  }
  if (has_cond) {
    DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(1, {DType::kBool}));
    if (shape_numel(ctx.in_shape(1)) != 1) return ctx.error("cond must have one element");
  }
  // The iteration count scan outputs are stacked over, when it is known now.
  const Tensor* m_value = has_m ? ctx.in_value(0) : nullptr;
  int64_t trips = -1;
  if (m_value) {
    trips = std::max<int64_t>(0, m_value->data_as<int64_t>()[0]);
    if (has_cond && ctx.in_value(1) && !truthy(*ctx.in_value(1))) trips = 0;
  }
  std::vector<ValueDesc> descs(2);
  descs[0].dtype = DType::kI64;
  descs[1].dtype = DType::kBool;
  for (size_t i = 0; i < n_state; ++i) {
    ValueDesc d = ctx.input(2 + i);
    d.value = nullptr;  // changes every iteration
    if (d.dtype == DType::kString)
      return ctx.unsupported(
          "loop-carried value {} is a STRING tensor, which control flow does "
          "not carry",
          i);
    descs.push_back(d);
  }
  for (const ValueDesc& d : outer_descs(ctx, 2 + n_state)) descs.push_back(d);
  // One plan for every iteration; or, when the body needs the iteration number at plan time (a
  // Slice starting at it) and M is known and small, one plan per iteration with it fixed.
  std::vector<std::unique_ptr<SubgraphRunner>> runners;
  std::vector<Tensor> iters;  // the fixed iteration numbers of per-iteration plans
  auto planned = ctx.plan_subgraph(*body.g, descs);
  if (planned.ok()) {
    runners.push_back(std::move(planned).value());
  } else {
    const int64_t count = m_value ? m_value->data_as<int64_t>()[0] : -1;
    if (planned.status().code() != StatusCode::kUnsupported || count < 0 ||
        count > kMaxUnrolledIterations)
      return planned.status().with_context(
          fmt::format("body (planned once for every iteration{})",
                      count > kMaxUnrolledIterations
                          ? fmt::format("; M = {} is over the {} iterations planned one by one",
                                        count, kMaxUnrolledIterations)
                          : std::string()));
    Tensor yes = Tensor::empty(DType::kBool, {});
    yes.data_as<uint8_t>()[0] = 1;
    descs[1].value = &yes;
    for (int64_t i = 0; i < count; ++i) iters.push_back(Tensor::from_i64({}, &i));
    for (int64_t i = 0; i < count; ++i) {
      descs[0].value = &iters[static_cast<size_t>(i)];
      auto r = ctx.plan_subgraph(*body.g, descs);
      if (!r.ok()) return r.status().with_context(fmt::format("body at iteration {}", i));
      runners.push_back(std::move(r).value());
    }
    descs[0].value = descs[1].value = nullptr;
    if (runners.empty()) {  // M = 0: shapes from a plan that never runs
      auto r = ctx.plan_subgraph(*body.g, descs);
      if (!r.ok()) return r.status().with_context("body");
      runners.push_back(std::move(r).value());
    }
  }
  const auto& odt = runners[0]->output_dtypes();
  const auto& osh = runners[0]->output_shapes();
  // Static: every output's shape is known now and the buffers are reused. Dynamic (outputs
  // set per run): the body's shapes depend on values, a carried value changes shape between
  // iterations (a sequence that grows by a token), or the number of scan rows is known only
  // when the loop stops (no M at plan time, or a body that may end the loop early).
  bool dynamic = false;
  for (const auto& r : runners) {
    if (!r->static_shapes()) dynamic = true;
    for (size_t k = 0; k < odt.size() && !dynamic; ++k)
      if (r->output_dtypes()[k] != odt[k] || r->output_shapes()[k] != osh[k]) dynamic = true;
  }
  for (size_t i = 0; i < n_state && !dynamic; ++i)
    if (osh[1 + i] != descs[2 + i].shape) dynamic = true;
  const bool may_stop_early =
      has_cond && body.arity.output_is_input.size() > 0 && body.arity.output_is_input[0] != 1;
  if (n_scan > 0 && (trips < 0 || may_stop_early)) dynamic = true;
  for (size_t k = 0; k < odt.size(); ++k)
    if (k > 0 && odt[k] == DType::kString)
      return ctx.unsupported("body output {} is a STRING tensor, which control flow does not carry",
                             k);
  for (size_t k = 1 + n_state; k < odt.size(); ++k)
    if (dtype_is_composite(odt[k]))
      return ctx.unsupported(
          "scan output {} is a {} value: scan outputs stack tensors (carry a sequence instead)",
          k - 1 - n_state, dtype_name(odt[k]));
  if (odt[0] != DType::kBool || (!dynamic && shape_numel(osh[0]) != 1))
    return ctx.error("the body's first output (the condition) is {} {}, not one bool",
                     dtype_name(odt[0]), shape_str(osh[0]));
  // A carried optional may leave the body as the value it holds (ONNX's loop16_seq_none: an
  // optional sequence, empty at first, that the body fills): the next iteration gets it wrapped
  // in an optional again, and the node gives out the value (dynamic path).
  std::vector<bool> wrap(n_state, false);
  for (size_t i = 0; i < n_state; ++i) {
    const DType in_dt = descs[2 + i].dtype;
    if (odt[1 + i] == in_dt) continue;
    if (dtype_is_optional(in_dt) && odt[1 + i] == element_dtype(in_dt)) {
      wrap[i] = true;
      dynamic = true;
      continue;
    }
    return ctx.error("loop-carried value {} enters as {} and leaves the body as {}", i,
                     dtype_name(in_dt), dtype_name(odt[1 + i]));
  }
  if (dynamic) {
    for (size_t k = 0; k < n_state + n_scan; ++k) ctx.set_output_dynamic(k, odt[1 + k]);
  } else {
    DLSYS_RETURN_IF_ERROR(check_and_set_carried(ctx, &descs[2], n_state, odt, osh, 1));
    for (size_t k = 0; k < n_scan; ++k) {
      Shape s = osh[1 + n_state + k];
      s.insert(s.begin(), trips);
      ctx.set_output(n_state + k, odt[1 + n_state + k], s);
    }
  }
  struct State {
    std::vector<std::unique_ptr<SubgraphRunner>> bodies;  // one, or one per iteration
    std::vector<Tensor> iters;                            // their fixed iteration numbers
    size_t n_state = 0, n_scan = 0, n_outer = 0;
    bool has_m = false, has_cond = false, dynamic = false;
    int64_t trips = -1;
    std::string node;
    std::vector<DType> scan_dtypes;
    std::vector<Shape> scan_shapes;  // a scan row's shape, from the first plan (for 0 rows)
    Tensor iter, cond;
    Carried carried;
    std::vector<Tensor> ins, outs;
    std::vector<std::vector<Tensor>> rows;  // dynamic: each scan output's rows
    std::vector<Tensor> next;               // dynamic: the carried values of the next iteration
    std::vector<bool> wrap;                 // carried optional that leaves the body as its value
    std::vector<DType> carried_dtypes;
  };
  auto st = std::make_shared<State>();
  st->bodies = std::move(runners);
  st->iters = std::move(iters);
  st->n_state = n_state;
  st->n_scan = n_scan;
  st->n_outer = n_outer;
  st->has_m = has_m;
  st->has_cond = has_cond;
  st->dynamic = dynamic;
  st->trips = trips;
  st->node = ctx.node_name();
  st->wrap = wrap;
  for (size_t i = 0; i < n_state; ++i) st->carried_dtypes.push_back(odt[1 + i]);
  for (size_t k = 0; k < n_scan; ++k) {
    st->scan_dtypes.push_back(odt[1 + n_state + k]);
    st->scan_shapes.push_back(osh[1 + n_state + k]);
  }
  st->iter = Tensor::empty(DType::kI64, {});
  st->cond = Tensor::empty(DType::kBool, {});
  if (!dynamic) st->carried.allocate(&descs[2], n_state);
  st->ins.resize(2 + n_state + n_outer);
  st->rows.resize(n_scan);
  return make_kernel([st](const Tensor* const* in, Tensor* const* out) -> Status {
    const int64_t max_trips =
        st->has_m ? in[0]->data_as<int64_t>()[0] : std::numeric_limits<int64_t>::max();
    bool cond = st->has_cond ? truthy(*in[1]) : true;
    const size_t n = st->n_state;
    for (size_t i = 0; i < n; ++i) st->ins[2 + i] = *in[2 + i];
    for (size_t i = 0; i < st->n_outer; ++i) st->ins[2 + n + i] = *in[2 + n + i];
    for (auto& r : st->rows) r.clear();
    int64_t it = 0;
    st->carried.cur = -1;
    for (; it < max_trips && cond; ++it) {
      st->cond.data_as<uint8_t>()[0] = 1;
      st->ins[1] = st->cond;
      SubgraphRunner* body = st->bodies[0].get();
      if (st->iters.empty()) {
        st->iter.data_as<int64_t>()[0] = it;
        st->ins[0] = st->iter;
      } else {  // planned per iteration: M was fixed at plan time
        if (it >= static_cast<int64_t>(st->bodies.size()))
          return Status::Internal("Loop '{}': iteration {} has no plan", st->node, it);
        body = st->bodies[static_cast<size_t>(it)].get();
        st->ins[0] = st->iters[static_cast<size_t>(it)];
      }
      DLSYS_RETURN_IF_ERROR(body->run(st->ins, &st->outs));
      if (st->outs[0].numel() != 1)
        return Status::Invalid(
            "Loop '{}': the body's condition output has {} elements at "
            "iteration {}, not one",
            st->node, st->outs[0].numel(), it);
      cond = truthy(st->outs[0]);
      if (st->dynamic) {
        // Values of any shape: copies the body's next run cannot overwrite, all taken before
        // the inputs are replaced (an output may be a view of an input).
        for (size_t k = 0; k < st->n_scan; ++k) st->rows[k].push_back(st->outs[1 + n + k].clone());
        st->next.resize(n);
        for (size_t i = 0; i < n; ++i) {
          st->next[i] = st->outs[1 + i].clone();
          if (st->wrap[i]) st->next[i] = Tensor::optional(st->carried_dtypes[i], &st->next[i]);
        }
        for (size_t i = 0; i < n; ++i) st->ins[2 + i] = std::move(st->next[i]);
        continue;
      }
      st->carried.advance(st->outs, 1, &st->ins, 2);
      for (size_t k = 0; k < st->n_scan; ++k)
        if (out[n + k]) put_slice(st->outs[1 + n + k], 0, it, out[n + k]);
    }
    if (!st->dynamic) {
      if (st->n_scan > 0 && it != st->trips)
        return Status::Internal("Loop '{}' stopped after {} of its {} iterations", st->node, it,
                                st->trips);
      for (size_t i = 0; i < n; ++i) copy_into(st->ins[2 + i], out[i]);
      return Status::OK();
    }
    for (size_t i = 0; i < n; ++i) {
      if (!out[i]) continue;
      if (st->wrap[i]) {  // the optional's value
        const std::vector<Tensor>& held = st->ins[2 + i].list()->items;
        if (held.empty())
          return Status::Invalid(
              "Loop '{}': loop-carried value {} is an empty optional after {} iterations, and "
              "the node gives out its value ({})",
              st->node, i, it, dtype_name(st->carried_dtypes[i]));
        *out[i] = held[0].clone();
        continue;
      }
      *out[i] = it == 0 ? st->ins[2 + i].clone() : st->ins[2 + i];
    }
    for (size_t k = 0; k < st->n_scan; ++k) {
      if (!out[n + k]) continue;
      const std::vector<Tensor>& rows = st->rows[k];
      Shape row = rows.empty() ? st->scan_shapes[k] : rows[0].shape();
      for (size_t j = 1; j < rows.size(); ++j)
        if (rows[j].shape() != row)
          return Status::Invalid(
              "Loop '{}': scan output {} is {} at iteration 0 and {} at iteration {}: scan "
              "outputs are stacked, so every iteration must give the same shape",
              st->node, k, shape_str(row), shape_str(rows[j].shape()), j);
      Shape stacked = row;
      stacked.insert(stacked.begin(), static_cast<int64_t>(rows.size()));
      Tensor y = Tensor::empty(st->scan_dtypes[k], stacked);
      for (size_t j = 0; j < rows.size(); ++j) put_slice(rows[j], 0, static_cast<int64_t>(j), &y);
      *out[n + k] = std::move(y);
    }
    return Status::OK();
  });
}

// ---- Scan -------------------------------------------------------------------------------------

Result<KernelPtr> build_scan(BuildContext& ctx) {
  DLSYS_ASSIGN_OR_RETURN(Sub body, subgraph(ctx, "body"));
  const size_t n_outer = body.arity.outer_inputs;
  const int64_t m = ctx.attr_int("num_scan_inputs", -1);
  if (m < 1) return ctx.error("needs num_scan_inputs >= 1");
  if (ctx.num_inputs() < static_cast<size_t>(m) + n_outer)
    return ctx.error("has {} inputs, fewer than num_scan_inputs {}", ctx.num_inputs() - n_outer, m);
  const size_t n_scan_in = static_cast<size_t>(m);
  const size_t n_state = ctx.num_inputs() - n_outer - n_scan_in;
  if (body.arity.inputs != n_state + n_scan_in + n_outer)
    return ctx.error(
        "the body takes {} inputs; the node gives it {} loop-carried values and {} "
        "scan slices",
        body.arity.inputs - n_outer, n_state, n_scan_in);
  if (body.arity.outputs < n_state)
    return ctx.error("the body gives {} outputs, fewer than the {} loop-carried values",
                     body.arity.outputs, n_state);
  const size_t n_scan_out = body.arity.outputs - n_state;
  if (ctx.num_outputs() != n_state + n_scan_out)
    return ctx.error("the node has {} outputs; its body makes {}", ctx.num_outputs(),
                     n_state + n_scan_out);
  auto list = [&](const char* name, size_t n) -> Result<std::vector<int64_t>> {
    std::vector<int64_t> v = ctx.attr_ints(name);
    if (v.empty()) v.assign(n, 0);
    if (v.size() != n) return ctx.error("{} has {} entries, expected {}", name, v.size(), n);
    return v;
  };
  DLSYS_ASSIGN_OR_RETURN(auto in_axes, list("scan_input_axes", n_scan_in));
  DLSYS_ASSIGN_OR_RETURN(auto in_dirs, list("scan_input_directions", n_scan_in));
  DLSYS_ASSIGN_OR_RETURN(auto out_axes, list("scan_output_axes", n_scan_out));
  DLSYS_ASSIGN_OR_RETURN(auto out_dirs, list("scan_output_directions", n_scan_out));
  int64_t steps = -1;
  std::vector<ValueDesc> descs;
  for (size_t i = 0; i < n_state; ++i) {
    ValueDesc d = ctx.input(i);
    d.value = nullptr;
    descs.push_back(d);
  }
  std::vector<Shape> slice_shapes;
  for (size_t j = 0; j < n_scan_in; ++j) {
    const Shape& s = ctx.in_shape(n_state + j);
    const int64_t r = static_cast<int64_t>(s.size());
    int64_t& a = in_axes[j];
    if (a < -r || a >= r)
      return ctx.error("scan_input_axes[{}] = {} is out of range for rank {}", j, a, r);
    if (a < 0) a += r;
    if (steps >= 0 && s[a] != steps)
      return ctx.error("scan input {} has {} steps along axis {}, scan input 0 has {}", j, s[a], a,
                       steps);
    steps = s[a];
    ValueDesc d;
    d.dtype = ctx.in_dtype(n_state + j);
    d.shape = s;
    d.shape.erase(d.shape.begin() + a);
    slice_shapes.push_back(d.shape);
    descs.push_back(d);
  }
  for (const ValueDesc& d : outer_descs(ctx, n_state + n_scan_in)) descs.push_back(d);
  for (const ValueDesc& d : descs)
    if (dtype_is_object(d.dtype))
      return ctx.unsupported("{} values are not carried through Scan", dtype_name(d.dtype));
  auto planned = ctx.plan_subgraph(*body.g, descs);
  if (!planned.ok()) return planned.status().with_context("body");
  std::unique_ptr<SubgraphRunner> runner = std::move(planned).value();
  const auto& odt = runner->output_dtypes();
  const auto& osh = runner->output_shapes();
  DLSYS_RETURN_IF_ERROR(check_and_set_carried(ctx, descs.data(), n_state, odt, osh, 0));
  for (size_t k = 0; k < n_scan_out; ++k) {
    Shape s = osh[n_state + k];
    const int64_t r = static_cast<int64_t>(s.size()) + 1;
    int64_t& a = out_axes[k];
    if (a < -r || a >= r)
      return ctx.error("scan_output_axes[{}] = {} is out of range for rank {}", k, a, r);
    if (a < 0) a += r;
    s.insert(s.begin() + a, steps);
    if (odt[n_state + k] == DType::kString)
      return ctx.unsupported("scan output {} is a STRING tensor", k);
    ctx.set_output(n_state + k, odt[n_state + k], s);
  }
  struct State {
    std::unique_ptr<SubgraphRunner> body;
    size_t n_state = 0, n_in = 0, n_out = 0, n_outer = 0;
    int64_t steps = 0;
    std::vector<int64_t> in_axes, in_dirs, out_axes, out_dirs;
    std::vector<Tensor> slices;
    Carried carried;
    std::vector<Tensor> ins, outs;
  };
  auto st = std::make_shared<State>();
  st->body = std::move(runner);
  st->n_state = n_state;
  st->n_in = n_scan_in;
  st->n_out = n_scan_out;
  st->n_outer = n_outer;
  st->steps = steps;
  st->in_axes = in_axes;
  st->in_dirs = in_dirs;
  st->out_axes = out_axes;
  st->out_dirs = out_dirs;
  for (size_t j = 0; j < n_scan_in; ++j)
    st->slices.push_back(Tensor::empty(descs[n_state + j].dtype, slice_shapes[j]));
  st->carried.allocate(descs.data(), n_state);
  st->ins.resize(n_state + n_scan_in + n_outer);
  return make_kernel([st](const Tensor* const* in, Tensor* const* out) -> Status {
    const size_t n = st->n_state;
    for (size_t i = 0; i < n; ++i) st->ins[i] = *in[i];
    for (size_t j = 0; j < st->n_in; ++j) st->ins[n + j] = st->slices[j];
    for (size_t i = 0; i < st->n_outer; ++i) st->ins[n + st->n_in + i] = *in[n + st->n_in + i];
    st->carried.cur = -1;
    for (int64_t t = 0; t < st->steps; ++t) {
      for (size_t j = 0; j < st->n_in; ++j)
        take_slice(*in[n + j], st->in_axes[j], st->in_dirs[j] ? st->steps - 1 - t : t,
                   &st->slices[j]);
      DLSYS_RETURN_IF_ERROR(st->body->run(st->ins, &st->outs));
      st->carried.advance(st->outs, 0, &st->ins, 0);
      for (size_t k = 0; k < st->n_out; ++k)
        if (out[n + k])
          put_slice(st->outs[n + k], st->out_axes[k], st->out_dirs[k] ? st->steps - 1 - t : t,
                    out[n + k]);
    }
    for (size_t i = 0; i < n; ++i) copy_into(st->ins[i], out[i]);
    return Status::OK();
  });
}

}  // namespace

void register_control_flow_ops(OpRegistry& r) {
  r.add("If", 1, kManyValues, 1, kManyValues, build_if);
  r.add("Loop", 2, kManyValues, 1, kManyValues, build_loop);
  r.add("Scan", 1, kManyValues, 1, kManyValues, build_scan);
  // Sequences and optionals pass through branches and loop-carried values.
  r.set_composites("If", ~0u, true);
  r.set_composites("Loop", ~0u, true);
}

}  // namespace dlsys
