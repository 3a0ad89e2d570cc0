#include "cli/dataset_cache.h"

#include <unistd.h>

#include <cctype>

#include "cli/client_options.h"
#include "core/file_util.h"
#include "core/json_get.h"
#include "core/sha256.h"
#include "data/manifest_check.h"

namespace dlsys::cli {

using nlohmann::json;

namespace {

bool is_sha256_hex(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

}  // namespace

std::string cache_dir_of(const std::string& url) {
  std::string key = url.rfind("http://", 0) == 0 ? url.substr(7) : url;
  while (!key.empty() && key.back() == '/') key.pop_back();
  for (char& c : key)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-') c = '_';
  return data_dir_or_default("") + "/cache/" + key;
}

Result<data::VersionInfo> cache_server_version(api::ApiClient& c, data::DatasetStore& cache,
                                               const std::string& index_dir,
                                               const data::VersionRef& ref,
                                               std::string* server_label) {
  std::string base = "/api/v1/datasets/" + api::url_encode(ref.name) + "/versions/";
  std::string target = base + api::url_encode(ref.ref);
  std::string what = answer_to("GET", target);
  DLSYS_ASSIGN_OR_RETURN(json j, c.call("GET", target));
  DLSYS_ASSIGN_OR_RETURN(*server_label, json_get<std::string>(j, "label", what));
  DLSYS_ASSIGN_OR_RETURN(std::string id, json_get<std::string>(j, "id", what));
  if (!is_sha256_hex(id)) return Status::Invalid("{}: 'id' is not a version id", what);
  DLSYS_ASSIGN_OR_RETURN(json manifest, json_get<json>(j, "manifest", what));
  DLSYS_RETURN_IF_ERROR(data::check_manifest(manifest, what));
  std::string index = index_dir + "/" + id;
  if (auto local = read_file(index); local.ok() && is_sha256_hex(*local)) {
    // Only a whole copy is used: a shard missing (a `dlsys data gc` that ran meanwhile) is
    // fetched again below.
    auto v = cache.resolve({ref.name, *local, ""});
    bool whole = v.ok();
    for (const auto& s : manifest["shards"]) whole = whole && cache.has_shard(s["id"]);
    if (whole) return v;
  }
  for (const auto& s : manifest["shards"]) {
    std::string sid = s["id"];
    if (cache.has_shard(sid)) continue;
    std::string tmp = cache.root() + "/tmp/fetch-" + random_hex(8);
    DLSYS_RETURN_IF_ERROR(make_dirs(cache.root() + "/tmp"));
    Status st = c.download(base + id + "/shards/" + sid, tmp);
    Result<std::string> bytes = st.ok() ? read_file(tmp) : Result<std::string>(st);
    ::unlink(tmp.c_str());
    if (!bytes.ok()) return bytes.status().with_context("fetching a shard of " + *server_label);
    if (sha256_hex(*bytes) != sid)
      return Status::IOError("shard {} of {} from the server does not match its SHA-256",
                             sid.substr(0, 12), *server_label);
    DLSYS_RETURN_IF_ERROR(cache.put_shard(*bytes).status());
  }
  for (const char* k : {"name", "parent", "created_ms", "stats_id"}) manifest.erase(k);
  DLSYS_ASSIGN_OR_RETURN(data::VersionInfo v, cache.commit(ref.name, manifest));
  DLSYS_RETURN_IF_ERROR(make_dirs(index_dir));
  DLSYS_RETURN_IF_ERROR(write_file_atomic(index, v.id));
  return v;
}

}  // namespace dlsys::cli
