// Graph-level autodiff: from a forward graph and a loss, a training graph that computes the
// loss and d(loss)/d(parameter) for each trainable parameter, in the same IR (ONNX ops plus
// SumToShapeOf), so that it is optimized, planned and run like any other graph. Parameters
// become graph inputs: the trainer passes the current weights every step and updates them with
// the returned gradients.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "graph/ir.h"

namespace dlsys::train {

enum class LossKind {
  kSoftmaxCrossEntropy,  // prediction: logits [N, C]; target: i64 class ids [N]; mean over N
  kMeanSquaredError,     // prediction and target: f32 of one shape; mean over every element
  // prediction: logits; target: f32 in [0, 1] of the same shape; mean over every element of
  // max(z, 0) - z t + log(1 + exp(-|z|)) (stable for any z)
  kBinaryCrossEntropyWithLogits,
};

struct LossSpec {
  LossKind kind = LossKind::kSoftmaxCrossEntropy;
  std::string prediction;         // a forward value (usually the graph output)
  std::string target = "target";  // name of the new graph input holding the labels
  float label_smoothing = 0.0f;   // cross-entropy only: in [0, 1)
};

// A BatchNormalization of the forward graph: its running statistics (initializers of the forward
// graph, not parameters) and the outputs of the training graph holding this batch's statistics.
// After each step: running = running * momentum + batch * (1 - momentum) (ONNX's convention;
// PyTorch's momentum 0.1 is ONNX's 0.9), with the unbiased batch variance.
struct BatchStat {
  std::string running_mean, running_var;
  std::string batch_mean, batch_var;  // training graph outputs
  float momentum = 0.9f;
};

struct TrainingGraph {
  // inputs: forward inputs, parameters, target (and dropout_seed); outputs: loss, grads...,
  // prediction, then batch_mean and batch_var of each BatchStat.
  Graph graph;
  std::string loss;
  std::vector<std::string> params;  // the trainable initializers, in gradient order
  std::vector<std::string> grads;   // graph output names of their gradients
  std::string prediction;
  std::vector<BatchStat> batch_stats;
  // An i64 scalar input that seeds every TrainingDropout mask ("" when the model has no dropout):
  // the trainer passes a different value each step, the same one when a step is repeated.
  std::string dropout_seed;
};

// Builds the training graph. Layers that behave differently in training are switched to their
// training form first: Dropout becomes TrainingDropout (ratio from its input or attribute),
// BatchNormalization becomes BatchNormTraining on this batch's statistics (see BatchStat), and
// LayerNormalization keeps its Mean/InvStdDev outputs for the gradient. `params` names the
// initializers to train; empty means every float initializer but running statistics. Errors name
// the op without a gradient, or the parameter that does not affect the loss.
Result<TrainingGraph> build_training_graph(const Graph& forward, const LossSpec& loss,
                                           const std::vector<std::string>& params);

// Marks every batch norm of a training graph, forward and gradient, as synchronized (attribute
// sync=1): planned with a SessionOptions::cross_process, it normalizes with the statistics of
// the whole batch over the processes (train.sync_batch_norm). Returns how many it marked.
int synchronize_batch_norms(TrainingGraph* tg);
// Turns the named initializers of `g` into graph inputs (f32, their shapes), in that order: the
// caller feeds their current values on every run (parameters, running statistics).
void initializers_to_inputs(Graph* g, const std::vector<std::string>& names);

// The initializers that build_training_graph trains when given no list: every f32 initializer
// with more than one element that is not a BatchNormalization running statistic, sorted.
std::vector<std::string> trainable_initializers(const Graph& forward);

// Folds this step's batch statistics into the running statistics: `outputs` are the training
// graph's outputs of one run, `state` maps each running statistic's name to its tensor.
Status apply_batch_stats(const TrainingGraph& tg, const std::vector<Tensor>& outputs,
                         std::map<std::string, Tensor>* state);

// The op types that have a gradient builder, sorted.
std::vector<std::string> differentiable_ops();

}  // namespace dlsys::train
