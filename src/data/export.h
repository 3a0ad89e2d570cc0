// Reading whole versions back out: row-by-row iteration over a version's shards (optionally
// one split), and export to CSV or to one .npy file per column. Exports stream shard by shard
// into a temporary file that is renamed into place when complete.
#pragma once

#include <functional>

#include "data/dataset_store.h"
#include "data/row_batch.h"

namespace dlsys::data {

// Calls `fn` with each shard's rows (user columns only, or `columns` when not empty), keeping
// only the rows of `split` ("" for all). Errors name the shard and the version.
Status for_each_batch(const DatasetStore& store, const VersionInfo& v, const std::string& split,
                      const std::vector<std::string>& columns,
                      const std::function<Status(const RowBatch&)>& fn);

// The same shard by shard: `fn` gets each shard's index in the version (0, 1, ...) with its rows;
// shards for which `wanted` (when given) returns false are not read at all (a resumed batch
// prediction skips the shards it has done).
Status for_each_shard(const DatasetStore& store, const VersionInfo& v, const std::string& split,
                      const std::vector<std::string>& columns,
                      const std::function<bool(int64_t shard)>& wanted,
                      const std::function<Status(int64_t shard, const RowBatch&)>& fn);

// `v` as one CSV field: quoted (with its quotes doubled) when it holds a comma, a quote or a line
// break.
std::string csv_field(const std::string& v);

// Appends `b`'s column names as a CSV line to `out`.
void append_csv_header(const RowBatch& b, std::string* out);
// Appends row `r` of `b` as a CSV line to `out` (fields quoted where they need it).
void append_csv_row(const RowBatch& b, int64_t r, std::string* out);
// Rows [begin, end) of `b` (end < 0: to the last) as CSV lines, after a header line when
// `header`.
std::string csv_text(const RowBatch& b, bool header, int64_t begin = 0, int64_t end = -1);

// Writes the rows as CSV with a header line.
Status export_csv(const DatasetStore& store, const VersionInfo& v, const std::string& split,
                  const std::string& path, const std::function<void(int64_t rows)>& progress);

// Writes DIR/<column>.npy for every int64, float64 and tensor column (strings are skipped and
// listed in the result): scalars as [N], tensors as [N, shape...]. Returns the files written.
Result<std::vector<std::string>> export_npy(const DatasetStore& store, const VersionInfo& v,
                                            const std::string& split, const std::string& dir,
                                            const std::function<void(int64_t rows)>& progress);

// The version's rows (and per-split counts from its manifest) in `split`.
int64_t split_rows(const VersionInfo& v, const std::string& split);

}  // namespace dlsys::data
