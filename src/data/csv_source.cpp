// CSV and TSV ingest: RFC 4180 records read in 1 MiB chunks (quoted fields may hold the
// delimiter, doubled quotes and newlines), a header detected or given, column types inferred
// from the first rows or taken from a schema, null tokens recognized.
#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <cstring>
#include <set>

#include "data/ingest.h"

namespace dlsys::data {

namespace {

constexpr size_t kChunk = 1 << 20;
constexpr size_t kMaxRecord = 16 << 20;

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool parse_i64(std::string_view s, int64_t* v) {
  s = trim(s);
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  auto r = std::from_chars(s.data(), s.data() + s.size(), *v);
  return r.ec == std::errc() && r.ptr == s.data() + s.size() && !s.empty();
}

bool parse_f64(std::string_view s, double* v) {
  s = trim(s);
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  auto r = std::from_chars(s.data(), s.data() + s.size(), *v);
  return r.ec == std::errc() && r.ptr == s.data() + s.size() && !s.empty() && std::isfinite(*v);
}

struct Field {
  size_t off, len;
  bool scratch;  // in the record's scratch buffer (unescaped quotes) rather than the input
};

class CsvSource : public RowSource {
 public:
  CsvSource(std::string path, IngestOptions o) : path_(std::move(path)), o_(std::move(o)) {}
  ~CsvSource() override {
    if (fd_ >= 0) ::close(fd_);
  }

  Status open() {
    fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) return Status::IOError("cannot open {}: {}", path_, strerror(errno));
    total_ = ::lseek(fd_, 0, SEEK_END);
    ::lseek(fd_, 0, SEEK_SET);
    if (!o_.delimiter) {
      bool tsv = path_.size() > 4 && path_.compare(path_.size() - 4, 4, ".tsv") == 0;
      o_.delimiter = tsv ? '\t' : ',';
    }
    std::vector<std::string_view> f;
    for (int64_t i = 0; i < o_.skip_rows; ++i) {
      DLSYS_ASSIGN_OR_RETURN(bool got, read_record(&f));
      if (!got) return Status::Invalid("{}: fewer than {} lines to skip", path_, o_.skip_rows);
    }
    // Buffer the first records to find the header and the column types.
    while (static_cast<int64_t>(head_.size()) < o_.infer_rows + 1) {
      int64_t line = line_;
      DLSYS_ASSIGN_OR_RETURN(bool got, read_record(&f));
      if (!got) break;
      if (f.size() == 1 && f[0].empty()) continue;  // blank line
      head_.emplace_back(f.begin(), f.end());
      head_lines_.push_back(line);
    }
    if (head_.empty()) return Status::Invalid("{}: the file has no rows", path_);
    return infer();
  }

  const Schema& schema() const override { return schema_; }
  int64_t done() const override { return consumed_; }
  int64_t total() const override { return total_; }
  json describe() const override {
    return {{"format", o_.delimiter == '\t' ? "tsv" : "csv"},
            {"path", path_},
            {"bytes", total_},
            {"header", has_header_},
            {"skipped_first_line", skipped_first_line_}};
  }

  Result<SourceBatch> next(int64_t max_rows, int64_t max_bytes) override {
    SourceBatch out;
    out.rows = RowBatch::empty(schema_);
    std::vector<std::string_view> f;
    std::vector<std::string> owned;
    int64_t bytes = 0;
    while (out.rows.rows < max_rows && bytes < max_bytes) {
      if ((out.rows.rows & 255) == 255) bytes = out.rows.memory_bytes();
      int64_t line;
      if (head_pos_ < head_.size()) {
        owned = std::move(head_[head_pos_]);
        line = head_lines_[head_pos_++];
        f.assign(owned.begin(), owned.end());
      } else {
        line = line_;
        DLSYS_ASSIGN_OR_RETURN(bool got, read_record(&f));
        if (!got) break;
        if (f.size() == 1 && f[0].empty()) continue;
      }
      add_row(f, line, &out);
    }
    return out;
  }

 private:
  // Reads the next record into `f` (views valid until the next call). False at the end.
  Result<bool> read_record(std::vector<std::string_view>* f) {
    while (true) {
      std::vector<Field> fields;
      size_t end = 0;
      int64_t newlines = 0;
      DLSYS_ASSIGN_OR_RETURN(int got, parse(&fields, &end, &newlines));
      if (got == 1) {
        f->clear();
        for (const Field& x : fields)
          f->emplace_back(x.scratch ? std::string_view(scratch_).substr(x.off, x.len)
                                    : std::string_view(buf_).substr(x.off, x.len));
        consumed_ += end - pos_;
        pos_ = end;
        line_ += newlines;
        return true;
      }
      if (eof_) return false;
      // Need more input: drop what was consumed and read the next chunk.
      buf_.erase(0, pos_);
      pos_ = 0;
      if (buf_.size() > kMaxRecord)
        return Status::Invalid("{}:{}: a record longer than {} MiB (an unclosed quote?)", path_,
                               line_, kMaxRecord >> 20);
      size_t old = buf_.size();
      buf_.resize(old + kChunk);
      ssize_t n;
      do n = ::read(fd_, buf_.data() + old, kChunk);
      while (n < 0 && errno == EINTR);
      if (n < 0) return Status::IOError("{}: read failed: {}", path_, strerror(errno));
      buf_.resize(old + n);
      if (n == 0) eof_ = true;
    }
  }

  // Parses one record at pos_: 1 when complete, 0 when the buffer ends first (and the file
  // has more), errors for a quote in the middle of a field or an unclosed quote at the end.
  Result<int> parse(std::vector<Field>* fields, size_t* end, int64_t* newlines) {
    scratch_.clear();
    const char d = o_.delimiter;
    const size_t n = buf_.size();
    size_t i = pos_;
    if (i >= n) return eof_ ? 0 : 0;
    size_t start = i;
    while (true) {
      if (i < n && buf_[i] == '"') {
        // Quoted field.
        size_t q = i + 1;
        size_t sc_off = scratch_.size();
        bool escaped = false;
        size_t j = q;
        while (true) {
          if (j >= n) {
            if (eof_)
              return Status::Invalid(
                  "{}:{}: a quoted field of the record starting on this line is not closed "
                  "before the end of the file",
                  path_, line_);
            return 0;
          }
          if (buf_[j] == '"') {
            if (j + 1 >= n && !eof_) return 0;
            if (j + 1 < n && buf_[j + 1] == '"') {
              scratch_.append(buf_, q, j - q);
              scratch_ += '"';
              escaped = true;
              j += 2;
              q = j;
              continue;
            }
            break;
          }
          if (buf_[j] == '\n') ++*newlines;
          ++j;
        }
        if (escaped) {
          scratch_.append(buf_, q, j - q);
          fields->push_back({sc_off, scratch_.size() - sc_off, true});
        } else {
          fields->push_back({i + 1, j - i - 1, false});
        }
        i = j + 1;
        if (i < n && buf_[i] != d && buf_[i] != '\n' && buf_[i] != '\r')
          return Status::Invalid("{}:{}:{}: text after a closing quote", path_, line_ + *newlines,
                                 fields->size());
      } else {
        size_t j = i;
        while (j < n && buf_[j] != d && buf_[j] != '\n' && buf_[j] != '\r') {
          if (buf_[j] == '"')
            return Status::Invalid("{}:{}:{}: a quote in the middle of a field", path_,
                                   line_ + *newlines, fields->size() + 1);
          ++j;
        }
        if (j >= n && !eof_) return 0;
        fields->push_back({i, j - i, false});
        i = j;
      }
      if (i >= n) {  // end of file ends the record
        *end = i;
        ++*newlines;
        return i > start || !fields->empty() ? 1 : 0;
      }
      if (buf_[i] == d) {
        ++i;
        continue;
      }
      // Line end.
      if (buf_[i] == '\r') {
        if (i + 1 >= n && !eof_) return 0;
        if (i + 1 < n && buf_[i + 1] == '\n') ++i;
      }
      *end = i + 1;
      ++*newlines;
      return 1;
    }
  }

  Status infer() {
    // A first line of another width than every row below it, like the sklearn-style files
    // ("178,13,class_0,class_1,class_2" above 14-field rows), is not data and not a header:
    // skipped (describe() says so).
    if (o_.header == "auto" && head_.size() >= 3) {
      bool rest_agree = true;
      for (size_t r = 2; r < head_.size() && rest_agree; ++r)
        rest_agree = head_[r].size() == head_[1].size();
      if (rest_agree && head_[0].size() != head_[1].size()) {
        skipped_first_line_ = true;
        head_.erase(head_.begin());
        head_lines_.erase(head_lines_.begin());
      }
    }
    size_t ncols = head_[0].size();
    // Header: given, or detected when a first-row value is not numeric where rows below are.
    bool header = o_.header == "yes";
    if (o_.header == "auto") {
      bool any_numeric_col = false, first_breaks = false;
      for (size_t c = 0; c < ncols; ++c) {
        bool numeric = head_.size() > 1;
        for (size_t r = 1; r < head_.size() && numeric; ++r) {
          double v;
          if (c < head_[r].size() && !is_null_token(trim(head_[r][c])) &&
              !parse_f64(head_[r][c], &v))
            numeric = false;
        }
        if (!numeric) continue;
        any_numeric_col = true;
        double v;
        if (!is_null_token(trim(head_[0][c])) && !parse_f64(head_[0][c], &v)) first_breaks = true;
      }
      header = any_numeric_col ? first_breaks : head_.size() > 1;
    }
    has_header_ = header;
    std::vector<std::string> names;
    std::set<std::string> seen;
    for (size_t c = 0; c < ncols; ++c) {
      std::string name = header ? std::string(trim(head_[0][c])) : "";
      if (name.empty()) {
        if (!header && o_.schema && o_.schema->columns.size() == ncols)
          name = o_.schema->columns[c].name;
        else
          name = "c" + std::to_string(c);
      }
      DLSYS_RETURN_IF_ERROR(check_column_name(name).with_context(path_ + ": header"));
      if (!seen.insert(name).second)
        return Status::Invalid("{}: column '{}' appears twice in the header; rename one", path_,
                               name);
      names.push_back(name);
    }
    if (header) {
      head_.erase(head_.begin());
      head_lines_.erase(head_lines_.begin());
    }
    if (o_.schema)
      for (const auto& sc : o_.schema->columns)
        if (!seen.count(sc.name))
          return Status::Invalid("{}: the schema's column '{}' is not in the file (columns: {})",
                                 path_, sc.name, fmt::join(names, ", "));
    for (size_t c = 0; c < ncols; ++c) {
      ColumnSchema cs;
      cs.name = names[c];
      int si = o_.schema ? o_.schema->index(cs.name) : -1;
      if (si >= 0) {
        cs = o_.schema->columns[si];
        if (is_tensor(cs.type))
          return Status::Unsupported("{}: column '{}': CSV columns are scalars, not {}", path_,
                                     cs.name, column_type_name(cs.type));
      } else {
        bool all_int = true, all_num = true;
        for (const auto& row : head_) {
          if (c >= row.size()) continue;
          std::string_view v = trim(row[c]);
          if (is_null_token(v)) continue;
          int64_t i;
          double d;
          if (all_int && !parse_i64(v, &i)) all_int = false;
          if (!all_int && !parse_f64(v, &d)) {
            all_num = false;
            break;
          }
        }
        cs.type = all_int   ? ColumnType::kInt64
                  : all_num ? ColumnType::kFloat64
                            : ColumnType::kString;
      }
      schema_.columns.push_back(std::move(cs));
    }
    return Status::OK();
  }

  void add_row(const std::vector<std::string_view>& f, int64_t line, SourceBatch* out) {
    size_t ncols = schema_.columns.size();
    auto bad = [&](std::string column, std::string reason) {
      std::string text;
      for (size_t i = 0; i < f.size(); ++i) {
        if (i) text += o_.delimiter;
        text += f[i];
      }
      out->bad.push_back({line, std::move(column), std::move(reason), std::move(text)});
    };
    if (f.size() != ncols) {
      bad("", fmt::format("{} fields where the {} has {}{}", f.size(),
                          has_header_ ? "header" : "first row", ncols,
                          line <= 3 ? "; if the first line is not data, push with --header no "
                                      "--skip-rows 1"
                                    : ""));
      return;
    }
    iv_.resize(ncols);
    fv_.resize(ncols);
    null_.assign(ncols, 0);
    for (size_t c = 0; c < ncols; ++c) {
      const ColumnSchema& cs = schema_.columns[c];
      if (is_null_token(trim(f[c])) && cs.type != ColumnType::kString) {
        null_[c] = 1;
        continue;
      }
      if (cs.type == ColumnType::kInt64 && !parse_i64(f[c], &iv_[c])) {
        double d;
        bad(cs.name,
            fmt::format(
                "'{}' is not an int64{}", f[c],
                parse_f64(f[c], &d) ? " (type the column float64 in a --schema file)" : ""));
        return;
      }
      if (cs.type == ColumnType::kFloat64 && !parse_f64(f[c], &fv_[c])) {
        bad(cs.name, fmt::format("'{}' is not a number", f[c]));
        return;
      }
      if (cs.type == ColumnType::kString && f[c].empty()) null_[c] = 1;
    }
    RowBatch& b = out->rows;
    for (size_t c = 0; c < ncols; ++c) {
      if (null_[c]) {
        b.append_null(static_cast<int>(c));
        continue;
      }
      ColumnData& d = b.columns[c];
      if (!d.valid.empty()) d.valid.push_back(1);
      switch (schema_.columns[c].type) {
        case ColumnType::kInt64:
          d.i64.push_back(iv_[c]);
          break;
        case ColumnType::kFloat64:
          d.f64.push_back(fv_[c]);
          break;
        default:
          d.bytes.append(f[c]);
          d.offsets.push_back(d.bytes.size());
      }
    }
    ++b.rows;
    out->lines.push_back(line);
  }

  std::string path_;
  IngestOptions o_;
  int fd_ = -1;
  int64_t total_ = 0, consumed_ = 0;
  std::string buf_, scratch_;
  size_t pos_ = 0;
  bool eof_ = false;
  int64_t line_ = 1;
  bool has_header_ = false;
  bool skipped_first_line_ = false;  // a first line of another width than the rows (infer)
  std::vector<std::vector<std::string>> head_;
  std::vector<int64_t> head_lines_;
  size_t head_pos_ = 0;
  Schema schema_;
  std::vector<int64_t> iv_;
  std::vector<double> fv_;
  std::vector<uint8_t> null_;
};

}  // namespace

bool is_null_token(std::string_view s) {
  return s.empty() || s == "NA" || s == "N/A" || s == "null" || s == "NULL" || s == "None" ||
         s == "NaN" || s == "nan";
}

Result<std::unique_ptr<RowSource>> open_csv(const std::string& path, const IngestOptions& o) {
  auto src = std::make_unique<CsvSource>(path, o);
  DLSYS_RETURN_IF_ERROR(src->open());
  return std::unique_ptr<RowSource>(std::move(src));
}

}  // namespace dlsys::data
