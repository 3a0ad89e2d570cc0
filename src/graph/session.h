// A Session owns an imported graph and a cache of plans, one per input-shape signature: the
// batch dimension (and any symbolic dimension) is free, and the first call with new shapes
// builds and caches a plan for them.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "graph/passes/optimize.h"
#include "graph/plan_cache.h"

namespace dlsys {

struct SessionOptions {
  int threads = 0;  // 0: OpenMP's default (all cores)
  Precision precision = Precision::kF32;
  bool training = false;  // plans run training steps (PlanOptions::training)
  bool optimize = true;   // run the graph rewrite passes (graph/passes/optimize.h) once at open
  // Inference plans pick their thread count by timing their runs (PlanOptions::tune_threads).
  bool tune_threads = true;
  // Small steps run on one thread (PlanOptions::one_thread_small_steps).
  bool one_thread_small_steps = true;
  OptimizeOptions passes;  // which passes, when optimize is on
  // The processes a data-parallel training step is split over (PlanOptions::cross_process).
  const CrossProcess* cross_process = nullptr;
};

class Session {
 public:
  // Imports and validates an ONNX file.
  static Result<std::unique_ptr<Session>> open(const std::string& path, SessionOptions opts = {});
  static std::unique_ptr<Session> from_graph(Graph g, SessionOptions opts = {});

  const Graph& graph() const { return graph_; }
  // What the optimization passes did (empty when optimize is off).
  const OptimizeReport& optimize_report() const { return report_; }
  const SessionOptions& options() const { return opts_; }

  // Checks each named input against the model (name, dtype, fixed dims, consistent symbolic
  // dims) and returns the inputs in graph order. Errors say expected vs got.
  Result<std::vector<Tensor>> bind_inputs(const std::map<std::string, Tensor>& named) const;
  // The plan for these inputs' shapes, built on first use. Thread-safe; the plan is not.
  // When a shape argument (Reshape's shape, Slice's starts, ...) comes from a graph input
  // rather than a constant, the plan is specialized on that input's value (at most
  // kMaxFixedElements elements) and cached per value (graph/plan_cache.h).
  Result<Plan*> plan_for(const std::vector<Tensor>& inputs);
  // Same, from shapes alone (fails if the model needs value-specialized plans).
  Result<Plan*> plan_for_shapes(const std::vector<Shape>& shapes);
  static constexpr int64_t kMaxFixedElements = PlanCache::kMaxFixedElements;
  // Validates, plans and runs. `outputs` are in graph-output order, views valid until the next
  // run with the same shapes. Not thread-safe for concurrent runs.
  // With `on_ready`, each output is also reported as soon as it is final (plan.h's
  // OutputReadyFn), while the steps after it run.
  Status run(const std::map<std::string, Tensor>& inputs, std::vector<Tensor>* outputs,
             const OutputReadyFn& on_ready = nullptr);
  // Concrete shapes for the declared inputs: a symbolic dim takes its value from `dims` (by
  // name), else `batch` if it is dimension 0, else fails naming the dim and how to set it.
  Result<std::vector<Shape>> concrete_input_shapes(const std::map<std::string, int64_t>& dims,
                                                   int64_t batch) const;
  int threads() const { return opts_.threads; }
  // Applies the thread setting to the calling thread (OpenMP's team size, which oneDNN uses).
  void apply_threads() const;

 private:
  explicit Session(Graph g, SessionOptions opts) : graph_(std::move(g)), opts_(opts) {}
  Graph graph_;
  SessionOptions opts_;
  OptimizeReport report_;
  std::unique_ptr<PlanCache> plans_;  // over graph_, made once the passes have run
};

}  // namespace dlsys
