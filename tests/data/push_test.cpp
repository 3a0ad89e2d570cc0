// Ingest and the dataset store: CSV/JSONL/NPY/IDX/image sources, validation policies, version
// refs and tags, deduplicated shards, splits, statistics against direct computation, diffs and
// drift.
#include <gtest/gtest.h>
#include <png.h>
#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "core/file_util.h"
#include "core/sha256.h"
#include "data/diff.h"
#include "data/export.h"
#include "data/push.h"
#include "data/shard.h"
#include "tensor/npy.h"

namespace dlsys::data {
namespace {

namespace fs = std::filesystem;

class PushTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/dlsys-data-XXXXXX";
    dir_ = mkdtemp(tmpl);
    auto s = DatasetStore::open(dir_ + "/datasets");
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    store_ = std::move(s).value();
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    std::string p = dir_ + "/" + name;
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
  Result<PushResult> push_file(const std::string& name, const std::string& path,
                               IngestOptions io = {}, PushOptions po = {}) {
    DLSYS_ASSIGN_OR_RETURN(auto src, open_source(path, "", io));
    return push(*store_, name, *src, po);
  }
  Result<RowBatch> all_rows(const VersionInfo& v, const std::string& split = "") {
    std::optional<RowBatch> out;
    DLSYS_RETURN_IF_ERROR(for_each_batch(*store_, v, split, {}, [&](const RowBatch& b) {
      if (!out) out = RowBatch::empty(b.schema);
      for (int64_t r = 0; r < b.rows; ++r) out->append_row(b, r);
      return Status::OK();
    }));
    return std::move(*out);
  }
  int count_files(const std::string& sub) {
    int n = 0;
    for (auto& e : fs::recursive_directory_iterator(dir_ + "/datasets/" + sub))
      n += e.is_regular_file();
    return n;
  }
  std::string dir_;
  std::unique_ptr<DatasetStore> store_;
};

TEST_F(PushTest, CsvHeaderQuotingNullsAndTypes) {
  std::string p = write("a.csv",
                        "id,score,name,flag\n"
                        "1,0.5,\"Smith, J\",3\n"
                        "2,,\"say \"\"hi\"\"\",4\n"
                        "3,2.25,\"two\nlines\",NA\n");
  auto r = push_file("people", p);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->rows, 3);
  auto rows = all_rows(r->version);
  ASSERT_TRUE(rows.ok());
  const Schema& s = rows->schema;
  ASSERT_EQ(s.columns.size(), 4u);
  EXPECT_EQ(s.columns[0].type, ColumnType::kInt64);
  EXPECT_EQ(s.columns[1].type, ColumnType::kFloat64);
  EXPECT_EQ(s.columns[2].type, ColumnType::kString);
  EXPECT_EQ(s.columns[3].type, ColumnType::kInt64);
  EXPECT_EQ(rows->value_text(0, 2), "Smith, J");
  EXPECT_EQ(rows->value_text(1, 2), "say \"hi\"");
  EXPECT_EQ(rows->value_text(2, 2), "two\nlines");
  EXPECT_TRUE(rows->columns[1].is_null(1));
  EXPECT_TRUE(rows->columns[3].is_null(2));
  EXPECT_EQ(rows->value_text(2, 1), "2.25");
  const json& st = r->version.manifest["stats"];
  EXPECT_EQ(st["score"]["nulls"], 1);
  EXPECT_DOUBLE_EQ(st["score"]["mean"].get<double>(), 1.375);
  EXPECT_EQ(st["id"]["max"].get<double>(), 3);
}

// sklearn-style files (shared/data/wine): a first line "178,13,class_0,class_1,class_2" above
// 14-field rows is neither data nor a header; it is skipped and the source says so. With the
// header forced, the error says which flags read such a file.
TEST_F(PushTest, AFirstLineOfAnotherWidthIsSkipped) {
  std::string p = write("wine.csv",
                        "3,2,class_0,class_1\n"
                        "14.2,1.7,0\n"
                        "13.2,1.8,1\n"
                        "12.0,2.1,1\n");
  IngestOptions io;
  auto src = open_source(p, "", io);
  ASSERT_TRUE(src.ok()) << src.status().to_string();
  EXPECT_TRUE((*src)->describe()["skipped_first_line"].get<bool>());
  auto r = push(*store_, "wine", **src, {});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->rows, 3);
  auto rows = all_rows(r->version);
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->schema.columns.size(), 3u);
  EXPECT_EQ(rows->schema.columns[2].name, "c2");
  EXPECT_EQ(rows->schema.columns[2].type, ColumnType::kInt64);
  // A normal header is still a header; one of another width with --header yes is an error that
  // names the flags.
  auto plain = open_source(write("h.csv", "a,b,c\n1,2,3\n4,5,6\n"), "", io);
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE((*plain)->describe()["skipped_first_line"].get<bool>());
  EXPECT_EQ((*plain)->schema().columns[0].name, "a");
  io.header = "yes";
  auto forced = push_file("forced", p, io);
  ASSERT_FALSE(forced.ok());
  EXPECT_NE(forced.status().message().find("--header no --skip-rows 1"), std::string::npos)
      << forced.status().message();
}

TEST_F(PushTest, MalformedCsvNamesTheLine) {
  auto r = push_file("bad", write("b.csv", "a,b\n1,2\n3,\"x\n"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(":3"), std::string::npos) << r.status().message();
  auto q = push_file("bad", write("q.csv", "a,b\n1,2\n3,x\"y\n"));
  ASSERT_FALSE(q.ok());
  EXPECT_NE(q.status().message().find("quote"), std::string::npos) << q.status().message();
}

TEST_F(PushTest, LargeCsvStreamsAcrossChunks) {
  // Over 3 MiB, with quoted newlines straddling the 1 MiB read boundaries.
  std::string text = "k,v,t\n";
  int64_t n = 0;
  double sum = 0;
  while (text.size() < (3u << 20)) {
    text +=
        std::to_string(n) + "," + std::to_string(n % 97) + ",\"a\nb," + std::to_string(n) + "\"\n";
    sum += n % 97;
    ++n;
  }
  PushOptions po;
  po.shard_rows = 20000;
  auto r = push_file("big", write("big.csv", text), {}, po);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->rows, n);
  EXPECT_GT(r->shards, 1);
  EXPECT_NEAR(r->version.manifest["stats"]["v"]["mean"].get<double>(), sum / n, 1e-9);
  auto rows = all_rows(r->version);
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->value_text(n - 1, 2), "a\nb," + std::to_string(n - 1));
}

TEST_F(PushTest, RejectWritesNothingAndQuarantineKeepsBadRowsAside) {
  std::string csv = write("v.csv", "age,color\n30,red\n-4,blue\n50,green\n41,purple\n,red\n");
  std::string schema = write("s.yaml",
                             "columns:\n"
                             "  - {name: age, type: int64, min: 0, max: 120, not_null: true}\n"
                             "  - {name: color, type: string, allowed: [red, green, blue]}\n");
  auto sf = read_schema_file(schema);
  ASSERT_TRUE(sf.ok()) << sf.status().to_string();
  IngestOptions io;
  io.schema = sf->schema;
  PushOptions po;
  po.rules = sf->schema;
  auto r = push_file("people", csv, io, po);
  ASSERT_FALSE(r.ok());
  const std::string& m = r.status().message();
  EXPECT_NE(m.find("3 of 5 rows"), std::string::npos) << m;
  EXPECT_NE(m.find("line 3"), std::string::npos) << m;
  EXPECT_NE(m.find("line 5"), std::string::npos) << m;
  EXPECT_NE(m.find("line 6"), std::string::npos) << m;
  EXPECT_EQ(count_files("shards"), 0);
  EXPECT_EQ(count_files("manifests"), 0);
  EXPECT_EQ(count_files("tmp"), 0);
  EXPECT_FALSE(store_->resolve({"people", "latest", ""}).ok());

  po.policy = "quarantine";
  auto q = push_file("people", csv, io, po);
  ASSERT_TRUE(q.ok()) << q.status().to_string();
  EXPECT_EQ(q->rows, 2);
  EXPECT_EQ(q->bad_rows, 3);
  ASSERT_TRUE(q->quarantine.has_value());
  EXPECT_EQ(q->quarantine->label(), "people.quarantine@v1");
  auto bad = all_rows(*q->quarantine);
  ASSERT_TRUE(bad.ok());
  ASSERT_EQ(bad->rows, 3);
  std::set<int64_t> lines(bad->columns[0].i64.begin(), bad->columns[0].i64.end());
  EXPECT_EQ(lines, (std::set<int64_t>{3, 5, 6}));
  // A schema file with a mistake names the line.
  auto e = read_schema_file(write("e.yaml", "columns:\n  - {name: a, type: int64, mni: 0}\n"));
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("e.yaml:2"), std::string::npos) << e.status().message();
  EXPECT_NE(e.status().message().find("mni"), std::string::npos);
}

TEST_F(PushTest, VersionsTagsDedupAndDiff) {
  std::string a = "x,y\n", b = "x,y\n";
  for (int i = 0; i < 1000; ++i) a += std::to_string(i) + "," + std::to_string(i * i % 13) + "\n";
  for (int i = 100; i < 1200; ++i) b += std::to_string(i) + "," + std::to_string(i * i % 13) + "\n";
  auto v1 = push_file("d", write("a.csv", a));
  ASSERT_TRUE(v1.ok());
  auto again = push_file("d", write("a2.csv", a));
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->unchanged);  // same rows: no new version, nothing new stored
  EXPECT_EQ(again->version.number, 1);
  EXPECT_EQ(again->shards_new, 0);
  auto v3 = push_file("d", write("b.csv", b));
  ASSERT_TRUE(v3.ok());
  EXPECT_FALSE(v3->unchanged);
  EXPECT_EQ(v3->version.label(), "d@v2");
  EXPECT_EQ(v3->version.manifest["parent"], v1->version.id);

  ASSERT_TRUE(store_->tag({"d", "v1", ""}, "prod").ok());
  auto prod = store_->resolve({"d", "prod", ""});
  ASSERT_TRUE(prod.ok());
  EXPECT_EQ(prod->number, 1);
  EXPECT_EQ(store_->resolve({"d", v3->version.id.substr(0, 10), ""})->number, 2);
  EXPECT_EQ(store_->resolve({"d", "latest", ""})->number, 2);
  EXPECT_FALSE(store_->tag({"d", "v1", ""}, "v7").ok());
  auto missing = store_->resolve({"d", "v9", ""});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("v1..v2"), std::string::npos);
  EXPECT_FALSE(parse_version_ref("d@v1:holdout").ok());
  EXPECT_FALSE(parse_version_ref("../etc@v1").ok());

  auto d = diff_versions(*store_, v1->version, v3->version, {});
  ASSERT_TRUE(d.ok()) << d.status().to_string();
  EXPECT_EQ((*d)["rows"]["added"], 200);
  EXPECT_EQ((*d)["rows"]["removed"], 100);
  auto same = diff_versions(*store_, v1->version, again->version, {});
  EXPECT_EQ((*same)["rows"]["added"], 0);
  EXPECT_EQ((*same)["rows"]["shards_shared"], 1);

  // Splits hash the row: a row keeps its split in every version that holds it.
  std::map<std::string, int64_t> split_of;
  for (const char* s : {"train", "validation", "test"}) {
    auto rows = all_rows(v1->version, s);
    ASSERT_TRUE(rows.ok());
    for (int64_t r = 0; r < rows->rows; ++r) split_of[rows->value_text(r, 0)] = *split_id(s);
  }
  EXPECT_EQ(split_of.size(), 1000u);
  int64_t moved = 0;
  for (const char* s : {"train", "validation", "test"}) {
    auto rows = all_rows(v3->version, s);
    for (int64_t r = 0; r < rows->rows; ++r) {
      auto it = split_of.find(rows->value_text(r, 0));
      if (it != split_of.end() && it->second != *split_id(s)) ++moved;
    }
  }
  EXPECT_EQ(moved, 0);
  int64_t train = v1->version.manifest["split"]["rows"]["train"];
  EXPECT_GT(train, 740);
  EXPECT_LT(train, 860);
}

// Pushing the data of the latest version again makes no version (git and lakeFS refuse empty
// commits); the answer names the existing version. Any change in the data makes one.
TEST_F(PushTest, SamePushTwiceMakesOneVersion) {
  std::string a = "x,y\n", b;
  for (int i = 0; i < 300; ++i) a += fmt::format("{},{}\n", i, i % 5);
  b = a + "300,0\n";
  PushOptions first;
  first.message = "first";
  auto v1 = push_file("d", write("a.csv", a), {}, first);
  ASSERT_TRUE(v1.ok()) << v1.status().to_string();
  EXPECT_FALSE(v1->unchanged);
  EXPECT_EQ(v1->version.number, 1);
  PushOptions second;
  second.message = "again";
  auto same = push_file("d", write("copy.csv", a), {}, second);  // another file, same rows
  ASSERT_TRUE(same.ok()) << same.status().to_string();
  EXPECT_TRUE(same->unchanged);
  EXPECT_EQ(same->version.label(), "d@v1");
  EXPECT_EQ(same->version.id, v1->version.id);
  EXPECT_EQ(same->version.manifest["message"], "first");  // the new message is not recorded
  EXPECT_EQ(same->version.manifest["stats"], v1->version.manifest["stats"]);
  EXPECT_EQ(same->rows, 300);
  EXPECT_EQ(store_->versions("d")->size(), 1u);
  EXPECT_EQ(count_files("manifests"), 1);
  EXPECT_EQ(count_files("tmp"), 0);  // the staged shards were dropped

  // Changed content: one more row, or the same rows split differently.
  auto v2 = push_file("d", write("b.csv", b));
  ASSERT_TRUE(v2.ok());
  EXPECT_FALSE(v2->unchanged);
  EXPECT_EQ(v2->version.label(), "d@v2");
  PushOptions other_split;
  other_split.train = 0.5;
  other_split.validation = 0.5;
  other_split.test = 0;
  auto v3 = push_file("d", write("b2.csv", b), {}, other_split);
  ASSERT_TRUE(v3.ok());
  EXPECT_FALSE(v3->unchanged);
  EXPECT_EQ(v3->version.label(), "d@v3");
  // Only the latest version counts: v1's data again is a new version.
  auto v4 = push_file("d", write("a3.csv", a));
  ASSERT_TRUE(v4.ok());
  EXPECT_FALSE(v4->unchanged);
  EXPECT_EQ(v4->version.label(), "d@v4");
  EXPECT_EQ(v4->version.manifest["shards"], v1->version.manifest["shards"]);
  EXPECT_EQ(v4->version.manifest["parent"], v3->version.id);

  // With quarantine, the kept rows and the bad rows are each compared with their latest.
  PushOptions q;
  q.policy = "quarantine";
  q.rules = Schema{{{"y", ColumnType::kInt64, {}, [] {
                       ColumnRules r;
                       r.max = 3;
                       return r;
                     }()}}};
  auto q1 = push_file("q", write("q.csv", a), {}, q);
  ASSERT_TRUE(q1.ok()) << q1.status().to_string();
  ASSERT_TRUE(q1->quarantine.has_value());
  auto q2 = push_file("q", write("q2.csv", a), {}, q);
  ASSERT_TRUE(q2.ok()) << q2.status().to_string();
  EXPECT_TRUE(q2->unchanged);
  EXPECT_TRUE(q2->quarantine_unchanged);
  EXPECT_EQ(q2->version.label(), "q@v1");
  EXPECT_EQ(q2->quarantine->label(), "q.quarantine@v1");
  EXPECT_EQ(store_->versions("q.quarantine")->size(), 1u);
}

// Two identical pushes racing: the check runs under the dataset's lock, so one makes v1 and the
// other answers unchanged.
TEST_F(PushTest, IdenticalPushesRacingMakeOneVersion) {
  std::string a = "x\n";
  for (int i = 0; i < 2000; ++i) a += fmt::format("{}\n", i * 7 % 1000);
  std::string p1 = write("r1.csv", a), p2 = write("r2.csv", a);
  std::optional<Result<PushResult>> r1, r2;
  std::thread t1([&] { r1 = push_file("race", p1); });
  std::thread t2([&] { r2 = push_file("race", p2); });
  t1.join();
  t2.join();
  ASSERT_TRUE(r1->ok() && r2->ok());
  EXPECT_EQ(int((*r1)->unchanged) + int((*r2)->unchanged), 1);
  EXPECT_EQ((*r1)->version.id, (*r2)->version.id);
  EXPECT_EQ(store_->versions("race")->size(), 1u);
}

// Statistics are an object named by the SHA-256 of their bytes: versions and datasets with the
// same data share one; the manifest on disk names it; gc keeps it while a version uses it.
TEST_F(PushTest, IdenticalDataSharesOneStatisticsObject) {
  std::string a = "x,name\n", b = "x,name\n";
  for (int i = 0; i < 500; ++i) a += fmt::format("{},n{}\n", i * 3 % 17, i % 7);
  for (int i = 0; i < 500; ++i) b += fmt::format("{},n{}\n", i * 5 % 19, i % 3);
  auto one = push_file("one", write("a.csv", a));
  auto two = push_file("two", write("a2.csv", a));
  ASSERT_TRUE(one.ok() && two.ok());
  EXPECT_EQ(count_files("stats"), 1);
  EXPECT_EQ(count_files("manifests"), 2);
  ASSERT_TRUE(one->version.manifest.contains("stats_id"));
  EXPECT_EQ(one->version.manifest["stats_id"], two->version.manifest["stats_id"]);
  // On disk the manifest names the object; readers see the statistics as before.
  auto text = read_file(dir_ + "/datasets/manifests/" + one->version.id + ".json");
  ASSERT_TRUE(text.ok());
  json disk = json::parse(*text);
  EXPECT_FALSE(disk.contains("stats"));
  EXPECT_EQ(disk["stats_id"], one->version.manifest["stats_id"]);
  auto read = store_->resolve({"two", "latest", ""});
  ASSERT_TRUE(read.ok()) << read.status().to_string();
  EXPECT_EQ(read->manifest["stats"], one->version.manifest["stats"]);
  EXPECT_EQ(read->manifest["stats"]["x"]["count"], 500);
  EXPECT_EQ(read->manifest["stats"]["x"]["max"], 16);

  auto changed = push_file("one", write("b.csv", b));
  ASSERT_TRUE(changed.ok());
  EXPECT_EQ(count_files("stats"), 2);
  EXPECT_NE(changed->version.manifest["stats_id"], one->version.manifest["stats_id"]);

  // gc: files older than an hour that no version names go; live statistics stay.
  std::string orphan = dir_ + "/datasets/stats/" + std::string(64, 'a') + ".json";
  write("datasets/stats/" + std::string(64, 'a') + ".json", "{}");
  auto old = fs::file_time_type::clock::now() - std::chrono::hours(2);
  for (auto& e : fs::recursive_directory_iterator(dir_ + "/datasets"))
    if (e.is_regular_file()) fs::last_write_time(e.path(), old);
  auto freed = store_->gc();
  ASSERT_TRUE(freed.ok()) << freed.status().to_string();
  EXPECT_FALSE(fs::exists(orphan));
  EXPECT_EQ(count_files("stats"), 2);
  for (const char* n : {"one", "two"}) {
    auto vs = store_->versions(n);
    ASSERT_TRUE(vs.ok()) << vs.status().to_string();
    for (const auto& v : *vs) EXPECT_TRUE(v.manifest["stats"].is_object()) << v.label();
  }

  // A statistics object that does not match its name is reported, not used.
  std::string sid = two->version.manifest["stats_id"];
  write("datasets/stats/" + sid + ".json", "{\"x\": {}}");
  auto bad = store_->resolve({"two", "latest", ""});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("statistics of two@v1"), std::string::npos)
      << bad.status().message();
  EXPECT_EQ(bad.status().message().find(dir_), std::string::npos) << bad.status().message();
}

// Stores written before statistics objects existed keep the statistics in the manifest; they
// are read as they are (no migration), and pushes on top of them work.
TEST_F(PushTest, OldLayoutStoreStillReads) {
  std::string a = "v\n", b = "v\n";
  for (int i = 0; i < 400; ++i) a += fmt::format("{}\n", i % 23), b += fmt::format("{}\n", i % 29);
  auto pushed = push_file("old", write("a.csv", a));
  ASSERT_TRUE(pushed.ok());
  json stats = pushed->version.manifest["stats"];
  // Rewrite v1 as the old layout wrote it: "stats" inline, no statistics object.
  std::string root = dir_ + "/datasets";
  json m = json::parse(*read_file(root + "/manifests/" + pushed->version.id + ".json"));
  m.erase("stats_id");
  m["stats"] = stats;
  std::string text = m.dump(1), id = sha256_hex(text);
  fs::remove_all(root + "/stats");
  fs::remove(root + "/manifests/" + pushed->version.id + ".json");
  write("datasets/manifests/" + id + ".json", text);
  write("datasets/refs/old/versions/1", id);
  store_.reset();
  auto reopened = DatasetStore::open(root);
  ASSERT_TRUE(reopened.ok());
  store_ = std::move(reopened).value();

  auto v1 = store_->resolve({"old", "v1", ""});
  ASSERT_TRUE(v1.ok()) << v1.status().to_string();
  EXPECT_EQ(v1->id, id);
  EXPECT_EQ(v1->manifest["stats"], stats);
  EXPECT_FALSE(v1->manifest.contains("stats_id"));
  // The same data again: unchanged against the old-layout version.
  auto same = push_file("old", write("a2.csv", a));
  ASSERT_TRUE(same.ok()) << same.status().to_string();
  EXPECT_TRUE(same->unchanged);
  EXPECT_EQ(same->version.id, id);
  EXPECT_EQ(same->version.manifest["stats"], stats);
  EXPECT_EQ(count_files("stats"), 0);  // nothing written
  // New data: a new-layout version next to the old one; diff and drift read both.
  auto v2 = push_file("old", write("b.csv", b));
  ASSERT_TRUE(v2.ok()) << v2.status().to_string();
  EXPECT_EQ(v2->version.label(), "old@v2");
  EXPECT_EQ(count_files("stats"), 1);
  auto d = diff_versions(*store_, *v1, v2->version, {});
  ASSERT_TRUE(d.ok()) << d.status().to_string();
  EXPECT_TRUE((*d)["drift"]["v"].contains("psi")) << d->dump();
  // gc keeps the old manifest (and its inline statistics).
  for (auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file())
      fs::last_write_time(e.path(), fs::file_time_type::clock::now() - std::chrono::hours(2));
  ASSERT_TRUE(store_->gc().ok());
  auto vs = store_->versions("old");
  ASSERT_TRUE(vs.ok()) << vs.status().to_string();
  ASSERT_EQ(vs->size(), 2u);
  EXPECT_EQ((*vs)[0].manifest["stats"], stats);
  EXPECT_EQ((*vs)[1].manifest["stats"], v2->version.manifest["stats"]);
}

TEST_F(PushTest, StatisticsMatchDirectComputationAndDriftIsFlagged) {
  std::mt19937 rng(7);
  std::normal_distribution<double> n01(0, 1);
  std::string a = "v\n", b = "v\n";
  std::vector<double> va;
  for (int i = 0; i < 5000; ++i) {
    double x = n01(rng);
    va.push_back(x);
    a += fmt::format("{}\n", x);
  }
  for (int i = 0; i < 5000; ++i) b += fmt::format("{}\n", n01(rng) + 0.5);
  auto v1 = push_file("n", write("a.csv", a));
  auto v2 = push_file("n", write("b.csv", b));
  ASSERT_TRUE(v1.ok() && v2.ok());
  const json& s = v1->version.manifest["stats"]["v"];
  double mean = 0, sq = 0;
  for (double x : va) mean += x;
  mean /= va.size();
  for (double x : va) sq += (x - mean) * (x - mean);
  std::sort(va.begin(), va.end());
  EXPECT_NEAR(s["mean"].get<double>(), mean, 1e-12);
  EXPECT_NEAR(s["std"].get<double>(), std::sqrt(sq / va.size()), 1e-9);
  EXPECT_EQ(s["min"].get<double>(), va.front());
  EXPECT_EQ(s["max"].get<double>(), va.back());
  // 5000 rows fit the sample: quantiles are exact (linear interpolation).
  EXPECT_NEAR(s["quantiles"][50].get<double>(), (va[2499] + va[2500]) / 2, 1e-12);
  int64_t hist = 0;
  for (auto& c : s["histogram"]["counts"]) hist += c.get<int64_t>();
  EXPECT_EQ(hist, 5000);

  auto same = compute_drift(s.is_object() ? v1->version.manifest["stats"] : json(),
                            v1->version.manifest["stats"], {});
  EXPECT_FALSE(same["v"]["drift"].get<bool>());
  EXPECT_NEAR(same["v"]["ks"].get<double>(), 0, 1e-12);
  auto shifted = compute_drift(v1->version.manifest["stats"], v2->version.manifest["stats"], {});
  // A 0.5 sigma shift of a normal: KS D = 2*Phi(0.25)-1 = 0.197, PSI about 0.25.
  EXPECT_NEAR(shifted["v"]["ks"].get<double>(), 0.197, 0.04);
  EXPECT_TRUE(shifted["v"]["drift"].get<bool>());
  // A sample of inputs from the same distribution does not drift; a shifted one does.
  json ok = json::array(), off = json::array();
  for (int i = 0; i < 2000; ++i) ok.push_back(n01(rng)), off.push_back(n01(rng) * 3);
  auto d1 = drift_of_sample(v1->version, {{"v", ok}}, {});
  auto d2 = drift_of_sample(v1->version, {{"v", off}}, {});
  ASSERT_TRUE(d1.ok() && d2.ok()) << d1.status().to_string();
  EXPECT_FALSE((*d1)["v"]["drift"].get<bool>()) << d1->dump();
  EXPECT_TRUE((*d2)["v"]["drift"].get<bool>());
  EXPECT_FALSE(drift_of_sample(v1->version, {{"w", ok}}, {}).ok());
}

TEST_F(PushTest, JsonlNpyAndIdx) {
  auto j = push_file("j",
                     write("a.jsonl",
                           "{\"a\": 1, \"b\": \"x\", \"v\": [[1,2],[3,4]]}\n"
                           "{\"a\": 2, \"v\": [[5,6],[7,8]]}\n"
                           "not json\n"
                           "{\"a\": 2.5, \"b\": \"y\", \"v\": [[0,0],[0,0]]}\n"),
                     {}, [] {
                       PushOptions p;
                       p.policy = "quarantine";
                       return p;
                     }());
  ASSERT_TRUE(j.ok()) << j.status().to_string();
  EXPECT_EQ(j->rows, 3);  // line 3 is not JSON; 2.5 on line 4 makes column a float64
  EXPECT_EQ(j->bad_rows, 1);
  EXPECT_EQ(j->bad_sample[0].line, 3);
  auto jr = all_rows(j->version);
  EXPECT_EQ(jr->schema.columns[2].type, ColumnType::kTensorF32);
  EXPECT_EQ(jr->value_text(1, 2), "[5,6,7,8]");
  EXPECT_TRUE(jr->columns[1].is_null(1));
  // Columns keep the order the lines write them in, not the alphabet's.
  auto z =
      push_file("z", write("z.jsonl", "{\"zeta\": 1, \"alpha\": 2}\n{\"mid\": 3, \"zeta\": 4}\n"));
  ASSERT_TRUE(z.ok()) << z.status().to_string();
  auto zr = all_rows(z->version);
  ASSERT_EQ(zr->schema.columns.size(), 3u);
  EXPECT_EQ(zr->schema.columns[0].name, "zeta");
  EXPECT_EQ(zr->schema.columns[1].name, "alpha");
  EXPECT_EQ(zr->schema.columns[2].name, "mid");

  // NPY features [N, 3] float32 and int64 labels.
  std::vector<float> x(30);
  std::vector<int64_t> y(10);
  for (int i = 0; i < 30; ++i) x[i] = i * 0.5f;
  for (int i = 0; i < 10; ++i) y[i] = i % 3;
  ASSERT_TRUE(npy_write(dir_ + "/x.npy", Tensor::from_f32({10, 3}, x.data())).ok());
  ASSERT_TRUE(npy_write(dir_ + "/y.npy", Tensor::from_i64({10}, y.data())).ok());
  IngestOptions io;
  io.labels_path = dir_ + "/y.npy";
  auto n = push_file("arr", dir_ + "/x.npy", io);
  ASSERT_TRUE(n.ok()) << n.status().to_string();
  auto nr = all_rows(n->version);
  EXPECT_EQ(nr->value_text(3, 0), "[4.5,5,5.5]");
  EXPECT_EQ(nr->value_text(5, 1), "2");
  io.labels_path = write("short.npy", "\x93NUMPY junk");
  EXPECT_FALSE(push_file("arr", dir_ + "/x.npy", io).ok());

  // IDX (MNIST layout): 4 images of 2x3 and their labels.
  std::string img("\0\0\x08\x03\0\0\0\x04\0\0\0\x02\0\0\0\x03", 16),
      lab("\0\0\x08\x01\0\0\0\x04", 8);
  for (int i = 0; i < 24; ++i) img += static_cast<char>(i * 10);
  for (int i = 0; i < 4; ++i) lab += static_cast<char>(7 - i);
  io.labels_path = write("l.idx1-ubyte", lab);
  auto m = push_file("mnist", write("i.idx3-ubyte", img), io);
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  auto mr = all_rows(m->version);
  EXPECT_EQ(mr->schema.columns[0].type, ColumnType::kTensorU8);
  EXPECT_EQ(mr->value_text(1, 0), "[60,70,80,90,100,110]");
  EXPECT_EQ(mr->value_text(3, 1), "4");
  auto trunc = push_file("mnist", write("t.idx3-ubyte", img.substr(0, 30)), io);
  ASSERT_FALSE(trunc.ok());
  EXPECT_NE(trunc.status().message().find("truncated"), std::string::npos);
}

void write_png(const std::string& path, int w, int h, uint8_t value) {
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = w;
  img.height = h;
  img.format = PNG_FORMAT_RGB;
  std::vector<uint8_t> px(w * h * 3, value);
  ASSERT_TRUE(png_image_write_to_file(&img, path.c_str(), 0, px.data(), 0, nullptr));
}

TEST_F(PushTest, ImageFolderDecodesResizesAndReportsBadFiles) {
  for (const char* c : {"cat", "dog"}) fs::create_directories(dir_ + "/img/" + c);
  write_png(dir_ + "/img/cat/a.png", 8, 8, 10);
  write_png(dir_ + "/img/cat/b.png", 16, 4, 20);
  write_png(dir_ + "/img/dog/c.png", 8, 8, 200);
  write("img/dog/broken.jpg", "not a jpeg");
  IngestOptions io;
  io.image_height = 4;
  io.image_width = 4;
  PushOptions po;
  po.policy = "quarantine";
  auto r = push_file("pets", dir_ + "/img", io, po);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->rows, 3);
  EXPECT_EQ(r->bad_rows, 1);
  EXPECT_EQ(r->bad_sample[0].text, "dog/broken.jpg");
  auto rows = all_rows(r->version);
  EXPECT_EQ(rows->schema.columns[0].shape, (std::vector<int64_t>{4, 4, 3}));
  EXPECT_EQ(rows->columns[0].raw[0], 10);            // a uniform image stays uniform
  EXPECT_EQ(rows->columns[0].raw[48], 20);           // second image, resized from 16x4
  EXPECT_EQ(rows->columns[0].raw[2 * 48 + 5], 200);  // the dog
  EXPECT_EQ(rows->value_text(2, 1), "1");
  EXPECT_EQ(rows->value_text(2, 2), "dog/c.png");
  EXPECT_EQ(r->version.manifest["source"]["classes"], json({"cat", "dog"}));
}

}  // namespace
}  // namespace dlsys::data
