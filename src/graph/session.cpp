#include "graph/session.h"

#include <omp.h>

#include "graph/onnx_import.h"

namespace dlsys {

Result<std::unique_ptr<Session>> Session::open(const std::string& path, SessionOptions opts) {
  Graph g;
  DLSYS_ASSIGN_OR_RETURN(g, import_onnx_file(path));
  return from_graph(std::move(g), opts);
}

std::unique_ptr<Session> Session::from_graph(Graph g, SessionOptions opts) {
  auto s = std::unique_ptr<Session>(new Session(std::move(g), opts));
  if (opts.optimize) s->report_ = optimize_graph(&s->graph_, opts.passes);
  s->plans_ = std::make_unique<PlanCache>(
      s->graph_, PlanOptions{opts.precision, opts.training, opts.tune_threads,
                             opts.one_thread_small_steps, opts.cross_process});
  return s;
}

void Session::apply_threads() const {
  if (opts_.threads > 0) omp_set_num_threads(opts_.threads);
}

static std::string input_list(const Graph& g) {
  std::string s;
  for (const auto& v : g.inputs)
    s += fmt::format("{}{} ({} {})", s.empty() ? "" : ", ", v.name, dtype_name(v.dtype),
                     dims_str(v));
  return s;
}

Result<std::vector<Tensor>> Session::bind_inputs(const std::map<std::string, Tensor>& named) const {
  for (const auto& [name, t] : named) {
    bool known = false;
    for (const auto& v : graph_.inputs) known = known || v.name == name;
    if (!known)
      return Status::NotFound("the model has no input '{}'; its inputs are: {}", name,
                              input_list(graph_));
  }
  std::vector<Tensor> out;
  std::map<std::string, int64_t> symbols;
  for (const auto& v : graph_.inputs) {
    auto it = named.find(v.name);
    if (it == named.end())
      return Status::Invalid("input '{}' ({} {}) is missing; the model's inputs are: {}", v.name,
                             dtype_name(v.dtype), dims_str(v), input_list(graph_));
    const Tensor& t = it->second;
    if (t.dtype() != v.dtype)
      return Status::Invalid("input '{}': expected dtype {}, got {}", v.name, dtype_name(v.dtype),
                             dtype_name(t.dtype()));
    if (v.has_shape) {
      if (t.shape().size() != v.dims.size())
        return Status::Invalid("input '{}': expected shape {} (rank {}), got {} (rank {})", v.name,
                               dims_str(v), v.dims.size(), shape_str(t.shape()), t.shape().size());
      for (size_t d = 0; d < v.dims.size(); ++d) {
        const Dim& dim = v.dims[d];
        int64_t got = t.shape()[d];
        if (dim.fixed() && dim.value != got)
          return Status::Invalid("input '{}': expected shape {}, got {} (dimension {} must be {})",
                                 v.name, dims_str(v), shape_str(t.shape()), d, dim.value);
        if (!dim.fixed() && !dim.param.empty()) {
          auto [sit, fresh] = symbols.emplace(dim.param, got);
          if (!fresh && sit->second != got)
            return Status::Invalid(
                "input '{}': dimension {} ('{}') is {} but another input set '{}' to {}", v.name, d,
                dim.param, got, dim.param, sit->second);
        }
      }
    }
    out.push_back(t);
  }
  return out;
}

Result<Plan*> Session::plan_for_shapes(const std::vector<Shape>& shapes) {
  return plans_->plan_for_shapes(shapes);
}

Result<Plan*> Session::plan_for(const std::vector<Tensor>& inputs) {
  return plans_->plan_for(inputs);
}

Status Session::run(const std::map<std::string, Tensor>& inputs, std::vector<Tensor>* outputs,
                    const OutputReadyFn& on_ready) {
  std::vector<Tensor> bound;
  DLSYS_ASSIGN_OR_RETURN(bound, bind_inputs(inputs));
  apply_threads();
  Plan* plan;
  DLSYS_ASSIGN_OR_RETURN(plan, plan_for(bound));
  return plan->run(bound, outputs, nullptr, on_ready);
}

Result<std::vector<Shape>> Session::concrete_input_shapes(
    const std::map<std::string, int64_t>& dims, int64_t batch) const {
  std::vector<Shape> out;
  for (const auto& v : graph_.inputs) {
    if (!v.has_shape)
      return Status::Invalid("input '{}' has no declared shape; pass inputs explicitly", v.name);
    Shape s;
    for (size_t i = 0; i < v.dims.size(); ++i) {
      const Dim& d = v.dims[i];
      auto it = dims.find(d.param);
      if (d.fixed())
        s.push_back(d.value);
      else if (!d.param.empty() && it != dims.end())
        s.push_back(it->second);
      else if (i == 0)
        s.push_back(batch);
      else
        return Status::Invalid(
            "input '{}' dimension {} ('{}') is symbolic: give its size with --dim {}=N", v.name, i,
            d.param.empty() ? "?" : d.param, d.param.empty() ? "NAME" : d.param);
    }
    out.push_back(s);
  }
  return out;
}

}  // namespace dlsys
