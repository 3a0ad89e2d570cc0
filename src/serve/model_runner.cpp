#include "serve/model_runner.h"

#include <algorithm>
#include <chrono>

#include "graph/model_metadata.h"
#include "graph/onnx_import.h"
#include "serve/batch_tensors.h"

namespace dlsys::serve {

namespace {

// The model as serving runs it. Batches and the protocol's tensors carry numbers, so a model
// that takes string columns as STRING inputs runs in its codes form (graph/model_metadata.h):
// the column form codes category names with the vocabulary its LabelEncoders hold.
Result<std::unique_ptr<Session>> open_session(const std::string& path, const SessionOptions& o) {
  DLSYS_ASSIGN_OR_RETURN(Graph g, import_onnx_file(path));
  DLSYS_RETURN_IF_ERROR(to_codes_form(&g).with_context(path));
  return Session::from_graph(std::move(g), o);
}

}  // namespace

Result<std::unique_ptr<ModelRunner>> ModelRunner::open(const std::string& onnx_path,
                                                       ModelRunnerOptions opts) {
  if (opts.instances < 1) return Status::Invalid("model runner: instances {} < 1", opts.instances);
  if (opts.threads < 0) return Status::Invalid("model runner: threads {} < 0", opts.threads);
  if (opts.max_batch < 1) return Status::Invalid("model runner: max_batch {} < 1", opts.max_batch);
  if (opts.buckets.empty()) opts.buckets = default_buckets(opts.max_batch);
  for (size_t i = 0; i < opts.buckets.size(); ++i) {
    if (opts.buckets[i] < 1 || (i > 0 && opts.buckets[i] <= opts.buckets[i - 1])) {
      return Status::Invalid(
          "model runner: buckets must be positive and ascending (bucket {} is {})", i,
          opts.buckets[i]);
    }
  }
  if (opts.buckets.back() != opts.max_batch) {
    return Status::Invalid("model runner: the largest bucket {} must equal max_batch {}",
                           opts.buckets.back(), opts.max_batch);
  }
  if (opts.max_instances == 0) opts.max_instances = opts.instances;
  if (opts.max_instances < opts.instances) {
    return Status::Invalid("model runner: max_instances {} < instances {}", opts.max_instances,
                           opts.instances);
  }
  std::unique_ptr<ModelRunner> r(new ModelRunner(opts));
  r->path_ = onnx_path;
  r->session_options_.threads = opts.threads;
  r->session_options_.precision = opts.precision;
  // Not yet for serving: a batcher thread that changes its OpenMP thread count leaves libgomp
  // state behind when it exits (1,000 load/unload cycles grew the resident set by 2 MiB), and
  // instances are the server's own lever for its cores.
  r->session_options_.tune_threads = false;
  r->session_options_.one_thread_small_steps = false;
  r->sessions_.resize(static_cast<size_t>(opts.max_instances));
  for (int i = 0; i < opts.instances; ++i) {
    DLSYS_ASSIGN_OR_RETURN(r->sessions_[static_cast<size_t>(i)],
                           open_session(onnx_path, r->session_options_));
  }
  r->active_.store(opts.instances, std::memory_order_release);
  const Graph& g = r->sessions_[0]->graph();
  r->metadata_ = ModelMetadata::read(g);
  for (const ValueInfo& v : g.inputs) {
    if (dtype_is_composite(v.dtype))
      return Status::Unsupported(
          "model input '{}' is a {} value; serving batches tensors only (no sequences or "
          "optionals)",
          v.name, dtype_name(v.dtype));
    if (v.dtype == DType::kString)
      return Status::Unsupported(
          "model input '{}' is STRING; serving batches numeric tensors only (a dlsys model's "
          "string columns are served through the column form)",
          v.name);
    if (!v.has_shape || v.dims.empty()) {
      return Status::Invalid(
          "model input '{}' has no declared shape ({}); serving batches need a free batch "
          "dimension (export with dynamic_axes)",
          v.name, dims_str(v));
    }
    if (v.dims[0].fixed()) {
      return Status::Invalid(
          "model input '{}' has a fixed first dimension {}; serving batches need a free batch "
          "dimension (export with dynamic_axes)",
          v.name, v.dims[0].value);
    }
    TensorSpec m{v.name, v.dtype, {-1}, true};
    for (size_t d = 1; d < v.dims.size(); ++d) {
      if (!v.dims[d].fixed()) {
        return Status::Invalid(
            "model input '{}' has shape {}: only the first (batch) dimension may be free for "
            "serving; dimension {} is not fixed",
            v.name, dims_str(v), d);
      }
      m.shape.push_back(v.dims[d].value);
    }
    r->inputs_.push_back(std::move(m));
  }
  for (const ValueInfo& v : g.outputs) {
    if (dtype_is_composite(v.dtype))
      return Status::Unsupported(
          "model output '{}' is a {} value; serving answers tensors only (no sequences or "
          "optionals)",
          v.name, dtype_name(v.dtype));
    if (v.dtype == DType::kString)
      return Status::Unsupported("model output '{}' is STRING; serving answers numbers only",
                                 v.name);
    TensorSpec m{v.name, v.dtype, {}, v.has_shape};
    for (const Dim& d : v.dims) m.shape.push_back(d.fixed() ? d.value : -1);
    r->outputs_.push_back(std::move(m));
  }
  r->plans_.assign(r->sessions_.size(), std::vector<Plan*>(opts.buckets.size(), nullptr));
  return r;
}

Status ModelRunner::warm_instance(size_t i) {
  for (size_t b = 0; b < opts_.buckets.size(); ++b) {
    std::vector<Tensor> zeros;
    for (const TensorSpec& m : inputs_) {
      Shape s = m.shape;
      s[0] = opts_.buckets[b];
      zeros.push_back(Tensor::zeros(m.dtype, s));
    }
    auto out = run(static_cast<int>(i), zeros, opts_.buckets[b]);
    if (!out.ok()) {
      return out.status().with_context(
          fmt::format("warm-up of instance {} at batch {}", i, opts_.buckets[b]));
    }
  }
  return Status::OK();
}

Status ModelRunner::warm_up() {
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < static_cast<size_t>(instances()); ++i) {
    DLSYS_RETURN_IF_ERROR(warm_instance(i));
  }
  warm_up_us_ =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  return Status::OK();
}

Status ModelRunner::add_instance() {
  const int n = instances();
  if (n >= opts_.max_instances) {
    return Status::Invalid("model runner: already at max_instances {}", opts_.max_instances);
  }
  DLSYS_ASSIGN_OR_RETURN(std::unique_ptr<Session> s, open_session(path_, session_options_));
  // Held while the new instance warms up, so that memory_bytes() never reads a plan slot being
  // written. run() checks the index against instances(), so the instance is counted first; the
  // batcher does not send it batches before this returns.
  std::lock_guard<std::mutex> lk(instances_mu_);
  sessions_[static_cast<size_t>(n)] = std::move(s);
  active_.store(n + 1, std::memory_order_release);
  Status st = warm_instance(static_cast<size_t>(n));
  if (!st.ok()) {
    active_.store(n, std::memory_order_release);
    sessions_[static_cast<size_t>(n)].reset();
    std::fill(plans_[static_cast<size_t>(n)].begin(), plans_[static_cast<size_t>(n)].end(),
              nullptr);
  }
  return st;
}

Status ModelRunner::remove_instance() {
  const int n = instances();
  if (n <= 1) return Status::Invalid("model runner: the last instance cannot be removed");
  std::lock_guard<std::mutex> lk(instances_mu_);
  active_.store(n - 1, std::memory_order_release);
  sessions_[static_cast<size_t>(n - 1)].reset();  // its plans go with it
  std::fill(plans_[static_cast<size_t>(n - 1)].begin(), plans_[static_cast<size_t>(n - 1)].end(),
            nullptr);
  return Status::OK();
}

int64_t ModelRunner::memory_bytes() const {
  std::lock_guard<std::mutex> lk(instances_mu_);
  int64_t total = 0;
  for (size_t i = 0; i < static_cast<size_t>(instances()); ++i) {
    for (const auto& [name, t] : sessions_[i]->graph().initializers) {
      total += static_cast<int64_t>(t.nbytes());
    }
    for (const Plan* p : plans_[i]) {
      if (p) total += static_cast<int64_t>(p->activation_bytes());
    }
  }
  return total;
}

Result<std::vector<Tensor>> ModelRunner::run(int instance, const std::vector<Tensor>& padded,
                                             int64_t rows) {
  if (instance < 0 || instance >= instances()) {
    return Status::Invalid("model runner: instance {} is outside 0..{}", instance, instances() - 1);
  }
  if (padded.size() != inputs_.size()) {
    return Status::Invalid("model runner: {} inputs given, the model has {}", padded.size(),
                           inputs_.size());
  }
  if (padded.empty() || padded[0].rank() < 1) {
    return Status::Invalid("model runner: the inputs have no batch dimension");
  }
  const int64_t batch = padded[0].dim(0);
  auto it = std::find(opts_.buckets.begin(), opts_.buckets.end(), batch);
  if (it == opts_.buckets.end()) {
    return Status::Invalid("model runner: batch {} is not one of the buckets", batch);
  }
  if (rows < 1 || rows > batch) {
    return Status::Invalid("model runner: {} rows in a batch of {}", rows, batch);
  }
  Session& s = *sessions_[static_cast<size_t>(instance)];
  s.apply_threads();
  Plan*& slot =
      plans_[static_cast<size_t>(instance)][static_cast<size_t>(it - opts_.buckets.begin())];
  if (slot == nullptr) {
    // From shapes alone: a model whose plans depend on input values cannot be served by bucket.
    std::vector<Shape> shapes;
    for (const Tensor& t : padded) shapes.push_back(t.shape());
    DLSYS_ASSIGN_OR_RETURN(slot, s.plan_for_shapes(shapes));
  }
  std::vector<Tensor> outputs;
  DLSYS_RETURN_IF_ERROR(slot->run(padded, &outputs));
  return outputs;
}

}  // namespace dlsys::serve
