// Preprocessing that travels with the model (train/preprocess.h):
// - fitted values equal statistics computed here independently (median, mean, population std,
//   min/max, categories) on the training rows only;
// - the graph form equals the plain C++ reference, through a Session and through an ONNX file
//   read back (the ONNX checker passes);
// - end to end on the shipped wine data: the exported model takes raw features (val_x.npy as
//   stored) and scores exactly the trainer's validation accuracy; class names and the fitted
//   steps are in its metadata; nulls are dropped, imputed, or refused with the fix named;
// - string columns: coded by a vocabulary, onehot, the names of the categories in the model's
//   metadata, a validation file coded with the training file's categories; the exported model
//   takes the names as STRING inputs and answers as the trainer's evaluation did;
// - spec errors name the step and the line.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "core/file_util.h"
#include "data/in_memory_dataset.h"
#include "graph/model_metadata.h"
#include "graph/onnx_export.h"
#include "graph/onnx_import.h"
#include "graph/session.h"
#include "tensor/npy.h"
#include "train/preprocess.h"
#include "train/trainer.h"

namespace dlsys::train {
namespace {

namespace fs = std::filesystem;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
const std::string kWine = std::string(DLSYS_SHARED_DATA) + "/wine/wine_data.csv";

// 8 rows x 4 features: c0 with a null (median impute), c1 with a null (mean impute), c2 to clip,
// c3 categories {0, 2, 5}.
Tensor sample_features() {
  const float v[] = {1,    10,   -3,   0,  //
                     4,    kNaN, 0.5,  2,  //
                     kNaN, 30,   2,    5,  //
                     2,    20,   -0.5, 0,  //
                     9,    40,   1,    2,  //
                     3,    50,   7,    2,  //
                     7,    60,   0,    0,  //
                     5,    70,   0.25, 5};
  return Tensor::from_f32({8, 4}, v);
}

std::vector<PreprocessStep> sample_steps() {
  std::vector<PreprocessStep> s(5);
  s[0].kind = "impute", s[0].strategy = "median", s[0].columns = {"c0"};
  s[1].kind = "impute", s[1].strategy = "mean", s[1].columns = {"1"};  // by index
  s[2].kind = "clip", s[2].min = -1, s[2].max = 1, s[2].columns = {"c2"};
  s[3].kind = "standardize", s[3].columns = {"c0", "c1", "c2"};
  s[4].kind = "onehot", s[4].columns = {"c3"};
  return s;
}

Result<Preprocessor> fit_sample() {
  Tensor x = sample_features();
  return Preprocessor::fit(sample_steps(), {"c0", "c1", "c2", "c3"}, 4,
                           [&](const std::function<Status(const Tensor&)>& visit) {
                             // Two batches, so that statistics accumulate across them.
                             Tensor a = Tensor::from_f32({3, 4}, x.data_as<float>());
                             Tensor b = Tensor::from_f32({5, 4}, x.data_as<float>() + 12);
                             DLSYS_RETURN_IF_ERROR(visit(a));
                             return visit(b);
                           });
}

TEST(Preprocessor, FittedValuesAreTheTrainingStatistics) {
  auto p = fit_sample();
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  ASSERT_EQ(p->steps().size(), 5u);
  // Median of c0's 7 values {1,4,2,9,3,7,5} is 4; mean of c1's 7 values is 280/7 = 40.
  EXPECT_EQ(p->steps()[0].fill[0], 4.0f);
  EXPECT_TRUE(std::isnan(p->steps()[0].fill[1])) << "an uncovered column stays as it is";
  EXPECT_FLOAT_EQ(p->steps()[1].fill[1], 40.0f);
  // Standardize sees the imputed and clipped values.
  std::vector<double> cols[3] = {{1, 4, 4, 2, 9, 3, 7, 5},
                                 {10, 40, 30, 20, 40, 50, 60, 70},
                                 {-1, 0.5, 1, -0.5, 1, 1, 0, 0.25}};
  for (int c = 0; c < 3; ++c) {
    double mean = 0, var = 0;
    for (double v : cols[c]) mean += v / 8;
    for (double v : cols[c]) var += (v - mean) * (v - mean) / 8;
    EXPECT_NEAR(p->steps()[3].shift[c], mean, 1e-5) << "column " << c;
    EXPECT_NEAR(p->steps()[3].mul[c], 1 / std::sqrt(var), 1e-5) << "column " << c;
  }
  EXPECT_EQ(p->steps()[4].categories, (std::vector<float>{0, 2, 5}));
  EXPECT_EQ(p->out_features(), 6);
  EXPECT_EQ(p->out_names(), (std::vector<std::string>{"c0", "c1", "c2", "c3=0", "c3=2", "c3=5"}));
}

TEST(Preprocessor, TheGraphComputesWhatTheReferenceComputes) {
  auto p = fit_sample();
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  // A model that is the identity on its input [batch, 6].
  Graph g;
  g.opset = 17;
  g.inputs.push_back({"input", DType::kF32, true, {Dim{-1, "batch"}, Dim{6, ""}}});
  g.outputs.push_back({"logits", DType::kF32, true, {Dim{-1, "batch"}, Dim{6, ""}}});
  Node n;
  n.name = "id";
  n.op_type = "Identity";
  n.inputs = {"input"};
  n.outputs = {"logits"};
  g.nodes.push_back(n);
  ASSERT_TRUE(p->prepend_to(&g).ok());
  EXPECT_EQ(g.inputs[0].dims[1].value, 4) << "the model now takes the raw features";
  // Rows with nulls and unseen categories (3 is not a category: all zeros).
  const float raw[] = {kNaN, kNaN, 5, 3, 2, 100, -9, 5};
  Tensor x = Tensor::from_f32({2, 4}, raw);
  auto want = p->apply(x);
  ASSERT_TRUE(want.ok());
  EXPECT_EQ(want->data_as<float>()[3], 0.0f);
  EXPECT_EQ(want->data_as<float>()[4], 0.0f);
  EXPECT_EQ(want->data_as<float>()[5], 0.0f);
  EXPECT_EQ(want->data_as<float>()[6 + 5], 1.0f);
  auto check = [&](const Graph& graph, const char* how) {
    auto s = Session::from_graph(graph, SessionOptions{});
    std::vector<Tensor> out;
    Status st = s->run({{"input", x}}, &out);
    ASSERT_TRUE(st.ok()) << how << ": " << st.to_string();
    ASSERT_EQ(out[0].shape(), want->shape()) << how;
    for (int64_t i = 0; i < want->numel(); ++i)
      EXPECT_FLOAT_EQ(out[0].data_as<float>()[i], want->data_as<float>()[i]) << how << " " << i;
  };
  check(g, "in memory");
  auto bytes = export_onnx_bytes(g);  // runs the ONNX checker
  ASSERT_TRUE(bytes.ok()) << bytes.status().to_string();
  auto back = import_onnx_bytes(*bytes, "the exported model");
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  check(*back, "exported and read back");
}

TEST(Preprocessor, ErrorsNameTheStepAndTheColumn) {
  std::vector<PreprocessStep> s(1);
  s[0].kind = "standardize";
  s[0].columns = {"nope"};
  Tensor x = sample_features();
  auto visit_all = [&](const std::function<Status(const Tensor&)>& v) { return v(x); };
  auto r = Preprocessor::fit(s, {"c0", "c1", "c2", "c3"}, 4, visit_all);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("data.preprocess[0] standardize: no feature column 'nope'"),
            std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("c0, c1, c2, c3"), std::string::npos);
  s[0].kind = "onehot";
  s[0].columns = {"c2"};  // 0.5, -0.5 are not category codes
  r = Preprocessor::fit(s, {"c0", "c1", "c2", "c3"}, 4, visit_all);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("not a category code"), std::string::npos)
      << r.status().message();
}

TEST(Preprocessor, StringColumnsBecomeStringInputsThatAnswerAsTheirCodes) {
  // Two string columns around a numeric one (so the features are put back in order by a
  // Gather): the graph with STRING inputs gives exactly what the graph fed codes gives.
  const data::Vocabularies vocab = {{"color", {"blue", "red"}}, {"shade", {"dark", "light"}}};
  // color, c0, shade as codes; the last row has codes no category matches (-1: unseen).
  const float v[] = {0, 1.5f, 1, 1, -2, 0, 0, 4, 0, 1, 0.5f, 1, -1, 3, -1};
  Tensor x = Tensor::from_f32({5, 3}, v);
  auto visit = [&](const std::function<Status(const Tensor&)>& f) {
    return f(Tensor::from_f32({4, 3}, v));  // training rows: the first four
  };
  std::vector<PreprocessStep> steps(2);
  steps[0].kind = "standardize";
  steps[1].kind = "onehot", steps[1].columns = {"color", "shade"};
  auto p = Preprocessor::fit(steps, {"color", "c0", "shade"}, 3, visit, vocab);
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  Graph g;
  g.opset = 17;
  g.inputs.push_back(ValueInfo{"input", DType::kF32, true, {Dim{-1, "batch"}, Dim{5, ""}}});
  g.outputs.push_back(ValueInfo{"y", DType::kF32, true, {Dim{-1, "batch"}, Dim{5, ""}}});
  Node id;
  id.name = "body";
  id.op_type = "Identity";
  id.inputs = {"input"};
  id.outputs = {"y"};
  g.nodes.push_back(id);
  ASSERT_TRUE(p->prepend_to(&g).ok());
  Graph strings = g;
  auto names = p->string_inputs_to(&strings);
  ASSERT_TRUE(names.ok()) << names.status().to_string();
  EXPECT_EQ(*names, (std::vector<std::string>{"color", "shade"}));
  ASSERT_EQ(strings.inputs.size(), 3u);
  EXPECT_EQ(dims_str(strings.inputs[0]), "[batch, 1]") << "the float input keeps c0 only";
  EXPECT_EQ(strings.inputs[1].name, "color");
  EXPECT_EQ(strings.inputs[2].name, "shade");
  // Through an ONNX file (the checker passes) and back.
  auto bytes = export_onnx_bytes(strings);
  ASSERT_TRUE(bytes.ok()) << bytes.status().to_string();
  auto back = import_onnx_bytes(*bytes, "strings.onnx");
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  std::vector<float> c0;
  std::vector<std::string> color, shade;
  auto name = [](const std::vector<std::string>& words, float code) {
    return code >= 0 ? words[static_cast<size_t>(code)] : std::string("never seen");
  };
  for (int r = 0; r < 5; ++r) {
    color.push_back(name(vocab.at("color"), v[r * 3]));
    c0.push_back(v[r * 3 + 1]);
    shade.push_back(name(vocab.at("shade"), v[r * 3 + 2]));
  }
  std::vector<Tensor> a, b;
  auto codes = Session::from_graph(g, SessionOptions{});
  ASSERT_TRUE(codes->run({{"input", x}}, &a).ok());
  auto s = Session::from_graph(*back, SessionOptions{});
  Status st = s->run({{"input", Tensor::from_f32({5, 1}, c0.data())},
                      {"color", Tensor::from_strings({5, 1}, color)},
                      {"shade", Tensor::from_strings({5, 1}, shade)}},
                     &b);
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_EQ(a[0].shape(), b[0].shape());
  for (int64_t i = 0; i < a[0].numel(); ++i)
    EXPECT_EQ(a[0].data_as<float>()[i], b[0].data_as<float>()[i]) << i;
  // The last row's onehot blocks are all zero: c0 standardized, then four zeros.
  for (int k = 1; k < 5; ++k) EXPECT_EQ(b[0].data_as<float>()[4 * 5 + k], 0.0f) << k;
  // And the codes form read back from the string form is the graph the trainer ran.
  Graph back_to_codes = strings;
  back_to_codes.metadata["dlsys.string_inputs"] = R"(["color","shade"])";
  back_to_codes.metadata["dlsys.feature_names"] = R"(["color","c0","shade"])";
  ASSERT_TRUE(to_codes_form(&back_to_codes).ok());
  std::vector<Tensor> c;
  auto cs = Session::from_graph(back_to_codes, SessionOptions{});
  ASSERT_TRUE(cs->run({{"input", x}}, &c).ok());
  for (int64_t i = 0; i < a[0].numel(); ++i)
    EXPECT_EQ(a[0].data_as<float>()[i], c[0].data_as<float>()[i]) << i;
}

TEST(Preprocessor, StringColumnsAreOnehotWithTheirNames) {
  // c0 numeric; color as codes of the vocabulary {amber, blue, green, red}: training has blue
  // (1) and red (3) only.
  const data::Vocabularies vocab = {{"color", {"amber", "blue", "green", "red"}}};
  const float v[] = {1, 3, 2, 1, 3, 3, 6, 1};
  Tensor x = Tensor::from_f32({4, 2}, v);
  auto visit_all = [&](const std::function<Status(const Tensor&)>& f) { return f(x); };
  std::vector<PreprocessStep> s(2);
  s[0].kind = "standardize";  // no columns: every feature no onehot takes
  s[1].kind = "onehot", s[1].columns = {"color"};
  auto p = Preprocessor::fit(s, {"c0", "color"}, 2, visit_all, vocab);
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  EXPECT_EQ(p->steps()[0].columns, (std::vector<int>{0})) << "standardize leaves color alone";
  EXPECT_EQ(p->steps()[1].categories, (std::vector<float>{1, 3}));
  EXPECT_EQ(p->steps()[1].category_names, (std::vector<std::string>{"blue", "red"}));
  EXPECT_EQ(p->out_names(), (std::vector<std::string>{"c0", "color=blue", "color=red"}));
  nlohmann::json j = p->to_json();
  EXPECT_EQ(j["steps"][1]["vocabulary"], nlohmann::json({"blue", "red"})) << j.dump();
  // What a reader of the model makes of it: names back to the codes the graph compares.
  Graph g;
  g.metadata["dlsys.preprocess"] = j.dump();
  g.metadata["dlsys.feature_names"] = R"(["c0","color"])";
  ModelMetadata m = ModelMetadata::read(g);
  EXPECT_TRUE(m.is_categorical("color"));
  EXPECT_FALSE(m.is_categorical("c0"));
  EXPECT_EQ(m.encode("color", "red"), 3.0f);
  EXPECT_EQ(m.encode("color", "blue"), 1.0f);
  EXPECT_EQ(m.encode("color", "green"), -1.0f) << "not a training category: all zeros";
  EXPECT_EQ(m.encode("c0", "1"), std::nullopt);
  auto y =
      p->apply(Tensor::from_f32({1, 2}, std::vector<float>{2, *m.encode("color", "red")}.data()));
  ASSERT_TRUE(y.ok());
  EXPECT_EQ(y->data_as<float>()[1], 0.0f);
  EXPECT_EQ(y->data_as<float>()[2], 1.0f);

  // A string column must be onehot, and only onehot.
  s.pop_back();
  auto missing = Preprocessor::fit(s, {"c0", "color"}, 2, visit_all, vocab);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("column 'color' holds strings (category names); add "
                                            "`- onehot: [color]`"),
            std::string::npos)
      << missing.status().message();
  s[0].columns = {"c0", "color"};
  s.push_back({});
  s[1].kind = "onehot", s[1].columns = {"color"};
  auto named = Preprocessor::fit(s, {"c0", "color"}, 2, visit_all, vocab);
  ASSERT_FALSE(named.ok());
  EXPECT_NE(named.status().message().find(
                "data.preprocess[0] standardize: column 'color' holds category names"),
            std::string::npos)
      << named.status().message();
}

class PreprocessTrainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() / ("dlsys-preprocess-" + random_hex(6))).string();
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  Result<TrainSpec> spec(const std::string& yaml) {
    std::string path = dir_ + "/spec" + std::to_string(n_++) + ".yaml";
    std::ofstream(path) << yaml;
    return load_train_spec(path);
  }
  Result<TrainResult> train(const std::string& yaml, const std::string& name) {
    auto s = spec(yaml);
    if (!s.ok()) return s.status();
    TrainOptions o;
    o.out_dir = dir_ + "/" + name;
    o.threads = 2;
    return train_model(*s, o);
  }
  std::string dir_;
  int n_ = 0;
};

std::string wine_spec(const std::string& data_extra, const std::string& train = kWine) {
  return "data:\n  train: " + train + "\n  split_seed: 3\n" + data_extra + R"(
model:
  input: [13]
  layers: [{linear: {out: 16}}, relu, {linear: {out: 3}}]
train:
  epochs: 30
  batch_size: 16
  seed: 1
  optimizer: {name: adam, lr: 0.01}
)";
}

// Runs `cmd` in a shell: its stdout, and its exit status in *code.
std::string shell(const std::string& cmd, int* code) {
  std::string out;
  FILE* f = popen(cmd.c_str(), "r");
  if (!f) {
    *code = -1;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  int st = pclose(f);
  *code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

// Accuracy of `model` on val_x.npy against val_y.npy, run as any user would run the file.
double exported_accuracy(const std::string& run_dir, Graph* model_out = nullptr) {
  auto g = import_onnx_file(run_dir + "/model.onnx");
  EXPECT_TRUE(g.ok()) << g.status().to_string();
  if (!g.ok()) return -1;
  if (model_out) *model_out = *g;
  auto x = npy_read(run_dir + "/val_x.npy");
  auto y = npy_read(run_dir + "/val_y.npy");
  EXPECT_TRUE(x.ok() && y.ok());
  auto s = Session::from_graph(*g, SessionOptions{});
  std::vector<Tensor> out;
  EXPECT_TRUE(s->run({{g->inputs[0].name, *x}}, &out).ok());
  const int64_t n = y->numel(), k = out[0].dim(1);
  int64_t right = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* row = out[0].data_as<float>() + i * k;
    right += (std::max_element(row, row + k) - row) == y->data_as<int64_t>()[i];
  }
  return double(right) / n;
}

TEST_F(PreprocessTrainTest, TheExportedModelTakesRawFeaturesAndScoresAsTheTrainerDid) {
  auto r = train(wine_spec("  preprocess: [standardize]\n"
                           "  class_names: [class_0, class_1, class_2]\n"),
                 "std");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_GE(r->val_accuracy, 0.9) << "standardized wine is easy";
  auto x = npy_read(dir_ + "/std/val_x.npy");
  ASSERT_TRUE(x.ok());
  EXPECT_GT(*std::max_element(x->data_as<float>(), x->data_as<float>() + x->numel()), 250.0f)
      << "val_x.npy holds raw features (proline is in the hundreds)";
  Graph model;
  EXPECT_DOUBLE_EQ(exported_accuracy(dir_ + "/std", &model), r->val_accuracy);
  EXPECT_EQ(model.metadata["dlsys.class_names"], R"(["class_0","class_1","class_2"])");
  EXPECT_EQ(model.metadata["dlsys.task"], "classification");
  // The fitted means are those of the training rows (the same seeded split, computed here).
  auto all = data::read_file_dataset(kWine, {});
  ASSERT_TRUE(all.ok()) << all.status().to_string();
  data::InMemoryDataset tr, va;
  ASSERT_TRUE(data::split(*all, 0.2, 3, &tr, &va).ok());
  auto meta = nlohmann::json::parse(model.metadata["dlsys.preprocess"]);
  ASSERT_EQ(meta["steps"].size(), 1u);
  for (int c = 0; c < 13; ++c) {
    double mean = 0;
    for (int64_t i = 0; i < tr.size(); ++i) mean += tr.features.data_as<float>()[i * 13 + c];
    mean /= tr.size();
    EXPECT_NEAR(meta["steps"][0]["shift"][c].get<double>(), mean, 1e-3 * std::abs(mean) + 1e-5)
        << "column " << c;
  }
}

TEST_F(PreprocessTrainTest, FeatureScaleIsBakedIntoTheModel) {
  auto r = train(wine_spec("  feature_scale: 0.001\n"), "scaled");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  Graph model;
  EXPECT_DOUBLE_EQ(exported_accuracy(dir_ + "/scaled", &model), r->val_accuracy);
  auto meta = nlohmann::json::parse(model.metadata["dlsys.preprocess"]);
  EXPECT_EQ(meta["steps"][0]["kind"], "scale");
  EXPECT_FLOAT_EQ(meta["steps"][0]["mul"][0].get<float>(), 0.001f);
}

// The wine CSV with the second value missing in data rows 5 and 9, and (with `label_null`) the
// label missing in row 12.
std::string wine_with_nulls(const std::string& dir, bool label_null) {
  auto text = read_file(kWine);
  std::string out, line;
  std::istringstream in(*text);
  int n = 0;
  while (std::getline(in, line)) {
    if (n == 5 || n == 9) {
      size_t a = line.find(','), b = line.find(',', a + 1);
      line = line.substr(0, a + 1) + line.substr(b);
    }
    if (n == 12 && label_null) line = line.substr(0, line.rfind(',') + 1);
    out += line + "\n";
    ++n;
  }
  std::string path = dir + (label_null ? "/wine_null_label.csv" : "/wine_nulls.csv");
  std::ofstream(path) << out;
  return path;
}

TEST_F(PreprocessTrainTest, NullsAreRefusedDroppedOrImputed) {
  std::string csv = wine_with_nulls(dir_, true);
  auto refused = train(wine_spec("", csv), "refused");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("data.nulls: drop"), std::string::npos)
      << refused.status().message();
  auto dropped = train(wine_spec("  nulls: drop\n", csv), "dropped");
  ASSERT_TRUE(dropped.ok()) << dropped.status().to_string();
  auto y = npy_read(dir_ + "/dropped/val_y.npy");
  ASSERT_TRUE(y.ok());
  EXPECT_EQ(y->numel(), 35) << "175 complete rows, 20% held out";
  // Impute fills features; a missing label is still refused.
  auto no_label = train(wine_spec("  preprocess: [{impute: median}, standardize]\n", csv), "nl");
  ASSERT_FALSE(no_label.ok());
  EXPECT_NE(no_label.status().message().find("missing value"), std::string::npos)
      << no_label.status().message();
  auto imputed = train(
      wine_spec("  preprocess: [{impute: median}, standardize]\n", wine_with_nulls(dir_, false)),
      "imputed");
  ASSERT_TRUE(imputed.ok()) << imputed.status().to_string();
  Graph model;
  EXPECT_DOUBLE_EQ(exported_accuracy(dir_ + "/imputed", &model), imputed->val_accuracy);
  // The model answers for a null what it answers for the training median.
  auto meta = nlohmann::json::parse(model.metadata["dlsys.preprocess"]);
  float median = meta["steps"][0]["fill"][1].get<float>();
  EXPECT_GT(median, 0.5f);
  float row[13] = {13.2f, kNaN,  2.14f, 11.2f, 100,  2.65f, 2.76f,
                   0.26f, 1.28f, 4.38f, 1.05f, 3.4f, 1050};
  float filled[13];
  std::copy(row, row + 13, filled);
  filled[1] = median;
  auto s = Session::from_graph(model, SessionOptions{});
  std::vector<Tensor> a, b;
  ASSERT_TRUE(s->run({{model.inputs[0].name, Tensor::from_f32({1, 13}, row)}}, &a).ok());
  ASSERT_TRUE(s->run({{model.inputs[0].name, Tensor::from_f32({1, 13}, filled)}}, &b).ok());
  for (int k = 0; k < 3; ++k) {
    EXPECT_TRUE(std::isfinite(a[0].data_as<float>()[k]));
    EXPECT_EQ(a[0].data_as<float>()[k], b[0].data_as<float>()[k]);
  }
}

TEST_F(PreprocessTrainTest, StringCategoriesTrainAndTravelAsAVocabulary) {
  // The class is the color; size is noise. The validation file has a color training never saw.
  const char* colors[] = {"red", "green", "blue"};
  std::string train_csv = "size,color,label\n", val_csv = train_csv;
  for (int i = 0; i < 240; ++i)
    train_csv += fmt::format("{},{},{}\n", (i * 37) % 11, colors[i % 3], i % 3);
  for (int i = 0; i < 30; ++i)
    val_csv += fmt::format("{},{},{}\n", (i * 13) % 7, i == 29 ? "purple" : colors[i % 3], i % 3);
  std::ofstream(dir_ + "/train.csv") << train_csv;
  std::ofstream(dir_ + "/val.csv") << val_csv;
  auto r = train("data:\n  train: " + dir_ + "/train.csv\n  validation: " + dir_ +
                     "/val.csv\n  preprocess: [standardize, {onehot: [color]}]\n" + R"(
model:
  input: [4]
  layers: [{linear: {out: 3}}]
train:
  epochs: 30
  batch_size: 16
  seed: 1
  optimizer: {name: adam, lr: 0.05}
)",
                 "colors");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  // 29 of 30 rows name their class; purple (row 29, class 2) gets an all-zero onehot block.
  EXPECT_GE(r->val_accuracy, 29.0 / 30 - 1e-9);
  auto imported = import_onnx_file(dir_ + "/colors/model.onnx");
  ASSERT_TRUE(imported.ok()) << imported.status().to_string();
  Graph model = *imported;
  ModelMetadata m = ModelMetadata::read(model);
  EXPECT_EQ(m.feature_names, (std::vector<std::string>{"size", "color"}));
  EXPECT_EQ(m.string_inputs, (std::vector<std::string>{"color"}));
  // The training vocabulary sorted: blue 0, green 1, red 2 (also in the metadata).
  EXPECT_EQ(m.encode("color", "blue"), 0.0f);
  EXPECT_EQ(m.encode("color", "red"), 2.0f);
  EXPECT_EQ(m.encode("color", "purple"), -1.0f);
  // The model takes the size as floats and the color as strings.
  ASSERT_EQ(model.inputs.size(), 2u);
  EXPECT_EQ(model.inputs[0].name, "input");
  EXPECT_EQ(dims_str(model.inputs[0]), "[batch, 1]");
  EXPECT_EQ(model.inputs[1].name, "color");
  EXPECT_EQ(model.inputs[1].dtype, DType::kString);
  auto x = npy_read(dir_ + "/colors/val_x.npy");
  auto y = npy_read(dir_ + "/colors/val_y.npy");
  ASSERT_TRUE(x.ok() && y.ok());
  EXPECT_EQ(x->data_as<float>()[29 * 2 + 1], -1.0f)
      << "purple is coded -1: validation is coded with the training file's vocabulary";
  // The validation rows as a user has them: sizes, and colors by name.
  std::vector<float> sizes;
  std::vector<std::string> names;
  for (int i = 0; i < 30; ++i) {
    sizes.push_back(static_cast<float>((i * 13) % 7));
    names.push_back(i == 29 ? "purple" : colors[i % 3]);
  }
  auto s = Session::from_graph(model, SessionOptions{});
  std::vector<Tensor> out;
  ASSERT_TRUE(s->run({{"input", Tensor::from_f32({30, 1}, sizes.data())},
                      {"color", Tensor::from_strings({30, 1}, names)}},
                     &out)
                  .ok());
  // The trainer's evaluation: the model in the form it was trained and evaluated in (codes in
  // the float input) on val_x.npy, the rows the evaluation ran on.
  Graph codes = model;
  ASSERT_TRUE(to_codes_form(&codes).ok());
  ASSERT_EQ(codes.inputs.size(), 1u);
  auto cs = Session::from_graph(codes, SessionOptions{});
  std::vector<Tensor> eval;
  ASSERT_TRUE(cs->run({{codes.inputs[0].name, *x}}, &eval).ok());
  ASSERT_EQ(out[0].shape(), (Shape{30, 3}));
  ASSERT_EQ(eval[0].shape(), (Shape{30, 3}));
  int64_t right = 0;
  for (int64_t i = 0; i < 30; ++i) {
    const float* row = out[0].data_as<float>() + i * 3;
    for (int k = 0; k < 3; ++k)
      EXPECT_EQ(row[k], eval[0].data_as<float>()[i * 3 + k]) << "row " << i << " class " << k;
    right += (std::max_element(row, row + 3) - row) == y->data_as<int64_t>()[i];
  }
  EXPECT_DOUBLE_EQ(double(right) / 30, r->val_accuracy);
  // Independent references: Python's ONNX checker accepts the file, and ONNX Runtime fed the
  // same raw rows answers what dlsys answers.
  const std::string model_path = dir_ + "/colors/model.onnx";
  int code = 0;
  std::string checked = shell(
      "/usr/bin/python3 -c \"import onnx; onnx.checker.check_model("
      "onnx.load('" +
          model_path + "')); print('checked')\" 2>&1",
      &code);
  if (checked.find("No module named") != std::string::npos)
    std::printf("skipping the Python ONNX checker: %s", checked.c_str());
  else
    EXPECT_EQ(checked, "checked\n") << checked;
  const std::string engine = std::string(DLSYS_SOURCE_DIR) + "/bench/engine";
  if (!fs::exists(engine + "/node_modules/onnxruntime-node")) {
    std::printf("skipping the ONNX Runtime comparison: run `npm install --ignore-scripts` in %s\n",
                engine.c_str());
  } else {
    nlohmann::json feeds = {{"input", {{"type", "float32"}, {"dims", {30, 1}}, {"data", sizes}}},
                            {"color", {{"type", "string"}, {"dims", {30, 1}}, {"data", names}}}};
    std::ofstream(dir_ + "/feeds.json") << feeds.dump();
    std::string ort = shell(
        "node " + engine + "/run_model.mjs " + model_path + " " + dir_ + "/feeds.json 2>&1", &code);
    ASSERT_EQ(code, 0) << ort;
    auto j = nlohmann::json::parse(ort, nullptr, false);
    ASSERT_TRUE(j.is_object() && j.contains(model.outputs[0].name)) << ort;
    const nlohmann::json& data = j[model.outputs[0].name]["data"];
    ASSERT_EQ(data.size(), 90u) << ort;
    for (int64_t i = 0; i < 90; ++i)
      EXPECT_NEAR(data[i].get<double>(), out[0].data_as<float>()[i], 1e-5) << "element " << i;
  }
  // Rows by name predict their color's class.
  const float two[] = {5, 5};
  ASSERT_TRUE(s->run({{"input", Tensor::from_f32({2, 1}, two)},
                      {"color", Tensor::from_strings({2, 1}, {"green", "red"})}},
                     &out)
                  .ok());
  std::vector<Prediction> p = predict(m, out[0]);
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].class_id, 1) << "green";
  EXPECT_EQ(p[1].class_id, 0) << "red";
  // A string column named like the model's float input cannot become an input of that name:
  // refused before training, naming the column.
  std::string clash = "size,input,label\n";
  for (int i = 0; i < 30; ++i) clash += fmt::format("{},{},{}\n", i % 5, colors[i % 3], i % 3);
  std::ofstream(dir_ + "/clash.csv") << clash;
  auto clashed = train("data:\n  train: " + dir_ + "/clash.csv\n" + R"(
  preprocess: [{onehot: [input]}]
model:
  input: [4]
  layers: [{linear: {out: 3}}]
train:
  epochs: 1
)",
                       "clash");
  ASSERT_FALSE(clashed.ok());
  EXPECT_NE(clashed.status().message().find("string column 'input' would become the model's input"),
            std::string::npos)
      << clashed.status().message();
  EXPECT_FALSE(fs::exists(dir_ + "/clash/model.onnx"));
  // Without the onehot step the string column is refused, with the fix named.
  auto plain = train("data:\n  train: " + dir_ + "/train.csv\n" + R"(
model:
  input: [2]
  layers: [{linear: {out: 3}}]
)",
                     "plain");
  ASSERT_FALSE(plain.ok());
  EXPECT_NE(plain.status().message().find("add `- onehot: [color]` to data.preprocess"),
            std::string::npos)
      << plain.status().message();
}

TEST_F(PreprocessTrainTest, DatasetValidationDefaultsToTheVersionsValidationSplit) {
  const std::string rest = "model:\n  input: [2]\n  layers: [{linear: {out: 2}}]\n";
  auto plain = spec("data:\n  dataset: d@v1\n" + rest);
  ASSERT_TRUE(plain.ok()) << plain.status().to_string();
  EXPECT_EQ(plain->dataset, "d@v1:train");
  EXPECT_EQ(plain->dataset_validation, "d@v1:validation");
  auto split = spec("data:\n  dataset: d@v1:test\n" + rest);
  ASSERT_TRUE(split.ok()) << split.status().to_string();
  EXPECT_EQ(split->dataset, "d@v1:test");
  EXPECT_EQ(split->dataset_validation, "d@v1:validation") << "was '' (an error naming no dataset)";
  auto given = spec("data:\n  dataset: d@v1:test\n  validation: e@v2\n" + rest);
  ASSERT_TRUE(given.ok()) << given.status().to_string();
  EXPECT_EQ(given->dataset_validation, "e@v2");
}

TEST_F(PreprocessTrainTest, SpecErrorsNameTheStepAndLine) {
  struct Case {
    std::string data, want;
  } cases[] = {
      {"  preprocess: [normalize]\n", "unknown preprocess step 'normalize'; steps: clip, impute"},
      {"  preprocess: [{onehot: [c3]}, standardize]\n", "put onehot steps last"},
      {"  preprocess: [{impute: mode}]\n", "strategy is 'mode'; use mean, median or constant"},
      {"  preprocess: [{clip: {}}]\n", "needs 'min', 'max' or both"},
      {"  preprocess: [onehot]\n", "needs its columns"},
      {"  preprocess: [{standardize: {colums: [a]}}]\n", "unknown field 'colums'"},
      {"  nulls: impute\n", "nulls: impute needs an impute step"},
      {"  nulls: fill\n", "is 'fill'; use error, drop or impute"},
  };
  for (const Case& c : cases) {
    auto s = spec(wine_spec(c.data));
    ASSERT_FALSE(s.ok()) << c.data;
    EXPECT_NE(s.status().message().find(c.want), std::string::npos)
        << c.data << " -> " << s.status().message();
    EXPECT_NE(s.status().message().find(".yaml:"), std::string::npos) << s.status().message();
  }
  auto names = train(wine_spec("  class_names: [a, b]\n"), "names");
  ASSERT_FALSE(names.ok());
  EXPECT_NE(names.status().message().find("class_names has 2 names, but the model has 3 outputs"),
            std::string::npos)
      << names.status().message();
}

}  // namespace
}  // namespace dlsys::train
