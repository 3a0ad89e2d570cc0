#include "train/events.h"

namespace dlsys::train {

using json = nlohmann::json;

json StepEvent::to_json() const {
  return {{"event", "step"},
          {"epoch", epoch},
          {"step", step},
          {"total_steps", total_steps},
          {"loss", loss},
          {"lr", lr},
          {"samples_per_s", samples_per_s},
          {"eta_s", eta_s}};
}

void EvalMetrics::add_to(json* j) const {
  (*j)["val_loss"] = val_loss;
  if (val_accuracy) (*j)["val_accuracy"] = *val_accuracy;
  if (val_top5_accuracy) (*j)["val_top5_accuracy"] = *val_top5_accuracy;
  if (val_mae) (*j)["val_mae"] = *val_mae;
}

json EvalEvent::to_json() const {
  json j = {{"event", "eval"},
            {"epoch", epoch},
            {"step", step},
            {"train_loss", train_loss},
            {"elapsed_s", elapsed_s}};
  metrics.add_to(&j);
  return j;
}

json DoneEvent::to_json() const {
  json m = json::object();
  metrics.add_to(&m);
  json data = {{"wait_s", data_wait_s}, {"wait_fraction", data_wait_fraction}};
  if (!dataset.empty()) {
    data["dataset"] = dataset;
    data["validation"] = validation_dataset;
  }
  json j = {{"event", "done"},    {"epochs", epochs}, {"steps", steps}, {"seconds", seconds},
            {"threads", threads}, {"metrics", m},     {"model", model}, {"data", data}};
  if (distributed) j["distributed"] = distributed->to_json();
  return j;
}

json DistributedStats::to_json() const {
  return {{"rank", rank},
          {"world", world},
          {"gradient_bytes", gradient_bytes},
          {"buckets", buckets},
          {"bucket_bytes", bucket_bytes},
          {"bucket_bytes_measured", bucket_bytes_measured},
          {"link", {{"latency_s", link_latency_s}, {"bytes_per_s", link_bytes_per_s}}},
          {"compute_s", compute_s},
          {"allreduce_s", allreduce_s},
          {"exposed_allreduce_s", exposed_allreduce_s},
          {"allreduces", allreduces},
          {"started_during_backward", started_during_backward},
          {"optimizer_state_bytes", optimizer_state_bytes},
          {"optimizer_shards", optimizer_shards},
          {"bucket_sizes", bucket_sizes},
          {"bucket_seconds", bucket_seconds}};
}

json to_json(const TrainEvent& e) {
  return std::visit([](const auto& v) { return v.to_json(); }, e);
}

}  // namespace dlsys::train
