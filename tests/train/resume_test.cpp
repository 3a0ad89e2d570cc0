// Kills `dlsys train` with SIGKILL in the middle of a run, resumes it from its newest
// checkpoint, and checks that the loss at every step after the checkpoint equals the loss of an
// uninterrupted run with the same seed (fp32, the same thread count), bit for bit, and that the
// final validation metrics are the same: for the digits MLP, and for a CNN with dropout, batch
// norm, gradient accumulation, AdamW and a cosine schedule.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>

#include "core/file_util.h"

namespace dlsys {
namespace {

namespace fs = std::filesystem;

struct Events {
  std::map<int64_t, double> loss;  // step -> loss
  nlohmann::json done;
  bool killed = false;
};

// Runs dlsys with `args`; with kill_at >= 0, SIGKILLs it once a step event >= kill_at arrives.
Events run(const std::vector<std::string>& args, int64_t kill_at = -1) {
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> argv = {const_cast<char*>(DLSYS_BIN)};
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(DLSYS_BIN, argv.data());
    _exit(127);
  }
  close(fds[1]);
  FILE* f = fdopen(fds[0], "r");
  Events ev;
  char* line = nullptr;
  size_t cap = 0;
  while (getline(&line, &cap, f) > 0) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) continue;
    if (j["event"] == "step") {
      ev.loss[j["step"].get<int64_t>()] = j["loss"].get<double>();
      if (kill_at >= 0 && j["step"].get<int64_t>() >= kill_at && !ev.killed) {
        kill(pid, SIGKILL);
        ev.killed = true;
      }
    } else if (j["event"] == "done") {
      ev.done = j;
    }
  }
  free(line);
  fclose(f);
  int st = 0;
  waitpid(pid, &st, 0);
  if (kill_at < 0) {
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "dlsys train failed";
  }
  if (ev.killed) {
    EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
  }
  return ev;
}

// Trains `spec_text` to the end, then again with a SIGKILL once step `kill_at` is reported,
// resumes that run and compares every later loss and the final metrics.
void check_resume(const std::string& spec_text, int64_t epochs, int64_t checkpoint_every,
                  int64_t kill_at) {
  std::string dir = (fs::temp_directory_path() / ("dlsys-resume-" + random_hex(6))).string();
  fs::create_directories(dir);
  std::string spec = dir + "/spec.yaml";
  ASSERT_TRUE(write_file_atomic(spec, spec_text).ok());
  std::vector<std::string> common = {"train",
                                     spec,
                                     "--epochs",
                                     std::to_string(epochs),
                                     "--json",
                                     "--log-every",
                                     "1",
                                     "--threads",
                                     "2",
                                     "--checkpoint-every",
                                     std::to_string(checkpoint_every)};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = common;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  Events full = run(with({"--out", dir + "/full"}));
  ASSERT_FALSE(full.done.is_null());
  int64_t total = full.done["steps"];
  ASSERT_EQ(static_cast<int64_t>(full.loss.size()), total);
  ASSERT_GT(total, kill_at + checkpoint_every);

  Events killed = run(with({"--out", dir + "/killed"}), kill_at);
  ASSERT_TRUE(killed.killed) << "the run ended before it could be killed";
  ASSERT_TRUE(fs::exists(dir + "/killed/checkpoints/latest"));
  Events resumed = run(with({"--resume", dir + "/killed"}));
  ASSERT_FALSE(resumed.done.is_null());
  ASSERT_FALSE(resumed.loss.empty());
  int64_t first = resumed.loss.begin()->first;
  EXPECT_EQ(first % checkpoint_every, 0) << "resumed from a step that is not a checkpoint";
  EXPECT_LE(first, killed.loss.rbegin()->first) << "resumed after the kill point";
  EXPECT_EQ(resumed.loss.rbegin()->first, total - 1);
  for (auto& [step, loss] : resumed.loss)
    ASSERT_EQ(loss, full.loss.at(step)) << "step " << step << " differs after resume";
  EXPECT_EQ(resumed.done["metrics"], full.done["metrics"]);
  fs::remove_all(dir);
}

TEST(Resume, SigkillThenResumeReproducesEveryLaterLoss) {
  auto text = read_file(std::string(DLSYS_SOURCE_DIR) + "/examples/digits/mlp.yaml");
  ASSERT_TRUE(text.ok());
  // The spec stops early at 97%; 100 epochs need no early stop.
  std::string s = *text;
  s.replace(s.find("target_accuracy: 0.97"), 21, "target_accuracy: 0");
  s.replace(s.find("../../../shared"), 15, DLSYS_SHARED_DIR);
  check_resume(s, 100, 25, 400);
}

// Dropout masks (seeded by step), batch-norm running statistics (checkpointed as buffers) and
// accumulated gradients (steps end on checkpoint boundaries) survive the kill as well.
TEST(Resume, DropoutBatchNormAndAccumulationResumeExactly) {
  std::string spec = std::string("data: {train: ") + DLSYS_SHARED_DIR +
                     R"(/data/digits/digits.csv, feature_scale: 0.0625}
model:
  input: [1, 8, 8]
  layers:
    - conv2d: {out: 8, kernel: 3, padding: 1, bias: false}
    - batchnorm
    - relu
    - dropout: {p: 0.2}
    - flatten
    - linear: {out: 32}
    - batchnorm
    - relu
    - dropout: {p: 0.3}
    - linear: {out: 10}
train:
  batch_size: 32
  accumulate_steps: 2
  seed: 5
  optimizer: {name: adamw, lr: 0.003, weight_decay: 0.01}
  schedule: {name: cosine, warmup_steps: 10}
)";
  check_resume(spec, 6, 10, 70);
}

// A finished run trained further (--extend with more epochs: a promoted search trial) reaches
// the steps and metrics of a run started with those epochs; a cosine schedule, whose rates
// depend on the number of epochs, refuses.
TEST(Resume, ExtendingAFinishedRunEqualsTrainingLongerFromTheStart) {
  auto text = read_file(std::string(DLSYS_SOURCE_DIR) + "/examples/digits/mlp.yaml");
  ASSERT_TRUE(text.ok());
  std::string s = *text;
  s.replace(s.find("target_accuracy: 0.97"), 21, "target_accuracy: 0");
  s.replace(s.find("../../../shared"), 15, DLSYS_SHARED_DIR);
  std::string dir = (fs::temp_directory_path() / ("dlsys-extend-" + random_hex(6))).string();
  fs::create_directories(dir);
  ASSERT_TRUE(write_file_atomic(dir + "/spec.yaml", s).ok());
  auto args = [&](const std::string& out, int epochs, std::vector<std::string> extra) {
    std::vector<std::string> a = {"train",
                                  dir + "/spec.yaml",
                                  "--set",
                                  "epochs=" + std::to_string(epochs),
                                  "--json",
                                  "--log-every",
                                  "1",
                                  "--threads",
                                  "1",
                                  "--checkpoint-every",
                                  "20",
                                  "--out",
                                  dir + "/" + out};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  Events full = run(args("full", 5, {}));
  Events first = run(args("grown", 2, {}));
  ASSERT_FALSE(first.done.is_null());
  Events grown = run(args("grown", 5, {"--auto-resume", "--extend"}));
  ASSERT_FALSE(grown.done.is_null());
  ASSERT_FALSE(grown.loss.empty());
  EXPECT_EQ(grown.loss.begin()->first, first.done["steps"].get<int64_t>())
      << "the extended run did not start after the first one's last step";
  for (auto& [step, loss] : grown.loss)
    ASSERT_EQ(loss, full.loss.at(step)) << "step " << step << " differs from the longer run";
  EXPECT_EQ(grown.done["metrics"], full.done["metrics"]);
  EXPECT_EQ(read_file(dir + "/grown/model.onnx").value(),
            read_file(dir + "/full/model.onnx").value());

  // Without --extend the changed epochs are a changed spec.
  int64_t pid_rc = 0;
  {
    std::string cmd =
        std::string(DLSYS_BIN) + " train " + dir + "/spec.yaml --set epochs=7 --out " + dir +
        "/grown --auto-resume --checkpoint-every 20 --threads 1 --quiet >/dev/null 2>" + dir +
        "/err";
    pid_rc = std::system(cmd.c_str());
  }
  EXPECT_NE(pid_rc, 0);
  EXPECT_NE(read_file(dir + "/err").value().find("--extend"), std::string::npos)
      << read_file(dir + "/err").value();
  // Fewer epochs than the checkpoint has done is refused, not exported as if trained so.
  {
    std::string cmd = std::string(DLSYS_BIN) + " train " + dir +
                      "/spec.yaml --set epochs=2 --out " + dir +
                      "/grown --auto-resume --extend --checkpoint-every 20 --threads 1 "
                      "--quiet >/dev/null 2>" +
                      dir + "/err";
    EXPECT_NE(std::system(cmd.c_str()), 0);
    EXPECT_NE(read_file(dir + "/err").value().find("past train.epochs = 2"), std::string::npos)
        << read_file(dir + "/err").value();
  }
  // A cosine schedule refuses even with --extend.
  std::string cos = s;
  cos.replace(cos.find("schedule: {name: constant}"), 26, "schedule: {name: cosine}");
  ASSERT_TRUE(write_file_atomic(dir + "/cos.yaml", cos).ok());
  std::string base = std::string(DLSYS_BIN) + " train " + dir + "/cos.yaml --out " + dir +
                     "/cos --checkpoint-every 20 --threads 1 --quiet";
  ASSERT_EQ(std::system((base + " --set epochs=1 >/dev/null").c_str()), 0);
  EXPECT_NE(std::system((base + " --set epochs=2 --auto-resume --extend >/dev/null 2>&1").c_str()),
            0);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace dlsys
