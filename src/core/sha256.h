// SHA-256 content addresses (OpenSSL): incremental hashing of streams and one-shot helpers.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "core/status.h"

namespace dlsys {

// Incremental SHA-256. update() any number of times, then hex_digest() once. Not thread-safe.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(const void* data, size_t size);
  void update(std::string_view s) { update(s.data(), s.size()); }
  // Returns the 64-character lower-case hex digest; the hasher may not be used afterwards.
  std::string hex_digest();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Returns `n` bytes as 2n lower-case hex characters.
std::string hex_encode(const void* data, size_t n);
// Returns the lower-case hex SHA-256 of `data`.
std::string sha256_hex(std::string_view data);
// Returns the lower-case hex SHA-256 of the file at `path`, read in 1 MiB chunks.
Result<std::string> sha256_file(const std::string& path);
// True for a 64-character lower-case hex string (what sha256_hex returns).
bool is_sha256_hex(std::string_view s);

}  // namespace dlsys
