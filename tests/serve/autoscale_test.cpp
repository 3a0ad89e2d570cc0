// Autoscaling: the policy on synthetic samples, the batcher parking and waking workers, the
// runner adding and freeing instances, and a deployment that grows under load and shrinks when
// the load stops (a real server on loopback).
#include <atomic>
#include <condition_variable>
#include <future>

#include "serve/autoscaler.h"
#include "serving_fixture.h"

namespace dlsys::serve {
namespace {

void Configure(AutoscalePolicy& p, int min, int max, int cores = 8) {
  p.min_instances = min;
  p.max_instances = max;
  p.cores = cores;
}

// Samples every 100 ms with the given queue depth and busy fraction of `active` instances.
struct Feed {
  AutoscalePolicy& p;
  int64_t t = 0, compute = 0;
  int operator()(int64_t depth, double busy, int active) {
    t += 100000;
    compute += static_cast<int64_t>(busy * 100000 * active);
    return p.decide({depth, compute, t, active});
  }
};

TEST(AutoscalePolicyTest, GrowsOnASustainedQueueAndShrinksWhenIdle) {
  AutoscalePolicy p;
  Configure(p, 1, 3);
  Feed f{p};
  EXPECT_EQ(f(5, 1.0, 1), 0);  // the first sample only sets the baseline
  EXPECT_EQ(f(5, 1.0, 1), 0);
  EXPECT_EQ(f(0, 1.0, 1), 0);  // one empty sample restarts the count
  EXPECT_EQ(f(5, 1.0, 1), 0);
  EXPECT_EQ(f(5, 1.0, 1), 0);
  EXPECT_EQ(f(5, 1.0, 1), +1);  // three in a row
  EXPECT_EQ(f(5, 1.0, 2), 0);   // fresh evidence needed after a change
  EXPECT_EQ(f(5, 1.0, 2), 0);
  EXPECT_EQ(f(5, 1.0, 2), +1);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(f(5, 1.0, 3), 0) << "grew past max_instances";
  // Busy but no queue: stays.
  for (int i = 0; i < 20; ++i) EXPECT_EQ(f(0, 0.8, 3), 0);
  // Idle: one step down after ten samples, then another after ten more, never below min.
  std::vector<int> downs;
  int active = 3;
  for (int i = 0; i < 60; ++i) {
    if (f(0, 0.05, active) < 0) {
      downs.push_back(i);
      --active;
    }
  }
  EXPECT_EQ(downs, (std::vector<int>{9, 19}));
  EXPECT_EQ(active, 1);
  EXPECT_EQ(p.scale_ups.load(), 2);
  EXPECT_EQ(p.scale_downs.load(), 2);
}

TEST(AutoscalePolicyTest, StaysWithinTheCores) {
  AutoscalePolicy p;
  Configure(p, 1, 4, /*cores=*/2);
  p.threads_per_instance = 1;
  Feed f{p};
  int active = 1;
  for (int i = 0; i < 40; ++i) active += f(9, 1.0, active);
  EXPECT_EQ(active, 2) << "two one-thread instances fill two cores";
}

// The batcher parks workers above the active count and wakes them on set_active.
TEST(AutoscaleBatcherTest, SetActiveWakesAndParksWorkers) {
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
  int running = 0, peak = 0;
  std::vector<int> ran_on;
  RunFn run = [&](int instance, const std::vector<Tensor>& in,
                  int64_t) -> Result<std::vector<Tensor>> {
    std::unique_lock<std::mutex> lk(mu);
    ran_on.push_back(instance);
    peak = std::max(peak, ++running);
    cv.notify_all();
    cv.wait(lk, [&] { return open; });
    --running;
    return std::vector<Tensor>{in[0]};
  };
  BatcherOptions o;
  o.max_batch = 1;
  o.max_delay_us = 0;
  o.instances = 1;
  o.max_instances = 2;
  auto b = DynamicBatcher::create(o, run);
  ASSERT_TRUE(b.ok());
  std::atomic<int> answered{0};
  auto submit = [&] {
    Request r;
    r.inputs = {Tensor::zeros(DType::kF32, {1, 2})};
    r.done = [&](Result<std::vector<Tensor>> out) {
      EXPECT_TRUE(out.ok());
      ++answered;
    };
    ASSERT_TRUE((*b)->submit(std::move(r)).ok());
  };
  submit();
  submit();
  const auto deadline = std::chrono::seconds(10);
  {
    std::unique_lock<std::mutex> lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, deadline, [&] { return running >= 1; }));
  }
  EXPECT_EQ((*b)->stats().queue_depth, 1) << "the parked worker took a batch";
  (*b)->set_active(2);  // the second worker takes the queued request while the first is busy
  {
    std::unique_lock<std::mutex> lk(mu);
    bool both = cv.wait_for(lk, deadline, [&] { return running == 2; });
    open = true;
    cv.notify_all();
    ASSERT_TRUE(both) << "set_active(2) did not wake the second worker";
  }
  cv.notify_all();
  // Back to one: returns only when worker 1 has finished its batch.
  (*b)->set_active(1);
  EXPECT_EQ((*b)->stats().active_instances, 1);
  for (int i = 0; i < 6; ++i) submit();
  (*b)->stop();
  EXPECT_EQ(answered.load(), 8);
  EXPECT_EQ(peak, 2);
  std::lock_guard<std::mutex> lk(mu);
  for (size_t i = 2; i < ran_on.size(); ++i) EXPECT_EQ(ran_on[i], 0) << "a parked worker ran";
}

// A model heavy enough (about 2 M multiply-adds a row) that requests queue behind one instance.
// Heavy enough that a request's compute (about 1 ms: 32 MB of weights read) outweighs its HTTP
// round trip, so that six clients keep the one instance's queue non-empty on any machine (with
// 2048 hidden units a fast core answered in 0.1 ms and the queue was often empty when sampled).
constexpr int64_t kHidden = 8192;

std::string HeavyMlp() {
  testing::OnnxBuilder b(17);
  b.input("x", onnx::TensorProto::FLOAT, {-1, 512});
  b.output("y", onnx::TensorProto::FLOAT, {-1, 512});
  std::vector<float> w1(512 * kHidden), w2(kHidden * 512);
  for (size_t i = 0; i < w1.size(); ++i) w1[i] = 0.001f * static_cast<float>(i % 13) - 0.006f;
  for (size_t i = 0; i < w2.size(); ++i) w2[i] = 0.001f * static_cast<float>(i % 11) - 0.005f;
  b.initializer_f32("W1", {512, kHidden}, w1);
  b.initializer_f32("W2", {kHidden, 512}, w2);
  b.node("MatMul", {"x", "W1"}, {"h"}, "fc1");
  b.node("Relu", {"h"}, {"r"}, "relu");
  b.node("MatMul", {"r", "W2"}, {"y"}, "fc2");
  return b.bytes();
}

TEST(AutoscaleRunnerTest, AddsAndFreesInstances) {
  auto dir = std::filesystem::temp_directory_path() / ("dlsys-autoscale-" + random_hex(6));
  std::filesystem::create_directories(dir);
  std::string f = (dir / "heavy.onnx").string();
  ASSERT_TRUE(write_file_atomic(f, HeavyMlp()).ok());
  ModelRunnerOptions o;
  o.max_batch = 2;
  o.instances = 1;
  o.max_instances = 2;
  auto r = ModelRunner::open(f, o);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_TRUE((*r)->warm_up().ok());
  const int64_t one = (*r)->memory_bytes();
  EXPECT_FALSE((*r)->run(1, {Tensor::zeros(DType::kF32, {1, 512})}, 1).ok());
  ASSERT_TRUE((*r)->add_instance().ok());
  EXPECT_EQ((*r)->instances(), 2);
  EXPECT_EQ((*r)->memory_bytes(), 2 * one) << "the new instance is planned and counted";
  auto y = (*r)->run(1, {Tensor::zeros(DType::kF32, {1, 512})}, 1);
  EXPECT_TRUE(y.ok());
  EXPECT_FALSE((*r)->add_instance().ok()) << "past max_instances";
  ASSERT_TRUE((*r)->remove_instance().ok());
  EXPECT_EQ((*r)->memory_bytes(), one);
  EXPECT_FALSE((*r)->remove_instance().ok()) << "removed the last instance";
  std::filesystem::remove_all(dir);
}

TEST_F(ServingTest, AutoscalingGrowsUnderLoadAndShrinksWhenItStops) {
  if (std::thread::hardware_concurrency() < 2) GTEST_SKIP() << "needs two cores to add one";
  ASSERT_EQ(Register(HeavyMlp()), 1);
  auto r = Req("POST", "/api/v1/deployments",
               json{{"name", "heavy"},
                    {"model", "mlp"},
                    {"ref", "1"},
                    {"config",
                     {{"max_batch", 1},
                      {"max_delay_us", 0},
                      {"min_instances", 1},
                      {"max_instances", 2},
                      {"timeout_ms", 60000}}}}
                   .dump());
  ASSERT_EQ(r.status, 201) << r.body;
  auto instances = [&] { return models_->status("heavy")["instances"].get<int>(); };
  EXPECT_EQ(instances(), 1);
  std::atomic<bool> stop{false};
  std::atomic<int> failed{0};
  std::vector<std::thread> clients;
  const std::string body = json{{"inputs",
                                 {{{"name", "x"},
                                   {"shape", {1, 512}},
                                   {"datatype", "FP32"},
                                   {"data", std::vector<float>(512, 0.5f)}}}}}
                               .dump();
  for (int c = 0; c < 6; ++c)
    clients.emplace_back([&] {
      auto conn = HttpConnection::open("127.0.0.1", server_->port());
      if (!conn.ok()) return (void)++failed;
      while (!stop) {
        auto a = (*conn)->request("POST", "/v2/models/heavy/infer", body);
        if (!a.ok() || a->status != 200) ++failed;
      }
    });
  auto wait_for = [&](int n) {
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (instances() != n && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return instances() == n;
  };
  EXPECT_TRUE(wait_for(2)) << models_->status("heavy").dump();
  stop = true;
  for (auto& t : clients) t.join();
  EXPECT_EQ(failed.load(), 0) << "a request failed while an instance was added";
  EXPECT_TRUE(wait_for(1)) << models_->status("heavy").dump();
  json st = models_->status("heavy");
  EXPECT_GE(st["autoscale"]["scale_ups"].get<int>(), 1);
  EXPECT_GE(st["autoscale"]["scale_downs"].get<int>(), 1);
  EXPECT_NE(Req("GET", "/metrics").body.find("dlsys_serve_instances{deployment=\"heavy\""),
            std::string::npos);
  // Settings are checked: min above max, instances together with autoscaling.
  auto bad = Req("POST", "/api/v1/deployments",
                 json{{"name", "bad"},
                      {"model", "mlp"},
                      {"ref", "1"},
                      {"config", {{"min_instances", 3}, {"max_instances", 2}}}}
                     .dump());
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("config.min_instances 3 is more than config.max_instances 2"),
            std::string::npos)
      << bad.body;
}

}  // namespace
}  // namespace dlsys::serve
