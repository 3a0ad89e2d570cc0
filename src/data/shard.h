// The shard: dlsys's columnar file for a slice of a dataset's rows (docs/formats.md).
//
//   "DLSHARD1" | u64 header length H | header JSON (H bytes) | u64 XXH3-64 of the header |
//   one zstd frame per column, at the offsets the header gives (from the end of the checksum)
//
// Each column's frame holds [validity bytes, when the column has nulls] then its values
// (int64/float64 little-endian, strings as u64 offsets[rows+1] + bytes, tensors as raw
// elements). Every frame carries its XXH3-64 in the header, so a reader that needs two columns
// reads and checks only those two. A shard's name in the store is the SHA-256 of its bytes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "data/row_batch.h"

namespace dlsys::data {

struct ShardColumnInfo {
  ColumnSchema schema;
  int64_t nulls = 0;
  uint64_t offset = 0;    // of the frame, from the start of the column area
  uint64_t size = 0;      // compressed bytes
  uint64_t raw_size = 0;  // decompressed bytes
  uint64_t xxh3 = 0;      // of the compressed frame
};

struct ShardHeader {
  int64_t rows = 0;
  std::vector<ShardColumnInfo> columns;
  uint64_t data_start = 0;  // file offset of the column area
  int64_t raw_bytes() const;
  int index(const std::string& name) const;
};

// Encodes `batch` (checked) with zstd at `level` (1 is fast; 3 is zstd's default).
Result<std::string> encode_shard(const RowBatch& batch, int level = 1);

// Parses the header of an in-memory shard or of the file at `path`. `where` names the shard in
// errors ("shard 3fa1… of digits@v2").
Result<ShardHeader> decode_shard_header(std::string_view bytes, const std::string& where);
Result<ShardHeader> read_shard_header(const std::string& path, const std::string& where);

// Decodes the columns named in `columns` (all when empty), in that order, checking each
// frame's checksum and sizes. Errors name `where` and the column.
Result<RowBatch> decode_shard(std::string_view bytes, const std::vector<std::string>& columns,
                              const std::string& where);
Result<RowBatch> read_shard(const std::string& path, const std::vector<std::string>& columns,
                            const std::string& where);

}  // namespace dlsys::data
