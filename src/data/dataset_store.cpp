#include "data/dataset_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>

#include "core/file_util.h"
#include "core/sha256.h"
#include "data/manifest_check.h"

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

bool is_manifest_id(const std::string& s) {
  return is_sha256_hex(s);
}

// At most 12 digits: version numbers stay far from int64 overflow.
bool parse_number(const std::string& s, int64_t* n) {
  if (s.empty() || s.size() > 12 || !std::all_of(s.begin(), s.end(), ::isdigit)) return false;
  *n = std::stoll(s);
  return true;
}

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), ::isdigit);
}

// A tag name: 1-64 of [A-Za-z0-9._-], not starting with '.' (so never "." or ".."), no '/'.
bool valid_tag_name(const std::string& t) {
  return !t.empty() && t.size() <= 64 && t[0] != '.' && std::all_of(t.begin(), t.end(), [](char c) {
    return isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
}

// `s` as it may appear in an error: at most 64 bytes, printable ASCII only.
std::string printable(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < 64; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    out += c >= 0x20 && c < 0x7f ? static_cast<char>(c) : '?';
  }
  if (s.size() > 64) out += "...";
  return out;
}

// A version reference after parsing: the closed grammar of docs/formats.md. Only a parsed ref
// ever becomes part of a path (and then only a tag name or a version number).
struct ParsedRef {
  enum Kind { kLatest, kNumber, kTag } kind = kLatest;
  int64_t number = 0;  // kNumber
  std::string tag;     // kTag
  // Also tried as a manifest id prefix (6..64 lower-case hex; a number: when no version has it).
  bool id_prefix = false;
};

Result<ParsedRef> parse_ref(const std::string& ref) {
  ParsedRef p;
  if (ref == "latest") return p;
  std::string digits = !ref.empty() && ref[0] == 'v' ? ref.substr(1) : ref;
  if (all_digits(digits)) {
    if (!parse_number(digits, &p.number))
      return Status::Invalid("version '{}' is out of range (at most 12 digits)", printable(ref));
    p.kind = ParsedRef::kNumber;
    p.id_prefix = ref == digits && ref.size() >= 6;  // all digits is lower-case hex too
    return p;
  }
  if (!valid_tag_name(ref))
    return Status::Invalid(
        "version ref '{}' is not one of: latest, v<n>, <n>, a tag (1-64 of letters, digits, "
        "'.', '_', '-', not starting with '.') or a manifest id prefix (6-64 lower-case hex "
        "digits)",
        printable(ref));
  p.kind = ParsedRef::kTag;
  p.tag = ref;
  p.id_prefix = ref.size() >= 6 && ref.size() <= 64 && is_hex(ref);
  return p;
}

// Why a small ref file could not be read. Never holds file contents or paths.
enum class ReadError { kNone, kMissing, kNotRegular, kTooLarge, kFailed };

// Reads a regular file of at most `limit` bytes into `out`. The last path component is never
// followed when it is a symbolic link (O_NOFOLLOW) and a FIFO or device is never read from
// (O_NONBLOCK to open, then S_ISREG); no more than `limit` + 1 bytes are ever read.
ReadError read_bounded(const std::string& path, size_t limit, std::string* out,
                       int* err = nullptr) {
  out->clear();
  int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    if (err) *err = errno;
    if (errno == ENOENT || errno == ENOTDIR) return ReadError::kMissing;
    if (errno == ELOOP) return ReadError::kNotRegular;  // a symbolic link
    return ReadError::kFailed;
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    if (err) *err = errno;
    ::close(fd);
    return ReadError::kFailed;
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return ReadError::kNotRegular;
  }
  if (static_cast<uint64_t>(st.st_size) > limit) {
    ::close(fd);
    return ReadError::kTooLarge;
  }
  out->resize(static_cast<size_t>(st.st_size) + 1);
  size_t done = 0;
  while (done < out->size()) {
    ssize_t n = ::read(fd, out->data() + done, out->size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      if (err) *err = errno;
      ::close(fd);
      out->clear();
      return ReadError::kFailed;
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  if (done > limit) {  // grew while being read
    out->clear();
    return ReadError::kTooLarge;
  }
  out->resize(done);
  return ReadError::kNone;
}

std::string describe_read_error(ReadError e, int err) {
  switch (e) {
    case ReadError::kNone:
      return "ok";
    case ReadError::kMissing:
      return "it is missing";
    case ReadError::kNotRegular:
      return "it is not a regular file";
    case ReadError::kTooLarge:
      return "it is too large";
    case ReadError::kFailed:
      return std::string("it cannot be read: ") + std::strerror(err);
  }
  return "it cannot be read";
}

// A ref file holds a 64-hex manifest id: 64 bytes, read with room to spare and no more.
constexpr size_t kRefFileLimit = 256;
// Manifests list shards; statistics objects hold a few KiB per column. Far below this even
// for huge datasets.
constexpr size_t kManifestLimit = size_t{256} << 20;

// The shard ids of a manifest, in order.
std::vector<std::string> shard_ids(const json& manifest) {
  std::vector<std::string> out;
  auto it = manifest.find("shards");
  if (it == manifest.end() || !it->is_array()) return out;
  for (const auto& s : *it)
    out.push_back(s.is_object() && s.contains("id") && s["id"].is_string()
                      ? s["id"].get<std::string>()
                      : std::string());
  return out;
}

// Whether two manifests hold the same data: the same schema and the same shards (which are
// named by the SHA-256 of their bytes) in the same order.
bool same_data(const json& a, const json& b) {
  auto sa = a.find("schema"), sb = b.find("schema");
  if (sa == a.end() || sb == b.end() || *sa != *sb) return false;
  return shard_ids(a) == shard_ids(b);
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
      return Status::Invalid("'{}': split '{}' is not train, validation or test", printable(text),
                             printable(r.split));
  }
  size_t at = rest.find('@');
  r.name = rest.substr(0, at);
  if (at != std::string::npos) r.ref = rest.substr(at + 1);
  if (r.ref.empty())
    return Status::Invalid("'{}': nothing after '@'; write NAME@v3, NAME@latest or NAME@TAG",
                           printable(text));
  DLSYS_RETURN_IF_ERROR(DatasetStore::check_name(r.name).with_context("'" + printable(text) + "'"));
  auto parsed = parse_ref(r.ref);
  if (!parsed.ok()) return parsed.status().with_context("'" + printable(text) + "'");
  return r;
}

Status DatasetStore::check_name(const std::string& name) {
  if (name.empty() || name.size() > 100)
    return Status::Invalid("dataset name '{}' must have 1 to 100 characters", printable(name));
  if (name[0] == '.' || name[0] == '-')
    return Status::Invalid("dataset name '{}' must not start with '.' or '-'", printable(name));
  for (char c : name)
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
      return Status::Invalid("dataset name '{}' may only hold letters, digits, '.', '_' and '-'",
                             printable(name));
  return Status::OK();
}

Result<std::unique_ptr<DatasetStore>> DatasetStore::open(const std::string& root) {
  for (const char* sub : {"shards", "stats", "manifests", "refs", "tmp"})
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

Result<json> DatasetStore::read_manifest(const std::string& id, const std::string& label,
                                         bool with_stats) const {
  // Ids come from ref files checked by version_ids; checked again before they become a path.
  if (!is_manifest_id(id)) return Status::Internal("{}: its manifest id is malformed", label);
  std::string text;
  int err = 0;
  ReadError e = read_bounded(root_ + "/manifests/" + id + ".json", kManifestLimit, &text, &err);
  if (e != ReadError::kNone)
    return Status::IOError("the manifest of {} ({}) cannot be used: {}; the store is damaged",
                           label, id.substr(0, 12), describe_read_error(e, err));
  if (sha256_hex(text) != id)
    return Status::Invalid(
        "the manifest of {} ({}) does not match its SHA-256; the store is "
        "corrupted",
        label, id.substr(0, 12));
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded())
    return Status::Invalid("the manifest of {} ({}) is not JSON", label, id.substr(0, 12));
  DLSYS_RETURN_IF_ERROR(check_manifest(j, label));
  // Older manifests hold "stats" themselves; newer ones name a statistics object.
  auto sid = j.find("stats_id");
  if (!with_stats || sid == j.end()) return j;
  if (!sid->is_string() || !is_sha256_hex(sid->get<std::string>()))
    return Status::Invalid(
        "the manifest of {} ({}) names malformed statistics; the store is damaged", label,
        id.substr(0, 12));
  std::string stats_id = sid->get<std::string>();
  e = read_bounded(root_ + "/stats/" + stats_id + ".json", kManifestLimit, &text, &err);
  if (e != ReadError::kNone)
    return Status::IOError("the statistics of {} ({}) cannot be used: {}; the store is damaged",
                           label, stats_id.substr(0, 12), describe_read_error(e, err));
  if (sha256_hex(text) != stats_id)
    return Status::Invalid(
        "the statistics of {} ({}) do not match their SHA-256; the store is corrupted", label,
        stats_id.substr(0, 12));
  json stats = json::parse(text, nullptr, false);
  if (stats.is_discarded() || !stats.is_object())
    return Status::Invalid("the statistics of {} ({}) are not a JSON object", label,
                           stats_id.substr(0, 12));
  DLSYS_RETURN_IF_ERROR(check_stats(stats, label));
  j["stats"] = std::move(stats);
  return j;
}

Result<std::string> DatasetStore::put_stats(const json& stats) {
  std::string text = stats.dump();
  std::string id = sha256_hex(text);
  std::string path = root_ + "/stats/" + id + ".json";
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) return id;  // content-addressed: already stored
  DLSYS_RETURN_IF_ERROR(make_dirs(root_ + "/stats"));
  DLSYS_RETURN_IF_ERROR(write_file_atomic(path, text));
  return id;
}

Result<std::vector<std::pair<int64_t, std::string>>> DatasetStore::version_ids(
    const std::string& name) const {
  DLSYS_RETURN_IF_ERROR(check_name(name));
  std::vector<std::pair<int64_t, std::string>> out;
  for (const auto& f : list_dir(ref_dir(name) + "/versions")) {
    int64_t n;
    if (!parse_number(f, &n)) continue;  // temporary files
    std::string id;
    int err = 0;
    ReadError e = read_bounded(ref_dir(name) + "/versions/" + f, kRefFileLimit, &id, &err);
    if (e != ReadError::kNone)
      return Status::IOError("{}@v{}: its version ref {}; the store is damaged", name, n,
                             describe_read_error(e, err));
    if (!is_manifest_id(id))
      return Status::Invalid(
          "{}@v{}: its version ref does not hold a manifest id; the store is "
          "damaged",
          name, n);
    out.emplace_back(n, id);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> DatasetStore::tag_names(const std::string& name) const {
  std::vector<std::string> out;
  for (const auto& t : list_dir(ref_dir(name) + "/tags"))
    if (valid_tag_name(t) && t.find(".tmp") == std::string::npos) out.push_back(t);
  return out;
}

std::vector<std::string> DatasetStore::tags_of(const std::string& name,
                                               const std::string& id) const {
  std::vector<std::string> out;
  for (const auto& t : tag_names(name)) {
    std::string text;
    if (read_bounded(ref_dir(name) + "/tags/" + t, kRefFileLimit, &text) == ReadError::kNone &&
        text == id)
      out.push_back(t);
  }
  return out;
}

Result<VersionInfo> DatasetStore::commit(const std::string& name, json manifest, bool* unchanged) {
  DLSYS_RETURN_IF_ERROR(check_name(name));
  if (unchanged) *unchanged = false;
  for (const auto& s : manifest.value("shards", json::array()))
    if (!has_shard(s.at("id").get<std::string>()))
      return Status::Internal("commit of {}: shard {} is not stored", name,
                              s.at("id").get<std::string>());
  DLSYS_RETURN_IF_ERROR(make_dirs(ref_dir(name) + "/versions"));
  FileLock lock;
  DLSYS_RETURN_IF_ERROR(lock.lock(ref_dir(name) + "/lock"));
  DLSYS_ASSIGN_OR_RETURN(auto ids, version_ids(name));
  if (!ids.empty()) {
    // The same data as the latest version: no new version (like git's empty commits). A latest
    // manifest that cannot be read does not block the push; resolving it reports the damage.
    auto [number, id] = ids.back();
    std::string label = fmt::format("{}@v{}", name, number);
    auto latest = read_manifest(id, label, /*with_stats=*/false);
    if (latest.ok() && same_data(*latest, manifest)) {
      VersionInfo v;
      v.name = name;
      v.number = number;
      v.id = id;
      DLSYS_ASSIGN_OR_RETURN(v.manifest, read_manifest(id, label));
      v.tags = tags_of(name, id);
      if (unchanged) *unchanged = true;
      return v;
    }
  }
  manifest["name"] = name;
  manifest["parent"] = ids.empty() ? json(nullptr) : json(ids.back().second);
  manifest["created_ms"] = now_ms();
  // The statistics become their own object, durable before the manifest that names it.
  json stats;
  if (auto it = manifest.find("stats"); it != manifest.end()) {
    stats = std::move(*it);
    manifest.erase(it);
    DLSYS_ASSIGN_OR_RETURN(std::string stats_id, put_stats(stats));
    manifest["stats_id"] = stats_id;
  }
  std::string text = manifest.dump(1);
  std::string id = sha256_hex(text);
  DLSYS_RETURN_IF_ERROR(write_file_atomic(root_ + "/manifests/" + id + ".json", text));
  int64_t number = ids.empty() ? 1 : ids.back().first + 1;
  DLSYS_RETURN_IF_ERROR(
      write_file_atomic(ref_dir(name) + "/versions/" + std::to_string(number), id));
  if (!stats.is_null()) manifest["stats"] = std::move(stats);
  VersionInfo v;
  v.name = name;
  v.number = number;
  v.id = id;
  v.manifest = std::move(manifest);
  return v;
}

// The version whose manifest id starts with `prefix` (none: `id` stays empty).
static Status find_prefix(const std::vector<std::pair<int64_t, std::string>>& ids,
                          const std::string& name, const std::string& prefix, int64_t* number,
                          std::string* id) {
  for (auto& [k, v] : ids)
    if (v.rfind(prefix, 0) == 0) {
      if (!id->empty() && *id != v)
        return Status::Invalid("{}@{}: the id prefix is ambiguous; give more digits", name, prefix);
      *number = k;
      *id = v;
    }
  return Status::OK();
}

Result<VersionInfo> DatasetStore::resolve(const VersionRef& ref) const {
  // The name and the ref are checked here too: callers may build a VersionRef by hand.
  DLSYS_RETURN_IF_ERROR(check_name(ref.name));
  auto parsed = parse_ref(ref.ref);
  if (!parsed.ok()) return parsed.status().with_context("dataset '" + ref.name + "'");
  const ParsedRef& p = *parsed;
  DLSYS_ASSIGN_OR_RETURN(auto ids, version_ids(ref.name));
  if (ids.empty())
    return Status::NotFound("no dataset named '{}'; `dlsys data list` shows the datasets",
                            ref.name);
  auto describe = [&] { return fmt::format("{} has v1..v{}", ref.name, ids.back().first); };
  std::string id;
  int64_t number = 0;
  if (p.kind == ParsedRef::kLatest) {
    number = ids.back().first;
    id = ids.back().second;
  } else if (p.kind == ParsedRef::kNumber) {
    for (auto& [k, v] : ids)
      if (k == p.number) number = k, id = v;
    // An id prefix may be all digits ("123456"): tried when no version has that number.
    if (id.empty() && p.id_prefix) {
      DLSYS_RETURN_IF_ERROR(find_prefix(ids, ref.name, ref.ref, &number, &id));
    }
    if (id.empty())
      return Status::NotFound("{}@{}: no such version ({})", ref.name, ref.ref, describe());
  } else {
    std::string text;
    int err = 0;
    ReadError e = read_bounded(ref_dir(ref.name) + "/tags/" + p.tag, kRefFileLimit, &text, &err);
    if (e == ReadError::kNone) {
      // Exactly a manifest id, and one of this dataset's versions; never echoed (it may hold
      // anything someone wrote into the file).
      for (auto& [k, v] : ids)
        if (v == text) number = k, id = v;
      if (id.empty())
        return Status::Invalid(
            "tag '{}' of dataset '{}' points at no version; re-tag it (`dlsys data tag {}@vN {}`)",
            p.tag, ref.name, ref.name, p.tag);
    } else if (e != ReadError::kMissing) {
      return Status::Invalid(
          "tag '{}' of dataset '{}' points at no version ({}); re-tag it (`dlsys data tag {}@vN "
          "{}`)",
          p.tag, ref.name, describe_read_error(e, err), ref.name, p.tag);
    } else if (p.id_prefix) {
      DLSYS_RETURN_IF_ERROR(find_prefix(ids, ref.name, p.tag, &number, &id));
    }
    if (id.empty())
      return Status::NotFound("{}@{}: no such tag or version ({}; tags: {})", ref.name, p.tag,
                              describe(), fmt::join(tag_names(ref.name), ", "));
  }
  VersionInfo v;
  v.name = ref.name;
  v.number = number;
  v.id = id;
  DLSYS_ASSIGN_OR_RETURN(v.manifest, read_manifest(id, fmt::format("{}@v{}", ref.name, number)));
  v.tags = tags_of(ref.name, id);
  return v;
}

Result<std::vector<std::string>> DatasetStore::names() const {
  std::vector<std::string> out;
  for (const auto& n : list_dir(root_ + "/refs"))
    if (check_name(n).ok() && !list_dir(ref_dir(n) + "/versions").empty()) out.push_back(n);
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
    DLSYS_ASSIGN_OR_RETURN(v.manifest, read_manifest(id, fmt::format("{}@v{}", name, n)));
    v.tags = tags_of(name, id);
    out.push_back(std::move(v));
  }
  return out;
}

Status DatasetStore::tag(const VersionRef& ref, const std::string& tag) {
  std::string digits = !tag.empty() && tag[0] == 'v' ? tag.substr(1) : tag;
  if (tag == "latest" || all_digits(digits))
    return Status::Invalid("tag '{}' is reserved (latest and v<n> name versions); pick another",
                           printable(tag));
  if (!valid_tag_name(tag))
    return Status::Invalid(
        "tag '{}' must be 1-64 of letters, digits, '.', '_', '-', not starting "
        "with '.'",
        printable(tag));
  // Resolving first: a tag only ever points at an existing version's id.
  DLSYS_ASSIGN_OR_RETURN(VersionInfo v, resolve(ref));
  DLSYS_RETURN_IF_ERROR(make_dirs(ref_dir(ref.name) + "/tags"));
  return write_file_atomic(ref_dir(ref.name) + "/tags/" + tag, v.id);
}

Result<int64_t> DatasetStore::gc() {
  std::set<std::string> live_manifests, live_shards, live_stats;
  DLSYS_ASSIGN_OR_RETURN(auto all, names());
  for (const auto& name : all) {
    FileLock lock;
    DLSYS_RETURN_IF_ERROR(lock.lock(ref_dir(name) + "/lock"));
    DLSYS_ASSIGN_OR_RETURN(auto ids, version_ids(name));
    for (const auto& [n, id] : ids) {
      DLSYS_ASSIGN_OR_RETURN(json m, read_manifest(id, fmt::format("{}@v{}", name, n), false));
      live_manifests.insert(id);
      for (const auto& s : shard_ids(m)) live_shards.insert(s);
      if (m.contains("stats_id") && m["stats_id"].is_string())
        live_stats.insert(m["stats_id"].get<std::string>() + ".json");
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
  // Exact names: a temporary file left next to a live object is collected too.
  for (const auto& f : list_dir(root_ + "/stats"))
    if (!live_stats.count(f)) collect(root_ + "/stats/" + f);
  for (const auto& d : list_dir(root_ + "/shards"))
    for (const auto& f : list_dir(root_ + "/shards/" + d))
      if (!live_shards.count(f)) collect(root_ + "/shards/" + d + "/" + f);
  return freed;
}

}  // namespace dlsys::data
