#include "api/data_routes.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "api/request_util.h"
#include "core/file_util.h"
#include "data/diff.h"
#include "data/export.h"
#include "data/push.h"

namespace dlsys::api {

namespace {

json version_json(const data::VersionInfo& v, bool with_manifest) {
  json j = {{"name", v.name},
            {"version", v.number},
            {"label", v.label()},
            {"id", v.id},
            {"tags", v.tags},
            {"rows", v.manifest.value("rows", int64_t(0))},
            {"message", v.manifest.value("message", "")},
            {"author", v.manifest.value("author", "")},
            {"created_ms", v.manifest.value("created_ms", int64_t(0))}};
  if (with_manifest) j["manifest"] = v.manifest;
  return j;
}

Result<data::VersionInfo> resolve(const data::DatasetStore& store, const std::string& name,
                                  const std::string& ref) {
  DLSYS_ASSIGN_OR_RETURN(data::VersionRef r, data::parse_version_ref(name + "@" + ref));
  return store.resolve(r);
}

Result<data::DriftThresholds> thresholds(const Request& r) {
  data::DriftThresholds t;
  DLSYS_ASSIGN_OR_RETURN(t.psi, parse_finite(r.query_or("psi", "0.2"), "psi"));
  DLSYS_ASSIGN_OR_RETURN(t.ks, parse_finite(r.query_or("ks", "0.1"), "ks"));
  if (t.psi <= 0 || t.ks <= 0 || t.ks > 1)
    return Status::Invalid("thresholds psi={} and ks={}: use psi > 0 and 0 < ks <= 1", t.psi, t.ks);
  return t;
}

// A pushed source as the manifest records it: the client's names of its files (?filename=,
// ?labels_filename=), not the server's temporary copies.
class UploadedSource : public data::RowSource {
 public:
  UploadedSource(std::unique_ptr<data::RowSource> in, json names)
      : in_(std::move(in)), names_(std::move(names)) {}
  const data::Schema& schema() const override { return in_->schema(); }
  Result<data::SourceBatch> next(int64_t max_rows, int64_t max_bytes) override {
    return in_->next(max_rows, max_bytes);
  }
  int64_t done() const override { return in_->done(); }
  int64_t total() const override { return in_->total(); }
  json describe() const override {
    json j = in_->describe();
    for (const auto& [k, v] : names_.items())
      if (j.contains(k)) j[k] = v;
    return j;
  }

 private:
  std::unique_ptr<data::RowSource> in_;
  json names_;
};

// The push options of the query (message, split, policy, split_key, header, skip_rows,
// shard_rows, image_size, channels); a policy of the query replaces the schema file's.
Status push_options(const Request& r, data::PushOptions* po, data::IngestOptions* io) {
  po->message = r.query_or("message", "");
  po->author = r.principal.name;
  po->policy = r.query_or("policy", po->policy);
  po->split_key = r.query_or("split_key", "");
  DLSYS_RETURN_IF_ERROR(data::parse_split_fractions(r.query_or("split", "0.8,0.1,0.1"), po));
  io->header = r.query_or("header", "auto");
  if (io->header != "auto" && io->header != "yes" && io->header != "no")
    return Status::Invalid("header '{}': use auto, yes or no", io->header.substr(0, 16));
  DLSYS_ASSIGN_OR_RETURN(io->skip_rows, parse_int(r.query_or("skip_rows", "0"), "skip_rows"));
  DLSYS_ASSIGN_OR_RETURN(po->shard_rows,
                         parse_int(r.query_or("shard_rows", "1048576"), "shard_rows"));
  if (io->skip_rows < 0 || po->shard_rows < 1)
    return Status::Invalid("skip_rows must be >= 0 and shard_rows >= 1");
  std::string size = r.query_or("image_size", "");
  if (!size.empty()) {
    int h = 0, w = 0;
    char end = 0;
    if (std::sscanf(size.c_str(), "%dx%d%c", &h, &w, &end) != 2 || h <= 0 || w <= 0)
      return Status::Invalid("image_size '{}' must look like 32x32 (height x width)",
                             size.substr(0, 32));
    io->image_height = h;
    io->image_width = w;
  }
  DLSYS_ASSIGN_OR_RETURN(int64_t channels, parse_int(r.query_or("channels", "3"), "channels"));
  if (channels != 1 && channels != 3)
    return Status::Invalid("channels {}: use 1 (gray) or 3 (RGB)", channels);
  io->image_channels = static_cast<int>(channels);
  return Status::OK();
}

// Pushes `src` as a new version of the request's dataset and answers what the push did; records
// the lineage edge parent version -> new version.
Result<Response> push_and_answer(data::DatasetStore& ds, meta::LineageStore& ms, Request& r,
                                 data::RowSource& src, const data::PushOptions& po) {
  DLSYS_ASSIGN_OR_RETURN(data::PushResult res, data::push(ds, r.param("name"), src, po));
  if (!res.unchanged && res.version.manifest["parent"].is_string()) {
    DLSYS_ASSIGN_OR_RETURN(auto vs, ds.versions(r.param("name")));
    for (const auto& v : vs)
      if (v.id == res.version.manifest["parent"].get<std::string>())
        DLSYS_RETURN_IF_ERROR(ms.add_edge("dataset_version", v.label(), "dataset_version",
                                          res.version.label(), "parent", r.principal));
  }
  json out = version_json(res.version, false);
  out["unchanged"] = res.unchanged;
  out["bad_rows"] = res.bad_rows;
  out["shards_new"] = res.shards_new;
  out["shards"] = res.shards;
  out["bytes"] = res.stored_bytes;
  out["new_bytes"] = res.new_bytes;
  out["seconds"] = res.seconds;
  out["input"] = src.describe();
  if (res.version.manifest.contains("split")) out["split"] = res.version.manifest["split"]["rows"];
  json bad = json::array();
  for (size_t i = 0; i < res.bad_sample.size() && i < 5; ++i)
    bad.push_back({{"line", res.bad_sample[i].line}, {"reason", res.bad_sample[i].reason}});
  out["bad_sample"] = bad;
  if (res.quarantine) out["quarantine"] = res.quarantine->label();
  return Response::json_body(out, res.unchanged ? 200 : 201);
}

// `st` with each `from` of `names` replaced by its `to` in the message (staged paths by the
// client's names of the files).
Status renamed(const Status& st, const std::vector<std::pair<std::string, std::string>>& names) {
  if (st.ok()) return st;
  std::string msg = st.message();
  for (const auto& [from, to] : names)
    for (size_t at = msg.find(from); at != std::string::npos; at = msg.find(from, at + to.size()))
      msg.replace(at, from.size(), to);
  return Status(st.code(), msg);
}

// The largest schema file a staged push may carry (it is parsed in memory).
constexpr int64_t kMaxSchemaFileBytes = 1 << 20;

// POST .../versions?upload=ID: ingests the staged files of the upload with the push code a local
// push uses; the upload is removed whatever happens (a request that also has a body is refused).
Result<Response> push_upload(data::DatasetStore& ds, data::UploadStaging& uploads,
                             meta::LineageStore& ms, Request& r, const std::string& id,
                             bool has_body) {
  const std::string& name = r.param("name");
  DLSYS_ASSIGN_OR_RETURN(std::string dir, uploads.claim(name, id));
  struct Drop {
    data::UploadStaging& u;
    const std::string& name;
    const std::string& id;
    ~Drop() { (void)u.remove(name, id); }
  } drop{uploads, name, id};
  if (has_body)
    return Status::Invalid("upload: with ?upload=ID the files come from the upload; send no body");
  std::string format = r.query_or("format", "");
  if (format != "csv" && format != "tsv" && format != "jsonl" && format != "npy" &&
      format != "idx" && format != "images")
    return Status::Invalid("format '{}': give format=csv, tsv, jsonl, npy, idx or images",
                           format.substr(0, 16));
  // The staged files the query names: checked as upload paths, and present.
  auto staged = [&](const char* field, bool folder) -> Result<std::string> {
    std::string rel = r.query_or(field, "");
    if (rel.empty()) return std::string();
    Status st = data::check_upload_path(rel);
    if (!st.ok()) return Status::Invalid("{}: {}", field, st.message());
    std::string p = dir + "/" + rel;
    struct stat s;
    if (::lstat(p.c_str(), &s) != 0 || (folder ? !S_ISDIR(s.st_mode) : !S_ISREG(s.st_mode)))
      return Status::Invalid("{} '{}' is not a {} of upload {}: upload it first (PUT {}/files/{})",
                             field, rel, folder ? "folder" : "file", id,
                             "/api/v1/datasets/" + name + "/uploads/" + id, rel);
    return p;
  };
  DLSYS_ASSIGN_OR_RETURN(std::string input, staged("path", format == "images"));
  if (input.empty()) return Status::Invalid("path: give the staged input's path (?path=REL)");
  DLSYS_ASSIGN_OR_RETURN(std::string labels, staged("labels", false));
  DLSYS_ASSIGN_OR_RETURN(std::string schema, staged("schema", false));
  std::string filename = r.query_or("filename", r.query_or("path", "")).substr(0, 1024);
  std::string labels_name = r.query_or("labels_filename", r.query_or("labels", "")).substr(0, 1024);
  std::string schema_name = r.query_or("schema_filename", r.query_or("schema", "")).substr(0, 1024);
  // Errors name the client's files, not the staging directory.
  std::vector<std::pair<std::string, std::string>> names;
  if (!labels.empty()) names.emplace_back(labels, labels_name);
  if (!schema.empty()) names.emplace_back(schema, schema_name);
  names.emplace_back(input, filename);
  names.emplace_back(dir, "(upload " + id + ")");
  data::PushOptions po;
  data::IngestOptions io;
  if (!schema.empty()) {
    struct stat s;
    if (::stat(schema.c_str(), &s) == 0 && s.st_size > kMaxSchemaFileBytes)
      return Status::Invalid("schema '{}' is {} bytes, over the limit of {} for a schema file",
                             schema_name, s.st_size, kMaxSchemaFileBytes);
    auto sf = data::read_schema_file(schema);
    if (!sf.ok()) return renamed(sf.status(), names);
    io.schema = sf->schema;
    po.rules = sf->schema;
    po.policy = sf->policy;
  }
  DLSYS_RETURN_IF_ERROR(push_options(r, &po, &io));
  io.labels_path = labels;
  auto opened = data::open_source(input, format, io);
  if (!opened.ok()) return renamed(opened.status(), names);
  json client_names = {{"path", filename}};
  if (!labels.empty()) client_names["labels"] = labels_name;
  UploadedSource src(std::move(*opened), client_names);
  // A long ingest keeps its upload from looking stale.
  auto last = std::chrono::steady_clock::now();
  po.progress = [&](int64_t, int64_t, int64_t) {
    auto now = std::chrono::steady_clock::now();
    if (now - last < std::chrono::seconds(30)) return;
    last = now;
    uploads.touch(id);
  };
  auto answer = push_and_answer(ds, ms, r, src, po);
  if (!answer.ok()) return renamed(answer.status(), names);
  return answer;
}

}  // namespace

void add_data_routes(Router& router, data::DatasetStore& datasets, data::UploadStaging& uploads,
                     meta::LineageStore& lineage) {
  data::DatasetStore* ds = &datasets;
  data::UploadStaging* up = &uploads;
  meta::LineageStore* ms = &lineage;

  router.add("GET", "/api/v1/datasets", Access::kRead, [ds](Request&) -> Result<Response> {
    DLSYS_ASSIGN_OR_RETURN(auto names, ds->names());
    json out = json::array();
    for (const auto& n : names) {
      DLSYS_ASSIGN_OR_RETURN(data::VersionInfo v, ds->resolve({n, "latest", ""}));
      out.push_back({{"name", n}, {"latest", version_json(v, false)}});
    }
    return Response::json_body({{"datasets", out}});
  });

  router.add("GET", "/api/v1/datasets/{name}/versions", Access::kRead,
             [ds](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(auto vs, ds->versions(r.param("name")));
               json out = json::array();
               for (const auto& v : vs) out.push_back(version_json(v, false));
               return Response::json_body({{"versions", out}});
             });

  router.add("GET", "/api/v1/datasets/{name}/versions/{ref}", Access::kRead,
             [ds](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(auto v, resolve(*ds, r.param("name"), r.param("ref")));
               return Response::json_body(version_json(v, true));
             });

  // Rows as CSV (?split=train), streamed from a temporary export.
  router.add("GET", "/api/v1/datasets/{name}/versions/{ref}/rows", Access::kRead,
             [ds](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(auto v, resolve(*ds, r.param("name"), r.param("ref")));
               std::string split = r.query_or("split", "");
               if (!split.empty()) DLSYS_RETURN_IF_ERROR(data::split_id(split).status());
               std::string path = ds->root() + "/tmp/export-" + random_hex(8) + ".csv";
               Status st = data::export_csv(*ds, v, split, path, nullptr);
               if (!st.ok()) {
                 ::unlink(path.c_str());
                 return st;
               }
               Response resp;
               resp.content_type = "text/csv";
               resp.file_path = path;
               resp.delete_file = true;  // once sent; the periodic tmp sweep is the backstop
               return resp;
             });

  // One shard of a version, byte for byte (named by its SHA-256; only the version's own
  // shards): what a client copies to train on the version (`dlsys train --server`).
  router.add("GET", "/api/v1/datasets/{name}/versions/{ref}/shards/{id}", Access::kRead,
             [ds](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(auto v, resolve(*ds, r.param("name"), r.param("ref")));
               const std::string& id = r.param("id");
               bool listed = false;
               for (const auto& s : v.manifest["shards"]) listed = listed || s["id"] == id;
               if (!listed)
                 return Status::NotFound("{} has no shard '{}'", v.label(), id.substr(0, 64));
               Response resp;
               resp.content_type = "application/octet-stream";
               resp.file_path = ds->shard_path(id);
               return resp;
             });

  router.add("GET", "/api/v1/datasets/{name}/diff", Access::kRead,
             [ds](Request& r) -> Result<Response> {
               std::string from = r.query_or("from", ""), to = r.query_or("to", "latest");
               if (from.empty())
                 return Status::Invalid("give ?from=VERSION (and &to=VERSION, default latest)");
               DLSYS_ASSIGN_OR_RETURN(auto a, resolve(*ds, r.param("name"), from));
               DLSYS_ASSIGN_OR_RETURN(auto b, resolve(*ds, r.param("name"), to));
               DLSYS_ASSIGN_OR_RETURN(data::DriftThresholds t, thresholds(r));
               DLSYS_ASSIGN_OR_RETURN(json d, data::diff_versions(*ds, a, b, t));
               return Response::json_body(d);
             });

  // Drift of a sample of inputs against a version: body {"column": [values...], ...}.
  router.add(
      "POST", "/api/v1/datasets/{name}/versions/{ref}/drift", Access::kRead,
      [ds](Request& r) -> Result<Response> {
        DLSYS_ASSIGN_OR_RETURN(auto v, resolve(*ds, r.param("name"), r.param("ref")));
        DLSYS_ASSIGN_OR_RETURN(data::DriftThresholds t, thresholds(r));
        DLSYS_ASSIGN_OR_RETURN(json body, body_object(r));
        DLSYS_ASSIGN_OR_RETURN(json d, data::drift_of_sample(v, body, t));
        return Response::json_body(d);
      },
      /*body_to_file=*/false, kLargeBodyLimit);

  router.add("PUT", "/api/v1/datasets/{name}/tags/{tag}", Access::kWrite,
             [ds](Request& r) -> Result<Response> {
               DLSYS_ASSIGN_OR_RETURN(json body, body_object(r));
               DLSYS_ASSIGN_OR_RETURN(std::string ref, string_field(body, "version", true));
               DLSYS_ASSIGN_OR_RETURN(data::VersionRef vr,
                                      data::parse_version_ref(r.param("name") + "@" + ref));
               DLSYS_RETURN_IF_ERROR(ds->tag(vr, r.param("tag")));
               DLSYS_ASSIGN_OR_RETURN(auto v, ds->resolve(vr));
               return Response::json_body({{"tag", r.param("tag")}, {"version", v.label()}});
             });

  // Push the body (a CSV, TSV or JSONL file), or the files of a staged upload (?upload=ID), as
  // a new version:
  // ?format=csv&message=...&split=0.8,0.1,0.1&policy=reject|quarantine&split_key=col
  // &header=auto|yes|no&skip_rows=N&shard_rows=N&filename=NAME (recorded as the source); with
  // ?upload=ID also &path=REL (the input: a file, or an image folder), &labels=REL,
  // &schema=REL, &labels_filename=NAME, &image_size=HxW, &channels=1|3.
  // 201 with the new version; 200 with "unchanged": true and the latest version when the data
  // is the same as the latest version's (no version is made, no lineage recorded). Either way
  // the answer says what the push did (shards, bytes, new_bytes, seconds, split, input,
  // bad_sample), as `dlsys data push` prints it.
  router.add(
      "POST", "/api/v1/datasets/{name}/versions", Access::kWrite,
      [ds, up, ms](Request& r) -> Result<Response> {
        std::string body = std::move(r.body_file);
        r.body_file.clear();
        struct Remove {
          std::string p;
          ~Remove() {
            if (!p.empty()) ::unlink(p.c_str());
          }
        } remove{body};
        std::string upload = r.query_or("upload", "");
        if (!upload.empty()) {
          struct stat st;
          bool has_body = !r.body.empty() ||
                          (!body.empty() && ::stat(body.c_str(), &st) == 0 && st.st_size > 0);
          return push_upload(*ds, *up, *ms, r, upload, has_body);
        }
        if (body.empty()) return Status::Invalid("send the file as the request body");
        std::string format = r.query_or("format", "csv");
        if (format != "csv" && format != "tsv" && format != "jsonl")
          return Status::Invalid(
              "format '{}': a request body is a csv, tsv or jsonl file; push NPY, IDX and image "
              "folders (and files with a schema) as a staged upload (POST "
              "/api/v1/datasets/{{name}}/uploads), as `dlsys data push --server` does",
              format.substr(0, 16));
        data::PushOptions po;
        data::IngestOptions io;
        DLSYS_RETURN_IF_ERROR(push_options(r, &po, &io));
        DLSYS_ASSIGN_OR_RETURN(auto opened, data::open_source(body, format, io));
        UploadedSource src(std::move(opened),
                           {{"path", r.query_or("filename", "(request body)").substr(0, 1024)}});
        return push_and_answer(*ds, *ms, r, src, po);
      },
      /*body_to_file=*/true);

  // Staged uploads: the files of one push (an NPY or IDX pair, an image folder, a schema file),
  // one request each, then POST .../versions?upload=ID ingests them (data/upload_staging.h).
  router.add("POST", "/api/v1/datasets/{name}/uploads", Access::kWrite,
             [up](Request& r) -> Result<Response> {
               DLSYS_RETURN_IF_ERROR(data::DatasetStore::check_name(r.param("name")));
               DLSYS_ASSIGN_OR_RETURN(std::string id, up->create(r.param("name")));
               return Response::json_body({{"upload", id},
                                           {"max_files", up->limits().max_files},
                                           {"max_bytes", up->limits().max_bytes},
                                           {"expires_after_s", data::kStaleUploadSeconds}},
                                          201);
             });
  router.add(
      "PUT", "/api/v1/datasets/{name}/uploads/{id}/files/{path...}", Access::kWrite,
      [ds, up](Request& r) -> Result<Response> {
        std::string file = std::move(r.body_file);
        r.body_file.clear();
        if (file.empty()) {  // an in-process call: the body is in memory
          file = ds->root() + "/tmp/upload-" + random_hex(8);
          DLSYS_RETURN_IF_ERROR(write_file_atomic(file, r.body));
        }
        const std::string& path = r.param("path");
        struct stat st;
        int64_t size = ::stat(file.c_str(), &st) == 0 ? st.st_size : 0;
        DLSYS_RETURN_IF_ERROR(up->add(r.param("name"), r.param("id"), path, file));
        return Response::json_body({{"path", path}, {"size", size}}, 201);
      },
      /*body_to_file=*/true);
  router.add("DELETE", "/api/v1/datasets/{name}/uploads/{id}", Access::kWrite,
             [up](Request& r) -> Result<Response> {
               DLSYS_RETURN_IF_ERROR(up->remove(r.param("name"), r.param("id")));
               return Response::json_body({{"removed", r.param("id")}});
             });
}

}  // namespace dlsys::api
