// The executor's steady state allocates nothing: every operator new in this binary is counted,
// and running a built plan (conv with blocked layouts, pooling, fused matmul epilogues, softmax,
// layer norm, reshapes) must not allocate from dlsys code. oneDNN 2.6's dnnl_primitive_execute
// builds its own argument map on every call; those allocations (the caller's return address lies
// in libdnnl) are counted apart and reported. Also checks the memory planner's arena.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include <dlfcn.h>

#include <cstring>

#include "graph/onnx_import.h"
#include "graph/session.h"
#include "testing/onnx_builder.h"

static std::atomic<long> g_allocations{0};       // from dlsys (and the test itself)
static std::atomic<long> g_dnnl_allocations{0};  // from inside libdnnl

// Counts one allocation, attributing it by the shared object the caller's code lives in.
static std::atomic<bool> g_counting{false};  // only while the test measures

__attribute__((noinline)) static void count(void* caller) {
  if (!g_counting.load(std::memory_order_relaxed)) return;
  Dl_info info;
  if (dladdr(caller, &info) && info.dli_fname && std::strstr(info.dli_fname, "libdnnl"))
    g_dnnl_allocations.fetch_add(1, std::memory_order_relaxed);
  else
    g_allocations.fetch_add(1, std::memory_order_relaxed);
}

void* operator new(std::size_t n) {
  count(__builtin_return_address(0));
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  count(__builtin_return_address(0));
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}

namespace dlsys {
namespace {

using testing::OnnxBuilder;
constexpr int kF = onnx::TensorProto::FLOAT;

// conv -> relu -> conv (+x) -> maxpool -> flatten -> matmul+bias -> tanh -> layernorm -> softmax
OnnxBuilder mixed_model() {
  OnnxBuilder b;
  b.input("x", kF, {-1, 8, 8, 8});
  b.output("y", kF, {-1, 16});
  b.random_f32("w1", {8, 8, 3, 3}, 0.3f, 1);
  b.random_f32("w2", {8, 8, 3, 3}, 0.3f, 2);
  b.random_f32("wf", {128, 16}, 0.1f, 3);
  b.random_f32("bf", {16}, 0.1f, 4);
  b.random_f32("gamma", {16}, 1.f, 5);
  b.initializer_i64("shape", {2}, {0, -1});
  OnnxBuilder::attr_ints(b.node("Conv", {"x", "w1"}, {"c1"}), "pads", {1, 1, 1, 1});
  b.node("Relu", {"c1"}, {"r1"});
  OnnxBuilder::attr_ints(b.node("Conv", {"r1", "w2"}, {"c2"}), "pads", {1, 1, 1, 1});
  b.node("Add", {"c2", "x"}, {"s"});
  auto* mp = b.node("MaxPool", {"s"}, {"p"});
  OnnxBuilder::attr_ints(mp, "kernel_shape", {2, 2});
  OnnxBuilder::attr_ints(mp, "strides", {2, 2});
  b.node("Reshape", {"p", "shape"}, {"f"});
  b.node("MatMul", {"f", "wf"}, {"m"});
  b.node("Add", {"m", "bf"}, {"mb"});
  b.node("Tanh", {"mb"}, {"t"});
  b.node("LayerNormalization", {"t", "gamma"}, {"ln"});
  b.node("Softmax", {"ln"}, {"y"});
  return b;
}

TEST(SteadyState, RunningAPlanAllocatesNothing) {
  auto g = import_onnx_bytes(mixed_model().bytes(), "mixed.onnx");
  ASSERT_TRUE(g.ok()) << g.status().message();
  auto s = Session::from_graph(std::move(g).value());
  auto plan = s->plan_for_shapes({{4, 8, 8, 8}});
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  Tensor x = Tensor::zeros(DType::kF32, {4, 8, 8, 8});
  for (int64_t i = 0; i < x.numel(); ++i)
    x.data_as<float>()[i] = 0.01f * static_cast<float>(i % 97);
  std::vector<Tensor> inputs = {x}, outputs;
  ASSERT_TRUE(plan.value()->run(inputs, &outputs).ok());  // first run may size `outputs`
  long before = g_allocations.load(), dnnl_before = g_dnnl_allocations.load();
  g_counting = true;
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(plan.value()->run(inputs, &outputs).ok());
  g_counting = false;
  long during = g_allocations.load() - before;
  long in_dnnl = g_dnnl_allocations.load() - dnnl_before;
  EXPECT_EQ(during, 0) << "Plan::run allocated " << during << " times in 20 runs";
  std::printf(
      "20 runs: %ld allocations by dlsys, %ld inside oneDNN's primitive execute "
      "(%zu steps per run)\n",
      during, in_dnnl, plan.value()->steps().size());
  ASSERT_EQ(outputs.size(), 1u);
  EXPECT_EQ(outputs[0].shape(), (Shape{4, 16}));
  // Softmax rows sum to 1: the output is real data, not an untouched buffer.
  for (int r = 0; r < 4; ++r) {
    double sum = 0;
    for (int c = 0; c < 16; ++c) sum += outputs[0].data_as<float>()[r * 16 + c];
    EXPECT_NEAR(sum, 1.0, 1e-5);
  }
}

TEST(MemoryPlan, ArenaReusesDeadValuesAndIsSmallerThanTheSum) {
  // A chain of 12 same-size element-wise ops: at most two values are live at once.
  OnnxBuilder b;
  b.input("x", kF, {-1, 1024});
  b.output("y", kF, {-1, 1024});
  std::string prev = "x";
  for (int i = 0; i < 12; ++i) {
    std::string out = i == 11 ? "y" : "v" + std::to_string(i);
    b.node(i % 2 ? "Exp" : "Neg", {prev}, {out});
    prev = out;
  }
  auto g = import_onnx_bytes(b.bytes(), "chain.onnx");
  ASSERT_TRUE(g.ok());
  auto s = Session::from_graph(std::move(g).value());
  auto plan = s->plan_for_shapes({{8, 1024}});
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  const MemoryPlanStats& m = plan.value()->memory();
  size_t value_bytes = 8 * 1024 * 4;
  EXPECT_EQ(m.num_values, 12u);
  EXPECT_EQ(m.sum_value_bytes, 12 * value_bytes);
  EXPECT_EQ(m.arena_bytes, 2 * value_bytes);
  // And the values computed through the reused buffers are right.
  Tensor x = Tensor::zeros(DType::kF32, {8, 1024});
  for (int64_t i = 0; i < x.numel(); ++i)
    x.data_as<float>()[i] = 0.001f * static_cast<float>(i % 100);
  std::vector<Tensor> out;
  ASSERT_TRUE(plan.value()->run({x}, &out).ok());
  for (int64_t i = 0; i < x.numel(); i += 37) {
    double v = x.data_as<float>()[i];
    for (int k = 0; k < 12; ++k) v = k % 2 ? std::exp(v) : -v;
    EXPECT_NEAR(out[0].data_as<float>()[i], v, 1e-4 * std::fabs(v) + 1e-6) << i;
  }
}

}  // namespace
}  // namespace dlsys
