#include "meta/artifact_store.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>

#include "core/file_util.h"
#include "core/sha256.h"

namespace dlsys::meta {

Result<ArtifactStore> ArtifactStore::open(const std::string& root) {
  DLSYS_RETURN_IF_ERROR(make_dirs(root + "/objects/tmp"));
  // What writers that are gone left behind: an upload names its process (upload-<pid>-...), and
  // one whose process no longer runs was cut short. Another process on this data directory (a
  // `dlsys train --data-dir` beside a server's job) may be writing its upload now: kept. Files
  // of no running writer that are not named so are removed after an hour.
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator(root + "/objects/tmp", ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("upload-", 0) != 0) continue;
    char* end = nullptr;
    const long pid = std::strtol(name.c_str() + 7, &end, 10);
    if (pid <= 0 || end == nullptr || *end != '-') continue;
    if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
      std::error_code re;
      std::filesystem::remove(e.path(), re);
    }
  }
  remove_stale_files(root + "/objects/tmp", 3600);
  return ArtifactStore(root);
}

std::string ArtifactStore::temp_path() const {
  return root_ + "/objects/tmp/upload-" + std::to_string(::getpid()) + "-" + random_hex(12);
}

std::string ArtifactStore::object_path(const std::string& sha256) const {
  return root_ + "/objects/" + sha256.substr(0, 2) + "/" + sha256;
}

Result<StoredObject> ArtifactStore::put_file(const std::string& tmp) {
  struct stat st;
  if (::stat(tmp.c_str(), &st) != 0) return Status::IOError("upload file '{}' is missing", tmp);
  auto hash = sha256_file(tmp);
  if (!hash.ok()) {
    ::unlink(tmp.c_str());
    return hash.status();
  }
  StoredObject obj{*hash, static_cast<int64_t>(st.st_size), false};
  std::string dst = object_path(obj.sha256);
  struct stat existing;
  if (::stat(dst.c_str(), &existing) == 0 && existing.st_size == st.st_size) {
    ::unlink(tmp.c_str());
    obj.deduplicated = true;
    return obj;
  }
  Status s = make_dirs(root_ + "/objects/" + obj.sha256.substr(0, 2));
  if (s.ok()) s = commit_file(tmp, dst);
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  return obj;
}

Result<StoredObject> ArtifactStore::put(std::string_view data) {
  std::string tmp = temp_path();
  DLSYS_RETURN_IF_ERROR(write_file_atomic(tmp, data));
  return put_file(tmp);
}

Result<std::string> ArtifactStore::open_verified(const std::string& sha256) const {
  if (!is_sha256_hex(sha256)) return Status::Invalid("'{}' is not a SHA-256 address", sha256);
  std::string path = object_path(sha256);
  if (::access(path.c_str(), R_OK) != 0)
    return Status::NotFound("object {} is missing from {}/objects", sha256, root_);
  DLSYS_ASSIGN_OR_RETURN(std::string actual, sha256_file(path));
  if (actual != sha256)
    return Status::Internal(
        "object {} is corrupted on disk (its content hashes to {}); restore "
        "it from a backup or upload the artifact again",
        sha256, actual);
  return path;
}

}  // namespace dlsys::meta
