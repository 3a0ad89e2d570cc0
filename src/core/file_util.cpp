#include "core/file_util.h"

#include <dirent.h>
#include <sys/stat.h>
#include "core/sha256.h"

#include <fcntl.h>
#include <openssl/rand.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

namespace dlsys {

namespace {

Status fsync_path(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0)
    return Status::IOError("cannot open '{}' to fsync it: {}", path, std::strerror(errno));
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Status::IOError("fsync of '{}' failed: {}", path, std::strerror(errno));
  return Status::OK();
}

std::string parent_dir(const std::string& path) {
  std::filesystem::path p(path);
  std::string d = p.parent_path().string();
  return d.empty() ? "." : d;
}

}  // namespace

Status commit_file(const std::string& tmp, const std::string& path) {
  DLSYS_RETURN_IF_ERROR(fsync_path(tmp, false));
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    return Status::IOError("cannot rename '{}' to '{}': {}", tmp, path, std::strerror(errno));
  return fsync_path(parent_dir(path), true);
}

Status write_file_atomic(const std::string& path, std::string_view data) {
  std::string tmp = path + ".tmp-" + random_hex(6);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return Status::IOError("cannot create '{}': {}", tmp, std::strerror(errno));
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      Status st = Status::IOError("write to '{}' failed: {}", tmp, std::strerror(errno));
      ::close(fd);
      ::unlink(tmp.c_str());
      return st;
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  Status st = commit_file(tmp, path);
  if (!st.ok()) ::unlink(tmp.c_str());
  return st;
}

Result<std::string> read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return Status::IOError("cannot open '{}': {}", path, std::strerror(errno));
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      return Status::IOError("read of '{}' failed: {}", path, std::strerror(errno));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

Status make_dirs(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IOError("cannot create directory '{}': {}", dir, ec.message());
  return Status::OK();
}

std::string random_hex(size_t n) {
  std::string bytes(n, '\0');
  RAND_bytes(reinterpret_cast<unsigned char*>(bytes.data()), static_cast<int>(n));
  return hex_encode(bytes.data(), n);
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

size_t remove_stale_files(const std::string& dir, int64_t min_age_s) {
  size_t removed = 0;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return 0;
  int64_t now = now_ms() / 1000;
  while (dirent* e = ::readdir(d)) {
    std::string p = dir + "/" + e->d_name;
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (now - st.st_mtime >= min_age_s && ::unlink(p.c_str()) == 0) ++removed;
  }
  ::closedir(d);
  return removed;
}

std::vector<std::string> program_data_dirs(const std::string& name) {
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return {};
  return {(exe.parent_path() / name).string(),
          (exe.parent_path() / ".." / "share" / "dlsys" / name).string()};
}

}  // namespace dlsys
