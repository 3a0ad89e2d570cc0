// Data-parallel training through the real command: `dlsys train SPEC --nproc N` starts N rank
// processes joined over loopback (dist/process_group.h). With train.micro_batches, the model
// trained on 1, 2 and 4 workers is the same file, byte for byte, as the one a plain single
// process trains: an MLP, and a CNN with batch norm (running statistics gathered and folded in
// micro-batch order) and dropout (masks seeded per micro-batch). Synchronized batch norm trains
// as one process on the whole batch, up to rounding. A rank that dies or hangs is named within
// seconds, and with --min-workers the others go on (ranks started one by one re-form the group
// by themselves, the new rank 0 recording into the first one's tracked run). Wrong settings fail
// with the reason, naming the rank.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "core/sha256.h"
#include "data/shard.h"
#include "graph/onnx_import.h"
#include "testing/free_port.h"

namespace {

namespace fs = std::filesystem;

struct Ran {
  int code = -1;
  std::string output;
};

// The output and exit code of a command started with popen.
Ran finish(FILE* p) {
  Ran r;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), p)) > 0;) r.output.append(buf, n);
  int st = ::pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// Runs `dlsys ARGS...` with its output captured.
Ran dlsys(const std::vector<std::string>& args) {
  std::string cmd = DLSYS_BIN;
  for (const std::string& a : args) cmd += " '" + a + "'";
  cmd += " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  return p ? finish(p) : Ran{};
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

  // The sha256 of the model `spec` trains in one plain process (in STEM-plain), with `extra`
  // arguments.
  std::string plain_sha(const fs::path& spec, const std::vector<std::string>& extra = {}) {
    const fs::path plain = dir_ / (spec.stem().string() + "-plain");
    std::vector<std::string> args = {"train", spec.string(), "--out", plain.string(), "--quiet"};
    args.insert(args.end(), extra.begin(), extra.end());
    Ran r = dlsys(args);
    EXPECT_EQ(r.code, 0) << r.output;
    return file_sha(plain / "model.onnx");
  }

  // The model trained by `spec` alone and on 1, 2 and 4 workers: the same bytes.
  void expect_identical(const fs::path& spec, const std::vector<int>& workers,
                        const std::vector<std::string>& extra = {}) {
    const std::string want = plain_sha(spec, extra);
    for (int n : workers) {
      const fs::path out = dir_ / (spec.stem().string() + "-n" + std::to_string(n));
      std::vector<std::string> args = {"train",      spec.string(), "--out",
                                       out.string(), "--nproc",     std::to_string(n)};
      args.insert(args.end(), extra.begin(), extra.end());
      Ran d = dlsys(args);
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

// A spec on the digits: linear layers of `hidden` outputs with relus between, then 10 outputs;
// `train` is the train mapping's body (indented by two spaces).
std::string mlp_spec(const std::vector<int>& hidden, const std::string& train) {
  std::string s = kData + "model:\n  input: [64]\n  layers:\n";
  for (int h : hidden) s += "    - linear: {out: " + std::to_string(h) + "}\n    - relu\n";
  return s + "    - linear: {out: 10}\ntrain:\n" + train;
}

TEST_F(DataParallel, AnMlpTrainsToTheSameBytesOnOneTwoAndFourWorkers) {
  fs::path spec = write_spec("mlp", mlp_spec({64}, R"(  epochs: 2
  batch_size: 50
  seed: 3
  micro_batches: 4
  optimizer: {name: adam, lr: 0.002}
  clip_grad_norm: 1.0
)"));
  expect_identical(spec, {1, 2, 4});
}

// From a version of the dataset store, each rank's loader assembles only its micro-batches of
// every batch (data/loader.h BatchPart): the weights are still one process's, byte for byte.
TEST_F(DataParallel, RanksReadingTheirPartOfEachBatchFromTheDatasetStoreTrainTheSameBytes) {
  const std::string home = (dir_ / "home").string();
  Ran push = dlsys({"data", "push", std::string(DLSYS_SHARED_DIR) + "/data/digits/digits.csv",
                    "--name", "digits", "--split", "0.8,0.2", "--data-dir", home});
  ASSERT_EQ(push.code, 0) << push.output;
  fs::path spec = write_spec("mlp-ds", R"(data:
  dataset: digits@latest
  label: c64
  feature_scale: 0.0625
model:
  input: [64]
  layers: [{linear: {out: 32}}, relu, {linear: {out: 10}}]
train:
  epochs: 2
  batch_size: 50
  seed: 4
  micro_batches: 4
  optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
)");
  expect_identical(spec, {2, 4}, {"--data-dir", home});
}

std::string cnn_model(bool dropout);

// The digits CSV split into `train` (its first 1500 rows) and `validation` (the rest), each
// line passed through `edit` (row index, line) when given.
void split_digits(const fs::path& train, const fs::path& validation,
                  const std::function<void(int, std::string&)>& edit = {}) {
  std::ifstream in(std::string(DLSYS_SHARED_DIR) + "/data/digits/digits.csv");
  std::ofstream t(train), v(validation);
  std::string line;
  for (int i = 0; std::getline(in, line); ++i) {
    if (edit) edit(i, line);
    (i < 1500 ? t : v) << line << "\n";
  }
}

// What each rank of a `--nproc` run in `out` printed: rank 0's is the command's own output,
// the others' are in their logs.
std::vector<std::string> rank_outputs(const Ran& run, const fs::path& out, int workers) {
  std::vector<std::string> ends = {run.output};
  for (int r = 1; r < workers; ++r) {
    std::ifstream log(out / ("rank-" + std::to_string(r) + ".log"));
    ends.emplace_back((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  }
  return ends;
}

// A shard that cannot be read fails the ranks whose rows it holds; they still take part in the
// step's all-reduce with a data-error flag, so every rank stops at that step with an error
// (the others' saying that another rank could not read its part), and the supervisor does not
// take it for a lost rank. 1500 training rows in shards of 10 (a batch's rows come from many
// shards: the damaged one holds rows of one or two ranks' parts), a byte of one shard's label
// column flipped; validation from a second dataset, so that only training reads that shard.
TEST_F(DataParallel, AShardOneRankCannotReadStopsEveryRankAtTheSameStep) {
  const std::string home = (dir_ / "home-bad").string();
  split_digits(dir_ / "t.csv", dir_ / "v.csv");
  // v first, then t: t's shards are the files its push added (the store names shards by
  // their bytes).
  auto shard_files = [&] {
    std::set<fs::path> files;
    const fs::path root = fs::path(home) / "datasets" / "shards";
    if (fs::exists(root))
      for (const auto& e : fs::recursive_directory_iterator(root))
        if (e.is_regular_file()) files.insert(e.path());
    return files;
  };
  std::set<fs::path> before;
  for (const char* name : {"v", "t"}) {
    before = shard_files();
    Ran push = dlsys({"data", "push", (dir_ / (std::string(name) + ".csv")).string(), "--name",
                      name, "--split", "1,0", "--shard-rows", "10", "--data-dir", home});
    ASSERT_EQ(push.code, 0) << push.output;
  }
  std::vector<fs::path> shards;
  for (const fs::path& f : shard_files())
    if (!before.count(f)) shards.push_back(f);
  ASSERT_EQ(shards.size(), 150u);
  const fs::path bad = shards[75];  // the set's order: by name
  std::string bytes;
  {
    std::ifstream f(bad, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  // Damage the frame of the label column (a column only training reads; the header and the
  // split column are read when the loader opens, on every rank).
  auto h = dlsys::data::decode_shard_header(bytes, bad.string());
  ASSERT_TRUE(h.ok()) << h.status().to_string();
  const dlsys::data::ShardColumnInfo& c = h->columns[static_cast<size_t>(h->index("c64"))];
  bytes[h->data_start + c.offset + c.size / 2] ^= 0x55;
  fs::permissions(bad, fs::perms::owner_write, fs::perm_options::add);
  std::ofstream(bad, std::ios::binary | std::ios::trunc) << bytes;
  // Every rank fails at the same batch: those that read the damaged shard name it, the others
  // say another rank could not use its part; nobody is taken for lost, nothing goes on, and
  // nothing waits for a collective's deadline.
  auto expect_stops_together = [&](const std::string& name, const std::string& model,
                                   const std::string& train, int workers,
                                   const std::vector<std::string>& extra) {
    fs::path spec = write_spec(name, R"(data:
  dataset: t@latest:train
  validation: v@latest:train
  label: c64
  feature_scale: 0.0625
)" + model + "train:\n  epochs: 1\n  batch_size: 50\n  optimizer: {name: sgd, lr: 0.05}\n" +
                                         train);
    const fs::path out = dir_ / name;
    std::vector<std::string> args = {"train",   spec.string(),           "--out",      out.string(),
                                     "--nproc", std::to_string(workers), "--data-dir", home};
    args.insert(args.end(), extra.begin(), extra.end());
    const auto t0 = std::chrono::steady_clock::now();
    Ran d = dlsys(args);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(30)) << name;
    EXPECT_EQ(d.code, 1) << name << ":\n" << d.output;
    EXPECT_NE(d.output.find("the run failed on its own, not a lost rank: stopping"),
              std::string::npos)
        << name << ":\n"
        << d.output;
    const std::vector<std::string> ends = rank_outputs(d, out, workers);
    std::string all;
    for (const std::string& e : ends) all += e;
    const size_t named = all.find(bad.filename().string().substr(0, 12));
    ASSERT_NE(named, std::string::npos) << name << ": no rank named the damaged shard:\n" << all;
    // "training batch B of epoch 1", in front of the shard's error.
    const size_t at = all.rfind("training batch ", named);
    ASSERT_NE(at, std::string::npos) << all;
    const std::string batch = all.substr(at, all.find(':', at) - at);
    EXPECT_NE(all.find(batch + ": 1 other rank could not use its part of it"), std::string::npos)
        << name << ":\n"
        << all;
    for (size_t r = 0; r < ends.size(); ++r)
      EXPECT_NE(ends[r].find(batch), std::string::npos) << name << ", rank " << r << ":\n"
                                                        << ends[r];
    EXPECT_EQ(all.find("continuing on"), std::string::npos) << all;
    EXPECT_EQ(all.find("is gone"), std::string::npos) << all;
  };
  // Two ranks with two micro-batches each, two gradient buckets (the error path fills every
  // leaf and readies every bucket), sent during the backward pass and after it.
  const std::string mlp =
      "model:\n  input: [64]\n  layers: [{linear: {out: 32}}, relu, "
      "{linear: {out: 10}}]\n";
  expect_stops_together("bad-mlp", mlp, "  micro_batches: 4\n  bucket_kib: 1\n", 2,
                        {"--min-workers", "1"});
  expect_stops_together("bad-mlp-after", mlp,
                        "  micro_batches: 4\n  bucket_kib: 1\n  overlap: false\n", 2,
                        {"--min-workers", "1"});
  // Synchronized batch norm, whose forward pass exchanges statistics: the ranks agree on the
  // error before it.
  expect_stops_together("bad-sbn", cnn_model(false),
                        "  micro_batches: 2\n  sync_batch_norm: true\n", 2, {});
}

// The value of `"key":` in the last line of `out` that has it (a flat number or boolean).
double json_number(const std::string& out, const std::string& key) {
  const std::string k = "\"" + key + "\":";
  size_t at = out.rfind(k);
  return at == std::string::npos ? -1 : std::atof(out.c_str() + at + k.size());
}

// Gradient buckets: with small buckets (one per layer) each is all-reduced on its own thread
// as soon as the backward pass has produced it, while the earlier layers' gradients are still
// computing; with the size chosen from the measured link, and with one bucket after the whole
// backward pass, the weights are the same bytes as one process's.
TEST_F(DataParallel, GradientBucketsOverlapTheBackwardPassAndChangeNoBit) {
  fs::path spec = write_spec("buckets", mlp_spec({256, 256}, R"(  epochs: 1
  batch_size: 64
  seed: 5
  micro_batches: 4
  optimizer: {name: adam, lr: 0.002}
)"));
  const std::string want = plain_sha(spec);
  struct Case {
    int workers;
    std::string bucket_kib;
    bool overlap;
  };
  for (const Case& c : {Case{2, "64", true}, Case{4, "64", true}, Case{2, "0", true},
                        Case{2, "64", false}, Case{2, "1048576", true}}) {
    const fs::path out = dir_ / ("buckets-n" + std::to_string(c.workers) + "-" + c.bucket_kib +
                                 (c.overlap ? "" : "-after"));
    Ran d = dlsys({"train", spec.string(), "--out", out.string(), "--nproc",
                   std::to_string(c.workers), "--set", "bucket_kib=" + c.bucket_kib, "--set",
                   std::string("overlap=") + (c.overlap ? "true" : "false"), "--json"});
    ASSERT_EQ(d.code, 0) << d.output;
    EXPECT_EQ(file_sha(out / "model.onnx"), want)
        << c.workers << " workers, bucket_kib " << c.bucket_kib << ", overlap " << c.overlap
        << ": other weights";
    const double buckets = json_number(d.output, "buckets");
    const double steps = json_number(d.output, "steps");
    const double early = json_number(d.output, "started_during_backward");
    EXPECT_EQ(json_number(d.output, "allreduces"), buckets * steps) << d.output;
    if (c.bucket_kib == "64") {
      // 256x256 floats (256 KiB) and 64x256 are buckets of their own; the small ones join.
      EXPECT_GE(buckets, 3) << d.output;
      if (c.overlap) {
        EXPECT_GT(early, 0) << "no bucket was sent before its step's backward pass ended:\n"
                            << d.output;
      } else {
        EXPECT_EQ(early, 0) << "overlap: false sends the buckets after the backward pass";
      }
    } else if (c.bucket_kib == "0") {
      EXPECT_GT(json_number(d.output, "latency_s"), 0) << d.output;
      EXPECT_GT(json_number(d.output, "bytes_per_s"), 1e6) << d.output;
      EXPECT_NE(d.output.find("\"bucket_bytes_measured\":true"), std::string::npos) << d.output;
    } else {
      EXPECT_EQ(buckets, 1) << d.output;
      EXPECT_EQ(early, 0) << "one bucket is ready only when the whole backward pass is done";
    }
  }
}

// ZeRO stage 1: each of 2 ranks keeps half of Adam's moments, and the weights are the same
// bytes. Its checkpoint gathers the whole state, so the run continues on 4 workers (and a
// sharded 1 + 1 epochs equals 2 epochs in one process).
TEST_F(DataParallel, ShardedOptimizerStateGivesTheSameWeightsAndResumesOnAnotherWorldSize) {
  const std::string body = mlp_spec({96}, R"(  epochs: EPOCHS
  batch_size: 40
  seed: 7
  micro_batches: 4
  optimizer: {name: adam, lr: 0.002}
)");
  auto with_epochs = [&](int e) {
    std::string t = body;
    t.replace(t.find("EPOCHS"), 6, std::to_string(e));
    return t;
  };
  fs::path two = write_spec("zero2", with_epochs(2));
  const std::string want = plain_sha(two);
  const fs::path sharded = dir_ / "zero-n2";
  Ran z = dlsys({"train", two.string(), "--out", sharded.string(), "--nproc", "2", "--zero", "1"});
  ASSERT_EQ(z.code, 0) << z.output;
  EXPECT_EQ(file_sha(sharded / "model.onnx"), want);
  EXPECT_NE(z.output.find("sharded over 2 ranks"), std::string::npos) << z.output;
  // Adam keeps two moments per weight: 2 x (64 x 96 + 96 + 96 x 10 + 10) floats in all, about
  // half of them per rank.
  const double whole = 2.0 * (64 * 96 + 96 + 96 * 10 + 10) * 4 / (1 << 20);
  for (const std::string& log : {z.output, [&] {
                                   std::ifstream f(sharded / "rank-1.log");
                                   return std::string((std::istreambuf_iterator<char>(f)), {});
                                 }()}) {
    size_t at = log.find("optimizer state here: ");
    ASSERT_NE(at, std::string::npos) << log;
    double mib = std::stod(log.substr(at + 22));
    EXPECT_GT(mib, whole * 0.3) << log;
    EXPECT_LT(mib, whole * 0.7) << log;
  }
  // 1 epoch sharded on 2, then 1 more on 4 from its checkpoint: 2 epochs' weights.
  fs::path one = write_spec("zero1", with_epochs(1));
  const fs::path resumed = dir_ / "zero-resumed";
  Ran a = dlsys({"train", one.string(), "--out", resumed.string(), "--nproc", "2", "--zero", "1"});
  ASSERT_EQ(a.code, 0) << a.output;
  Ran b = dlsys({"train", one.string(), "--resume", resumed.string(), "--extend", "--epochs", "2",
                 "--nproc", "4", "--zero", "1"});
  ASSERT_EQ(b.code, 0) << b.output;
  EXPECT_EQ(file_sha(resumed / "model.onnx"), want)
      << "resumed on 4 workers from a checkpoint of 2, the weights differ";
}

// A small CNN on the digits as 1x8x8 images, with batch norm (and dropout after the first).
std::string cnn_model(bool dropout) {
  return std::string(R"(model:
  input: [1, 8, 8]
  layers:
    - conv2d: {out: 4, kernel: 3, padding: 1, bias: false}
    - batchnorm
    - relu
)") + (dropout ? "    - dropout: {p: 0.2}\n" : "") +
         R"(    - flatten
    - linear: {out: 16}
    - batchnorm
    - relu
    - linear: {out: 10}
)";
}

TEST_F(DataParallel, BatchNormAndDropoutTrainToTheSameBytesOnTwoWorkers) {
  fs::path spec = write_spec("cnn", kData + cnn_model(true) + R"(train:
  epochs: 1
  batch_size: 32
  seed: 5
  micro_batches: 2
  optimizer: {name: adamw, lr: 0.003, weight_decay: 0.01}
)");
  expect_identical(spec, {2});
}

// The largest difference between two models' weights and running statistics, relative to the
// largest weight of the first.
double max_relative_difference(const fs::path& a, const fs::path& b) {
  auto ga = dlsys::import_onnx_file(a.string()), gb = dlsys::import_onnx_file(b.string());
  EXPECT_TRUE(ga.ok() && gb.ok()) << a << " or " << b << " does not load";
  if (!ga.ok() || !gb.ok()) return 1e30;
  double diff = 0, scale = 0;
  for (const auto& [name, t] : ga->initializers) {
    if (t.dtype() != dlsys::DType::kF32) continue;
    auto it = gb->initializers.find(name);
    EXPECT_NE(it, gb->initializers.end()) << name;
    if (it == gb->initializers.end()) return 1e30;
    for (int64_t i = 0; i < t.numel(); ++i) {
      diff = std::max(diff, static_cast<double>(
                                std::fabs(t.data_as<float>()[i] - it->second.data_as<float>()[i])));
      scale = std::max(scale, static_cast<double>(std::fabs(t.data_as<float>()[i])));
    }
  }
  return diff / scale;
}

// train.sync_batch_norm: 2 workers normalize with the whole batch's statistics, as one process
// training the whole batch does: the same weights up to rounding, where 2 workers normalizing
// their own halves train measurably other weights (measured: 1.2e-6 against 0.26, relative to
// the largest weight, after 44 steps; SGD, as Adam would blow rounding up in the gradients that
// are nearly zero). Settings it cannot honour are refused.
TEST_F(DataParallel, SynchronizedBatchNormTrainsAsOneProcessOnTheWholeBatch) {
  // 1408 training rows, 44 batches of 32: the unsynchronized run trains on the same batches as
  // the synchronized ones, which drop a last smaller batch.
  const std::string data = std::string("data: {train: ") + DLSYS_SHARED_DIR +
                           "/data/digits/digits.csv, feature_scale: 0.0625, "
                           "validation_fraction: 0.2165, split_seed: 0}\n";
  auto spec_with = [&](const std::string& name, const std::string& more) {
    return write_spec(name, data + cnn_model(false) + R"(train:
  epochs: 1
  batch_size: 32
  seed: 5
  optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
)" + more);
  };
  const fs::path synced = spec_with("sbn", "  sync_batch_norm: true\n");
  const fs::path one = dir_ / "sbn-one", two = dir_ / "sbn-two", own = dir_ / "sbn-own";
  Ran r = dlsys({"train", synced.string(), "--out", one.string(), "--quiet"});
  ASSERT_EQ(r.code, 0) << r.output;
  r = dlsys({"train", synced.string(), "--out", two.string(), "--nproc", "2", "--quiet"});
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("1 epoch, 44 steps"), std::string::npos) << r.output;
  // Unsynchronized halves: the same 44 batches.
  const fs::path halves = spec_with("own", "  micro_batches: 2\n");
  r = dlsys({"train", halves.string(), "--out", own.string(), "--nproc", "2", "--quiet"});
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("1 epoch, 44 steps"), std::string::npos) << r.output;
  const double d_sync = max_relative_difference(one / "model.onnx", two / "model.onnx");
  const double d_own = max_relative_difference(one / "model.onnx", own / "model.onnx");
  EXPECT_LT(d_sync, 1e-4) << "2 synchronized workers trained other weights than one process";
  EXPECT_GT(d_own, 100 * d_sync) << "normalizing each half alone should train other weights";
  // Four micro-batches on two workers: a worker would normalize two micro-batches apart.
  r = dlsys({"train", synced.string(), "--out", (dir_ / "sbn-bad").string(), "--nproc", "2",
             "--set", "micro_batches=4", "--quiet"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("each worker runs one micro-batch: micro_batches is 4 on 2 workers; set "
                          "micro_batches: 2"),
            std::string::npos)
      << r.output;
  // Fewer workers after a failure would need another micro-batch split.
  r = dlsys({"train", synced.string(), "--out", (dir_ / "sbn-elastic").string(), "--nproc", "2",
             "--min-workers", "1", "--quiet"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("--min-workers cannot go on with fewer workers under "
                          "train.sync_batch_norm"),
            std::string::npos)
      << r.output;
  r = dlsys({"train", synced.string(), "--out", (dir_ / "sbn-odd").string(), "--set",
             "batch_size=30", "--set", "micro_batches=4", "--quiet"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("batch_size 30 does not split into 4 equal micro-batches"),
            std::string::npos)
      << r.output;
}

// A loss that is not finite in one rank's micro-batch (a training row whose feature is 3e38:
// its squared error overflows) stops every rank at the same step with the same error, and the
// supervisor does not take it for a lost rank: no run on fewer workers.
TEST_F(DataParallel, ALossThatIsNotFiniteOnOneRankStopsEveryRankAtTheSameStep) {
  split_digits(dir_ / "train.csv", dir_ / "val.csv", [](int i, std::string& line) {
    if (i == 700) line = "3e38" + line.substr(line.find(','));  // the first pixel
  });
  fs::path spec = write_spec("overflow", "data: {train: " + (dir_ / "train.csv").string() +
                                             ", validation: " + (dir_ / "val.csv").string() +
                                             ", feature_scale: 0.0625}\n" + R"(model:
  input: [64]
  layers: [{linear: {out: 8}}, relu, {linear: {out: 1}}]
train:
  loss: mse
  epochs: 1
  batch_size: 50
  seed: 2
  micro_batches: 4
  optimizer: {name: sgd, lr: 0.0001}
)");
  Ran plain = dlsys({"train", spec.string(), "--out", (dir_ / "overflow-plain").string()});
  ASSERT_NE(plain.code, 0) << plain.output;
  const size_t at = plain.output.find("the loss became inf at step ");
  ASSERT_NE(at, std::string::npos) << plain.output;
  // "the loss became inf at step S (epoch 1, ": the same step on every rank.
  const std::string step = plain.output.substr(at, plain.output.find('(', at) - at);
  for (int n : {2, 4}) {
    const fs::path out = dir_ / ("overflow-" + std::to_string(n));
    Ran d = dlsys({"train", spec.string(), "--out", out.string(), "--nproc", std::to_string(n),
                   "--min-workers", "1"});
    const std::vector<std::string> ends = rank_outputs(d, out, n);
    std::string all;
    for (size_t r = 0; r < ends.size(); ++r) {
      EXPECT_NE(ends[r].find(step), std::string::npos) << "rank " << r << ":\n" << ends[r];
      all += ends[r];
    }
    EXPECT_EQ(d.code, 1) << all;
    EXPECT_NE(d.output.find("the run failed on its own, not a lost rank: stopping"),
              std::string::npos)
        << d.output;
    EXPECT_EQ(all.find("continuing on"), std::string::npos) << all;
    EXPECT_EQ(all.find("is gone"), std::string::npos) << all;
  }
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
  // --min-workers: a data-parallel run's, and at most its worker count.
  Ran alone =
      dlsys({"train", spec.string(), "--out", (dir_ / "b6").string(), "--min-workers", "1"});
  EXPECT_NE(alone.code, 0);
  EXPECT_NE(alone.output.find("--min-workers goes on with fewer workers of a data-parallel run"),
            std::string::npos)
      << alone.output;
  Ran over = dlsys({"train", spec.string(), "--rank", "0", "--world-size", "2", "--rendezvous",
                    "file://" + (dir_ / "rv6").string(), "--min-workers", "3"});
  EXPECT_NE(over.code, 0);
  EXPECT_NE(over.output.find("--min-workers 3 is more than --world-size 2"), std::string::npos)
      << over.output;
  Ran more = dlsys({"train", spec.string(), "--out", (dir_ / "b5").string(), "--nproc", "2",
                    "--min-workers", "4"});
  EXPECT_NE(more.code, 0);
  EXPECT_NE(more.output.find("--min-workers 4 is more than --nproc 2"), std::string::npos)
      << more.output;
}

// Two ranks started by hand on specs that build other parameters: both fail at once, the one
// that differs naming the parameter and both shapes.
TEST_F(DataParallel, RanksWithDifferentModelsFailNamingTheParameter) {
  auto spec_of = [&](const std::string& name, int hidden) {
    return write_spec(name,
                      mlp_spec({hidden}, "  epochs: 1\n  batch_size: 16\n  micro_batches: 2\n"));
  };
  const fs::path a = spec_of("wide", 32), b = spec_of("narrow", 16);
  const std::string url = "file://" + (dir_ / "rdv").string();
  fs::create_directories(dir_ / "rdv");
  auto start = [&](const fs::path& spec, int rank) {
    std::string cmd = std::string(DLSYS_BIN) + " train '" + spec.string() + "' --out '" +
                      (dir_ / ("r" + std::to_string(rank))).string() + "' --rank " +
                      std::to_string(rank) + " --world-size 2 --dist-timeout-s 20 --rendezvous '" +
                      url + "' 2>&1";
    return ::popen(cmd.c_str(), "r");
  };
  FILE* p0 = start(a, 0);
  FILE* p1 = start(b, 1);
  ASSERT_TRUE(p0 && p1);
  const auto t0 = std::chrono::steady_clock::now();
  Ran r0 = finish(p0), r1 = finish(p1);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(15)) << "not at once";
  EXPECT_NE(r0.code, 0) << r0.output;
  EXPECT_NE(r1.code, 0) << r1.output;
  // The spec differs first (the hidden width is in it): rank 1 says so.
  EXPECT_NE(r1.output.find("rank 1 was started with another spec than rank 0"), std::string::npos)
      << r1.output;
  EXPECT_NE(r0.output.find("rank 1 trains another spec or model than rank 0"), std::string::npos)
      << r0.output;
}

// The same spec text on both ranks, but the ONNX model it fine-tunes differs between their
// folders (as on two machines): the rank that differs names the parameter and both shapes.
TEST_F(DataParallel, RanksFineTuningDifferentModelsNameTheParameter) {
  for (int hidden : {32, 16}) {
    fs::path spec = write_spec("base" + std::to_string(hidden),
                               mlp_spec({hidden}, "  epochs: 1\n  batch_size: 64\n"));
    fs::path out = dir_ / ("base-out" + std::to_string(hidden));
    Ran r = dlsys({"train", spec.string(), "--out", out.string(), "--quiet"});
    ASSERT_EQ(r.code, 0) << r.output;
    fs::create_directories(dir_ / ("m" + std::to_string(hidden)));
    fs::copy_file(out / "model.onnx", dir_ / ("m" + std::to_string(hidden)) / "m.onnx");
  }
  const std::string text = std::string("data: {train: ") + DLSYS_SHARED_DIR +
                           "/data/digits/digits.csv, validation_fraction: 0.2}\n" +
                           "model: {onnx: m.onnx}\n"
                           "train: {epochs: 1, batch_size: 16, micro_batches: 2}\n";
  for (int hidden : {32, 16})
    std::ofstream(dir_ / ("m" + std::to_string(hidden)) / "ft.yaml") << text;
  const std::string url = "file://" + (dir_ / "rdv2").string();
  fs::create_directories(dir_ / "rdv2");
  auto start = [&](int hidden, int rank) {
    std::string cmd = std::string(DLSYS_BIN) + " train '" +
                      (dir_ / ("m" + std::to_string(hidden)) / "ft.yaml").string() + "' --out '" +
                      (dir_ / ("ft" + std::to_string(rank))).string() + "' --rank " +
                      std::to_string(rank) + " --world-size 2 --dist-timeout-s 20 --rendezvous '" +
                      url + "' 2>&1";
    return ::popen(cmd.c_str(), "r");
  };
  FILE* p0 = start(32, 0);
  FILE* p1 = start(16, 1);
  ASSERT_TRUE(p0 && p1);
  Ran r0 = finish(p0), r1 = finish(p1);
  EXPECT_NE(r0.code, 0) << r0.output;
  EXPECT_NE(r1.code, 0) << r1.output;
  EXPECT_NE(r1.output.find("rank 1's model differs from rank 0's"), std::string::npos) << r1.output;
  EXPECT_NE(r1.output.find("'parameter 0 layers.0.bias [16]' here, 'parameter 0 layers.0.bias "
                           "[32]' on rank 0"),
            std::string::npos)
      << r1.output;
}

// A child process whose standard output is read line by line.
struct Child {
  pid_t pid = -1;
  FILE* out = nullptr;
  // The next line, or "" at the end.
  std::string line() {
    char buf[8192];
    return out && std::fgets(buf, sizeof(buf), out) ? std::string(buf) : std::string();
  }
  // The rest of the output and the exit code (128 + signal when killed).
  Ran finish() {
    Ran r;
    char buf[4096];
    for (size_t n; out && (n = std::fread(buf, 1, sizeof(buf), out)) > 0;) r.output.append(buf, n);
    if (out) std::fclose(out);
    out = nullptr;
    if (pid <= 0) return r;  // never started
    int st = 0;
    ::waitpid(pid, &st, 0);
    pid = -1;
    r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return r;
  }
};

// Kills and reaps the children still running when a test ends early (a failed ASSERT), so
// that none trains on beside the tests that follow.
struct Reaper {
  std::vector<Child>& children;
  ~Reaper() {
    for (Child& c : children)
      if (c.pid > 0) {
        ::kill(c.pid, SIGKILL);
        c.finish();
      }
  }
};

Child spawn(const std::vector<std::string>& args) {
  int fds[2];
  Child c;
  if (::pipe(fds) != 0) return c;
  c.pid = ::fork();
  if (c.pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::dup2(fds[1], STDERR_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    std::vector<char*> argv = {const_cast<char*>(DLSYS_BIN)};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(DLSYS_BIN, argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  c.out = ::fdopen(fds[0], "r");
  return c;
}

// The pid of the process whose command line holds every one of `parts`, or -1.
pid_t find_process(const std::vector<std::string>& parts) {
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream f(e.path() / "cmdline", std::ios::binary);
    std::string cmd((std::istreambuf_iterator<char>(f)), {});
    std::replace(cmd.begin(), cmd.end(), '\0', ' ');
    bool all = !cmd.empty();
    for (const std::string& p : parts) all = all && cmd.find(p) != std::string::npos;
    if (all) return static_cast<pid_t>(std::stol(name));
  }
  return -1;
}

const std::string kLong = mlp_spec({32}, R"(  epochs: 100000
  batch_size: 16
  seed: 2
  micro_batches: 2
  optimizer: {name: sgd, lr: 0.01, momentum: 0.9}
)");

// `dlsys train SPEC --nproc 2 --json` once it has reported `steps` step events (pid -1 when it
// ended before).
Child start_and_wait_for_steps(const fs::path& spec, const fs::path& out, int steps,
                               const std::vector<std::string>& more = {"--nproc", "2"}) {
  std::vector<std::string> args = {"train",  spec.string(), "--out", out.string(),
                                   "--json", "--log-every", "1"};
  args.insert(args.end(), more.begin(), more.end());
  Child c = spawn(args);
  for (int seen = 0; seen < steps && c.pid > 0;) {
    std::string l = c.line();
    if (l.empty()) {
      c.finish();
      c.pid = -1;
    } else if (l.find("\"event\":\"step\"") != std::string::npos) {
      ++seen;
    }
  }
  return c;
}

// SIGTERM to `dlsys train --nproc 2`: both ranks agree on the step to stop after, rank 0 writes
// its checkpoint, the command exits 75 (what --resume continues from).
TEST_F(DataParallel, SigtermStopsEveryRankAtTheSameStepWithACheckpoint) {
  fs::path spec = write_spec("long", kLong);
  const fs::path out = dir_ / "stopped";
  Child c = start_and_wait_for_steps(spec, out, 20);
  ASSERT_GT(c.pid, 0) << "the run ended before 20 steps";
  ::kill(c.pid, SIGTERM);
  const auto t0 = std::chrono::steady_clock::now();
  Ran r = c.finish();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  EXPECT_EQ(r.code, 75) << r.output;
  EXPECT_NE(r.output.find("training stopped on request"), std::string::npos) << r.output;
  std::ifstream latest(out / "checkpoints" / "latest");
  std::string step;
  std::getline(latest, step);
  EXPECT_FALSE(step.empty()) << "no checkpoint written";
  std::ifstream log1(out / "rank-1.log");
  std::string l1((std::istreambuf_iterator<char>(log1)), {});
  EXPECT_NE(l1.find("training stopped on request after step"), std::string::npos) << l1;
  // Both stopped after the same step.
  const std::string after0 = r.output.substr(r.output.find("after step"), 20);
  EXPECT_NE(l1.find(after0.substr(0, after0.find(';'))), std::string::npos) << after0 << "\n" << l1;
}

// SIGKILL of rank 1 in the middle of a run: rank 0 fails at once naming it, and the command
// ends within 10 s naming rank 1 (no hang).
TEST_F(DataParallel, AKilledRankEndsTheRunWithinSecondsNamingIt) {
  fs::path spec = write_spec("long2", kLong);
  const fs::path out = dir_ / "killed";
  Child c = start_and_wait_for_steps(spec, out, 20);
  ASSERT_GT(c.pid, 0) << "the run ended before 20 steps";
  pid_t r1 = find_process({out.string(), "--rank 1 "});
  ASSERT_GT(r1, 0) << "rank 1's process not found";
  ::kill(r1, SIGKILL);
  const auto t0 = std::chrono::steady_clock::now();
  Ran r = c.finish();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("rank 1"), std::string::npos) << r.output;
}

// The runs that lose rank 3 of 4 after 60 steps: checkpoints every 25 steps, 4 micro-batches (so
// 2 workers train the same weights).
const std::string kElastic = mlp_spec({32}, R"(  epochs: 12
  batch_size: 16
  seed: 4
  micro_batches: 4
  checkpoint_every: 25
  optimizer: {name: sgd, lr: 0.01, momentum: 0.9}
)");

// --min-workers: rank 3 of 4 SIGKILLed in the middle of the run; the others restart as 2
// workers from the newest checkpoint and finish the run, and the model is the same bytes as
// the one one process trains (checkpoints resume on any world size, the micro-batches stay 4).
TEST_F(DataParallel, WithMinWorkersTheOthersGoOnAsFewerWorkersToTheSameWeights) {
  fs::path spec = write_spec("elastic", kElastic);
  const std::string want = plain_sha(spec);
  const fs::path out = dir_ / "elastic";
  Child c = start_and_wait_for_steps(spec, out, 60, {"--nproc", "4", "--min-workers", "2"});
  ASSERT_GT(c.pid, 0) << "the run ended before 60 steps";
  pid_t r3 = find_process({out.string(), "--rank 3 "});
  ASSERT_GT(r3, 0) << "rank 3's process not found";
  ::kill(r3, SIGKILL);
  Ran r = c.finish();
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("rank 3 of 4 failed"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("continuing on 2 workers from the newest checkpoint"), std::string::npos)
      << r.output;
  EXPECT_EQ(file_sha(out / "model.onnx"), want)
      << "the run that lost a worker trained other weights";
}

// A rank that hangs (SIGSTOP: its process runs no more, its sockets stay open) is named by the
// others' heartbeat within seconds, not after the collective's 60 s; with --min-workers the run
// goes on as 2 workers to the same bytes as one process's.
TEST_F(DataParallel, AStoppedRankIsNamedWithinSecondsAndTheOthersGoOn) {
  fs::path spec = write_spec("hung", kElastic);
  const std::string want = plain_sha(spec);
  const fs::path out = dir_ / "hung";
  Child c = start_and_wait_for_steps(spec, out, 60,
                                     {"--nproc", "4", "--min-workers", "2", "--heartbeat-s", "2"});
  ASSERT_GT(c.pid, 0) << "the run ended before 60 steps";
  pid_t r3 = find_process({out.string(), "--rank 3 "});
  ASSERT_GT(r3, 0) << "rank 3's process not found";
  ::kill(r3, SIGSTOP);
  const auto t0 = std::chrono::steady_clock::now();
  std::string seen;
  for (std::string l = c.line(); !l.empty(); l = c.line()) {
    seen += l;
    if (l.find("rank 3 sent no heartbeat") != std::string::npos) break;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  Ran r = c.finish();
  r.output = seen + r.output;
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("rank 3 sent no heartbeat"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("continuing on 2 workers from the newest checkpoint"), std::string::npos)
      << r.output;
  EXPECT_EQ(file_sha(out / "model.onnx"), want)
      << "the run that lost a hung worker trained other weights";
}

// Four ranks started one by one (as on several machines: no --nproc supervisor), each with
// --min-workers 2 and `extra` arguments, the victim printing its steps; returns them once the
// victim has trained 60 steps (an empty list, with a failure, if it ended before).
std::vector<Child> start_four_ranks(const fs::path& out, const fs::path& spec,
                                    const std::string& rendezvous, int victim,
                                    const std::vector<std::string>& extra) {
  std::vector<Child> ranks;
  for (int r = 0; r < 4; ++r) {
    std::vector<std::string> args = {"train",         spec.string(),
                                     "--out",         out.string(),
                                     "--rank",        std::to_string(r),
                                     "--world-size",  "4",
                                     "--rendezvous",  rendezvous,
                                     "--min-workers", "2",
                                     "--heartbeat-s", "2",
                                     "--threads",     "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    if (r == victim) args.insert(args.end(), {"--json", "--log-every", "1"});
    ranks.push_back(spawn(args));
    if (ranks.back().pid <= 0) {
      ADD_FAILURE() << "rank " << r << " could not be started";
      { Reaper kill_all{ranks}; }
      return {};
    }
  }
  Child& v = ranks[static_cast<size_t>(victim)];
  int steps = 0;
  for (std::string l = v.line(); !l.empty() && steps < 60; l = v.line())
    if (l.find("\"event\":\"step\"") != std::string::npos) ++steps;
  if (steps < 60) {
    ADD_FAILURE() << "rank " << victim << " ended before 60 steps: " << v.finish().output;
    { Reaper kill_all{ranks}; }
    return {};
  }
  return ranks;
}

// Ranks started one by one, rank `victim` SIGKILLed in the middle of the run. With rank 0
// lost, it served nothing (file:// rendezvous) but wrote the checkpoints and the run. The
// three others re-form the group by themselves: the two lowest become ranks 0 and 1 of the
// second group (4 micro-batches need a world that divides 4), the third is not needed and
// leaves, and the run goes on from the newest checkpoint to the same bytes as one process's.
void reform_after_kill(const fs::path& dir, const fs::path& spec, const std::string& rendezvous,
                       int victim, const std::string& want,
                       const std::vector<std::string>& extra = {}) {
  const fs::path out = dir / "out";
  std::vector<Child> ranks = start_four_ranks(out, spec, rendezvous, victim, extra);
  Reaper reaper{ranks};
  if (ranks.empty()) return;
  Child& v = ranks[static_cast<size_t>(victim)];
  ::kill(v.pid, SIGKILL);
  v.finish();
  std::vector<Ran> ends;
  for (int r = 0; r < 4; ++r)
    ends.push_back(r == victim ? Ran{0, ""} : ranks[static_cast<size_t>(r)].finish());
  std::vector<int> stay;
  for (int r = 0; r < 4; ++r)
    if (r != victim) stay.push_back(r);
  // The two lowest survivors continue as ranks 0 and 1; the third is not needed.
  for (int i = 0; i < 3; ++i) {
    const Ran& e = ends[static_cast<size_t>(stay[static_cast<size_t>(i)])];
    EXPECT_EQ(e.code, 0) << "rank " << stay[static_cast<size_t>(i)] << ":\n" << e.output;
    if (i < 2)
      EXPECT_NE(
          e.output.find("continuing as rank " + std::to_string(i) + " of 2 (generation 1; ranks " +
                        std::to_string(stay[0]) + "," + std::to_string(stay[1]) +
                        " of the first group) from the newest "
                        "checkpoint"),
          std::string::npos)
          << e.output;
    else
      EXPECT_NE(e.output.find("is not needed in generation 1"), std::string::npos) << e.output;
  }
  EXPECT_EQ(file_sha(out / "model.onnx"), want)
      << "the group re-formed without rank " << victim << " trained other weights";
}

// Tracked in a data directory (--data-dir on every rank): the rank that becomes rank 0 after
// rank 0 is lost attaches to the run rank 0 started, and ends it FINISHED with the model.
TEST_F(DataParallel, RanksWithoutASupervisorReFormWithoutRankZeroToTheSameWeights) {
  fs::path spec = write_spec("reform0", kElastic);
  const std::string home = (dir_ / "home").string(), want = plain_sha(spec);
  reform_after_kill(dir_ / "file", spec, "file://" + (dir_ / "rv").string(), 0, want,
                    {"--data-dir", home});
  Ran runs = dlsys({"runs", "list", "--json", "--data-dir", home});
  ASSERT_EQ(runs.code, 0) << runs.output;
  size_t listed = 0;
  for (size_t at = 0; (at = runs.output.find("\"status\":", at)) != std::string::npos; ++at)
    ++listed;
  EXPECT_EQ(listed, 1u) << "one run, the first rank 0's:\n" << runs.output;
  Ran show = dlsys({"runs", "show", "1", "--json", "--data-dir", home});
  ASSERT_EQ(show.code, 0) << show.output;
  EXPECT_NE(show.output.find("\"status\": \"FINISHED\""), std::string::npos) << show.output;
  EXPECT_NE(show.output.find("\"sha256\": \"" + want + "\""), std::string::npos)
      << "the new rank 0 did not log the model to the run:\n"
      << show.output;
}

// A stop asked (SIGTERM) while the survivors re-form: each leaves with exit 75 and says how to
// continue, after the join window at most (every wait has a deadline).
TEST_F(DataParallel, RanksAskedToStopWhileReFormingExitWithTheStopCode) {
  fs::path spec = write_spec("reform-stop", kElastic);
  const fs::path out = dir_ / "stop-out";
  std::vector<Child> ranks =
      start_four_ranks(out, spec, "file://" + (dir_ / "rv-stop").string(), 0, {});
  Reaper reaper{ranks};
  ASSERT_FALSE(ranks.empty());
  ::kill(ranks[0].pid, SIGKILL);
  ranks[0].finish();
  for (int r = 1; r < 4; ++r) {
    Child& c = ranks[static_cast<size_t>(r)];
    std::string seen;
    for (std::string l = c.line(); !l.empty(); l = c.line()) {
      seen += l;
      if (l.find("re-forming the group") != std::string::npos) break;
    }
    ASSERT_NE(seen.find("re-forming the group"), std::string::npos) << "rank " << r << ":\n"
                                                                    << seen;
    ::kill(c.pid, SIGTERM);
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 1; r < 4; ++r) {
    Ran e = ranks[static_cast<size_t>(r)].finish();
    EXPECT_EQ(e.code, 75) << "rank " << r << ":\n" << e.output;
    EXPECT_NE(e.output.find("stopped on request while the group re-formed; --resume " +
                            out.string() + " continues the run from its newest checkpoint"),
              std::string::npos)
        << e.output;
  }
  // The window is max(3 s, 2 x --heartbeat-s 2) = 4 s.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
}

// The same over tcp://, losing rank 3: rank 0 serves the rendezvous and stays.
TEST_F(DataParallel, RanksWithoutASupervisorReFormOverTcpWithoutRankThree) {
  fs::path spec = write_spec("reform3", kElastic);
  const std::string url = "tcp://127.0.0.1:" + std::to_string(dlsys::testing::free_loopback_port());
  reform_after_kill(dir_ / "tcp", spec, url, 3, plain_sha(spec));
}

// Ranks that resume from different checkpoints (here: --out folders that are not one shared
// folder, one with a checkpoint, one without) fail before the first step naming both steps,
// rather than train apart.
TEST_F(DataParallel, RanksThatWouldResumeAtOtherStepsFailNamingThem) {
  fs::path spec = write_spec("apart", kLong);
  const fs::path a = dir_ / "apart-a", b = dir_ / "apart-b";
  Child first = start_and_wait_for_steps(spec, a, 20, {});
  ASSERT_GT(first.pid, 0) << "the run ended before 20 steps";
  ::kill(first.pid, SIGTERM);
  ASSERT_EQ(first.finish().code, 75);
  const std::string url = "tcp://127.0.0.1:" + std::to_string(dlsys::testing::free_loopback_port());
  Child r0 = spawn({"train", spec.string(), "--out", a.string(), "--auto-resume", "--rank", "0",
                    "--world-size", "2", "--rendezvous", url});
  Child r1 = spawn({"train", spec.string(), "--out", b.string(), "--auto-resume", "--rank", "1",
                    "--world-size", "2", "--rendezvous", url});
  Ran e0 = r0.finish(), e1 = r1.finish();
  EXPECT_NE(e0.code, 0);
  EXPECT_NE(e1.code, 0);
  const std::string e = e0.output + e1.output;
  EXPECT_NE(e.find("rank 1 starts at step 0 and rank 0 at step"), std::string::npos) << e;
  EXPECT_NE(e.find("give every rank the same --out"), std::string::npos) << e;
}

// Below --min-workers the run stops (and says how to continue it).
TEST_F(DataParallel, FewerWorkersThanMinWorkersStopTheRun) {
  fs::path spec = write_spec("long3", kLong);
  const fs::path out = dir_ / "elastic-stop";
  Child c = start_and_wait_for_steps(spec, out, 20, {"--nproc", "2", "--min-workers", "2"});
  ASSERT_GT(c.pid, 0) << "the run ended before 20 steps";
  pid_t r1 = find_process({out.string(), "--rank 1 "});
  ASSERT_GT(r1, 0) << "rank 1's process not found";
  ::kill(r1, SIGKILL);
  Ran r = c.finish();
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("1 worker would remain, fewer than --min-workers 2"), std::string::npos)
      << r.output;
}

}  // namespace
