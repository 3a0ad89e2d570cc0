// The random ops (RandomNormal, RandomUniform, their Like forms, Bernoulli, Multinomial) and
// Dropout in training mode: their values follow the distribution the spec names (moments and
// frequencies on 10^5 draws, bounds of 5+ standard errors, seeded so the outcome is fixed), a
// seed gives the same stream in every session, each run draws anew (never evaluated once when
// the plan is built, even on constant inputs), and bad probabilities are errors naming the node.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>
#include <memory>

#include "graph/onnx_import.h"
#include "graph/session.h"
#include "testing/onnx_builder.h"

namespace dlsys {
namespace {

using testing::OnnxBuilder;

// A session running one node `op` named "r": `fed` become graph inputs, `constants` Constant
// nodes; outputs y0, y1, ...
std::unique_ptr<Session> node_session(const std::string& op,
                                      const std::vector<std::pair<std::string, Tensor>>& fed,
                                      const std::vector<std::pair<std::string, Tensor>>& constants,
                                      size_t outputs,
                                      const std::function<void(onnx::NodeProto*)>& attrs) {
  OnnxBuilder b(17);
  std::vector<std::string> names, outs;
  for (const auto& [name, t] : fed) {
    b.input(name, dtype_to_onnx(t.dtype()), t.shape());
    names.push_back(name);
  }
  for (const auto& [name, t] : constants) {
    auto* c = b.node("Constant", {}, {name}, name + "_const");
    auto* a = c->add_attribute();
    a->set_name("value");
    a->set_type(onnx::AttributeProto::TENSOR);
    auto* tp = a->mutable_t();
    tp->set_data_type(dtype_to_onnx(t.dtype()));
    for (int64_t d : t.shape()) tp->add_dims(d);
    tp->set_raw_data(t.data(), t.nbytes());
    names.push_back(name);
  }
  for (size_t k = 0; k < outputs; ++k) {
    outs.push_back("y" + std::to_string(k));
    b.output(outs.back(), onnx::TensorProto::FLOAT, {});
  }
  attrs(b.node(op, names, outs, "r"));
  auto g = import_onnx_bytes(b.bytes(), "random.onnx");
  EXPECT_TRUE(g.ok()) << g.status().to_string();
  return Session::from_graph(std::move(g).value());
}

std::vector<Tensor> run(Session& s, const std::map<std::string, Tensor>& feed = {}) {
  std::vector<Tensor> out;
  Status st = s.run(feed, &out);
  EXPECT_TRUE(st.ok()) << st.to_string();
  for (Tensor& t : out) t = t.clone();
  return out;
}

bool same_values(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  for (int64_t i = 0; i < a.numel(); ++i)
    if (a.get_f64(i) != b.get_f64(i)) return false;
  return true;
}

struct Moments {
  double mean = 0, sd = 0;
};

Moments moments(const Tensor& t) {
  Moments m;
  for (int64_t i = 0; i < t.numel(); ++i) m.mean += t.get_f64(i);
  m.mean /= static_cast<double>(t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) m.sd += std::pow(t.get_f64(i) - m.mean, 2);
  m.sd = std::sqrt(m.sd / static_cast<double>(t.numel()));
  return m;
}

TEST(RandomOps, RandomNormalFollowsItsMomentsAndASeedRepeatsItsStream) {
  const int64_t n = 200000;
  auto attrs = [](float seed) {
    return [seed](onnx::NodeProto* node) {
      OnnxBuilder::attr_ints(node, "shape", {n});
      OnnxBuilder::attr_float(node, "mean", 2.f);
      OnnxBuilder::attr_float(node, "scale", 3.f);
      OnnxBuilder::attr_float(node, "seed", seed);
    };
  };
  auto a = node_session("RandomNormal", {}, {}, 1, attrs(7.f));
  auto b = node_session("RandomNormal", {}, {}, 1, attrs(7.f));
  auto c = node_session("RandomNormal", {}, {}, 1, attrs(8.f));
  Tensor a1 = run(*a)[0], a2 = run(*a)[0], b1 = run(*b)[0], c1 = run(*c)[0];
  ASSERT_EQ(a1.dtype(), DType::kF32);
  ASSERT_EQ(a1.shape(), (Shape{n}));
  EXPECT_TRUE(same_values(a1, b1)) << "one seed, two sessions: the same first draw";
  EXPECT_FALSE(same_values(a1, a2)) << "every run draws anew (was the node folded?)";
  EXPECT_FALSE(same_values(a1, c1)) << "another seed, another stream";
  Moments m = moments(a1);
  EXPECT_NEAR(m.mean, 2.0, 0.05);  // standard error 3 / sqrt(2e5) = 0.0067
  EXPECT_NEAR(m.sd, 3.0, 0.05);
  int64_t within = 0;  // P(|z| < 1) = 0.6827
  for (int64_t i = 0; i < n; ++i) within += std::fabs(a1.get_f64(i) - 2.0) < 3.0;
  EXPECT_NEAR(static_cast<double>(within) / n, 0.6827, 0.006);
}

TEST(RandomOps, RandomUniformLikeOnAConstantStillDrawsEveryRun) {
  Tensor like = Tensor::zeros(DType::kF64, {500, 200});
  auto s = node_session("RandomUniformLike", {}, {{"x", like}}, 1, [](onnx::NodeProto* node) {
    OnnxBuilder::attr_float(node, "low", -1.f);
    OnnxBuilder::attr_float(node, "high", 3.f);
    OnnxBuilder::attr_float(node, "seed", 1.f);
  });
  Tensor y1 = run(*s)[0], y2 = run(*s)[0];
  ASSERT_EQ(y1.dtype(), DType::kF64);  // the input's dtype without a dtype attribute
  ASSERT_EQ(y1.shape(), (Shape{500, 200}));
  EXPECT_FALSE(same_values(y1, y2)) << "a random op on a constant must not be folded";
  double lo = 1e9, hi = -1e9;
  for (int64_t i = 0; i < y1.numel(); ++i) {
    lo = std::min(lo, y1.get_f64(i));
    hi = std::max(hi, y1.get_f64(i));
  }
  EXPECT_GE(lo, -1.0);
  EXPECT_LT(hi, 3.0);
  EXPECT_LT(lo, -0.99);
  EXPECT_GT(hi, 2.99);
  Moments m = moments(y1);
  EXPECT_NEAR(m.mean, 1.0, 0.02);                  // standard error 4 / sqrt(12e5) = 0.0037
  EXPECT_NEAR(m.sd, 4.0 / std::sqrt(12.0), 0.01);  // 1.1547
  // With a dtype attribute (FLOAT16 = 10) the output takes it.
  auto h = node_session("RandomNormalLike", {}, {{"x", like}}, 1,
                        [](onnx::NodeProto* node) { OnnxBuilder::attr_int(node, "dtype", 10); });
  EXPECT_EQ(run(*h)[0].dtype(), DType::kF16);
}

TEST(RandomOps, BernoulliFrequenciesFollowTheProbabilities) {
  const int64_t reps = 50000;
  const std::vector<float> probs = {0.f, 0.25f, 0.9f, 1.f};
  Tensor p = Tensor::empty(DType::kF32, {reps, 4});
  for (int64_t i = 0; i < p.numel(); ++i) p.data_as<float>()[i] = probs[i % 4];
  auto s = node_session("Bernoulli", {{"p", p}}, {}, 1, [](onnx::NodeProto* node) {
    OnnxBuilder::attr_float(node, "seed", 3.f);
    OnnxBuilder::attr_int(node, "dtype", 9);  // BOOL
  });
  Tensor y = run(*s, {{"p", p}})[0];
  ASSERT_EQ(y.dtype(), DType::kBool);
  std::vector<int64_t> ones(4, 0);
  for (int64_t i = 0; i < y.numel(); ++i) ones[i % 4] += y.data_as<uint8_t>()[i];
  EXPECT_EQ(ones[0], 0);
  EXPECT_NEAR(static_cast<double>(ones[1]) / reps, 0.25, 0.01);  // standard error 0.0019
  EXPECT_NEAR(static_cast<double>(ones[2]) / reps, 0.9, 0.01);   // 0.0013
  EXPECT_EQ(ones[3], reps);
  // A value outside [0, 1] fails the run, naming the node and the element.
  p.data_as<float>()[5] = 1.5f;
  std::vector<Tensor> out;
  Status st = s->run({{"p", p}}, &out);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("node 'r'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("element 5"), std::string::npos) << st.message();
}

TEST(RandomOps, MultinomialSamplesFollowTheSoftmaxOfTheLogits) {
  const int64_t samples = 60000;
  // Unnormalized log probabilities: log 1, log 2, log 3 -> 1/6, 2/6, 3/6; the second row puts
  // everything on class 1.
  Tensor x = Tensor::from_f32(
      {2, 3}, std::vector<float>{0.f, std::log(2.f), std::log(3.f), -1e30f, 0.f, -1e30f}.data());
  auto s = node_session("Multinomial", {{"x", x}}, {}, 1, [](onnx::NodeProto* node) {
    OnnxBuilder::attr_int(node, "sample_size", samples);
    OnnxBuilder::attr_int(node, "dtype", 7);  // INT64
    OnnxBuilder::attr_float(node, "seed", 5.f);
  });
  Tensor y = run(*s, {{"x", x}})[0];
  ASSERT_EQ(y.dtype(), DType::kI64);
  ASSERT_EQ(y.shape(), (Shape{2, samples}));
  std::vector<int64_t> count(3, 0);
  for (int64_t k = 0; k < samples; ++k) {
    int64_t c = y.data_as<int64_t>()[k];
    ASSERT_TRUE(c >= 0 && c < 3) << c;
    count[c]++;
    EXPECT_EQ(y.data_as<int64_t>()[samples + k], 1);
  }
  for (int c = 0; c < 3; ++c)
    EXPECT_NEAR(static_cast<double>(count[c]) / samples, (c + 1) / 6.0, 0.01) << "class " << c;
}

TEST(RandomOps, DropoutInTrainingModeKeepsOneMinusRatioScaled) {
  const int64_t n = 100000;
  Tensor x = Tensor::empty(DType::kF32, {n});
  for (int64_t i = 0; i < n; ++i) x.data_as<float>()[i] = 1.f + static_cast<float>(i % 7);
  Tensor ratio = Tensor::from_f32({}, std::vector<float>{0.3f}.data());
  Tensor training = Tensor::empty(DType::kBool, {});
  training.data_as<uint8_t>()[0] = 1;
  auto s = node_session("Dropout", {{"x", x}}, {{"ratio", ratio}, {"training", training}}, 2,
                        [](onnx::NodeProto* node) { OnnxBuilder::attr_int(node, "seed", 11); });
  std::vector<Tensor> a = run(*s, {{"x", x}}), b = run(*s, {{"x", x}});
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(a[1].dtype(), DType::kBool);
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    bool k = a[1].data_as<uint8_t>()[i] != 0;
    kept += k;
    float want = k ? x.data_as<float>()[i] / 0.7f : 0.f;
    ASSERT_NEAR(a[0].data_as<float>()[i], want, 1e-5f * std::max(1.f, want)) << i;
  }
  EXPECT_NEAR(static_cast<double>(kept) / n, 0.7, 0.01);  // standard error 0.0015
  EXPECT_FALSE(same_values(a[1], b[1])) << "each run draws a new mask";
  // Dropout's seed is an int: equal seeds give equal masks, others other masks.
  auto with_seed = [&](int64_t seed) {
    return node_session(
        "Dropout", {{"x", x}}, {{"ratio", ratio}, {"training", training}}, 2,
        [seed](onnx::NodeProto* node) { OnnxBuilder::attr_int(node, "seed", seed); });
  };
  auto same = with_seed(11), other = with_seed(12);
  EXPECT_TRUE(same_values(run(*same, {{"x", x}})[1], a[1]));
  EXPECT_FALSE(same_values(run(*other, {{"x", x}})[1], a[1]));
}

}  // namespace
}  // namespace dlsys
