// The trainer: a TrainSpec in, a trained model out. It builds the forward graph from the layers,
// derives the training graph (autodiff), runs epochs over a shuffled loader with the optimizer
// and schedule, evaluates on the validation split after every epoch, and writes the run
// directory: metrics.jsonl (the step and eval events, train/events.h), the spec, model.onnx (the
// forward graph with the trained weights, checked by the ONNX checker) and the validation split
// as val_x.npy / val_y.npy. Checkpoints (every checkpoint_every steps and at the end) go to
// checkpoints/step-N/ through train/checkpoint.h, which states their layout and crash-safe
// protocol.
#pragma once

#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/in_memory_dataset.h"
#include "data/loader.h"
#include "dist/bucket_reducer.h"
#include "graph/ir.h"
#include "train/autodiff.h"
#include "train/events.h"
#include "train/optimizer.h"
#include "train/preprocess.h"
#include "train/spec.h"

namespace dlsys {
class CrossProcess;  // ops/kernel.h
class Session;       // graph/session.h
namespace data {
class DatasetStore;  // data/dataset_store.h
}  // namespace data
namespace dist {
class ProcessGroup;  // dist/process_group.h
}  // namespace dist
}  // namespace dlsys

namespace dlsys::train {

struct TrainOptions {
  std::string out_dir;  // the run directory (created)
  // 0: chosen from the model: 1 when a training step is under kSmallStepFlops (more threads
  // only add waiting at every barrier there: bench/train/threads.sh), else all cores.
  int threads = 0;
  // Receives every event (train/events.h), typed: StepEvent, EvalEvent, DoneEvent; step and
  // eval events are also written to metrics.jsonl as their to_json(). May be null.
  std::function<void(const TrainEvent&)> on_event;
  int64_t step_event_every = 10;  // steps between step events
  // Continue from the newest checkpoint in out_dir (same spec); the losses of the steps after it
  // equal those of an uninterrupted run.
  bool resume = false;
  // With resume: a checkpoint written for the same spec with another train.epochs is continued
  // too (a run trained further: a promoted search trial), when the schedule does not depend on
  // the number of epochs (not cosine). Its steps equal those of a run started with the new
  // epochs.
  bool extend = false;
  // The dataset store for specs with data.dataset (DATA_DIR/datasets).
  std::string datasets_dir;
  // Asked after every optimizer step (may be null): when it returns true the run writes a
  // checkpoint of that step and stops with kStopped (a job cancelled or its service shutting
  // down: SIGTERM). `resume` continues it as if it had never stopped.
  std::function<bool()> stop_requested;
  // Called after every step and every validation batch (may be null): the run's sign of life
  // (a job's heartbeat file). Must be cheap.
  std::function<void()> heartbeat;
  // Called once the last step and evaluation are done, before the final checkpoint and the
  // export (may be null): what follows beats no more (a job's heartbeat goes on by time).
  std::function<void()> steps_done;
  // Data-parallel training: this process is one rank of `group` (null: it trains alone). Needs
  // train.micro_batches, which the world size must divide: every rank reads its own
  // consecutive micro-batches of every batch (batch_part) and computes their gradients, which
  // are all-reduced in the tree of train.micro_batches (bit-identical weights across power-of-two
  // world sizes); a rank that cannot use its part, or whose loss is not finite, makes every rank
  // fail that step; batch norm's running statistics are folded in micro-batch order on every rank,
  // and every rank then takes the same optimizer step. Only rank 0 writes metrics.jsonl,
  // checkpoints and the model; every rank resumes from out_dir's checkpoints. Not owned; outlives
  // the run.
  dist::ProcessGroup* group = nullptr;
  // With group: 1 shards the optimizer's state (ZeRO stage 1): the parameters, laid end to end,
  // are cut into world-size equal ranges of elements; each rank keeps the moments of its range
  // and updates only it, then the updated values are all-gathered. The weights are the same as
  // unsharded; checkpoints gather the whole state to rank 0 (so they resume on any world size).
  int zero_stage = 0;
};

// The status message prefix of a run that stopped because stop_requested said so (its code is
// kUnavailable: the work is not done and can go on).
inline constexpr const char* kStopped = "training stopped on request";

// Below this many estimated FLOPs per training step (forward and backward of one batch), the
// default is one thread.
inline constexpr double kSmallStepFlops = 100e6;

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
  // The optimizer state this process held at the end (moments, momentum), and the world size it
  // was sharded over (1: not sharded).
  int64_t optimizer_state_bytes = 0;
  int optimizer_shards = 1;
  int threads = 0;        // what options.threads resolved to (0: all cores)
  double step_flops = 0;  // estimated FLOPs of a training step (0: not estimated)
  // A data-parallel run's buckets, link and all-reduce times: done.distributed.
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

// One training run of a spec into options.out_dir. run() calls the phases in this order:
//   build_model -> open_data -> build_graphs -> restore -> open_metrics
//   -> for each epoch: run_epoch, evaluate (an EvalEvent; early stop at target_accuracy)
//   -> checkpoint (the final one) -> export_model -> the DoneEvent.
// Each phase states what it needs from the earlier ones and what it leaves in the members. A
// Trainer runs once.
class Trainer {
 public:
  Trainer(TrainSpec spec, TrainOptions options);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Trains; errors name what failed (data, spec, a step) and leave a partial run directory. A
  // second call fails.
  Result<TrainResult> run();

 private:
  using Clock = std::chrono::steady_clock;
  struct CloseFile {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };

  // Creates the run directory and builds the forward graph (forward_, names_), the parameters
  // to train (trainable_, the freeze patterns applied) and the per-sample shapes of the input
  // and the prediction. Spec errors show here, before any data is read; bf16 on a CPU without
  // bf16 kernels is refused here too.
  Status build_model();

  // Reads the data: a version of the dataset store (a shuffling DatasetLoader, and the whole
  // validation split in stored order) or files (CSV, NPY, IDX through the data module's ingest
  // sources; split by validation_fraction unless validation files are given; features scaled by
  // feature_scale, served by a TensorLoader). Nulls as data.nulls says. Leaves loader_, val_,
  // the dataset labels, and checks that a sample's size is what the model's input needs. Then
  // fits data.preprocess (feature_scale first, as a scale step) on the training split and
  // prepends it to forward_, whose input becomes the raw features (preprocess_,
  // input_sample_). Needs build_model.
  Status open_data();
  // The part of each batch this rank's loader assembles: its micro-batches when training on
  // more than one worker, else the whole batch.
  data::BatchPart batch_part() const;
  // Fits the preprocessing on the training data (`file_train` for file data, else a
  // sequential pass of the store's training split) and prepends it to forward_.
  Status fit_preprocessing(const data::InMemoryDataset* file_train, const Shape& data_sample);

  // Derives the training graph (loss, gradients, training-mode layers) and the evaluation graph
  // (inference-mode forward graph), both with the weights as inputs, and plans their sessions
  // (the training one in bf16 with precision: bf16). Clones the initial parameters and running
  // statistics into inputs_ and buffers_ (the live tensors every later phase updates), makes the
  // optimizer, the schedule (total_steps defaults to epochs x steps per epoch) and the spec's
  // hash. Needs open_data.
  Status build_graphs();

  // Data-parallel: lays out ZeRO-1's ranges (zero_stage 1), then checks that every rank agrees
  // with rank 0 on the spec (its hash, overrides included) and
  // on the parameters it trains (names, shapes, order), checked through the group before any
  // step. A difference fails every rank at once: the rank that differs names the first spec or
  // parameter line that differs (its value here and on rank 0), the others name that rank.
  // Needs build_graphs.
  Status check_group();
  // Data-parallel: every rank starts at the same step. Ranks that resumed from different
  // checkpoints (an --out that is not one shared folder) fail naming the steps, rather than
  // train apart. Needs restore.
  Status check_start();
  // With options.resume: restores parameters, running statistics and optimizer state from the
  // run's latest checkpoint (same spec hash) and moves the loader to its position. Sets step_,
  // start_step_ and start_position_ (where the run continues; step 0, epoch 0, batch 0 without
  // resume). Needs build_graphs.
  Status restore();

  // Opens metrics.jsonl: appended to on resume, truncated otherwise.
  Status open_metrics();

  // Runs the optimizer steps of epoch `epoch` (0-based) from its first batch, or from
  // start_position_'s batch in the epoch the run resumes in. Per step: the group of
  // accumulate_steps batches (gradients averaged by batch size), clipping, the learning rate of the
  // schedule, the optimizer update, the running statistics; a checkpoint every checkpoint_every
  // steps and a StepEvent every step_event_every. Advances step_; `*train_loss` receives the mean
  // loss over the samples of the epoch this process ran. Errors name the step (a non-finite loss
  // too).
  Status run_epoch(int64_t epoch, double* train_loss);

  // One optimizer step over the batches [*batch, end of its accumulation group); advances
  // *batch past them. `*loss_sum` and `*samples` receive the summed loss and sample count.
  Status train_step(int64_t epoch, int64_t* batch, double* loss_sum, int64_t* samples, double* lr);
  // train_step with train.micro_batches: one batch, this rank's micro-batches (all of them
  // alone), their weighted gradients and losses summed as a tree, all-reduced across the
  // group, the batch statistics gathered and folded in micro-batch order, then the optimizer.
  // The error of a rank whose data was fine when `ranks` others could not use theirs.
  Status other_ranks_failed(const std::string& where, float ranks) const;
  Status micro_batch_step(int64_t epoch, int64_t* batch, double* loss_sum, int64_t* samples,
                          double* lr);

  // Validation over the whole split, in batches of 256, with the inference-mode graph and the
  // live weights: the recipe's loss (label smoothing included) and accuracy (top-1, top-5 above
  // 5 classes) for cross_entropy, thresholded accuracy for bce_with_logits, mean absolute error
  // for mse. Changes no state.
  Result<EvalMetrics> evaluate();

  // Writes a checkpoint of the live state (parameters, running statistics, optimizer, loader
  // position) as step `at_step` through train/checkpoint.h.
  Status checkpoint(int64_t at_step);

  // Writes model.onnx (the forward graph with the trained weights and running statistics, a
  // fine-tuned model under its own input and output names; its preprocessing first, and the
  // metadata dlsys.preprocess, dlsys.feature_names, dlsys.class_names, dlsys.task, and
  // dlsys.string_inputs when string columns go in as strings: Preprocessor::string_inputs_to),
  // val_x.npy / val_y.npy (the validation split the metrics were computed on, raw features as
  // the evaluation took them: a string column as its code, where the model takes its name) and
  // spec.yaml. Sets result_.model_path.
  Status export_model();

  // Sends `e` to options.on_event; record() also appends its to_json() to metrics.jsonl.
  void emit(const TrainEvent& e);
  void record(const TrainEvent& e);

  // A batch of samples in the model's input shape; a batch of labels in the shape the loss reads
  // (class ids as they are; regression and bce targets as f32 in the prediction's shape).
  Tensor input_batch(Tensor x) const;
  Tensor target_batch(Tensor y) const;
  // cross_entropy: every class id in `labels` must be in [0, classes) where classes is the
  // model's output size. Otherwise the error names `where`, the label column, the value found
  // and the output size (a label past the last class would train on garbage and report a
  // negative loss).
  Status check_class_ids(const Tensor& labels, const std::string& where) const;
  // The label column as the spec names it, for messages.
  // The columns data.preprocess onehot steps name (string ones become categorical features).
  std::vector<std::string> onehot_columns() const;
  // " (string columns ... )" when the dataset's default features left string columns out.
  std::string string_columns_hint() const;
  std::string label_column_name() const;

  const TrainSpec spec_;
  const TrainOptions options_;
  bool ran_ = false;

  // build_model
  Graph forward_;
  ModelNames names_;
  std::vector<std::string> trainable_;
  Shape input_sample_;   // the model's input per sample
  Shape logits_sample_;  // the prediction per sample
  bool classify_ = false, bce_ = false;

  // open_data (the store outlives the loader that reads it)
  std::unique_ptr<data::DatasetStore> store_;
  std::unique_ptr<data::Loader> loader_;
  data::InMemoryDataset val_;
  std::string dataset_label_, validation_label_;
  std::vector<std::string> feature_names_;  // the raw features' names (empty: unnamed)
  data::Vocabularies vocabularies_;         // the string features' categories (training split)
  std::string ignored_strings_;             // string columns left out of the default features
  Preprocessor preprocess_;                 // fitted, and the first nodes of forward_

  // build_graphs
  TrainingGraph tg_;
  // train.sync_batch_norm on more than one rank: the group's second channel (the batch norms'
  // sums run on the compute thread while reducer_ uses the group) and the kernels' view of it;
  // declared before the sessions, whose kernels use them, so destroyed after them.
  std::unique_ptr<dist::ProcessGroup> norm_group_;
  std::unique_ptr<CrossProcess> cross_process_;
  std::unique_ptr<Session> session_, eval_session_;
  std::map<std::string, Tensor> inputs_;   // the training session's: parameters and the batch
  std::vector<std::string> buffer_names_;  // running statistics
  std::map<std::string, Tensor> buffers_;  // their live values
  std::vector<Tensor*> params_;            // inputs_' parameters, in gradient order
  std::vector<Tensor> grad_sums_;          // accumulate_steps > 1: the step's averaged gradients
  // micro_batches: each parameter's offset in one flat gradient (then three floats: the loss
  // sum, the stop flag and the data-error flag), the gradients of this rank's micro-batches
  // (summed in place).
  std::vector<size_t> grad_offsets_;
  std::vector<std::vector<float>> leaf_grads_;
  // With a group of more than one rank: the gradient buckets, all-reduced during the backward
  // pass (bucket 0 holds the last parameters, then the loss sum and the two flags), and each
  // parameter's bucket.
  std::unique_ptr<dist::BucketReducer> reducer_;
  std::vector<size_t> bucket_of_param_;
  std::vector<size_t> bucket_outputs_;  // per bucket: the session outputs that complete it
  // This rank's figures (the done event's "distributed"): filled by form_buckets, the steps and
  // the end of the run.
  DistributedStats dist_;
  // Sets up reducer_ (measuring the link unless train.bucket_kib is set). A collective.
  Status form_buckets();
  std::vector<float> shard_mine_;  // sharded: this rank's range, sent
  std::vector<float> shard_all_;   // sharded: every rank's ranges, gathered
  int rank_ = 0, world_ = 1;       // options.group's, or 0 and 1
  // zero_stage 1: this rank's range [shard_lo_, shard_hi_) of the parameters laid end to end
  // (grad_offsets_), every rank's range shard_block_ floats long (the last one shorter).
  bool sharded_ = false;
  size_t shard_lo_ = 0, shard_hi_ = 0, shard_block_ = 0;
  // grad_offsets_ (and grad_sums_) from the parameters, once.
  void lay_out_gradients();
  // Sharded: the pieces of the parameters (or of any tensors shaped like them) in this rank's
  // range, as views, with the names their optimizer state is kept under ("NAME@OFFSET").
  std::vector<std::pair<std::string, Tensor>> owned_pieces(const std::vector<Tensor*>& of) const;
  // With a group: a stop was asked of some rank (agreed through the gradients' all-reduce).
  bool group_stop_ = false;
  // Sharded: every rank's range of `values` (laid out as the parameters) to every rank (one
  // all-gather).
  Status share_owned(const std::vector<float*>& values);
  // Sharded: the optimizer's whole state, every slot gathered from its owner (for a checkpoint).
  Result<std::map<std::string, Tensor>> gathered_optimizer_state();
  // Whether the run stops after this step: asked of this process, or with a group of any rank.
  bool stop_now() const;
  std::optional<Optimizer> optimizer_;
  ScheduleConfig schedule_;
  int64_t batches_per_epoch_ = 0, steps_per_epoch_ = 0;
  std::string spec_hash_;
  std::string extend_hash_;  // "" when the schedule depends on the number of epochs

  // restore, and the run's progress
  int64_t start_step_ = 0;               // the step the run starts or resumes at
  data::LoaderPosition start_position_;  // the batch it starts or resumes at
  int64_t step_ = 0;                     // optimizer steps completed
  std::unique_ptr<std::FILE, CloseFile> metrics_;
  Clock::time_point t0_;
  EvalMetrics last_metrics_;  // the latest evaluation's, for the DoneEvent
  TrainResult result_;
};

// Trains `spec`: Trainer(spec, options).run().
Result<TrainResult> train_model(const TrainSpec& spec, const TrainOptions& options);

}  // namespace dlsys::train
