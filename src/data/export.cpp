#include "data/export.h"

#include <cstdio>
#include <cstring>
#include <limits>

#include "core/file_util.h"
#include "data/push.h"
#include "data/shard.h"

namespace dlsys::data {

namespace {

// A file written through a temporary name and committed at the end.
class TmpFile {
 public:
  explicit TmpFile(std::string path)
      : path_(std::move(path)), tmp_(path_ + ".tmp-" + random_hex(4)) {}
  ~TmpFile() {
    if (f_) std::fclose(f_);
    if (!committed_) std::remove(tmp_.c_str());
  }
  Status open() {
    f_ = std::fopen(tmp_.c_str(), "wb");
    if (!f_) return Status::IOError("cannot create {}: {}", tmp_, strerror(errno));
    return Status::OK();
  }
  Status write(const void* p, size_t n) {
    if (n && std::fwrite(p, 1, n, f_) != n)
      return Status::IOError("write to {} failed (disk full?)", tmp_);
    return Status::OK();
  }
  Status write(const std::string& s) { return write(s.data(), s.size()); }
  Status commit() {
    if (std::fflush(f_) != 0) return Status::IOError("write to {} failed", tmp_);
    std::fclose(f_);
    f_ = nullptr;
    DLSYS_RETURN_IF_ERROR(commit_file(tmp_, path_));
    committed_ = true;
    return Status::OK();
  }

 private:
  std::string path_, tmp_;
  FILE* f_ = nullptr;
  bool committed_ = false;
};

std::string npy_header(const char* descr, const std::vector<int64_t>& shape) {
  std::string dims;
  for (size_t i = 0; i < shape.size(); ++i) dims += std::to_string(shape[i]) + ",";
  if (shape.size() > 1) dims.pop_back();
  std::string dict =
      fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': ({}), }}", descr, dims);
  size_t total = 10 + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict += '\n';
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  uint16_t len = static_cast<uint16_t>(dict.size());
  out.append(reinterpret_cast<const char*>(&len), 2);
  return out + dict;
}

}  // namespace

int64_t split_rows(const VersionInfo& v, const std::string& split) {
  if (split.empty()) return v.manifest.value("rows", int64_t(0));
  const json& s = v.manifest.value("split", json::object());
  if (!s.contains("rows")) return 0;
  return s["rows"].value(split, int64_t(0));
}

Status for_each_batch(const DatasetStore& store, const VersionInfo& v, const std::string& split,
                      const std::vector<std::string>& columns,
                      const std::function<Status(const RowBatch&)>& fn) {
  return for_each_shard(store, v, split, columns, nullptr,
                        [&fn](int64_t, const RowBatch& b) { return fn(b); });
}

std::string csv_field(const std::string& v) {
  if (v.find_first_of(",\"\n\r") == std::string::npos) return v;
  std::string out = "\"";
  for (char c : v) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

void append_csv_header(const RowBatch& b, std::string* out) {
  for (size_t c = 0; c < b.schema.columns.size(); ++c)
    *out += (c ? "," : "") + csv_field(b.schema.columns[c].name);
  *out += '\n';
}

void append_csv_row(const RowBatch& b, int64_t r, std::string* out) {
  for (size_t c = 0; c < b.columns.size(); ++c) {
    if (c) *out += ',';
    *out += csv_field(b.value_text(r, static_cast<int>(c)));
  }
  *out += '\n';
}

std::string csv_text(const RowBatch& b, bool header, int64_t begin, int64_t end) {
  std::string out;
  if (header) append_csv_header(b, &out);
  if (end < 0 || end > b.rows) end = b.rows;
  for (int64_t r = begin; r < end; ++r) append_csv_row(b, r, &out);
  return out;
}

Status for_each_shard(const DatasetStore& store, const VersionInfo& v, const std::string& split,
                      const std::vector<std::string>& columns,
                      const std::function<bool(int64_t shard)>& wanted,
                      const std::function<Status(int64_t shard, const RowBatch&)>& fn) {
  DLSYS_ASSIGN_OR_RETURN(Schema schema, Schema::from_json(v.manifest.at("schema")));
  std::vector<std::string> cols = columns;
  if (cols.empty())
    for (const auto& c : schema.columns)
      if (c.name.rfind("__", 0) != 0) cols.push_back(c.name);
  int64_t sid = -1;
  if (!split.empty()) {
    DLSYS_ASSIGN_OR_RETURN(sid, split_id(split));
    if (schema.index("__split") < 0) return Status::Invalid("{} has no split column", v.label());
    cols.push_back("__split");
  }
  int64_t index = -1;
  for (const auto& s : v.manifest.at("shards")) {
    ++index;
    if (wanted && !wanted(index)) continue;
    std::string id = s.at("id").get<std::string>();
    std::string w = fmt::format("shard {} of {}", id.substr(0, 12), v.label());
    DLSYS_ASSIGN_OR_RETURN(RowBatch b, read_shard(store.shard_path(id), cols, w));
    if (sid >= 0) {
      RowBatch kept = RowBatch::empty(b.schema);
      const auto& sp = b.columns.back().i64;
      for (int64_t r = 0; r < b.rows; ++r)
        if (sp[r] == sid) kept.append_row(b, r);
      kept.schema.columns.pop_back();
      kept.columns.pop_back();
      DLSYS_RETURN_IF_ERROR(fn(index, kept));
    } else {
      DLSYS_RETURN_IF_ERROR(fn(index, b));
    }
  }
  return Status::OK();
}

Status export_csv(const DatasetStore& store, const VersionInfo& v, const std::string& split,
                  const std::string& path, const std::function<void(int64_t rows)>& progress) {
  TmpFile f(path);
  DLSYS_RETURN_IF_ERROR(f.open());
  bool header = false;
  int64_t rows = 0;
  std::string buf;
  DLSYS_RETURN_IF_ERROR(for_each_batch(store, v, split, {}, [&](const RowBatch& b) -> Status {
    if (!header) {
      append_csv_header(b, &buf);
      header = true;
    }
    for (int64_t r = 0; r < b.rows; ++r) {
      append_csv_row(b, r, &buf);
      if (buf.size() > (1 << 20)) {
        DLSYS_RETURN_IF_ERROR(f.write(buf));
        buf.clear();
      }
    }
    rows += b.rows;
    if (progress) progress(rows);
    return Status::OK();
  }));
  DLSYS_RETURN_IF_ERROR(f.write(buf));
  return f.commit();
}

Result<std::vector<std::string>> export_npy(const DatasetStore& store, const VersionInfo& v,
                                            const std::string& split, const std::string& dir,
                                            const std::function<void(int64_t rows)>& progress) {
  DLSYS_ASSIGN_OR_RETURN(Schema schema, Schema::from_json(v.manifest.at("schema")));
  DLSYS_RETURN_IF_ERROR(make_dirs(dir));
  int64_t n = split_rows(v, split);
  std::vector<std::string> names;
  std::vector<std::unique_ptr<TmpFile>> files;
  std::vector<std::string> written;
  for (const auto& c : schema.columns) {
    if (c.name.rfind("__", 0) == 0 || c.type == ColumnType::kString) continue;
    std::string path = dir + "/" + c.name + ".npy";
    auto f = std::make_unique<TmpFile>(path);
    DLSYS_RETURN_IF_ERROR(f->open());
    std::vector<int64_t> shape = {n};
    shape.insert(shape.end(), c.shape.begin(), c.shape.end());
    const char* descr = c.type == ColumnType::kInt64      ? "<i8"
                        : c.type == ColumnType::kFloat64  ? "<f8"
                        : c.type == ColumnType::kTensorU8 ? "|u1"
                                                          : "<f4";
    DLSYS_RETURN_IF_ERROR(f->write(npy_header(descr, shape)));
    names.push_back(c.name);
    files.push_back(std::move(f));
    written.push_back(path);
  }
  if (names.empty()) return Status::Invalid("{} has no numeric or tensor columns", v.label());
  int64_t rows = 0;
  DLSYS_RETURN_IF_ERROR(for_each_batch(store, v, split, names, [&](const RowBatch& b) -> Status {
    for (size_t c = 0; c < b.columns.size(); ++c) {
      const ColumnData& d = b.columns[c];
      if (!d.valid.empty())
        for (int64_t r = 0; r < b.rows; ++r)
          if (!d.valid[r] && b.schema.columns[c].type == ColumnType::kInt64)
            return Status::Invalid(
                "column '{}' has nulls, which .npy int64 cannot hold; pull "
                "as csv",
                b.schema.columns[c].name);
      switch (b.schema.columns[c].type) {
        case ColumnType::kInt64:
          DLSYS_RETURN_IF_ERROR(files[c]->write(d.i64.data(), d.i64.size() * 8));
          break;
        case ColumnType::kFloat64: {
          std::vector<double> vals = d.f64;
          for (int64_t r = 0; r < b.rows; ++r)
            if (d.is_null(r)) vals[r] = std::numeric_limits<double>::quiet_NaN();
          DLSYS_RETURN_IF_ERROR(files[c]->write(vals.data(), vals.size() * 8));
          break;
        }
        default:
          DLSYS_RETURN_IF_ERROR(files[c]->write(d.raw.data(), d.raw.size()));
      }
    }
    rows += b.rows;
    if (progress) progress(rows);
    return Status::OK();
  }));
  if (rows != n)
    return Status::Internal("{}: read {} rows where the manifest says {}", v.label(), rows, n);
  for (auto& f : files) DLSYS_RETURN_IF_ERROR(f->commit());
  return written;
}

}  // namespace dlsys::data
