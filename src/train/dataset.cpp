#include "train/dataset.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "core/file_util.h"
#include "tensor/npy.h"

namespace dlsys::train {

namespace {

constexpr size_t kMaxFieldBytes = 1 << 16;

// Splits one CSV record starting at `pos` into fields; advances `pos` past the record's line
// end. Quoted fields may hold commas, doubled quotes and newlines.
Status parse_record(const std::string& text, size_t* pos, int64_t* line,
                    std::vector<std::string>* fields, const std::string& where) {
  fields->clear();
  std::string cur;
  bool quoted = false, was_quoted = false;
  int64_t start_line = *line;
  size_t i = *pos;
  for (; i < text.size(); ++i) {
    char c = text[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          cur += '"';
          ++i;
        } else {
          quoted = false;
        }
      } else {
        if (c == '\n') ++*line;
        cur += c;
      }
    } else if (c == '"') {
      if (!cur.empty())
        return Status::Invalid("{}:{}:{}: a quote in the middle of a field", where, *line,
                               fields->size() + 1);
      quoted = was_quoted = true;
    } else if (c == ',') {
      fields->push_back(std::move(cur));
      cur.clear();
      was_quoted = false;
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      ++i;
      break;
    } else {
      cur += c;
    }
    if (cur.size() > kMaxFieldBytes)
      return Status::Invalid("{}:{}:{}: field longer than {} bytes", where, *line,
                             fields->size() + 1, kMaxFieldBytes);
  }
  if (quoted)
    return Status::Invalid("{}:{}: a quoted field is not closed before the end of the file", where,
                           start_line);
  (void)was_quoted;
  fields->push_back(std::move(cur));
  *pos = i;
  ++*line;
  return Status::OK();
}

bool parse_double(const std::string& s, double* v) {
  size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  if (b == std::string::npos) return false;
  std::string t = s.substr(b, e - b + 1);
  char* end = nullptr;
  *v = std::strtod(t.c_str(), &end);
  return end == t.c_str() + t.size() && std::isfinite(*v);
}

}  // namespace

Result<Dataset> read_csv(const std::string& path, const CsvOptions& o) {
  DLSYS_ASSIGN_OR_RETURN(std::string text, read_file(path));
  std::vector<float> feats;
  std::vector<double> labels;
  std::vector<std::string> fields;
  size_t pos = 0, ncols = 0;
  int64_t line = 1, rows = 0;
  bool first = true;
  while (pos < text.size()) {
    int64_t rec_line = line;
    DLSYS_RETURN_IF_ERROR(parse_record(text, &pos, &line, &fields, path));
    if (fields.size() == 1 && fields[0].find_first_not_of(" \t") == std::string::npos) continue;
    if (first) {
      first = false;
      double v;
      bool numeric = std::all_of(fields.begin(), fields.end(),
                                 [&](const std::string& f) { return parse_double(f, &v); });
      if (o.header || !numeric) continue;  // a header line
    }
    if (ncols == 0) {
      ncols = fields.size();
      if (ncols < 2)
        return Status::Invalid(
            "{}:{}: a training CSV needs at least one feature and a label "
            "column; this row has {} field",
            path, rec_line, ncols);
    }
    if (fields.size() != ncols)
      return Status::Invalid("{}:{}: {} fields, but the first data row has {}", path, rec_line,
                             fields.size(), ncols);
    int lc = o.label_column < 0 ? static_cast<int>(ncols) + o.label_column : o.label_column;
    if (lc < 0 || lc >= static_cast<int>(ncols))
      return Status::Invalid("label column {} is outside the {} columns of {}", o.label_column,
                             ncols, path);
    for (size_t c = 0; c < ncols; ++c) {
      double v;
      if (!parse_double(fields[c], &v))
        return Status::Invalid("{}:{}:{}: '{}' is not a number{}", path, rec_line, c + 1,
                               fields[c].substr(0, 40),
                               fields[c].empty() ? " (missing value: fill or drop the row)" : "");
      if (static_cast<int>(c) == lc) {
        if (o.labels_as_classes && (v != std::floor(v) || v < 0))
          return Status::Invalid(
              "{}:{}:{}: label '{}' is not a class id (a non-negative "
              "integer); for regression targets set labels_as_classes=false",
              path, rec_line, c + 1, fields[c]);
        labels.push_back(v);
      } else {
        feats.push_back(static_cast<float>(v));
      }
    }
    ++rows;
  }
  if (rows == 0) return Status::Invalid("{} has no data rows", path);
  Dataset d;
  int64_t nf = static_cast<int64_t>(ncols) - 1;
  d.features = Tensor::empty(DType::kF32, {rows, nf});
  std::memcpy(d.features.data(), feats.data(), feats.size() * sizeof(float));
  if (o.labels_as_classes) {
    d.labels = Tensor::empty(DType::kI64, {rows});
    for (int64_t i = 0; i < rows; ++i)
      d.labels.data_as<int64_t>()[i] = static_cast<int64_t>(labels[i]);
  } else {
    d.labels = Tensor::empty(DType::kF32, {rows});
    for (int64_t i = 0; i < rows; ++i) d.labels.data_as<float>()[i] = static_cast<float>(labels[i]);
  }
  return d;
}

Result<Dataset> read_npy(const std::string& features_path, const std::string& labels_path) {
  DLSYS_ASSIGN_OR_RETURN(Tensor x, npy_read(features_path));
  DLSYS_ASSIGN_OR_RETURN(Tensor y, npy_read(labels_path));
  if (x.rank() < 1 || y.rank() < 1)
    return Status::Invalid(
        "features and labels need a first (sample) dimension: {} has shape "
        "rank {}, {} rank {}",
        features_path, x.rank(), labels_path, y.rank());
  if (x.dim(0) != y.dim(0))
    return Status::Invalid("{} has {} samples but {} has {}", features_path, x.dim(0), labels_path,
                           y.dim(0));
  Dataset d;
  d.features = Tensor::empty(DType::kF32, x.shape());
  for (int64_t i = 0; i < x.numel(); ++i)
    d.features.data_as<float>()[i] = static_cast<float>(x.get_f64(i));
  if (dtype_is_float(y.dtype())) {
    d.labels = Tensor::empty(DType::kF32, y.shape());
    for (int64_t i = 0; i < y.numel(); ++i)
      d.labels.data_as<float>()[i] = static_cast<float>(y.get_f64(i));
  } else {
    d.labels = Tensor::empty(DType::kI64, y.shape());
    for (int64_t i = 0; i < y.numel(); ++i) d.labels.data_as<int64_t>()[i] = y.get_i64(i);
  }
  return d;
}

namespace {

uint32_t be32(const std::string& b, size_t off) {
  return (uint32_t(uint8_t(b[off])) << 24) | (uint32_t(uint8_t(b[off + 1])) << 16) |
         (uint32_t(uint8_t(b[off + 2])) << 8) | uint32_t(uint8_t(b[off + 3]));
}

// Parses an IDX file of unsigned bytes; returns its dims and the offset of the data.
Status parse_idx(const std::string& b, const std::string& where, std::vector<int64_t>* dims,
                 size_t* data_off) {
  if (b.size() < 4)
    return Status::Invalid("{}: {} bytes is too short for an IDX file", where, b.size());
  if (b[0] != 0 || b[1] != 0)
    return Status::Invalid(
        "{}: not an IDX file (the magic number must start with two zero bytes; "
        "is it still gzip-compressed?)",
        where);
  if (uint8_t(b[2]) != 0x08)
    return Status::Unsupported(
        "{}: IDX element type 0x{:02x}; only unsigned bytes (0x08) are "
        "supported",
        where, uint8_t(b[2]));
  int nd = uint8_t(b[3]);
  if (nd < 1 || nd > 4) return Status::Invalid("{}: IDX rank {} is out of range 1..4", where, nd);
  size_t off = 4 + 4 * static_cast<size_t>(nd);
  if (b.size() < off) return Status::Invalid("{}: the IDX header is truncated", where);
  uint64_t n = 1;
  for (int i = 0; i < nd; ++i) {
    uint32_t d = be32(b, 4 + 4 * static_cast<size_t>(i));
    dims->push_back(d);
    n *= d;
    if (n > (uint64_t{1} << 34)) return Status::Invalid("{}: IDX dimensions are too large", where);
  }
  if (b.size() - off != n)
    return Status::Invalid("{}: IDX header says {} bytes of data, the file has {}{}", where, n,
                           b.size() - off, b.size() - off < n ? " (truncated?)" : "");
  *data_off = off;
  return Status::OK();
}

}  // namespace

Result<Dataset> read_idx(const std::string& images_path, const std::string& labels_path) {
  DLSYS_ASSIGN_OR_RETURN(std::string ib, read_file(images_path));
  DLSYS_ASSIGN_OR_RETURN(std::string lb, read_file(labels_path));
  std::vector<int64_t> idims, ldims;
  size_t ioff = 0, loff = 0;
  DLSYS_RETURN_IF_ERROR(parse_idx(ib, images_path, &idims, &ioff));
  DLSYS_RETURN_IF_ERROR(parse_idx(lb, labels_path, &ldims, &loff));
  if (ldims.size() != 1)
    return Status::Invalid("{}: labels must be a 1-D IDX file, this one has rank {}", labels_path,
                           ldims.size());
  if (idims[0] != ldims[0])
    return Status::Invalid("{} has {} images but {} has {} labels", images_path, idims[0],
                           labels_path, ldims[0]);
  Dataset d;
  d.features = Tensor::empty(DType::kF32, Shape(idims.begin(), idims.end()));
  float* f = d.features.data_as<float>();
  for (int64_t i = 0; i < d.features.numel(); ++i) f[i] = uint8_t(ib[ioff + i]) / 255.0f;
  d.labels = Tensor::empty(DType::kI64, {ldims[0]});
  for (int64_t i = 0; i < ldims[0]; ++i) d.labels.data_as<int64_t>()[i] = uint8_t(lb[loff + i]);
  return d;
}

namespace {

Tensor gather_rows(const Tensor& t, const std::vector<int64_t>& rows) {
  Shape s = t.shape();
  s[0] = static_cast<int64_t>(rows.size());
  Tensor out = Tensor::empty(t.dtype(), s);
  size_t row_bytes = t.dim(0) ? t.nbytes() / static_cast<size_t>(t.dim(0)) : 0;
  for (size_t i = 0; i < rows.size(); ++i)
    std::memcpy(static_cast<char*>(out.data()) + i * row_bytes,
                static_cast<const char*>(t.data()) + static_cast<size_t>(rows[i]) * row_bytes,
                row_bytes);
  return out;
}

}  // namespace

Dataset slice(const Dataset& d, int64_t begin, int64_t end) {
  std::vector<int64_t> rows(static_cast<size_t>(end - begin));
  std::iota(rows.begin(), rows.end(), begin);
  return {gather_rows(d.features, rows), gather_rows(d.labels, rows)};
}

Status split(const Dataset& d, double validation_fraction, uint64_t seed, Dataset* train,
             Dataset* validation) {
  if (!(validation_fraction >= 0 && validation_fraction < 1))
    return Status::Invalid("validation fraction {} must be in [0, 1)", validation_fraction);
  int64_t n = d.size();
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  int64_t nv = static_cast<int64_t>(std::llround(n * validation_fraction));
  std::vector<int64_t> v(order.begin(), order.begin() + nv), t(order.begin() + nv, order.end());
  std::sort(v.begin(), v.end());
  std::sort(t.begin(), t.end());
  *train = {gather_rows(d.features, t), gather_rows(d.labels, t)};
  *validation = {gather_rows(d.features, v), gather_rows(d.labels, v)};
  return Status::OK();
}

}  // namespace dlsys::train
