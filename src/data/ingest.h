// Ingest: sources that stream rows out of files into RowBatches, with bounded memory whatever
// the file size. Each source reads a format (CSV, JSONL, NPY, IDX, an image folder) and knows
// its schema once opened; rows it cannot read become BadRows with their line (or item) number
// and the reason, instead of stopping the push.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/row_batch.h"

namespace dlsys::data {

// A row a source or the validator refused.
struct BadRow {
  int64_t line = 0;    // 1-based line (CSV, JSONL) or item index (NPY, IDX, images)
  std::string column;  // the column at fault ("" when the whole row is)
  std::string reason;  // what is wrong, in words
  std::string text;    // the row as read (CSV/JSONL line; other formats a description)
};

struct SourceBatch {
  RowBatch rows;
  std::vector<int64_t> lines;  // per row: its line / item number
  std::vector<BadRow> bad;     // rows refused while reading this batch
};

class RowSource {
 public:
  virtual ~RowSource() = default;
  virtual const Schema& schema() const = 0;
  // Reads up to `max_rows` rows or about `max_bytes` of column data; an empty batch (rows == 0
  // and no bad rows) means the end.
  virtual Result<SourceBatch> next(int64_t max_rows, int64_t max_bytes) = 0;
  // Progress: input bytes (or items) consumed and the total.
  virtual int64_t done() const = 0;
  virtual int64_t total() const = 0;
  // "csv", "jsonl", "npy", "idx", "images"; and facts for the manifest's "source" entry.
  virtual json describe() const = 0;
};

struct IngestOptions {
  // Column types and rules from a schema file; columns it does not name are inferred.
  std::optional<Schema> schema;
  // CSV: "auto" (a first row that is not numeric where the rows below are), "yes" or "no".
  std::string header = "auto";
  char delimiter = 0;     // 0: ',' or '\t' for .tsv files
  int64_t skip_rows = 0;  // lines skipped before the header / first row
  int64_t infer_rows = 1000;
  std::string labels_path;  // NPY / IDX: the labels file beside the features / images
  int64_t image_height = 0, image_width = 0;  // image folders: resize to (0: first image's)
  int image_channels = 3;                     // 1 (gray) or 3 (RGB)
};

// Opens `path` with the source its format needs: `format` is csv, tsv, jsonl, npy, idx or
// images, or "" to pick by the path (a directory: images; else the extension).
Result<std::unique_ptr<RowSource>> open_source(const std::string& path, const std::string& format,
                                               const IngestOptions& options);

Result<std::unique_ptr<RowSource>> open_csv(const std::string& path, const IngestOptions& o);
Result<std::unique_ptr<RowSource>> open_jsonl(const std::string& path, const IngestOptions& o);
Result<std::unique_ptr<RowSource>> open_npy(const std::string& path, const IngestOptions& o);
Result<std::unique_ptr<RowSource>> open_idx(const std::string& path, const IngestOptions& o);
Result<std::unique_ptr<RowSource>> open_images(const std::string& dir, const IngestOptions& o);

// Whether `s` is a null token in text formats: "", NA, N/A, null, NULL, None, NaN, nan.
bool is_null_token(std::string_view s);

}  // namespace dlsys::data
