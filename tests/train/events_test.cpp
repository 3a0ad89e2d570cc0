// The typed trainer events (src/train/events.h) write exactly the JSON lines metrics.jsonl and
// `dlsys train --json` wrote when the trainer built JSON objects by hand: each expected line is
// what that code produced for the same values (keys, integer or float, presence rules).
#include <gtest/gtest.h>

#include "core/json_util.h"
#include "train/events.h"

namespace dlsys::train {
namespace {

using json = nlohmann::json;

std::string line(const TrainEvent& e) {
  return json_dump_line(to_json(e));
}

TEST(TrainEvents, StepEventWritesTheStepLine) {
  StepEvent s;
  s.epoch = 2;
  s.step = 30;
  s.total_steps = 46;
  s.loss = 0.5;
  s.lr = 0.1;
  s.samples_per_s = 1234.5;
  s.eta_s = 7.25;
  EXPECT_EQ(line(s), R"({"epoch":2,"eta_s":7.25,"event":"step","loss":0.5,"lr":0.1,)"
                     R"("samples_per_s":1234.5,"step":30,"total_steps":46})");
  // Floats stay floats at zero (the first step of an epoch can report 0 samples/s).
  s.samples_per_s = 0;
  s.eta_s = 0;
  EXPECT_NE(line(s).find(R"("eta_s":0.0,)"), std::string::npos) << line(s);
  EXPECT_NE(line(s).find(R"("samples_per_s":0.0,)"), std::string::npos) << line(s);
  EXPECT_EQ(line(s), json_dump_line(s.to_json()));
}

TEST(TrainEvents, EvalEventWritesTheMetricsEachLossDefines) {
  EvalEvent e;
  e.epoch = 1;
  e.step = 23;
  e.train_loss = 1.25;
  e.elapsed_s = 3.5;
  e.metrics.val_loss = 0.75;
  // cross_entropy over 10 classes: accuracy and top-5.
  e.metrics.val_accuracy = 0.875;
  e.metrics.val_top5_accuracy = 1.0;
  EXPECT_EQ(line(e), R"({"elapsed_s":3.5,"epoch":1,"event":"eval","step":23,"train_loss":1.25,)"
                     R"("val_accuracy":0.875,"val_loss":0.75,"val_top5_accuracy":1.0})");
  // mse: the mean absolute error, no accuracy.
  e.metrics.val_accuracy.reset();
  e.metrics.val_top5_accuracy.reset();
  e.metrics.val_mae = 0.5;
  EXPECT_EQ(line(e), R"({"elapsed_s":3.5,"epoch":1,"event":"eval","step":23,"train_loss":1.25,)"
                     R"("val_loss":0.75,"val_mae":0.5})");
  // bce_with_logits: accuracy only.
  e.metrics.val_mae.reset();
  e.metrics.val_accuracy = 0.0;
  EXPECT_EQ(line(e), R"({"elapsed_s":3.5,"epoch":1,"event":"eval","step":23,"train_loss":1.25,)"
                     R"("val_accuracy":0.0,"val_loss":0.75})");
}

TEST(TrainEvents, DoneEventWritesMetricsModelAndData) {
  DoneEvent d;
  d.epochs = 4;
  d.steps = 92;
  d.seconds = 2.5;
  d.metrics.val_loss = 0.125;
  d.metrics.val_accuracy = 0.96875;
  d.metrics.val_top5_accuracy = 1.0;
  d.model = "runs/mlp/model.onnx";
  d.data_wait_s = 0.25;
  d.data_wait_fraction = 0.1;
  EXPECT_EQ(line(d),
            R"({"data":{"wait_fraction":0.1,"wait_s":0.25},"epochs":4,"event":"done",)"
            R"("metrics":{"val_accuracy":0.96875,"val_loss":0.125,"val_top5_accuracy":1.0},)"
            R"("model":"runs/mlp/model.onnx","seconds":2.5,"steps":92,"threads":0})");
  // Trained on a version of the dataset store: the versions read, after the wait.
  d.dataset = "digits@v1:train";
  d.validation_dataset = "digits@v1:validation";
  d.data_wait_s = 0;
  d.data_wait_fraction = 0;
  EXPECT_EQ(to_json(d)["data"],
            json::parse(R"({"wait_s":0.0,"wait_fraction":0.0,"dataset":"digits@v1:train",)"
                        R"("validation":"digits@v1:validation"})"));
  EXPECT_EQ(line(d).rfind(R"({"data":{"dataset":"digits@v1:train","validation":)"
                          R"("digits@v1:validation","wait_fraction":0.0,"wait_s":0.0},)",
                          0),
            0u)
      << line(d);
}

}  // namespace
}  // namespace dlsys::train
