// The checkpoint unit (src/train/checkpoint.h) on its own: round trips, the keep-newest-three
// policy, leftovers of a killed writer, rewriting a step, and the errors of --resume.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/file_util.h"
#include "train/checkpoint.h"

namespace dlsys::train {
namespace {

namespace fs = std::filesystem;

Tensor filled(const Shape& s, float v) {
  Tensor t = Tensor::zeros(DType::kF32, s);
  for (int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = v + static_cast<float>(i);
  return t;
}

Checkpoint make(int64_t step, float v) {
  Checkpoint c;
  c.step = step;
  c.position = {step / 10, step % 10};
  c.optimizer_steps = step;
  c.spec_sha256 = "abc";
  c.extend_sha256 = "abc-without-epochs";
  c.params["layers.0.weight"] = filled({2, 3}, v);
  c.params["layers.0.bias"] = filled({2}, v + 10);
  c.buffers["layers.1.running_mean"] = filled({2}, v + 20);
  c.optimizer_state["layers.0.weight.momentum"] = filled({2, 3}, v + 30);
  return c;
}

std::vector<std::string> folders(const std::string& run) {
  std::vector<std::string> out;
  for (auto& e : fs::directory_iterator(run + "/checkpoints"))
    if (e.is_directory()) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    run_ = (fs::temp_directory_path() / ("dlsys-ckpt-" + random_hex(6))).string();
    fs::create_directories(run_);
  }
  void TearDown() override { fs::remove_all(run_); }
  std::string run_;
};

TEST_F(CheckpointTest, RoundTripsEveryTensorAndTheState) {
  ASSERT_TRUE(write_checkpoint(run_, make(20, 1.f)).ok());
  EXPECT_EQ(*read_file(run_ + "/checkpoints/latest"), "step-20");
  auto state = nlohmann::json::parse(*read_file(run_ + "/checkpoints/step-20/state.json"));
  EXPECT_EQ(state, nlohmann::json::parse(R"({"step": 20, "loader": {"epoch": 2, "batch": 0},
                                             "optimizer_steps": 20, "spec_sha256": "abc",
                                             "extend_sha256": "abc-without-epochs"})"));
  auto c = read_latest_checkpoint(run_);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->step, 20);
  EXPECT_EQ(c->position, (data::LoaderPosition{2, 0}));
  EXPECT_EQ(c->optimizer_steps, 20);
  EXPECT_EQ(c->spec_sha256, "abc");
  EXPECT_EQ(c->extend_sha256, "abc-without-epochs");
  Checkpoint want = make(20, 1.f);
  for (auto maps : {std::pair{&c->params, &want.params}, std::pair{&c->buffers, &want.buffers},
                    std::pair{&c->optimizer_state, &want.optimizer_state}}) {
    ASSERT_EQ(maps.first->size(), maps.second->size());
    for (auto& [name, t] : *maps.second) {
      ASSERT_TRUE(maps.first->count(name)) << name;
      const Tensor& got = maps.first->at(name);
      ASSERT_EQ(got.shape(), t.shape()) << name;
      EXPECT_EQ(std::memcmp(got.data(), t.data(), t.nbytes()), 0) << name;
    }
  }
}

TEST_F(CheckpointTest, KeepsTheNewestThreeAndClearsWhatAKilledWriterLeft) {
  for (int64_t s : {10, 20, 30}) ASSERT_TRUE(write_checkpoint(run_, make(s, 1.f)).ok());
  // A writer killed before its rename leaves a temporary folder (removed once it is 10 minutes
  // old: a recent one may be another writer's, filling it now); one killed between the two
  // renames of a rewrite leaves a step-N.old beside a complete step-N.
  fs::create_directories(run_ + "/checkpoints/.tmp-dead00");
  fs::last_write_time(run_ + "/checkpoints/.tmp-dead00",
                      fs::file_time_type::clock::now() - std::chrono::minutes(11));
  fs::create_directories(run_ + "/checkpoints/.tmp-busy00");
  fs::create_directories(run_ + "/checkpoints/step-20.old");
  for (int64_t s : {40, 100}) ASSERT_TRUE(write_checkpoint(run_, make(s, 1.f)).ok());
  EXPECT_EQ(folders(run_),
            (std::vector<std::string>{".tmp-busy00", "step-100", "step-30", "step-40"}));
  EXPECT_EQ(*read_file(run_ + "/checkpoints/latest"), "step-100");
}

TEST_F(CheckpointTest, NeverRemovesTheFolderLatestNames) {
  // A run started over in a directory that holds a longer run's checkpoints.
  for (int64_t s : {200, 300, 400}) ASSERT_TRUE(write_checkpoint(run_, make(s, 1.f)).ok());
  ASSERT_TRUE(write_checkpoint(run_, make(10, 2.f)).ok());
  EXPECT_EQ(*read_file(run_ + "/checkpoints/latest"), "step-10");
  EXPECT_EQ(folders(run_), (std::vector<std::string>{"step-10", "step-300", "step-400"}));
  auto c = read_latest_checkpoint(run_);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->step, 10);
}

TEST_F(CheckpointTest, RewritingAStepReplacesItAndAKillBetweenTheRenamesReadsTheOldOne) {
  ASSERT_TRUE(write_checkpoint(run_, make(10, 1.f)).ok());
  ASSERT_TRUE(write_checkpoint(run_, make(10, 5.f)).ok());
  EXPECT_EQ(folders(run_), (std::vector<std::string>{"step-10"}));
  auto c = read_latest_checkpoint(run_);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->params.at("layers.0.bias").data_as<float>()[0], 15.f);
  // Killed after step-10 went aside and before the new folder was renamed in.
  fs::rename(run_ + "/checkpoints/step-10", run_ + "/checkpoints/step-10.old");
  c = read_latest_checkpoint(run_);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->params.at("layers.0.bias").data_as<float>()[0], 15.f);
}

TEST_F(CheckpointTest, ResumeRestoresInPlaceAndNamesWhatDoesNotFit) {
  ASSERT_TRUE(write_checkpoint(run_, make(30, 1.f)).ok());
  Tensor w = Tensor::zeros(DType::kF32, {2, 3}), b = Tensor::zeros(DType::kF32, {2});
  Tensor mean = Tensor::zeros(DType::kF32, {2});
  Tensor w_view = w;  // a view of the same storage sees the restored values
  auto opt = Optimizer::make({});
  ASSERT_TRUE(opt.ok());
  ResumeTarget t{
      {{"layers.0.weight", &w}, {"layers.0.bias", &b}}, {{"layers.1.running_mean", &mean}}, &*opt};
  auto c = resume_from_checkpoint(run_, "abc", t);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->step, 30);
  EXPECT_EQ(w_view.data_as<float>()[5], 6.f);
  EXPECT_EQ(b.data_as<float>()[1], 12.f);
  EXPECT_EQ(mean.data_as<float>()[0], 21.f);
  EXPECT_EQ(opt->steps(), 30);
  EXPECT_EQ(opt->state().at("layers.0.weight.momentum").data_as<float>()[0], 31.f);

  auto changed = resume_from_checkpoint(run_, "other", t);
  ASSERT_FALSE(changed.ok());
  EXPECT_NE(changed.status().message().find("the spec changed since the checkpoint in"),
            std::string::npos)
      << changed.status().message();
  Tensor wide = Tensor::zeros(DType::kF32, {2, 4});
  t.params["layers.0.weight"] = &wide;
  auto shape = resume_from_checkpoint(run_, "abc", t);
  ASSERT_FALSE(shape.ok());
  EXPECT_NE(shape.status().message().find("no parameter 'layers.0.weight' of shape [2, 4]"),
            std::string::npos)
      << shape.status().message();
  t.params = {};
  Tensor var = Tensor::zeros(DType::kF32, {2});
  t.buffers["layers.1.running_var"] = &var;
  auto missing = resume_from_checkpoint(run_, "abc", t);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("no running statistic 'layers.1.running_var'"),
            std::string::npos)
      << missing.status().message();

  auto none = resume_from_checkpoint(run_ + "/nowhere", "abc", t);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("has no checkpoint (checkpoints/latest is missing); "
                                         "start without --resume"),
            std::string::npos)
      << none.status().message();
  std::ofstream(run_ + "/checkpoints/step-30/state.json") << "{\"step\": 30}";
  auto bad = read_latest_checkpoint(run_);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("is not a checkpoint state"), std::string::npos)
      << bad.status().message();
}

}  // namespace
}  // namespace dlsys::train
