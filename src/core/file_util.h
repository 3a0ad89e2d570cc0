// Files written so that a crash never leaves a half-written one behind, and small helpers.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace dlsys {

// Writes `data` to `path` atomically: a temporary file beside it, fsync, rename, fsync of the
// directory. After a crash `path` holds either its old content or all of `data`.
Status write_file_atomic(const std::string& path, std::string_view data);
// Renames `tmp` (already written) over `path` after fsyncing it, then fsyncs the directory.
Status commit_file(const std::string& tmp, const std::string& path);
// Reads the whole file; errors name the path.
Result<std::string> read_file(const std::string& path);
// Creates `dir` and its parents (like mkdir -p).
Status make_dirs(const std::string& dir);
// Removes the regular files directly in `dir` not modified for `min_age_s` seconds (temporary
// files of writes and responses that died); returns how many it removed.
size_t remove_stale_files(const std::string& dir, int64_t min_age_s);
// Returns `n` random bytes as 2n lower-case hex characters (OpenSSL's CSPRNG).
std::string random_hex(size_t n);
// Milliseconds since the Unix epoch.
int64_t now_ms();
// Where the program's own files called `name` may be, in the order to look: `name` beside the
// running binary (a build tree: build/web, build/python), then ../share/dlsys/`name` from it (an
// installed program). Empty when the binary's path cannot be read.
std::vector<std::string> program_data_dirs(const std::string& name);

}  // namespace dlsys
