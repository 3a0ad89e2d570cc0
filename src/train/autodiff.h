// Graph-level autodiff: from a forward graph and a loss, a training graph that computes the
// loss and d(loss)/d(parameter) for each trainable parameter, in the same IR (ONNX ops plus
// SumToShapeOf), so that it is optimized, planned and run like any other graph. Parameters
// become graph inputs: the trainer passes the current weights every step and updates them with
// the returned gradients.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"
#include "graph/ir.h"

namespace dlsys::train {

enum class LossKind {
  kSoftmaxCrossEntropy,  // prediction: logits [N, C]; target: i64 class ids [N]; mean over N
  kMeanSquaredError,     // prediction and target: f32 of one shape; mean over every element
};

struct LossSpec {
  LossKind kind = LossKind::kSoftmaxCrossEntropy;
  std::string prediction;         // a forward value (usually the graph output)
  std::string target = "target";  // name of the new graph input holding the labels
  float label_smoothing = 0.0f;   // cross-entropy only: in [0, 1)
};

struct TrainingGraph {
  Graph graph;  // inputs: forward inputs, target, parameters; outputs: loss, grads..., prediction
  std::string loss;
  std::vector<std::string> params;  // the trainable initializers, in gradient order
  std::vector<std::string> grads;   // graph output names of their gradients
  std::string prediction;
};

// Builds the training graph. `params` names the initializers to train; empty means every float
// initializer the loss depends on. Errors name the op without a gradient, or the parameter that
// does not affect the loss.
Result<TrainingGraph> build_training_graph(const Graph& forward, const LossSpec& loss,
                                           const std::vector<std::string>& params);

// The op types that have a gradient builder, sorted.
std::vector<std::string> differentiable_ops();

}  // namespace dlsys::train
