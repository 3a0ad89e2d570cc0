#include "data/dataset_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>

#include "core/file_util.h"
#include "core/sha256.h"

namespace dlsys::data {

namespace {

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    out.push_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

bool is_hex(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
}

bool parse_number(const std::string& s, int64_t* n) {
  if (s.empty() || s.size() > 12 || !std::all_of(s.begin(), s.end(), ::isdigit)) return false;
  *n = std::stoll(s);
  return true;
}

// Holds an exclusive flock on a file until destroyed.
class FileLock {
 public:
  ~FileLock() {
    if (fd_ >= 0) ::close(fd_);  // closing releases the lock
  }
  Status lock(const std::string& path) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) return Status::IOError("cannot open lock file {}: {}", path, strerror(errno));
    while (::flock(fd_, LOCK_EX) != 0)
      if (errno != EINTR) return Status::IOError("cannot lock {}: {}", path, strerror(errno));
    return Status::OK();
  }

 private:
  int fd_ = -1;
};

}  // namespace

std::string VersionRef::to_string() const {
  return name + "@" + ref + (split.empty() ? "" : ":" + split);
}

Result<VersionRef> parse_version_ref(const std::string& text) {
  VersionRef r;
  std::string rest = text;
  size_t colon = rest.rfind(':');
  if (colon != std::string::npos) {
    r.split = rest.substr(colon + 1);
    rest = rest.substr(0, colon);
    if (r.split != "train" && r.split != "validation" && r.split != "test")
      return Status::Invalid("'{}': split '{}' is not train, validation or test", text, r.split);
  }
  size_t at = rest.find('@');
  r.name = rest.substr(0, at);
  if (at != std::string::npos) r.ref = rest.substr(at + 1);
  if (r.ref.empty())
    return Status::Invalid("'{}': nothing after '@'; write NAME@v3, NAME@latest or NAME@TAG", text);
  DLSYS_RETURN_IF_ERROR(DatasetStore::check_name(r.name).with_context("'" + text + "'"));
  return r;
}

Status DatasetStore::check_name(const std::string& name) {
  if (name.empty() || name.size() > 100)
    return Status::Invalid("dataset name '{}' must have 1 to 100 characters", name);
  if (name[0] == '.' || name[0] == '-')
    return Status::Invalid("dataset name '{}' must not start with '.' or '-'", name);
  for (char c : name)
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
      return Status::Invalid("dataset name '{}' may only hold letters, digits, '.', '_' and '-'",
                             name);
  return Status::OK();
}

Result<std::unique_ptr<DatasetStore>> DatasetStore::open(const std::string& root) {
  for (const char* sub : {"shards", "manifests", "refs", "tmp"})
    DLSYS_RETURN_IF_ERROR(make_dirs(root + "/" + sub));
  // Temporary files of pushes that died; an hour's margin leaves running pushes alone.
  int64_t now = now_ms() / 1000;
  for (const auto& f : list_dir(root + "/tmp")) {
    std::string p = root + "/tmp/" + f;
    struct stat st;
    if (::stat(p.c_str(), &st) == 0 && now - st.st_mtime > 3600) ::unlink(p.c_str());
  }
  return std::unique_ptr<DatasetStore>(new DatasetStore(root));
}

std::string DatasetStore::shard_path(const std::string& id) const {
  return root_ + "/shards/" + id.substr(0, 2) + "/" + id;
}

bool DatasetStore::has_shard(const std::string& id) const {
  struct stat st;
  return ::stat(shard_path(id).c_str(), &st) == 0;
}

Result<std::string> DatasetStore::put_shard(const std::string& bytes) {
  std::string tmp;
  DLSYS_ASSIGN_OR_RETURN(std::string id, stage_shard(bytes, &tmp));
  DLSYS_RETURN_IF_ERROR(publish_shard(id, tmp));
  return id;
}

Result<std::string> DatasetStore::stage_shard(const std::string& bytes, std::string* tmp) {
  std::string id = sha256_hex(bytes);
  *tmp = root_ + "/tmp/" + id + "." + random_hex(4);
  int fd = ::open(tmp->c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IOError("cannot create {}: {}", *tmp, strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      Status st = Status::IOError("cannot write {}: {} (disk full?)", *tmp, strerror(errno));
      ::close(fd);
      ::unlink(tmp->c_str());
      return st;
    }
    done += n;
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    ::unlink(tmp->c_str());
    return Status::IOError("fsync of {} failed: {}", *tmp, strerror(errno));
  }
  ::close(fd);
  return id;
}

Status DatasetStore::publish_shard(const std::string& id, const std::string& tmp) {
  if (has_shard(id)) {
    ::unlink(tmp.c_str());
    return Status::OK();
  }
  DLSYS_RETURN_IF_ERROR(make_dirs(root_ + "/shards/" + id.substr(0, 2)));
  Status st = commit_file(tmp, shard_path(id));
  if (!st.ok()) ::unlink(tmp.c_str());
  return st;
}

void DatasetStore::discard_staged(const std::string& tmp) {
  ::unlink(tmp.c_str());
}

Result<json> DatasetStore::read_manifest(const std::string& id) const {
  DLSYS_ASSIGN_OR_RETURN(std::string text, read_file(root_ + "/manifests/" + id + ".json"));
  if (sha256_hex(text) != id)
    return Status::Invalid("manifest {} does not match its SHA-256; the store is corrupted", id);
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return Status::Invalid("manifest {} is not JSON", id);
  return j;
}

Result<std::vector<std::pair<int64_t, std::string>>> DatasetStore::version_ids(
    const std::string& name) const {
  std::vector<std::pair<int64_t, std::string>> out;
  for (const auto& f : list_dir(ref_dir(name) + "/versions")) {
    int64_t n;
    if (!parse_number(f, &n)) continue;  // temporary files
    DLSYS_ASSIGN_OR_RETURN(std::string id, read_file(ref_dir(name) + "/versions/" + f));
    out.emplace_back(n, id);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> DatasetStore::tags_of(const std::string& name,
                                               const std::string& id) const {
  std::vector<std::string> out;
  for (const auto& t : list_dir(ref_dir(name) + "/tags")) {
    if (t.find(".tmp") != std::string::npos) continue;
    auto text = read_file(ref_dir(name) + "/tags/" + t);
    if (text.ok() && *text == id) out.push_back(t);
  }
  return out;
}

Result<VersionInfo> DatasetStore::commit(const std::string& name, json manifest) {
  DLSYS_RETURN_IF_ERROR(check_name(name));
  for (const auto& s : manifest.value("shards", json::array()))
    if (!has_shard(s.at("id").get<std::string>()))
      return Status::Internal("commit of {}: shard {} is not stored", name,
                              s.at("id").get<std::string>());
  DLSYS_RETURN_IF_ERROR(make_dirs(ref_dir(name) + "/versions"));
  FileLock lock;
  DLSYS_RETURN_IF_ERROR(lock.lock(ref_dir(name) + "/lock"));
  DLSYS_ASSIGN_OR_RETURN(auto ids, version_ids(name));
  manifest["name"] = name;
  manifest["parent"] = ids.empty() ? json(nullptr) : json(ids.back().second);
  manifest["created_ms"] = now_ms();
  std::string text = manifest.dump(1);
  std::string id = sha256_hex(text);
  DLSYS_RETURN_IF_ERROR(write_file_atomic(root_ + "/manifests/" + id + ".json", text));
  int64_t number = ids.empty() ? 1 : ids.back().first + 1;
  DLSYS_RETURN_IF_ERROR(
      write_file_atomic(ref_dir(name) + "/versions/" + std::to_string(number), id));
  VersionInfo v;
  v.name = name;
  v.number = number;
  v.id = id;
  v.manifest = std::move(manifest);
  return v;
}

Result<VersionInfo> DatasetStore::resolve(const VersionRef& ref) const {
  DLSYS_ASSIGN_OR_RETURN(auto ids, version_ids(ref.name));
  if (ids.empty())
    return Status::NotFound("no dataset named '{}'; `dlsys data list` shows the datasets",
                            ref.name);
  auto describe = [&] { return fmt::format("{} has v1..v{}", ref.name, ids.back().first); };
  std::string id;
  int64_t number = 0;
  int64_t n;
  std::string r = ref.ref;
  if (r == "latest") {
    number = ids.back().first;
    id = ids.back().second;
  } else if (parse_number(r[0] == 'v' ? r.substr(1) : r, &n)) {
    for (auto& [k, v] : ids)
      if (k == n) number = k, id = v;
    if (id.empty()) return Status::NotFound("{}@{}: no such version ({})", ref.name, r, describe());
  } else {
    auto tag = read_file(ref_dir(ref.name) + "/tags/" + r);
    if (tag.ok()) {
      id = *tag;
    } else if (is_hex(r) && r.size() >= 6) {
      for (auto& [k, v] : ids)
        if (v.rfind(r, 0) == 0) {
          if (!id.empty() && id != v)
            return Status::Invalid("{}@{}: the id prefix is ambiguous; give more digits", ref.name,
                                   r);
          id = v;
        }
    }
    if (id.empty())
      return Status::NotFound("{}@{}: no such tag or version ({}; tags: {})", ref.name, r,
                              describe(), fmt::join(list_dir(ref_dir(ref.name) + "/tags"), ", "));
    for (auto& [k, v] : ids)
      if (v == id) number = k;
  }
  VersionInfo v;
  v.name = ref.name;
  v.number = number;
  v.id = id;
  DLSYS_ASSIGN_OR_RETURN(v.manifest, read_manifest(id));
  v.tags = tags_of(ref.name, id);
  return v;
}

Result<std::vector<std::string>> DatasetStore::names() const {
  std::vector<std::string> out;
  for (const auto& n : list_dir(root_ + "/refs"))
    if (!list_dir(ref_dir(n) + "/versions").empty()) out.push_back(n);
  return out;
}

Result<std::vector<VersionInfo>> DatasetStore::versions(const std::string& name) const {
  DLSYS_RETURN_IF_ERROR(check_name(name));
  DLSYS_ASSIGN_OR_RETURN(auto ids, version_ids(name));
  if (ids.empty())
    return Status::NotFound("no dataset named '{}'; `dlsys data list` shows the datasets", name);
  std::vector<VersionInfo> out;
  for (auto& [n, id] : ids) {
    VersionInfo v;
    v.name = name;
    v.number = n;
    v.id = id;
    DLSYS_ASSIGN_OR_RETURN(v.manifest, read_manifest(id));
    v.tags = tags_of(name, id);
    out.push_back(std::move(v));
  }
  return out;
}

Status DatasetStore::tag(const VersionRef& ref, const std::string& tag) {
  int64_t n;
  if (tag == "latest" || parse_number(tag[0] == 'v' ? tag.substr(1) : tag, &n))
    return Status::Invalid("tag '{}' is reserved (latest and v<n> name versions); pick another",
                           tag);
  if (tag.empty() || tag.size() > 64 || tag[0] == '.' ||
      !std::all_of(tag.begin(), tag.end(), [](char c) {
        return isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
      }))
    return Status::Invalid("tag '{}' must be 1-64 of letters, digits, '.', '_', '-'", tag);
  DLSYS_ASSIGN_OR_RETURN(VersionInfo v, resolve(ref));
  DLSYS_RETURN_IF_ERROR(make_dirs(ref_dir(ref.name) + "/tags"));
  return write_file_atomic(ref_dir(ref.name) + "/tags/" + tag, v.id);
}

Result<int64_t> DatasetStore::gc() {
  std::set<std::string> live_manifests, live_shards;
  DLSYS_ASSIGN_OR_RETURN(auto all, names());
  for (const auto& name : all) {
    FileLock lock;
    DLSYS_RETURN_IF_ERROR(lock.lock(ref_dir(name) + "/lock"));
    DLSYS_ASSIGN_OR_RETURN(auto vs, versions(name));
    for (const auto& v : vs) {
      live_manifests.insert(v.id);
      for (const auto& s : v.manifest.value("shards", json::array()))
        live_shards.insert(s.at("id").get<std::string>());
    }
  }
  // Pushes in flight hold shards not yet referenced: only collect files older than an hour.
  int64_t freed = 0, now = now_ms() / 1000;
  auto collect = [&](const std::string& path) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0 || now - st.st_mtime < 3600) return;
    if (::unlink(path.c_str()) == 0) freed += st.st_size;
  };
  for (const auto& f : list_dir(root_ + "/manifests"))
    if (!live_manifests.count(f.substr(0, f.find('.')))) collect(root_ + "/manifests/" + f);
  for (const auto& d : list_dir(root_ + "/shards"))
    for (const auto& f : list_dir(root_ + "/shards/" + d))
      if (!live_shards.count(f)) collect(root_ + "/shards/" + d + "/" + f);
  return freed;
}

}  // namespace dlsys::data
