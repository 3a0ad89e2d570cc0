// JSONL ingest: one JSON object per line. Keys become columns in order of first appearance
// among the first rows; numbers become int64 or float64, strings string, booleans int64 (0/1),
// arrays of numbers (nested to any depth, one fixed shape) tensor<f32>. A missing key or null
// is a null; a line that is not an object, or a value of another type, is a bad row.
#include <algorithm>
#include <fstream>
#include <set>

#include "data/ingest.h"

namespace dlsys::data {

namespace {

constexpr size_t kMaxLine = 16 << 20;

// Shape of a nested array of numbers; false when ragged or not numeric.
bool array_shape(const json& v, std::vector<int64_t>* shape) {
  shape->clear();
  const json* cur = &v;
  while (cur->is_array()) {
    if (cur->empty()) return false;
    shape->push_back(static_cast<int64_t>(cur->size()));
    cur = &(*cur)[0];
  }
  return cur->is_number();
}

bool flatten(const json& v, const std::vector<int64_t>& shape, size_t dim,
             std::vector<float>* out) {
  if (dim == shape.size()) {
    if (!v.is_number()) return false;
    out->push_back(v.get<float>());
    return true;
  }
  if (!v.is_array() || static_cast<int64_t>(v.size()) != shape[dim]) return false;
  for (const auto& e : v)
    if (!flatten(e, shape, dim + 1, out)) return false;
  return true;
}

class JsonlSource : public RowSource {
 public:
  JsonlSource(std::string path, IngestOptions o) : path_(std::move(path)), o_(std::move(o)) {}

  Status open() {
    in_.open(path_, std::ios::binary);
    if (!in_) return Status::IOError("cannot open {}", path_);
    in_.seekg(0, std::ios::end);
    total_ = in_.tellg();
    in_.seekg(0);
    std::vector<std::string> order;
    std::map<std::string, std::set<std::string>> kinds;
    std::map<std::string, std::vector<int64_t>> shapes;
    std::string line;
    while (static_cast<int64_t>(head_.size()) < o_.infer_rows && read_line(&line)) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      json j = json::parse(line, nullptr, false);
      head_.emplace_back(line_, std::move(j));
      const json& o = head_.back().second;
      if (!o.is_object()) continue;  // reported as a bad row later
      // json keeps an object's keys sorted: the order of first appearance comes from the line
      // read again with its keys in the order written.
      if (const auto written = nlohmann::ordered_json::parse(line, nullptr, false);
          written.is_object())
        for (const auto& [key, value] : written.items())
          if (!kinds.count(key) && std::find(order.begin(), order.end(), key) == order.end())
            order.push_back(key);
      for (auto it = o.begin(); it != o.end(); ++it) {
        auto& k = kinds[it.key()];
        const json& v = it.value();
        std::vector<int64_t> shape;
        if (v.is_null()) continue;
        if (v.is_number_integer() || v.is_boolean())
          k.insert("int");
        else if (v.is_number())
          k.insert("float");
        else if (v.is_string())
          k.insert("string");
        else if (array_shape(v, &shape)) {
          k.insert("tensor");
          if (!shapes.count(it.key())) shapes[it.key()] = shape;
        } else
          k.insert("other");
      }
    }
    if (head_.empty()) return Status::Invalid("{}: the file has no rows", path_);
    for (const auto& name : order) {
      DLSYS_RETURN_IF_ERROR(check_column_name(name).with_context(path_));
      ColumnSchema cs;
      cs.name = name;
      int si = o_.schema ? o_.schema->index(name) : -1;
      const auto& k = kinds[name];
      if (si >= 0) {
        cs = o_.schema->columns[si];
      } else if (k.count("tensor")) {
        cs.type = ColumnType::kTensorF32;
        cs.shape = shapes[name];
      } else if (k.count("string") || k.count("other")) {
        cs.type = ColumnType::kString;
      } else if (k.count("float") || k.empty()) {
        cs.type = ColumnType::kFloat64;
      } else {
        cs.type = ColumnType::kInt64;
      }
      if (is_tensor(cs.type) && cs.shape.empty()) {
        if (!shapes.count(name))
          return Status::Invalid("{}: column '{}' has type {} in the schema but no shape", path_,
                                 name, column_type_name(cs.type));
        cs.shape = shapes[name];
      }
      schema_.columns.push_back(std::move(cs));
    }
    if (o_.schema)
      for (const auto& sc : o_.schema->columns)
        if (schema_.index(sc.name) < 0)
          return Status::Invalid("{}: the schema's column '{}' is in none of the first {} rows",
                                 path_, sc.name, head_.size());
    if (schema_.columns.empty())
      return Status::Invalid("{}:{}: the first rows hold no JSON objects", path_,
                             head_.front().first);
    return Status::OK();
  }

  const Schema& schema() const override { return schema_; }
  int64_t done() const override { return consumed_; }
  int64_t total() const override { return total_; }
  json describe() const override {
    return {{"format", "jsonl"}, {"path", path_}, {"bytes", total_}};
  }

  Result<SourceBatch> next(int64_t max_rows, int64_t max_bytes) override {
    SourceBatch out;
    out.rows = RowBatch::empty(schema_);
    std::string line;
    int64_t bytes = 0;
    while (out.rows.rows < max_rows && bytes < max_bytes) {
      if ((out.rows.rows & 255) == 255) bytes = out.rows.memory_bytes();
      if (head_pos_ < head_.size()) {
        auto& [n, j] = head_[head_pos_++];
        add_row(j, n, &out);
        continue;
      }
      if (!read_line(&line)) break;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      json j = json::parse(line, nullptr, false);
      add_row(j, line_, &out);
    }
    if (too_long_) return Status::Invalid("{}:{}: a line longer than 16 MiB", path_, line_);
    return out;
  }

 private:
  bool read_line(std::string* line) {
    if (!std::getline(in_, *line)) return false;
    ++line_;
    consumed_ += line->size() + 1;
    if (line->size() > kMaxLine) {
      too_long_ = true;
      return false;
    }
    return true;
  }

  void add_row(const json& j, int64_t line, SourceBatch* out) {
    auto bad = [&](std::string column, std::string reason) {
      std::string text = j.is_discarded() ? "(not JSON)" : j.dump();
      if (text.size() > 200) text = text.substr(0, 200) + "...";
      out->bad.push_back({line, std::move(column), std::move(reason), std::move(text)});
    };
    if (j.is_discarded()) return bad("", "not valid JSON");
    if (!j.is_object()) return bad("", "not a JSON object");
    size_t n = schema_.columns.size();
    std::vector<const json*> vals(n, nullptr);
    for (size_t c = 0; c < n; ++c) {
      auto it = j.find(schema_.columns[c].name);
      if (it == j.end() || it->is_null()) continue;
      const json& v = *it;
      const ColumnSchema& cs = schema_.columns[c];
      bool ok = true;
      switch (cs.type) {
        case ColumnType::kInt64:
          ok = v.is_number_integer() || v.is_boolean();
          break;
        case ColumnType::kFloat64:
          ok = v.is_number();
          break;
        case ColumnType::kString:
          ok = true;
          break;
        default: {
          tensor_.clear();
          ok = flatten(v, cs.shape, 0, &tensor_);
        }
      }
      if (!ok)
        return bad(cs.name,
                   fmt::format("{} does not fit the column's type {}{}", v.dump(),
                               column_type_name(cs.type), is_tensor(cs.type) ? " and shape" : ""));
      vals[c] = &v;
    }
    RowBatch& b = out->rows;
    for (size_t c = 0; c < n; ++c) {
      if (!vals[c]) {
        b.append_null(static_cast<int>(c));
        continue;
      }
      const json& v = *vals[c];
      ColumnData& d = b.columns[c];
      const ColumnSchema& cs = schema_.columns[c];
      if (!d.valid.empty()) d.valid.push_back(1);
      switch (cs.type) {
        case ColumnType::kInt64:
          d.i64.push_back(v.is_boolean() ? int64_t(v.get<bool>()) : v.get<int64_t>());
          break;
        case ColumnType::kFloat64:
          d.f64.push_back(v.get<double>());
          break;
        case ColumnType::kString:
          d.bytes += v.is_string() ? v.get<std::string>() : v.dump();
          d.offsets.push_back(d.bytes.size());
          break;
        case ColumnType::kTensorF32: {
          tensor_.clear();
          flatten(v, cs.shape, 0, &tensor_);
          const uint8_t* p = reinterpret_cast<const uint8_t*>(tensor_.data());
          d.raw.insert(d.raw.end(), p, p + tensor_.size() * 4);
          break;
        }
        case ColumnType::kTensorU8: {
          tensor_.clear();
          flatten(v, cs.shape, 0, &tensor_);
          for (float x : tensor_) d.raw.push_back(static_cast<uint8_t>(std::clamp(x, 0.f, 255.f)));
          break;
        }
      }
    }
    ++b.rows;
    out->lines.push_back(line);
  }

  std::string path_;
  IngestOptions o_;
  std::ifstream in_;
  int64_t total_ = 0, consumed_ = 0, line_ = 0;
  bool too_long_ = false;
  std::vector<std::pair<int64_t, json>> head_;
  size_t head_pos_ = 0;
  Schema schema_;
  std::vector<float> tensor_;
};

}  // namespace

Result<std::unique_ptr<RowSource>> open_jsonl(const std::string& path, const IngestOptions& o) {
  auto src = std::make_unique<JsonlSource>(path, o);
  DLSYS_RETURN_IF_ERROR(src->open());
  return std::unique_ptr<RowSource>(std::move(src));
}

}  // namespace dlsys::data
