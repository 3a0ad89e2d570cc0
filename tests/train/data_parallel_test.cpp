// Data-parallel training through the real command: `dlsys train SPEC --nproc N` starts N rank
// processes joined over loopback (dist/process_group.h). With train.micro_batches, the model
// trained on 1, 2 and 4 workers is the same file, byte for byte, as the one a plain single
// process trains: an MLP, and a CNN with batch norm (running statistics gathered and folded in
// micro-batch order) and dropout (masks seeded per micro-batch). Wrong settings fail with the
// reason, naming the rank.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/sha256.h"

namespace {

namespace fs = std::filesystem;

struct Ran {
  int code = -1;
  std::string output;
};

// Runs `dlsys ARGS...` with its output captured.
Ran dlsys(const std::vector<std::string>& args) {
  std::string cmd = DLSYS_BIN;
  for (const std::string& a : args) cmd += " '" + a + "'";
  cmd += " 2>&1";
  Ran r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), p)) > 0;) r.output.append(buf, n);
  int st = ::pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::string file_sha(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(f)), {});
  return s.empty() ? "(missing " + p.string() + ")" : dlsys::sha256_hex(s);
}

class DataParallel : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dlsys-dp-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path write_spec(const std::string& name, const std::string& text) {
    fs::path p = dir_ / (name + ".yaml");
    std::ofstream(p) << text;
    return p;
  }

  // The model trained by `spec` alone and on 1, 2 and 4 workers: the same bytes.
  void expect_identical(const fs::path& spec, const std::vector<int>& workers) {
    const fs::path plain = dir_ / (spec.stem().string() + "-plain");
    Ran r = dlsys({"train", spec.string(), "--out", plain.string(), "--quiet"});
    ASSERT_EQ(r.code, 0) << r.output;
    const std::string want = file_sha(plain / "model.onnx");
    for (int n : workers) {
      const fs::path out = dir_ / (spec.stem().string() + "-n" + std::to_string(n));
      Ran d = dlsys({"train", spec.string(), "--out", out.string(), "--nproc", std::to_string(n)});
      ASSERT_EQ(d.code, 0) << n << " workers:\n" << d.output;
      EXPECT_EQ(file_sha(out / "model.onnx"), want)
          << n << " workers trained other weights than one process";
      EXPECT_NE(d.output.find("validation accuracy"), std::string::npos) << d.output;
    }
  }

  fs::path dir_;
};

const std::string kData = std::string("data: {train: ") + DLSYS_SHARED_DIR +
                          "/data/digits/digits.csv, feature_scale: 0.0625, "
                          "validation_fraction: 0.2, split_seed: 0}\n";

TEST_F(DataParallel, AnMlpTrainsToTheSameBytesOnOneTwoAndFourWorkers) {
  fs::path spec = write_spec("mlp", kData + R"(model:
  input: [64]
  layers:
    - linear: {out: 64}
    - relu
    - linear: {out: 10}
train:
  epochs: 2
  batch_size: 50
  seed: 3
  micro_batches: 4
  optimizer: {name: adam, lr: 0.002}
  clip_grad_norm: 1.0
)");
  expect_identical(spec, {1, 2, 4});
}

TEST_F(DataParallel, BatchNormAndDropoutTrainToTheSameBytesOnTwoWorkers) {
  fs::path spec = write_spec("cnn", kData + R"(model:
  input: [1, 8, 8]
  layers:
    - conv2d: {out: 4, kernel: 3, padding: 1, bias: false}
    - batchnorm
    - relu
    - dropout: {p: 0.2}
    - flatten
    - linear: {out: 16}
    - batchnorm
    - relu
    - linear: {out: 10}
train:
  epochs: 1
  batch_size: 32
  seed: 5
  micro_batches: 2
  optimizer: {name: adamw, lr: 0.003, weight_decay: 0.01}
)");
  expect_identical(spec, {2});
}

TEST_F(DataParallel, WorkerCountsThatCannotShareTheBatchAreRefused) {
  fs::path spec = write_spec("bad", kData + R"(model:
  input: [64]
  layers: [{linear: {out: 10}}]
train: {epochs: 1, batch_size: 16, micro_batches: 2}
)");
  Ran three = dlsys({"train", spec.string(), "--out", (dir_ / "b3").string(), "--nproc", "3"});
  EXPECT_NE(three.code, 0);
  EXPECT_NE(three.output.find("power of two of workers"), std::string::npos) << three.output;
  EXPECT_NE(three.output.find("rank"), std::string::npos) << three.output;
  Ran four = dlsys({"train", spec.string(), "--out", (dir_ / "b4").string(), "--nproc", "4"});
  EXPECT_NE(four.code, 0);
  EXPECT_NE(four.output.find("train.micro_batches, a multiple of 4"), std::string::npos)
      << four.output;
  Ran half = dlsys({"train", spec.string(), "--rank", "0", "--world-size", "2"});
  EXPECT_NE(half.code, 0);
  EXPECT_NE(half.output.find("--rendezvous"), std::string::npos) << half.output;
}

}  // namespace
