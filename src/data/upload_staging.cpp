#include "data/upload_staging.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

#include "core/file_util.h"
#include "core/utf8.h"

namespace dlsys::data {

namespace fs = std::filesystem;

namespace {

int64_t now_s() {
  return now_ms() / 1000;
}

// Sets the directory's modification time to now: what stale-upload sweeps read.
void touch_dir(const std::string& dir) {
  ::utimensat(AT_FDCWD, dir.c_str(), nullptr, 0);
}

// Bytes of the regular files under `dir`.
int64_t tree_bytes(const std::string& dir) {
  int64_t n = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    std::error_code e2;
    if (it->is_regular_file(e2)) n += static_cast<int64_t>(it->file_size(e2));
  }
  return n;
}

size_t remove_stale(const std::string& dir, int64_t min_age_s, const std::set<std::string>& keep,
                    int64_t* bytes) {
  size_t removed = 0;
  std::error_code ec;
  int64_t now = now_s();
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::end(it); it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (!is_upload_id(name) || keep.count(name)) continue;
    struct stat st;
    std::string p = it->path().string();
    if (::lstat(p.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    if (now - st.st_mtime < min_age_s) continue;
    int64_t held = bytes ? tree_bytes(p) : 0;
    std::error_code e2;
    if (fs::remove_all(p, e2) != static_cast<std::uintmax_t>(-1) && !e2) {
      ++removed;
      if (bytes) *bytes += held;
    }
  }
  return removed;
}

}  // namespace

Status check_upload_path(const std::string& path) {
  if (path.empty()) return Status::Invalid("path is empty: give the file's path in the upload");
  if (path.size() > kMaxUploadPath)
    return Status::Invalid("path is {} bytes, over the limit of {}", path.size(), kMaxUploadPath);
  if (path[0] == '/')
    return Status::Invalid("path '{}' is absolute; give a path relative to the upload", path);
  for (size_t i = 0; i < path.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(path[i]);
    if (c < 0x20 || c == 0x7f || c == '\\')
      return Status::Invalid("path has a control character or backslash at byte {}", i);
  }
  size_t bad = 0;
  if (!is_valid_utf8(path, &bad))
    return Status::Invalid("path is not valid UTF-8 (byte {}); paths are UTF-8 text", bad);
  size_t start = 0, parts = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    std::string part = path.substr(start, end - start);
    if (part == ".." || part == ".")
      return Status::Invalid("path '{}' has a '{}' part; paths stay inside the upload", path, part);
    if (part.empty()) return Status::Invalid("path '{}' has an empty part", path);
    if (part[0] == '.')
      return Status::Invalid("path '{}' has a part starting with '.' (hidden files are not read)",
                             path);
    if (part.size() > kMaxUploadPathPart)
      return Status::Invalid("path '{}...' has a part of {} bytes, over the limit of {}",
                             path.substr(0, 64), part.size(), kMaxUploadPathPart);
    if (++parts > kMaxUploadPathDepth)
      return Status::Invalid("path '{}...' has more than {} parts", path.substr(0, 64),
                             kMaxUploadPathDepth);
    start = end + 1;
  }
  return Status::OK();
}

bool is_upload_id(const std::string& id) {
  if (id.size() != 32) return false;
  for (char c : id)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

UploadStaging::UploadStaging(std::string dir, UploadLimits limits)
    : dir_(std::move(dir)), limits_(limits) {
  (void)make_dirs(dir_);
  // Uploads of a server that stopped (or clients that died) more than the deadline ago.
  remove_stale(dir_, kStaleUploadSeconds, {}, nullptr);
}

Result<std::string> UploadStaging::create(const std::string& dataset) {
  std::string id = random_hex(16);
  std::lock_guard<std::mutex> lock(mu_);
  if (static_cast<int64_t>(uploads_.size()) >= limits_.max_open)
    return Status::Unavailable(
        "the server holds {} uploads in progress, its limit (max_open); retry when one is done "
        "(untouched ones expire after {} s)",
        uploads_.size(), kStaleUploadSeconds);
  DLSYS_RETURN_IF_ERROR(make_dirs(path_of(id)));
  uploads_[id] = Entry{dataset, 0, 0, false, now_s()};
  return id;
}

Status UploadStaging::add(const std::string& dataset, const std::string& id,
                          const std::string& path, const std::string& file) {
  struct Remove {
    std::string p;
    ~Remove() {
      if (!p.empty()) ::unlink(p.c_str());
    }
  } remove{file};
  DLSYS_RETURN_IF_ERROR(check_upload_path(path));
  struct stat st;
  if (::stat(file.c_str(), &st) != 0)
    return Status::IOError("cannot read the staged body {}: {}", file, strerror(errno));
  int64_t size = st.st_size;
  std::lock_guard<std::mutex> lock(mu_);
  DLSYS_ASSIGN_OR_RETURN(auto it, find_locked(dataset, id));
  Entry& e = it->second;
  if (e.claimed)
    return Status::Unavailable("upload '{}' is being ingested; it takes no more files", id);
  std::string target = path_of(id) + "/" + path;
  // Every folder on the way must be a folder (or not exist yet), and the target not a folder.
  for (size_t slash = path.find('/'); slash != std::string::npos;
       slash = path.find('/', slash + 1)) {
    struct stat ps;
    std::string prefix = path_of(id) + "/" + path.substr(0, slash);
    if (::lstat(prefix.c_str(), &ps) == 0 && !S_ISDIR(ps.st_mode))
      return Status::Invalid("path '{}': '{}' is a file of the upload, not a folder", path,
                             path.substr(0, slash));
  }
  int64_t old = 0;
  bool existed = false;
  struct stat ts;
  if (::lstat(target.c_str(), &ts) == 0) {
    if (!S_ISREG(ts.st_mode))
      return Status::Invalid("path '{}' is a folder of the upload, not a file", path);
    existed = true;
    old = ts.st_size;
  }
  if (!existed && e.files + 1 > limits_.max_files)
    return Status::Invalid(
        "upload '{}' already holds {} files, the limit (max_files) of one upload; push fewer "
        "files (e.g. fewer images, or pack them into an NPY or IDX file)",
        id, e.files);
  if (e.bytes - old + size > limits_.max_bytes)
    return Status::Invalid(
        "path '{}': {} bytes would bring upload '{}' to {} bytes, over the limit (max_bytes) of {} "
        "bytes for one push (the server's --max-upload-mb)",
        path, size, id, e.bytes - old + size, limits_.max_bytes);
  size_t last = target.rfind('/');
  DLSYS_RETURN_IF_ERROR(make_dirs(target.substr(0, last)));
  if (::rename(file.c_str(), target.c_str()) != 0) {
    if (errno != EXDEV)
      return Status::IOError("cannot move {} to {}: {}", file, target, strerror(errno));
    std::error_code ec;
    fs::copy_file(file, target, fs::copy_options::overwrite_existing, ec);
    if (ec) return Status::IOError("cannot copy {} to {}: {}", file, target, ec.message());
  } else {
    remove.p.clear();
  }
  e.files += existed ? 0 : 1;
  e.bytes += size - old;
  e.touched_s = now_s();
  touch_dir(path_of(id));
  return Status::OK();
}

Result<std::map<std::string, UploadStaging::Entry>::iterator> UploadStaging::find_locked(
    const std::string& dataset, const std::string& id) {
  auto it = uploads_.find(id);
  if (!is_upload_id(id) || it == uploads_.end() || it->second.dataset != dataset)
    return Status::NotFound(
        "no upload '{}' for dataset {} (uploads expire after {} s untouched and do not survive a "
        "server restart); push again",
        id.substr(0, 64), dataset, kStaleUploadSeconds);
  return it;
}

Result<std::string> UploadStaging::claim(const std::string& dataset, const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  DLSYS_ASSIGN_OR_RETURN(auto it, find_locked(dataset, id));
  if (it->second.claimed) return Status::Unavailable("upload '{}' is already being ingested", id);
  it->second.claimed = true;
  it->second.touched_s = now_s();
  touch_dir(path_of(id));
  return path_of(id);
}

void UploadStaging::touch(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = uploads_.find(id);
  if (it == uploads_.end()) return;
  it->second.touched_s = now_s();
  touch_dir(path_of(id));
}

Status UploadStaging::remove(const std::string& dataset, const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    DLSYS_ASSIGN_OR_RETURN(auto it, find_locked(dataset, id));
    uploads_.erase(it);
  }
  std::error_code ec;
  fs::remove_all(path_of(id), ec);
  if (ec) return Status::IOError("cannot remove {}: {}", path_of(id), ec.message());
  return Status::OK();
}

size_t UploadStaging::sweep(int64_t min_age_s) {
  std::set<std::string> keep;
  {
    std::lock_guard<std::mutex> lock(mu_);
    int64_t now = now_s();
    for (auto it = uploads_.begin(); it != uploads_.end();) {
      if (it->second.claimed || now - it->second.touched_s < min_age_s) {
        keep.insert(it->first);
        ++it;
      } else {
        it = uploads_.erase(it);
      }
    }
  }
  return remove_stale(dir_, min_age_s, keep, nullptr);
}

size_t remove_stale_uploads(const std::string& dir, int64_t min_age_s, int64_t* bytes) {
  return remove_stale(dir, min_age_s, {}, bytes);
}

}  // namespace dlsys::data
