// `dlsys data`: versioned datasets in the data directory's dataset store (DATA_DIR/datasets,
// shared with `dlsys server`): push, list, versions, show, diff, pull, tag, verify, gc.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "api/services.h"
#include "cli/commands.h"
#include "core/file_util.h"
#include "core/json_util.h"
#include "core/natural_order.h"
#include "core/sha256.h"
#include "data/diff.h"
#include "data/export.h"
#include "data/push.h"
#include "data/shard.h"

namespace dlsys::cli {
namespace {

using nlohmann::json;

struct DataArgs {
  std::string data_dir;
  bool json = false;
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
  c->add_flag("--json", a->json, "Print JSON for scripts");
}

Result<std::unique_ptr<data::DatasetStore>> open_store(const DataArgs& a) {
  std::string dir = a.data_dir.empty() ? api::default_data_dir() : a.data_dir;
  return data::DatasetStore::open(dir + "/datasets");
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

int run_push(const DataArgs& a) {
  auto store = open_store(a);
  if (!store.ok()) return fail(store.status().message());
  data::IngestOptions io;
  data::PushOptions po;
  if (!a.schema.empty()) {
    auto sf = data::read_schema_file(a.schema);
    if (!sf.ok()) return fail(sf.status().message());
    io.schema = sf->schema;
    po.rules = sf->schema;
    po.policy = sf->policy;
  }
  if (!a.policy.empty()) po.policy = a.policy;
  io.labels_path = a.labels;
  io.header = a.header;
  io.skip_rows = a.skip_rows;
  io.image_channels = a.channels;
  if (!a.image_size.empty()) {
    int h = 0, w = 0;
    if (std::sscanf(a.image_size.c_str(), "%dx%d", &h, &w) != 2 || h <= 0 || w <= 0)
      return fail(
          fmt::format("--image-size '{}' must look like 32x32 (height x width)", a.image_size));
    io.image_height = h;
    io.image_width = w;
  }
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
  auto res = data::push(**store, a.name, **src, po);
  bar.end();
  if (!res.ok()) return fail(res.status().message());
  const auto& r = *res;
  // Nulls per column, from the version's statistics: said now rather than found by the loader.
  json nulls = json::object();
  if (r.version.manifest.contains("stats"))
    for (const auto& [col, st] : r.version.manifest["stats"].items())
      if (st.is_object() && st.value("nulls", int64_t(0)) > 0 && col.rfind("__", 0) != 0)
        nulls[col] = st["nulls"];
  if (a.json) {
    json j = {{"event", "done"},
              {"version", r.version.label()},
              {"id", r.version.id},
              {"rows", r.rows},
              {"bad_rows", r.bad_rows},
              {"shards", r.shards},
              {"shards_new", r.shards_new},
              {"bytes", r.stored_bytes},
              {"new_bytes", r.new_bytes},
              {"seconds", r.seconds},
              {"input", (*src)->describe()}};
    j["unchanged"] = r.unchanged;  // true: no new version, `version` already held this data
    if (r.quarantine) j["quarantine"] = r.quarantine->label();
    j["nulls"] = nulls;
    std::printf("%s\n", json_dump_line(j).c_str());
    return 0;
  }
  if (r.unchanged) {
    // Like git's "nothing to commit": the latest version already holds this data.
    std::printf("data unchanged: dataset %s is already at version %lld (%s  %s)\n",
                r.version.name.c_str(), (long long)r.version.number, r.version.label().c_str(),
                r.version.id.substr(0, 12).c_str());
    if (!a.message.empty()) std::printf("  no new version: the message was not recorded\n");
  } else {
    std::printf("%s  %s\n", r.version.label().c_str(), r.version.id.substr(0, 12).c_str());
  }
  std::printf("  %lld rows in %lld shards (%lld new, %s stored, %s new) in %.2f s\n",
              (long long)r.rows, (long long)r.shards, (long long)r.shards_new,
              human_bytes(r.stored_bytes).c_str(), human_bytes(r.new_bytes).c_str(), r.seconds);
  if (!nulls.empty()) {
    std::string list;
    for (const auto& [col, n] : nulls.items())
      list += fmt::format("{}{} {}", list.empty() ? "" : ", ", col, n.get<int64_t>());
    std::printf(
        "  nulls: %s (training refuses rows with nulls unless its spec sets `data.nulls: drop` or "
        "imputes them: see docs/spec.md)\n",
        list.c_str());
  }
  if ((*src)->describe().value("skipped_first_line", false))
    std::printf(
        "  line 1 skipped: not data (its number of fields differs from every row below it)\n");
  if (r.version.manifest.contains("split"))
    std::printf("  split: train %lld, validation %lld, test %lld\n",
                (long long)data::split_rows(r.version, "train"),
                (long long)data::split_rows(r.version, "validation"),
                (long long)data::split_rows(r.version, "test"));
  if (r.bad_rows > 0) {
    std::printf("  %lld bad rows kept aside in %s, e.g.:\n", (long long)r.bad_rows,
                r.quarantine ? r.quarantine->label().c_str() : "-");
    for (size_t i = 0; i < r.bad_sample.size() && i < 5; ++i)
      std::printf("    line %lld: %s\n", (long long)r.bad_sample[i].line,
                  r.bad_sample[i].reason.c_str());
  }
  return 0;
}

int run_list(const DataArgs& a) {
  auto store = open_store(a);
  if (!store.ok()) return fail(store.status().message());
  auto names = (*store)->names();
  if (!names.ok()) return fail(names.status().message());
  // Manifests are checked when read (data/manifest_check.h): "rows" and "created_ms" are there.
  std::vector<data::VersionInfo> latest;
  json out = json::array();
  for (const auto& n : *names) {
    auto v = (*store)->resolve({n, "latest", ""});
    if (!v.ok()) return fail(v.status().message());
    out.push_back({{"name", n},
                   {"latest", v->label()},
                   {"rows", v->manifest["rows"]},
                   {"created_ms", v->manifest["created_ms"]}});
    latest.push_back(std::move(*v));
  }
  if (a.json) {
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
  auto store = open_store(a);
  if (!store.ok()) return fail(store.status().message());
  auto vs = (*store)->versions(a.name);
  if (!vs.ok()) return fail(vs.status().message());
  json out = json::array();
  for (const auto& v : *vs)
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
  for (const auto& v : *vs)
    std::printf("v%-7lld %-12s %12lld  %-19s %-16s %s\n", (long long)v.number,
                v.id.substr(0, 12).c_str(), (long long)v.manifest["rows"].get<int64_t>(),
                format_time_ms(v.manifest["created_ms"]).c_str(),
                fmt::format("{}", fmt::join(v.tags, ",")).c_str(),
                v.manifest.value("message", "").c_str());
  return 0;
}

Result<data::VersionInfo> resolve(data::DatasetStore& store, const std::string& text,
                                  std::string* split = nullptr) {
  DLSYS_ASSIGN_OR_RETURN(data::VersionRef ref, data::parse_version_ref(text));
  if (split) *split = ref.split;
  return store.resolve(ref);
}

int run_show(const DataArgs& a) {
  auto store = open_store(a);
  if (!store.ok()) return fail(store.status().message());
  auto v = resolve(**store, a.ref);
  if (!v.ok()) return fail(v.status().message());
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
  auto store = open_store(a);
  if (!store.ok()) return fail(store.status().message());
  data::DriftThresholds t{a.psi, a.ks};
  auto from = resolve(**store, a.ref);
  if (!from.ok()) return fail(from.status().message());
  json d;
  if (!a.sample.empty()) {
    auto text = read_file(a.sample);
    if (!text.ok()) return fail(text.status().message());
    json sample = json::parse(*text, nullptr, false);
    if (sample.is_discarded()) return fail(a.sample + ": not JSON; give {\"column\": [values]}");
    auto r = data::drift_of_sample(*from, sample, t);
    if (!r.ok()) return fail(r.status().message());
    d = {{"from", from->label()}, {"to", a.sample}, {"drift", *r}};
  } else {
    if (a.ref2.empty()) return fail("give a second version (N@V2) or --sample FILE.json");
    auto to = resolve(**store, a.ref2);
    if (!to.ok()) return fail(to.status().message());
    auto r = data::diff_versions(**store, *from, *to, t);
    if (!r.ok()) return fail(r.status().message());
    d = *r;
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
  auto store = open_store(a);
  if (!store.ok()) return fail(store.status().message());
  std::string split;
  auto v = resolve(**store, a.ref, &split);
  if (!v.ok()) return fail(v.status().message());
  if (a.out.empty()) return fail("give the output with -o PATH");
  Progress bar(!a.json);
  int64_t total = data::split_rows(*v, split);
  auto progress = [&](int64_t rows) {
    bar.update("pull " + v->label(), rows, total, fmt::format("{} rows", rows));
  };
  std::vector<std::string> files;
  if (a.format == "csv" || a.format.empty()) {
    Status st = data::export_csv(**store, *v, split, a.out, progress);
    bar.end();
    if (!st.ok()) return fail(st.message());
    files.push_back(a.out);
  } else if (a.format == "npy") {
    auto r = data::export_npy(**store, *v, split, a.out, progress);
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
  auto store = open_store(a);
  if (!store.ok()) return fail(store.status().message());
  auto ref = data::parse_version_ref(a.ref);
  if (!ref.ok()) return fail(ref.status().message());
  Status st = (*store)->tag(*ref, a.tag);
  if (!st.ok()) return fail(st.message());
  auto v = (*store)->resolve(*ref);
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
  auto store = open_store(a);
  if (!store.ok()) return fail(store.status().message());
  auto v = resolve(**store, a.ref);
  if (!v.ok()) return fail(v.status().message());
  int64_t rows = 0;
  for (const auto& s : v->manifest["shards"]) {
    std::string id = s["id"];
    std::string w = fmt::format("shard {} of {}", id.substr(0, 12), v->label());
    auto bytes = read_file((*store)->shard_path(id));
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

int run_gc(const DataArgs& a) {
  auto store = open_store(a);
  if (!store.ok()) return fail(store.status().message());
  auto freed = (*store)->gc();
  if (!freed.ok()) return fail(freed.status().message());
  std::printf("freed %s\n", human_bytes(*freed).c_str());
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
      "gc", "Delete shards, statistics and manifests no version references (older than an hour)");
  add_common(gc, a.get());
  gc->callback([a, rc] { *rc = run_gc(*a); });
}

}  // namespace dlsys::cli
