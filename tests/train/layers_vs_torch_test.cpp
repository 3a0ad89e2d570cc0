// Spec layers against PyTorch: a CNN (Conv, BatchNorm, ReLU, MaxPool, grouped strided Conv,
// global average pooling, Linear) and a pre-norm transformer encoder block (LayerNorm, 2-head
// self-attention, GELU MLP, residuals, mean pooling), built by the trainer's graph builder from
// layer specs and started from PyTorch's initial weights. Over 20 fixed batches with SGD
// (momentum) and Adam, every step's loss must match PyTorch's within 1e-4 relative; after the
// Adam run the parameters and BatchNorm running statistics match, and the inference-mode forward
// graph gives PyTorch's eval-mode logits. References: scripts/torch_train_reference.py.
#include <gtest/gtest.h>

#include <cmath>

#include "graph/session.h"
#include "tensor/npy.h"
#include "train/autodiff.h"
#include "train/optimizer.h"
#include "train/trainer.h"

namespace dlsys::train {
namespace {

const std::string kDir = DLSYS_TORCH_TRAIN_DIR;

Tensor load(const std::string& path) {
  auto t = npy_read(kDir + "/" + path + ".npy");
  EXPECT_TRUE(t.ok()) << t.status().to_string() << " (did the reference fixture run?)";
  return t.ok() ? *t : Tensor();
}

LayerSpec layer(const std::string& type) {
  LayerSpec l;
  l.type = type;
  return l;
}

TrainSpec cnn_spec() {
  TrainSpec s;
  s.input_shape = {3, 8, 8};
  LayerSpec c1 = layer("conv2d"), c2 = layer("conv2d"), pool = layer("maxpool"),
            fc = layer("linear");
  // No bias before a batch norm: its true gradient is 0, and Adam would turn rounding noise into
  // full-size steps that differ between the two frameworks (and move the running mean).
  c1.out = 8, c1.kernel = 3, c1.padding = 1, c1.bias = false;
  c2.out = 16, c2.kernel = 3, c2.stride = 2, c2.padding = 1, c2.groups = 2, c2.bias = false;
  pool.kernel = 2;
  fc.out = 10;
  s.layers = {c1, layer("batchnorm"), layer("relu"), pool,
              c2, layer("batchnorm"), layer("relu"), layer("global_avg_pool"),
              fc};
  return s;
}

TrainSpec encoder_spec() {
  TrainSpec s;
  s.input_shape = {6, 8};
  LayerSpec att = layer("attention"), up = layer("linear"), down = layer("linear"),
            fc = layer("linear");
  att.heads = 2;
  up.out = 16;
  down.out = 8;
  fc.out = 4;
  LayerSpec r1 = layer("residual"), r2 = layer("residual");
  r1.layers = {layer("layernorm"), att};
  r2.layers = {layer("layernorm"), up, layer("gelu"), down};
  s.layers = {r1, r2, layer("mean_pool"), fc};
  return s;
}

double max_rel_diff(const Tensor& a, const Tensor& b) {
  double worst = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    double x = a.get_f64(i), y = b.get_f64(i);
    worst = std::max(worst, std::abs(x - y) / (1e-3 + std::abs(y)));
  }
  return worst;
}

void check_model(const std::string& name, const TrainSpec& spec) {
  auto forward = build_forward_graph(spec);
  ASSERT_TRUE(forward.ok()) << forward.status().to_string();
  // PyTorch's initial weights under dlsys's names.
  for (auto& [k, t] : forward->initializers) {
    if (k.rfind("layers.", 0) != 0 || t.dtype() != DType::kF32 || t.numel() < 2) continue;
    Tensor ref = load(name + "/init." + k);
    ASSERT_EQ(ref.shape(), t.shape()) << k;
    t = ref;
  }
  Tensor x = load(name + "/x"), y = load(name + "/y");
  const int64_t steps = 20, batch = x.dim(1);
  Shape xs = {batch};
  for (int64_t d : spec.input_shape) xs.push_back(d);
  for (const char* opt_name : {"sgd", "adam"}) {
    auto tg = build_training_graph(*forward, {LossKind::kSoftmaxCrossEntropy, "logits"}, {});
    ASSERT_TRUE(tg.ok()) << tg.status().to_string();
    SessionOptions so;
    so.training = true;  // as the trainer plans it
    auto session = Session::from_graph(tg->graph, so);
    OptimizerConfig oc;
    oc.kind = std::string(opt_name) == "sgd" ? OptimizerKind::kSgd : OptimizerKind::kAdam;
    oc.momentum = 0.9;
    double lr = oc.kind == OptimizerKind::kSgd ? 0.05 : 0.01;
    auto opt = Optimizer::make(oc);
    ASSERT_TRUE(opt.ok());
    std::map<std::string, Tensor> in, state;
    for (const std::string& p : tg->params) in[p] = forward->initializers.at(p).clone();
    for (const BatchStat& bs : tg->batch_stats)
      for (const std::string& b : {bs.running_mean, bs.running_var})
        state[b] = forward->initializers.at(b).clone();
    Tensor want = load(name + "/loss_" + opt_name);
    for (int64_t s = 0; s < steps; ++s) {
      in["input"] = x.slice_rows(s, s + 1).view(xs);
      in["target"] = y.slice_rows(s, s + 1).view({batch});
      std::vector<Tensor> out;
      Status st = session->run(in, &out);
      ASSERT_TRUE(st.ok()) << st.to_string();
      double loss = out[0].data_as<float>()[0], ref = want.get_f64(s);
      EXPECT_NEAR(loss, ref, 1e-4 * std::abs(ref)) << name << " " << opt_name << " step " << s;
      ASSERT_TRUE(apply_batch_stats(*tg, out, &state).ok());
      std::vector<Tensor*> pptr;
      std::vector<const Tensor*> cg;
      for (size_t k = 0; k < tg->params.size(); ++k) {
        pptr.push_back(&in[tg->params[k]]);
        cg.push_back(&out[k + 1]);
      }
      ASSERT_TRUE(opt->step(tg->params, pptr, cg, lr).ok());
    }
    if (std::string(opt_name) != "adam") continue;
    // Parameters and running statistics after 20 Adam steps.
    for (auto* m : {&in, &state})
      for (auto& [k, t] : *m) {
        // The key bias has a zero true gradient (softmax ignores a per-query constant): Adam
        // steps on rounding noise there, differently in each framework.
        if (k.rfind("layers.", 0) != 0 || k.find(".k.bias") != std::string::npos) continue;
        EXPECT_LT(max_rel_diff(t, load(name + "/final." + k)), 2e-3) << name << " " << k;
      }
    // The inference-mode forward graph with the trained state: PyTorch's eval-mode logits.
    Graph trained = *forward;
    for (auto* m : {&in, &state})
      for (auto& [k, t] : *m)
        if (trained.initializers.count(k)) trained.initializers[k] = t;
    auto eval = Session::from_graph(trained);
    std::vector<Tensor> out;
    ASSERT_TRUE(eval->run({{"input", x.slice_rows(steps, steps + 1).view(xs)}}, &out).ok());
    Tensor logits = load(name + "/eval_logits");
    ASSERT_EQ(out[0].numel(), logits.numel());
    for (int64_t i = 0; i < logits.numel(); ++i)
      EXPECT_NEAR(out[0].get_f64(i), logits.get_f64(i), 1e-3 + 1e-3 * std::abs(logits.get_f64(i)))
          << name << " eval logit " << i;
  }
}

TEST(LayersVsTorch, CnnWithBatchNorm) {
  check_model("cnn", cnn_spec());
}

TEST(LayersVsTorch, TransformerEncoderBlock) {
  check_model("encoder", encoder_spec());
}

}  // namespace
}  // namespace dlsys::train
