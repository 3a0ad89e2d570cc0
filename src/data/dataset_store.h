// DatasetStore: versioned datasets in a directory, git-like.
//
//   <root>/shards/aa/<sha256>        shards, named by the SHA-256 of their bytes (shared by
//                                    every version that holds the same rows)
//   <root>/stats/<sha256>.json       column statistics, named by the SHA-256 of their bytes
//                                    (shared by every version with the same statistics)
//   <root>/manifests/<sha256>.json   immutable version manifests, named by their SHA-256; a
//                                    manifest names its statistics by "stats_id"
//   <root>/refs/<name>/versions/<n>  "digits@v<n>" -> manifest id
//   <root>/refs/<name>/tags/<tag>    "digits@prod" -> manifest id (tags move)
//
// Every file is written to a temporary file, fsynced and renamed, and a version becomes
// visible only when its `versions/<n>` ref appears, after its shards, statistics and manifest
// are durable: a push killed at any moment leaves no half-visible version (at worst
// unreferenced shards and statistics, which `gc` removes). Version numbers are assigned under
// an flock per dataset name, so two pushes to the same name on one machine or a shared file
// system never take the same number. Under the same lock a commit whose data (schema and
// ordered shard ids) equals the latest version's writes nothing: versions never repeat their
// predecessor.
//
// Older stores kept the statistics inside the manifest ("stats" instead of "stats_id"); those
// manifests are read as they are (no migration: a manifest's id is the hash of its bytes), and
// readers see `manifest["stats"]` either way.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "data/schema.h"

namespace dlsys::data {

// "name", "name@v3", "name@3", "name@latest", "name@prod", "name@<id prefix>", each optionally
// followed by ":train" / ":validation" / ":test". The ref is a closed grammar, checked by
// parse_version_ref and again by resolve: "latest"; "v<n>" or "<n>" (1-12 digits); a tag name
// (1-64 of [A-Za-z0-9._-], not starting with '.'); or a manifest id prefix (6-64 lower-case hex
// digits, tried when no tag has that name). Anything else (a path, '/', "..", an empty or
// overlong ref) is refused before the file system is touched.
struct VersionRef {
  std::string name;
  std::string ref = "latest";
  std::string split;  // "" for all rows
  std::string to_string() const;
};
Result<VersionRef> parse_version_ref(const std::string& text);

struct VersionInfo {
  std::string name;
  int64_t number = 0;  // v<number>
  std::string id;      // SHA-256 of the manifest
  json manifest;       // the manifest (see docs/formats.md)
  std::vector<std::string> tags;
  std::string label() const { return name + "@v" + std::to_string(number); }
};

class DatasetStore {
 public:
  // Opens (creating) the store under `root` and removes temporary files older than an hour.
  static Result<std::unique_ptr<DatasetStore>> open(const std::string& root);

  const std::string& root() const { return root_; }

  // Stores shard bytes under their SHA-256 (nothing is written when the shard exists);
  // returns the id. Same as stage_shard then publish_shard.
  Result<std::string> put_shard(const std::string& bytes);
  // Writes shard bytes to a durable temporary file (not visible to readers); returns the id
  // and sets `*tmp` to the file, which publish_shard moves into place or discard_staged drops.
  Result<std::string> stage_shard(const std::string& bytes, std::string* tmp);
  Status publish_shard(const std::string& id, const std::string& tmp);
  void discard_staged(const std::string& tmp);
  std::string shard_path(const std::string& id) const;
  bool has_shard(const std::string& id) const;

  // Commits a new version of `name`: sets "name", "parent" (the current latest id, or null)
  // and "created_ms" in `manifest`, stores its "stats" as a statistics object (replaced by
  // "stats_id" on disk; the returned manifest holds both), writes the manifest, and publishes
  // the next number. Every shard the manifest lists must already be stored.
  // When the latest version holds the same data (same "schema" and the same shard ids in the
  // same order) nothing is written: the latest version is returned and `*unchanged` (when
  // given) is set to true; otherwise it is set to false.
  Result<VersionInfo> commit(const std::string& name, json manifest, bool* unchanged = nullptr);

  // Resolves a reference to a version; errors name what exists ("digits has v1..v3"). Ref
  // files are read bounded (256 bytes, regular files only, symbolic links not followed) and
  // must hold exactly one of the dataset's manifest ids; errors never quote a file's content
  // or a path inside the store.
  Result<VersionInfo> resolve(const VersionRef& ref) const;
  // Dataset names, sorted (directory entries that are not valid names are skipped).
  Result<std::vector<std::string>> names() const;
  // Versions of `name`, oldest first.
  Result<std::vector<VersionInfo>> versions(const std::string& name) const;
  // Points `tag` of `name` at the version `ref` names (it must resolve). "latest", "<n>" and
  // "v<n>" are reserved.
  Status tag(const VersionRef& ref, const std::string& tag);
  // Deletes shards, statistics and manifests no version references (only files older than an
  // hour: pushes in flight); returns the bytes freed.
  Result<int64_t> gc();

  // Checks a dataset name: 1..100 of [A-Za-z0-9._-], not starting with '.' or '-'.
  static Status check_name(const std::string& name);

 private:
  explicit DatasetStore(std::string root) : root_(std::move(root)) {}
  // `label` ("digits@v3") names the version in errors. With `with_stats`, a manifest that
  // names a statistics object ("stats_id") gets it as "stats" (checked against its SHA-256).
  Result<json> read_manifest(const std::string& id, const std::string& label,
                             bool with_stats = true) const;
  // Writes `stats` as a statistics object (nothing when it exists); returns its id.
  Result<std::string> put_stats(const json& stats);
  Result<std::vector<std::pair<int64_t, std::string>>> version_ids(const std::string& name) const;
  std::vector<std::string> tags_of(const std::string& name, const std::string& id) const;
  // The tag names of `name` (temporary files and names outside the tag alphabet skipped).
  std::vector<std::string> tag_names(const std::string& name) const;
  std::string ref_dir(const std::string& name) const { return root_ + "/refs/" + name; }

  std::string root_;
};

}  // namespace dlsys::data
