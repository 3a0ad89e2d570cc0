// ModelRunner: N instances of one ONNX model for serving, each its own Session (a Session's
// plans are not safe for concurrent runs), with plans built ahead of time for a fixed set of
// batch-size buckets so that serving never builds a plan (and an arena) per batch size.
//
// Threading: open() and warm_up() are called once, before serving. After that run() may be
// called concurrently for different instances, never concurrently for the same instance (the
// DynamicBatcher's one worker per instance guarantees it). The metadata accessors and
// memory_bytes() are safe at any time after warm_up() returns. add_instance() and
// remove_instance() (autoscaling) are called from one thread at a time; run() must not be called
// on an instance that is being added or removed (the batcher activates an instance only after
// add_instance() returned, and parks it before remove_instance()).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/status.h"
#include "graph/model_metadata.h"
#include "graph/session.h"
#include "ops/attribute.h"
#include "serve/tensor_spec.h"
#include "tensor/tensor.h"

namespace dlsys::serve {

struct ModelRunnerOptions {
  int instances = 1;      // Sessions at open, each with its own weights and plans
  int max_instances = 0;  // the most add_instance() may reach (0: instances)
  int threads = 1;        // intra-op threads per instance (0: OpenMP's default)
  Precision precision = Precision::kF32;
  int64_t max_batch = 32;             // the largest padded batch
  std::vector<int64_t> buckets = {};  // ascending, last == max_batch; empty: default_buckets()
};

class ModelRunner {
 public:
  // Opens `onnx_path` once per instance. Every input must have a symbolic first dimension (the
  // batch) and fixed other dims; errors name the input and say how to export it. Options are
  // checked (errors name the field).
  static Result<std::unique_ptr<ModelRunner>> open(const std::string& onnx_path,
                                                   ModelRunnerOptions opts);

  // Builds the plan of every bucket on every instance and runs it once on zeros; records the
  // wall time in warm_up_us(). A model that cannot be planned from shapes alone fails here.
  Status warm_up();
  int64_t warm_up_us() const { return warm_up_us_; }

  // Opens, plans and warms one more instance (index instances()) from the same file. Invalid at
  // max_instances. The file given to open() must still exist.
  Status add_instance();
  // Frees the last instance (its Session, weights and plans). Invalid with one instance left.
  Status remove_instance();

  // Bytes held by the runner, as far as dlsys tracks them: for every instance, the bytes of the
  // (optimized) graph's initializers (the weights, counted once per instance since each Session
  // imports its own copy) plus the activation arena of each bucket's plan built so far
  // (Plan::activation_bytes()). Not counted: weight copies a plan reorders into oneDNN
  // layouts, oneDNN scratchpads and kernel code, protobuf and allocator overhead.
  int64_t memory_bytes() const;

  // Runs one padded batch on `instance` (applies its thread count on the calling thread first).
  // `padded` holds the inputs in graph order, all with dim 0 equal to one of the buckets, of
  // which the first `rows` are real. Returns the outputs in graph order: views into the
  // instance's plan, valid until the next run() on the same instance. Matches RunFn.
  Result<std::vector<Tensor>> run(int instance, const std::vector<Tensor>& padded, int64_t rows);

  const std::vector<TensorSpec>& inputs() const { return inputs_; }
  const std::vector<TensorSpec>& outputs() const { return outputs_; }
  // What the model says about itself (dlsys.* metadata; empty for a model not trained by dlsys).
  const ModelMetadata& metadata() const { return metadata_; }
  const std::vector<int64_t>& buckets() const { return opts_.buckets; }
  const ModelRunnerOptions& options() const { return opts_; }
  // Instances open now.
  int instances() const { return active_.load(std::memory_order_acquire); }

 private:
  explicit ModelRunner(ModelRunnerOptions opts) : opts_(std::move(opts)) {}
  Status warm_instance(size_t i);

  ModelRunnerOptions opts_;
  std::string path_;
  SessionOptions session_options_;
  // max_instances slots; the first active_ hold an open Session.
  std::vector<std::unique_ptr<Session>> sessions_;
  std::atomic<int> active_{0};
  mutable std::mutex instances_mu_;  // add/remove_instance against memory_bytes()
  std::vector<TensorSpec> inputs_, outputs_;
  ModelMetadata metadata_;
  // plans_[instance][bucket index]: null until built by warm_up() or run().
  std::vector<std::vector<Plan*>> plans_;
  int64_t warm_up_us_ = 0;
};

}  // namespace dlsys::serve
