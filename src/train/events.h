// The trainer's events: what a run reports while it trains (a step, an epoch's evaluation) and
// when it ends. Callers read the typed fields (`dlsys train` draws its progress bar and logs
// metrics from them); to_json() gives the objects that metrics.jsonl and `dlsys train --json`
// write, one per line. Those objects are a published format (docs, tests and users read them):
// keys, value types (integer or float) and the presence rules below do not change.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace dlsys::train {

// Every TrainOptions::step_event_every optimizer steps (steps whose index is a multiple of it).
struct StepEvent {
  int64_t epoch = 0;         // 1-based
  int64_t step = 0;          // 0-based index of the optimizer step just taken
  int64_t total_steps = 0;   // epochs x optimizer steps per epoch
  double loss = 0;           // mean training loss over the step's samples
  double lr = 0;             // the learning rate the step used
  double samples_per_s = 0;  // this epoch's samples so far over its time so far
  double eta_s = 0;          // seconds to the last step, at this process's pace
  // {"event":"step","epoch","step","total_steps","loss","lr","samples_per_s","eta_s"}
  nlohmann::json to_json() const;
};

// Validation metrics over the whole split; the optional ones exist only where the loss defines
// them.
struct EvalMetrics {
  double val_loss = 0;                      // the recipe's loss (label smoothing included)
  std::optional<double> val_accuracy;       // cross_entropy (top-1), bce_with_logits
  std::optional<double> val_top5_accuracy;  // cross_entropy with more than 5 classes
  std::optional<double> val_mae;            // mse
  // Adds "val_loss" and the present optional metrics, under these names, to `j`.
  void add_to(nlohmann::json* j) const;
};

// After every epoch.
struct EvalEvent {
  int64_t epoch = 0;      // 1-based, the epoch just finished
  int64_t step = 0;       // optimizer steps completed so far
  double train_loss = 0;  // mean training loss over the epoch's samples (this process's part)
  double elapsed_s = 0;   // since this process started training
  EvalMetrics metrics;
  // {"event":"eval","epoch","step","train_loss","elapsed_s", + the metrics}
  nlohmann::json to_json() const;
};

// Once, when the model is exported.
// A data-parallel run's figures, this rank's (DoneEvent::distributed).
struct DistributedStats {
  int rank = 0, world = 1;
  int64_t gradient_bytes = 0;             // all-reduced a step (the gradients, 4 bytes each)
  int64_t buckets = 0, bucket_bytes = 0;  // the gradient buckets, and the size asked
  bool bucket_bytes_measured = false;     // chosen from the link (else train.bucket_kib)
  double link_latency_s = 0, link_bytes_per_s = 0;  // measured when the group formed
  double compute_s = 0;            // the training session's runs (forward and backward)
  double allreduce_s = 0;          // the buckets' all-reduces, on their own thread
  double exposed_allreduce_s = 0;  // of which the steps waited for after their backward
  int64_t allreduces = 0, started_during_backward = 0;
  int64_t optimizer_state_bytes = 0;
  int optimizer_shards = 1;
  // Per bucket, in their order (the last parameters first): bytes, and all-reduce seconds summed
  // over the steps.
  std::vector<int64_t> bucket_sizes;
  std::vector<double> bucket_seconds;
  // {"rank","world","gradient_bytes","buckets","bucket_bytes","bucket_bytes_measured","link":{"latency_s",
  //  "bytes_per_s"},"compute_s","allreduce_s","exposed_allreduce_s","allreduces",
  //  "started_during_backward","optimizer_state_bytes","optimizer_shards","bucket_sizes":[...],"bucket_seconds":[...]}
  nlohmann::json to_json() const;
};

struct DoneEvent {
  int64_t epochs = 0, steps = 0;
  double seconds = 0;             // training time of this process
  EvalMetrics metrics;            // the last evaluation's
  std::string model;              // the exported model.onnx
  double data_wait_s = 0;         // time the steps waited for the loader
  double data_wait_fraction = 0;  // data_wait_s / seconds (0 when seconds is 0)
  // Set when trained on a version of the dataset store ("digits@v2:train"), else empty.
  std::string dataset, validation_dataset;
  int threads = 0;                              // the threads the steps ran on (0: all cores)
  std::optional<DistributedStats> distributed;  // set for a rank of a data-parallel run
  // {"event":"done","epochs","steps","seconds","threads","metrics":{...},"model",
  //  "data":{"wait_s","wait_fraction"[,"dataset","validation"]}[,"distributed":{...}]}
  nlohmann::json to_json() const;
};

using TrainEvent = std::variant<StepEvent, EvalEvent, DoneEvent>;

// The JSON object of whichever event `e` holds.
nlohmann::json to_json(const TrainEvent& e);

}  // namespace dlsys::train
