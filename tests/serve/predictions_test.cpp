// Serving answers in the user's terms, over a real HTTP server on loopback: a classifier trained
// by dlsys (here built in the test with the metadata the trainer writes: task, feature names,
// class names, and a onehot step's vocabulary for its string column) offers "probabilities",
// "class" and "class_id" besides its logits, and takes one input per raw feature, category
// names included, in place of its input tensor.
//
// The test model is tiny_mlp: x [N, 4] -> y [N, 3]. Its features are sepal, color, petal and
// width; color was a string column whose names the model's onehot step codes 0, 1, 2. The graph
// takes the codes as they are (serving's work ends at coding: what the graph does with a code
// is the engine's), so a column request must answer exactly what the tensor of its codes does.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <tuple>

#include "serving_fixture.h"

namespace dlsys::serve {
namespace {

const std::vector<std::string> kClasses = {"setosa", "versicolor", "virginica"};
const std::map<std::string, float> kColors = {{"red", 0}, {"green", 1}, {"blue", 2}};

std::string classifier_bytes(float scale = 1.0f) {
  onnx::ModelProto m;
  EXPECT_TRUE(m.ParseFromString(mlp_bytes(scale)));
  auto prop = [&](const std::string& k, const std::string& v) {
    auto* p = m.add_metadata_props();
    p->set_key(k);
    p->set_value(v);
  };
  prop("dlsys.task", "classification");
  prop("dlsys.feature_names", json({"sepal", "color", "petal", "width"}).dump());
  prop("dlsys.class_names", json(kClasses).dump());
  prop("dlsys.preprocess", json{{"input_features", {"sepal", "color", "petal", "width"}},
                                {"steps",
                                 {{{"kind", "onehot"},
                                   {"columns", {"color"}},
                                   {"categories", {0, 1, 2}},
                                   {"vocabulary", {"red", "green", "blue"}}}}}}
                               .dump());
  return m.SerializeAsString();
}

class PredictionsTest : public ServingTest {
 protected:
  void Deploy(const json& config = json::object()) {
    ASSERT_EQ(Register(classifier_bytes()), 1);
    auto r = Req("POST", "/api/v1/deployments",
                 json{{"name", "iris"}, {"model", "mlp"}, {"ref", "1"}, {"config", config}}.dump());
    ASSERT_EQ(r.status, 201) << r.body;
  }
  json Post(const json& body) {
    auto r = Req("POST", "/v2/models/iris/infer", body.dump());
    EXPECT_EQ(r.status, 200) << r.body;
    return J(r);
  }
  static json Output(const json& answer, const std::string& name) {
    for (const auto& o : answer["outputs"])
      if (o["name"] == name) return o;
    ADD_FAILURE() << "no output '" << name << "' in " << answer.dump();
    return json();
  }
  static json Asking(json body, std::initializer_list<const char*> outputs) {
    body["outputs"] = json::array();
    for (const char* o : outputs) body["outputs"].push_back({{"name", o}});
    return body;
  }
  // The column form of rows {sepal, color name, petal, width}.
  static json Columns(const std::vector<std::tuple<float, std::string, float, float>>& rows) {
    json sepal = json::array(), color = json::array(), petal = json::array(), width = json::array();
    for (const auto& [s, c, p, w] : rows) {
      sepal.push_back(s);
      color.push_back(c);
      petal.push_back(p);
      width.push_back(w);
    }
    const int64_t n = static_cast<int64_t>(rows.size());
    json inputs = json::array();
    inputs.push_back({{"name", "width"}, {"datatype", "FP32"}, {"shape", {n}}, {"data", width}});
    inputs.push_back({{"name", "color"}, {"datatype", "BYTES"}, {"shape", {n}}, {"data", color}});
    inputs.push_back({{"name", "sepal"}, {"datatype", "FP64"}, {"shape", {n, 1}}, {"data", sepal}});
    inputs.push_back({{"name", "petal"}, {"datatype", "FP32"}, {"shape", {n}}, {"data", petal}});
    return {{"inputs", inputs}};
  }
  // The same rows as the model's input tensor, colors coded (an unknown name: -1).
  static std::vector<float> Coded(
      const std::vector<std::tuple<float, std::string, float, float>>& rows) {
    std::vector<float> x;
    for (const auto& [s, c, p, w] : rows) {
      auto it = kColors.find(c);
      x.insert(x.end(), {s, it == kColors.end() ? -1.0f : it->second, p, w});
    }
    return x;
  }
};

const std::vector<std::tuple<float, std::string, float, float>> kRows = {
    {0.5f, "red", 1.0f, -0.25f},
    {-1.0f, "blue", 0.75f, 2.0f},
    {2.5f, "green", -0.5f, 0.0f},
    {0.1f, "mauve", 0.2f, 0.3f},  // a category training never saw
};

TEST_F(PredictionsTest, ProbabilitiesAndClassNamesBesideTheLogits) {
  Deploy();
  // The metadata route lists the derived outputs and the features.
  json meta = J(Req("GET", "/v2/models/iris"));
  ASSERT_EQ(meta["outputs"].size(), 4u) << meta.dump();
  EXPECT_EQ(meta["outputs"][1],
            json({{"name", "probabilities"}, {"datatype", "FP32"}, {"shape", {-1, 3}}}));
  EXPECT_EQ(meta["outputs"][2], json({{"name", "class"}, {"datatype", "BYTES"}, {"shape", {-1}}}));
  EXPECT_EQ(meta["outputs"][3],
            json({{"name", "class_id"}, {"datatype", "INT64"}, {"shape", {-1}}}));
  EXPECT_EQ(meta["parameters"]["derived_outputs"], json({"probabilities", "class", "class_id"}));
  EXPECT_EQ(meta["parameters"]["task"], "classification");
  EXPECT_EQ(meta["parameters"]["class_names"], json(kClasses));
  ASSERT_EQ(meta["parameters"]["features"].size(), 4u);
  EXPECT_EQ(meta["parameters"]["features"][1]["name"], "color");
  EXPECT_EQ(meta["parameters"]["features"][1]["datatype"], "BYTES");
  EXPECT_EQ(meta["parameters"]["features"][1]["categories"], json({"blue", "green", "red"}));
  EXPECT_EQ(meta["parameters"]["features"][0]["datatype"], "FP32");

  const int64_t n = 5;
  std::vector<float> x = Inputs(n, -0.4f);
  // Without "outputs" the answer is what it always was: the model's outputs only.
  json plain = Post(InferBody(x, n));
  ASSERT_EQ(plain["outputs"].size(), 1u);
  ExpectNear(plain["outputs"][0]["data"].get<std::vector<float>>(), Expected(mlp_bytes(1), x, n));

  json a = Post(Asking(InferBody(x, n), {"class", "y", "probabilities", "class_id"}));
  ASSERT_EQ(a["outputs"].size(), 4u);
  EXPECT_EQ(a["outputs"][0]["name"], "class");  // in the order asked
  std::vector<float> logits = Output(a, "y")["data"].get<std::vector<float>>();
  ExpectNear(logits, Expected(mlp_bytes(1), x, n));
  json p = Output(a, "probabilities");
  EXPECT_EQ(p["datatype"], "FP32");
  EXPECT_EQ(p["shape"], json({n, 3}));
  std::vector<float> probs = p["data"].get<std::vector<float>>();
  json c = Output(a, "class"), id = Output(a, "class_id");
  EXPECT_EQ(c["datatype"], "BYTES");
  EXPECT_EQ(c["shape"], json({n}));
  EXPECT_EQ(id["datatype"], "INT64");
  std::set<std::string> seen;
  for (int64_t r = 0; r < n; ++r) {
    // Softmax of this request's own logits, computed here.
    const float* l = &logits[static_cast<size_t>(r * 3)];
    double mx = std::max({l[0], l[1], l[2]}), z = 0, sum = 0;
    for (int k = 0; k < 3; ++k) z += std::exp(l[k] - mx);
    for (int k = 0; k < 3; ++k) {
      EXPECT_NEAR(probs[static_cast<size_t>(r * 3 + k)], std::exp(l[k] - mx) / z, 1e-6);
      sum += probs[static_cast<size_t>(r * 3 + k)];
    }
    EXPECT_NEAR(sum, 1.0, 1e-6);
    const int64_t best = std::max_element(l, l + 3) - l;
    EXPECT_EQ(id["data"][r], best);
    EXPECT_EQ(c["data"][r], kClasses[static_cast<size_t>(best)]);
    seen.insert(c["data"][r].get<std::string>());
  }
  EXPECT_GT(seen.size(), 1u) << "the inputs should not all fall in one class";

  // In binary: the class names as 4-byte little-endian lengths and bytes.
  json bin = Asking(InferBody(x, n), {"class"});
  bin["outputs"][0]["parameters"] = {{"binary_data", true}};
  auto r = Req("POST", "/v2/models/iris/infer", bin.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  size_t jl = std::stoul(r.headers["inference-header-content-length"]);
  json h = json::parse(r.body.substr(0, jl));
  EXPECT_EQ(h["outputs"][0]["parameters"]["binary_data_size"], r.body.size() - jl);
  size_t off = jl;
  for (int64_t k = 0; k < n; ++k) {
    ASSERT_LE(off + 4, r.body.size());
    uint32_t len;
    std::memcpy(&len, r.body.data() + off, 4);
    EXPECT_EQ(r.body.substr(off + 4, len), c["data"][k].get<std::string>());
    off += 4 + len;
  }
  EXPECT_EQ(off, r.body.size());

  // A derived output that does not exist is refused before anything is queued.
  auto bad = Req("POST", "/v2/models/iris/infer", Asking(InferBody(x, n), {"label"}).dump());
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(J(bad)["error"].get<std::string>().find("derived outputs: 'probabilities'"),
            std::string::npos)
      << bad.body;
}

TEST_F(PredictionsTest, ColumnsWithCategoryNamesAnswerLikeTheTensor) {
  Deploy();
  const int64_t n = static_cast<int64_t>(kRows.size());
  json by_columns = Post(Asking(Columns(kRows), {"y", "probabilities", "class"}));
  json by_tensor = Post(Asking(InferBody(Coded(kRows), n), {"y", "probabilities", "class"}));
  ExpectNear(Output(by_columns, "y")["data"].get<std::vector<float>>(),
             Expected(mlp_bytes(1), Coded(kRows), n));
  EXPECT_EQ(Output(by_columns, "y"), Output(by_tensor, "y"));
  EXPECT_EQ(Output(by_columns, "probabilities"), Output(by_tensor, "probabilities"));
  EXPECT_EQ(Output(by_columns, "class"), Output(by_tensor, "class"));

  // The same columns in binary: FP64, INT64 and BYTES (length-prefixed) after the JSON.
  std::vector<double> sepal;
  std::vector<int64_t> width_int;
  std::string colors;
  for (const auto& [s, c, p, w] : kRows) {
    sepal.push_back(s);
    width_int.push_back(static_cast<int64_t>(std::lround(w * 4)));
    uint32_t len = static_cast<uint32_t>(c.size());
    colors.append(reinterpret_cast<const char*>(&len), 4);
    colors += c;
  }
  json head = Columns(kRows);
  head["inputs"][0] = {{"name", "width"},
                       {"datatype", "INT64"},
                       {"shape", {n}},
                       {"parameters", {{"binary_data_size", n * 8}}}};
  head["inputs"][1] = {{"name", "color"},
                       {"datatype", "BYTES"},
                       {"shape", {n}},
                       {"parameters", {{"binary_data_size", colors.size()}}}};
  head["inputs"][2] = {{"name", "sepal"},
                       {"datatype", "FP64"},
                       {"shape", {n, 1}},
                       {"parameters", {{"binary_data_size", n * 8}}}};
  std::string hs = head.dump();
  std::string body = hs + std::string(reinterpret_cast<const char*>(width_int.data()), n * 8) +
                     colors + std::string(reinterpret_cast<const char*>(sepal.data()), n * 8);
  auto r = Req("POST", "/v2/models/iris/infer", body,
               {{"Inference-Header-Content-Length", std::to_string(hs.size())}});
  ASSERT_EQ(r.status, 200) << r.body;
  std::vector<float> x = Coded(kRows);
  for (int64_t k = 0; k < n; ++k)
    x[static_cast<size_t>(k * 4 + 3)] = static_cast<float>(width_int[k]);
  ExpectNear(J(r)["outputs"][0]["data"].get<std::vector<float>>(), Expected(mlp_bytes(1), x, n));

  // Errors name the column, before anything reaches a queue.
  auto expect_400 = [&](const json& b, const std::string& needle) {
    auto e = Req("POST", "/v2/models/iris/infer", b.dump());
    EXPECT_EQ(e.status, 400) << b.dump();
    EXPECT_NE(J(e)["error"].get<std::string>().find(needle), std::string::npos) << e.body;
  };
  json missing = Columns(kRows);
  missing["inputs"].erase(3);
  expect_400(missing, "feature 'petal' is missing");
  json unknown = Columns(kRows);
  unknown["inputs"][3]["name"] = "petals";
  expect_400(unknown, "input 'petals' is not a feature of the model");
  json text = Columns(kRows);
  text["inputs"][0]["data"][1] = "wide";
  expect_400(text, "column 'width': element 1 is a string, expected a number");
  json rows = Columns(kRows);
  rows["inputs"][3]["shape"] = {n - 1};
  rows["inputs"][3]["data"].erase(0);
  expect_400(rows, "column 'petal': 3 rows, but column 'width' has 4");
  EXPECT_EQ(J(Req("GET", "/api/v1/deployments/iris"))["status"]["stats"]["done"], 3);
}

// The response cache holds the model's outputs and each answer is encoded for its own request:
// an answer cached for a request asking "class" serves one asking the logits, and one sent as
// columns (the same input tensor once assembled), each with what it asked for.
TEST_F(PredictionsTest, CachedAnswersAreEncodedForEachRequest) {
  Deploy({{"max_delay_us", 0}, {"cache_mb", 1}});
  const int64_t n = static_cast<int64_t>(kRows.size());
  json first = Post(Asking(InferBody(Coded(kRows), n), {"class"}));
  ASSERT_EQ(first["outputs"].size(), 1u);
  EXPECT_EQ(first["outputs"][0]["name"], "class");
  json logits = Post(Asking(InferBody(Coded(kRows), n), {"y"}));
  ASSERT_EQ(logits["outputs"].size(), 1u);
  EXPECT_EQ(logits["outputs"][0]["name"], "y");
  ExpectNear(logits["outputs"][0]["data"].get<std::vector<float>>(),
             Expected(mlp_bytes(1), Coded(kRows), n));
  json plain = Post(Columns(kRows));
  ASSERT_EQ(plain["outputs"].size(), 1u);
  EXPECT_EQ(plain["outputs"][0], logits["outputs"][0]);
  json both = Post(Asking(Columns(kRows), {"probabilities", "class"}));
  EXPECT_EQ(Output(both, "class"), first["outputs"][0]);
  json st = J(Req("GET", "/api/v1/deployments/iris"))["status"];
  EXPECT_EQ(st["stats"]["done"], 1) << st.dump();
  EXPECT_EQ(st["cache"]["hits"], 3);
}

// Shadow copies of a column request go to the shadow as the assembled tensor (its features are
// the same), and are compared as always; the answer is the primary's.
TEST_F(PredictionsTest, ShadowCopiesOfColumnRequests) {
  ASSERT_EQ(Register(classifier_bytes()), 1);
  ASSERT_EQ(Register(classifier_bytes(2.0f)), 2);  // same argmax, other scores
  auto created =
      Req("POST", "/api/v1/deployments",
          json{{"name", "iris"},
               {"model", "mlp"},
               {"ref", "1"},
               {"config", {{"max_delay_us", 0}, {"shadow", {{"model", "mlp"}, {"version", 2}}}}}}
              .dump());
  ASSERT_EQ(created.status, 201) << created.body;
  const int n = 10;
  for (int i = 0; i < n; ++i) {
    json a = Post(Asking(Columns(kRows), {"class", "y"}));
    EXPECT_EQ(a["model_version"], "1");
    ExpectNear(Output(a, "y")["data"].get<std::vector<float>>(),
               Expected(mlp_bytes(1), Coded(kRows), static_cast<int64_t>(kRows.size())));
  }
  auto comparison = [&] {
    return J(Req("GET", "/api/v1/deployments/iris"))["status"]["shadow"]["comparison"];
  };
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (comparison()["agreed"].get<int64_t>() + comparison()["disagreed"].get<int64_t>() < n &&
         std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  json c = comparison();
  EXPECT_EQ(c["agreed"], n) << c.dump();
  EXPECT_EQ(c["dropped"], 0);
}

}  // namespace
}  // namespace dlsys::serve
