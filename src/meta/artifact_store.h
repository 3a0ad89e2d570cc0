// Content-addressed object store in the data directory: objects/<2 hex>/<64 hex SHA-256>.
// Objects are immutable and deduplicated; writes go to objects/tmp and are renamed in after an
// fsync, so a crash never leaves a partial object under its name. Thread-safe.
#pragma once

#include <string>

#include "core/status.h"

namespace dlsys::meta {

struct StoredObject {
  std::string sha256;
  int64_t size = 0;
  bool deduplicated = false;  // the content was already there
};

class ArtifactStore {
 public:
  // Uses (and creates) `root`/objects and `root`/objects/tmp. Removes the temporary files of
  // writes a crash interrupted: those of processes that no longer run (temp_path names the
  // writer), and any over an hour old; another running process's upload stays.
  static Result<ArtifactStore> open(const std::string& root);

  // A fresh path under objects/tmp for a streamed upload; hand it to put_file when complete.
  std::string temp_path() const;
  // Hashes the complete file at `tmp` and moves it into the store (or deletes it when the
  // content is already stored). `tmp` is gone afterwards in every case.
  Result<StoredObject> put_file(const std::string& tmp);
  // Stores `data`.
  Result<StoredObject> put(std::string_view data);
  // Returns the object's path after checking that its content still hashes to `sha256`
  // (a corrupted object is an error naming it, never served).
  Result<std::string> open_verified(const std::string& sha256) const;
  // Path of an object (it may not exist).
  std::string object_path(const std::string& sha256) const;
  const std::string& root() const { return root_; }

 private:
  explicit ArtifactStore(std::string root) : root_(std::move(root)) {}
  std::string root_;
};

}  // namespace dlsys::meta
