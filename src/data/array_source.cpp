// NPY and IDX (MNIST) ingest: a features array [N, ...] and an optional labels array [N],
// streamed from disk a batch of rows at a time. Features with one value per row become a
// scalar column "x"; larger rows become a tensor column (uint8 stays uint8, other types become
// float32). Labels become the column "label" (int64 for integer arrays, else float64).
#include <fcntl.h>
#include <unistd.h>

#include <cstring>

#include "data/ingest.h"
#include "tensor/npy.h"

namespace dlsys::data {

namespace {

enum class Elem { kU8, kI8, kI16, kI32, kI64, kF32, kF64, kBool };

int elem_size(Elem e) {
  switch (e) {
    case Elem::kU8:
    case Elem::kI8:
    case Elem::kBool:
      return 1;
    case Elem::kI16:
      return 2;
    case Elem::kI32:
    case Elem::kF32:
      return 4;
    default:
      return 8;
  }
}
bool elem_is_int(Elem e) {
  return e != Elem::kF32 && e != Elem::kF64;
}

// One array file: where its data starts, its element type and byte order, and its shape.
struct ArrayFile {
  std::string path;
  int fd = -1;
  uint64_t data_offset = 0;
  Elem elem = Elem::kF32;
  bool big_endian = false;  // IDX stores multi-byte values big-endian
  std::vector<int64_t> shape;
  ~ArrayFile() {
    if (fd >= 0) ::close(fd);
  }
  int64_t rows() const { return shape.empty() ? 0 : shape[0]; }
  int64_t row_elems() const {
    int64_t n = 1;
    for (size_t i = 1; i < shape.size(); ++i) n *= shape[i];
    return n;
  }
  Status open_file() {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Status::IOError("cannot open {}: {}", path, strerror(errno));
    return Status::OK();
  }
  uint64_t file_size() const { return static_cast<uint64_t>(::lseek(fd, 0, SEEK_END)); }
  Status pread_all(uint64_t off, size_t len, void* dst) const {
    size_t done = 0;
    while (done < len) {
      ssize_t n = ::pread(fd, static_cast<char*>(dst) + done, len - done, off + done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return Status::IOError("{}: short read at byte {}", path, off + done);
      done += n;
    }
    return Status::OK();
  }
  Status check_size() const {
    uint64_t need = data_offset + uint64_t(rows()) * row_elems() * elem_size(elem);
    uint64_t have = file_size();
    if (have != need)
      return Status::Invalid("{}: {} bytes, but its header's shape needs {}{}", path, have, need,
                             have < need ? " (file truncated?)" : "");
    return Status::OK();
  }
  // Element i of a raw row buffer as double.
  double get(const uint8_t* p, int64_t i) const {
    int sz = elem_size(elem);
    uint8_t b[8];
    std::memcpy(b, p + i * sz, sz);
    if (big_endian) std::reverse(b, b + sz);
    switch (elem) {
      case Elem::kU8:
        return b[0];
      case Elem::kBool:
        return b[0] != 0;
      case Elem::kI8:
        return static_cast<int8_t>(b[0]);
      case Elem::kI16: {
        int16_t v;
        std::memcpy(&v, b, 2);
        return v;
      }
      case Elem::kI32: {
        int32_t v;
        std::memcpy(&v, b, 4);
        return v;
      }
      case Elem::kI64: {
        int64_t v;
        std::memcpy(&v, b, 8);
        return double(v);
      }
      case Elem::kF32: {
        float v;
        std::memcpy(&v, b, 4);
        return v;
      }
      case Elem::kF64: {
        double v;
        std::memcpy(&v, b, 8);
        return v;
      }
    }
    return 0;
  }
  int64_t get_int(const uint8_t* p, int64_t i) const {
    if (elem == Elem::kI64 && !big_endian) {
      int64_t v;
      std::memcpy(&v, p + i * 8, 8);
      return v;
    }
    return static_cast<int64_t>(get(p, i));
  }
};

Status open_npy_file(const std::string& path, ArrayFile* f) {
  f->path = path;
  DLSYS_RETURN_IF_ERROR(f->open_file());
  std::string head(std::min<uint64_t>(f->file_size(), 1 << 16), '\0');
  DLSYS_RETURN_IF_ERROR(f->pread_all(0, head.size(), head.data()));
  DLSYS_ASSIGN_OR_RETURN(NpyHeader h, npy_parse_header(head, path));
  static const std::pair<const char*, Elem> kTypes[] = {
      {"|u1", Elem::kU8},  {"u1", Elem::kU8},   {"|i1", Elem::kI8},  {"i1", Elem::kI8},
      {"<i2", Elem::kI16}, {"<i4", Elem::kI32}, {"<i8", Elem::kI64}, {"<f4", Elem::kF32},
      {"<f8", Elem::kF64}, {"|b1", Elem::kBool}};
  bool found = false;
  for (auto& [d, e] : kTypes)
    if (h.descr == d) f->elem = e, found = true;
  if (!found)
    return Status::Unsupported(
        "{}: NumPy dtype '{}' is not supported; use uint8, int8-64, float32, float64 or bool "
        "(little-endian)",
        path, h.descr);
  if (h.shape.empty()) return Status::Invalid("{}: a 0-d array has no rows", path);
  f->shape = h.shape;
  f->data_offset = h.data_offset;
  return f->check_size();
}

Status open_idx_file(const std::string& path, ArrayFile* f) {
  f->path = path;
  DLSYS_RETURN_IF_ERROR(f->open_file());
  uint8_t m[4];
  if (f->file_size() < 4) return Status::Invalid("{}: too short for an IDX file", path);
  DLSYS_RETURN_IF_ERROR(f->pread_all(0, 4, m));
  if (m[0] == 0x1f && m[1] == 0x8b)
    return Status::Invalid("{}: the file is gzip-compressed; decompress it first (gunzip {})", path,
                           path);
  if (m[0] != 0 || m[1] != 0)
    return Status::Invalid("{}: not an IDX file (the magic starts with 0x{:02x}{:02x}, not 0000)",
                           path, m[0], m[1]);
  switch (m[2]) {
    case 0x08:
      f->elem = Elem::kU8;
      break;
    case 0x09:
      f->elem = Elem::kI8;
      break;
    case 0x0B:
      f->elem = Elem::kI16;
      break;
    case 0x0C:
      f->elem = Elem::kI32;
      break;
    case 0x0D:
      f->elem = Elem::kF32;
      break;
    case 0x0E:
      f->elem = Elem::kF64;
      break;
    default:
      return Status::Invalid("{}: IDX type code 0x{:02x} is unknown", path, m[2]);
  }
  int nd = m[3];
  if (nd < 1 || nd > 8) return Status::Invalid("{}: IDX rank {} is not 1..8", path, nd);
  if (f->file_size() < 4 + 4u * nd) return Status::Invalid("{}: truncated IDX header", path);
  std::vector<uint8_t> dims(4 * nd);
  DLSYS_RETURN_IF_ERROR(f->pread_all(4, dims.size(), dims.data()));
  for (int i = 0; i < nd; ++i) {
    int64_t d = (int64_t(dims[4 * i]) << 24) | (dims[4 * i + 1] << 16) | (dims[4 * i + 2] << 8) |
                dims[4 * i + 3];
    f->shape.push_back(d);
  }
  f->big_endian = true;
  f->data_offset = 4 + 4 * nd;
  return f->check_size();
}

class ArraySource : public RowSource {
 public:
  ArraySource(std::string format, std::string feature_name)
      : format_(std::move(format)), feature_name_(std::move(feature_name)) {}

  Status init(bool has_labels) {
    has_labels_ = has_labels;
    if (has_labels && labels_.rows() != x_.rows())
      return Status::Invalid("{} has {} rows but {} has {}", x_.path, x_.rows(), labels_.path,
                             labels_.rows());
    if (has_labels && labels_.shape.size() != 1)
      return Status::Invalid("{}: labels must be one-dimensional [N], not rank {}", labels_.path,
                             labels_.shape.size());
    ColumnSchema c;
    c.name = feature_name_;
    if (x_.shape.size() == 1) {
      c.type = elem_is_int(x_.elem) ? ColumnType::kInt64 : ColumnType::kFloat64;
    } else {
      c.type = x_.elem == Elem::kU8 ? ColumnType::kTensorU8 : ColumnType::kTensorF32;
      c.shape.assign(x_.shape.begin() + 1, x_.shape.end());
    }
    schema_.columns.push_back(c);
    if (has_labels) {
      ColumnSchema l;
      l.name = "label";
      l.type = elem_is_int(labels_.elem) ? ColumnType::kInt64 : ColumnType::kFloat64;
      schema_.columns.push_back(l);
    }
    return Status::OK();
  }

  const Schema& schema() const override { return schema_; }
  int64_t done() const override { return row_; }
  int64_t total() const override { return x_.rows(); }
  json describe() const override {
    json j = {{"format", format_}, {"path", x_.path}, {"rows", x_.rows()}};
    if (has_labels_) j["labels"] = labels_.path;
    return j;
  }

  Result<SourceBatch> next(int64_t max_rows, int64_t max_bytes) override {
    SourceBatch out;
    out.rows = RowBatch::empty(schema_);
    int64_t row_bytes = x_.row_elems() * elem_size(x_.elem);
    int64_t n = std::min(max_rows, x_.rows() - row_);
    n = std::min<int64_t>(n, std::max<int64_t>(1, max_bytes / std::max<int64_t>(1, row_bytes)));
    if (n <= 0) return out;
    std::vector<uint8_t> raw(n * row_bytes);
    DLSYS_RETURN_IF_ERROR(x_.pread_all(x_.data_offset + row_ * row_bytes, raw.size(), raw.data()));
    ColumnData& d = out.rows.columns[0];
    const ColumnSchema& cs = schema_.columns[0];
    int64_t k = x_.row_elems();
    switch (cs.type) {
      case ColumnType::kInt64:
        for (int64_t r = 0; r < n; ++r) d.i64.push_back(x_.get_int(raw.data(), r));
        break;
      case ColumnType::kFloat64:
        for (int64_t r = 0; r < n; ++r) d.f64.push_back(x_.get(raw.data(), r));
        break;
      case ColumnType::kTensorU8:
        d.raw = std::move(raw);
        break;
      default: {
        d.raw.resize(n * k * 4);
        float* p = reinterpret_cast<float*>(d.raw.data());
        if (x_.elem == Elem::kF32 && !x_.big_endian) {
          std::memcpy(p, raw.data(), raw.size());
        } else {
          for (int64_t i = 0; i < n * k; ++i) p[i] = static_cast<float>(x_.get(raw.data(), i));
        }
      }
    }
    if (has_labels_) {
      int sz = elem_size(labels_.elem);
      std::vector<uint8_t> lab(n * sz);
      DLSYS_RETURN_IF_ERROR(
          labels_.pread_all(labels_.data_offset + row_ * sz, lab.size(), lab.data()));
      ColumnData& l = out.rows.columns[1];
      for (int64_t r = 0; r < n; ++r) {
        if (schema_.columns[1].type == ColumnType::kInt64)
          l.i64.push_back(labels_.get_int(lab.data(), r));
        else
          l.f64.push_back(labels_.get(lab.data(), r));
      }
    }
    for (int64_t r = 0; r < n; ++r) out.lines.push_back(row_ + r + 1);
    out.rows.rows = n;
    row_ += n;
    return out;
  }

  ArrayFile x_, labels_;

 private:
  std::string format_, feature_name_;
  bool has_labels_ = false;
  int64_t row_ = 0;
  Schema schema_;
};

}  // namespace

Result<std::unique_ptr<RowSource>> open_npy(const std::string& path, const IngestOptions& o) {
  auto src = std::make_unique<ArraySource>("npy", "x");
  DLSYS_RETURN_IF_ERROR(open_npy_file(path, &src->x_));
  if (!o.labels_path.empty()) DLSYS_RETURN_IF_ERROR(open_npy_file(o.labels_path, &src->labels_));
  DLSYS_RETURN_IF_ERROR(src->init(!o.labels_path.empty()));
  return std::unique_ptr<RowSource>(std::move(src));
}

Result<std::unique_ptr<RowSource>> open_idx(const std::string& path, const IngestOptions& o) {
  auto src = std::make_unique<ArraySource>("idx", "image");
  DLSYS_RETURN_IF_ERROR(open_idx_file(path, &src->x_));
  if (!o.labels_path.empty()) DLSYS_RETURN_IF_ERROR(open_idx_file(o.labels_path, &src->labels_));
  DLSYS_RETURN_IF_ERROR(src->init(!o.labels_path.empty()));
  return std::unique_ptr<RowSource>(std::move(src));
}

}  // namespace dlsys::data
