// ModelRunner on a real (tiny) ONNX MLP, behind the DynamicBatcher: every request's outputs must
// equal a direct Session::run of that request alone.
#include "serve/model_runner.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <random>

#include "core/file_util.h"
#include "serve/batch_tensors.h"
#include "serve/batcher.h"
#include "testing/onnx_builder.h"

namespace dlsys::serve {
namespace {

class ModelRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() / ("dlsys_serve_test_" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    mlp_ = (dir_ / "mlp.onnx").string();
    ASSERT_TRUE(write_file_atomic(mlp_, testing::tiny_mlp().bytes()).ok());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
  std::string mlp_;
};

TEST_F(ModelRunnerTest, BatchedRequestsMatchADirectRunOfEachRequestAlone) {
  ModelRunnerOptions ro;
  ro.instances = 2;
  ro.threads = 1;
  ro.max_batch = 8;
  auto runner = ModelRunner::open(mlp_, ro);
  ASSERT_TRUE(runner.ok()) << runner.status().to_string();
  ModelRunner& m = **runner;
  ASSERT_TRUE(m.warm_up().ok());
  EXPECT_GT(m.warm_up_us(), 0);
  // Metadata for a protocol layer.
  ASSERT_EQ(m.inputs().size(), 1u);
  EXPECT_EQ(m.inputs()[0].name, "x");
  EXPECT_EQ(m.inputs()[0].dtype, DType::kF32);
  EXPECT_EQ(m.inputs()[0].shape, (Shape{-1, 4}));
  ASSERT_EQ(m.outputs().size(), 1u);
  EXPECT_EQ(m.outputs()[0].name, "y");
  EXPECT_EQ(m.outputs()[0].shape, (Shape{-1, 3}));
  EXPECT_EQ(m.buckets(), (std::vector<int64_t>{1, 2, 4, 8}));
  // Weights (W1 4x8, b1 8, W2 8x3 floats) once per instance, plus some activation arena.
  EXPECT_GE(m.memory_bytes(), 2 * (32 + 8 + 24) * 4);

  BatcherOptions bo;
  bo.max_batch = 8;
  bo.max_delay_us = 500;
  bo.instances = 2;
  auto batcher = DynamicBatcher::create(
      bo, [&m](int i, const std::vector<Tensor>& in, int64_t rows) { return m.run(i, in, rows); });
  ASSERT_TRUE(batcher.ok()) << batcher.status().to_string();

  constexpr int kRequests = 60;
  std::mt19937 rng(3);
  std::vector<Tensor> xs;
  std::vector<std::future<Result<std::vector<Tensor>>>> futures;
  for (int k = 0; k < kRequests; ++k) {
    const int64_t rows = 1 + static_cast<int64_t>(rng() % 8);
    Tensor x = Tensor::empty(DType::kF32, {rows, 4});
    for (int64_t i = 0; i < x.numel(); ++i) {
      x.data_as<float>()[i] = static_cast<float>(static_cast<int>(rng() % 2001) - 1000) / 500.f;
    }
    auto p = std::make_shared<std::promise<Result<std::vector<Tensor>>>>();
    futures.push_back(p->get_future());
    Request r;
    r.inputs = {x};
    r.rows = rows;
    r.done = [p](Result<std::vector<Tensor>> res) { p->set_value(std::move(res)); };
    ASSERT_TRUE((*batcher)->submit(std::move(r)).ok());
    xs.push_back(x);
  }
  std::vector<std::vector<Tensor>> got;
  for (auto& f : futures) {
    auto r = f.get();
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    got.push_back(std::move(r).value());
  }
  (*batcher)->stop();
  EXPECT_EQ((*batcher)->stats().done, kRequests);
  EXPECT_GT((*batcher)->stats().compute_us, 0);

  auto direct = Session::open(mlp_, SessionOptions{.threads = 1});
  ASSERT_TRUE(direct.ok());
  for (int k = 0; k < kRequests; ++k) {
    std::vector<Tensor> want;
    ASSERT_TRUE((*direct)->run({{"x", xs[k]}}, &want).ok());
    ASSERT_EQ(got[k].size(), 1u);
    ASSERT_EQ(got[k][0].shape(), want[0].shape()) << "request " << k;
    double max_diff = 0;
    for (int64_t i = 0; i < want[0].numel(); ++i) {
      max_diff = std::max(max_diff, std::abs(got[k][0].get_f64(i) - want[0].get_f64(i)));
    }
    EXPECT_LE(max_diff, 1e-5) << "request " << k;
  }
  // Serving built no plan beyond the buckets: memory is what warm-up reported.
  const int64_t after = m.memory_bytes();
  ASSERT_TRUE(m.warm_up().ok());
  EXPECT_EQ(m.memory_bytes(), after);
}

TEST_F(ModelRunnerTest, RunChecksItsArguments) {
  auto runner = ModelRunner::open(mlp_, ModelRunnerOptions{.max_batch = 4});
  ASSERT_TRUE(runner.ok());
  ModelRunner& m = **runner;
  auto st = m.run(0, {Tensor::zeros(DType::kF32, {3, 4})}, 3).status();
  EXPECT_NE(st.message().find("batch 3 is not one of the buckets"), std::string::npos)
      << st.message();
  EXPECT_FALSE(m.run(1, {Tensor::zeros(DType::kF32, {4, 4})}, 3).ok());
  EXPECT_FALSE(m.run(0, {Tensor::zeros(DType::kF32, {4, 4})}, 5).ok());
  EXPECT_FALSE(m.run(0, {}, 1).ok());
  auto ok = m.run(0, {Tensor::zeros(DType::kF32, {4, 4})}, 3);
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_EQ(ok->at(0).shape(), (Shape{4, 3}));
}

TEST_F(ModelRunnerTest, RefusesAModelWithAFixedBatchDimension) {
  testing::OnnxBuilder b;
  b.input("x", onnx::TensorProto::FLOAT, {1, 4});
  b.output("y", onnx::TensorProto::FLOAT, {1, 4});
  b.node("Relu", {"x"}, {"y"}, "relu");
  const std::string path = (dir_ / "fixed.onnx").string();
  ASSERT_TRUE(write_file_atomic(path, b.bytes()).ok());
  auto r = ModelRunner::open(path, ModelRunnerOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            "model input 'x' has a fixed first dimension 1; serving batches need a free batch "
            "dimension (export with dynamic_axes)");
  EXPECT_FALSE(ModelRunner::open(mlp_, ModelRunnerOptions{.instances = 0}).ok());
  EXPECT_FALSE(ModelRunner::open(mlp_, ModelRunnerOptions{.max_batch = 8, .buckets = {1, 4}}).ok());
}

}  // namespace
}  // namespace dlsys::serve
