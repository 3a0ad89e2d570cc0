// The trainer: a TrainSpec in, a trained model out. It builds the forward graph from the layers,
// derives the training graph (autodiff), runs epochs over a shuffled loader with the optimizer
// and schedule, evaluates on the validation split after every epoch, and writes the run
// directory: metrics.jsonl, the spec, model.onnx (the forward graph with the trained weights,
// checked by the ONNX checker) and the validation split as val_x.npy / val_y.npy. Checkpoints
// (every checkpoint_every steps and at the end) go to checkpoints/step-N/ through
// train/checkpoint.h, which states their layout and crash-safe protocol.
#pragma once

#include <functional>
#include <string>

#include "graph/ir.h"
#include "train/events.h"
#include "train/spec.h"

namespace dlsys::train {

struct TrainOptions {
  std::string out_dir;  // the run directory (created)
  int threads = 0;      // 0: all cores
  // Receives every event (train/events.h), typed: StepEvent, EvalEvent, DoneEvent; step and
  // eval events are also written to metrics.jsonl as their to_json(). May be null.
  std::function<void(const TrainEvent&)> on_event;
  int64_t step_event_every = 10;  // steps between step events
  // Continue from the newest checkpoint in out_dir (same spec); the losses of the steps after it
  // equal those of an uninterrupted run.
  bool resume = false;
  // The dataset store for specs with data.dataset (DATA_DIR/datasets).
  std::string datasets_dir;
};

struct TrainResult {
  int64_t epochs = 0, steps = 0;
  double seconds = 0;
  double val_loss = 0, val_accuracy = 0;  // accuracy: classification only
  double val_top5_accuracy = -1;          // cross-entropy with more than 5 classes, else -1
  double val_mae = -1;                    // mse, else -1
  std::string model_path;
  std::string dataset, validation_dataset;  // "digits@v2:train" when trained on a version
  double data_wait_seconds = 0;             // time the steps waited for the loader
  DoneEvent done;                           // the last event the run sent
};

// The names of a model's input and prediction output. Forward graphs call them "input" and
// "logits"; a model imported for fine-tuning gets its own back on export.
struct ModelNames {
  std::string input = "input", output = "logits";
};

// Builds the forward graph of `spec`: its layers with freshly initialized, seeded weights, or the
// ONNX model it fine-tunes (model.onnx) with its input and first output renamed to "input" and
// "logits" (`original`, when given, receives the model's own names).
Result<Graph> build_forward_graph(const TrainSpec& spec, ModelNames* original = nullptr);

// Trains `spec`; errors name what failed (data, spec, a step) and leave a partial run directory.
Result<TrainResult> train_model(const TrainSpec& spec, const TrainOptions& options);

}  // namespace dlsys::train
