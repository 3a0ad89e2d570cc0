#include "data/push.h"

#include <xxhash.h>

#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <thread>

#include "data/shard.h"
#include "data/stats.h"

namespace dlsys::data {

namespace {

constexpr size_t kBadSample = 100;

uint64_t hash_value(const ColumnData& d, const ColumnSchema& s, int64_t r, uint64_t seed) {
  if (d.is_null(r)) return XXH3_64bits_withSeed("\0null", 5, seed);
  switch (s.type) {
    case ColumnType::kInt64:
      return XXH3_64bits_withSeed(&d.i64[r], 8, seed);
    case ColumnType::kFloat64:
      return XXH3_64bits_withSeed(&d.f64[r], 8, seed);
    case ColumnType::kString: {
      auto v = d.str(r);
      return XXH3_64bits_withSeed(v.data(), v.size(), seed ^ 0x5bd1e995);
    }
    default: {
      size_t n = s.numel() * s.elem_bytes();
      return XXH3_64bits_withSeed(d.raw.data() + r * n, n, seed);
    }
  }
}

// Validates `b` against `rules`; returns the rows to keep and appends the bad ones to `bad`.
std::vector<uint8_t> validate(const RowBatch& b, const std::vector<int64_t>& lines,
                              const Schema* rules, std::vector<BadRow>* bad, int64_t* bad_count,
                              bool keep_reports) {
  std::vector<uint8_t> keep(b.rows, 1);
  if (!rules) return keep;
  for (const auto& rc : rules->columns) {
    int c = b.schema.index(rc.name);
    if (c < 0) continue;
    const ColumnRules& r = rc.rules;
    const ColumnData& d = b.columns[c];
    const ColumnSchema& cs = b.schema.columns[c];
    bool check_range = (r.min || r.max) && is_numeric_scalar(cs.type);
    if (!r.not_null && !check_range && r.allowed.empty()) continue;
    for (int64_t i = 0; i < b.rows; ++i) {
      if (!keep[i]) continue;
      std::string reason;
      if (d.is_null(i)) {
        if (r.not_null) reason = "null in a not_null column";
      } else {
        if (check_range) {
          double v = cs.type == ColumnType::kInt64 ? double(d.i64[i]) : d.f64[i];
          if ((r.min && v < *r.min) || (r.max && v > *r.max))
            reason = fmt::format("{} is outside [{}, {}]", b.value_text(i, c),
                                 r.min ? fmt::format("{}", *r.min) : "-inf",
                                 r.max ? fmt::format("{}", *r.max) : "inf");
        }
        if (reason.empty() && !r.allowed.empty()) {
          std::string v = b.value_text(i, c);
          if (std::find(r.allowed.begin(), r.allowed.end(), v) == r.allowed.end())
            reason = fmt::format("'{}' is not one of the allowed values", v);
        }
      }
      if (reason.empty()) continue;
      keep[i] = 0;
      ++*bad_count;
      if (keep_reports || bad->size() < kBadSample) {
        std::string text;
        for (size_t k = 0; k < b.columns.size(); ++k)
          text += (k ? "," : "") + b.value_text(i, static_cast<int>(k)).substr(0, 64);
        bad->push_back({lines[i], rc.name, std::move(reason), std::move(text)});
      }
    }
  }
  return keep;
}

struct StagedShard {
  std::string id, tmp;
  int64_t rows = 0, bytes = 0, raw_bytes = 0;
};

// Encodes and stages shards on its own thread; at most two batches wait.
class ShardWriter {
 public:
  ShardWriter(DatasetStore& store, int level) : store_(store), level_(level) {
    thread_ = std::thread([this] { loop(); });
  }
  ~ShardWriter() { finish(); }
  void add(RowBatch b) {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return queue_.size() < 2; });
    queue_.push_back(std::move(b));
    cv_.notify_all();
  }
  // Waits for the queue to drain; returns the first error.
  Status finish() {
    {
      std::unique_lock<std::mutex> l(mu_);
      done_ = true;
      cv_.notify_all();
    }
    if (thread_.joinable()) thread_.join();
    return status_;
  }
  std::vector<StagedShard> staged;

 private:
  void loop() {
    while (true) {
      RowBatch b;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return !queue_.empty() || done_; });
        if (queue_.empty()) return;
        b = std::move(queue_.front());
        queue_.pop_front();
        cv_.notify_all();
      }
      if (!status_.ok()) continue;
      // A shard that cannot be encoded fails the push with a status, never the process.
      Result<std::string> bytes = Status::Internal("shard encoding did not run");
      try {
        bytes = encode_shard(b, level_);
      } catch (const std::exception& e) {
        bytes = Status::Invalid("a batch of rows cannot be stored: {}", e.what());
      }
      if (!bytes.ok()) {
        status_ = bytes.status();
        continue;
      }
      StagedShard s;
      auto id = store_.stage_shard(*bytes, &s.tmp);
      if (!id.ok()) {
        status_ = id.status();
        continue;
      }
      s.id = *id;
      s.rows = b.rows;
      s.bytes = bytes->size();
      s.raw_bytes = b.memory_bytes();
      staged.push_back(std::move(s));
    }
  }

  DatasetStore& store_;
  int level_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<RowBatch> queue_;
  bool done_ = false;
  Status status_;
};

std::string bad_rows_report(const std::vector<BadRow>& bad, int64_t count) {
  std::string out;
  for (size_t i = 0; i < bad.size() && i < 10; ++i)
    out +=
        fmt::format("\n  line {}{}: {}", bad[i].line,
                    bad[i].column.empty() ? "" : " column '" + bad[i].column + "'", bad[i].reason);
  if (count > 10) out += fmt::format("\n  ... and {} more", count - 10);
  return out;
}

}  // namespace

std::vector<uint64_t> row_hashes(const RowBatch& b) {
  std::vector<uint64_t> h(b.rows, 0x9e3779b97f4a7c15ull);
  for (size_t c = 0; c < b.columns.size(); ++c)
    for (int64_t r = 0; r < b.rows; ++r)
      h[r] = hash_value(b.columns[c], b.schema.columns[c], r, h[r]);
  return h;
}

std::vector<uint64_t> column_hashes(const RowBatch& b, int column) {
  std::vector<uint64_t> h(b.rows);
  for (int64_t r = 0; r < b.rows; ++r)
    h[r] = hash_value(b.columns[column], b.schema.columns[column], r, 0);
  return h;
}

Status parse_split_fractions(const std::string& text, PushOptions* o) {
  auto shown = [](const std::string& t) {
    std::string out;
    for (size_t i = 0; i < t.size() && i < 64; ++i) out += t[i] >= 0x20 && t[i] < 0x7f ? t[i] : '?';
    return t.size() > 64 ? out + "..." : out;
  };
  std::vector<std::string> fields;
  size_t start = 0;
  for (;;) {
    size_t comma = text.find(',', start);
    fields.push_back(
        text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (fields.size() < 2 || fields.size() > 3)
    return Status::Invalid(
        "split '{}' must be TRAIN,VALIDATION[,TEST] fractions, e.g. 0.8,0.2 or 0.8,0.1,0.1",
        shown(text));
  static const char* kNames[] = {"train", "validation", "test"};
  double f[3] = {0, 0, 0};
  for (size_t i = 0; i < fields.size(); ++i) {
    std::string t = fields[i];
    while (!t.empty() && t.front() == ' ') t.erase(0, 1);
    while (!t.empty() && t.back() == ' ') t.pop_back();
    // Strict: the whole field is one decimal number (from_chars takes no sign, hex, or
    // surrounding text), finite (it also parses "nan" and "inf"), within 0..1.
    auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), f[i]);
    if (t.empty() || ec != std::errc() || end != t.data() + t.size() || !std::isfinite(f[i]))
      return Status::Invalid("split '{}': the {} fraction '{}' is not a finite number", shown(text),
                             kNames[i], shown(t));
    if (f[i] < 0 || f[i] > 1)
      return Status::Invalid("split '{}': the {} fraction {} is not between 0 and 1", shown(text),
                             kNames[i], f[i]);
  }
  o->train = f[0];
  o->validation = f[1];
  o->test = f[2];
  return Status::OK();
}

Result<int64_t> split_id(const std::string& name) {
  if (name == "train") return int64_t(kTrain);
  if (name == "validation") return int64_t(kValidation);
  if (name == "test") return int64_t(kTest);
  return Status::Invalid("split '{}' is not train, validation or test", name);
}

Result<PushResult> push(DatasetStore& store, const std::string& name, RowSource& source,
                        const PushOptions& o) {
  DLSYS_RETURN_IF_ERROR(DatasetStore::check_name(name));
  if (o.policy != "reject" && o.policy != "quarantine")
    return Status::Invalid("policy '{}' is not reject or quarantine", o.policy);
  double fsum = o.train + o.validation + o.test;
  if (o.train < 0 || o.validation < 0 || o.test < 0 || std::fabs(fsum - 1) > 1e-6)
    return Status::Invalid("split fractions {}, {}, {} must be >= 0 and sum to 1", o.train,
                           o.validation, o.test);
  auto t0 = std::chrono::steady_clock::now();
  const Schema& in = source.schema();
  int key_col = -1;
  if (!o.split_key.empty()) {
    key_col = in.index(o.split_key);
    if (key_col < 0)
      return Status::Invalid("split key '{}' is not a column (columns: {})", o.split_key,
                             fmt::join(
                                 [&] {
                                   std::vector<std::string> n;
                                   for (auto& c : in.columns) n.push_back(c.name);
                                   return n;
                                 }(),
                                 ", "));
  }
  Schema full = in;
  full.columns.push_back({"__row", ColumnType::kInt64, {}, {}});
  full.columns.push_back({"__split", ColumnType::kInt64, {}, {}});
  StatsBuilder stats(in);
  PushResult res;
  std::vector<BadRow> quarantined;
  int64_t split_rows[3] = {0, 0, 0};
  bool keep_all_bad = o.policy == "quarantine";
  ShardWriter writer(store, o.zstd_level);
  auto cleanup = [&] {
    (void)writer.finish();
    for (const auto& s : writer.staged) store.discard_staged(s.tmp);
  };
  while (true) {
    auto batch = source.next(o.shard_rows, o.shard_bytes);
    if (!batch.ok()) {
      cleanup();
      return batch.status();
    }
    SourceBatch& sb = *batch;
    if (sb.rows.rows == 0 && sb.bad.empty()) break;
    for (auto& b : sb.bad) {
      ++res.bad_rows;
      if (keep_all_bad || quarantined.size() < kBadSample) quarantined.push_back(std::move(b));
    }
    std::vector<uint8_t> keep = validate(sb.rows, sb.lines, o.rules ? &*o.rules : nullptr,
                                         &quarantined, &res.bad_rows, keep_all_bad);
    RowBatch good;
    if (std::find(keep.begin(), keep.end(), 0) == keep.end()) {
      good = std::move(sb.rows);
    } else {
      good = RowBatch::empty(in);
      for (int64_t r = 0; r < sb.rows.rows; ++r)
        if (keep[r]) good.append_row(sb.rows, r);
    }
    if (good.rows > 0) {
      stats.add(good);
      std::vector<uint64_t> rh = row_hashes(good);
      std::vector<uint64_t> kh = key_col >= 0 ? column_hashes(good, key_col) : rh;
      ColumnData row_col, split_col;
      row_col.i64.resize(good.rows);
      split_col.i64.resize(good.rows);
      for (int64_t r = 0; r < good.rows; ++r) {
        row_col.i64[r] = static_cast<int64_t>(rh[r]);
        // A second mix so that the split does not correlate with the row hash's low bits.
        double u = (XXH3_64bits_withSeed(&kh[r], 8, 0x5eed) >> 11) * 0x1.0p-53;
        int64_t s = u < o.train ? kTrain : u < o.train + o.validation ? kValidation : kTest;
        split_col.i64[r] = s;
        ++split_rows[s];
      }
      good.schema = full;
      good.columns.push_back(std::move(row_col));
      good.columns.push_back(std::move(split_col));
      res.rows += good.rows;
      if (o.policy == "quarantine" || res.bad_rows == 0) writer.add(std::move(good));
    }
    if (o.progress) o.progress(source.done(), source.total(), res.rows);
  }
  Status st = writer.finish();
  if (!st.ok()) {
    cleanup();
    return st;
  }
  if (res.bad_rows > 0 && o.policy == "reject") {
    cleanup();
    return Status::Invalid(
        "{} of {} rows break the schema; nothing was written:{}\nFix those rows, or push with "
        "--policy quarantine to keep them aside as their own version",
        res.bad_rows, res.rows + res.bad_rows, bad_rows_report(quarantined, res.bad_rows));
  }
  if (res.rows == 0) {
    cleanup();
    return Status::Invalid("no rows to push: the source is empty or every row is bad{}",
                           bad_rows_report(quarantined, res.bad_rows));
  }
  // Publish the shards, then the manifest and the version ref.
  json shards = json::array();
  for (const auto& s : writer.staged) {
    bool existed = store.has_shard(s.id);
    DLSYS_RETURN_IF_ERROR(store.publish_shard(s.id, s.tmp));
    ++res.shards;
    res.stored_bytes += s.bytes;
    if (!existed) ++res.shards_new, res.new_bytes += s.bytes;
    shards.push_back(
        {{"id", s.id}, {"rows", s.rows}, {"bytes", s.bytes}, {"raw_bytes", s.raw_bytes}});
  }
  const char* user = std::getenv("USER");
  json manifest = {
      {"format", "dlsys.dataset/1"},
      {"schema", full.to_json()},
      {"rows", res.rows},
      {"shards", std::move(shards)},
      {"stats", stats.finish()},
      {"split",
       {{"fractions", {{"train", o.train}, {"validation", o.validation}, {"test", o.test}}},
        {"key", o.split_key.empty() ? json(nullptr) : json(o.split_key)},
        {"rows",
         {{"train", split_rows[0]}, {"validation", split_rows[1]}, {"test", split_rows[2]}}}}},
      {"message", o.message},
      {"author", !o.author.empty() ? o.author
                 : user            ? user
                                   : "unknown"},
      {"source", source.describe()},
      {"validation", {{"policy", o.policy}, {"bad_rows", res.bad_rows}}}};
  if (o.rules) {
    json rules = json::array();
    for (const auto& c : o.rules->columns) {
      json r = {{"name", c.name}, {"type", column_type_name(c.type)}};
      if (c.rules.min) r["min"] = *c.rules.min;
      if (c.rules.max) r["max"] = *c.rules.max;
      if (!c.rules.allowed.empty()) r["allowed"] = c.rules.allowed;
      if (c.rules.not_null) r["not_null"] = true;
      rules.push_back(std::move(r));
    }
    manifest["validation"]["rules"] = std::move(rules);
  }
  DLSYS_ASSIGN_OR_RETURN(res.version, store.commit(name, std::move(manifest), &res.unchanged));
  if (!quarantined.empty()) {
    Schema qs;
    qs.columns = {{"line", ColumnType::kInt64, {}, {}},
                  {"column", ColumnType::kString, {}, {}},
                  {"reason", ColumnType::kString, {}, {}},
                  {"text", ColumnType::kString, {}, {}}};
    RowBatch q = RowBatch::empty(qs);
    for (const auto& b : quarantined) {
      q.columns[0].i64.push_back(b.line);
      for (int c = 1; c < 4; ++c) {
        const std::string& v = c == 1 ? b.column : c == 2 ? b.reason : b.text;
        q.columns[c].bytes += v;
        q.columns[c].offsets.push_back(q.columns[c].bytes.size());
      }
      ++q.rows;
    }
    DLSYS_ASSIGN_OR_RETURN(std::string bytes, encode_shard(q, o.zstd_level));
    DLSYS_ASSIGN_OR_RETURN(std::string id, store.put_shard(bytes));
    StatsBuilder qstats(qs);
    qstats.add(q);
    json qm = {{"format", "dlsys.dataset/1"},
               {"schema", qs.to_json()},
               {"rows", q.rows},
               {"shards", json::array({{{"id", id},
                                        {"rows", q.rows},
                                        {"bytes", bytes.size()},
                                        {"raw_bytes", q.memory_bytes()}}})},
               {"stats", qstats.finish()},
               {"message", fmt::format("rows of {} that broke the schema", res.version.label())},
               {"author", !o.author.empty() ? o.author
                          : user            ? user
                                            : "unknown"},
               {"source", source.describe()},
               {"quarantine_of", res.version.label()}};
    DLSYS_ASSIGN_OR_RETURN(res.quarantine, store.commit(name + ".quarantine", std::move(qm),
                                                        &res.quarantine_unchanged));
  }
  for (size_t i = 0; i < quarantined.size() && i < kBadSample; ++i)
    res.bad_sample.push_back(quarantined[i]);
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace dlsys::data
