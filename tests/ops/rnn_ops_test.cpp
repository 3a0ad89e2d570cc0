// RNN, GRU (both linear_before_reset modes) and LSTM on oneDNN's RNN primitives against the same
// nodes on dlsys's loops: with W, R and B constants the planner picks the primitive (the step's
// kernel says "onednn_*"); a `clip` far above every value changes no result and sends the node to
// the loops, which the ONNX conformance cases check against ONNX's reference outputs. Both
// directions, initial states, batch 5, 7 steps.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "graph/onnx_import.h"
#include "graph/session.h"
#include "testing/onnx_builder.h"

namespace dlsys {
namespace {

using testing::OnnxBuilder;
constexpr int kF32 = onnx::TensorProto::FLOAT;

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 0.5f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

struct Case {
  std::string op;
  int gates;
  int64_t linear_before_reset;
  std::string activation;  // RNN only
};

// Runs the node; `kernel` receives the recurrent step's kernel name.
std::vector<Tensor> RunNode(const Case& c, bool clip, std::string* kernel) {
  const int64_t T = 7, N = 5, I = 6, H = 8, D = 2, G = c.gates;
  OnnxBuilder b;
  b.input("x", kF32, {T, N, I});
  b.input("h0", kF32, {D, N, H});
  if (c.op == "LSTM") b.input("c0", kF32, {D, N, H});
  b.initializer_f32("W", {D, G * H, I}, Random(static_cast<size_t>(D * G * H * I), 1));
  b.initializer_f32("R", {D, G * H, H}, Random(static_cast<size_t>(D * G * H * H), 2));
  b.initializer_f32("B", {D, 2 * G * H}, Random(static_cast<size_t>(D * 2 * G * H), 3));
  std::vector<std::string> ins = {"x", "W", "R", "B", "", "h0"};
  std::vector<std::string> outs = {"y", "yh"};
  if (c.op == "LSTM") {
    ins.push_back("c0");
    outs.push_back("yc");
  }
  b.output("y", kF32, {T, D, N, H});
  b.output("yh", kF32, {D, N, H});
  if (c.op == "LSTM") b.output("yc", kF32, {D, N, H});
  auto* n = b.node(c.op, ins, outs, "rec");
  OnnxBuilder::attr_string(n, "direction", "bidirectional");
  OnnxBuilder::attr_int(n, "hidden_size", H);
  if (c.op == "GRU") OnnxBuilder::attr_int(n, "linear_before_reset", c.linear_before_reset);
  if (c.op == "RNN") OnnxBuilder::attr_strings(n, "activations", {c.activation, c.activation});
  if (clip) OnnxBuilder::attr_float(n, "clip", 1e9f);
  auto g = import_onnx_bytes(b.bytes(), "rnn.onnx");
  EXPECT_TRUE(g.ok()) << g.status().to_string();
  auto s = Session::from_graph(std::move(g).value());
  std::map<std::string, Tensor> feed = {
      {"x", Tensor::from_f32({T, N, I}, Random(static_cast<size_t>(T * N * I), 4).data())},
      {"h0", Tensor::from_f32({D, N, H}, Random(static_cast<size_t>(D * N * H), 5).data())}};
  if (c.op == "LSTM")
    feed["c0"] = Tensor::from_f32({D, N, H}, Random(static_cast<size_t>(D * N * H), 6).data());
  std::vector<Tensor> out;
  Status st = s->run(feed, &out);
  EXPECT_TRUE(st.ok()) << st.to_string();
  auto bound = s->bind_inputs(feed);
  for (const PlanStepInfo& step : s->plan_for(bound.value()).value()->steps())
    if (step.name == "rec") *kernel = step.kernel;
  std::vector<Tensor> copies;
  for (const Tensor& t : out) copies.push_back(t.clone());
  return copies;
}

TEST(RecurrentOps, OneDnnPrimitivesMatchTheLoops) {
  for (const Case& c : {Case{"LSTM", 4, 0, ""}, Case{"GRU", 3, 0, ""}, Case{"GRU", 3, 1, ""},
                        Case{"RNN", 1, 0, "Tanh"}, Case{"RNN", 1, 0, "Relu"}}) {
    SCOPED_TRACE(c.op + " linear_before_reset " + std::to_string(c.linear_before_reset) + " " +
                 c.activation);
    std::string fast_kernel, loop_kernel;
    std::vector<Tensor> fast = RunNode(c, false, &fast_kernel);
    std::vector<Tensor> loops = RunNode(c, true, &loop_kernel);
    EXPECT_EQ(fast_kernel.rfind("onednn_", 0), 0u) << fast_kernel;
    EXPECT_EQ(loop_kernel, "");
    ASSERT_EQ(fast.size(), loops.size());
    for (size_t o = 0; o < fast.size(); ++o) {
      ASSERT_EQ(fast[o].shape(), loops[o].shape());
      double max_err = 0, max_ref = 0;
      for (int64_t i = 0; i < fast[o].numel(); ++i) {
        max_err = std::max(max_err, std::fabs(static_cast<double>(fast[o].data_as<float>()[i]) -
                                              loops[o].data_as<float>()[i]));
        max_ref = std::max(max_ref, std::fabs(static_cast<double>(loops[o].data_as<float>()[i])));
      }
      EXPECT_GT(max_ref, 0.1) << "output " << o << " is all near zero: a vacuous comparison";
      EXPECT_LE(max_err, 1e-5 * std::max(1.0, max_ref)) << "output " << o;
    }
  }
}

}  // namespace
}  // namespace dlsys
