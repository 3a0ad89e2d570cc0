// Synchronized batch norm (train.sync_batch_norm; ops/norm_ops.cpp's sync=1 kernels): two
// "processes" (threads, each with its own session on half of the batch, exchanging through an
// in-process CrossProcess) normalize and back-propagate exactly as the whole batch does. The
// reference is computed here in double by the textbook formulas, never taken from dlsys; the
// whole batch run by one plain session is checked against it too. The two halves also get the
// same bits of every statistic.
#include <gtest/gtest.h>

#include <cmath>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>

#include "graph/session.h"
#include "ops/kernel.h"
#include "train/autodiff.h"

namespace dlsys {
namespace {

// Two parties' gather, in one process: each hands in its values, both get party 0's then
// party 1's.
class TwoParties {
 public:
  Status gather(int me, const float* mine, size_t n, float* all) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !reading_; });  // the previous exchange is read by both
    slot_[me].assign(mine, mine + n);
    if (++arrived_ == 2) {
      reading_ = true;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return reading_; });
    }
    if (slot_[0].size() != n || slot_[1].size() != n)
      return Status::Internal("the parties gave {} and {} floats", slot_[0].size(),
                              slot_[1].size());
    std::copy(slot_[0].begin(), slot_[0].end(), all);
    std::copy(slot_[1].begin(), slot_[1].end(), all + n);
    if (++read_ == 2) {
      arrived_ = read_ = 0;
      reading_ = false;
      cv_.notify_all();
    }
    return Status::OK();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<float> slot_[2];
  int arrived_ = 0, read_ = 0;
  bool reading_ = false;
};

class Party : public CrossProcess {
 public:
  Party(TwoParties* all, int me) : all_(all), me_(me) {}
  int processes() const override { return 2; }
  Status gather(const float* mine, size_t n, float* all) const override {
    return all_->gather(me_, mine, n, all);
  }

 private:
  TwoParties* all_;
  int me_;
};

// BatchNormTraining then BatchNormGrad (with a fused relu or not), as the autodiff makes them,
// marked synchronized; dY is an input.
Graph batch_norm_graph(int64_t n, int64_t c, int64_t hw, bool relu) {
  train::TrainingGraph tg;
  Graph& g = tg.graph;
  g.opset = 17;
  auto fixed = [](std::vector<int64_t> d) {
    std::vector<Dim> dims;
    for (int64_t v : d) dims.push_back(Dim{v, ""});
    return dims;
  };
  g.inputs = {{"x", DType::kF32, true, fixed({n, c, hw, hw})},
              {"dy", DType::kF32, true, fixed({n, c, hw, hw})},
              {"scale", DType::kF32, true, fixed({c})},
              {"bias", DType::kF32, true, fixed({c})}};
  Node f{"bn", "BatchNormTraining", "", {"x", "scale", "bias"}, {"y", "mean", "var", "var_u"}, {}};
  f.attrs["epsilon"] = Attribute::of_float(1e-5f);
  if (relu) f.attrs["relu"] = Attribute::of_int(1);
  Node b{"bn_grad", "BatchNormGrad", "", {"dy", "x", "scale", "mean", "var"}, {"dx", "ds", "db"},
         {}};
  if (relu) b.inputs.push_back("y");
  b.attrs["epsilon"] = Attribute::of_float(1e-5f);
  g.nodes = {f, b};
  for (const char* o : {"y", "mean", "var", "var_u", "dx", "ds", "db"})
    g.outputs.push_back({o, DType::kF32, false, {}});
  EXPECT_EQ(train::synchronize_batch_norms(&tg), 1);
  return g;
}

// Rows [lo, hi) of an [N, ...] tensor of `row` floats per sample.
Tensor rows(const std::vector<float>& v, int64_t lo, int64_t hi, const Shape& sample) {
  int64_t row = 1;
  for (int64_t d : sample) row *= d;
  Shape s = {hi - lo};
  s.insert(s.end(), sample.begin(), sample.end());
  return Tensor::from_f32(s, v.data() + lo * row);
}

TEST(SyncBatchNorm, TwoHalvesNormalizeAndBackpropagateAsTheWholeBatch) {
  const int64_t N = 8, C = 3, HW = 5, inner = HW * HW;
  std::mt19937 rng(7);
  std::normal_distribution<float> d(1.5f, 2.f);
  std::vector<float> x(N * C * inner), dy(x.size()), scale = {1.f, -0.5f, 2.f},
                                                     bias = {0.f, 0.3f, -1.f};
  for (float& v : x) v = d(rng);
  for (float& v : dy) v = d(rng);
  // The halves differ on purpose: the first half's statistics are far from the whole batch's.
  for (int64_t i = 0; i < N / 2 * C * inner; ++i) x[i] = x[i] * 0.25f - 3.f;
  const Shape sample = {C, HW, HW};
  for (bool relu : {false, true}) {
    SCOPED_TRACE(relu ? "with a fused relu" : "plain");
    // Reference, in double.
    std::vector<double> mean(C), var(C), y(x.size()), dx(x.size()), ds(C), db(C);
    const double cnt = static_cast<double>(N * inner);
    for (int64_t c = 0; c < C; ++c) {
      auto at = [&](int64_t n, int64_t i) { return (n * C + c) * inner + i; };
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < inner; ++i) mean[c] += x[at(n, i)];
      mean[c] /= cnt;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < inner; ++i) var[c] += std::pow(x[at(n, i)] - mean[c], 2);
      var[c] /= cnt;
      const double inv = 1 / std::sqrt(var[c] + 1e-5);
      double sg = 0, sgx = 0;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < inner; ++i) {
          const double xh = (x[at(n, i)] - mean[c]) * inv, v = xh * scale[c] + bias[c];
          y[at(n, i)] = relu ? std::max(v, 0.0) : v;
          const double g = relu && v <= 0 ? 0 : dy[at(n, i)];
          sg += g;
          sgx += g * xh;
        }
      ds[c] = sgx;
      db[c] = sg;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < inner; ++i) {
          const double xh = (x[at(n, i)] - mean[c]) * inv, v = xh * scale[c] + bias[c];
          const double g = relu && v <= 0 ? 0 : dy[at(n, i)];
          dx[at(n, i)] = scale[c] * inv * (g - sg / cnt - xh * sgx / cnt);
        }
    }
    auto feed = [&](int64_t lo, int64_t hi) {
      return std::map<std::string, Tensor>{{"x", rows(x, lo, hi, sample)},
                                           {"dy", rows(dy, lo, hi, sample)},
                                           {"scale", Tensor::from_f32({C}, scale.data())},
                                           {"bias", Tensor::from_f32({C}, bias.data())}};
    };
    // The whole batch in one plain session (no other process: the sync attribute changes nothing).
    SessionOptions plain;
    plain.training = true;
    auto whole = Session::from_graph(batch_norm_graph(N, C, HW, relu), plain);
    std::vector<Tensor> w;
    ASSERT_TRUE(whole->run(feed(0, N), &w).ok());
    // The two halves, each a party of the sum.
    TwoParties all;
    Party p0(&all, 0), p1(&all, 1);
    std::vector<Tensor> h[2];
    Status st[2];
    std::unique_ptr<Session> half[2];
    for (int r = 0; r < 2; ++r) {
      SessionOptions o = plain;
      o.cross_process = r == 0 ? &p0 : &p1;
      half[r] = Session::from_graph(batch_norm_graph(N / 2, C, HW, relu), o);
    }
    std::thread t1([&] { st[1] = half[1]->run(feed(N / 2, N), &h[1]); });
    st[0] = half[0]->run(feed(0, N / 2), &h[0]);
    t1.join();
    ASSERT_TRUE(st[0].ok()) << st[0].to_string();
    ASSERT_TRUE(st[1].ok()) << st[1].to_string();
    const int64_t per = N / 2 * C * inner;
    for (int r = 0; r < 2; ++r) {
      for (int64_t c = 0; c < C; ++c) {
        EXPECT_NEAR(h[r][1].data_as<float>()[c], mean[c], 1e-5) << "mean, half " << r;
        EXPECT_NEAR(h[r][2].data_as<float>()[c], var[c], 1e-4 * var[c]) << "var, half " << r;
        EXPECT_NEAR(h[r][3].data_as<float>()[c], var[c] * cnt / (cnt - 1), 1e-4 * var[c]);
      }
      for (int64_t i = 0; i < per; ++i) {
        ASSERT_NEAR(h[r][0].data_as<float>()[i], y[r * per + i], 1e-4) << "y, half " << r;
        ASSERT_NEAR(h[r][4].data_as<float>()[i], dx[r * per + i], 1e-4) << "dx, half " << r;
      }
    }
    // Both halves computed the same bits of the statistics.
    for (int k = 1; k <= 3; ++k)
      EXPECT_EQ(std::memcmp(h[0][k].data_as<float>(), h[1][k].data_as<float>(), C * sizeof(float)),
                0)
          << "output " << k << " differs between the halves";
    // The parameters' gradients stay each half's share: their sum is the whole batch's.
    for (int64_t c = 0; c < C; ++c) {
      EXPECT_NEAR(h[0][5].data_as<float>()[c] + h[1][5].data_as<float>()[c], ds[c], 1e-3);
      EXPECT_NEAR(h[0][6].data_as<float>()[c] + h[1][6].data_as<float>()[c], db[c], 1e-3);
      EXPECT_NEAR(w[1].data_as<float>()[c], mean[c], 1e-5) << "the whole batch, plain";
      EXPECT_NEAR(w[5].data_as<float>()[c], ds[c], 1e-3) << "the whole batch, plain";
    }
    for (size_t i = 0; i < x.size(); ++i)
      ASSERT_NEAR(w[4].data_as<float>()[i], dx[i], 1e-4) << "the whole batch, plain";
  }
}

}  // namespace
}  // namespace dlsys
