// The training spec (YAML): data, model layers, and the training recipe. Parsed with yaml-cpp;
// every error names the field and its line, and unknown fields are errors (a typo never falls
// back to a default silently). Example: examples/digits/mlp.yaml.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "core/status.h"
#include "train/optimizer.h"

namespace dlsys::train {

// One layer of `model.layers`. Shapes are per sample (no batch dimension).
//   linear {out, bias}: y = x W^T + b over the last dimension (W is [out, in], as nn.Linear)
//   conv2d {out, kernel, stride, padding, groups, bias}: on [C, H, W]
//   batchnorm {eps, momentum}: over the channels ([C] or [C, H, W]); momentum as PyTorch's (0.1)
//   layernorm {eps}: over the last dimension
//   dropout {p}; relu, gelu, sigmoid, tanh
//   maxpool / avgpool {kernel, stride (default kernel), padding}: on [C, H, W]
//   global_avg_pool: [C, H, W] -> [C]; mean_pool: [S, D] -> [D] (mean over the sequence)
//   flatten: [...] -> [n]
//   embedding {vocab, dim}: token ids [S] (as numbers) -> [S, dim]
//   attention {heads}: multi-head self-attention on [S, D] (q, k, v and output projections)
//   residual {layers, shortcut}: shortcut(x) + layers(x), shortcut the identity unless given
//   (e.g. a strided 1x1 conv2d and a batchnorm where a ResNet block downsamples)
struct LayerSpec {
  std::string type;
  int64_t out = 0;                  // linear, conv2d: output features / channels
  int64_t kernel = 0, stride = 0;   // conv2d, pooling (stride 0: conv 1, pooling = kernel)
  int64_t padding = 0, groups = 1;  // conv2d, pooling
  bool bias = true;                 // linear, conv2d
  double eps = 1e-5;                // batchnorm, layernorm
  double momentum = 0.1;            // batchnorm (PyTorch's convention)
  double p = 0.5;                   // dropout
  int64_t vocab = 0, dim = 0;       // embedding
  int64_t heads = 1;                // attention
  std::vector<LayerSpec> layers;    // residual
  std::vector<LayerSpec> shortcut;  // residual: applied to x when the block changes the shape
  int line = 0;
};

// One step of `data.preprocess`: computed from the training split, then part of the model (the
// exported ONNX graph starts with it), so a served model takes raw features. train/preprocess.h
// fits and applies them.
//   impute {strategy: mean|median|constant, value}: nulls (NaN) -> a statistic of the column
//   clip {min, max}: values outside [min, max] -> the bound
//   standardize: (x - mean) / std (population std; 1 where a column is constant)
//   minmax: (x - min) / (max - min) (1 where a column is constant)
//   scale {factor}: x * factor (data.feature_scale is a scale step before every other)
//   onehot: a categorical column -> one 0/1 feature per category seen in training (an unseen
//   category gives all zeros); onehot steps come last (they change the number of features)
struct PreprocessStep {
  std::string kind;
  // Feature columns by name (a dataset's or a CSV header's) or 0-based index; empty: every
  // feature (onehot needs them named).
  std::vector<std::string> columns;
  std::string strategy = "mean";           // impute
  double value = 0;                        // impute constant
  double min = -HUGE_VAL, max = HUGE_VAL;  // clip
  double factor = 1;                       // scale
  int line = 0;
};

struct TrainSpec {
  std::string name = "model";
  std::string spec_path;  // the file it came from (data paths are relative to its folder)
  std::string spec_text;  // its content (copied into the run; hashed to match checkpoints)
  // The spec as trained (overrides applied, re-emitted) without train.epochs and
  // train.checkpoint_every: what a checkpoint must match to be continued for more epochs
  // (TrainOptions::extend).
  std::string extend_text;
  // data: a file (train_path), or a version of the dataset store (dataset, e.g. "digits@v2";
  // its train split unless the reference names one; validation from its validation split, or
  // from `validation` when that names another version)
  std::string dataset, dataset_validation;
  std::vector<std::string> features;  // dataset feature columns (empty: the loader's default)
  std::string label = "label";        // dataset label column
  std::string train_path, validation_path;
  // npy and idx: the labels are a second file beside each features file
  std::string train_labels_path, validation_labels_path;
  // csv: features and a label column in one file; npy: features [N, ...] and labels [N] in two
  // .npy files; idx: MNIST's format (u8 images scaled to [0, 1], labels)
  std::string format = "csv";
  int label_column = -1;
  double validation_fraction = 0.2;
  double feature_scale = 1.0;              // features are multiplied by this (e.g. 1/16 for digits)
  std::vector<PreprocessStep> preprocess;  // applied in order, inside the model
  // Rows with a null (missing) feature: "error" (the default without an impute step), "drop"
  // (the row is skipped), "impute" (the default with one: the impute steps fill them).
  std::string nulls;
  // The names of the classes (cross_entropy: one per model output), stored in the model.
  std::vector<std::string> class_names;
  uint64_t split_seed = 0;
  // model
  std::vector<int64_t> input_shape;  // per sample, e.g. [64]
  std::vector<LayerSpec> layers;
  // Fine-tuning instead of layers: an ONNX model with one input whose first output is the
  // prediction; its float initializers are trained except those matching a `freeze` pattern
  // (glob: * any run of characters, ? one character, e.g. "layers.0.*").
  std::string onnx_path;
  std::vector<std::string> freeze;
  std::string init = "default";  // default (PyTorch's Linear init), kaiming, xavier
  // recipe
  int64_t epochs = 10;
  int64_t batch_size = 32;
  uint64_t seed = 0;
  std::string loss = "cross_entropy";  // cross_entropy, mse, bce_with_logits
  float label_smoothing = 0.0f;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  double clip_grad_norm = 0.0;   // 0: off
  double target_accuracy = 0.0;  // stop once validation accuracy reaches it (0: off)
  int64_t checkpoint_every = 0;  // steps between checkpoints (0: only at the end)
  // Batches whose gradients are averaged (weighted by their sizes) before one optimizer step: the
  // step of a batch accumulate_steps times larger, in the memory of one batch.
  int64_t accumulate_steps = 1;
  // 0: off. Else a power of two M: each batch is split into M micro-batches of consecutive rows
  // (sizes differing by at most one), each one's gradient weighted by its share of the batch, and
  // the M summed as a balanced binary tree in order. A data-parallel run (TrainOptions::group)
  // gives each of its W ranks M / W consecutive micro-batches and all-reduces in the same tree:
  // the weights are bit-identical for every world size that is a power of two dividing M
  // (dist/process_group.h). Not with accumulate_steps.
  int64_t micro_batches = 0;
  // Data-parallel runs: the gradients are all-reduced in buckets of about this many KiB, each
  // as soon as the backward pass has produced it (dist/bucket_reducer.h). 0: chosen from a
  // measurement of the link when the group forms. A size past the whole gradient makes one
  // bucket, sent after the backward pass. Changes the speed only, never the weights.
  int64_t bucket_kib = 0;
  // Data-parallel runs: false all-reduces the same buckets only after the whole backward pass
  // (what bench/dist measures the overlap against). Changes the speed only.
  bool overlap = true;
  // Data-parallel runs: batch norm normalizes with the statistics of the whole batch, summed
  // over the workers in the forward and backward passes (PyTorch's SyncBatchNorm), instead of
  // each micro-batch's own. Each worker then runs one micro-batch (micro_batches: the worker
  // count), batch_size must divide evenly, and an epoch's last, smaller batch is dropped (the
  // same on every worker count, one process included). Equal to one process normalizing the
  // whole batch, up to rounding, for a model without dropout (dropout masks are drawn per
  // micro-batch); not bit-identical across worker counts, unlike the rest of training. Cannot be
  // combined with --min-workers (fewer workers would need another split).
  bool sync_batch_norm = false;
  // fp32, or bf16: matmuls and convolutions (forward and backward) compute in bf16 with fp32
  // accumulation; weights, gradients, loss, norms and optimizer state stay fp32.
  std::string precision = "fp32";
};

// Reads and checks the spec at `path`, with `overrides` applied first: each "FIELD=VALUE", where
// FIELD is a setting's dotted path (train.optimizer.lr) or its last part when that is unique
// (resolve_spec_field) and VALUE is YAML (0.01, adam, [64]). Setting data.dataset removes the
// spec's data files (train, validation, format, ...): the run reads the version instead. With
// overrides, spec_text is the spec as trained (re-emitted YAML under a comment naming them),
// so the run's spec.yaml and its checkpoints' hash follow them.
Result<TrainSpec> load_train_spec(const std::string& path,
                                  const std::vector<std::string>& overrides = {});

// The dotted path of the spec setting `name`: itself when it is one (train.epochs), else the one
// setting whose last part it is (lr -> train.optimizer.lr). InvalidArgument names the choices
// when it is ambiguous (name) and points to docs/spec.md when it is none.
Result<std::string> resolve_spec_field(const std::string& name);

// Every field the parser accepts, as a dotted path: "name", "data.feature_scale",
// "train.optimizer.lr", and per layer type "model.layers[].linear" and
// "model.layers[].linear.out". Built from the same lists the parser refuses unknown keys
// against, so docs/spec.md (a table row per path, checked by cli_test) cannot fall behind it.
std::vector<std::string> train_spec_fields();

}  // namespace dlsys::train
