#include "graph/plan_cache.h"

namespace dlsys {

bool needs_plan_time_value(const Status& st) {
  return st.code() == StatusCode::kUnsupported &&
         st.message().find("computable when the plan is built") != std::string::npos;
}

PlanCache::PlanCache(const Graph& g, PlanOptions opts, std::map<int, Tensor> constants)
    : g_(g), opts_(opts), constants_(std::move(constants)) {}

size_t PlanCache::size() {
  std::lock_guard<std::mutex> lock(mu_);
  return plans_.size();
}

static bool fixable(const Tensor& t) {
  // Strings, sequences and optionals never decide a shape in dlsys, and their bytes are
  // pointers: never fixed.
  return t.numel() <= PlanCache::kMaxFixedElements && !dtype_is_object(t.dtype());
}

std::string PlanCache::key_of(const std::vector<Shape>& shapes,
                              const std::vector<Tensor>* values) const {
  std::string k;
  for (const Shape& s : shapes) k += shape_str(s) + ";";
  if (!values) return k;
  for (size_t i = 0; i < values->size(); ++i) {
    const Tensor& t = (*values)[i];
    const bool fixed = fix_all_ ? fixable(t) : fixed_.count(static_cast<int>(i)) > 0;
    if (!fixed || constants_.count(static_cast<int>(i))) continue;
    k += fmt::format("|{}=", i);
    k.append(static_cast<const char*>(t.data()), t.nbytes());
  }
  return k;
}

Result<Plan*> PlanCache::build_locked(const std::string& key, const std::vector<Shape>& shapes,
                                      const std::map<int, Tensor>& fixed,
                                      std::vector<int>* needed) {
  auto built = Plan::build(g_, shapes, fixed, opts_, needed);
  if (!built.ok()) return built.status();
  if (plans_.size() >= kMaxPlans) plans_.clear();
  Plan* raw = built.value().get();
  plans_[key] = std::move(built).value();
  return raw;
}

Result<Plan*> PlanCache::plan_for_shapes(const std::vector<Shape>& shapes) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string key = key_of(shapes, nullptr);
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second.get();
  return build_locked(key, shapes, constants_, nullptr);
}

Result<Plan*> PlanCache::plan_for(const std::vector<Tensor>& inputs) {
  std::vector<Shape> shapes;
  for (const auto& t : inputs) shapes.push_back(t.shape());
  std::lock_guard<std::mutex> lock(mu_);
  // Each failed build may name one more input to fix; at most one retry per input, and one for
  // a need no build could attribute.
  for (size_t attempt = 0; attempt <= inputs.size() + 1; ++attempt) {
    std::string key = key_of(shapes, &inputs);
    auto it = plans_.find(key);
    if (it != plans_.end()) return it->second.get();
    std::map<int, Tensor> fixed = constants_;
    for (size_t i = 0; i < inputs.size(); ++i)
      if (fix_all_ ? fixable(inputs[i]) : fixed_.count(static_cast<int>(i)) > 0)
        fixed.emplace(static_cast<int>(i), inputs[i]);
    std::vector<int> needed;
    auto built = build_locked(key, shapes, fixed, &needed);
    if (built.ok() || !needs_plan_time_value(built.status())) return built;
    bool learned = false;
    for (int i : needed) {
      if (fixed.count(i)) continue;
      if (!fixable(inputs[i]))
        return built.status().with_context(fmt::format(
            "input '{}' is needed when the plan is built, and dlsys plans per value only for "
            "inputs of at most {} numbers; it has {}",
            g_.inputs[i].name, kMaxFixedElements, inputs[i].numel()));
      learned = fixed_.insert(i).second || learned;
    }
    if (!learned) {
      // Not attributed to a graph input (a subgraph's node asked): the old, wide rule.
      if (fix_all_) return built.status();
      fix_all_ = true;
    }
  }
  return Status::Internal("PlanCache: no plan after fixing every input's value");
}

}  // namespace dlsys
