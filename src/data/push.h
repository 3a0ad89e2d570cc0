// Push: reads a RowSource, checks every row against the schema's rules, adds the row hash and
// split columns, computes statistics, writes shards and commits one new version.
//
// Shards are encoded and written by a second thread while the first parses. They are staged
// as temporary files and only published when the push succeeds: with policy "reject", a file
// with bad rows writes nothing and the error lists the bad rows with their lines; with
// "quarantine", the good rows become the version and the bad ones a version of
// "<name>.quarantine" (columns line, column, reason, text).
//
// A push whose data is the same as the latest version's (same schema, same shards in the same
// order: the same rows in the same order, split and shard boundaries) makes no new version:
// the result says `unchanged` and names the latest version; its message and author are not
// recorded. The quarantine version follows the same rule on its own.
#pragma once

#include <functional>
#include <optional>

#include "data/dataset_store.h"
#include "data/ingest.h"

namespace dlsys::data {

struct PushOptions {
  std::string message, author;
  std::optional<Schema> rules;  // columns with rules (types were applied by the source)
  std::string policy = "reject";
  // Fractions of rows for train, validation and test, assigned by hashing the row (or the
  // `split_key` column, so that rows sharing a key stay together).
  double train = 0.8, validation = 0.1, test = 0.1;
  std::string split_key;
  int64_t shard_rows = 1 << 20;
  int64_t shard_bytes = 32 << 20;  // column data per shard before compression
  int zstd_level = 1;
  // Called after each batch with the source's done() and total() and the rows so far.
  std::function<void(int64_t done, int64_t total, int64_t rows)> progress;
};

struct PushResult {
  VersionInfo version;  // the new version, or the latest one when `unchanged`
  bool unchanged = false;
  int64_t rows = 0, bad_rows = 0;
  std::vector<BadRow> bad_sample;  // the first 100 bad rows
  std::optional<VersionInfo> quarantine;
  bool quarantine_unchanged = false;  // `quarantine` is the latest one, holding the same rows
  int64_t shards = 0, shards_new = 0;
  int64_t stored_bytes = 0, new_bytes = 0;  // compressed; new: bytes not already stored
  double seconds = 0;
};

Result<PushResult> push(DatasetStore& store, const std::string& name, RowSource& source,
                        const PushOptions& options);

// Row hashes of `b` (XXH3 over each column's value, nulls included), and the hash of one
// column's values (split keys).
std::vector<uint64_t> row_hashes(const RowBatch& b);
std::vector<uint64_t> column_hashes(const RowBatch& b, int column);

// Parses "TRAIN,VALIDATION[,TEST]" fractions (e.g. "0.8,0.2") into `o`, strictly: each field
// one finite decimal number in 0..1 (no NaN, Infinity, hex or trailing text); errors name the
// field. push() checks the sum.
Status parse_split_fractions(const std::string& text, PushOptions* o);

// Split ids stored in the __split column.
enum SplitId : int64_t { kTrain = 0, kValidation = 1, kTest = 2 };
Result<int64_t> split_id(const std::string& name);

}  // namespace dlsys::data
