// RowBatch: rows of a dataset held column by column, the unit that ingest produces, a shard
// stores and the loader reads. Each column keeps its values in one typed array; a validity
// array (one byte per row, 1 = present) exists only when the column has nulls.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "data/schema.h"

namespace dlsys::data {

struct ColumnData {
  std::vector<int64_t> i64;       // kInt64
  std::vector<double> f64;        // kFloat64
  std::vector<uint64_t> offsets;  // kString: offsets[r]..offsets[r+1] into bytes; size rows+1
  std::string bytes;              // kString payload
  std::vector<uint8_t> raw;       // tensor columns: rows * numel * elem_bytes
  std::vector<uint8_t> valid;     // empty: no nulls; else one byte per row

  bool is_null(int64_t r) const { return !valid.empty() && !valid[r]; }
  std::string_view str(int64_t r) const {
    return std::string_view(bytes).substr(offsets[r], offsets[r + 1] - offsets[r]);
  }
};

struct RowBatch {
  Schema schema;
  std::vector<ColumnData> columns;  // one per schema column
  int64_t rows = 0;

  // An empty batch with `schema`'s columns (string columns get their leading 0 offset).
  static RowBatch empty(const Schema& schema);
  // Appends a null to column `c` (keeping the other arrays aligned).
  void append_null(int c);
  // Appends row `r` of `src` (same schema) to this batch.
  void append_row(const RowBatch& src, int64_t r);
  // Bytes held by the column arrays (what the batch costs in memory).
  int64_t memory_bytes() const;
  // Checks that every column array has `rows` entries; a failure names the column.
  Status check() const;
  // The value of (r, c) as text: "" for null, numbers in shortest round-trip form, tensors as
  // "[...]" of their elements.
  std::string value_text(int64_t r, int c) const;
};

}  // namespace dlsys::data
