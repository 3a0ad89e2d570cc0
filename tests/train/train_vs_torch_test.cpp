// Training steps against PyTorch: the same MLP weights, the same 20 batches, SGD (plain, and
// Nesterov momentum with weight decay), Adam (with and without L2) and AdamW, each with and
// without gradient clipping; every step's loss must match PyTorch's within 1e-4 relative.
// References come from scripts/torch_train_reference.py (a ctest fixture).
#include <gtest/gtest.h>

#include <cmath>

#include "graph/session.h"
#include "tensor/npy.h"
#include "train/autodiff.h"
#include "train/optimizer.h"

namespace dlsys::train {
namespace {

const std::string kDir = DLSYS_TORCH_TRAIN_DIR;

Tensor load(const std::string& name) {
  auto t = npy_read(kDir + "/" + name + ".npy");
  EXPECT_TRUE(t.ok()) << t.status().to_string() << " (did the reference fixture run?)";
  return t.ok() ? *t : Tensor();
}

// torch.nn.Sequential(Linear(8, 16), ReLU(), Linear(16, 4)) as Gemm(transB=1) nodes.
Graph mlp() {
  Graph g;
  g.opset = 17;
  g.inputs.push_back({"x", DType::kF32, true, {Dim{-1, "batch"}, Dim{8, ""}}});
  for (const char* p : {"w1", "b1", "w2", "b2"}) g.initializers[p] = load(p);
  g.nodes.push_back(
      {"fc1", "Gemm", "", {"x", "w1", "b1"}, {"h"}, {{"transB", Attribute::of_int(1)}}});
  g.nodes.push_back({"relu", "Relu", "", {"h"}, {"a"}, {}});
  g.nodes.push_back(
      {"fc2", "Gemm", "", {"a", "w2", "b2"}, {"logits"}, {{"transB", Attribute::of_int(1)}}});
  g.outputs.push_back({"logits", DType::kF32, false, {}});
  return g;
}

struct Setting {
  std::string name;
  OptimizerConfig opt;
  double lr;
};

class TrainVsTorch : public ::testing::TestWithParam<std::tuple<Setting, bool>> {};

TEST_P(TrainVsTorch, LossesMatchEveryStep) {
  auto [setting, clip] = GetParam();
  Graph g = mlp();
  auto tg = build_training_graph(g, {LossKind::kSoftmaxCrossEntropy, "logits"}, {});
  ASSERT_TRUE(tg.ok()) << tg.status().to_string();
  SessionOptions so;
  so.training = true;  // as the trainer plans it
  auto session = Session::from_graph(tg->graph, so);
  auto opt = Optimizer::make(setting.opt);
  ASSERT_TRUE(opt.ok());
  Tensor x = load("x"), y = load("y");
  Tensor want = load("loss_" + setting.name + (clip ? "_clip" : ""));
  ASSERT_TRUE(want.valid());
  std::map<std::string, Tensor> in;
  for (const std::string& p : tg->params) in[p] = g.initializers.at(p).clone();
  for (int64_t s = 0; s < 20; ++s) {
    in["x"] = x.slice_rows(s, s + 1).view({16, 8});
    in["target"] = y.slice_rows(s, s + 1).view({16});
    std::vector<Tensor> out;
    Status st = session->run(in, &out);
    ASSERT_TRUE(st.ok()) << st.to_string();
    double loss = out[0].data_as<float>()[0];
    double ref = want.get_f64(s);
    EXPECT_NEAR(loss, ref, 1e-4 * std::abs(ref)) << setting.name << " step " << s;
    std::vector<Tensor> grads;
    std::vector<Tensor*> gptr, pptr;
    std::vector<const Tensor*> cg;
    for (size_t k = 0; k < tg->params.size(); ++k) grads.push_back(out[k + 1].clone());
    for (size_t k = 0; k < tg->params.size(); ++k) {
      gptr.push_back(&grads[k]);
      cg.push_back(&grads[k]);
      pptr.push_back(&in[tg->params[k]]);
    }
    if (clip) clip_grad_norm(gptr, 0.5);
    ASSERT_TRUE(opt->step(tg->params, pptr, cg, setting.lr).ok());
  }
}

OptimizerConfig sgd(double momentum = 0, bool nesterov = false, double wd = 0) {
  OptimizerConfig c;
  c.kind = OptimizerKind::kSgd;
  c.momentum = momentum;
  c.nesterov = nesterov;
  c.weight_decay = wd;
  return c;
}
OptimizerConfig adam(OptimizerKind k, double wd) {
  OptimizerConfig c;
  c.kind = k;
  c.weight_decay = wd;
  return c;
}

INSTANTIATE_TEST_SUITE_P(
    Optimizers, TrainVsTorch,
    ::testing::Combine(::testing::Values(Setting{"sgd", sgd(), 0.05},
                                         Setting{"sgd_nesterov_wd", sgd(0.9, true, 1e-3), 0.05},
                                         Setting{"adam", adam(OptimizerKind::kAdam, 0), 0.01},
                                         Setting{"adam_l2", adam(OptimizerKind::kAdam, 1e-2), 0.01},
                                         Setting{"adamw", adam(OptimizerKind::kAdamW, 0.1), 0.01}),
                       ::testing::Bool()),
    [](const auto& info) {
      return std::get<0>(info.param).name + (std::get<1>(info.param) ? "_clip" : "");
    });

TEST(Schedules, WarmupStepAndCosine) {
  ScheduleConfig s;
  s.lr = 0.1;
  s.warmup_steps = 4;
  EXPECT_DOUBLE_EQ(learning_rate(s, 0), 0.025);
  EXPECT_DOUBLE_EQ(learning_rate(s, 3), 0.1);
  EXPECT_DOUBLE_EQ(learning_rate(s, 100), 0.1);
  s.kind = ScheduleKind::kStep;
  s.step_size = 10;
  s.gamma = 0.5;
  EXPECT_DOUBLE_EQ(learning_rate(s, 4 + 9), 0.1);
  EXPECT_DOUBLE_EQ(learning_rate(s, 4 + 10), 0.05);
  EXPECT_DOUBLE_EQ(learning_rate(s, 4 + 25), 0.025);
  s.kind = ScheduleKind::kCosine;
  s.total_steps = 104;
  s.min_lr = 0.001;
  EXPECT_DOUBLE_EQ(learning_rate(s, 4), 0.1);
  EXPECT_NEAR(learning_rate(s, 54), 0.0505, 1e-12);  // halfway
  EXPECT_DOUBLE_EQ(learning_rate(s, 104), 0.001);
  EXPECT_DOUBLE_EQ(learning_rate(s, 500), 0.001);
  EXPECT_FALSE(parse_schedule("linear-ish").ok());
  EXPECT_FALSE(Optimizer::make(sgd(0, true)).ok());  // Nesterov needs momentum
  EXPECT_FALSE(parse_optimizer("lamb").ok());
}

}  // namespace
}  // namespace dlsys::train
