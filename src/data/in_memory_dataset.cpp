#include "data/in_memory_dataset.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "data/ingest.h"

namespace dlsys::data {

namespace {

std::string extension_format(const std::string& path) {
  size_t dot = path.rfind('.');
  std::string ext = dot == std::string::npos ? "" : path.substr(dot + 1);
  if (ext == "npy") return "npy";
  if (ext == "idx" || path.find("-ubyte") != std::string::npos) return "idx";
  return "csv";
}

// Every row of a source, with each row's line (or item) number for messages.
struct AllRows {
  RowBatch rows;
  std::vector<int64_t> lines;
};

// Reads every row of `src`; the first refused row fails the whole read (training needs all).
Result<AllRows> read_all(RowSource& src, const std::string& path) {
  AllRows all{RowBatch::empty(src.schema()), {}};
  for (;;) {
    DLSYS_ASSIGN_OR_RETURN(SourceBatch b, src.next(1 << 16, 64 << 20));
    if (!b.bad.empty()) {
      const BadRow& r = b.bad.front();
      return Status::Invalid("{}:{}{}: {}", path, r.line,
                             r.column.empty() ? "" : " (column '" + r.column + "')", r.reason);
    }
    if (b.rows.rows == 0) break;
    for (int64_t r = 0; r < b.rows.rows; ++r) all.rows.append_row(b.rows, r);
    all.lines.insert(all.lines.end(), b.lines.begin(), b.lines.end());
  }
  return all;
}

// Why column `c` (not numeric) cannot be a feature: names the first value that is not a number.
Status not_numeric(const AllRows& all, int c, const std::string& path) {
  const ColumnSchema& cs = all.rows.schema.columns[c];
  const ColumnData& d = all.rows.columns[c];
  if (cs.type == ColumnType::kString)
    for (int64_t r = 0; r < all.rows.rows; ++r) {
      if (d.is_null(r)) continue;
      std::string v(d.str(r));
      char* end = nullptr;
      std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0')
        return Status::Invalid(
            "{}:{}:{}: '{}' is not a number (column '{}'); fix the value, or, when the column "
            "holds categories, add `- onehot: [{}]` to data.preprocess",
            path, all.lines[r], c + 1, v, cs.name, cs.name);
    }
  return Status::Invalid(
      "{}: column {} ('{}') is {}, not a number; a training CSV holds numbers "
      "only",
      path, c + 1, cs.name, column_type_name(cs.type));
}

// The numeric value of scalar (r, c), or an error naming the line when it is missing.
Result<double> scalar(const AllRows& all, int c, int64_t r, const std::string& path) {
  const RowBatch& b = all.rows;
  const ColumnData& d = b.columns[c];
  if (d.is_null(r))
    return Status::Invalid(
        "{}:{}:{}: missing value in column '{}'; in the training spec, set `data.nulls: drop` "
        "to leave such rows out, or add an impute step to data.preprocess (`- impute: median`)",
        path, all.lines[r], c + 1, b.schema.columns[c].name);
  return b.schema.columns[c].type == ColumnType::kInt64 ? static_cast<double>(d.i64[r]) : d.f64[r];
}

}  // namespace

Result<InMemoryDataset> read_file_dataset(const std::string& path, const FileDatasetOptions& o) {
  std::string format = o.format.empty() ? extension_format(path) : o.format;
  if (format != "csv" && format != "npy" && format != "idx")
    return Status::Invalid("unknown data format '{}': use csv, npy or idx", format);
  if (format != "csv" && o.labels_path.empty())
    return Status::Invalid("{}: {} features need a labels file beside them", path, format);
  IngestOptions io;
  io.header = o.header;
  io.labels_path = o.labels_path;
  DLSYS_ASSIGN_OR_RETURN(std::unique_ptr<RowSource> src, open_source(path, format, io));
  DLSYS_ASSIGN_OR_RETURN(AllRows all, read_all(*src, path));
  const Schema& schema = all.rows.schema;
  const int64_t n = all.rows.rows;
  if (n == 0) return Status::Invalid("{} has no data rows", path);

  // Which column is the label, which are features.
  int label = -1;
  std::vector<int> features;
  if (format == "csv") {
    int ncols = static_cast<int>(schema.columns.size());
    if (ncols < 2)
      return Status::Invalid(
          "{}: a training CSV needs at least one feature and a label, this "
          "one has {} column(s)",
          path, ncols);
    label = o.label_column < 0 ? ncols + o.label_column : o.label_column;
    if (label < 0 || label >= ncols)
      return Status::Invalid("label column {} is outside the {} columns of {}", o.label_column,
                             ncols, path);
    for (int c = 0; c < ncols; ++c) {
      if (c == label) continue;
      const ColumnSchema& cs = schema.columns[c];
      const bool category =
          cs.type == ColumnType::kString &&
          std::find(o.categorical.begin(), o.categorical.end(), cs.name) != o.categorical.end();
      if (!is_numeric_scalar(cs.type) && !category) return not_numeric(all, c, path);
      features.push_back(c);
    }
  } else {
    features.push_back(0);
    label = schema.index("label");
  }
  if (label < 0 || !is_numeric_scalar(schema.columns[label].type))
    return Status::Invalid("{}: the label column must hold numbers, one per row", path);

  InMemoryDataset d;
  const ColumnSchema& f0 = schema.columns[features[0]];
  if (is_tensor(f0.type)) {
    Shape s = {n};
    s.insert(s.end(), f0.shape.begin(), f0.shape.end());
    d.features = Tensor::empty(DType::kF32, s);
    float* out = d.features.data_as<float>();
    const std::vector<uint8_t>& raw = all.rows.columns[features[0]].raw;
    if (f0.type == ColumnType::kTensorU8) {
      // IDX images are pixels: scaled to [0, 1]; u8 NPY arrays keep their values.
      float k = format == "idx" ? 1.0f / 255.0f : 1.0f;
      for (size_t i = 0; i < raw.size(); ++i) out[i] = raw[i] * k;
    } else {
      std::memcpy(out, raw.data(), raw.size());
    }
  } else {
    int64_t nf = static_cast<int64_t>(features.size());
    for (int c : features) d.feature_names.push_back(schema.columns[c].name);
    // Each string feature's value -> code.
    std::vector<std::map<std::string, float, std::less<>>> codes(nf);
    for (int64_t j = 0; j < nf; ++j) {
      const ColumnSchema& cs = schema.columns[features[j]];
      if (cs.type != ColumnType::kString) continue;
      std::vector<std::string>& vocab = d.vocabularies[cs.name];
      if (auto given = o.vocabularies.find(cs.name); given != o.vocabularies.end()) {
        vocab = given->second;
      } else {
        std::set<std::string, std::less<>> seen;
        const ColumnData& col = all.rows.columns[features[j]];
        for (int64_t r = 0; r < n; ++r)
          if (!col.is_null(r)) seen.emplace(col.str(r));
        if (static_cast<int64_t>(seen.size()) > kMaxVocabulary)
          return Status::Invalid(
              "{}: column '{}' has {} distinct values, more than {}; it is not a category", path,
              cs.name, seen.size(), kMaxVocabulary);
        vocab.assign(seen.begin(), seen.end());
      }
      for (size_t i = 0; i < vocab.size(); ++i) codes[j].emplace(vocab[i], static_cast<float>(i));
    }
    d.features = Tensor::empty(DType::kF32, {n, nf});
    float* out = d.features.data_as<float>();
    for (int64_t r = 0; r < n; ++r)
      for (int64_t j = 0; j < nf; ++j) {
        const ColumnData& col = all.rows.columns[features[j]];
        if (o.nulls != "error" && col.is_null(r)) {
          out[r * nf + j] = std::numeric_limits<float>::quiet_NaN();
          continue;
        }
        if (schema.columns[features[j]].type == ColumnType::kString && !col.is_null(r)) {
          auto it = codes[j].find(col.str(r));
          out[r * nf + j] = it == codes[j].end() ? -1.0f : it->second;
          continue;
        }
        DLSYS_ASSIGN_OR_RETURN(double v, scalar(all, features[j], r, path));
        out[r * nf + j] = static_cast<float>(v);
      }
  }
  const std::string& label_file = o.labels_path.empty() ? path : o.labels_path;
  // "drop": the rows with a missing feature or label are left out.
  std::vector<int64_t> rows;
  for (int64_t r = 0; r < n; ++r) {
    bool null = all.rows.columns[label].is_null(r);
    if (o.nulls == "drop" && d.feature_names.size() > 0)
      for (int c : features) null = null || all.rows.columns[c].is_null(r);
    if (o.nulls != "drop" || !null) rows.push_back(r);
  }
  if (o.dropped_rows) *o.dropped_rows = n - static_cast<int64_t>(rows.size());
  if (static_cast<int64_t>(rows.size()) < n) {
    if (rows.empty()) return Status::Invalid("{}: every row has a missing value", path);
    const int64_t per = d.features.numel() / n;
    Tensor kept = Tensor::empty(DType::kF32, {static_cast<int64_t>(rows.size()), per});
    for (size_t i = 0; i < rows.size(); ++i)
      std::memcpy(kept.data_as<float>() + i * per, d.features.data_as<float>() + rows[i] * per,
                  per * sizeof(float));
    Shape s = d.features.shape();
    s[0] = static_cast<int64_t>(rows.size());
    d.features = kept.view(s);
  }
  const int64_t kept_rows = static_cast<int64_t>(rows.size());
  if (o.labels_as_classes) {
    d.labels = Tensor::empty(DType::kI64, {kept_rows});
    for (int64_t i = 0; i < kept_rows; ++i) {
      const int64_t r = rows[i];
      DLSYS_ASSIGN_OR_RETURN(double v, scalar(all, label, r, label_file));
      if (v != std::floor(v) || v < 0)
        return Status::Invalid(
            "{}:{}: label {} is not a class id (a non-negative integer); for regression "
            "targets use the mse loss",
            label_file, all.lines[r], v);
      d.labels.data_as<int64_t>()[i] = static_cast<int64_t>(v);
    }
  } else {
    d.labels = Tensor::empty(DType::kF32, {kept_rows});
    for (int64_t i = 0; i < kept_rows; ++i) {
      DLSYS_ASSIGN_OR_RETURN(double v, scalar(all, label, rows[i], label_file));
      d.labels.data_as<float>()[i] = static_cast<float>(v);
    }
  }
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

InMemoryDataset slice(const InMemoryDataset& d, int64_t begin, int64_t end) {
  std::vector<int64_t> rows(static_cast<size_t>(end - begin));
  std::iota(rows.begin(), rows.end(), begin);
  return {gather_rows(d.features, rows), gather_rows(d.labels, rows), d.feature_names,
          d.vocabularies};
}

Status split(const InMemoryDataset& d, double validation_fraction, uint64_t seed,
             InMemoryDataset* train, InMemoryDataset* validation) {
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
  *train = {gather_rows(d.features, t), gather_rows(d.labels, t), d.feature_names, d.vocabularies};
  *validation = {gather_rows(d.features, v), gather_rows(d.labels, v), d.feature_names,
                 d.vocabularies};
  return Status::OK();
}

}  // namespace dlsys::data
