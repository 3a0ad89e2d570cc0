// The `dlsys` command as a user runs it: exit codes, files written, JSON fields, error messages.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <png.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "api/client.h"
#include "api/services.h"
#include "core/file_util.h"
#include "tensor/npy.h"
#include "testing/free_port.h"
#include "testing/onnx_builder.h"

namespace fs = std::filesystem;

namespace dlsys {
namespace {

struct Ran {
  int code;
  std::string out;  // stdout and stderr
};

// Runs `cmd` through the shell: its stdout, and its exit code in `*code` (-1 when killed).
std::string run_shell(const std::string& cmd, int* code) {
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  int st = pclose(p);
  *code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

Ran sh(const std::string& args) {
  int code = 0;
  std::string out = run_shell(std::string(DLSYS_BIN) + " " + args + " 2>&1", &code);
  return {code, out};
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dlsys_cli_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    model_ = (dir_ / "mlp.onnx").string();
    std::ofstream(model_, std::ios::binary) << testing::tiny_mlp().bytes();
    float x[8] = {1, 2, 3, 4, -1, -2, -3, -4};
    ASSERT_TRUE(npy_write((dir_ / "x.npy").string(), Tensor::from_f32({2, 4}, x)).ok());
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
  std::string model_;
};

TEST_F(Cli, RunWritesOneNpyPerOutput) {
  Ran r = sh("run " + model_ + " --input x=" + (dir_ / "x.npy").string() + " --output-dir " +
             (dir_ / "out").string());
  ASSERT_EQ(r.code, 0) << r.out;
  auto y = npy_read((dir_ / "out" / "y.npy").string());
  ASSERT_TRUE(y.ok()) << y.status().message();
  EXPECT_EQ(y->shape(), (Shape{2, 3}));
}

TEST_F(Cli, RunErrorsAreClearAndNonZero) {
  std::string out = " --output-dir " + (dir_ / "out").string();
  Ran wrong_name = sh("run " + model_ + " --input nope=" + (dir_ / "x.npy").string() + out);
  EXPECT_NE(wrong_name.code, 0);
  EXPECT_NE(wrong_name.out.find("no input 'nope'"), std::string::npos) << wrong_name.out;
  float bad[3] = {1, 2, 3};
  ASSERT_TRUE(npy_write((dir_ / "bad.npy").string(), Tensor::from_f32({1, 3}, bad)).ok());
  Ran wrong_shape = sh("run " + model_ + " --input x=" + (dir_ / "bad.npy").string() + out);
  EXPECT_NE(wrong_shape.code, 0);
  EXPECT_NE(wrong_shape.out.find("expected shape [batch, 4], got [1, 3]"), std::string::npos)
      << wrong_shape.out;
  std::ofstream(dir_ / "junk.onnx") << "definitely not protobuf \x01\x02\x03";
  Ran junk =
      sh("run " + (dir_ / "junk.onnx").string() + " --input x=" + (dir_ / "x.npy").string() + out);
  EXPECT_NE(junk.code, 0);
  EXPECT_NE(junk.out.find("error:"), std::string::npos) << junk.out;
  Ran missing_npy = sh("run " + model_ + " --input x=" + (dir_ / "none.npy").string() + out);
  EXPECT_NE(missing_npy.code, 0);
  EXPECT_NE(missing_npy.out.find("none.npy"), std::string::npos) << missing_npy.out;
}

TEST_F(Cli, InspectJsonDescribesTheModel) {
  Ran r = sh("inspect --json " + model_);
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["inputs"][0]["name"], "x");
  EXPECT_EQ(j["inputs"][0]["shape"][0], "batch");
  EXPECT_EQ(j["parameters"], 4 * 8 + 8 + 8 * 3);
  EXPECT_EQ(j["ops"]["MatMul"], 2);
  // 2*4*8 + 8 (Add) + 8 (Relu) + 2*8*3 = 128 FLOPs per sample.
  EXPECT_DOUBLE_EQ(j["flops_per_sample"].get<double>(), 128.0);
}

// A model at an older opset is upgraded on import, and inspect says from which opset.
TEST_F(Cli, InspectSaysWhichOpsetAModelWasConvertedFrom) {
  testing::OnnxBuilder b(10);
  b.input("x", onnx::TensorProto::FLOAT, {-1, 4});
  b.output("y", onnx::TensorProto::FLOAT, {-1, 4});
  auto* clip = b.node("Clip", {"x"}, {"y"}, "clip");  // min/max attributes until opset 11
  testing::OnnxBuilder::attr_float(clip, "min", -1.f);
  testing::OnnxBuilder::attr_float(clip, "max", 1.f);
  std::string old = (dir_ / "clip10.onnx").string();
  std::ofstream(old, std::ios::binary) << b.bytes();
  Ran text = sh("inspect " + old);
  ASSERT_EQ(text.code, 0) << text.out;
  EXPECT_NE(text.out.find("opset 13 (converted from opset 10)"), std::string::npos) << text.out;
  Ran json = sh("inspect --json " + old);
  ASSERT_EQ(json.code, 0) << json.out;
  auto j = nlohmann::json::parse(json.out);
  EXPECT_EQ(j["opset"], 13);
  EXPECT_EQ(j["converted_from_opset"], 10);
  auto current = nlohmann::json::parse(sh("inspect --json " + model_).out);
  EXPECT_TRUE(current["converted_from_opset"].is_null());
}

// Ops inside a Loop's body are counted, and said to be there.
TEST_F(Cli, InspectCountsTheOpsInsideSubgraphs) {
  testing::OnnxBuilder body;
  body.input("i", onnx::TensorProto::INT64, {});
  body.input("c", onnx::TensorProto::BOOL, {});
  body.input("s", onnx::TensorProto::FLOAT, {4});
  body.output("c_out", onnx::TensorProto::BOOL, {});
  body.output("s_out", onnx::TensorProto::FLOAT, {4});
  body.node("Identity", {"c"}, {"c_out"});
  body.node("Add", {"s", "s"}, {"s_out"});
  testing::OnnxBuilder b(17);
  b.input("x", onnx::TensorProto::FLOAT, {4});
  b.output("y", onnx::TensorProto::FLOAT, {4});
  b.initializer_i64("M", {}, {3});
  auto* loop = b.node("Loop", {"M", "", "x"}, {"y"}, "doubling");
  testing::OnnxBuilder::attr_graph(loop, "body", body);
  std::string path = (dir_ / "loop.onnx").string();
  std::ofstream(path, std::ios::binary) << b.bytes();
  Ran text = sh("inspect " + path);
  ASSERT_EQ(text.code, 0) << text.out;
  EXPECT_NE(text.out.find("1 nodes, and 2 more inside If/Loop/Scan subgraphs"), std::string::npos)
      << text.out;
  Ran json = sh("inspect --json " + path);
  ASSERT_EQ(json.code, 0) << json.out;
  auto j = nlohmann::json::parse(json.out);
  EXPECT_EQ(j["ops"]["Loop"], 1);
  EXPECT_EQ(j["ops"]["Add"], 1);
  EXPECT_EQ(j["subgraph_nodes"], 2);
}

TEST_F(Cli, BenchJsonHasTheAgreedFields) {
  Ran r = sh("bench " + model_ + " --batch 4 --threads 1 --seconds 0.2 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  for (const char* k : {"median_ms", "p90_ms", "items_per_s", "batch", "threads"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j["batch"], 4);
  EXPECT_GT(j["items_per_s"].get<double>(), 0);
  EXPECT_LE(j["median_ms"].get<double>(), j["p90_ms"].get<double>());
}

// `serve` under `bench` leaves `dlsys bench MODEL` as it was; each says what is missing.
TEST_F(Cli, BenchServeIsASubcommandBesideTheModelArgument) {
  Ran r = sh("bench");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("bench needs MODEL.onnx"), std::string::npos) << r.out;
  r = sh("bench serve --url http://127.0.0.1:1 --model m --duration 0.1");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("cannot reach the dlsys server at http://127.0.0.1:1"), std::string::npos)
      << r.out;
  r = sh("bench serve --model m --scenario closed");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("closed"), std::string::npos) << r.out;
  r = sh("bench serve --help");
  EXPECT_NE(r.out.find("--p99-bound-ms"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("default 25 ms"), std::string::npos) << r.out;
}

TEST_F(Cli, InspectPlanShowsRewritesStepsAndMemory) {
  Ran r = sh("inspect --plan --json --batch 4 " + model_);
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  // tiny_mlp: MatMul + Add(b1) + Relu fuse into one FusedMatMul; the last MatMul stays.
  EXPECT_EQ(j["nodes_before"], 4);
  EXPECT_EQ(j["nodes_after"], 2);
  EXPECT_EQ(j["passes"]["MatMulBiasFusion"], 1);
  EXPECT_EQ(j["passes"]["ActivationFusion"], 1);
  ASSERT_EQ(j["steps"].size(), 2u);
  EXPECT_EQ(j["steps"][0]["op"], "FusedMatMul");
  EXPECT_EQ(j["steps"][0]["output_shape"], nlohmann::json({4, 8}));
  // Two intermediate values ([4,8] and the output [4,3]) are live together: no reuse possible.
  EXPECT_EQ(j["memory"]["values"], 2);
  EXPECT_LE(j["memory"]["arena_bytes"].get<int64_t>(),
            j["memory"]["sum_of_intermediates_bytes"].get<int64_t>() + 128);
}

TEST_F(Cli, JobsValidateChecksASpecAndPrintsWhatItRuns) {
  std::string good = (dir_ / "job.yaml").string(), bad = (dir_ / "bad.yaml").string();
  {
    // The example training spec beside the job, its data path pointed at shared/.
    std::ifstream in(std::string(DLSYS_SOURCE_DIR) + "/examples/digits/mlp.yaml");
    std::string text((std::istreambuf_iterator<char>(in)), {});
    text.replace(text.find("../../../shared"), 15, DLSYS_SHARED_DIR);
    std::ofstream(dir_ / "mlp.yaml") << text;
  }
  std::ofstream(good) << "kind: train\nspec: mlp.yaml\ndataset: digits@2\n"
                         "hyperparameters: {lr: 0.01, batch_size: 16}\n"
                         "resources: {threads: 2, memory: 1GiB}\nmax_run_time: 30m\n";
  std::ofstream(bad) << "kind: train\nspec: a.yaml\nresources: {threads: 0}\n";
  Ran r = sh("jobs validate " + good);
  ASSERT_EQ(r.code, 0) << r.out;
  // The training spec's path is relative to the job file.
  EXPECT_NE(r.out.find("a train job 'train' that trains " + (dir_ / "mlp.yaml").string() +
                       " on digits@2"),
            std::string::npos)
      << r.out;
  r = sh("jobs validate --json " + good);
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["resources"]["memory"], 1073741824);
  EXPECT_EQ(j["max_run_time"], 1800);
  r = sh("jobs validate " + bad);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("bad.yaml:3: 'resources.threads' must be a whole number from 1 to 1024"),
            std::string::npos)
      << r.out;
  // The training spec is read as the service will run it: with the job's hyperparameters.
  std::ofstream(bad) << "kind: train\nspec: mlp.yaml\nhyperparameters: {lrr: 0.1}\n";
  r = sh("jobs validate " + bad);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("'lrr' is not a spec setting"), std::string::npos) << r.out;
  std::ofstream(bad) << "kind: train\nspec: mlp.yaml\nhyperparameters: {epochs: many}\n";
  r = sh("jobs validate " + bad);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("'epochs' has the value 'many', which is not a whole number"),
            std::string::npos)
      << r.out;
}

TEST_F(Cli, ProfileReportsEveryStepAgainstTheMeasuredPeak) {
  Ran r = sh("profile " + model_ + " --batch 4 --threads 1 --runs 3 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["peak"]["f32_gflops"].get<double>(), 0);
  EXPECT_GT(j["peak"]["mem_gbps"].get<double>(), 0);
  ASSERT_EQ(j["steps"].size(), 2u);
  for (const auto& st : j["steps"]) {
    EXPECT_GE(st["ms"].get<double>(), 0);
    EXPECT_TRUE(st["bound"] == "compute" || st["bound"] == "memory");
  }
  EXPECT_EQ(j["ops"]["FusedMatMul"]["count"], 1);
}

TEST_F(Cli, QuantizeWritesAQdqModelAndReportsAccuracy) {
  std::string out = (dir_ / "mlp.int8.onnx").string(), x = (dir_ / "x.npy").string();
  // 64 seeded samples in [-4, 4], the range of x.npy: calibration set and, by default, the set
  // the fp32 and int8 models are compared on.
  std::string x64 = (dir_ / "x64.npy").string();
  {
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(-4, 4);
    std::vector<float> v(64 * 4);
    for (float& f : v) f = u(rng);
    ASSERT_TRUE(npy_write(x64, Tensor::from_f32({64, 4}, v.data())).ok());
  }
  Ran r = sh("quantize " + model_ + " --calibrate " + x64 + " -o " + out + " --json");
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["weights_quantized"], 2);
  EXPECT_EQ(j["calibration_samples"], 64);
  EXPECT_EQ(j["accuracy"]["samples"], 64);
  // int8 per-channel weights and activation ranges calibrated on these very samples keep the
  // argmax of tiny_mlp's 3 logits on every row here (64 of 64, outputs within 0.7% of their
  // scale). The floor 0.9 leaves room for a few rows whose two largest logits are within a
  // quantization step of each other; a wrong scale, zero point or rounding moves many more.
  EXPECT_GE(j["accuracy"]["top1_agreement"].get<double>(), 0.9) << r.out;
  EXPECT_LT(j["accuracy"]["max_rel_error"].get<double>(), 0.05) << r.out;
  Ran run = sh("run " + out + " --input x=" + x + " --output-dir " + (dir_ / "q").string());
  EXPECT_EQ(run.code, 0) << run.out;

  Ran no_data = sh("quantize " + model_ + " -o " + out);
  EXPECT_NE(no_data.code, 0);
  EXPECT_NE(no_data.out.find("--calibrate DATA.npy"), std::string::npos) << no_data.out;
  Ran bad_method = sh("quantize " + model_ + " --calibrate " + x + " --method kl -o " + out);
  EXPECT_NE(bad_method.code, 0);
  EXPECT_NE(bad_method.out.find("not one of minmax, percentile"), std::string::npos);
}

TEST_F(Cli, EveryCommandHasHelp) {
  for (const char* c : {"",
                        "run ",
                        "inspect ",
                        "bench ",
                        "bench serve ",
                        "profile ",
                        "quantize ",
                        "train ",
                        "server ",
                        "runs ",
                        "runs list ",
                        "runs show ",
                        "runs end ",
                        "runs compare ",
                        "models ",
                        "models list ",
                        "models register ",
                        "models versions ",
                        "models alias ",
                        "models get ",
                        "artifacts ",
                        "artifacts get ",
                        "artifacts put ",
                        "artifacts list ",
                        "tokens ",
                        "tokens create ",
                        "tokens list ",
                        "tokens revoke ",
                        "data ",
                        "data push ",
                        "data list ",
                        "data versions ",
                        "data show ",
                        "data diff ",
                        "data pull ",
                        "data tag ",
                        "data verify ",
                        "data gc ",
                        "deploy ",
                        "deploy create ",
                        "deploy update ",
                        "deploy list ",
                        "deploy show ",
                        "deploy promote ",
                        "deploy rollback ",
                        "deploy delete ",
                        "pipelines ",
                        "pipelines validate ",
                        "completion "}) {
    Ran r = sh(std::string(c) + "--help");
    EXPECT_EQ(r.code, 0) << c;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << r.out;
  }
}

}  // namespace
}  // namespace dlsys

namespace dlsys {
namespace {

// A file that is not an ONNX model is refused before anything is stored, and no error shows the
// server's object paths.
TEST_F(Cli, RegisteringSomethingThatIsNotAModelStoresNothing) {
  std::string dd = " --data-dir " + (dir_ / "home").string();
  std::string bad = (dir_ / "bad.onnx").string();
  std::ofstream(bad) << "not a model";
  Ran r = sh("models register m --file " + bad + dd);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find(bad + " cannot be registered"), std::string::npos) << r.out;
  EXPECT_EQ(sh("runs list --json" + dd).out.find("register m"), std::string::npos)
      << "a run was left behind";
  EXPECT_EQ(sh("models versions m" + dd).out.find("model.onnx"), std::string::npos)
      << "a version was left behind";
  // From a run's artifact, checked by the server: the message names the artifact.
  ASSERT_EQ(sh("models register good --file " + model_ + " --new-run" + dd).code, 0);
  ASSERT_EQ(sh("artifacts put 1 bad.onnx " + bad + dd).code, 0);
  Ran from_run = sh("models register x --run 1 --artifact bad.onnx" + dd);
  EXPECT_NE(from_run.code, 0);
  EXPECT_NE(from_run.out.find("artifact 'bad.onnx' of run 1 is not a loadable ONNX model: "
                              "'bad.onnx' is not an ONNX model"),
            std::string::npos)
      << from_run.out;
  EXPECT_EQ(from_run.out.find("objects/"), std::string::npos) << from_run.out;
}

// Mistyped subcommands and flags get the nearest real one, never one that does not exist.
TEST_F(Cli, TyposGetADidYouMean) {
  Ran sub = sh("deplyo list");
  EXPECT_NE(sub.code, 0);
  EXPECT_NE(sub.out.find("did you mean 'deploy' for 'deplyo'?"), std::string::npos) << sub.out;
  Ran nested = sh("models regster x --file y");
  EXPECT_NE(nested.code, 0);
  EXPECT_NE(nested.out.find("did you mean 'register' for 'regster'?"), std::string::npos)
      << nested.out;
  Ran flag = sh("runs list --limt 3");
  EXPECT_NE(flag.code, 0);
  EXPECT_NE(flag.out.find("did you mean '--limit' for '--limt'?"), std::string::npos) << flag.out;
  Ran far = sh("runs list --zzzzzzzz 3");
  EXPECT_NE(far.code, 0);
  EXPECT_EQ(far.out.find("did you mean"), std::string::npos) << far.out;
}

// The registry commands on a data directory (no server): register a file, alias it, look at
// runs, fetch the artifact back, tokens.
TEST_F(Cli, RegistryCommandsOnADataDirectory) {
  std::string dd = " --data-dir " + (dir_ / "home").string();
  // A file becomes the version's own artifact: no run is made.
  Ran own = sh("models register digits --file " + model_ + dd);
  ASSERT_EQ(own.code, 0) << own.out;
  EXPECT_NE(own.out.find("registered digits version 1 from " + model_ + " (no run;"),
            std::string::npos)
      << own.out;
  Ran none = sh("runs list --json" + dd);
  ASSERT_EQ(none.code, 0) << none.out;
  EXPECT_TRUE(nlohmann::json::parse(none.out)["runs"].empty()) << none.out;
  std::string own_back = (dir_ / "own.onnx").string();
  ASSERT_EQ(sh("models get digits@1 -o " + own_back + dd).code, 0);
  {
    std::ifstream x(model_, std::ios::binary), y(own_back, std::ios::binary);
    EXPECT_EQ(std::string(std::istreambuf_iterator<char>(x), {}),
              std::string(std::istreambuf_iterator<char>(y), {}));
  }
  EXPECT_NE(sh("models register digits --file " + model_ + " --new-run --run 1" + dd).code, 0);
  EXPECT_NE(sh("models register digits --new-run" + dd).code, 0);
  // Asked for, a run holds the file (versions 2 and 3 from runs 1 and 2).
  Ran reg = sh("models register digits --file " + model_ + " --new-run" + dd);
  ASSERT_EQ(reg.code, 0) << reg.out;
  EXPECT_NE(reg.out.find("registered digits version 2 from run 1"), std::string::npos) << reg.out;
  ASSERT_EQ(sh("models register digits --file " + model_ + " --new-run" + dd).code, 0);
  Ran al = sh("models alias digits production 1" + dd);
  ASSERT_EQ(al.code, 0) << al.out;
  al = sh("models alias digits production 2" + dd);
  EXPECT_NE(al.out.find("digits@production -> version 2 (was 1)"), std::string::npos) << al.out;
  Ran at = sh("models alias digits@2 production" + dd);
  EXPECT_NE(at.code, 0);
  EXPECT_NE(at.out.find("takes the model name, the alias and the version apart: `dlsys models "
                        "alias digits production 2`"),
            std::string::npos)
      << at.out;
  Ran vers = sh("models versions digits --json" + dd);
  ASSERT_EQ(vers.code, 0) << vers.out;
  auto j = nlohmann::json::parse(vers.out);
  ASSERT_EQ(j["versions"].size(), 3u);
  EXPECT_EQ(j["versions"][1]["aliases"][0], "production");
  EXPECT_TRUE(j["versions"][0]["run_id"].is_null());
  EXPECT_EQ(j["versions"][1]["run_id"], 1);
  Ran table = sh("models versions digits" + dd);
  std::istringstream lines(table.out);
  std::string line, run_of_1;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::string version, status, run;
    if (words >> version >> status >> run && version == "1") run_of_1 = run;
  }
  EXPECT_EQ(run_of_1, "-") << table.out;
  Ran list = sh("models list" + dd);
  EXPECT_NE(list.out.find("production=v2"), std::string::npos) << list.out;
  Ran runs = sh("runs list --experiment models" + dd);
  ASSERT_EQ(runs.code, 0) << runs.out;
  EXPECT_NE(runs.out.find("FINISHED"), std::string::npos) << runs.out;
  Ran show = sh("runs show 1" + dd);
  EXPECT_NE(show.out.find("model.onnx"), std::string::npos) << show.out;
  Ran cmp = sh("runs compare 1 2" + dd);
  ASSERT_EQ(cmp.code, 0) << cmp.out;
  // A run can be ended by hand (one a dead process left RUNNING), and the status is checked.
  Ran ended = sh("runs end 1 --status killed" + dd);
  ASSERT_EQ(ended.code, 0) << ended.out;
  EXPECT_NE(ended.out.find("run 1 ended: KILLED"), std::string::npos) << ended.out;
  EXPECT_NE(sh("runs show 1" + dd).out.find("KILLED"), std::string::npos);
  EXPECT_NE(sh("runs end 1 --status done" + dd).code, 0);
  // models get: the version behind an alias, byte for byte.
  std::string by_alias = (dir_ / "by-alias.onnx").string();
  Ran mget = sh("models get digits@production -o " + by_alias + dd);
  ASSERT_EQ(mget.code, 0) << mget.out;
  {
    std::ifstream x(model_, std::ios::binary), y(by_alias, std::ios::binary);
    EXPECT_EQ(std::string(std::istreambuf_iterator<char>(x), {}),
              std::string(std::istreambuf_iterator<char>(y), {}));
  }
  Ran mbad = sh("models get digits -o " + by_alias + dd);
  EXPECT_NE(mbad.code, 0);
  EXPECT_NE(mbad.out.find("NAME@ALIAS or NAME@VERSION"), std::string::npos) << mbad.out;
  std::string got = (dir_ / "got.onnx").string();
  ASSERT_EQ(sh("artifacts get 1 model.onnx -o " + got + dd).code, 0);
  std::ifstream a(model_, std::ios::binary), b(got, std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(a), {}),
            std::string(std::istreambuf_iterator<char>(b), {}));
  Ran tok = sh("tokens create --role viewer --name ci" + dd);
  ASSERT_EQ(tok.code, 0) << tok.out;
  EXPECT_EQ(tok.out.rfind("dls_", 0), 0u) << tok.out;
  Ran bad = sh("models versions nope" + dd);
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.out.find("model 'nope' is not registered"), std::string::npos) << bad.out;
  Ran role = sh("tokens create --role root" + dd);
  EXPECT_NE(role.out.find("admin, editor, viewer or inference"), std::string::npos) << role.out;
  std::string junk = (dir_ / "junk.onnx").string();
  std::ofstream(junk) << "not a model";
  Ran notonnx = sh("models register junk --file " + junk + dd);
  EXPECT_EQ(notonnx.code, 1);
  EXPECT_NE(notonnx.out.find("cannot be registered"), std::string::npos) << notonnx.out;
  EXPECT_EQ(sh("server --help").code, 0);
}

}  // namespace
}  // namespace dlsys

namespace dlsys {
namespace {

// `dlsys train` on the digits spec: JSON events, a run directory, an exported model that
// `dlsys run` executes with the trainer's validation accuracy, and the run in the tracker.
TEST_F(Cli, TrainDigitsExportsARunnableModelAndTracksTheRun) {
  // The example spec, with its data path pointed at the shared/ this build found.
  std::string spec = (dir_ / "mlp.yaml").string();
  {
    std::ifstream in(std::string(DLSYS_SOURCE_DIR) + "/examples/digits/mlp.yaml");
    std::string text((std::istreambuf_iterator<char>(in)), {});
    text.replace(text.find("../../../shared"), 15, DLSYS_SHARED_DIR);
    std::ofstream(spec) << text;
  }
  std::string out = (dir_ / "run").string();
  std::string home = (dir_ / "home").string();
  Ran r =
      sh("train " + spec + " --epochs 4 --json --threads 2 --out " + out + " --data-dir " + home);
  ASSERT_EQ(r.code, 0) << r.out;
  // Every line is a JSON event; the last one is "done".
  std::vector<nlohmann::json> events;
  size_t start = 0;
  while (start < r.out.size()) {
    size_t nl = r.out.find('\n', start);
    std::string line = r.out.substr(start, nl - start);
    if (!line.empty()) events.push_back(nlohmann::json::parse(line));
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  ASSERT_FALSE(events.empty());
  const auto& done = events.back();
  ASSERT_EQ(done["event"], "done") << r.out;
  EXPECT_EQ(done["epochs"], 4);
  double acc = done["metrics"]["val_accuracy"];
  EXPECT_GT(acc, 0.9);
  int evals = 0;
  for (auto& e : events) evals += e["event"] == "eval";
  EXPECT_EQ(evals, 4);
  // The exported model, run by `dlsys run` on the validation split, has the same accuracy.
  Ran run = sh("run " + out + "/model.onnx --input input=" + out + "/val_x.npy --output-dir " +
               out + "/pred");
  ASSERT_EQ(run.code, 0) << run.out;
  auto logits = npy_read(out + "/pred/logits.npy");
  auto y = npy_read(out + "/val_y.npy");
  ASSERT_TRUE(logits.ok() && y.ok());
  int64_t n = y->numel(), correct = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* row = logits->data_as<float>() + i * 10;
    correct += std::max_element(row, row + 10) - row == y->data_as<int64_t>()[i];
  }
  EXPECT_NEAR(static_cast<double>(correct) / n, acc, 1.0 / n);
  EXPECT_TRUE(fs::exists(out + "/metrics.jsonl"));
  // The tracker has the run, its metrics and the model.
  Ran show = sh("runs show 1 --json --data-dir " + home);
  ASSERT_EQ(show.code, 0) << show.out;
  auto run_json = nlohmann::json::parse(show.out);
  EXPECT_EQ(run_json["status"], "FINISHED");
  EXPECT_NEAR(run_json["metrics"]["val_accuracy"]["value"].get<double>(), acc, 1e-9);
  EXPECT_EQ(run_json["artifacts"][0]["path"], "model.onnx");
}

TEST_F(Cli, TrainSpecErrorsNameFieldAndLine) {
  auto spec = [&](const std::string& text) {
    std::string p = (dir_ / "bad.yaml").string();
    std::ofstream(p) << text;
    return sh("train " + p + " --out " + (dir_ / "r").string());
  };
  std::string head = "data:\n  train: x.csv\nmodel:\n  input: [4]\n  layers:\n";
  Ran r = spec(head + "    - linear: {out: 3}\ntrain:\n  epochz: 3\n");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("bad.yaml:8: unknown field 'epochz' in train"), std::string::npos) << r.out;
  r = spec(head + "    - conv2d: {out: 3}\n");
  EXPECT_NE(r.out.find("bad.yaml:6: conv2d needs 'out' and 'kernel'"), std::string::npos) << r.out;
  r = spec(head + "    - residual: {layers: [linear: {out: 7}]}\n");
  EXPECT_NE(r.out.find("bad.yaml:6: residual: the inner layers change the shape [4] to [7]; a "
                       "residual block must keep it"),
            std::string::npos)
      << r.out;
  r = spec(head + "    - linear: {out: three}\n");
  EXPECT_NE(r.out.find("'out' has the value 'three', which is not a whole number"),
            std::string::npos)
      << r.out;
  r = spec(head + "    - linear: {out: 3}\ntrain:\n  optimizer: {name: lamb}\n");
  EXPECT_NE(r.out.find("unknown optimizer 'lamb'"), std::string::npos) << r.out;
  r = spec("data: [unclosed\n");
  EXPECT_NE(r.out.find("YAML syntax error"), std::string::npos) << r.out;
  r = spec(head + "    - linear: {out: 3}\n");  // x.csv does not exist
  EXPECT_NE(r.out.find("x.csv"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace dlsys

namespace dlsys {
namespace {

// `dlsys data` on a data directory, then `dlsys train` from the stored version: the run records
// the dataset versions it read as lineage.
TEST_F(Cli, DataCommandsAndTrainingFromAVersion) {
  std::string dd = " --data-dir " + (dir_ / "home").string();
  std::string csv = std::string(DLSYS_SHARED_DIR) + "/data/digits/digits.csv";
  Ran push = sh("data push " + csv + " --name digits --split 0.8,0.2 -m first" + dd);
  ASSERT_EQ(push.code, 0) << push.out;
  EXPECT_NE(push.out.find("digits@v1"), std::string::npos) << push.out;
  EXPECT_NE(push.out.find("1797 rows"), std::string::npos) << push.out;
  // The same file again makes no version and says so.
  Ran again = sh("data push " + csv + " --name digits --split 0.8,0.2 -m again" + dd);
  ASSERT_EQ(again.code, 0) << again.out;
  EXPECT_NE(again.out.find("data unchanged: dataset digits is already at version 1"),
            std::string::npos)
      << again.out;
  Ran again_json = sh("data push " + csv + " --name digits --split 0.8,0.2 --json" + dd);
  ASSERT_EQ(again_json.code, 0) << again_json.out;
  std::string last = again_json.out.substr(0, again_json.out.find_last_not_of('\n') + 1);
  auto done_push = nlohmann::json::parse(last.substr(last.rfind('\n') + 1));
  EXPECT_TRUE(done_push["unchanged"].get<bool>()) << again_json.out;
  EXPECT_EQ(done_push["version"], "digits@v1");
  Ran show = sh("data show digits --json" + dd);
  ASSERT_EQ(show.code, 0) << show.out;
  auto m = nlohmann::json::parse(show.out);
  EXPECT_EQ(m["rows"], 1797);
  EXPECT_EQ(m["stats"]["c64"]["max"], 9);
  EXPECT_EQ(sh("data tag digits@v1 prod" + dd).code, 0);
  Ran pull = sh("data pull digits@prod:validation -o " + (dir_ / "val.csv").string() + dd);
  ASSERT_EQ(pull.code, 0) << pull.out;
  std::ifstream in(dir_ / "val.csv");
  int64_t lines = std::count(std::istreambuf_iterator<char>(in), {}, '\n');
  EXPECT_EQ(lines - 1, m["split"]["rows"]["validation"].get<int64_t>());
  EXPECT_EQ(sh("data verify digits@v1" + dd).code, 0);
  // Columns are listed in natural order (c2 before c10), in show and in diff.
  Ran shown = sh("data show digits" + dd);
  EXPECT_LT(shown.out.find("  c2 "), shown.out.find("  c10 ")) << shown.out;
  Ran diffed = sh("data diff digits@v1 digits@prod" + dd);
  ASSERT_EQ(diffed.code, 0) << diffed.out;
  EXPECT_LT(diffed.out.find("    c2 "), diffed.out.find("    c10 ")) << diffed.out;
  EXPECT_NE(diffed.out.find("    c10 "), std::string::npos) << diffed.out;
  Ran missing = sh("data show digits@v4" + dd);
  EXPECT_NE(missing.code, 0);
  EXPECT_NE(missing.out.find("digits has v1..v1"), std::string::npos) << missing.out;

  std::string spec = (dir_ / "ds.yaml").string();
  {
    std::ifstream src(std::string(DLSYS_SOURCE_DIR) + "/examples/digits/mlp-dataset.yaml");
    std::string text((std::istreambuf_iterator<char>(src)), {});
    text.replace(text.find("digits@latest"), 13, "digits@prod");
    std::ofstream(spec) << text;
  }
  Ran tr =
      sh("train " + spec + " --epochs 3 --json --threads 2 --out " + (dir_ / "run").string() + dd);
  ASSERT_EQ(tr.code, 0) << tr.out;
  auto done = nlohmann::json::parse(tr.out.substr(tr.out.rfind("{\"data\"")));
  EXPECT_EQ(done["data"]["dataset"], "digits@v1:train");
  EXPECT_GT(done["metrics"]["val_accuracy"].get<double>(), 0.85);
  // Lineage: digits@v1 -> run 1.
  api::ServicesOptions so;
  so.data_dir = (dir_ / "home").string();
  auto services = api::Services::open(so);
  ASSERT_TRUE(services.ok());
  auto lin = (*services)->store().lineage().graph("dataset_version", "digits@v1", 2);
  ASSERT_TRUE(lin.ok());
  bool has_run = false;
  for (const auto& [n, direction] : lin->nodes) has_run = has_run || n.kind == "run";
  EXPECT_TRUE(has_run) << nlohmann::json(*lin).dump();

  // A model with fewer outputs than the dataset has classes is refused before the first step,
  // from the version's statistics, naming the label column, the value and the output size.
  {
    std::ifstream src(spec);
    std::string text((std::istreambuf_iterator<char>(src)), {});
    text.replace(text.find("out: 10"), 7, "out: 5");
    std::ofstream(spec) << text;
  }
  Ran few = sh("train " + spec + " --epochs 1 --threads 2 --out " + (dir_ / "few").string() + dd);
  EXPECT_NE(few.code, 0);
  EXPECT_NE(few.out.find("label column 'c64' holds 9 (labels range 0..9), but the model has 5 "
                         "outputs"),
            std::string::npos)
      << few.out;
  EXPECT_EQ(few.out.find("step 1"), std::string::npos) << "a step ran: " << few.out;
}

// A newcomer's path on the shipped wine data with gaps in it: the push says where the nulls
// are, a spec that imputes and standardizes trains from the version, and the exported model
// takes raw rows from a CSV or JSON file and prints classes by name.
TEST_F(Cli, NullsAtPushPreprocessingInTheModelAndPredictionsFromCsv) {
  std::string dd = " --data-dir " + (dir_ / "home").string();
  std::string csv = (dir_ / "wine.csv").string();
  {
    std::ifstream in(std::string(DLSYS_SHARED_DIR) + "/data/wine/wine_data.csv");
    std::ofstream out(csv);
    std::string line;
    for (int n = 0; std::getline(in, line); ++n) {
      if (n == 4 || n == 40) line = line.substr(line.find(','));  // c0 missing
      out << line << "\n";
    }
  }
  Ran push = sh("data push " + csv + " --name wine --split 0.8,0.2" + dd);
  ASSERT_EQ(push.code, 0) << push.out;
  EXPECT_NE(push.out.find("nulls: c0 2 (training refuses rows with nulls unless its spec sets "
                          "`data.nulls: drop`"),
            std::string::npos)
      << push.out;
  std::string spec = (dir_ / "wine.yaml").string();
  std::ofstream(spec) << R"(name: wine
data:
  dataset: wine@latest
  label: c13
  preprocess: [{impute: median}, standardize]
  class_names: [barolo, grignolino, barbera]
model:
  input: [13]
  layers: [{linear: {out: 16}}, relu, {linear: {out: 3}}]
train:
  epochs: 20
  batch_size: 16
  optimizer: {name: adam, lr: 0.01}
)";
  std::string run = (dir_ / "wine-run").string();
  Ran tr = sh("train " + spec + " --threads 2 --out " + run + dd);
  ASSERT_EQ(tr.code, 0) << tr.out;
  // Three raw rows (one with its gap) and the label column, which the model ignores.
  std::ofstream(dir_ / "rows.csv")
      << "c0,c1,c2,c3,c4,c5,c6,c7,c8,c9,c10,c11,c12,c13\n"
         "14.23,1.71,2.43,15.6,127,2.8,3.06,0.28,2.29,5.64,1.04,3.92,1065,0\n"
         ",1.78,2.14,11.2,100,2.65,2.76,0.26,1.28,4.38,1.05,3.4,1050,0\n"
         "12.37,.94,1.36,10.6,88,1.98,.57,.28,.42,1.95,1.05,1.82,520,1\n";
  Ran table = sh("run " + run + "/model.onnx --input " + (dir_ / "rows.csv").string() + " --table");
  ASSERT_EQ(table.code, 0) << table.out;
  EXPECT_NE(table.out.find("row  class"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("0    barolo"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("2    grignolino"), std::string::npos) << table.out;
  std::ofstream(dir_ / "rows.json")
      << R"([{"c0": 14.23, "c1": 1.71, "c2": 2.43, "c3": 15.6, "c4": 127, "c5": 2.8, "c6": 3.06,
              "c7": 0.28, "c8": 2.29, "c9": 5.64, "c10": 1.04, "c11": 3.92, "c12": 1065}])";
  Ran js = sh("run " + run + "/model.onnx --input " + (dir_ / "rows.json").string() + " --json");
  ASSERT_EQ(js.code, 0) << js.out;
  auto j = nlohmann::json::parse(js.out);
  EXPECT_EQ(j["predictions"][0]["class"], "barolo") << js.out;
  EXPECT_NEAR(j["predictions"][0]["probabilities"][0].get<double>() +
                  j["predictions"][0]["probabilities"][1].get<double>() +
                  j["predictions"][0]["probabilities"][2].get<double>(),
              1.0, 1e-9);
  std::ofstream(dir_ / "short.json") << R"([{"c0": 14.23}])";
  Ran bad = sh("run " + run + "/model.onnx --input " + (dir_ / "short.json").string() + " --json");
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.out.find("row 0 has no column 'c1', a feature of the model"), std::string::npos)
      << bad.out;
}

// The colors data in `dir`: colors.csv, 300 rows whose class is the color (size is noise: a
// model can only learn it through the onehot block), and colors.yaml, a spec training on it from
// `source` ("dataset: colors@latest" or "train: PATH"). Returns the spec's path.
std::string write_colors(const fs::path& dir, const std::string& source) {
  const char* colors[] = {"red", "green", "blue"};
  std::string csv = "size,color,label\n";
  for (int i = 0; i < 300; ++i)
    csv += fmt::format("{},{},{}\n", (i * 7) % 10, colors[i % 3], i % 3);
  std::ofstream(dir / "colors.csv") << csv;
  std::string spec = (dir / "colors.yaml").string();
  std::ofstream(spec) << "name: colors\ndata:\n  " + source + R"(
  preprocess: [standardize, {onehot: [color]}]
  class_names: [warm, mid, cold]
model:
  input: [4]
  layers: [{linear: {out: 3}}]
train:
  epochs: 20
  batch_size: 16
  optimizer: {name: adam, lr: 0.05}
)";
  return spec;
}

TEST_F(Cli, StringCategoriesFromPushToPredictionsByName) {
  std::string dd = " --data-dir " + (dir_ / "home").string();
  std::string spec = write_colors(dir_, "dataset: colors@latest");
  Ran push = sh("data push " + (dir_ / "colors.csv").string() + " --name colors" + dd);
  ASSERT_EQ(push.code, 0) << push.out;
  std::string run = (dir_ / "colors-run").string();
  Ran tr = sh("train " + spec + " --out " + run + dd);
  ASSERT_EQ(tr.code, 0) << tr.out;
  // New rows name their color; purple was never seen (all zeros in the onehot block).
  std::ofstream(dir_ / "new.csv") << "color,size\nblue,3\nred,9\ngreen,1\npurple,4\n";
  Ran table = sh("run " + run + "/model.onnx --input " + (dir_ / "new.csv").string() + " --table");
  ASSERT_EQ(table.code, 0) << table.out;
  EXPECT_NE(table.out.find("0    cold"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("1    warm"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("2    mid"), std::string::npos) << table.out;
  std::ofstream(dir_ / "new.json")
      << R"([{"size": 2, "color": "green"}, {"size": 2, "color": null}])";
  Ran js = sh("run " + run + "/model.onnx --input " + (dir_ / "new.json").string() + " --json");
  ASSERT_EQ(js.code, 0) << js.out;
  auto j = nlohmann::json::parse(js.out);
  EXPECT_EQ(j["predictions"][0]["class"], "mid") << js.out;
  EXPECT_GT(j["predictions"][0]["probability"].get<double>(), 0.9) << js.out;
  // A null color, like an unseen one, matches no category: the model cannot tell.
  EXPECT_LT(j["predictions"][1]["probability"].get<double>(), 0.9) << js.out;
}

}  // namespace
}  // namespace dlsys

namespace dlsys {
namespace {

// Runs dlsys with `env` ("NAME=VALUE ...") before it; stdout and stderr apart.
struct RanApart {
  int code;
  std::string out, err;
};

RanApart sh_apart(const std::string& env, const std::string& args, const fs::path& dir) {
  fs::path err_file = dir / "stderr.txt";
  std::string cmd = "env -u DLSYS_SERVER " + env + " " + std::string(DLSYS_BIN) + " " + args +
                    " 2>" + err_file.string();
  int code = 0;
  std::string out = run_shell(cmd, &code);
  std::ifstream in(err_file);
  std::string err((std::istreambuf_iterator<char>(in)), {});
  return {code, out, err};
}

// A `dlsys server` on a free loopback port (or `port`), stopped (SIGTERM) by the destructor.
class Server {
 public:
  explicit Server(const std::string& data_dir, bool auth = false, int port = 0) {
    port_ = port > 0 ? port : testing::free_loopback_port();
    int fds[2];
    if (pipe(fds) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], STDOUT_FILENO);
      close(fds[0]);
      close(fds[1]);
      std::string p = std::to_string(port_);
      if (auth)
        execl(DLSYS_BIN, DLSYS_BIN, "server", "--data-dir", data_dir.c_str(), "--port", p.c_str(),
              "--access-log", "off", "--auth", static_cast<char*>(nullptr));
      else
        execl(DLSYS_BIN, DLSYS_BIN, "server", "--data-dir", data_dir.c_str(), "--port", p.c_str(),
              "--access-log", "off", static_cast<char*>(nullptr));
      _exit(127);
    }
    close(fds[1]);
    std::string out;
    char b[256];
    ssize_t n;
    while (out.find('\n') == std::string::npos && (n = read(fds[0], b, sizeof b)) > 0)
      out.append(b, static_cast<size_t>(n));
    fd_ = fds[0];  // kept open: a write to a closed pipe would kill the server (SIGPIPE)
    up_ = out.rfind("dlsys server on", 0) == 0;
  }
  ~Server() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int st;
      waitpid(pid_, &st, 0);
      close(fd_);
    }
  }
  bool up() const { return up_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  // Ends the server as a crash would (SIGKILL): what it started is left running.
  void crash() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    int st;
    waitpid(pid_, &st, 0);
    close(fd_);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
  int fd_ = -1, port_ = 0;
  bool up_ = false;
};

// A file's bytes ("" when it cannot be read).
std::string read_bytes(const fs::path& path) {
  auto r = read_file(path.string());
  return r.ok() ? *r : std::string();
}

// The example dataset spec with its dataset ref replaced.
std::string dataset_spec(const fs::path& dir, const std::string& ref) {
  std::string spec = (dir / "ds.yaml").string();
  std::ifstream src(std::string(DLSYS_SOURCE_DIR) + "/examples/digits/mlp-dataset.yaml");
  std::string text((std::istreambuf_iterator<char>(src)), {});
  text.replace(text.find("dataset: digits@latest"), 22, "dataset: " + ref);
  std::ofstream(spec) << text;
  return spec;
}

// The training service through the CLI and a real `dlsys server`: a train job submitted with
// --wait trains (its run tracked in the server), a failing command job is retried and its log
// read, a sleeping one is cancelled, and a job queued in the data directory while no server ran
// is run by the next server on it.
TEST_F(Cli, JobsSubmitListShowLogsAndCancelOnAServer) {
  const std::string data = (dir_ / "data").string();
  {
    std::ifstream in(std::string(DLSYS_SOURCE_DIR) + "/examples/digits/mlp.yaml");
    std::string text((std::istreambuf_iterator<char>(in)), {});
    text.replace(text.find("../../../shared"), 15, DLSYS_SHARED_DIR);
    std::ofstream(dir_ / "mlp.yaml") << text;
  }
  std::ofstream(dir_ / "train.yaml") << "kind: train\nname: digits-job\nspec: mlp.yaml\n"
                                        "hyperparameters: {epochs: 2, lr: 0.002}\n";
  std::ofstream(dir_ / "flaky.yaml")
      << "kind: command\nname: flaky\nmax_retries: 1\n"
         "command: [sh, -c, 'echo attempt $DLSYS_ATTEMPT; exit 4']\n";
  std::ofstream(dir_ / "sleep.yaml") << "kind: command\nname: sleeper\ncommand: [sleep, '60']\n";
  // Queued in the data directory: no server runs yet.
  std::ofstream(dir_ / "early.yaml") << "kind: command\nname: early\n"
                                        "command: [sh, -c, 'echo ran in $(pwd)']\n";
  Ran r = sh("jobs submit " + (dir_ / "early.yaml").string() + " --data-dir " + data);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("a `dlsys server --data-dir " + data + "` runs it"), std::string::npos)
      << r.out;

  Server server(data);
  ASSERT_TRUE(server.up());
  const std::string at = " --server " + server.url();
  r = sh("jobs submit --wait " + (dir_ / "train.yaml").string() + at);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"event\":\"done\""), std::string::npos) << r.out;
  r = sh("jobs submit --wait " + (dir_ / "flaky.yaml").string() + at);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("attempt 1\nattempt 2\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("FAILED: exit code 4"), std::string::npos) << r.out;
  r = sh("jobs submit --json " + (dir_ / "sleep.yaml").string() + at);
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string sleeper = std::to_string(nlohmann::json::parse(r.out)["id"].get<int64_t>());
  r = sh("jobs cancel " + sleeper + at);
  ASSERT_EQ(r.code, 0) << r.out;
  r = sh("jobs list --json" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  std::map<std::string, nlohmann::json> by_name;
  for (const auto& j : nlohmann::json::parse(r.out)) by_name[j["name"]] = j;
  ASSERT_EQ(by_name.size(), 4u) << r.out;
  EXPECT_EQ(by_name["digits-job"]["state"], "SUCCEEDED");
  // The server that ran it, by host and port (servers sharing a database tell jobs apart so).
  const std::string port = server.url().substr(server.url().rfind(':'));
  const std::string runner = by_name["digits-job"]["runner"];
  EXPECT_EQ(runner.substr(runner.size() - std::min(runner.size(), port.size())), port) << runner;
  EXPECT_EQ(by_name["flaky"]["attempts"], 2);
  EXPECT_TRUE(by_name["sleeper"]["state"] == "CANCELLED" ||
              by_name["sleeper"]["cancel_requested"] == true)
      << by_name["sleeper"];
  // The early job ran once the server started, in the job file's folder.
  r = sh("jobs logs " + std::to_string(by_name["early"]["id"].get<int64_t>()) + " -f" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, "ran in " + dir_.string() + "\n");
  r = sh("jobs show " + std::to_string(by_name["flaky"]["id"].get<int64_t>()) + at);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("FAILED command job"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("reason: exit code 4"), std::string::npos) << r.out;
  // The train job's run is tracked in the server, with the job's hyperparameters.
  r = sh("runs list --json" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"name\": \"digits-job\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"lr\": \"0.002\""), std::string::npos) << r.out;
  // What the jobs used, by owner (all were submitted without a token: "local").
  r = sh("jobs usage --json" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  auto usage = nlohmann::json::parse(r.out);
  ASSERT_EQ(usage["usage"].size(), 1u) << r.out;
  EXPECT_EQ(usage["usage"][0]["key"], "local");
  EXPECT_EQ(usage["usage"][0]["jobs"], 4);
  EXPECT_GT(usage["usage"][0]["core_seconds"].get<double>(), 0);
  r = sh("jobs usage --by run" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("CORE-HOURS"), std::string::npos) << r.out;
  r = sh("jobs show 999" + at);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("999"), std::string::npos) << r.out;
}

// `dlsys pipelines validate`: the shipped example's steps in run order (and as JSON), and a bad
// spec refused with its file, line and the cycle spelled out.
TEST_F(Cli, PipelinesValidatePrintsTheRunOrderAndRefusesACycle) {
  const std::string example = std::string(DLSYS_SOURCE_DIR) + "/examples/pipelines/retrain.yaml";
  Ran r = sh("pipelines validate " + example);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("pipeline 'retrain', 8 steps"), std::string::npos) << r.out;
  EXPECT_LT(r.out.find("train "), r.out.find("evaluate ")) << r.out;
  EXPECT_NE(r.out.find("after better, register"), std::string::npos) << r.out;
  r = sh("pipelines validate --json " + example);
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.out;
  ASSERT_EQ(j["steps"].size(), 8u);
  EXPECT_EQ(j["steps"][7]["name"], "promote");
  std::ofstream(dir_ / "cycle.yaml")
      << "name: c\nsteps:\n  - {name: a, kind: notify, with: {url: u}, needs: [b]}\n"
         "  - {name: b, kind: notify, with: {url: u}, needs: [a]}\n";
  r = sh("pipelines validate " + (dir_ / "cycle.yaml").string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(
      r.out.find("cycle.yaml:3: steps: the steps depend on each other in a cycle: a -> b -> a"),
      std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("docs/pipelines.md"), std::string::npos) << r.out;
  r = sh("pipelines validate " + (dir_ / "missing.yaml").string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("missing.yaml"), std::string::npos) << r.out;
}

// The retrain pipeline end to end through the CLI and a real `dlsys server`, started by its
// dataset trigger: a first small digits version puts its model in production (nothing to compare
// with); the whole data, pushed as the next version, trains a better model, evaluates both on the
// same rows, passes the gate, canaries the new version at 10% and promotes it; a run by hand on
// the same version reuses every cached step and stops at the gate. A pipeline with a data.push
// step pushes a file. Then a run whose server is killed (SIGKILL) mid-step is finished by the
// next server without its running job starting again.
TEST_F(Cli, PipelinesRunRetrainOnAServerEndToEnd) {
  const std::string data = (dir_ / "data").string();
  {
    std::ifstream in(std::string(DLSYS_SOURCE_DIR) + "/examples/pipelines/retrain.yaml");
    std::string text((std::istreambuf_iterator<char>(in)), {});
    const std::string spec = "examples/digits/mlp-dataset.yaml";
    text.replace(text.find(spec), spec.size(), std::string(DLSYS_SOURCE_DIR) + "/" + spec);
    std::ofstream(dir_ / "retrain.yaml") << text;
  }
  const std::string digits = std::string(DLSYS_SHARED_DIR) + "/data/digits/digits.csv";
  {
    std::ifstream in(digits);
    std::ofstream out(dir_ / "small.csv");
    std::string line;
    for (int i = 0; i < 400 && std::getline(in, line); ++i) out << line << "\n";
  }
  Server server(data);
  ASSERT_TRUE(server.up());
  const std::string at = " --server " + server.url();
  Ran r = sh("pipelines create " + (dir_ / "retrain.yaml").string() + at);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("pipeline 'retrain' version 1: 8 steps"), std::string::npos) << r.out;
  // Waits for run `n` of retrain to exist, then follows it to its end; its JSON.
  auto triggered = [&](int n) {
    for (auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
         std::chrono::steady_clock::now() < end;) {
      Ran runs = sh("pipelines runs retrain --json" + at);
      auto list = nlohmann::json::parse(runs.out, nullptr, false);
      if (list.is_array() && static_cast<int>(list.size()) >= n) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    Ran w = sh("pipelines show " + std::to_string(n) + " --wait --json" + at);
    EXPECT_EQ(w.code, 0) << w.out;
    return nlohmann::json::parse(w.out.substr(w.out.find("\n{") + 1), nullptr, false);
  };
  r = sh("data push " + (dir_ / "small.csv").string() + " --name digits --split 0.8,0.2" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  auto run1 = triggered(1);
  ASSERT_TRUE(run1.is_object());
  EXPECT_EQ(run1["state"], "SUCCEEDED") << run1.dump();
  EXPECT_EQ(run1["trigger"], "dataset");
  EXPECT_EQ(run1["params"]["data"], "digits@v1");
  std::map<std::string, nlohmann::json> st;
  for (const auto& s : run1["steps"]) st[s["step"]] = s;
  EXPECT_EQ(st["canary"]["outputs"]["created"], true) << "nothing to canary against: deployed";

  // The whole data lands: a better model, canaried and promoted.
  r = sh("data push " + digits + " --name digits --split 0.8,0.2" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  auto run2 = triggered(2);
  ASSERT_TRUE(run2.is_object());
  st.clear();
  for (const auto& s : run2["steps"]) st[s["step"]] = s;
  EXPECT_EQ(run2["state"], "SUCCEEDED");
  EXPECT_EQ(run2["params"]["data"], "digits@v2");
  EXPECT_EQ(st["register"]["outputs"]["model"], "digits@2");
  EXPECT_EQ(st["evaluate"]["outputs"]["baseline_model"], "digits@1");
  const double acc = st["evaluate"]["outputs"]["metrics.accuracy"];
  const double base = st["evaluate"]["outputs"]["baseline.accuracy"];
  EXPECT_GE(acc, base + 0.005) << "the gate passed: the new model is better on the same rows";
  // The trainer's own validation accuracy is the evaluation's on the same split.
  EXPECT_NEAR(st["train"]["outputs"]["metrics.val_accuracy"].get<double>(), acc, 1e-9);
  EXPECT_EQ(st["better"]["outputs"]["passed"], true);
  EXPECT_EQ(st["canary"]["outputs"]["weight"], 10);
  EXPECT_EQ(st["promote"]["outputs"]["promoted"], true);
  r = sh("models list --json" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"production\": 2"), std::string::npos) << r.out;
  r = sh("deploy list --json" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  auto deps = nlohmann::json::parse(r.out, nullptr, false).value("deployments", nlohmann::json());
  ASSERT_TRUE(deps.is_array() && deps.size() == 1u) << r.out;
  EXPECT_EQ(deps[0]["ref"], "production");
  EXPECT_FALSE(deps[0]["config"].contains("canary")) << "promoted: no canary left";
  // The pipeline run in the lineage graph: the version it read, what it made.
  {
    auto client = api::connect_http(server.url(), "");
    ASSERT_TRUE(client.ok());
    auto lin = (*client)->call("GET", "/api/v1/lineage/pipeline_run/2?depth=1");
    ASSERT_TRUE(lin.ok()) << lin.status().to_string();
    std::set<std::string> edges;
    for (const auto& e : (*lin)["edges"])
      edges.insert(e["src"]["kind"].get<std::string>() + ":" + e["src"]["id"].get<std::string>() +
                   " -" + e["relation"].get<std::string>() + "-> " +
                   e["dst"]["kind"].get<std::string>() + ":" + e["dst"]["id"].get<std::string>());
    EXPECT_TRUE(edges.count("dataset_version:digits@v2 -input-> pipeline_run:2")) << lin->dump();
    EXPECT_TRUE(edges.count("pipeline_run:2 -produced-> model_version:digits/2")) << lin->dump();
    EXPECT_TRUE(edges.count("pipeline_run:2 -produced-> run:" +
                            std::to_string(st["train"]["outputs"]["run"].get<int64_t>())))
        << lin->dump();
  }
  // A predict step: the production model over the new version, as a dataset version.
  std::ofstream(dir_ / "score.yaml")
      << "name: score\nsteps:\n"
         "  - {name: p, kind: predict, with: {model: digits@production, dataset: digits@v2, "
         "output: digits-scored}}\n";
  r = sh("pipelines create " + (dir_ / "score.yaml").string() + at);
  ASSERT_EQ(r.code, 0) << r.out;
  r = sh("pipelines run score --wait" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("p: dataset=digits-scored@v1"), std::string::npos) << r.out;
  r = sh("data versions digits-scored" + at);
  EXPECT_NE(r.out.find("1797"), std::string::npos) << r.out;

  // By hand, on the same version: every step up to the evaluation is a cache hit; the gate
  // stops the deployment.
  r = sh("pipelines run retrain --wait --json -p data=digits@v2" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  auto run3 = nlohmann::json::parse(r.out.substr(r.out.find("\n{") + 1), nullptr, false);
  ASSERT_TRUE(run3.is_object()) << r.out;
  st.clear();
  for (const auto& s : run3["steps"]) st[s["step"]] = s;
  for (const char* s : {"validate", "train", "register"})
    EXPECT_TRUE(st[s]["cached"].get<bool>()) << s << ": " << st[s].dump();
  EXPECT_FALSE(st["evaluate"]["cached"].get<bool>()) << "production moved: another key";
  EXPECT_EQ(st["better"]["outputs"]["passed"], false);
  EXPECT_EQ(st["canary"]["state"], "SKIPPED");

  r = sh("pipelines runs retrain" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("dataset"), std::string::npos) << r.out;
  r = sh("pipelines logs 2" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("== train: SUCCEEDED"), std::string::npos) << r.out;
  r = sh("pipelines show 2" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("pipeline run 2 of 'retrain' (version 1): SUCCEEDED"), std::string::npos)
      << r.out;
  r = sh("pipelines show retrain" + at);
  EXPECT_NE(r.out.find("trigger dataset: digits -> params.data"), std::string::npos) << r.out;
  r = sh("pipelines run nope" + at);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("pipeline 'nope' does not exist"), std::string::npos) << r.out;
  r = sh("pipelines run retrain -p epoch=3" + at);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("has no parameter 'epoch' (its parameters: data, epochs, min_gain, model)"),
            std::string::npos)
      << r.out;

  // A data.push step: a file into a dataset version.
  std::ofstream(dir_ / "ingest.yaml")
      << "name: ingest\nparams: {file: x}\nsteps:\n"
         "  - {name: push, kind: data.push, with: {file: '${params.file}', name: wine}}\n"
         "  - {name: check, kind: data.validate, with: {dataset: "
         "'${steps.push.outputs.dataset}'}}\n";
  r = sh("pipelines create " + (dir_ / "ingest.yaml").string() + at);
  ASSERT_EQ(r.code, 0) << r.out;
  r = sh("pipelines run ingest --wait -p file=" + std::string(DLSYS_SHARED_DIR) +
         "/data/wine/wine_data.csv" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("push: dataset=wine@v1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("ok=true"), std::string::npos) << r.out;

  // Cancel and retry through the CLI: a step that waits for a file is cancelled, then the run
  // retried once the file is there.
  const std::string flag = (dir_ / "flag").string();
  std::ofstream(dir_ / "slow.yaml")
      << "name: slow\nsteps:\n  - {name: w, kind: command, cache: false, with: {command: [sh, "
         "-c, 'test -e "
      << flag << " || sleep 60']}}\n";
  r = sh("pipelines create " + (dir_ / "slow.yaml").string() + at);
  ASSERT_EQ(r.code, 0) << r.out;
  r = sh("pipelines run slow --json" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string slow = std::to_string(nlohmann::json::parse(r.out)["id"].get<int64_t>());
  r = sh("pipelines cancel " + slow + at);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("is stopping"), std::string::npos) << r.out;
  r = sh("pipelines show " + slow + " --wait" + at);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("pipeline run " + slow + " CANCELLED"), std::string::npos) << r.out;
  std::ofstream(flag) << "";
  r = sh("pipelines retry " + slow + " --wait" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("pipeline run " + slow + " SUCCEEDED"), std::string::npos) << r.out;

  // A server killed in the middle of a run: the next one finishes it, the running step's job
  // re-attached, not started again.
  std::ofstream(dir_ / "waits.yaml")
      << "name: waits\nsteps:\n"
         "  - {name: a, kind: command, with: {command: ['true']}}\n"
         "  - {name: b, kind: command, needs: [a], with: {command: [sh, -c, 'while ! test -e "
      << (dir_ / "go").string()
      << "; do sleep 0.05; done; echo b ran']}}\n"
         "  - {name: c, kind: command, needs: [b], with: {command: ['true']}}\n";
  r = sh("pipelines create " + (dir_ / "waits.yaml").string() + at);
  ASSERT_EQ(r.code, 0) << r.out;
  r = sh("pipelines run waits --json" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string id = std::to_string(nlohmann::json::parse(r.out)["id"].get<int64_t>());
  // b's job's process runs (its job RUNNING, not only queued) when the server is killed.
  bool b_running = false;
  for (auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
       !b_running && std::chrono::steady_clock::now() < end;) {
    r = sh("jobs list --json" + at);
    auto jl = nlohmann::json::parse(r.out, nullptr, false);
    if (jl.is_array())
      for (const auto& job : jl) b_running |= job["name"] == "waits-b" && job["state"] == "RUNNING";
    if (!b_running) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(b_running) << r.out;
  server.crash();
  std::ofstream(dir_ / "go") << "";
  // On the same host and port: the same runner, which recovers its own jobs at once.
  Server again(data, false, server.port());
  ASSERT_TRUE(again.up());
  const std::string at2 = " --server " + again.url();
  bool done = false;
  nlohmann::json j;
  for (auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
       !done && std::chrono::steady_clock::now() < end;) {
    r = sh("pipelines show " + id + " --json" + at2);
    j = nlohmann::json::parse(r.out, nullptr, false);
    done = j.is_object() && j["state"] != "RUNNING";
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(done) << r.out;
  EXPECT_EQ(j["state"], "SUCCEEDED") << j.dump();
  r = sh("jobs list --json" + at2);
  ASSERT_EQ(r.code, 0) << r.out;
  int b_jobs = 0;
  for (const auto& job : nlohmann::json::parse(r.out)) b_jobs += job["name"] == "waits-b";
  EXPECT_EQ(b_jobs, 1) << "b's job was re-attached by the next server, not started again";
  r = sh("pipelines logs " + id + at2);
  EXPECT_NE(r.out.find("b ran"), std::string::npos) << r.out;
}

// Monitoring end to end (issue 24) through the CLI and a real `dlsys server`: a deployment
// trained by the retrain pipeline samples its requests; inputs served with their pixels dimmed
// drift from the training data in the model's lineage; the drift rule fires, is listed by
// `dlsys alerts list` and `dlsys monitor show`, and starts the retrain pipeline through its alert
// trigger, which trains on the newest data, passes its gate and canaries the new version. Labels
// posted with `dlsys monitor feedback` are joined to the sampled predictions.
TEST_F(Cli, MonitoringDriftAlertStartsTheRetrainPipelineWhichCanaries) {
  const std::string data = (dir_ / "data").string();
  {
    std::ifstream in(std::string(DLSYS_SOURCE_DIR) + "/examples/pipelines/retrain.yaml");
    std::string text((std::istreambuf_iterator<char>(in)), {});
    const std::string spec = "examples/digits/mlp-dataset.yaml";
    text.replace(text.find(spec), spec.size(), std::string(DLSYS_SOURCE_DIR) + "/" + spec);
    // The alert trigger only: new data lands without starting a run.
    const std::string ds = "  - {dataset: digits, param: data}\n";
    ASSERT_NE(text.find(ds), std::string::npos);
    text.erase(text.find(ds), ds.size());
    // Stop at the canary: what the test looks at.
    text = text.substr(0, text.find("  - name: promote"));
    std::ofstream(dir_ / "retrain.yaml") << text;
  }
  const std::string digits = std::string(DLSYS_SHARED_DIR) + "/data/digits/digits.csv";
  std::vector<std::vector<float>> rows;
  std::vector<int> labels;
  {
    std::ifstream in(digits);
    std::ofstream out(dir_ / "small.csv");
    std::string line;
    for (int i = 0; std::getline(in, line); ++i) {
      if (i < 400) out << line << "\n";
      std::vector<float> v;
      std::stringstream ss(line);
      for (std::string f; std::getline(ss, f, ',');) v.push_back(std::stof(f));
      labels.push_back(static_cast<int>(v.back()));
      v.pop_back();
      rows.push_back(v);
    }
  }
  Server server(data);
  ASSERT_TRUE(server.up());
  const std::string at = " --server " + server.url();
  ASSERT_EQ(sh("pipelines create " + (dir_ / "retrain.yaml").string() + at).code, 0);
  Ran r = sh("data push " + (dir_ / "small.csv").string() + " --name digits --split 0.8,0.2" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  // The first model, by hand: deployed (nothing to canary against), then sampling on.
  r = sh("pipelines run retrain --wait" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  r = sh("deploy update digits --sample-rate 1" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  std::ofstream(dir_ / "monitor.yaml")
      << "defaults: {windows: [1s], history: 120, drift: {min_count: 50, false_alarm_rate: 0.001}, "
         "change: {min_count: "
         "20}}\n"
         "rules:\n"
         "  - {name: digits-drift, deployment: digits, signal: drift, severity: critical,\n"
         "     notify: {pipeline: retrain}}\n";
  r = sh("monitor config apply " + (dir_ / "monitor.yaml").string() + at);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("monitoring configuration v1 in force"), std::string::npos) << r.out;
  r = sh("monitor config apply " + (dir_ / "missing.yaml").string() + at);
  EXPECT_NE(r.code, 0);
  // The whole data lands (no run: the pipeline has no dataset trigger now).
  ASSERT_EQ(sh("data push " + digits + " --name digits --split 0.8,0.2" + at).code, 0);
  // Traffic: `n` requests of rows scaled by `scale`, each with its id; returns the ids.
  auto client = api::HttpConnection::open("127.0.0.1", server.port());
  ASSERT_TRUE(client.ok());
  std::mt19937_64 rng(3);
  auto serve = [&](int n, float scale, std::vector<std::pair<std::string, int>>* ids) {
    for (int i = 0; i < n; ++i) {
      size_t k = rng() % rows.size();
      std::vector<float> x = rows[k];
      for (float& v : x) v = std::round(v * scale);
      const std::string id = "q" + std::to_string(rng());
      nlohmann::json req = {
          {"id", id},
          {"inputs", {{{"name", "input"}, {"shape", {1, 64}}, {"datatype", "FP32"}, {"data", x}}}}};
      auto resp = (*client)->request("POST", "/v2/models/digits/infer", req.dump(),
                                     {{"content-type", "application/json"}});
      ASSERT_TRUE(resp.ok() && resp->status == 200) << (resp.ok() ? resp->body : "no answer");
      if (ids) ids->emplace_back(id, labels[k]);
    }
  };
  // Unshifted traffic over two whole windows, labelled: no alert, live accuracy joined.
  std::vector<std::pair<std::string, int>> ids;
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(2500);
  while (std::chrono::steady_clock::now() < end) serve(20, 1.0f, &ids);
  {
    std::ofstream fb(dir_ / "labels.csv");
    fb << "id,label\n";
    for (const auto& [id, y] : ids) fb << id << "," << y << "\n";
  }
  r = sh("monitor feedback digits " + (dir_ / "labels.csv").string() + at);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find(std::to_string(ids.size()) + " labels sent to digits, " +
                       std::to_string(ids.size()) + " new"),
            std::string::npos)
      << r.out;
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // a monitor pass
  r = sh("alerts list --json" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out, nullptr, false)["alerts"].size(), 0u) << r.out;
  r = sh("monitor show digits --json --history 120" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  auto report = nlohmann::json::parse(r.out, nullptr, false);
  EXPECT_EQ(report["reference"]["source"], "digits@v1:train") << r.out.substr(0, 400);
  EXPECT_EQ(report["labels"]["joined"].get<int64_t>(), static_cast<int64_t>(ids.size()));
  // Live accuracy of the model on those labels (trained on 320 rows: well above chance).
  int64_t labelled = 0;
  double right = 0;
  for (const auto& q : report["quality"])
    if (q.value("labels", int64_t{0}) > 0) {
      labelled += q["labels"].get<int64_t>();
      right += q["accuracy"].get<double>() * q["labels"].get<double>();
    }
  EXPECT_EQ(labelled, static_cast<int64_t>(ids.size()));
  EXPECT_GT(right / double(std::max<int64_t>(1, labelled)), 0.8);
  // Dimmed inputs for two whole windows: the drift alert fires and starts the pipeline.
  end = std::chrono::steady_clock::now() + std::chrono::milliseconds(2500);
  while (std::chrono::steady_clock::now() < end) serve(20, 0.5f, nullptr);
  nlohmann::json firing;
  for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
       std::chrono::steady_clock::now() < until;) {
    r = sh("alerts list --state firing --json" + at);
    firing = nlohmann::json::parse(r.out, nullptr, false);
    if (firing.is_object() && !firing["alerts"].empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_TRUE(firing.is_object() && firing["alerts"].size() == 1u) << r.out;
  EXPECT_EQ(firing["alerts"][0]["rule"], "digits-drift");
  EXPECT_EQ(firing["alerts"][0]["severity"], "critical");
  r = sh("monitor show digits --history 5" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("DRIFT"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("alert digits-drift FIRING"), std::string::npos) << r.out;
  r = sh("alerts list" + at);
  EXPECT_NE(r.out.find("digits-drift"), std::string::npos) << r.out;
  // The retrain pipeline's second run, started by the alert: trained on the newest data,
  // better than production on its rows, canaried at 10%.
  nlohmann::json run;
  for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
       std::chrono::steady_clock::now() < until;) {
    Ran runs = sh("pipelines runs retrain --json" + at);
    auto list = nlohmann::json::parse(runs.out, nullptr, false);
    if (list.is_array() && list.size() >= 2u) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  Ran w = sh("pipelines show 2 --wait --json" + at);
  ASSERT_EQ(w.code, 0) << w.out;
  run = nlohmann::json::parse(w.out.substr(w.out.find("\n{") + 1), nullptr, false);
  ASSERT_TRUE(run.is_object()) << w.out;
  EXPECT_EQ(run["trigger"], "alert");
  EXPECT_EQ(run["event_id"],
            "alert:alert-" + std::to_string(firing["alerts"][0]["id"].get<int64_t>()));
  std::map<std::string, nlohmann::json> st;
  for (const auto& s : run["steps"]) st[s["step"]] = s;
  EXPECT_NE(st["validate"]["inputs"].dump().find("digits@v2"), std::string::npos)
      << "the latest version: " << st["validate"].dump();
  EXPECT_EQ(st["register"]["outputs"]["model"], "digits@2");
  EXPECT_EQ(st["better"]["outputs"]["passed"], true) << st["evaluate"].dump();
  EXPECT_EQ(st["canary"]["outputs"]["weight"], 10);
  r = sh("deploy show digits --json" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  auto dep = nlohmann::json::parse(r.out, nullptr, false);
  EXPECT_EQ(dep["config"]["canary"]["version"], 2) << r.out.substr(0, 600);
  EXPECT_EQ(dep["config"]["canary"]["weight"], 10) << r.out.substr(0, 600);
  // Prometheus has the same signals.
  auto metrics = (*client)->request("GET", "/metrics", "");
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->body.find("dlsys_monitor_samples_total{deployment=\"digits\"}"),
            std::string::npos);
  EXPECT_NE(metrics->body.find("dlsys_alerts_firing{rule=\"digits-drift\""), std::string::npos);
}

// Hyperparameter search through the CLI and a real `dlsys server`: validate explains a spec and
// names a bad field, submit --wait reports the trials and the best one, list and show read it
// back, and cancel stops a search with its running trials.
TEST_F(Cli, SearchSubmitShowListAndCancelOnAServer) {
  Ran r =
      sh("search validate " + std::string(DLSYS_SOURCE_DIR) + "/examples/search/digits-asha.yaml");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("a random search 'digits-asha' of 27 trials"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rungs of 1, 3, 9, 27 epochs"), std::string::npos) << r.out;
  {
    std::ifstream in(std::string(DLSYS_SOURCE_DIR) + "/examples/digits/mlp.yaml");
    std::string text((std::istreambuf_iterator<char>(in)), {});
    text.replace(text.find("../../../shared"), 15, DLSYS_SHARED_DIR);
    std::ofstream(dir_ / "mlp.yaml") << text;
  }
  const std::string trial =
      "trial: {spec: mlp.yaml, hyperparameters: {target_accuracy: 0}, resources: {threads: "
      "1}}\n";
  std::ofstream(dir_ / "bad.yaml")
      << "name: bad\n"
      << trial << "algorithm: grid\nspace: {lr: {uniform: [0.001, 0.1]}}\n";
  r = sh("search validate " + (dir_ / "bad.yaml").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("'space.lr' is a range (uniform): a grid search needs choice lists"),
            std::string::npos)
      << r.out;
  std::ofstream(dir_ / "small.yaml")
      << "name: small\n"
      << trial
      << "algorithm: grid\nspace: {lr: {choice: [0.0003, 0.003, 0.03]}}\nparallelism: 2\n"
         "epochs: 3\nasha: {min_epochs: 1}\nregister: {model: small-best}\n";
  std::ofstream(dir_ / "long.yaml") << "name: long\n"
                                    << trial
                                    << "trials: 4\nspace: {lr: {log_uniform: [0.001, 0.01]}}\n"
                                       "epochs: 100000\n";
  Server server((dir_ / "data").string());
  ASSERT_TRUE(server.up());
  const std::string at = " --server " + server.url();
  r = sh("search submit --wait " + (dir_ / "small.yaml").string() + at);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("search 1 submitted: 'small', 3 trials, rungs of 1, 3 epochs"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("trial 0 STOPPED at 1 epoch: val_accuracy"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("SUCCEEDED"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("registered as small-best@1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("best: trial"), std::string::npos) << r.out;
  r = sh("search show 1" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("COMPLETED (best)  3"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("lr=0.003"), std::string::npos) << r.out;
  r = sh("models list --json" + at);
  EXPECT_NE(r.out.find("small-best"), std::string::npos) << r.out;

  // A long search, cancelled: its running trials stop and it ends CANCELLED.
  r = sh("search submit --json " + (dir_ / "long.yaml").string() + at);
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string id = std::to_string(nlohmann::json::parse(r.out)["id"].get<int64_t>());
  r = sh("search cancel " + id + at);
  ASSERT_EQ(r.code, 0) << r.out;
  std::string state;
  for (int i = 0; i < 600 && state != "CANCELLED"; ++i) {
    r = sh("search show --json " + id + at);
    ASSERT_EQ(r.code, 0) << r.out;
    state = nlohmann::json::parse(r.out)["state"];
    if (state != "CANCELLED") std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(state, "CANCELLED") << r.out;
  r = sh("search list --json" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  auto list = nlohmann::json::parse(r.out);
  ASSERT_EQ(list.size(), 2u) << r.out;
  EXPECT_EQ(list[0]["state"], "CANCELLED");
  EXPECT_EQ(list[1]["state"], "SUCCEEDED");
  r = sh("jobs list --json --state running" + at);
  EXPECT_EQ(nlohmann::json::parse(r.out).size(), 0u)
      << "a cancelled search leaves no trial running";
  r = sh("search show 999" + at);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("search 999 does not exist"), std::string::npos) << r.out;
}

// A server that crashes while a job runs: the job's process lives on, and the next server on
// the same data directory and port re-attaches to it: the attempt goes on undisturbed (the same
// process, the same attempt: here the second, after a failed first), how it ended (recorded by
// `dlsys-job-run`) settles the job, and the metric it printed before the crash is recorded
// (read from where the attempt's part of the log began).
TEST_F(Cli, AServerThatCrashesReattachesToAJobStillRunning) {
  const std::string data = (dir_ / "data").string();
  std::ofstream(dir_ / "wait.yaml")
      << "kind: command\nname: waiter\nmax_retries: 1\n"
         "command: [sh, -c, 'if [ \"$DLSYS_ATTEMPT\" = 1 ]; then echo first; exit 3; fi; "
         "echo \"{\\\"metric\\\": \\\"before_crash\\\", \\\"value\\\": 2, \\\"step\\\": 1}\"; "
         "while [ ! -e go ]; do sleep 0.02; done; echo done > $DLSYS_OUTPUT_DIR/result; exit "
         "0']\n";
  auto first = std::make_unique<Server>(data);
  ASSERT_TRUE(first->up());
  const int port = first->port();
  const std::string at = " --server " + first->url();
  Ran r = sh("jobs submit " + (dir_ / "wait.yaml").string() + at);
  ASSERT_EQ(r.code, 0) << r.out;
  nlohmann::json j;
  for (int i = 0; i < 500; ++i) {
    j = nlohmann::json::parse(sh("jobs show 1 --json" + at).out);
    if (j["state"] == "RUNNING" && j["attempts"] == 2 && j["pid"].get<int64_t>() > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(j["state"], "RUNNING") << j;
  ASSERT_EQ(j["attempts"], 2) << j;
  const int64_t pid = j["pid"];
  // The second attempt has printed its metric before the crash.
  auto log = [&] {
    auto text = read_file(data + "/jobs/1/log");
    return text.ok() ? *text : std::string();
  };
  for (int i = 0; i < 500 && log().find("before_crash") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  first->crash();
  ASSERT_EQ(::kill(static_cast<pid_t>(pid), 0), 0) << "the job's process died with its server";

  Server second(data, false, port);
  ASSERT_TRUE(second.up());
  j = nlohmann::json::parse(sh("jobs show 1 --json" + at).out);
  EXPECT_EQ(j["state"], "RUNNING") << j;
  EXPECT_EQ(j["pid"], pid) << "not the same process: it was started again";
  EXPECT_EQ(j["attempts"], 2);
  std::ofstream(dir_ / "go") << "";
  for (int i = 0; i < 500 && j["state"] == "RUNNING"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    j = nlohmann::json::parse(sh("jobs show 1 --json" + at).out);
  }
  EXPECT_EQ(j["state"], "SUCCEEDED") << j;
  EXPECT_EQ(j["attempts"], 2);
  r = sh("artifacts list " + std::to_string(j["run_id"].get<int64_t>()) + at);
  EXPECT_NE(r.out.find("output/result"), std::string::npos) << r.out;
  r = sh("runs show " + std::to_string(j["run_id"].get<int64_t>()) + " --json" + at);
  auto run = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(run.is_object()) << r.out;
  EXPECT_EQ(run["metrics"]["before_crash"]["value"], 2.0) << r.out;
}

// Batch prediction: a registered model over a dataset version, by `dlsys predict` and as a
// predict job. The predictions (with the input's label column) equal `dlsys run` on the same
// rows in the same order, become a dataset version with lineage, and a run that lost a shard's
// part predicts only that shard again (the same data: no new version).
TEST_F(Cli, PredictWritesADatasetVersionResumesByShardAndRunsAsAJob) {
  Server server((dir_ / "data").string());
  ASSERT_TRUE(server.up());
  const std::string at = " --server " + server.url();
  Ran r = sh("data push " + std::string(DLSYS_SHARED_DIR) +
             "/data/digits/digits.csv --name digits --split 0.8,0.2 --shard-rows 300" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  std::ofstream(dir_ / "train.yaml") << "kind: train\nspec: " << DLSYS_SOURCE_DIR
                                     << "/examples/digits/mlp-dataset.yaml\ndataset: digits@1\n"
                                        "hyperparameters: {epochs: 3}\n"
                                        "on_success: {register: digits, alias: production}\n";
  r = sh("jobs submit --wait " + (dir_ / "train.yaml").string() + at);
  ASSERT_EQ(r.code, 0) << r.out;

  const std::string work = (dir_ / "work").string();
  r = sh("predict digits@production digits@1:validation --output digits-preds --work " + work +
         " --json" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  auto report = nlohmann::json::parse(r.out);
  EXPECT_EQ(report["model"], "digits@1");
  EXPECT_EQ(report["output"], "digits-preds@v1");
  EXPECT_EQ(report["shards"], 6) << "1797 rows in shards of 300";
  EXPECT_EQ(report["shards_done_before"], 0);
  const int64_t rows = report["rows"];
  EXPECT_GT(rows, 300);
  EXPECT_LT(rows, 500) << "the validation split, about 20%";

  // The same rows through `dlsys run`: the same classes, in the same order.
  r = sh("data pull digits@1:validation --format csv -o " + (dir_ / "val.csv").string() + at);
  ASSERT_EQ(r.code, 0) << r.out;
  r = sh("run " + work + "/model-1.onnx --input " + (dir_ / "val.csv").string() + " --json");
  ASSERT_EQ(r.code, 0) << r.out;
  auto direct = nlohmann::json::parse(r.out)["predictions"];
  ASSERT_EQ(static_cast<int64_t>(direct.size()), rows);
  r = sh("data pull digits-preds@1 --format csv -o " + (dir_ / "preds.csv").string() + at);
  ASSERT_EQ(r.code, 0) << r.out;
  std::ifstream preds(dir_ / "preds.csv");
  std::string line;
  std::getline(preds, line);
  EXPECT_EQ(line, "c64,prediction,prediction_id,probability")
      << "the label column goes along; the features do not";
  int64_t n = 0, agree_label = 0;
  while (std::getline(preds, line)) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
    ASSERT_EQ(f.size(), 4u) << line;
    ASSERT_LT(n, rows);
    EXPECT_EQ(std::stoll(f[2]), direct[n]["class_id"].get<int64_t>()) << "row " << n;
    EXPECT_NEAR(std::stod(f[3]), direct[n]["probability"].get<double>(), 1e-6) << "row " << n;
    agree_label += std::stoll(f[0]) == std::stoll(f[2]);
    ++n;
  }
  EXPECT_EQ(n, rows);
  EXPECT_GT(agree_label, rows * 8 / 10) << "a trained model agrees with most labels";

  // Lineage: the model version and the input version -> the predictions.
  int code = 0;
  const std::string lineage = run_shell(
      "/usr/bin/python3 -c \"import urllib.request; print(urllib.request.urlopen('" + server.url() +
          "/api/v1/lineage/dataset_version/digits-preds@v1?depth=1').read()."
          "decode())\" 2>&1",
      &code);
  ASSERT_EQ(code, 0) << lineage;
  EXPECT_NE(lineage.find("\"id\":\"digits/1\""), std::string::npos) << lineage;
  EXPECT_NE(lineage.find("\"relation\":\"predicted\""), std::string::npos) << lineage;
  EXPECT_NE(lineage.find("\"id\":\"digits@v1\""), std::string::npos) << lineage;

  // A part lost (as a kill mid-write leaves none): only that shard is predicted again.
  fs::remove(work + "/parts/part-00002.csv");
  r = sh("predict digits@production digits@1:validation --output digits-preds --work " + work +
         " --json" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  report = nlohmann::json::parse(r.out);
  EXPECT_EQ(report["shards_done_before"], 5);
  EXPECT_GT(report["rows_predicted_now"].get<int64_t>(), 0);
  EXPECT_LT(report["rows_predicted_now"].get<int64_t>(), rows / 3);
  EXPECT_EQ(report["unchanged"], true) << "the same predictions: no new version";
  // Another prediction in the same folder is refused, not mixed in.
  r = sh("predict digits@production digits@1:train --output digits-preds --work " + work + at);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("holds another prediction"), std::string::npos) << r.out;

  // As a job of the training service: a tracked run, the predictions a new dataset.
  std::ofstream(dir_ / "predict.yaml")
      << "kind: predict\nmodel: digits@production\ndataset: digits@1\nsplit: train\n"
         "output_dataset: digits-train-preds\nmax_retries: 1\n";
  r = sh("jobs submit --wait " + (dir_ / "predict.yaml").string() + at);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"output\": \"digits-train-preds@v1\""), std::string::npos) << r.out;
  r = sh("data versions digits-train-preds" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("predictions of digits@1 on digits@v1:train"), std::string::npos) << r.out;
  // Fine-tuning the registered version in a train job: the job fetches digits@production (the
  // same bytes predict used) into its run directory and trains from it.
  std::ofstream(dir_ / "finetune.yaml")
      << "name: digits-finetune\ndata: {dataset: digits@1, label: c64}\n"
         "model: {onnx: replaced-by-the-job.onnx, freeze: [\"layers.0.*\"]}\n"
         "train: {epochs: 1, batch_size: 32, optimizer: {name: adam, lr: 0.0003}}\n";
  std::ofstream(dir_ / "finetune-job.yaml")
      << "kind: train\nname: finetune\nspec: finetune.yaml\nmodel: digits@production\n"
         "on_success: {register: digits-finetuned}\n";
  r = sh("jobs submit --wait --json " + (dir_ / "finetune-job.yaml").string() + at);
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string fetched = read_bytes(dir_ / "data" / "jobs" / "3" / "run" / "model-1.onnx");
  EXPECT_FALSE(fetched.empty()) << r.out;
  EXPECT_EQ(fetched, read_bytes(work + "/model-1.onnx")) << "not the registered version's bytes";
  r = sh("models versions digits-finetuned" + at);
  EXPECT_NE(r.out.find("READY"), std::string::npos) << r.out;
  std::ofstream(dir_ / "nospec.yaml") << "kind: train\nmodel: digits@production\n";
  r = sh("jobs submit " + (dir_ / "nospec.yaml").string() + at);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("a train job needs 'spec'"), std::string::npos) << r.out;

  r = sh("predict nosuch@1 digits@1 --output x" + at);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("nosuch"), std::string::npos) << r.out;
}

// On a server that requires tokens, a job gets a token of its own for its attempt (a train job
// records its run with it), and the token is revoked when the attempt ends.
TEST_F(Cli, JobsOnAServerWithAuthGetATokenForTheirAttempt) {
  const std::string data = (dir_ / "data").string();
  Ran t = sh("tokens create --name alice --role editor --json --data-dir " + data);
  ASSERT_EQ(t.code, 0) << t.out;
  const std::string token = nlohmann::json::parse(t.out)["token"];
  {
    std::ifstream in(std::string(DLSYS_SOURCE_DIR) + "/examples/digits/mlp.yaml");
    std::string text((std::istreambuf_iterator<char>(in)), {});
    text.replace(text.find("../../../shared"), 15, DLSYS_SHARED_DIR);
    std::ofstream(dir_ / "mlp.yaml") << text;
  }
  std::ofstream(dir_ / "train.yaml") << "kind: train\nname: authed\nspec: mlp.yaml\n"
                                        "hyperparameters: {epochs: 2}\n";
  Server server(data, /*auth=*/true);
  ASSERT_TRUE(server.up());
  const std::string at = " --server " + server.url();
  Ran r = sh("jobs submit --wait " + (dir_ / "train.yaml").string() + at);
  EXPECT_EQ(r.code, 1) << "no token: " << r.out;
  r = sh("jobs submit --wait " + (dir_ / "train.yaml").string() + at + " --token " + token);
  ASSERT_EQ(r.code, 0) << r.out;
  r = sh("jobs list --json" + at + " --token " + token);
  ASSERT_EQ(r.code, 0) << r.out;
  auto jobs = nlohmann::json::parse(r.out);
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0]["owner"], "alice");
  r = sh("runs show " + std::to_string(jobs[0]["run_id"].get<int64_t>()) + " --json" + at +
         " --token " + token);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["status"], "FINISHED") << r.out;
  EXPECT_NE(r.out.find("val_accuracy"), std::string::npos) << r.out;
  // The attempt's token was revoked when it ended.
  Ran admin = sh("tokens create --name root --role admin --json --data-dir " + data);
  ASSERT_EQ(admin.code, 0) << admin.out;
  r = sh("tokens list --json" + at + " --token " +
         nlohmann::json::parse(admin.out)["token"].get<std::string>());
  ASSERT_EQ(r.code, 0) << r.out;
  bool found = false;
  const auto listed = nlohmann::json::parse(r.out);
  for (const auto& tk : listed["tokens"]) {
    if (tk["name"] != "job-" + std::to_string(jobs[0]["id"].get<int64_t>()) + "-1") continue;
    found = true;
    EXPECT_EQ(tk["revoked"], true) << tk;
  }
  EXPECT_TRUE(found) << r.out;
}

// With tokens required, a pipeline whose steps act as the server itself (a command: its
// programs; a data.push: its files; a notify: its network) is created and run by admins only;
// an editor's pipeline of other steps is theirs to run.
TEST_F(Cli, PipelinesWithServerStepsNeedAnAdminWhenTokensAreRequired) {
  const std::string data = (dir_ / "data").string();
  Ran t = sh("tokens create --name ed --role editor --json --data-dir " + data);
  ASSERT_EQ(t.code, 0) << t.out;
  const std::string editor = nlohmann::json::parse(t.out)["token"];
  t = sh("tokens create --name root --role admin --json --data-dir " + data);
  ASSERT_EQ(t.code, 0) << t.out;
  const std::string admin = nlohmann::json::parse(t.out)["token"];
  std::ofstream(dir_ / "cmd.yaml")
      << "name: cmd\nsteps:\n  - {name: c, kind: command, with: {command: ['true']}}\n";
  std::ofstream(dir_ / "gate.yaml")
      << "name: gated\nsteps:\n  - {name: g, kind: gate, condition: '1 < 2'}\n";
  Server server(data, /*auth=*/true);
  ASSERT_TRUE(server.up());
  const std::string at = " --server " + server.url();
  Ran r = sh("pipelines create " + (dir_ / "cmd.yaml").string() + at + " --token " + editor);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("step 'c' is a command step, which runs as the server itself"),
            std::string::npos)
      << r.out;
  r = sh("pipelines create " + (dir_ / "cmd.yaml").string() + at + " --token " + admin);
  ASSERT_EQ(r.code, 0) << r.out;
  r = sh("pipelines run cmd" + at + " --token " + editor);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("only an admin may run pipeline 'cmd'"), std::string::npos) << r.out;
  r = sh("pipelines run cmd --wait" + at + " --token " + admin);
  EXPECT_EQ(r.code, 0) << r.out;
  r = sh("pipelines create " + (dir_ / "gate.yaml").string() + at + " --token " + editor);
  ASSERT_EQ(r.code, 0) << r.out;
  r = sh("pipelines run gated --wait" + at + " --token " + editor);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("passed: 1 < 2 -> true"), std::string::npos) << r.out;
}

// Bring your own training code: the PyTorch command job of examples/jobs/torch-digits trains on
// the digits version the service exports, its printed metrics land in its run, its model.onnx
// is registered (on_success) and served, and the server answers as PyTorch did on the same
// rows.
TEST_F(Cli, APyTorchCommandJobIsTrackedRegisteredAndServed) {
  const std::string data = (dir_ / "data").string();
  Server server(data);
  ASSERT_TRUE(server.up());
  const std::string at = " --server " + server.url();
  Ran r = sh("data push " + std::string(DLSYS_SHARED_DIR) +
             "/data/digits/digits.csv --name digits" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  // The example job, with fewer epochs, from its own folder.
  std::string job;
  {
    std::ifstream in(std::string(DLSYS_SOURCE_DIR) + "/examples/jobs/torch-digits/job.yaml");
    job.assign(std::istreambuf_iterator<char>(in), {});
  }
  job.replace(job.find("epochs: 30"), 10, "epochs: 5");
  const std::string folder = std::string(DLSYS_SOURCE_DIR) + "/examples/jobs/torch-digits";
  std::ofstream(dir_ / "torch-job.yaml") << job << "working_dir: " << folder << "\n";
  r = sh("jobs submit --wait " + (dir_ / "torch-job.yaml").string() + at);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("exported model.onnx"), std::string::npos) << r.out;
  r = sh("jobs list --json" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  auto jobs = nlohmann::json::parse(r.out);
  ASSERT_EQ(jobs.size(), 1u);
  const int64_t id = jobs[0]["id"], run = jobs[0]["run_id"];
  EXPECT_EQ(jobs[0]["state"], "SUCCEEDED");
  // The run: the metrics it printed, its hyperparameters, its files.
  r = sh("runs show " + std::to_string(run) + " --json" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  auto rj = nlohmann::json::parse(r.out);
  EXPECT_EQ(rj["status"], "FINISHED") << r.out;
  EXPECT_GT(rj["metrics"]["val_accuracy"]["value"].get<double>(), 0.8) << r.out;
  EXPECT_EQ(rj["params"]["epochs"], "5") << r.out;
  // Registered as digits-torch@production, then deployed.
  r = sh("deploy create digits-torch --model digits-torch@production" + at);
  ASSERT_EQ(r.code, 0) << r.out;
  std::ifstream ref_in(fs::path(data) / "jobs" / std::to_string(id) / "output" / "reference.json");
  auto ref = nlohmann::json::parse(ref_in);
  nlohmann::json flat = nlohmann::json::array();
  for (const auto& row : ref["input"])
    for (const auto& v : row) flat.push_back(v);
  std::ofstream(dir_ / "req.json") << nlohmann::json{
      {"inputs",
       {{{"name", "input"},
         {"shape", {ref["input"].size(), 64}},
         {"datatype", "FP32"},
         {"data", flat}}}}}.dump();
  int code = 0;
  std::string out =
      run_shell("curl -sS --max-time 10 -X POST --data-binary @" + (dir_ / "req.json").string() +
                    " " + server.url() + "/v2/models/digits-torch/infer",
                &code);
  ASSERT_EQ(code, 0) << out;
  auto answer = nlohmann::json::parse(out, nullptr, false);
  ASSERT_TRUE(answer.is_object() && answer.contains("outputs")) << out;
  const auto& got = answer["outputs"][0]["data"];
  size_t k = 0;
  for (const auto& row : ref["logits"])
    for (const auto& v : row) {
      ASSERT_LT(k, got.size()) << out;
      EXPECT_NEAR(got[k].get<double>(), v.get<double>(), 1e-4) << "logit " << k;
      ++k;
    }
  EXPECT_EQ(k, got.size());
}

// A server that was named (--server or $DLSYS_SERVER) and does not answer is an error naming
// the URL, the cause and what to do; nothing falls back to the data directory, nothing is
// created there.
TEST_F(Cli, AServerThatDoesNotAnswerIsAnErrorNeverAFallback) {
  std::string home = (dir_ / "home").string();
  std::string env = "DLSYS_HOME=" + home;
  std::string url = "http://127.0.0.1:" + std::to_string(testing::free_loopback_port());
  for (const std::string& args :
       {"runs list --server " + url, "models alias m production 1 --server " + url,
        "data list --server " + url, "data push " + model_ + ".csv --name x --server " + url,
        "train " + dataset_spec(dir_, "digits@v1") + " --epochs 1 --server " + url}) {
    RanApart r = sh_apart(env, args, dir_);
    EXPECT_EQ(r.code, 1) << args << "\n" << r.out << r.err;
    EXPECT_NE(r.err.find("cannot reach the dlsys server at " + url + ": Connection refused"),
              std::string::npos)
        << args << "\n"
        << r.err;
    EXPECT_NE(r.err.find("start it with `dlsys server`, or drop --server to use the data "
                         "directory " +
                         home + " instead"),
              std::string::npos)
        << r.err;
    EXPECT_FALSE(fs::exists(home)) << args << ": the data directory was created";
  }
  RanApart from_env = sh_apart(env + " DLSYS_SERVER=" + url, "runs list --json", dir_);
  EXPECT_EQ(from_env.code, 1);
  EXPECT_EQ(from_env.out, "");
  EXPECT_NE(from_env.err.find("(the address comes from $DLSYS_SERVER); start it with `dlsys "
                              "server`, or unset DLSYS_SERVER"),
            std::string::npos)
      << from_env.err;
  RanApart data_env = sh_apart(env + " DLSYS_SERVER=" + url, "data show digits", dir_);
  EXPECT_EQ(data_env.code, 1);
  EXPECT_NE(data_env.err.find("unset DLSYS_SERVER"), std::string::npos) << data_env.err;
  EXPECT_FALSE(fs::exists(home));
  // --data-dir is explicit: $DLSYS_SERVER does not apply.
  EXPECT_EQ(sh_apart(env + " DLSYS_SERVER=" + url, "runs list --data-dir " + home, dir_).code, 0);
}

// A named server that accepts no connection (its accept queue full: the kernel drops the SYN,
// as a host behind a firewall does) is reported as timed out after the connect deadline, not
// after the kernel's minutes.
TEST_F(Cli, AServerThatNeverAcceptsTimesOutWithinTheDeadline) {
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(listen(lfd, 0), 0);
  socklen_t len = sizeof a;
  getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
  // Fill the accept queue until a connect no longer completes.
  std::vector<int> fillers;
  bool full = false;
  for (int i = 0; i < 8 && !full; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    (void)connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    pollfd p{fd, POLLOUT, 0};
    full = poll(&p, 1, 300) == 0;
    fillers.push_back(fd);
  }
  if (full) {
    std::string url = "http://127.0.0.1:" + std::to_string(ntohs(a.sin_port));
    auto t0 = std::chrono::steady_clock::now();
    RanApart r =
        sh_apart("DLSYS_HOME=" + (dir_ / "home").string(), "runs list --server " + url, dir_);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("cannot reach the dlsys server at " + url +
                         ": no answer within 5 s (timed out)"),
              std::string::npos)
        << r.err;
    EXPECT_LT(s, 15);
    EXPECT_FALSE(fs::exists(dir_ / "home"));
  }
  for (int fd : fillers) close(fd);
  close(lfd);
  if (!full) GTEST_SKIP() << "this kernel completes connects beyond the listen backlog";
}

// Without a server or a data directory named, commands say on stderr which data directory they
// use (stdout stays parseable), --quiet drops the note, and "not found" says where it looked.
TEST_F(Cli, CommandsSayWhereTheirStateLives) {
  {
    auto probe = api::connect_http("http://127.0.0.1:8080", "");
    if (probe.ok()) GTEST_SKIP() << "a server answers on 127.0.0.1:8080 on this machine";
  }
  std::string home = (dir_ / "home").string();
  std::string env = "DLSYS_HOME=" + home;
  RanApart runs = sh_apart(env, "runs list --json", dir_);
  ASSERT_EQ(runs.code, 0) << runs.err;
  EXPECT_TRUE(nlohmann::json::parse(runs.out).contains("runs")) << runs.out;
  EXPECT_EQ(runs.err,
            "note: using data directory " + home + " (no server given, none on 127.0.0.1:8080)\n");
  EXPECT_EQ(sh_apart(env, "runs list --quiet", dir_).err, "");
  EXPECT_EQ(sh_apart(env, "runs list --data-dir " + home, dir_).err, "");
  RanApart missing = sh_apart(env, "models alias nope production 1 --quiet", dir_);
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.err.find("model 'nope' is not registered"), std::string::npos) << missing.err;
  EXPECT_NE(missing.err.find("(looked in data directory " + home + ")"), std::string::npos)
      << missing.err;
  RanApart data = sh_apart(env, "data list --json", dir_);
  ASSERT_EQ(data.code, 0) << data.err;
  EXPECT_EQ(data.out, "[]\n");
  EXPECT_EQ(data.err, "note: using data directory " + home + " (no --server given)\n");
  EXPECT_EQ(sh_apart(env, "data list --quiet", dir_).err, "");
  RanApart show = sh_apart(env, "data show digits --quiet", dir_);
  EXPECT_EQ(show.code, 1);
  EXPECT_NE(show.err.find("no dataset named 'digits'"), std::string::npos) << show.err;
  EXPECT_NE(show.err.find("(looked in data directory " + home + ")"), std::string::npos)
      << show.err;
  // Training on a dataset the local store lacks, with no server: the error says where it
  // looked and how to use a server's datasets.
  RanApart tr = sh_apart(env, "train " + dataset_spec(dir_, "digits@v1") + " --epochs 1", dir_);
  EXPECT_EQ(tr.code, 1);
  EXPECT_NE(tr.err.find("note: reading data.dataset from data directory " + home),
            std::string::npos)
      << tr.err;
  EXPECT_NE(tr.err.find("no dataset named 'digits'"), std::string::npos) << tr.err;
  EXPECT_NE(tr.err.find("looked in data directory " + home +
                        "; to train on a server's datasets "
                        "give --server URL"),
            std::string::npos)
      << tr.err;
}

// A model trained on a string column, served: a request sends one column per feature, the color
// as its name, and asks for the class; the answer is what `dlsys run` prints for the same rows.
TEST_F(Cli, StringCategoriesServedByColumnName) {
  std::string srv = (dir_ / "srv").string();
  Server server(srv);
  ASSERT_TRUE(server.up());
  std::string s = " --server " + server.url(), d = " --data-dir " + (dir_ / "local").string();
  std::string spec = write_colors(dir_, "train: " + (dir_ / "colors.csv").string());
  std::string run = (dir_ / "colors-run").string();
  Ran tr = sh("train " + spec + " --out " + run + d);
  ASSERT_EQ(tr.code, 0) << tr.out;
  for (const std::string& args : {"models register colors --file " + run + "/model.onnx" + s,
                                  "models alias colors production 1" + s,
                                  "deploy create colors --model colors@production" + s}) {
    Ran r = sh(args);
    ASSERT_EQ(r.code, 0) << args << "\n" << r.out;
  }
  std::ofstream(dir_ / "req.json") << R"({"inputs": [
    {"name": "size", "shape": [3], "datatype": "FP32", "data": [3, 9, 1]},
    {"name": "color", "shape": [3], "datatype": "BYTES", "data": ["blue", "red", "green"]}],
    "outputs": [{"name": "class"}, {"name": "probabilities"}]})";
  int code = 0;
  std::string out =
      run_shell("curl -sS --max-time 10 -X POST --data-binary @" + (dir_ / "req.json").string() +
                    " " + server.url() + "/v2/models/colors/infer",
                &code);
  ASSERT_EQ(code, 0) << out;
  auto j = nlohmann::json::parse(out, nullptr, false);
  ASSERT_TRUE(j.is_object() && j.contains("outputs")) << out;
  EXPECT_EQ(j["outputs"][0]["name"], "class") << out;
  EXPECT_EQ(j["outputs"][0]["data"], nlohmann::json({"cold", "warm", "mid"})) << out;
  // The same rows through `dlsys run`: the same probabilities.
  std::ofstream(dir_ / "rows.csv") << "size,color\n3,blue\n9,red\n1,green\n";
  Ran local = sh("run " + run + "/model.onnx --input " + (dir_ / "rows.csv").string() + " --json");
  ASSERT_EQ(local.code, 0) << local.out;
  auto lj = nlohmann::json::parse(local.out);
  for (int r = 0; r < 3; ++r)
    for (int k = 0; k < 3; ++k)
      EXPECT_NEAR(j["outputs"][1]["data"][r * 3 + k].get<double>(),
                  lj["predictions"][r]["probabilities"][k].get<double>(), 1e-6)
          << "row " << r << " class " << k;
}

// `dlsys data ... --server` through the REST routes gives what the same commands give on a data
// directory: the same versions, statistics and rows; formats the server cannot take are refused
// with what to do.
TEST_F(Cli, DataCommandsThroughAServerMatchTheDataDirectory) {
  std::string srv = (dir_ / "srv").string(), home = (dir_ / "home").string();
  Server server(srv);
  ASSERT_TRUE(server.up());
  std::string env = "DLSYS_HOME=" + home;
  std::string s = " --server " + server.url(), d = " --data-dir " + (dir_ / "local").string();
  std::string csv = std::string(DLSYS_SHARED_DIR) + "/data/digits/digits.csv";
  for (const std::string& where : {s, d}) {
    RanApart push =
        sh_apart(env, "data push " + csv + " --name digits --split 0.8,0.2 -m first" + where, dir_);
    ASSERT_EQ(push.code, 0) << push.out << push.err;
    EXPECT_NE(push.out.find("digits@v1  "), std::string::npos) << push.out;
    EXPECT_NE(push.out.find("1797 rows in 1 shards (1 new, 74.4 KiB stored, 74.4 KiB new)"),
              std::string::npos)
        << push.out;
    EXPECT_NE(push.out.find("split: train 1456, validation 341, test 0"), std::string::npos)
        << push.out;
    RanApart again =
        sh_apart(env, "data push " + csv + " --name digits --split 0.8,0.2 --json" + where, dir_);
    ASSERT_EQ(again.code, 0) << again.err;
    std::string last = again.out.substr(0, again.out.find_last_not_of('\n') + 1);
    auto done = nlohmann::json::parse(last.substr(last.rfind('\n') + 1));
    EXPECT_TRUE(done["unchanged"].get<bool>()) << again.out;
    EXPECT_EQ(done["version"], "digits@v1");
    EXPECT_EQ(done["input"]["path"], csv);
    ASSERT_EQ(sh_apart(env, "data tag digits@v1 prod" + where, dir_).code, 0);
  }
  EXPECT_FALSE(fs::exists(home)) << "a command with --server touched the default data directory";
  // The same answers, but for what differs by nature (time, author, manifest ids).
  auto json_of = [&](const std::string& args) {
    RanApart r = sh_apart(env, args, dir_);
    EXPECT_EQ(r.code, 0) << args << r.err;
    auto j = nlohmann::json::parse(r.out);
    for (auto* e : {&j}) {
      if (e->is_array())
        for (auto& x : *e) x.erase("created_ms"), x.erase("id"), x.erase("author");
      else
        for (const char* k : {"created_ms", "id", "author", "stats_id"}) e->erase(k);
    }
    return j;
  };
  EXPECT_EQ(json_of("data list --json" + s), json_of("data list --json" + d));
  EXPECT_EQ(json_of("data versions digits --json" + s), json_of("data versions digits --json" + d));
  nlohmann::json shown = json_of("data show digits@prod --json" + s);
  EXPECT_EQ(shown, json_of("data show digits@prod --json" + d));
  EXPECT_EQ(shown["stats"]["c64"]["max"], 9);
  EXPECT_EQ(shown["source"]["path"], csv) << "the server's temporary file was recorded";
  RanApart table_s = sh_apart(env, "data show digits" + s, dir_);
  RanApart table_d = sh_apart(env, "data show digits" + d, dir_);
  ASSERT_EQ(table_s.code, 0) << table_s.err;
  EXPECT_EQ(table_s.out.substr(table_s.out.find("COLUMN")),
            table_d.out.substr(table_d.out.find("COLUMN")));
  for (const char* split : {"", ":validation"}) {
    std::string a = (dir_ / "a.csv").string(), b = (dir_ / "b.csv").string();
    RanApart ps =
        sh_apart(env, "data pull digits@prod" + std::string(split) + " -o " + a + s, dir_);
    ASSERT_EQ(ps.code, 0) << ps.err;
    ASSERT_EQ(sh_apart(env, "data pull digits@v1" + std::string(split) + " -o " + b + d, dir_).code,
              0);
    std::ifstream x(a), y(b);
    std::string xa((std::istreambuf_iterator<char>(x)), {}),
        yb((std::istreambuf_iterator<char>(y)), {});
    EXPECT_EQ(xa, yb) << split;
    EXPECT_GT(std::count(xa.begin(), xa.end(), '\n'), 300);
  }
  RanApart diffed = sh_apart(env, "data diff digits@v1 digits@prod" + s, dir_);
  ASSERT_EQ(diffed.code, 0) << diffed.err;
  EXPECT_EQ(diffed.out, sh_apart(env, "data diff digits@v1 digits@prod" + d, dir_).out);
  RanApart missing = sh_apart(env, "data show digits@v9" + s, dir_);
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.err.find("digits has v1..v1"), std::string::npos) << missing.err;
  EXPECT_NE(missing.err.find("(looked on the server at " + server.url() + ")"), std::string::npos)
      << missing.err;
  // .npy files pulled through the server are the local pull's, byte for byte.
  for (const char* split : {"", ":train"}) {
    fs::path a = dir_ / "npy_s", b = dir_ / "npy_d";
    RanApart ps = sh_apart(
        env, "data pull digits@prod" + std::string(split) + " --format npy -o " + a.string() + s,
        dir_);
    ASSERT_EQ(ps.code, 0) << ps.err;
    ASSERT_EQ(
        sh_apart(env,
                 "data pull digits@v1" + std::string(split) + " --format npy -o " + b.string() + d,
                 dir_)
            .code,
        0);
    size_t n = 0;
    for (const auto& e : fs::directory_iterator(b)) {
      EXPECT_EQ(read_bytes(e.path()), read_bytes(a / e.path().filename())) << e.path();
      ++n;
    }
    EXPECT_EQ(n, 65u);  // c0..c63 and the label
    EXPECT_EQ(std::distance(fs::directory_iterator(a), fs::directory_iterator()), 65);
    fs::remove_all(a);
    fs::remove_all(b);
  }
  for (const auto& e : fs::directory_iterator(dir_))
    EXPECT_EQ(e.path().filename().string().find(".pull-"), std::string::npos)
        << "a pull left its temporary store: " << e.path();
  // What a server cannot do is refused with what to do instead.
  RanApart verify = sh_apart(env, "data verify digits" + s, dir_);
  EXPECT_EQ(verify.code, 1);
  EXPECT_NE(verify.err.find("runs on the server's machine"), std::string::npos) << verify.err;
}

void write_png(const std::string& path, int w, int h, uint8_t value) {
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = w;
  img.height = h;
  img.format = PNG_FORMAT_RGB;
  std::vector<uint8_t> px(w * h * 3);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(value + i % 7);
  ASSERT_TRUE(png_image_write_to_file(&img, path.c_str(), 0, px.data(), 0, nullptr));
}

// An IDX file (MNIST's format): u8 values, dimensions big-endian.
void write_idx(const fs::path& path, const std::vector<uint32_t>& dims,
               const std::vector<uint8_t>& values) {
  std::string b = {0, 0, 0x08, static_cast<char>(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) b += static_cast<char>((d >> s) & 0xff);
  b.append(values.begin(), values.end());
  std::ofstream(path, std::ios::binary) << b;
}

// `dlsys data push --server` takes every input a local push takes (NPY with labels, IDX, an
// image folder, a CSV with a schema file) through a staged upload, and the version it makes is
// the local push's: the same shards (row hashes), schema, statistics and source; the same
// summary; the same errors.
TEST_F(Cli, DataPushThroughAServerTakesEveryFormatAsALocalPushDoes) {
  std::string srv = (dir_ / "srv").string(), home = (dir_ / "home").string();
  Server server(srv);
  ASSERT_TRUE(server.up());
  std::string env = "DLSYS_HOME=" + home;
  std::string s = " --server " + server.url(), d = " --data-dir " + (dir_ / "local").string();
  std::vector<float> x(60 * 4);
  std::vector<int64_t> y(60);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 17) * 0.25f;
  for (size_t i = 0; i < y.size(); ++i) y[i] = static_cast<int64_t>(i % 3);
  ASSERT_TRUE(npy_write((dir_ / "feat.npy").string(), Tensor::from_f32({60, 4}, x.data())).ok());
  ASSERT_TRUE(npy_write((dir_ / "lab.npy").string(), Tensor::from_i64({60}, y.data())).ok());
  ASSERT_TRUE(npy_write((dir_ / "short.npy").string(), Tensor::from_i64({59}, y.data())).ok());
  std::vector<uint8_t> pixels(20 * 4 * 4), digits(20);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 7);
  for (size_t i = 0; i < digits.size(); ++i) digits[i] = static_cast<uint8_t>(i % 10);
  write_idx(dir_ / "images-idx3-ubyte", {20, 4, 4}, pixels);
  write_idx(dir_ / "labels-idx1-ubyte", {20}, digits);
  for (const char* c : {"cat", "dog", ".hidden"}) fs::create_directories(dir_ / "img" / c);
  write_png((dir_ / "img/cat/a.png").string(), 8, 8, 10);
  write_png((dir_ / "img/cat/b.png").string(), 16, 4, 50);
  write_png((dir_ / "img/dog/c.png").string(), 8, 8, 200);
  write_png((dir_ / "img/dog/.d.png").string(), 8, 8, 90);     // hidden: not read
  write_png((dir_ / "img/.hidden/e.png").string(), 8, 8, 90);  // hidden: not read
  std::ofstream(dir_ / "img/dog/notes.txt") << "not an image";
  std::ofstream(dir_ / "t.csv") << "a,b,label\n1.5,x,0\n2,y,1\n-3,x,0\n4,z,1\n5,y,0\n";
  std::ofstream(dir_ / "s.yaml") << "columns:\n  - {name: a, type: float64, min: 0}\n"
                                    "  - {name: b, type: string, allowed: [x, y]}\npolicy: "
                                    "quarantine\n";
  struct Case {
    std::string name, args;
    int64_t rows;
  };
  std::string p = dir_.string() + "/";
  std::vector<Case> cases = {
      {"arr", p + "feat.npy --labels " + p + "lab.npy", 60},
      {"mnist", p + "images-idx3-ubyte --labels " + p + "labels-idx1-ubyte", 20},
      {"pets", p + "img --image-size 4x4", 3},
      {"tab", p + "t.csv --schema " + p + "s.yaml --split 0.5,0.5", 3},
  };
  for (const Case& c : cases) {
    nlohmann::json done[2];
    int k = 0;
    for (const std::string& where : {s, d}) {
      RanApart r =
          sh_apart(env, "data push " + c.args + " --name " + c.name + " --json" + where, dir_);
      ASSERT_EQ(r.code, 0) << c.name << where << "\n" << r.out << r.err;
      std::istringstream lines(r.out);
      std::string line;
      nlohmann::json last_progress;
      while (std::getline(lines, line)) {
        auto j = nlohmann::json::parse(line);
        if (j["event"] == "progress") last_progress = j;
        if (j["event"] == "done") done[k] = j;
      }
      if (where == s) {  // the last progress event: every byte of every file sent
        EXPECT_EQ(last_progress["done"], last_progress["total"]) << r.out;
        EXPECT_EQ(last_progress["files"], c.name == "pets" ? 3 : 2) << r.out;
      }
      for (const char* key : {"id", "seconds"}) done[k].erase(key);
      ++k;
    }
    EXPECT_EQ(done[0], done[1]) << c.name;
    EXPECT_EQ(done[0]["rows"], c.rows) << c.name;
    auto show = [&](const std::string& where) {
      RanApart r = sh_apart(env, "data show " + c.name + " --json" + where, dir_);
      EXPECT_EQ(r.code, 0) << r.err;
      auto j = nlohmann::json::parse(r.out);
      for (const char* key : {"created_ms", "id", "author", "stats_id"}) j.erase(key);
      return j;
    };
    nlohmann::json shown = show(s);
    EXPECT_EQ(shown, show(d)) << c.name;
    EXPECT_EQ(shown["rows"], c.rows);
    EXPECT_FALSE(shown["shards"].empty());
  }
  // The schema file's rules and policy applied on the server: the bad rows are quarantined.
  RanApart q = sh_apart(env, "data show tab.quarantine --json" + s, dir_);
  ASSERT_EQ(q.code, 0) << q.err;
  EXPECT_EQ(nlohmann::json::parse(q.out)["rows"], 2);
  // The image folder: classes and files as a local push reads them (hidden ones left out).
  nlohmann::json pets = nlohmann::json::parse(sh_apart(env, "data show pets --json" + s, dir_).out);
  EXPECT_EQ(pets["source"]["classes"], nlohmann::json({"cat", "dog"}));
  EXPECT_EQ(pets["source"]["path"], p + "img");
  // Tensor columns pulled as .npy through the server: the local pull's bytes.
  for (const std::string& name : {std::string("pets"), std::string("mnist")}) {
    fs::path a = dir_ / "pull_s", b = dir_ / "pull_d";
    ASSERT_EQ(sh_apart(env, "data pull " + name + " --format npy -o " + a.string() + s, dir_).code,
              0);
    ASSERT_EQ(sh_apart(env, "data pull " + name + " --format npy -o " + b.string() + d, dir_).code,
              0);
    for (const char* f : {"image.npy", "label.npy"}) {
      EXPECT_FALSE(read_bytes(b / f).empty()) << name << " " << f;
      EXPECT_EQ(read_bytes(a / f), read_bytes(b / f)) << name << " " << f;
    }
    fs::remove_all(a);
    fs::remove_all(b);
  }
  // Errors: the local push's, found before anything is sent (or by the server, naming the
  // user's files, never its staging directory).
  for (const std::string& args :
       {p + "feat.npy --labels " + p + "short.npy --name arr",
        p + "t.csv --schema " + p + "nope.yaml --name tab", p + "empty_dir --name e"}) {
    if (args.find("empty_dir") != std::string::npos) fs::create_directories(dir_ / "empty_dir");
    RanApart rs = sh_apart(env, "data push " + args + s, dir_);
    RanApart rd = sh_apart(env, "data push " + args + d, dir_);
    EXPECT_EQ(rs.code, 1) << args;
    EXPECT_EQ(rd.code, 1) << args;
    EXPECT_EQ(rs.err, rd.err) << args;
  }
  std::ofstream(dir_ / "strict.yaml") << "columns:\n  - {name: a, type: float64, min: 0}\n";
  RanApart strict_s = sh_apart(
      env, "data push " + p + "t.csv --schema " + p + "strict.yaml" + " --name strict" + s, dir_);
  RanApart strict_d = sh_apart(
      env, "data push " + p + "t.csv --schema " + p + "strict.yaml" + " --name strict" + d, dir_);
  EXPECT_EQ(strict_s.code, 1);
  EXPECT_EQ(strict_s.err, strict_d.err);
  EXPECT_EQ(strict_s.err.find(srv), std::string::npos) << strict_s.err;
  // An image the server cannot decode: the local push's error.
  fs::create_directories(dir_ / "img2/cat");
  write_png((dir_ / "img2/cat/a.png").string(), 8, 8, 10);
  std::ofstream(dir_ / "img2/cat/b.jpg") << "not a jpeg";
  RanApart broken_s = sh_apart(env, "data push " + p + "img2 --name broken" + s, dir_);
  RanApart broken_d = sh_apart(env, "data push " + p + "img2 --name broken" + d, dir_);
  EXPECT_EQ(broken_s.code, 1);
  EXPECT_NE(broken_s.err.find("JPEG decode failed"), std::string::npos) << broken_s.err;
  EXPECT_EQ(broken_s.err, broken_d.err);
  // Nothing stays staged on the server, whatever happened.
  EXPECT_TRUE(fs::is_empty(fs::path(srv) / "datasets" / "uploads"));
  // `data gc` on a data directory removes staged uploads untouched for an hour (a server's
  // client that died), not younger ones.
  fs::path uploads = dir_ / "local" / "datasets" / "uploads";
  for (char c : {'a', 'b'}) {
    fs::create_directories(uploads / std::string(32, c));
    std::ofstream(uploads / std::string(32, c) / "input.csv") << "x\n1\n";
  }
  fs::last_write_time(uploads / std::string(32, 'a'),
                      fs::file_time_type::clock::now() - std::chrono::hours(2));
  RanApart gc = sh_apart(env, "data gc --json" + d, dir_);
  ASSERT_EQ(gc.code, 0) << gc.err;
  auto freed = nlohmann::json::parse(gc.out);
  EXPECT_EQ(freed["uploads_removed"], 1) << gc.out;
  EXPECT_EQ(freed["uploads_freed_bytes"], 4) << gc.out;
  EXPECT_FALSE(fs::exists(uploads / std::string(32, 'a')));
  EXPECT_TRUE(fs::exists(uploads / std::string(32, 'b')));
}

// `dlsys train --server` reads data.dataset on that server (a dataset pushed only there), and
// the events and the lineage name the server's versions.
TEST_F(Cli, TrainWithAServerReadsTheServersDatasets) {
  std::string srv = (dir_ / "srv").string(), home = (dir_ / "home").string();
  Server server(srv);
  ASSERT_TRUE(server.up());
  std::string env = "DLSYS_HOME=" + home, s = " --server " + server.url();
  // v1: the first 1000 rows; v2: all of them. Training on v2 makes the local cache's first
  // version the server's second, so a label that is not translated shows.
  std::string csv = std::string(DLSYS_SHARED_DIR) + "/data/digits/digits.csv";
  {
    std::ifstream in(csv);
    std::ofstream out(dir_ / "part.csv");
    std::string line;
    for (int i = 0; i < 1000 && std::getline(in, line); ++i) out << line << "\n";
  }
  ASSERT_EQ(
      sh_apart(env,
               "data push " + (dir_ / "part.csv").string() + " --name digits --split 0.8,0.2" + s,
               dir_)
          .code,
      0);
  ASSERT_EQ(sh_apart(env, "data push " + csv + " --name digits --split 0.8,0.2" + s, dir_).code, 0);
  std::string spec = dataset_spec(dir_, "digits@v2");
  RanApart tr = sh_apart(
      env, "train " + spec + " --epochs 2 --json --threads 2 --out " + (dir_ / "run").string() + s,
      dir_);
  ASSERT_EQ(tr.code, 0) << tr.out << tr.err;
  auto done = nlohmann::json::parse(tr.out.substr(tr.out.rfind("{\"data\"")));
  EXPECT_EQ(done["data"]["dataset"], "digits@v2:train");
  EXPECT_EQ(done["data"]["validation"], "digits@v2:validation");
  EXPECT_GT(done["metrics"]["val_accuracy"].get<double>(), 0.5);
  // Lineage on the server: digits@v2 -> run 1.
  auto c = api::connect_http(server.url(), "");
  ASSERT_TRUE(c.ok()) << c.status().message();
  auto lin = (*c)->call("GET", "/api/v1/lineage/dataset_version/digits@v2?depth=1");
  ASSERT_TRUE(lin.ok()) << lin.status().message();
  bool has_run = false;
  for (const auto& n : (*lin)["nodes"]) has_run = has_run || (n["kind"] == "run" && n["id"] == "1");
  EXPECT_TRUE(has_run) << lin->dump();
  // The local store was not used: no dataset there, the run is on the server only.
  EXPECT_FALSE(fs::exists(home + "/datasets/refs/digits"));
  EXPECT_FALSE(fs::exists(home + "/meta.db"));
  // Again: the copy is reused (the server's shards are not fetched twice) and still correct.
  RanApart again = sh_apart(
      env, "train " + spec + " --epochs 1 --json --threads 2 --out " + (dir_ / "run2").string() + s,
      dir_);
  ASSERT_EQ(again.code, 0) << again.err;
  auto done2 = nlohmann::json::parse(again.out.substr(again.out.rfind("{\"data\"")));
  EXPECT_EQ(done2["data"]["dataset"], "digits@v2:train");
  // A cached copy that lost a shard (a `data gc` that ran meanwhile) is fetched again, never
  // trusted as it is.
  fs::path cache = fs::path(home) / "cache";
  std::vector<fs::path> shards;
  for (const auto& e : fs::recursive_directory_iterator(cache))
    if (e.is_regular_file() && e.path().parent_path().parent_path().filename() == "shards")
      shards.push_back(e.path());
  ASSERT_FALSE(shards.empty());
  for (const auto& f : shards) fs::remove(f);
  RanApart refetch = sh_apart(
      env, "train " + spec + " --epochs 1 --json --threads 2 --out " + (dir_ / "run3").string() + s,
      dir_);
  ASSERT_EQ(refetch.code, 0) << refetch.err;
  for (const auto& f : shards) EXPECT_TRUE(fs::exists(f)) << f;
  // `data gc` removes the train cache and says what it freed.
  RanApart gc = sh_apart(env, "data gc --json --quiet", dir_);
  ASSERT_EQ(gc.code, 0) << gc.err;
  auto freed = nlohmann::json::parse(gc.out);
  EXPECT_EQ(freed["cache_removed"], 1) << gc.out;
  EXPECT_GT(freed["cache_freed_bytes"].get<int64_t>(), 0) << gc.out;
  EXPECT_EQ(freed["cache_dir"], cache.string());
  EXPECT_TRUE(fs::is_empty(cache));
  RanApart gc_text = sh_apart(env, "data gc --quiet", dir_);
  EXPECT_EQ(gc_text.out, "freed 0 B\nfreed 0 B of cached server versions (0 server cache(s) in " +
                             cache.string() + ")\n");
  RanApart after = sh_apart(
      env, "train " + spec + " --epochs 1 --json --threads 2 --out " + (dir_ / "run4").string() + s,
      dir_);
  ASSERT_EQ(after.code, 0) << after.err;
  EXPECT_FALSE(fs::is_empty(cache));
  // A ref the server lacks: the error names the server.
  RanApart missing =
      sh_apart(env, "train " + dataset_spec(dir_, "digits@v7") + " --epochs 1" + s, dir_);
  EXPECT_EQ(missing.code, 1) << missing.out << missing.err;
  EXPECT_NE(missing.err.find("on the server at " + server.url()), std::string::npos) << missing.err;
  EXPECT_NE(missing.err.find("digits has v1..v2"), std::string::npos) << missing.err;
}

}  // namespace
}  // namespace dlsys
