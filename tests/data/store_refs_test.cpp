// Version refs are a closed grammar: a ref never becomes a path outside refs/<name>/tags/, ref
// files are read bounded (regular files only, no symbolic links) and must hold one of the
// dataset's manifest ids, and errors quote neither file contents nor paths inside the store.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "core/sha256.h"
#include "data/push.h"

namespace dlsys::data {
namespace {

namespace fs = std::filesystem;

class StoreRefsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/dlsys-refs-XXXXXX";
    dir_ = mkdtemp(tmpl);
    root_ = dir_ + "/datasets";
    auto s = DatasetStore::open(root_);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    store_ = std::move(s).value();
    // A file outside the store whose content must never show up in an error.
    secret_ = dir_ + "/secret.txt";
    std::ofstream(secret_) << kSecret;
    for (int v = 0; v < 2; ++v) {
      std::string csv = dir_ + "/d" + std::to_string(v) + ".csv";
      std::ofstream out(csv);
      out << "x,y\n";
      for (int i = 0; i < 50 + v * 10; ++i) out << i << "," << i * 3 << "\n";
      out.close();
      auto src = open_source(csv, "", {});
      ASSERT_TRUE(src.ok()) << src.status().to_string();
      auto r = push(*store_, "d", **src, {});
      ASSERT_TRUE(r.ok()) << r.status().to_string();
      ids_.push_back(r->version.id);
    }
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string tag_path(const std::string& tag) const { return root_ + "/refs/d/tags/" + tag; }

  // The error of resolving d@ref, checked to name no file content and no store path.
  Status resolve_error(const std::string& ref) {
    auto r = store_->resolve({"d", ref, ""});
    EXPECT_FALSE(r.ok()) << "d@" << ref << " resolved";
    if (r.ok()) return Status::OK();
    const std::string& m = r.status().message();
    EXPECT_EQ(m.find(kSecret), std::string::npos) << m;
    EXPECT_EQ(m.find("root:"), std::string::npos) << m;  // /etc/passwd's first line
    if (ref.find(dir_) == std::string::npos) {           // else the caller's own input is quoted
      EXPECT_EQ(m.find(root_), std::string::npos) << m;
      EXPECT_EQ(m.find(dir_), std::string::npos) << m;
    }
    return r.status();
  }

  static constexpr const char* kSecret = "s3cret-content-of-a-file";
  std::string dir_, root_, secret_;
  std::vector<std::string> ids_;
  std::unique_ptr<DatasetStore> store_;
};

TEST_F(StoreRefsTest, TraversalAndMalformedRefsAreRefusedBeforeTheFileSystem) {
  const std::string refs[] = {
      "../../../../etc/passwd",
      "..%2f..%2f..%2f..%2fetc%2fpasswd",  // as sent, not decoded
      "..",
      "../tags/x",
      "/dev/zero",
      "/etc/passwd",
      secret_,  // an absolute path to a file that exists
      "",
      std::string(65, 'a'),     // over the 64 characters of a tag
      std::string(1000, 'v'),   // far over
      "v99999999999999999999",  // a version number past int64
      "99999999999999999999",
      "v1/../../x",
      ".hidden",
      "pr od",
      "prod\n",
      std::string("pr\0od", 5),
  };
  for (const std::string& ref : refs) {
    Status st = resolve_error(ref);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << "d@" << ref << ": " << st.to_string();
    if (ref.find('\0') != std::string::npos) continue;  // not expressible as text below
    auto parsed = parse_version_ref("d@" + ref);
    EXPECT_FALSE(parsed.ok()) << "d@" << ref << " parsed";
    if (!parsed.ok()) {
      EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
      EXPECT_EQ(parsed.status().message().find(kSecret), std::string::npos);
    }
  }
  // The message says what a ref may be.
  Status st = resolve_error("../../../../etc/passwd");
  EXPECT_NE(st.message().find("latest, v<n>"), std::string::npos) << st.message();
  // A name built by hand is checked by resolve too.
  auto bad_name = store_->resolve({"../../etc", "latest", ""});
  ASSERT_FALSE(bad_name.ok());
  EXPECT_EQ(bad_name.status().code(), StatusCode::kInvalidArgument);
  // Long version numbers are refused, not wrapped around.
  EXPECT_EQ(resolve_error("v1000000000000").code(), StatusCode::kInvalidArgument);
}

TEST_F(StoreRefsTest, ValidRefsStillResolve) {
  ASSERT_TRUE(store_->tag({"d", "v1", ""}, "prod").ok());
  ASSERT_TRUE(store_->tag({"d", "latest", ""}, "Release-2.0_rc").ok());
  EXPECT_EQ(store_->resolve({"d", "prod", ""})->number, 1);
  EXPECT_EQ(store_->resolve({"d", "Release-2.0_rc", ""})->number, 2);
  EXPECT_EQ(store_->resolve({"d", "v1", ""})->number, 1);
  EXPECT_EQ(store_->resolve({"d", "2", ""})->number, 2);
  EXPECT_EQ(store_->resolve({"d", "latest", ""})->number, 2);
  EXPECT_EQ(store_->resolve({"d", ids_[0].substr(0, 6), ""})->number, 1);
  EXPECT_EQ(store_->resolve({"d", ids_[1], ""})->number, 2);
  auto prod = store_->resolve({"d", "prod", ""});
  ASSERT_TRUE(prod.ok());
  EXPECT_EQ(prod->tags, std::vector<std::string>{"prod"});
  for (const char* text : {"d@prod", "d@v1:train", "d@latest", "d", "d@2"}) {
    auto r = parse_version_ref(text);
    ASSERT_TRUE(r.ok()) << text << ": " << r.status().to_string();
    EXPECT_TRUE(store_->resolve(*r).ok()) << text;
  }
  auto p = parse_version_ref("d@" + ids_[1].substr(0, 10) + ":test");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(store_->resolve(*p)->number, 2);
  // Unknown but well-formed refs are NotFound and list what exists.
  Status missing = resolve_error("v9");
  EXPECT_EQ(missing.code(), StatusCode::kNotFound);
  EXPECT_NE(missing.message().find("v1..v2"), std::string::npos) << missing.message();
  Status no_tag = resolve_error("staging");
  EXPECT_EQ(no_tag.code(), StatusCode::kNotFound);
  EXPECT_NE(no_tag.message().find("prod"), std::string::npos) << no_tag.message();
  EXPECT_EQ(resolve_error("abcdef0").code(), StatusCode::kNotFound);  // a prefix of nothing
}

TEST_F(StoreRefsTest, AnAllDigitIdPrefixResolvesWhenNoVersionHasThatNumber) {
  // A version by hand whose manifest id starts with 6 digits (about 1 try in 17).
  auto m = store_->resolve({"d", "v2", ""});
  ASSERT_TRUE(m.ok());
  std::string text, id;
  for (int i = 0; i < 100000; ++i) {
    json j = m->manifest;
    j["message"] = "try " + std::to_string(i);
    text = j.dump(1);
    id = sha256_hex(text);
    if (std::all_of(id.begin(), id.begin() + 6, ::isdigit)) break;
  }
  ASSERT_TRUE(std::all_of(id.begin(), id.begin() + 6, ::isdigit));
  { std::ofstream(root_ + "/manifests/" + id + ".json", std::ios::binary) << text; }
  { std::ofstream(root_ + "/refs/d/versions/3", std::ios::binary) << id; }
  auto v = store_->resolve({"d", id.substr(0, 6), ""});
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  EXPECT_EQ(v->number, 3);
  EXPECT_EQ(v->id, id);
  EXPECT_EQ(store_->resolve({"d", "3", ""})->id, id);  // a number is still a number first
}

TEST_F(StoreRefsTest, TagsPointOnlyAtVersionsAndReservedNamesAreRefused) {
  for (const char* t : {"latest", "v3", "7", "v99999999999999999999", "../x", ".x", "a/b", ""})
    EXPECT_EQ(store_->tag({"d", "v1", ""}, t).code(), StatusCode::kInvalidArgument) << t;
  EXPECT_EQ(store_->tag({"d", "v7", ""}, "prod").code(), StatusCode::kNotFound);
  EXPECT_FALSE(fs::exists(tag_path("prod")));
  EXPECT_EQ(store_->tag({"d", "../../x", ""}, "prod").code(), StatusCode::kInvalidArgument);
}

TEST_F(StoreRefsTest, HandEditedTagFilesAreRefusedWithoutEchoingThem) {
  ASSERT_TRUE(store_->tag({"d", "v1", ""}, "prod").ok());
  auto expect_refused = [&](const std::string& tag) {
    Status st = resolve_error(tag);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
    EXPECT_NE(st.message().find("tag '" + tag + "' of dataset 'd' points at no version"),
              std::string::npos)
        << st.message();
    EXPECT_NE(st.message().find("re-tag"), std::string::npos) << st.message();
  };
  // A path, garbage, a manifest id with a newline, the id of a manifest of no version.
  const std::string contents[] = {
      "../../../../etc/passwd", "/dev/zero",          secret_, std::string(kSecret),
      ids_[0] + "\n",           std::string(64, 'f'), "",
  };
  for (const std::string& c : contents) {
    { std::ofstream(tag_path("prod"), std::ios::trunc) << c; }
    expect_refused("prod");
    auto p = store_->resolve({"d", "latest", ""});
    ASSERT_TRUE(p.ok()) << p.status().to_string();  // other refs are unaffected
    EXPECT_TRUE(p->tags.empty());
  }
  // Oversized: never read past the bound.
  { std::ofstream(tag_path("prod"), std::ios::trunc) << std::string(1 << 20, 'a'); }
  expect_refused("prod");

  // A symbolic link to a file outside the store, or to /etc/passwd or /dev/zero.
  for (const std::string& target :
       {secret_, std::string("/etc/passwd"), std::string("/dev/zero")}) {
    fs::remove(tag_path("prod"));
    fs::create_symlink(target, tag_path("prod"));
    expect_refused("prod");
  }
  // A symbolic link to a valid tag file is refused too: tags are plain files.
  ASSERT_TRUE(store_->tag({"d", "v2", ""}, "good").ok());
  fs::remove(tag_path("prod"));
  fs::create_symlink(tag_path("good"), tag_path("prod"));
  expect_refused("prod");
  // A FIFO (opening it for reading would block) and a directory.
  fs::remove(tag_path("prod"));
  ASSERT_EQ(::mkfifo(tag_path("prod").c_str(), 0600), 0);
  expect_refused("prod");
  fs::remove(tag_path("prod"));
  fs::create_directory(tag_path("prod"));
  expect_refused("prod");
  fs::remove(tag_path("prod"));
  // Re-tagging repairs it.
  ASSERT_TRUE(store_->tag({"d", "v1", ""}, "prod").ok());
  EXPECT_EQ(store_->resolve({"d", "prod", ""})->number, 1);
}

TEST_F(StoreRefsTest, DamagedStoreFilesAreNamedByVersionNotByPath) {
  // A version ref file with garbage, then a missing manifest: errors name the version.
  std::string v1 = root_ + "/refs/d/versions/1";
  { std::ofstream(v1, std::ios::trunc) << kSecret; }
  Status st = resolve_error("latest");
  EXPECT_NE(st.message().find("d@v1"), std::string::npos) << st.message();
  { std::ofstream(v1, std::ios::trunc) << ids_[0]; }
  ASSERT_TRUE(store_->resolve({"d", "v1", ""}).ok());
  fs::remove(root_ + "/manifests/" + ids_[0] + ".json");
  st = resolve_error("v1");
  EXPECT_NE(st.message().find("d@v1"), std::string::npos) << st.message();
  EXPECT_FALSE(store_->versions("d").ok());
  // A manifest replaced by a symbolic link to another file is not followed.
  fs::create_symlink(secret_, root_ + "/manifests/" + ids_[0] + ".json");
  st = resolve_error("v1");
  EXPECT_NE(st.message().find("d@v1"), std::string::npos) << st.message();
}

// A manifest or statistics object that hashes correctly but has the wrong shape (a hand-edited
// or foreign store) is refused where it is read, naming the version and the field, so no reader
// after it indexes a missing key or reads past a short array (drift reads quantiles[90]).
TEST_F(StoreRefsTest, MalformedManifestsAndStatisticsAreRefusedWithTheField) {
  auto read = [](const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  // Stores `text` under its SHA-256 in `dir` and points d@v2 at it when it is a manifest.
  auto put = [&](const std::string& dir, const std::string& text) {
    std::string id = sha256_hex(text);
    std::ofstream(root_ + "/" + dir + "/" + id + ".json", std::ios::trunc) << text;
    return id;
  };
  json m = json::parse(read(root_ + "/manifests/" + ids_[1] + ".json"));
  ASSERT_TRUE(m.contains("stats_id"));
  const json good = m;
  std::string v2 = root_ + "/refs/d/versions/2";
  auto expect_refused = [&](const json& manifest, const std::string& field) {
    { std::ofstream(v2, std::ios::trunc) << put("manifests", manifest.dump()); }
    Status st = resolve_error("v2");
    EXPECT_NE(st.message().find("d@v2"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("'" + field + "'"), std::string::npos) << st.message();
  };
  m["shards"] = "x";
  expect_refused(m, "shards");
  m = good;
  m["shards"][0]["id"] = "../../etc/passwd";
  expect_refused(m, "shards[0].id");
  m = good;
  m["rows"] = -1;
  expect_refused(m, "rows");
  m = good;
  m["schema"]["columns"][0].erase("type");
  expect_refused(m, "schema.columns[0].type");
  m = good;
  m["split"]["rows"]["test"] = "7";
  expect_refused(m, "split.rows.test");

  // Statistics with 3 quantiles instead of 101.
  json stats = json::parse(read(root_ + "/stats/" + good["stats_id"].get<std::string>() + ".json"));
  ASSERT_TRUE(stats["x"].contains("quantiles"));
  stats["x"]["quantiles"] = {1, 2, 3};
  m = good;
  m["stats_id"] = put("stats", stats.dump());
  expect_refused(m, "x.quantiles");

  // The untouched manifest still resolves.
  { std::ofstream(v2, std::ios::trunc) << ids_[1]; }
  auto v = store_->resolve({"d", "v2", ""});
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  EXPECT_EQ(v->manifest["rows"], 60);
}

TEST_F(StoreRefsTest, NamesSkipEntriesThatAreNotDatasetNames) {
  fs::create_directories(root_ + "/refs/.hidden/versions/1");
  fs::create_directories(root_ + "/refs/bad name/versions/1");
  auto names = store_->names();
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, std::vector<std::string>{"d"});
}

TEST(SplitFractions, StrictParseNamesTheField) {
  PushOptions o;
  ASSERT_TRUE(parse_split_fractions("0.7,0.2,0.1", &o).ok());
  EXPECT_DOUBLE_EQ(o.train, 0.7);
  EXPECT_DOUBLE_EQ(o.validation, 0.2);
  EXPECT_DOUBLE_EQ(o.test, 0.1);
  ASSERT_TRUE(parse_split_fractions("0.8, 0.2", &o).ok());
  EXPECT_DOUBLE_EQ(o.test, 0.0);
  const std::pair<const char*, const char*> bad[] = {
      {"nan,0.5,0.5", "train"},       {"0.5,NaN,0.5", "validation"}, {"0.5,0.5,inf", "test"},
      {"0.5,-inf,0.5", "validation"}, {"infinity,0,0", "train"},     {"0.8abc,0.2", "train"},
      {"0.8,0.2x", "validation"},     {"0.8,0.1,0.1,", "fractions"}, {"x,y", "train"},
      {"0.8,,0.2", "validation"},     {"0x1p-1,0.5", "train"},       {"1e999,0", "train"},
      {"0.8", "fractions"},           {"1.5,-0.5", "train"},         {"0.5,0.5,0.1 0", "test"},
  };
  for (auto [text, field] : bad) {
    Status st = parse_split_fractions(text, &o);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << text;
    EXPECT_NE(st.message().find(field), std::string::npos) << text << ": " << st.message();
  }
}

}  // namespace
}  // namespace dlsys::data
