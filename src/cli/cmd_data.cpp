// `dlsys data`: versioned datasets in the data directory's dataset store (DATA_DIR/datasets,
// shared with `dlsys server`): push, list, versions, show, diff, pull, tag, verify, gc. With
// --server URL (or $DLSYS_SERVER) push, list, versions, show, diff, pull and tag go through that
// server's /api/v1/datasets routes instead, printing the same output.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>

#include "api/client.h"
#include "api/services.h"
#include "cli/client_options.h"
#include "cli/commands.h"
#include "core/file_util.h"
#include "core/json_get.h"
#include "core/json_util.h"
#include "core/natural_order.h"
#include "core/sha256.h"
#include "data/diff.h"
#include "data/export.h"
#include "data/manifest_check.h"
#include "data/push.h"
#include "data/shard.h"
#include "data/upload_staging.h"

namespace dlsys::cli {
namespace {

using nlohmann::json;

struct DataArgs {
  std::string data_dir, server, token;
  bool json = false, quiet = false;
  // push
  std::string path, name, schema, message, format, labels, policy, split = "0.8,0.1,0.1", split_key,
                                                                   image_size, header = "auto";
  int channels = 3;
  int64_t skip_rows = 0, shard_rows = 1 << 20;
  // others
  std::string ref, ref2, tag, out, sample;
  double psi = 0.2, ks = 0.1;
};

void add_common(CLI::App* c, DataArgs* a) {
  c->add_option("--data-dir", a->data_dir, "Data directory (default $DLSYS_HOME or ~/.dlsys)");
  c->add_option("--server", a->server,
                "Use this dlsys server's datasets, e.g. http://127.0.0.1:8080 (or $DLSYS_SERVER)");
  c->add_option("--token", a->token, "API token for --server (or $DLSYS_TOKEN)");
  c->add_flag("--json", a->json, "Print JSON for scripts");
  c->add_flag("--quiet", a->quiet, "No note on stderr saying which data directory is used");
}

// Where a data command works: a server (client set) or a data directory's store.
struct Target {
  std::unique_ptr<api::ApiClient> client;
  std::unique_ptr<data::DatasetStore> store;
  std::string data_dir;
};

// --server / $DLSYS_SERVER (never a fallback when it does not answer), else the data directory;
// without --data-dir a note on stderr names the default one (and a server on 127.0.0.1:8080
// that answers, whose datasets may be the ones meant).
Result<Target> open_target(const DataArgs& a) {
  Target t;
  bool from_env = false;
  std::string server = server_to_use(a.server, !a.data_dir.empty(), &from_env);
  if (!server.empty()) {
    std::string token = a.token;
    if (token.empty())
      if (const char* e = std::getenv("DLSYS_TOKEN")) token = e;
    DLSYS_ASSIGN_OR_RETURN(t.client, connect_server(server, from_env, token, a.data_dir));
    return t;
  }
  t.data_dir = data_dir_or_default(a.data_dir);
  if (a.data_dir.empty() && !a.quiet) {
    const std::string local_url = "http://127.0.0.1:8080";
    bool local_server = api::connect_http(local_url, "").ok();
    note(false,
         fmt::format("using data directory {} (no --server given{})", t.data_dir,
                     local_server ? "; a dlsys server answers on " + local_url + ": add --server " +
                                        local_url + " to use its datasets"
                                  : ""));
  }
  DLSYS_ASSIGN_OR_RETURN(t.store, data::DatasetStore::open(t.data_dir + "/datasets"));
  return t;
}

// Prints the error of a failed command; a NotFound says where it looked.
int fail_at(const Status& st, const Target& t) {
  if (st.code() != StatusCode::kNotFound) return fail(st.message());
  return fail(fmt::format(
      "{} (looked {})", st.message(),
      t.client ? "on the server at " + t.client->where() : "in data directory " + t.data_dir));
}

// What a server can do for `verify` and `gc`: nothing; they read the store's files.
int local_only(const char* command) {
  return fail(fmt::format(
      "`dlsys data {}` reads the store's files, so it runs on the server's machine: give "
      "--data-dir DIR there (the server's data directory); drop --server / unset DLSYS_SERVER",
      command));
}

// A dataset version from a server's answer (the routes' version_json): checked reads; the
// manifest, when `with_manifest`, is checked as a store checks the manifests it reads.
Result<data::VersionInfo> version_from(const json& j, const std::string& what, bool with_manifest) {
  data::VersionInfo v;
  DLSYS_ASSIGN_OR_RETURN(v.name, json_get<std::string>(j, "name", what));
  DLSYS_ASSIGN_OR_RETURN(v.number, json_get<int64_t>(j, "version", what));
  DLSYS_ASSIGN_OR_RETURN(v.id, json_get<std::string>(j, "id", what));
  DLSYS_ASSIGN_OR_RETURN(json tags, json_get<json>(j, "tags", what));
  if (!tags.is_array()) return Status::Invalid("{}: 'tags' must be an array", what);
  for (size_t i = 0; i < tags.size(); ++i) {
    DLSYS_ASSIGN_OR_RETURN(std::string tag,
                           json_as<std::string>(tags[i], fmt::format("{}: tags[{}]", what, i)));
    v.tags.push_back(std::move(tag));
  }
  if (with_manifest) {
    DLSYS_ASSIGN_OR_RETURN(v.manifest, json_get<json>(j, "manifest", what));
    DLSYS_RETURN_IF_ERROR(data::check_manifest(v.manifest, what + ": " + v.label()));
  } else {
    DLSYS_ASSIGN_OR_RETURN(int64_t rows, json_get<int64_t>(j, "rows", what));
    DLSYS_ASSIGN_OR_RETURN(int64_t created, json_get<int64_t>(j, "created_ms", what));
    DLSYS_ASSIGN_OR_RETURN(std::string message, json_get_or<std::string>(j, "message", "", what));
    DLSYS_ASSIGN_OR_RETURN(std::string author, json_get_or<std::string>(j, "author", "", what));
    v.manifest = {{"rows", rows}, {"created_ms", created}, {"message", message}};
    if (!author.empty()) v.manifest["author"] = author;
  }
  return v;
}

// GET /api/v1/datasets/NAME/versions/REF with its manifest.
Result<data::VersionInfo> remote_version(api::ApiClient& c, const data::VersionRef& ref) {
  std::string target = "/api/v1/datasets/" + enc(ref.name) + "/versions/" + enc(ref.ref);
  DLSYS_ASSIGN_OR_RETURN(json j, c.call("GET", target));
  return version_from(j, answer_to("GET", target), true);
}

// A progress bar on stderr when it is a terminal; refreshed at most 10 times a second.
class Progress {
 public:
  explicit Progress(bool enabled) : on_(enabled && isatty(STDERR_FILENO)) {}
  void update(const std::string& what, int64_t done, int64_t total, const std::string& extra) {
    if (!on_) return;
    auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(100) && done < total) return;
    last_ = now;
    int width = 24;
    int fill = total > 0 ? static_cast<int>(width * std::min<int64_t>(done, total) / total) : 0;
    double pct = total > 0 ? 100.0 * done / total : 0;
    std::fprintf(stderr, "\r%s [%s%s] %3.0f%%  %s   ", what.c_str(), std::string(fill, '#').c_str(),
                 std::string(width - fill, '.').c_str(), pct, extra.c_str());
  }
  void end() {
    if (on_) std::fprintf(stderr, "\n");
  }

 private:
  bool on_;
  std::chrono::steady_clock::time_point last_{};
};

// What a push did, from the store (local) or the server's answer, printed the same way.
struct PushReport {
  std::string name, label, id;
  int64_t number = 0, rows = 0, bad_rows = 0, shards = 0, shards_new = 0, bytes = 0, new_bytes = 0;
  double seconds = 0;
  bool unchanged = false;
  json input;
  std::optional<std::string> quarantine;
  std::optional<json> split;  // {"train": n, "validation": n, "test": n}
  std::vector<std::pair<int64_t, std::string>> bad_sample;
  json nulls = json::object();  // column -> rows with a null, for the columns that have any
};

// Nulls per column from a version's statistics: said at push time rather than found by the
// training loader later.
json null_counts(const json& manifest) {
  json nulls = json::object();
  if (manifest.contains("stats") && manifest["stats"].is_object())
    for (const auto& [col, st] : manifest["stats"].items())
      if (st.is_object() && st.value("nulls", int64_t(0)) > 0 && col.rfind("__", 0) != 0)
        nulls[col] = st["nulls"];
  return nulls;
}

int print_push(const DataArgs& a, const PushReport& r) {
  if (a.json) {
    json j = {{"event", "done"},
              {"version", r.label},
              {"id", r.id},
              {"rows", r.rows},
              {"bad_rows", r.bad_rows},
              {"shards", r.shards},
              {"shards_new", r.shards_new},
              {"bytes", r.bytes},
              {"new_bytes", r.new_bytes},
              {"seconds", r.seconds},
              {"input", r.input}};
    j["unchanged"] = r.unchanged;  // true: no new version, `version` already held this data
    if (r.quarantine) j["quarantine"] = *r.quarantine;
    j["nulls"] = r.nulls;
    std::printf("%s\n", json_dump_line(j).c_str());
    return 0;
  }
  if (r.unchanged) {
    // Like git's "nothing to commit": the latest version already holds this data.
    std::printf("data unchanged: dataset %s is already at version %lld (%s  %s)\n", r.name.c_str(),
                (long long)r.number, r.label.c_str(), r.id.substr(0, 12).c_str());
    if (!a.message.empty()) std::printf("  no new version: the message was not recorded\n");
  } else {
    std::printf("%s  %s\n", r.label.c_str(), r.id.substr(0, 12).c_str());
  }
  std::printf("  %lld rows in %lld shards (%lld new, %s stored, %s new) in %.2f s\n",
              (long long)r.rows, (long long)r.shards, (long long)r.shards_new,
              human_bytes(r.bytes).c_str(), human_bytes(r.new_bytes).c_str(), r.seconds);
  if (!r.nulls.empty()) {
    std::string list;
    for (const auto& [col, n] : r.nulls.items())
      list += fmt::format("{}{} {}", list.empty() ? "" : ", ", col, n.get<int64_t>());
    std::printf(
        "  nulls: %s (training refuses rows with nulls unless its spec sets `data.nulls: drop` or "
        "imputes them: see docs/spec.md)\n",
        list.c_str());
  }
  if (r.input.is_object() && r.input.value("skipped_first_line", false))
    std::printf(
        "  line 1 skipped: not data (its number of fields differs from every row below it)\n");
  if (r.split)
    std::printf("  split: train %lld, validation %lld, test %lld\n",
                (long long)r.split->value("train", int64_t(0)),
                (long long)r.split->value("validation", int64_t(0)),
                (long long)r.split->value("test", int64_t(0)));
  if (r.bad_rows > 0) {
    std::printf("  %lld bad rows kept aside in %s, e.g.:\n", (long long)r.bad_rows,
                r.quarantine ? r.quarantine->c_str() : "-");
    for (size_t i = 0; i < r.bad_sample.size() && i < 5; ++i)
      std::printf("    line %lld: %s\n", (long long)r.bad_sample[i].first,
                  r.bad_sample[i].second.c_str());
  }
  return 0;
}

// The format of a push's input: --format, else from the path (a folder: images).
Result<std::string> push_format(const DataArgs& a) {
  if (!a.format.empty()) return a.format;
  std::error_code ec;
  auto has = [&](const char* ext) {
    std::string e = ext;
    return a.path.size() >= e.size() && a.path.compare(a.path.size() - e.size(), e.size(), e) == 0;
  };
  if (std::filesystem::is_directory(a.path, ec)) return std::string("images");
  if (has(".csv")) return std::string("csv");
  if (has(".tsv")) return std::string("tsv");
  if (has(".jsonl") || has(".ndjson")) return std::string("jsonl");
  if (has(".npy")) return std::string("npy");
  if (has("-ubyte") || has(".idx")) return std::string("idx");
  return Status::Invalid(
      "{}: cannot tell the format from the name; give --format csv|tsv|jsonl|npy|idx|images",
      a.path);
}

// Reads a push route's answer into what `print_push` prints; `t0` is when the push began (the
// time the user waited: upload and the server's ingest).
int print_remote_push(const DataArgs& a, const json& answer, const std::string& what,
                      std::chrono::steady_clock::time_point t0) {
  auto v = version_from(answer, what, false);
  if (!v.ok()) return fail(v.status().message());
  PushReport r;
  r.name = v->name;
  r.number = v->number;
  r.label = v->label();
  r.id = v->id;
  r.rows = v->manifest["rows"];
  r.nulls = null_counts(v->manifest);
  Status st = Status::OK();
  auto read_int = [&](const char* key, int64_t* out) {
    if (!st.ok()) return;
    auto x = json_get_or<int64_t>(answer, key, 0, what);
    if (x.ok())
      *out = *x;
    else
      st = x.status();
  };
  read_int("bad_rows", &r.bad_rows);
  read_int("shards", &r.shards);
  read_int("shards_new", &r.shards_new);
  read_int("bytes", &r.bytes);
  read_int("new_bytes", &r.new_bytes);
  if (!st.ok()) return fail(st.message());
  auto unchanged = json_get_or<bool>(answer, "unchanged", false, what);
  if (!unchanged.ok()) return fail(unchanged.status().message());
  r.unchanged = *unchanged;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto input = json_get_or<json>(answer, "input", json::object(), what);
  if (!input.ok()) return fail(input.status().message());
  r.input = *input;
  auto quarantine = json_get_optional<std::string>(answer, "quarantine", what);
  if (!quarantine.ok()) return fail(quarantine.status().message());
  r.quarantine = *quarantine;
  auto split = json_get_optional<json>(answer, "split", what);
  if (!split.ok()) return fail(split.status().message());
  if (split->has_value()) {
    for (const char* k : {"train", "validation", "test"}) {
      auto n = json_get<int64_t>(**split, k, what + ": split");
      if (!n.ok()) return fail(n.status().message());
    }
    r.split = **split;
  }
  auto bad = json_get_or<json>(answer, "bad_sample", json::array(), what);
  if (!bad.ok()) return fail(bad.status().message());
  for (size_t i = 0; bad->is_array() && i < bad->size(); ++i) {
    std::string w = fmt::format("{}: bad_sample[{}]", what, i);
    auto line = json_get<int64_t>((*bad)[i], "line", w);
    auto reason = json_get<std::string>((*bad)[i], "reason", w);
    if (!line.ok() || !reason.ok())
      return fail((line.ok() ? reason.status() : line.status()).message());
    r.bad_sample.emplace_back(*line, *reason);
  }
  return print_push(a, r);
}

// The query of a push route: the options a local push takes.
std::string push_query(const DataArgs& a, const std::string& format) {
  std::string q = fmt::format("format={}&split={}&header={}&skip_rows={}&shard_rows={}", format,
                              enc(a.split), enc(a.header), a.skip_rows, a.shard_rows);
  q += "&filename=" + enc(a.path);
  if (!a.message.empty()) q += "&message=" + enc(a.message);
  if (!a.policy.empty()) q += "&policy=" + enc(a.policy);
  if (!a.split_key.empty()) q += "&split_key=" + enc(a.split_key);
  return q;
}

// The ingest options of a push's flags (--schema read into io.schema, and into `*schema` when
// given; --labels, --header, --skip-rows, --channels, --image-size).
Status ingest_options(const DataArgs& a, data::IngestOptions* io, data::SchemaFile* schema) {
  if (!a.schema.empty()) {
    DLSYS_ASSIGN_OR_RETURN(data::SchemaFile sf, data::read_schema_file(a.schema));
    io->schema = sf.schema;
    if (schema) *schema = std::move(sf);
  }
  io->labels_path = a.labels;
  io->header = a.header;
  io->skip_rows = a.skip_rows;
  io->image_channels = a.channels;
  if (!a.image_size.empty()) {
    int h = 0, w = 0;
    if (std::sscanf(a.image_size.c_str(), "%dx%d", &h, &w) != 2 || h <= 0 || w <= 0)
      return Status::Invalid("--image-size '{}' must look like 32x32 (height x width)",
                             a.image_size);
    io->image_height = h;
    io->image_width = w;
  }
  return Status::OK();
}

// Opens the push's input here as a local push would (headers, shapes, the first image, the
// schema file), so that a mistake is reported with the local error before anything is sent.
Status check_push_input(const DataArgs& a, const std::string& format) {
  data::IngestOptions io;
  DLSYS_RETURN_IF_ERROR(ingest_options(a, &io, nullptr));
  return data::open_source(a.path, format, io).status();
}

// A file of a staged push: where it is here and its path in the upload.
struct StagedFile {
  std::string local, rel;
  uint64_t bytes = 0;
};

bool image_name(const std::string& f) {
  std::string l = f;
  for (char& c : l) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  auto ends = [&](const std::string& e) {
    return l.size() >= e.size() && l.compare(l.size() - e.size(), e.size(), e) == 0;
  };
  return ends(".png") || ends(".jpg") || ends(".jpeg");
}

// The files a staged push sends: the input (a file, or an image folder's DIR/<class>/<image>
// files as the image source reads them: hidden entries skipped, classes and files sorted), the
// labels and the schema file.
Result<std::vector<StagedFile>> staged_files(const DataArgs& a, const std::string& format) {
  namespace fs = std::filesystem;
  std::vector<StagedFile> out;
  auto add = [&](const std::string& local, const std::string& rel) -> Status {
    std::error_code ec;
    uint64_t n = fs::file_size(local, ec);
    if (ec) return Status::IOError("cannot read {}: {}", local, ec.message());
    Status st = data::check_upload_path(rel);
    if (!st.ok())
      return Status::Invalid("{}: its name cannot be sent to a server ({}); rename it", local,
                             st.message());
    out.push_back({local, rel, n});
    return Status::OK();
  };
  if (format == "images") {
    std::vector<std::string> classes;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(a.path, ec)) {
      std::string n = e.path().filename().string();
      std::error_code e2;
      if (!n.empty() && n[0] != '.' && fs::is_directory(e.symlink_status(e2))) classes.push_back(n);
    }
    if (ec) return Status::IOError("cannot list {}: {}", a.path, ec.message());
    std::sort(classes.begin(), classes.end());
    for (const auto& c : classes) {
      std::vector<std::string> files;
      for (const auto& e : fs::directory_iterator(a.path + "/" + c, ec)) {
        std::string n = e.path().filename().string();
        std::error_code e2;
        if (!n.empty() && n[0] != '.' && !fs::is_directory(e.symlink_status(e2)) && image_name(n))
          files.push_back(n);
      }
      if (ec) return Status::IOError("cannot list {}/{}: {}", a.path, c, ec.message());
      std::sort(files.begin(), files.end());
      for (const auto& f : files)
        DLSYS_RETURN_IF_ERROR(add(a.path + "/" + c + "/" + f, "input/" + c + "/" + f));
    }
  } else {
    DLSYS_RETURN_IF_ERROR(add(a.path, "input." + format));
  }
  if (!a.labels.empty()) DLSYS_RETURN_IF_ERROR(add(a.labels, "labels." + format));
  if (!a.schema.empty()) DLSYS_RETURN_IF_ERROR(add(a.schema, "schema.yaml"));
  return out;
}

// A push through a server of what one request body cannot carry (NPY or IDX with labels, an
// image folder, a schema file): a staged upload, one PUT per file, then one POST that ingests
// them (the server removes the upload whatever happens).
int run_push_staged(const DataArgs& a, api::ApiClient& client, const std::string& format) {
  auto files = staged_files(a, format);
  if (!files.ok()) return fail(files.status().message());
  uint64_t total = 0;
  for (const auto& f : *files) total += f.bytes;
  std::string base = "/api/v1/datasets/" + enc(a.name) + "/uploads";
  auto created = client.call("POST", base);
  if (!created.ok()) return fail(created.status().message());
  std::string what = answer_to("POST", base);
  auto id = json_get<std::string>(*created, "upload", what);
  if (!id.ok()) return fail(id.status().message());
  if (!data::is_upload_id(*id)) return fail(what + ": 'upload' is not an upload id");
  std::string upload = base + "/" + *id;
  auto cancel = [&](const std::string& message) {
    (void)client.call("DELETE", upload);
    return fail(message);
  };
  auto max_files = json_get_or<int64_t>(*created, "max_files", 0, what);
  auto max_bytes = json_get_or<int64_t>(*created, "max_bytes", 0, what);
  if (!max_files.ok() || !max_bytes.ok())
    return cancel((max_files.ok() ? max_bytes.status() : max_files.status()).message());
  if (*max_files > 0 && static_cast<int64_t>(files->size()) > *max_files)
    return cancel(fmt::format(
        "{}: {} files, more than the {} the server at {} takes in one push (max_files); push "
        "fewer files, or pack them into an NPY or IDX file",
        a.path, files->size(), *max_files, client.where()));
  if (*max_bytes > 0 && total > static_cast<uint64_t>(*max_bytes))
    return cancel(fmt::format(
        "{}: {} in all, more than the {} the server at {} takes in one push (max_bytes: its "
        "--max-upload-mb); start it with a larger --max-upload-mb, or push on its machine with "
        "--data-dir DIR",
        a.path, human_bytes(total), human_bytes(*max_bytes), client.where()));
  Progress bar(!a.json);
  auto t0 = std::chrono::steady_clock::now();
  auto last = t0 - std::chrono::seconds(1);
  uint64_t before = 0;
  for (size_t i = 0; i < files->size(); ++i) {
    const StagedFile& f = (*files)[i];
    auto progress = [&](uint64_t sent, uint64_t) {
      auto now = std::chrono::steady_clock::now();
      uint64_t done = before + sent;
      double s = std::chrono::duration<double>(now - t0).count();
      bar.update("push " + a.name, static_cast<int64_t>(done), static_cast<int64_t>(total),
                 fmt::format("{}/{} files  {} sent  {}/s  {}", i + 1, files->size(),
                             human_bytes(done), human_bytes(done / std::max(s, 1e-9)), f.rel));
      bool end = i + 1 == files->size() && sent == f.bytes;
      if (a.json && (now - last >= std::chrono::milliseconds(100) || end)) {
        last = now;
        std::printf("%s\n", json_dump_line({{"event", "progress"},
                                            {"done", done},
                                            {"total", total},
                                            {"rows", 0},
                                            {"files_done", i},
                                            {"files", files->size()},
                                            {"file", f.local}})
                                .c_str());
        std::fflush(stdout);
      }
    };
    std::string target = upload + "/files/" + api::url_encode(f.rel, /*keep_slash=*/true);
    auto put = client.send_file("PUT", target, f.local, progress);
    if (!put.ok()) {
      bar.end();
      return cancel(fmt::format("uploading {} (file {} of {}) to the server at {}: {}", f.local,
                                i + 1, files->size(), client.where(), put.status().message()));
    }
    before += f.bytes;
  }
  bar.end();
  std::string target =
      fmt::format("/api/v1/datasets/{}/versions?upload={}&{}&path={}", enc(a.name), *id,
                  push_query(a, format), format == "images" ? "input" : "input." + format);
  if (!a.labels.empty()) target += "&labels=labels." + format + "&labels_filename=" + enc(a.labels);
  if (!a.schema.empty()) target += "&schema=schema.yaml&schema_filename=" + enc(a.schema);
  if (!a.image_size.empty()) target += "&image_size=" + enc(a.image_size);
  if (format == "images") target += fmt::format("&channels={}", a.channels);
  // The server removes the upload once this returns, whatever the outcome.
  auto answer = client.call("POST", target);
  if (!answer.ok()) return fail(answer.status().message());
  return print_remote_push(a, *answer, answer_to("POST", target), t0);
}

int run_push_remote(const DataArgs& a, api::ApiClient& client) {
  auto format = push_format(a);
  if (!format.ok()) return fail(format.status().message());
  const std::string& f = *format;
  if (f != "csv" && f != "tsv" && f != "jsonl" && f != "npy" && f != "idx" && f != "images")
    return fail(fmt::format("unknown format '{}'; use csv, tsv, jsonl, npy, idx or images", f));
  data::PushOptions check;
  if (Status st = data::parse_split_fractions(a.split, &check); !st.ok())
    return fail("--" + st.message());
  std::error_code ec;
  if (f == "images" ? !std::filesystem::is_directory(a.path, ec)
                    : !std::filesystem::is_regular_file(a.path, ec))
    return fail(fmt::format("cannot read {}: not a {}", a.path, f == "images" ? "folder" : "file"));
  if (Status st = check_push_input(a, f); !st.ok()) return fail(st.message());
  // CSV, TSV and JSONL without a schema file: one request, the file as its body.
  if (!a.schema.empty() || (f != "csv" && f != "tsv" && f != "jsonl"))
    return run_push_staged(a, client, f);
  std::string target =
      fmt::format("/api/v1/datasets/{}/versions?{}", enc(a.name), push_query(a, f));
  Progress bar(!a.json);
  auto t0 = std::chrono::steady_clock::now();
  auto last = t0 - std::chrono::seconds(1);
  auto progress = [&](uint64_t sent, uint64_t total) {
    auto now = std::chrono::steady_clock::now();
    double s = std::chrono::duration<double>(now - t0).count();
    bar.update(
        "push " + a.name, static_cast<int64_t>(sent), static_cast<int64_t>(total),
        fmt::format("{} sent  {}/s", human_bytes(sent), human_bytes(sent / std::max(s, 1e-9))));
    if (a.json && (now - last >= std::chrono::milliseconds(100) || sent == total)) {
      last = now;
      std::printf(
          "%s\n",
          json_dump_line({{"event", "progress"}, {"done", sent}, {"total", total}, {"rows", 0}})
              .c_str());
      std::fflush(stdout);
    }
  };
  auto answer = client.send_file("POST", target, a.path, progress);
  bar.end();
  if (!answer.ok()) return fail(answer.status().message());
  return print_remote_push(a, *answer, answer_to("POST", target), t0);
}

int run_push(const DataArgs& a) {
  auto t = open_target(a);
  if (!t.ok()) return fail(t.status().message());
  if (t->client) return run_push_remote(a, *t->client);
  auto& store = t->store;
  data::IngestOptions io;
  data::PushOptions po;
  data::SchemaFile sf;
  if (Status st = ingest_options(a, &io, &sf); !st.ok()) return fail(st.message());
  if (!a.schema.empty()) {
    po.rules = sf.schema;
    po.policy = sf.policy;
  }
  if (!a.policy.empty()) po.policy = a.policy;
  if (Status st = data::parse_split_fractions(a.split, &po); !st.ok())
    return fail("--" + st.message());
  po.split_key = a.split_key;
  po.shard_rows = a.shard_rows;
  po.message = a.message;
  auto src = data::open_source(a.path, a.format, io);
  if (!src.ok()) return fail(src.status().message());
  Progress bar(!a.json);
  auto t0 = std::chrono::steady_clock::now();
  bool images = (*src)->describe().value("format", "") == "images";
  po.progress = [&](int64_t done, int64_t total, int64_t rows) {
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::string extra =
        images ? fmt::format("{}/{} files  {:.0f} files/s", done, total, done / std::max(s, 1e-9))
               : fmt::format("{} rows  {}/s", rows, human_bytes(done / std::max(s, 1e-9)));
    bar.update("push " + a.name, done, total, extra);
    if (a.json) {
      std::printf(
          "%s\n",
          json_dump_line({{"event", "progress"}, {"done", done}, {"total", total}, {"rows", rows}})
              .c_str());
      std::fflush(stdout);
    }
  };
  auto res = data::push(*store, a.name, **src, po);
  bar.end();
  if (!res.ok()) return fail(res.status().message());
  const auto& pr = *res;
  PushReport r;
  r.name = pr.version.name;
  r.number = pr.version.number;
  r.label = pr.version.label();
  r.id = pr.version.id;
  r.rows = pr.rows;
  r.bad_rows = pr.bad_rows;
  r.shards = pr.shards;
  r.shards_new = pr.shards_new;
  r.bytes = pr.stored_bytes;
  r.new_bytes = pr.new_bytes;
  r.seconds = pr.seconds;
  r.unchanged = pr.unchanged;
  r.input = (*src)->describe();
  if (pr.quarantine) r.quarantine = pr.quarantine->label();
  if (pr.version.manifest.contains("split"))
    r.split = json{{"train", data::split_rows(pr.version, "train")},
                   {"validation", data::split_rows(pr.version, "validation")},
                   {"test", data::split_rows(pr.version, "test")}};
  for (const auto& b : pr.bad_sample) r.bad_sample.emplace_back(b.line, b.reason);
  r.nulls = null_counts(pr.version.manifest);
  return print_push(a, r);
}

int run_list(const DataArgs& a) {
  auto t = open_target(a);
  if (!t.ok()) return fail(t.status().message());
  // Manifests are checked when read (data/manifest_check.h), and a server's answer by
  // version_from: "rows" and "created_ms" are there.
  std::vector<data::VersionInfo> latest;
  if (t->client) {
    std::string target = "/api/v1/datasets";
    auto answer = t->client->call("GET", target);
    if (!answer.ok()) return fail_at(answer.status(), *t);
    std::string what = answer_to("GET", target);
    auto list = json_list(*answer, "datasets", what);
    if (!list.ok()) return fail(list.status().message());
    for (size_t i = 0; i < list->size(); ++i) {
      std::string w = fmt::format("{}: datasets[{}]", what, i);
      auto j = json_get<json>((*list)[i], "latest", w);
      if (!j.ok()) return fail(j.status().message());
      auto v = version_from(*j, w + ".latest", false);
      if (!v.ok()) return fail(v.status().message());
      latest.push_back(std::move(*v));
    }
  } else {
    auto names = t->store->names();
    if (!names.ok()) return fail(names.status().message());
    for (const auto& n : *names) {
      auto v = t->store->resolve({n, "latest", ""});
      if (!v.ok()) return fail(v.status().message());
      latest.push_back(std::move(*v));
    }
  }
  if (a.json) {
    json out = json::array();
    for (const auto& v : latest)
      out.push_back({{"name", v.name},
                     {"latest", v.label()},
                     {"rows", v.manifest["rows"]},
                     {"created_ms", v.manifest["created_ms"]}});
    std::printf("%s\n", json_dump_line(out).c_str());
    return 0;
  }
  if (latest.empty()) {
    std::printf("no datasets yet; push one with `dlsys data push FILE --name NAME`\n");
    return 0;
  }
  std::printf("%-28s %-8s %12s  %s\n", "NAME", "LATEST", "ROWS", "CREATED");
  for (const auto& v : latest)
    std::printf("%-28s v%-7lld %12lld  %s\n", v.name.c_str(), (long long)v.number,
                (long long)v.manifest["rows"].get<int64_t>(),
                format_time_ms(v.manifest["created_ms"]).c_str());
  return 0;
}

int run_versions(const DataArgs& a) {
  auto t = open_target(a);
  if (!t.ok()) return fail(t.status().message());
  std::vector<data::VersionInfo> vs;
  if (t->client) {
    std::string target = "/api/v1/datasets/" + enc(a.name) + "/versions";
    auto answer = t->client->call("GET", target);
    if (!answer.ok()) return fail_at(answer.status(), *t);
    std::string what = answer_to("GET", target);
    auto list = json_list(*answer, "versions", what);
    if (!list.ok()) return fail(list.status().message());
    for (size_t i = 0; i < list->size(); ++i) {
      auto v = version_from((*list)[i], fmt::format("{}: versions[{}]", what, i), false);
      if (!v.ok()) return fail(v.status().message());
      vs.push_back(std::move(*v));
    }
  } else {
    auto local = t->store->versions(a.name);
    if (!local.ok()) return fail_at(local.status(), *t);
    vs = std::move(*local);
  }
  json out = json::array();
  for (const auto& v : vs)
    out.push_back({{"version", v.label()},
                   {"id", v.id},
                   {"rows", v.manifest.value("rows", int64_t(0))},
                   {"tags", v.tags},
                   {"message", v.manifest.value("message", "")},
                   {"author", v.manifest.value("author", "")},
                   {"created_ms", v.manifest.value("created_ms", int64_t(0))}});
  if (a.json) {
    std::printf("%s\n", json_dump_line(out).c_str());
    return 0;
  }
  std::printf("%-8s %-12s %12s  %-19s %-16s %s\n", "VERSION", "ID", "ROWS", "CREATED", "TAGS",
              "MESSAGE");
  for (const auto& v : vs)
    std::printf("v%-7lld %-12s %12lld  %-19s %-16s %s\n", (long long)v.number,
                v.id.substr(0, 12).c_str(), (long long)v.manifest["rows"].get<int64_t>(),
                format_time_ms(v.manifest["created_ms"]).c_str(),
                fmt::format("{}", fmt::join(v.tags, ",")).c_str(),
                v.manifest.value("message", "").c_str());
  return 0;
}

// The version `text` names, in the store or on the server.
Result<data::VersionInfo> resolve(const Target& t, const std::string& text,
                                  std::string* split = nullptr) {
  DLSYS_ASSIGN_OR_RETURN(data::VersionRef ref, data::parse_version_ref(text));
  if (split) *split = ref.split;
  if (t.client) return remote_version(*t.client, ref);
  return t.store->resolve(ref);
}

int run_show(const DataArgs& a) {
  auto t = open_target(a);
  if (!t.ok()) return fail(t.status().message());
  auto v = resolve(*t, a.ref);
  if (!v.ok()) return fail_at(v.status(), *t);
  const json& m = v->manifest;
  if (a.json) {
    json j = m;
    j["version"] = v->label();
    j["id"] = v->id;
    j["tags"] = v->tags;
    std::printf("%s\n", json_dump_line(j).c_str());
    return 0;
  }
  // The manifest and its statistics were checked when read (data/manifest_check.h), so the
  // fields docs/formats.md names have their types here.
  int64_t bytes = 0;
  for (const auto& s : m["shards"]) bytes += s["bytes"].get<int64_t>();
  std::printf("%s  (id %s)\n", v->label().c_str(), v->id.c_str());
  std::printf("  created %s by %s%s\n", format_time_ms(m["created_ms"]).c_str(),
              m.value("author", "").c_str(),
              m.value("message", "").empty() ? "" : (": " + m.value("message", "")).c_str());
  std::printf("  parent  %s\n",
              m["parent"].is_null() ? "-" : m["parent"].get<std::string>().substr(0, 12).c_str());
  if (!v->tags.empty())
    std::printf("  tags    %s\n", fmt::format("{}", fmt::join(v->tags, ", ")).c_str());
  std::printf("  rows    %lld in %zu shards, %s\n", (long long)m.value("rows", int64_t(0)),
              m["shards"].size(), human_bytes(bytes).c_str());
  if (m.contains("split"))
    std::printf("  split   train %lld, validation %lld, test %lld%s\n",
                (long long)m["split"]["rows"]["train"].get<int64_t>(),
                (long long)m["split"]["rows"]["validation"].get<int64_t>(),
                (long long)m["split"]["rows"]["test"].get<int64_t>(),
                m["split"]["key"].is_null()
                    ? ""
                    : (" (by " + m["split"]["key"].get<std::string>() + ")").c_str());
  if (m.contains("source"))
    std::printf("  source  %s %s\n", m["source"].value("format", "").c_str(),
                m["source"].value("path", "").c_str());
  std::printf("\n  %-20s %-12s %9s %7s %11s %11s %11s %11s %11s %11s\n", "COLUMN", "TYPE", "COUNT",
              "NULLS", "MIN", "P25", "MEDIAN", "P75", "MAX", "MEAN");
  const json& stats = m.value("stats", json::object());
  for (const auto& c : m["schema"]["columns"]) {
    std::string name = c["name"];
    if (name.rfind("__", 0) == 0) continue;
    std::string type = c["type"];
    if (c.contains("shape"))
      type += fmt::format("[{}]", fmt::join(c["shape"].get<std::vector<int64_t>>(), "x"));
    const json s = stats.value(name, json::object());
    auto num = [&](const char* k) {
      return s.contains(k) && s[k].is_number() ? fmt::format("{:.4g}", s[k].get<double>())
                                               : std::string("-");
    };
    auto q = [&](int p) {
      return s.contains("quantiles") ? fmt::format("{:.4g}", s["quantiles"][p].get<double>())
                                     : std::string("-");
    };
    std::printf("  %-20s %-12s %9lld %7lld %11s %11s %11s %11s %11s %11s\n", name.c_str(),
                type.c_str(), (long long)s.value("count", int64_t(0)),
                (long long)s.value("nulls", int64_t(0)), num("min").c_str(), q(25).c_str(),
                q(50).c_str(), q(75).c_str(), num("max").c_str(), num("mean").c_str());
    if (s.contains("top") && !s["top"].empty()) {
      std::string top;
      for (size_t i = 0; i < s["top"].size() && i < 5; ++i)
        top += fmt::format("{}{} ({})", i ? ", " : "", s["top"][i]["value"].get<std::string>(),
                           s["top"][i]["count"].get<int64_t>());
      std::printf("  %-20s top: %s\n", "", top.c_str());
    }
  }
  return 0;
}

int run_diff(const DataArgs& a) {
  auto target = open_target(a);
  if (!target.ok()) return fail(target.status().message());
  const Target& tg = *target;
  data::DriftThresholds t{a.psi, a.ks};
  auto from = resolve(tg, a.ref);
  if (!from.ok()) return fail_at(from.status(), tg);
  std::string thresholds = fmt::format("psi={}&ks={}", a.psi, a.ks);
  json d;
  if (!a.sample.empty()) {
    auto text = read_file(a.sample);
    if (!text.ok()) return fail(text.status().message());
    json sample = json::parse(*text, nullptr, false);
    if (sample.is_discarded()) return fail(a.sample + ": not JSON; give {\"column\": [values]}");
    Result<json> r = Status::OK();
    if (tg.client) {
      std::string path = fmt::format("/api/v1/datasets/{}/versions/{}/drift?{}", enc(from->name),
                                     enc(from->id), thresholds);
      r = tg.client->call("POST", path, sample);
      if (r.ok() && !r->is_object())
        return fail(answer_to("POST", path) + ": must be a JSON object");
    } else {
      r = data::drift_of_sample(*from, sample, t);
    }
    if (!r.ok()) return fail(r.status().message());
    d = {{"from", from->label()}, {"to", a.sample}, {"drift", *r}};
  } else {
    if (a.ref2.empty()) return fail("give a second version (N@V2) or --sample FILE.json");
    auto to = resolve(tg, a.ref2);
    if (!to.ok()) return fail_at(to.status(), tg);
    if (tg.client) {
      if (to->name != from->name)
        return fail(fmt::format(
            "through a server, diff compares two versions of one dataset ({} and {} differ); "
            "pull both and push them as versions of one dataset, or use --data-dir",
            from->name, to->name));
      std::string path = fmt::format("/api/v1/datasets/{}/diff?from={}&to={}&{}", enc(from->name),
                                     enc(from->id), enc(to->id), thresholds);
      auto r = tg.client->call("GET", path);
      if (!r.ok()) return fail(r.status().message());
      d = *r;
    } else {
      auto r = data::diff_versions(*tg.store, *from, *to, t);
      if (!r.ok()) return fail(r.status().message());
      d = *r;
    }
  }
  if (tg.client) {
    // A server's answer is checked before it is printed: the fields read below.
    std::string what = "the server's diff answer";
    for (const char* k : {"from", "to"})
      if (auto x = json_get<std::string>(d, k, what); !x.ok()) return fail(x.status().message());
    auto dr = json_get<json>(d, "drift", what);
    if (!dr.ok()) return fail(dr.status().message());
    if (!dr->is_object()) return fail(what + ": 'drift' must be an object");
    for (auto it = dr->begin(); it != dr->end(); ++it) {
      if (!it->is_object())
        return fail(fmt::format("{}: drift.{} must be an object", what, it.key()));
      if (it.key() == "__summary") {
        auto c = json_get<json>(*it, "columns_drifted", what + ": drift.__summary");
        if (!c.ok()) return fail(c.status().message());
        continue;
      }
      for (const char* k : {"psi", "ks"})
        if (auto x = json_get_optional<double>(*it, k, what + ": drift." + it.key()); !x.ok())
          return fail(x.status().message());
      if (auto x = json_get_optional<bool>(*it, "drift", what + ": drift." + it.key()); !x.ok())
        return fail(x.status().message());
    }
    if (!dr->contains("__summary")) return fail(what + ": 'drift' has no '__summary'");
    if (d.contains("rows"))
      for (const char* k : {"from", "to", "added", "removed", "shards_shared"})
        if (auto x = json_get<int64_t>(d["rows"], k, what + ": rows"); !x.ok())
          return fail(x.status().message());
    if (d.contains("schema")) {
      for (const char* k : {"added", "removed", "changed"}) {
        auto x = json_get<json>(d["schema"], k, what + ": schema");
        if (!x.ok()) return fail(x.status().message());
        if (!x->is_array()) return fail(fmt::format("{}: schema.{} must be an array", what, k));
        for (const auto& e : *x) {
          bool ok = std::string(k) == "changed"
                        ? e.is_object() && e.value("name", json()).is_string() &&
                              e.value("from", json()).is_string() &&
                              e.value("to", json()).is_string()
                        : e.is_string();
          if (!ok) return fail(fmt::format("{}: schema.{} holds a malformed entry", what, k));
        }
      }
    }
  }
  if (a.json) {
    std::printf("%s\n", json_dump_line(d).c_str());
    return 0;
  }
  std::printf("%s -> %s\n", d["from"].get<std::string>().c_str(),
              d["to"].get<std::string>().c_str());
  if (d.contains("rows"))
    std::printf("  rows: %lld -> %lld (+%lld added, -%lld removed; %lld shards shared)\n",
                (long long)d["rows"]["from"].get<int64_t>(),
                (long long)d["rows"]["to"].get<int64_t>(),
                (long long)d["rows"]["added"].get<int64_t>(),
                (long long)d["rows"]["removed"].get<int64_t>(),
                (long long)d["rows"]["shards_shared"].get<int64_t>());
  if (d.contains("schema")) {
    const json& s = d["schema"];
    if (s["added"].empty() && s["removed"].empty() && s["changed"].empty())
      std::printf("  schema: unchanged\n");
    for (const auto& c : s["added"]) std::printf("  schema: + %s\n", c.get<std::string>().c_str());
    for (const auto& c : s["removed"])
      std::printf("  schema: - %s\n", c.get<std::string>().c_str());
    for (const auto& c : s["changed"])
      std::printf("  schema: %s %s -> %s\n", c["name"].get<std::string>().c_str(),
                  c["from"].get<std::string>().c_str(), c["to"].get<std::string>().c_str());
  }
  const json& dr = d["drift"];
  std::printf("  drift (PSI >= %.2f or KS >= %.2f):\n", a.psi, a.ks);
  std::vector<std::string> columns;  // c2 before c10
  for (auto it = dr.begin(); it != dr.end(); ++it)
    if (it.key() != "__summary") columns.push_back(it.key());
  std::sort(columns.begin(), columns.end(),
            [](const std::string& x, const std::string& y) { return natural_less(x, y); });
  for (const std::string& name : columns) {
    const json& c = dr[name];
    std::printf("    %-20s psi %7.4f%s  %s\n", name.c_str(), c.value("psi", 0.0),
                c.contains("ks") ? fmt::format("  ks {:6.4f}", c["ks"].get<double>()).c_str() : "",
                c.value("drift", false) ? "DRIFT" : "ok");
  }
  std::printf("  %zu column(s) drifted\n", dr["__summary"]["columns_drifted"].size());
  return 0;
}

int run_pull(const DataArgs& a) {
  auto t = open_target(a);
  if (!t.ok()) return fail(t.status().message());
  if (!a.format.empty() && a.format != "csv" && a.format != "npy")
    return fail(fmt::format("--format '{}' is not csv or npy", a.format));
  std::string split;
  auto v = resolve(*t, a.ref, &split);
  if (!v.ok()) return fail_at(v.status(), *t);
  if (a.out.empty()) return fail("give the output with -o PATH");
  Progress bar(!a.json);
  int64_t total = data::split_rows(*v, split);
  auto progress = [&](int64_t rows) {
    bar.update("pull " + v->label(), rows, total, fmt::format("{} rows", rows));
  };
  std::vector<std::string> files;
  if (t->client && a.format == "npy") {
    // The version's shards copied into a temporary store beside the output (each checked
    // against its SHA-256, one in memory at a time), then exported as a local pull does.
    namespace fs = std::filesystem;
    fs::path out(a.out);
    std::string tmp = (out.has_parent_path() ? out.parent_path() / "" : fs::path()).string() + "." +
                      out.filename().string() + ".pull-" + random_hex(4);
    struct RemoveTree {
      std::string p;
      ~RemoveTree() {
        std::error_code ec;
        fs::remove_all(p, ec);
      }
    } remove{tmp};
    auto store = data::DatasetStore::open(tmp);
    if (!store.ok()) return fail(store.status().message());
    const json& shards = v->manifest["shards"];
    std::string base =
        fmt::format("/api/v1/datasets/{}/versions/{}/shards/", enc(v->name), enc(v->id));
    for (size_t i = 0; i < shards.size(); ++i) {
      std::string sid = shards[i]["id"];
      bar.update("pull " + v->label(), static_cast<int64_t>(i), static_cast<int64_t>(shards.size()),
                 fmt::format("{}/{} shards", i, shards.size()));
      if ((*store)->has_shard(sid)) continue;
      std::string file = tmp + "/tmp/fetch-" + random_hex(8);
      Status st = t->client->download(base + sid, file);
      Result<std::string> bytes = st.ok() ? read_file(file) : Result<std::string>(st);
      ::unlink(file.c_str());
      if (!bytes.ok())
        return fail(fmt::format("fetching shard {} of {}: {}", sid.substr(0, 12), v->label(),
                                bytes.status().message()));
      if (sha256_hex(*bytes) != sid)
        return fail(fmt::format(
            "shard {} of {} from the server does not match its SHA-256; nothing was written",
            sid.substr(0, 12), v->label()));
      auto put = (*store)->put_shard(*bytes);
      if (!put.ok()) return fail(put.status().message());
    }
    auto r = data::export_npy(**store, *v, split, a.out, progress);
    bar.end();
    if (!r.ok()) return fail(r.status().message());
    files = *r;
  } else if (t->client) {
    // Streamed to a temporary file beside the output, renamed when complete.
    std::string path =
        fmt::format("/api/v1/datasets/{}/versions/{}/rows", enc(v->name), enc(v->id));
    if (!split.empty()) path += "?split=" + enc(split);
    Status st = t->client->download(path, a.out);
    if (!st.ok()) return fail(st.message());
    files.push_back(a.out);
  } else if (a.format == "csv" || a.format.empty()) {
    Status st = data::export_csv(*t->store, *v, split, a.out, progress);
    bar.end();
    if (!st.ok()) return fail(st.message());
    files.push_back(a.out);
  } else if (a.format == "npy") {
    auto r = data::export_npy(*t->store, *v, split, a.out, progress);
    bar.end();
    if (!r.ok()) return fail(r.status().message());
    files = *r;
  } else {
    return fail(fmt::format("--format '{}' is not csv or npy", a.format));
  }
  if (a.json) {
    std::printf(
        "%s\n",
        json_dump_line({{"version", v->label()}, {"rows", total}, {"files", files}}).c_str());
  } else {
    std::printf("%s%s: %lld rows -> %s\n", v->label().c_str(),
                split.empty() ? "" : (":" + split).c_str(), (long long)total,
                fmt::format("{}", fmt::join(files, ", ")).c_str());
  }
  return 0;
}

int run_tag(const DataArgs& a) {
  auto t = open_target(a);
  if (!t.ok()) return fail(t.status().message());
  auto ref = data::parse_version_ref(a.ref);
  if (!ref.ok()) return fail(ref.status().message());
  Result<data::VersionInfo> v = Status::OK();
  if (t->client) {
    std::string path = "/api/v1/datasets/" + enc(ref->name) + "/tags/" + enc(a.tag);
    auto answer = t->client->call("PUT", path, {{"version", ref->ref}});
    if (!answer.ok()) return fail_at(answer.status(), *t);
    v = remote_version(*t->client, *ref);
  } else {
    Status st = t->store->tag(*ref, a.tag);
    if (!st.ok()) return fail_at(st, *t);
    v = t->store->resolve(*ref);
  }
  if (!v.ok()) return fail(v.status().message());
  if (a.json)
    std::printf(
        "%s\n",
        json_dump_line({{"tag", ref->name + "@" + a.tag}, {"version", v->label()}}).c_str());
  else
    std::printf("%s@%s -> %s\n", ref->name.c_str(), a.tag.c_str(), v->label().c_str());
  return 0;
}

int run_verify(const DataArgs& a) {
  auto t = open_target(a);
  if (!t.ok()) return fail(t.status().message());
  if (t->client) return local_only("verify");
  auto& store = t->store;
  auto v = resolve(*t, a.ref);
  if (!v.ok()) return fail_at(v.status(), *t);
  int64_t rows = 0;
  for (const auto& s : v->manifest["shards"]) {
    std::string id = s["id"];
    std::string w = fmt::format("shard {} of {}", id.substr(0, 12), v->label());
    auto bytes = read_file(store->shard_path(id));
    if (!bytes.ok()) return fail(w + ": " + bytes.status().message());
    if (sha256_hex(*bytes) != id)
      return fail(w +
                  ": content does not match its SHA-256; the shard is corrupted. Push the "
                  "data again to restore it");
    auto b = data::decode_shard(*bytes, {}, w);
    if (!b.ok()) return fail(b.status().message());
    rows += b->rows;
  }
  if (rows != v->manifest.value("rows", int64_t(0)))
    return fail(fmt::format("{}: shards hold {} rows, the manifest says {}", v->label(), rows,
                            v->manifest.value("rows", int64_t(0))));
  std::printf("%s: %zu shards, %lld rows, every checksum and hash matches\n", v->label().c_str(),
              v->manifest["shards"].size(), (long long)rows);
  return 0;
}

// Removes the train cache under `dir` (DATA_DIR/cache/<host>_<port>/: copies of servers'
// versions that `dlsys train --server` made). Each server's cache is first renamed to a hidden
// name (atomic: a train either finds it whole or not at all, and fetches again), then removed;
// a gc that died midway leaves only hidden names, removed by the next gc. Returns the bytes
// freed; `*entries` counts the server caches removed.
Result<int64_t> remove_train_cache(const std::string& dir, int64_t* entries) {
  namespace fs = std::filesystem;
  int64_t freed = 0;
  std::error_code ec;
  std::vector<fs::path> all;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::end(it); it.increment(ec))
    all.push_back(it->path());
  if (ec && ec != std::errc::no_such_file_or_directory)
    return Status::IOError("cannot list {}: {}", dir, ec.message());
  for (const fs::path& p : all) {
    std::string name = p.filename().string();
    fs::path doomed = p;
    if (name.rfind(".gc-", 0) != 0) {
      doomed = fs::path(dir) / (".gc-" + random_hex(8));
      if (::rename(p.c_str(), doomed.c_str()) != 0)
        return Status::IOError("cannot remove the cache {}: {}", p.string(), strerror(errno));
      ++*entries;
    }
    std::error_code e2;
    for (auto it = fs::recursive_directory_iterator(doomed, e2); !e2 && it != fs::end(it);
         it.increment(e2)) {
      std::error_code e3;
      if (it->is_regular_file(e3)) freed += static_cast<int64_t>(it->file_size(e3));
    }
    fs::remove_all(doomed, e2);
    if (e2) return Status::IOError("cannot remove {}: {}", doomed.string(), e2.message());
  }
  return freed;
}

int run_gc(const DataArgs& a) {
  auto t = open_target(a);
  if (!t.ok()) return fail(t.status().message());
  if (t->client) return local_only("gc");
  auto freed = t->store->gc();
  if (!freed.ok()) return fail(freed.status().message());
  // Staged uploads of pushes through a server whose client died (the server sweeps them too).
  int64_t upload_bytes = 0;
  size_t uploads = data::remove_stale_uploads(t->store->root() + "/uploads",
                                              data::kStaleUploadSeconds, &upload_bytes);
  std::string cache_dir = t->data_dir + "/cache";
  int64_t cache_entries = 0;
  auto cache_freed = remove_train_cache(cache_dir, &cache_entries);
  if (!cache_freed.ok()) return fail(cache_freed.status().message());
  if (a.json) {
    std::printf("%s\n", json_dump_line({{"freed_bytes", *freed},
                                        {"uploads_removed", uploads},
                                        {"uploads_freed_bytes", upload_bytes},
                                        {"cache_dir", cache_dir},
                                        {"cache_removed", cache_entries},
                                        {"cache_freed_bytes", *cache_freed}})
                            .c_str());
    return 0;
  }
  std::printf("freed %s\n", human_bytes(*freed).c_str());
  if (uploads > 0)
    std::printf("freed %s of %zu stale staged upload(s)\n", human_bytes(upload_bytes).c_str(),
                uploads);
  std::printf("freed %s of cached server versions (%lld server cache(s) in %s)\n",
              human_bytes(*cache_freed).c_str(), (long long)cache_entries, cache_dir.c_str());
  return 0;
}

}  // namespace

void add_data(CLI::App& app, int* rc) {
  auto* d =
      app.add_subcommand("data", "Versioned datasets: push, list, versions, show, diff, pull, tag");
  d->require_subcommand(1);
  auto a = std::make_shared<DataArgs>();

  auto* push = d->add_subcommand(
      "push", "Ingest a CSV/TSV/JSONL/NPY/IDX file or an image folder as a new version");
  push->add_option("path", a->path, "File or image folder (DIR/<class>/<image>)")->required();
  push->add_option("--name", a->name, "Dataset name")->required();
  push->add_option("--schema", a->schema,
                   "YAML schema: column types and rules (min, max, allowed, not_null), policy");
  push->add_option("-m,--message", a->message, "What this version is");
  push->add_option("--format", a->format,
                   "csv, tsv, jsonl, npy, idx or images (default: from the path)");
  push->add_option("--labels", a->labels, "NPY/IDX: the labels file");
  push->add_option("--policy", a->policy,
                   "Bad rows: reject (write nothing) or quarantine (keep them aside)");
  push->add_option("--split", a->split, "Train,validation,test fractions (default 0.8,0.1,0.1)");
  push->add_option("--split-key", a->split_key,
                   "Assign splits by hashing this column (default: the row)");
  push->add_option("--header", a->header, "CSV header: auto, yes or no");
  push->add_option("--skip-rows", a->skip_rows, "CSV: lines to skip before the header");
  push->add_option("--image-size", a->image_size,
                   "Images: resize to HxW (default: the first image's size)");
  push->add_option("--channels", a->channels, "Images: 1 (gray) or 3 (RGB)");
  push->add_option("--shard-rows", a->shard_rows,
                   "Rows per shard at most (default 1048576; shards also stop at 32 MiB)");
  add_common(push, a.get());
  push->callback([a, rc] { *rc = run_push(*a); });

  auto* list = d->add_subcommand("list", "List datasets and their latest versions");
  add_common(list, a.get());
  list->callback([a, rc] { *rc = run_list(*a); });

  auto* versions = d->add_subcommand("versions", "List the versions of a dataset");
  versions->add_option("name", a->name, "Dataset name")->required();
  add_common(versions, a.get());
  versions->callback([a, rc] { *rc = run_versions(*a); });

  auto* show = d->add_subcommand("show", "Show a version: schema, statistics, split, source");
  show->add_option("ref", a->ref, "NAME[@VERSION|@TAG]")->required();
  add_common(show, a.get());
  show->callback([a, rc] { *rc = run_show(*a); });

  auto* diff = d->add_subcommand(
      "diff", "Rows added and removed, schema changes and drift between two versions");
  diff->add_option("from", a->ref, "NAME@V1")->required();
  diff->add_option("to", a->ref2, "NAME@V2");
  diff->add_option("--sample", a->sample,
                   "Instead of V2: a JSON file {\"column\": [values]} to check for drift");
  diff->add_option("--psi", a->psi, "PSI drift threshold (default 0.2)");
  diff->add_option("--ks", a->ks, "Kolmogorov-Smirnov drift threshold (default 0.1)");
  add_common(diff, a.get());
  diff->callback([a, rc] { *rc = run_diff(*a); });

  auto* pull = d->add_subcommand("pull", "Write a version (or one split) as CSV or .npy files");
  pull->add_option("ref", a->ref, "NAME[@VERSION][:train|:validation|:test]")->required();
  pull->add_option("--format", a->format, "csv (one file) or npy (a folder, one .npy per column)");
  pull->add_option("-o,--out", a->out, "Output file (csv) or folder (npy)")->required();
  add_common(pull, a.get());
  pull->callback([a, rc] { *rc = run_pull(*a); });

  auto* tag = d->add_subcommand("tag", "Point a tag (e.g. prod) at a version");
  tag->add_option("ref", a->ref, "NAME@VERSION")->required();
  tag->add_option("tag", a->tag, "Tag name")->required();
  add_common(tag, a.get());
  tag->callback([a, rc] { *rc = run_tag(*a); });

  auto* verify =
      d->add_subcommand("verify", "Re-hash every shard of a version and check its checksums");
  verify->add_option("ref", a->ref, "NAME[@VERSION]")->required();
  add_common(verify, a.get());
  verify->callback([a, rc] { *rc = run_verify(*a); });

  auto* gc = d->add_subcommand(
      "gc",
      "Delete shards, statistics and manifests no version references (older than an hour), "
      "staged uploads untouched for an hour, and the train cache (DATA_DIR/cache)");
  add_common(gc, a.get());
  gc->callback([a, rc] { *rc = run_gc(*a); });
}

}  // namespace dlsys::cli
