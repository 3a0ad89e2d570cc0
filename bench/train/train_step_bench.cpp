// Training-step throughput of one spec's model on random batches: forward, loss, backward and the
// optimizer update, as `dlsys train` runs them (the same graph builder, autodiff, session and
// optimizer), without data loading or evaluation. Prints one JSON line:
//   {"model":..., "precision":..., "batch":..., "steps":..., "samples_per_s": median over rounds,
//    "rounds": [...]}
// Usage: train_step_bench SPEC.yaml [--steps 20] [--rounds 5] [--threads 2] [--vocab N]
//        [--precision fp32|bf16] [--profile]
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>

#include "graph/plan.h"
#include "graph/session.h"
#include "train/autodiff.h"
#include "train/optimizer.h"
#include "train/trainer.h"

using namespace dlsys;
using namespace dlsys::train;

int main(int argc, char** argv) {
  CLI::App app("dlsys training-step benchmark (bench/train)");
  std::string spec_path;
  int steps = 20, rounds = 5, threads = 2, warmup = 3;
  int64_t vocab = 0, classes = 10;
  bool profile = false;
  std::string precision = "fp32";
  app.add_option("spec", spec_path, "training spec (its model and train.batch_size)")->required();
  app.add_option("--steps", steps, "timed steps per round");
  app.add_option("--rounds", rounds, "rounds (the median is reported)");
  app.add_option("--warmup", warmup, "untimed steps first");
  app.add_option("--threads", threads, "threads");
  app.add_option("--vocab", vocab, "inputs are token ids below this (embedding models)");
  app.add_option("--classes", classes, "number of classes of the random labels");
  app.add_option("--precision", precision,
                 "fp32 or bf16 (matmul/conv in bf16, fp32 master weights)");
  app.add_flag("--profile", profile, "print the time per op type of one step to stderr");
  CLI11_PARSE(app, argc, argv);
  auto spec = load_train_spec(spec_path);
  if (!spec.ok()) {
    std::fprintf(stderr, "error: %s\n", spec.status().to_string().c_str());
    return 1;
  }
  auto forward = build_forward_graph(*spec);
  if (!forward.ok()) {
    std::fprintf(stderr, "error: %s\n", forward.status().to_string().c_str());
    return 1;
  }
  auto tg = build_training_graph(*forward, {LossKind::kSoftmaxCrossEntropy, "logits"}, {});
  if (!tg.ok()) {
    std::fprintf(stderr, "error: %s\n", tg.status().to_string().c_str());
    return 1;
  }
  SessionOptions so;
  so.threads = threads;
  so.training = true;  // plan as the trainer does (shared conversions, blocked conv layouts)
  if (precision == "bf16") {
    so.precision = Precision::kBF16;
  } else if (precision != "fp32") {
    std::fprintf(stderr, "error: --precision is '%s'; use fp32 or bf16\n", precision.c_str());
    return 1;
  }
  auto session = Session::from_graph(tg->graph, so);
  auto opt = Optimizer::make(spec->optimizer);
  if (!opt.ok()) return 1;
  std::map<std::string, Tensor> in, state;
  for (const std::string& p : tg->params) in[p] = forward->initializers.at(p).clone();
  for (const BatchStat& bs : tg->batch_stats)
    for (const std::string& b : {bs.running_mean, bs.running_var})
      state[b] = forward->initializers.at(b).clone();
  int64_t batch = spec->batch_size;
  Shape xs = {batch};
  for (int64_t d : spec->input_shape) xs.push_back(d);
  std::mt19937 rng(0);
  Tensor x = Tensor::empty(DType::kF32, xs), y = Tensor::empty(DType::kI64, {batch});
  std::normal_distribution<float> nd;
  std::uniform_int_distribution<int64_t> tok(0, std::max<int64_t>(vocab - 1, 0));
  for (int64_t i = 0; i < x.numel(); ++i)
    x.data_as<float>()[i] = vocab > 0 ? static_cast<float>(tok(rng)) : nd(rng);
  for (int64_t i = 0; i < batch; ++i) y.data_as<int64_t>()[i] = static_cast<int64_t>(i % classes);
  in["input"] = x;
  in["target"] = y;
  if (!tg->dropout_seed.empty()) {
    int64_t seed = 1;
    in[tg->dropout_seed] = Tensor::from_i64({}, &seed);
  }
  double lr = spec->schedule.lr;
  auto step = [&]() -> bool {
    std::vector<Tensor> out;
    Status st = session->run(in, &out);
    if (st.ok()) st = apply_batch_stats(*tg, out, &state);
    std::vector<Tensor*> pp;
    std::vector<const Tensor*> gp;
    for (size_t k = 0; k < tg->params.size(); ++k) {
      pp.push_back(&in[tg->params[k]]);
      gp.push_back(&out[k + 1]);
    }
    if (st.ok()) st = opt->step(tg->params, pp, gp, lr);
    if (!st.ok()) std::fprintf(stderr, "error: %s\n", st.to_string().c_str());
    return st.ok();
  };
  for (int i = 0; i < warmup; ++i)
    if (!step()) return 1;
  if (profile) {
    // Per-op time of one training-graph run, summed by op type, largest first.
    auto bound = session->bind_inputs(in);
    auto plan = bound.ok() ? session->plan_for(*bound) : Result<Plan*>(bound.status());
    if (!plan.ok()) return 1;
    std::map<std::string, double> by_op, by_node;
    for (int r = 0; r < 5; ++r) {
      std::vector<Tensor> out;
      std::vector<int64_t> ns;
      if (!(*plan)->run(*bound, &out, &ns).ok()) return 1;
      for (size_t i = 0; i < ns.size(); ++i) {
        const auto& info = (*plan)->steps()[i];
        by_op[info.op] += ns[i] / 5e6;
        by_node[info.op + " " + info.name] += ns[i] / 5e6;
      }
    }
    std::vector<std::pair<double, std::string>> nodes;
    for (auto& [n, ms] : by_node) nodes.push_back({ms, n});
    std::sort(nodes.rbegin(), nodes.rend());
    std::fprintf(stderr, "slowest nodes:\n");
    for (size_t i = 0; i < nodes.size() && i < 12; ++i)
      std::fprintf(stderr, "  %8.2f ms  %s\n", nodes[i].first, nodes[i].second.c_str());
    std::fprintf(stderr, "by op type:\n");
    std::vector<std::pair<double, std::string>> v;
    double total = 0;
    for (auto& [op, ms] : by_op) {
      v.push_back({ms, op});
      total += ms;
    }
    std::sort(v.rbegin(), v.rend());
    for (auto& [ms, op] : v)
      std::fprintf(stderr, "%-22s %8.2f ms %5.1f%%\n", op.c_str(), ms, 100 * ms / total);
  }
  std::vector<double> sps;
  for (int r = 0; r < rounds; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < steps; ++i)
      if (!step()) return 1;
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    sps.push_back(static_cast<double>(batch * steps) / s);
  }
  std::vector<double> sorted = sps;
  std::sort(sorted.begin(), sorted.end());
  std::printf(
      "{\"model\": \"%s\", \"precision\": \"%s\", \"batch\": %ld, \"steps\": %d, "
      "\"samples_per_s\": %.2f, "
      "\"rounds\": [",
      spec->name.c_str(), precision.c_str(), static_cast<long>(batch), steps,
      sorted[sorted.size() / 2]);
  for (size_t i = 0; i < sps.size(); ++i) std::printf("%s%.2f", i ? ", " : "", sps[i]);
  std::printf("]}\n");
  return 0;
}
