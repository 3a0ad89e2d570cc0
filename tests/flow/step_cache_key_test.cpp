// The step cache key (flow/step_cache_key.h): the same step is the same key whatever the order
// of its parameters, inputs and files; a changed parameter, a changed input version and a
// changed code file are each another key; a step with a reference left or a code file gone has
// none.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/sha256.h"
#include "flow/step_cache_key.h"

namespace dlsys::flow {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class StepCacheKey : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dlsys-cachekey-" + std::to_string(getpid()));
    fs::create_directories(dir_);
    std::ofstream(dir_ / "train.py") << "print('train')\n";
    std::ofstream(dir_ / "util.py") << "X = 1\n";
    base_.kind = "command";
    base_.params = {{"command", {"python3", "train.py"}}, {"lr", 0.1}, {"epochs", 3}};
    base_.inputs = {"dataset digits@3 4e8bf56345f7", "model digits@7 " + sha256_hex("weights")};
    base_.code_files = {(dir_ / "train.py").string(), (dir_ / "util.py").string()};
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string key(const StepCacheInputs& in) {
    auto k = step_cache_key(in);
    EXPECT_TRUE(k.ok()) << k.status().to_string();
    return k.ok() ? *k : "";
  }
  fs::path dir_;
  StepCacheInputs base_;
};

TEST_F(StepCacheKey, TheSameStepIsTheSameKeyInAnyOrder) {
  const std::string k = key(base_);
  EXPECT_TRUE(is_sha256_hex(k)) << k;
  EXPECT_EQ(key(base_), k) << "deterministic";
  StepCacheInputs shuffled = base_;
  shuffled.params = json::parse(R"({"epochs": 3, "lr": 0.1, "command": ["python3", "train.py"]})");
  std::reverse(shuffled.inputs.begin(), shuffled.inputs.end());
  std::reverse(shuffled.code_files.begin(), shuffled.code_files.end());
  shuffled.code_files.push_back(shuffled.code_files.front());  // named twice
  EXPECT_EQ(key(shuffled), k);
}

TEST_F(StepCacheKey, AChangedParameterInputVersionOrCodeFileIsAnotherKey) {
  const std::string k = key(base_);
  StepCacheInputs param = base_;
  param.params["lr"] = 0.2;
  EXPECT_NE(key(param), k) << "a changed parameter";
  StepCacheInputs type = base_;
  type.params["epochs"] = "3";
  EXPECT_NE(key(type), k) << "3 and \"3\" are different values";
  StepCacheInputs input = base_;
  input.inputs[0] = "dataset digits@4 9c01d2e3f4a5";
  EXPECT_NE(key(input), k) << "a changed input version";
  StepCacheInputs kind = base_;
  kind.kind = "train";
  EXPECT_NE(key(kind), k);
  // The code: one byte of a file the step names.
  std::ofstream(dir_ / "util.py") << "X = 2\n";
  EXPECT_NE(key(base_), k) << "a changed code file";
  std::ofstream(dir_ / "util.py") << "X = 1\n";
  EXPECT_EQ(key(base_), k) << "changed back: the same key";
  // Parts cannot run into each other: moving text between two inputs changes the key.
  StepCacheInputs a = base_, b = base_;
  a.inputs = {"ab", "c"};
  b.inputs = {"a", "bc"};
  EXPECT_NE(key(a), key(b));
}

TEST_F(StepCacheKey, AReferenceLeftOrAMissingCodeFileHasNoKey) {
  StepCacheInputs unresolved = base_;
  unresolved.params["dataset"] = "${steps.push.outputs.dataset}";
  auto k = step_cache_key(unresolved);
  ASSERT_FALSE(k.ok());
  EXPECT_NE(k.status().message().find("still holds a reference"), std::string::npos)
      << k.status().message();
  fs::remove(dir_ / "util.py");
  k = step_cache_key(base_);
  ASSERT_FALSE(k.ok());
  EXPECT_NE(k.status().message().find("util.py"), std::string::npos) << k.status().message();
}

}  // namespace
}  // namespace dlsys::flow
