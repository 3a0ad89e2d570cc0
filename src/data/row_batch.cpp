#include "data/row_batch.h"

#include <cstring>

namespace dlsys::data {

RowBatch RowBatch::empty(const Schema& schema) {
  RowBatch b;
  b.schema = schema;
  b.columns.resize(schema.columns.size());
  for (size_t c = 0; c < schema.columns.size(); ++c)
    if (schema.columns[c].type == ColumnType::kString) b.columns[c].offsets.push_back(0);
  return b;
}

void RowBatch::append_null(int c) {
  ColumnData& d = columns[c];
  const ColumnSchema& s = schema.columns[c];
  if (d.valid.empty()) d.valid.assign(rows, 1);
  d.valid.push_back(0);
  switch (s.type) {
    case ColumnType::kInt64:
      d.i64.push_back(0);
      break;
    case ColumnType::kFloat64:
      d.f64.push_back(0);
      break;
    case ColumnType::kString:
      d.offsets.push_back(d.bytes.size());
      break;
    default:
      d.raw.resize(d.raw.size() + s.numel() * s.elem_bytes(), 0);
      break;
  }
}

void RowBatch::append_row(const RowBatch& src, int64_t r) {
  for (size_t c = 0; c < columns.size(); ++c) {
    const ColumnData& s = src.columns[c];
    ColumnData& d = columns[c];
    const ColumnSchema& cs = schema.columns[c];
    if (s.is_null(r)) {
      append_null(static_cast<int>(c));
      continue;
    }
    if (!d.valid.empty()) d.valid.push_back(1);
    switch (cs.type) {
      case ColumnType::kInt64:
        d.i64.push_back(s.i64[r]);
        break;
      case ColumnType::kFloat64:
        d.f64.push_back(s.f64[r]);
        break;
      case ColumnType::kString:
        d.bytes.append(s.str(r));
        d.offsets.push_back(d.bytes.size());
        break;
      default: {
        size_t n = cs.numel() * cs.elem_bytes();
        d.raw.insert(d.raw.end(), s.raw.begin() + r * n, s.raw.begin() + (r + 1) * n);
      }
    }
  }
  ++rows;
}

int64_t RowBatch::memory_bytes() const {
  int64_t n = 0;
  for (const auto& d : columns)
    n += d.i64.size() * 8 + d.f64.size() * 8 + d.offsets.size() * 8 + d.bytes.size() +
         d.raw.size() + d.valid.size();
  return n;
}

Status RowBatch::check() const {
  if (columns.size() != schema.columns.size())
    return Status::Internal("row batch has {} column arrays for {} schema columns", columns.size(),
                            schema.columns.size());
  for (size_t c = 0; c < columns.size(); ++c) {
    const ColumnData& d = columns[c];
    const ColumnSchema& s = schema.columns[c];
    size_t n = 0;
    switch (s.type) {
      case ColumnType::kInt64:
        n = d.i64.size();
        break;
      case ColumnType::kFloat64:
        n = d.f64.size();
        break;
      case ColumnType::kString:
        n = d.offsets.empty() ? 0 : d.offsets.size() - 1;
        break;
      default:
        n = d.raw.size() / (s.numel() * s.elem_bytes());
        break;
    }
    if (static_cast<int64_t>(n) != rows || (!d.valid.empty() && (int64_t)d.valid.size() != rows))
      return Status::Internal("column '{}' holds {} values for {} rows", s.name, n, rows);
  }
  return Status::OK();
}

std::string RowBatch::value_text(int64_t r, int c) const {
  const ColumnData& d = columns[c];
  const ColumnSchema& s = schema.columns[c];
  if (d.is_null(r)) return "";
  switch (s.type) {
    case ColumnType::kInt64:
      return std::to_string(d.i64[r]);
    case ColumnType::kFloat64:
      return fmt::format("{}", d.f64[r]);
    case ColumnType::kString:
      return std::string(d.str(r));
    case ColumnType::kTensorU8: {
      std::string out = "[";
      int64_t n = s.numel();
      for (int64_t i = 0; i < n; ++i) out += (i ? "," : "") + std::to_string(d.raw[r * n + i]);
      return out + "]";
    }
    case ColumnType::kTensorF32: {
      std::string out = "[";
      int64_t n = s.numel();
      const float* p = reinterpret_cast<const float*>(d.raw.data()) + r * n;
      for (int64_t i = 0; i < n; ++i) out += fmt::format("{}{}", i ? "," : "", p[i]);
      return out + "]";
    }
  }
  return "";
}

}  // namespace dlsys::data
