// Staged uploads: the files of one push through a server (an NPY pair, an IDX pair, an image
// folder, a schema file) sent one request each into a staging directory of the data directory
// (DATA_DIR/datasets/uploads/<id>/), then ingested together by one push, which removes them.
//
// An upload is created for one dataset and named by a random id (128 bits, hex). Each file has
// a relative path inside it, checked before any path is built (check_upload_path). Limits: a
// number of files and a total size per upload (and the server's body limit per file). An
// upload untouched for kStaleUploadSeconds is stale: removed by sweep() (the server's periodic
// housekeeping, and when the server starts) and by remove_stale_uploads (`dlsys data gc`).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "core/status.h"

namespace dlsys::data {

// An upload untouched (no file added, no ingest running) for this long is removed.
inline constexpr int64_t kStaleUploadSeconds = 3600;
// Relative paths of staged files: at most this many bytes, each part at most kMaxUploadPathPart,
// at most kMaxUploadPathDepth parts.
inline constexpr size_t kMaxUploadPath = 1024;
inline constexpr size_t kMaxUploadPathPart = 255;
inline constexpr size_t kMaxUploadPathDepth = 16;

struct UploadLimits {
  int64_t max_files = 1'000'000;         // files in one upload
  int64_t max_bytes = int64_t{8} << 30;  // all files of one upload together
  int64_t max_open = 256;                // uploads in progress at once (more: Unavailable)
};

// Checks the relative path of a staged file: not empty, relative, no "." or ".." or empty part,
// no part starting with '.', no control character or backslash, valid UTF-8, within the length
// limits above. Errors name the field "path" and say what is wrong.
Status check_upload_path(const std::string& path);

// Whether `id` has the form of an upload id (32 lower-case hex characters).
bool is_upload_id(const std::string& id);

class UploadStaging {
 public:
  // Staging under `dir` (created when needed); stale uploads found there are removed.
  UploadStaging(std::string dir, UploadLimits limits);

  const UploadLimits& limits() const { return limits_; }

  // A new, empty upload for `dataset`; returns its id. Unavailable when `max_open` uploads are
  // in progress.
  Result<std::string> create(const std::string& dataset);

  // Moves the finished file `file` (a request body) to `path` inside the upload `id` of
  // `dataset`, replacing a file staged at that path before. `file` is removed on failure too.
  // Errors: NotFound (no such upload: expired, removed, or the server restarted), Invalid (a bad
  // path, a path that is a folder of the upload or lies under a file, a limit passed: the error
  // names the limit), Unavailable (the upload is being ingested).
  Status add(const std::string& dataset, const std::string& id, const std::string& path,
             const std::string& file);

  // Claims the upload for its ingest: no file can be added any more. Returns its directory.
  Result<std::string> claim(const std::string& dataset, const std::string& id);

  // Marks the upload as in use now (an ingest running), so that no sweep removes it.
  void touch(const std::string& id);

  // Removes the upload (its directory and its entry); NotFound when there is none for
  // `dataset`.
  Status remove(const std::string& dataset, const std::string& id);

  // Removes uploads untouched for `min_age_s` seconds (never one being ingested); returns how
  // many.
  size_t sweep(int64_t min_age_s = kStaleUploadSeconds);

 private:
  struct Entry {
    std::string dataset;
    int64_t files = 0, bytes = 0;
    bool claimed = false;
    int64_t touched_s = 0;
  };
  std::string path_of(const std::string& id) const { return dir_ + "/" + id; }
  // The upload `id` of `dataset` (mu_ held); NotFound says why it may be gone.
  Result<std::map<std::string, Entry>::iterator> find_locked(const std::string& dataset,
                                                             const std::string& id);

  std::string dir_;
  UploadLimits limits_;
  std::mutex mu_;
  std::map<std::string, Entry> uploads_;
};

// Removes the upload directories under `dir` not modified for `min_age_s` seconds (uploads of
// clients that died; a running upload or ingest touches its directory); returns how many and
// adds the bytes they held to `*bytes` when given. What `dlsys data gc` runs on a data
// directory.
size_t remove_stale_uploads(const std::string& dir, int64_t min_age_s, int64_t* bytes = nullptr);

}  // namespace dlsys::data
