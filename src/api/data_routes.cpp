#include "api/data_routes.h"

#include <unistd.h>

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

// A pushed body's source as the manifest records it: the client's file name (?filename=), not
// the server's temporary copy of the body.
class UploadedSource : public data::RowSource {
 public:
  UploadedSource(std::unique_ptr<data::RowSource> in, std::string name)
      : in_(std::move(in)), name_(std::move(name)) {}
  const data::Schema& schema() const override { return in_->schema(); }
  Result<data::SourceBatch> next(int64_t max_rows, int64_t max_bytes) override {
    return in_->next(max_rows, max_bytes);
  }
  int64_t done() const override { return in_->done(); }
  int64_t total() const override { return in_->total(); }
  json describe() const override {
    json j = in_->describe();
    j["path"] = name_;
    return j;
  }

 private:
  std::unique_ptr<data::RowSource> in_;
  std::string name_;
};

}  // namespace

void add_data_routes(Router& router, data::DatasetStore& datasets, meta::LineageStore& lineage) {
  data::DatasetStore* ds = &datasets;
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

  // Push the body (a CSV, TSV or JSONL file) as a new version:
  // ?format=csv&message=...&split=0.8,0.1,0.1&policy=reject|quarantine&split_key=col
  // &header=auto|yes|no&skip_rows=N&shard_rows=N&filename=NAME (recorded as the source).
  // 201 with the new version; 200 with "unchanged": true and the latest version when the data
  // is the same as the latest version's (no version is made, no lineage recorded). Either way
  // the answer says what the push did (shards, bytes, new_bytes, seconds, split, input,
  // bad_sample), as `dlsys data push` prints it.
  router.add(
      "POST", "/api/v1/datasets/{name}/versions", Access::kWrite,
      [ds, ms](Request& r) -> Result<Response> {
        std::string body = std::move(r.body_file);
        r.body_file.clear();
        struct Remove {
          std::string p;
          ~Remove() {
            if (!p.empty()) ::unlink(p.c_str());
          }
        } remove{body};
        if (body.empty()) return Status::Invalid("send the file as the request body");
        std::string format = r.query_or("format", "csv");
        if (format != "csv" && format != "tsv" && format != "jsonl")
          return Status::Invalid(
              "format '{}': the API takes csv, tsv or jsonl bodies; push "
              "NPY, IDX and image folders with `dlsys data push`",
              format);
        data::PushOptions po;
        po.message = r.query_or("message", "");
        po.author = r.principal.name;
        po.policy = r.query_or("policy", "reject");
        po.split_key = r.query_or("split_key", "");
        DLSYS_RETURN_IF_ERROR(data::parse_split_fractions(r.query_or("split", "0.8,0.1,0.1"), &po));
        data::IngestOptions io;
        io.header = r.query_or("header", "auto");
        if (io.header != "auto" && io.header != "yes" && io.header != "no")
          return Status::Invalid("header '{}': use auto, yes or no", io.header.substr(0, 16));
        DLSYS_ASSIGN_OR_RETURN(io.skip_rows, parse_int(r.query_or("skip_rows", "0"), "skip_rows"));
        DLSYS_ASSIGN_OR_RETURN(po.shard_rows,
                               parse_int(r.query_or("shard_rows", "1048576"), "shard_rows"));
        if (io.skip_rows < 0 || po.shard_rows < 1)
          return Status::Invalid("skip_rows must be >= 0 and shard_rows >= 1");
        DLSYS_ASSIGN_OR_RETURN(auto opened, data::open_source(body, format, io));
        auto src = std::make_unique<UploadedSource>(
            std::move(opened), r.query_or("filename", "(request body)").substr(0, 1024));
        DLSYS_ASSIGN_OR_RETURN(data::PushResult res, data::push(*ds, r.param("name"), *src, po));
        if (!res.unchanged && res.version.manifest["parent"].is_string()) {
          // Lineage: parent version -> new version.
          DLSYS_ASSIGN_OR_RETURN(auto vs, ds->versions(r.param("name")));
          for (const auto& v : vs)
            if (v.id == res.version.manifest["parent"].get<std::string>())
              DLSYS_RETURN_IF_ERROR(ms->add_edge("dataset_version", v.label(), "dataset_version",
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
        out["input"] = src->describe();
        if (res.version.manifest.contains("split"))
          out["split"] = res.version.manifest["split"]["rows"];
        json bad = json::array();
        for (size_t i = 0; i < res.bad_sample.size() && i < 5; ++i)
          bad.push_back({{"line", res.bad_sample[i].line}, {"reason", res.bad_sample[i].reason}});
        out["bad_sample"] = bad;
        if (res.quarantine) out["quarantine"] = res.quarantine->label();
        return Response::json_body(out, res.unchanged ? 200 : 201);
      },
      /*body_to_file=*/true);
}

}  // namespace dlsys::api
