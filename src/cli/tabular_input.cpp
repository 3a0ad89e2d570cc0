#include "cli/tabular_input.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>

#include "cli/client_options.h"
#include "core/file_util.h"
#include "data/ingest.h"
#include "tensor/npy.h"

namespace dlsys::cli {

namespace {

using json = nlohmann::json;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::string extension(const std::string& path) {
  std::string e = std::filesystem::path(path).extension().string();
  std::transform(e.begin(), e.end(), e.begin(), ::tolower);
  return e;
}

// Rows from a .json array: objects by column name, or arrays of numbers in order.
Result<Tensor> read_json_rows(const std::string& path, const ModelMetadata& meta,
                              const std::vector<std::string>& names, int64_t features) {
  DLSYS_ASSIGN_OR_RETURN(std::string text, read_file(path));
  json rows = json::parse(text, nullptr, false);
  if (rows.is_discarded())
    return Status::Invalid("{} is not valid JSON (a .json input holds an array of rows)", path);
  if (!rows.is_array())
    return Status::Invalid("{}: a .json input holds an array of rows, got {}", path,
                           json_type_phrase(rows));
  const int64_t n = static_cast<int64_t>(rows.size());
  Tensor t = Tensor::empty(DType::kF32, {n, features});
  float* out = t.data_as<float>();
  // Feature j's value in row r: a number, null (NaN), or a category name of a string feature.
  auto number = [&](const json& v, int64_t r, int64_t j, const std::string& col) -> Result<float> {
    if (v.is_null()) return kNaN;
    const std::string* name = j < static_cast<int64_t>(names.size()) ? &names[j] : nullptr;
    if (name && meta.is_categorical(*name))
      return *meta.encode(*name, v.is_string() ? v.get<std::string>() : v.dump());
    if (!v.is_number())
      return Status::Invalid("{}: row {} column {}: {} is not a number", path, r, col, v.dump());
    return v.get<float>();
  };
  for (int64_t r = 0; r < n; ++r) {
    const json& row = rows[r];
    if (row.is_object()) {
      if (names.empty())
        return Status::Invalid(
            "{}: row {} is an object, but the model does not name its features (it was not "
            "trained by dlsys); give each row as an array of {} numbers",
            path, r, features);
      for (int64_t j = 0; j < features; ++j) {
        auto v = row.find(names[j]);  // NOLINT
        if (v == row.end())
          return Status::Invalid("{}: row {} has no column '{}', a feature of the model", path, r,
                                 names[j]);
        DLSYS_ASSIGN_OR_RETURN(out[r * features + j], number(*v, r, j, "'" + names[j] + "'"));
      }
    } else if (row.is_array()) {
      if (static_cast<int64_t>(row.size()) != features)
        return Status::Invalid("{}: row {} has {} values; the model takes {} features", path, r,
                               row.size(), features);
      for (int64_t j = 0; j < features; ++j) {
        DLSYS_ASSIGN_OR_RETURN(out[r * features + j], number(row[j], r, j, std::to_string(j)));
      }
    } else {
      return Status::Invalid("{}: row {} is {}, not an object or an array", path, r,
                             json_type_phrase(row));
    }
  }
  return t;
}

// Rows from a CSV, TSV or JSONL file through the data module's ingest sources.
Result<Tensor> read_source_rows(const std::string& path, const ModelMetadata& meta,
                                const std::vector<std::string>& names, int64_t features) {
  DLSYS_ASSIGN_OR_RETURN(auto src, data::open_source(path, "", data::IngestOptions{}));
  const data::Schema& schema = src->schema();
  std::vector<int> cols;
  bool by_name = !names.empty();
  for (const std::string& n : names) by_name = by_name && schema.index(n) >= 0;
  if (by_name) {
    for (const std::string& n : names) cols.push_back(schema.index(n));
  } else {
    for (size_t c = 0; c < schema.columns.size(); ++c)
      if (data::is_numeric_scalar(schema.columns[c].type)) cols.push_back(static_cast<int>(c));
    if (static_cast<int64_t>(cols.size()) != features) {
      std::string missing;
      for (const std::string& n : names)
        if (schema.index(n) < 0) missing += (missing.empty() ? "'" : ", '") + n + "'";
      return Status::Invalid(
          "{} has {} numeric columns, but the model takes {} features{}", path, cols.size(),
          features,
          missing.empty() ? ""
                          : fmt::format(" and the file lacks the columns it was trained on: {}",
                                        missing.substr(0, 200) + "'"));
    }
  }
  std::vector<float> values;
  int64_t rows = 0;
  for (;;) {
    DLSYS_ASSIGN_OR_RETURN(data::SourceBatch b, src->next(4096, 64 << 20));
    if (!b.bad.empty())
      return Status::Invalid("{}:{}: {}{}", path, b.bad[0].line, b.bad[0].reason,
                             b.bad[0].column.empty() ? "" : " (column '" + b.bad[0].column + "')");
    if (b.rows.rows == 0) break;
    for (int64_t r = 0; r < b.rows.rows; ++r) {
      for (int c : cols) {
        const data::ColumnData& d = b.rows.columns[c];
        const data::ColumnSchema& cs = b.rows.schema.columns[c];
        if (d.is_null(r)) {
          values.push_back(kNaN);
        } else if (meta.is_categorical(cs.name)) {
          // A category name; a file whose names all look like numbers was read as numbers.
          std::string text = cs.type == data::ColumnType::kString  ? std::string(d.str(r))
                             : cs.type == data::ColumnType::kInt64 ? std::to_string(d.i64[r])
                                                                   : number_text(d.f64[r]);
          values.push_back(*meta.encode(cs.name, text));
        } else if (cs.type == data::ColumnType::kInt64) {
          values.push_back(static_cast<float>(d.i64[r]));
        } else if (cs.type == data::ColumnType::kFloat64) {
          values.push_back(static_cast<float>(d.f64[r]));
        } else {
          return Status::Invalid(
              "{}:{}: column '{}' holds '{}', not a number", path, b.lines[r], cs.name,
              cs.type == data::ColumnType::kString ? std::string(d.str(r)) : "a tensor");
        }
      }
    }
    rows += b.rows.rows;
  }
  if (rows == 0) return Status::Invalid("{} has no rows", path);
  return Tensor::from_f32({rows, features}, values.data());
}

}  // namespace

bool is_tabular_path(const std::string& path) {
  std::string e = extension(path);
  return e == ".csv" || e == ".tsv" || e == ".jsonl" || e == ".json";
}

Result<Tensor> read_input_file(const std::string& path, const Graph& model,
                               const ValueInfo& input) {
  if (!is_tabular_path(path)) return npy_read(path);
  if (input.dtype != DType::kF32)
    return Status::Invalid("input '{}' is {}; rows from {} fill f32 inputs only", input.name,
                           dtype_name(input.dtype), path);
  int64_t features = 1;
  for (size_t d = 1; d < input.dims.size(); ++d) {
    if (!input.dims[d].fixed())
      return Status::Invalid("input '{}' has a symbolic dimension; rows fill [N, features]",
                             input.name);
    features *= input.dims[d].value;
  }
  ModelMetadata meta = ModelMetadata::read(model);
  std::vector<std::string> names = meta.feature_names;
  if (static_cast<int64_t>(names.size()) != features) names.clear();
  DLSYS_ASSIGN_OR_RETURN(Tensor t, extension(path) == ".json"
                                       ? read_json_rows(path, meta, names, features)
                                       : read_source_rows(path, meta, names, features));
  Shape s = {t.dim(0)};
  for (size_t d = 1; d < input.dims.size(); ++d) s.push_back(input.dims[d].value);
  return t.view(s);
}

json predictions_json(const std::vector<Prediction>& p) {
  json rows = json::array();
  for (size_t i = 0; i < p.size(); ++i) {
    json j = {{"row", i}};
    if (p[i].class_id >= 0) {
      j["class"] = p[i].class_name;
      j["class_id"] = p[i].class_id;
      j["probability"] = p[i].probability;
      j["probabilities"] = p[i].probabilities;
    } else {
      j["values"] = p[i].values;
    }
    rows.push_back(std::move(j));
  }
  return rows;
}

void print_predictions(const std::vector<Prediction>& p) {
  std::vector<std::vector<std::string>> rows;
  bool classes = !p.empty() && p[0].class_id >= 0;
  rows.push_back(classes ? std::vector<std::string>{"row", "class", "probability"}
                         : std::vector<std::string>{"row", "prediction"});
  for (size_t i = 0; i < p.size(); ++i) {
    if (classes) {
      rows.push_back({std::to_string(i), p[i].class_name, fmt::format("{:.4f}", p[i].probability)});
    } else {
      std::string v;
      for (size_t k = 0; k < p[i].values.size() && k < 8; ++k)
        v += (k ? " " : "") + number_text(p[i].values[k]);
      if (p[i].values.size() > 8) v += " ...";
      rows.push_back({std::to_string(i), v});
    }
  }
  print_table(rows);
}

}  // namespace dlsys::cli
