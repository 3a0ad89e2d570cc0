// RequestSampler and the sample log reader without a server: records round-trip with their
// tensors' bytes, segments rotate by size and age, a full queue drops and counts, a torn tail is
// skipped and reported, and damage elsewhere is an error naming the file and the offset.
#include "serve/request_sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "core/file_util.h"

namespace dlsys::serve {
namespace {

namespace fs = std::filesystem;

class SamplerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("dlsys-sampler-test-" + random_hex(6));
  }
  void TearDown() override { fs::remove_all(root_); }

  RequestSamplerOptions Options() {
    RequestSamplerOptions o;
    o.dir = root_.string();
    return o;
  }
  // A request of `rows` rows: x f32 [rows, 3] from `base`, and ids i64 [rows].
  static V2InferRequest Request(const std::string& id, float base, int64_t rows) {
    V2InferRequest r;
    r.id = id;
    Tensor x = Tensor::empty(DType::kF32, {rows, 3});
    for (int64_t i = 0; i < rows * 3; ++i) x.data_as<float>()[i] = base + 0.5f * i;
    Tensor k = Tensor::empty(DType::kI64, {rows});
    for (int64_t i = 0; i < rows; ++i) k.data_as<int64_t>()[i] = 1000 + i;
    r.inputs = {{"x", x}, {"k", k}};
    r.batch_rows = rows;
    return r;
  }
  static std::vector<Tensor> Outputs(float base, int64_t rows) {
    Tensor y = Tensor::empty(DType::kF32, {rows, 2});
    for (int64_t i = 0; i < rows * 2; ++i) y.data_as<float>()[i] = -base - i;
    Tensor b = Tensor::empty(DType::kBool, {rows});
    for (int64_t i = 0; i < rows; ++i) b.data_as<uint8_t>()[i] = i % 2;
    return {y, b};
  }
  static std::vector<TensorSpec> OutputSpecs() {
    return {{"y", DType::kF32, {-1, 2}}, {"flag", DType::kBool, {-1}}};
  }
  // Samples one request at rate 1 and finishes it.
  static void Sample(RequestSampler& s, const std::string& deployment, const std::string& id,
                     float base, int64_t rows = 2) {
    V2InferRequest r = Request(id, base, rows);
    auto p = s.begin(1.0, deployment, r, OutputSpecs());
    ASSERT_TRUE(p);
    s.finish(p, "model-a", 3, 1234, Outputs(base, rows));
  }
  static std::string Bytes(const Tensor& t) {
    return std::string(static_cast<const char*>(t.data()), t.nbytes());
  }
  std::vector<fs::path> Segments(const std::string& deployment, const fs::path& root = {}) {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator((root.empty() ? root_ : root) / deployment))
      out.push_back(e.path());
    std::sort(out.begin(), out.end());
    return out;
  }

  fs::path root_;
};

TEST_F(SamplerTest, RecordsRoundTripWithTheirTensorsBytes) {
  RequestSampler s(Options());
  const int64_t before = std::chrono::duration_cast<std::chrono::microseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  Sample(s, "dep", "req-1", 1.0f, 2);
  Sample(s, "dep", "req-2", 7.0f, 3);
  Sample(s, "other", "req-3", 9.0f, 1);
  s.flush();
  EXPECT_EQ(s.counts("dep").written, 2);
  EXPECT_EQ(s.counts("other").written, 1);

  SampleScan scan;
  auto got = read_samples(sample_dir(root_.string(), "dep"), {}, &scan);
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  ASSERT_EQ(got->size(), 2u);
  EXPECT_EQ(scan.files, 1);
  EXPECT_TRUE(scan.torn.empty());
  const SampleRecord& r = (*got)[1];
  EXPECT_EQ(r.request_id, "req-2");
  EXPECT_EQ(r.deployment, "dep");
  EXPECT_EQ(r.model, "model-a");
  EXPECT_EQ(r.version, 3);
  EXPECT_EQ(r.latency_us, 1234);
  EXPECT_GE(r.time_us, before);
  ASSERT_EQ(r.inputs.size(), 2u);
  V2InferRequest sent = Request("req-2", 7.0f, 3);
  EXPECT_EQ(r.inputs[0].name, "x");
  EXPECT_EQ(r.inputs[0].datatype, "FP32");
  EXPECT_EQ(r.inputs[0].shape, (std::vector<int64_t>{3, 3}));
  EXPECT_EQ(r.inputs[0].data, Bytes(sent.inputs[0].tensor));
  EXPECT_EQ(r.inputs[1].name, "k");
  EXPECT_EQ(r.inputs[1].datatype, "INT64");
  EXPECT_EQ(r.inputs[1].data, Bytes(sent.inputs[1].tensor));
  ASSERT_EQ(r.outputs.size(), 2u);
  std::vector<Tensor> returned = Outputs(7.0f, 3);
  EXPECT_EQ(r.outputs[0].name, "y");
  EXPECT_EQ(r.outputs[0].shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(r.outputs[0].data, Bytes(returned[0]));
  EXPECT_EQ(r.outputs[1].name, "flag");
  EXPECT_EQ(r.outputs[1].datatype, "BOOL");
  EXPECT_EQ(r.outputs[1].data, Bytes(returned[1]));

  // A time window selects records by their time.
  auto none = read_samples(sample_dir(root_.string(), "dep"), {.since_us = r.time_us + 1});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->size(), 0u);
  // A deployment that never sampled has an empty log.
  auto empty = read_samples(sample_dir(root_.string(), "nothing"));
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST_F(SamplerTest, AnIdIsGeneratedOnlyWhenTheRequestHasNone) {
  RequestSampler s(Options());
  V2InferRequest with = Request("mine", 0, 1), without = Request("", 0, 1);
  ASSERT_TRUE(s.begin(1.0, "dep", with, OutputSpecs()));
  EXPECT_EQ(with.id, "mine");
  auto p = s.begin(1.0, "dep", without, OutputSpecs());
  ASSERT_TRUE(p);
  EXPECT_EQ(without.id.size(), 32u);
  EXPECT_EQ(p->request_id, without.id);
  // Not sampled: nothing is generated.
  V2InferRequest skipped = Request("", 0, 1);
  EXPECT_FALSE(s.begin(0.0, "dep", skipped, OutputSpecs()));
  EXPECT_TRUE(skipped.id.empty());
}

TEST_F(SamplerTest, SegmentsRotateBySizeAndAgeAndReadInOrder) {
  {
    RequestSamplerOptions o = Options();
    o.rotate_bytes = 300;  // about two records per segment
    RequestSampler s(o);
    for (int i = 0; i < 7; ++i) Sample(s, "dep", "r" + std::to_string(i), i);
    s.stop();
    EXPECT_EQ(s.counts("dep").written, 7);
  }
  EXPECT_GE(Segments("dep").size(), 3u);
  auto got = read_samples(sample_dir(root_.string(), "dep"));
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  ASSERT_EQ(got->size(), 7u);
  for (int i = 0; i < 7; ++i) EXPECT_EQ((*got)[i].request_id, "r" + std::to_string(i));

  RequestSamplerOptions o = Options();
  o.rotate_after = std::chrono::milliseconds(5);
  RequestSampler s(o);
  Sample(s, "aged", "a", 0);
  s.flush();
  std::this_thread::sleep_for(std::chrono::milliseconds(10));  // older than rotate_after
  Sample(s, "aged", "b", 0);
  s.flush();
  EXPECT_EQ(Segments("aged").size(), 2u);
}

TEST_F(SamplerTest, AFullQueueDropsAndCountsInsteadOfWaiting) {
  RequestSamplerOptions o = Options();
  // A record is counted as its tensor bytes plus 256 and its strings: one of 8 rows (about 500)
  // does not fit, one of 1 row (about 300) does.
  o.max_queue_bytes = 400;
  RequestSampler s(o);
  Sample(s, "dep", "big", 0, 8);
  EXPECT_EQ(s.counts("dep").dropped_queue_full, 1);
  Sample(s, "dep", "small", 0, 1);
  s.flush();
  EXPECT_EQ(s.counts("dep").written, 1);
  std::string m = s.metrics_text({"dep"});
  EXPECT_NE(m.find("dlsys_serve_samples_written_total{deployment=\"dep\"} 1\n"), std::string::npos)
      << m;
  EXPECT_NE(
      m.find("dlsys_serve_samples_dropped_total{deployment=\"dep\",reason=\"queue_full\"} 1\n"),
      std::string::npos)
      << m;
  s.stop();
  Sample(s, "dep", "late", 0, 1);
  EXPECT_EQ(s.counts("dep").dropped_shutdown, 1);
}

// Writes three records to one segment and returns its path and the records' offsets.
struct Written {
  fs::path file;
  std::vector<size_t> offsets;  // where each record starts
  size_t size = 0;
};

class SamplerDamageTest : public SamplerTest {
 protected:
  Written WriteThree() {
    RequestSampler s(Options());
    Sample(s, "dep", "r0", 0);
    Sample(s, "dep", "r1", 1);
    Sample(s, "dep", "r2", 2);
    s.stop();
    Written w;
    auto segs = Segments("dep");
    EXPECT_EQ(segs.size(), 1u);
    w.file = segs.at(0);
    std::string b = *read_file(w.file.string());
    w.size = b.size();
    // Records start with the bytes "DLSR"; the file header ends where the first one starts.
    for (size_t at = b.find("DLSR"); at != std::string::npos; at = b.find("DLSR", at + 1))
      w.offsets.push_back(at);
    EXPECT_EQ(w.offsets.size(), 3u);
    return w;
  }
  static void Rewrite(const fs::path& p, const std::function<void(std::string*)>& edit) {
    std::string b = *read_file(p.string());
    edit(&b);
    std::ofstream(p, std::ios::binary | std::ios::trunc) << b;
  }
  Result<std::vector<SampleRecord>> Read(SampleScan* scan) {
    return read_samples(sample_dir(root_.string(), "dep"), {}, scan);
  }
};

TEST_F(SamplerDamageTest, ATornTailIsSkippedAndReported) {
  Written w = WriteThree();
  // Cut inside the last record (a crash during its write).
  fs::resize_file(w.file, w.size - 5);
  SampleScan scan;
  auto got = Read(&scan);
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  ASSERT_EQ(got->size(), 2u);
  EXPECT_EQ((*got)[1].request_id, "r1");
  ASSERT_EQ(scan.torn.size(), 1u);
  EXPECT_EQ(scan.torn[0], fmt::format("{} at offset {}", w.file.string(), w.offsets[2]));

  // Cut inside the last record's frame header.
  fs::resize_file(w.file, w.offsets[2] + 7);
  got = Read(&scan);
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  EXPECT_EQ(got->size(), 2u);

  // The last record complete in size but its bytes never written (zeros after a power loss).
  fs::resize_file(w.file, w.offsets[2]);
  fs::resize_file(w.file, w.size);
  got = Read(&scan);
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  EXPECT_EQ(got->size(), 2u);
  EXPECT_EQ(scan.torn.size(), 1u);
}

TEST_F(SamplerDamageTest, ALastRecordFailingItsChecksumIsATornTail) {
  Written w = WriteThree();
  Rewrite(w.file, [&](std::string* b) { (*b)[w.size - 3] ^= 0x40; });
  SampleScan scan;
  auto got = Read(&scan);
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  EXPECT_EQ(got->size(), 2u);
  EXPECT_EQ(scan.torn.size(), 1u);
}

TEST_F(SamplerDamageTest, DamageBeforeTheTailIsAnErrorNamingFileAndOffset) {
  Written w = WriteThree();
  // A flipped byte inside the middle record's payload.
  Rewrite(w.file, [&](std::string* b) { (*b)[w.offsets[1] + 30] ^= 0x01; });
  auto got = Read(nullptr);
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find(w.file.string()), std::string::npos)
      << got.status().message();
  EXPECT_NE(got.status().message().find(fmt::format("at offset {}", w.offsets[1])),
            std::string::npos)
      << got.status().message();
  EXPECT_NE(got.status().message().find("checksum"), std::string::npos) << got.status().message();

  // A broken frame header in the middle (not zeros): the same, at that offset.
  Rewrite(w.file, [&](std::string* b) {
    (*b)[w.offsets[1] + 30] ^= 0x01;  // undo
    (*b)[w.offsets[1] + 5] ^= 0x10;   // the length
  });
  got = Read(nullptr);
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find(fmt::format("at offset {}", w.offsets[1])),
            std::string::npos)
      << got.status().message();
}

// SampleTail reads what a log gained since its last poll: whole records only (one torn mid-way
// is read once its bytes are complete), across rotations, each record once.
TEST_F(SamplerTest, ATailReadsEachRecordOnceAsTheLogGrows) {
  RequestSamplerOptions o = Options();
  o.rotate_bytes = 300;  // about two records per segment
  RequestSampler s(o);
  SampleTail tail(sample_dir(root_.string(), "dep"));
  std::vector<std::string> seen;
  auto poll = [&] {
    auto n = tail.poll([&](SampleRecord&& r) {
      seen.push_back(r.request_id);
      return Status::OK();
    });
    EXPECT_TRUE(n.ok()) << n.status().to_string();
    return n.ok() ? *n : -1;
  };
  EXPECT_EQ(poll(), 0);  // no directory yet
  for (int i = 0; i < 3; ++i) Sample(s, "dep", "a" + std::to_string(i), i);
  s.flush();
  EXPECT_EQ(poll(), 3);
  EXPECT_EQ(poll(), 0);
  for (int i = 0; i < 4; ++i) Sample(s, "dep", "b" + std::to_string(i), i);
  s.flush();
  EXPECT_EQ(poll(), 4);
  s.stop();
  EXPECT_GE(Segments("dep").size(), 3u);
  EXPECT_EQ(seen, (std::vector<std::string>{"a0", "a1", "a2", "b0", "b1", "b2", "b3"}));
  // Half a record appended by hand (as a crash mid-write leaves it): not read, and read once
  // when its other half lands.
  const fs::path last = Segments("dep").back();
  std::string whole;
  {
    RequestSamplerOptions o2 = Options();
    o2.dir = (root_ / "other").string();
    RequestSampler t(o2);
    Sample(t, "x", "c0", 9);
    t.stop();
    std::string b = *read_file(Segments("x", root_ / "other").at(0).string());
    whole = b.substr(b.find("DLSR"));
  }
  std::ofstream(last, std::ios::binary | std::ios::app) << whole.substr(0, whole.size() / 2);
  EXPECT_EQ(poll(), 0);
  std::ofstream(last, std::ios::binary | std::ios::app) << whole.substr(whole.size() / 2);
  EXPECT_EQ(poll(), 1);
  EXPECT_EQ(seen.back(), "c0");
  EXPECT_EQ(poll(), 0);
}

// Damage in a segment: the records before it are read once, the poll says so once, and the
// newer segments are still read.
TEST_F(SamplerDamageTest, ATailReportsDamageOnceAndReadsTheOtherFiles) {
  Written w = WriteThree();
  Rewrite(w.file, [&](std::string* b) { (*b)[w.offsets[1] + 30] ^= 0x01; });
  {
    RequestSampler s(Options());  // a new segment: the server restarted
    Sample(s, "dep", "r3", 3);
    s.stop();
  }
  SampleTail tail(sample_dir(root_.string(), "dep"));
  std::vector<std::string> seen;
  auto visit = [&](SampleRecord&& r) {
    seen.push_back(r.request_id);
    return Status::OK();
  };
  auto first = tail.poll(visit);
  ASSERT_FALSE(first.ok());
  EXPECT_NE(first.status().message().find(fmt::format("at offset {}", w.offsets[1])),
            std::string::npos)
      << first.status().message();
  EXPECT_EQ(seen, (std::vector<std::string>{"r0", "r3"}));
  auto again = tail.poll(visit);
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  EXPECT_EQ(*again, 0);
  EXPECT_EQ(seen.size(), 2u);
}

TEST_F(SamplerDamageTest, AFileThatIsNotASampleLogIsRefused) {
  fs::create_directories(root_ / "dep");
  const fs::path bogus = root_ / "dep" / "0000000000000001-abcd1234.dlsys-samples";
  std::ofstream(bogus, std::ios::binary) << "this is a text file, not samples\n";
  auto got = Read(nullptr);
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find(bogus.string() + " at offset 0: not a dlsys sample log"),
            std::string::npos)
      << got.status().message();
  // A file created but cut before its header was complete is a torn tail, not damage.
  std::ofstream(bogus, std::ios::binary | std::ios::trunc) << "DLSYS";
  SampleScan scan;
  auto ok = Read(&scan);
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_EQ(scan.torn.size(), 1u);
}

}  // namespace
}  // namespace dlsys::serve
