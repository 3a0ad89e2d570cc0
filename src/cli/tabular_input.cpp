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
                              const std::vector<std::string>& names, int64_t features,
                              std::vector<std::vector<std::string>>* texts) {
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
    const std::string* name = j < static_cast<int64_t>(names.size()) ? &names[j] : nullptr;
    if (name && meta.takes_string(*name)) {
      // Goes to the model as the string itself (a null as "": no category).
      (*texts)[j].push_back(v.is_null() ? "" : v.is_string() ? v.get<std::string>() : v.dump());
      return 0.0f;
    }
    if (v.is_null()) return kNaN;
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
                                const std::vector<std::string>& names, int64_t features,
                                std::vector<std::vector<std::string>>* texts) {
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
      for (size_t j = 0; j < cols.size(); ++j) {
        const int c = cols[j];
        const data::ColumnData& d = b.rows.columns[c];
        const data::ColumnSchema& cs = b.rows.schema.columns[c];
        if (by_name && meta.takes_string(cs.name)) {
          // Goes to the model as the string itself (a null as "": no category).
          std::string text = d.is_null(r)                           ? std::string()
                             : cs.type == data::ColumnType::kString ? std::string(d.str(r))
                             : cs.type == data::ColumnType::kInt64  ? std::to_string(d.i64[r])
                                                                    : number_text(d.f64[r]);
          (*texts)[j].push_back(std::move(text));
          values.push_back(0.0f);
        } else if (d.is_null(r)) {
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

// Rows of `path` for a model that takes string columns as STRING inputs (its metadata's
// string_inputs): the float input gets the other features, each string input its column.
Result<std::map<std::string, Tensor>> read_rows_with_strings(const std::string& path,
                                                             const Graph& model,
                                                             const ModelMetadata& meta) {
  const std::vector<std::string>& names = meta.feature_names;
  const int64_t nf = static_cast<int64_t>(names.size());
  std::vector<std::vector<std::string>> texts(names.size());
  DLSYS_ASSIGN_OR_RETURN(Tensor all, extension(path) == ".json"
                                         ? read_json_rows(path, meta, names, nf, &texts)
                                         : read_source_rows(path, meta, names, nf, &texts));
  const int64_t n = all.dim(0);
  std::map<std::string, Tensor> out;
  std::vector<int64_t> numeric;
  for (int64_t j = 0; j < nf; ++j) {
    if (!meta.takes_string(names[j])) {
      numeric.push_back(j);
      continue;
    }
    if (static_cast<int64_t>(texts[j].size()) != n)
      return Status::Invalid("{}: column '{}' has {} values for {} rows", path, names[j],
                             texts[j].size(), n);
    out[names[j]] = Tensor::from_strings({n, 1}, texts[j]);
  }
  if (!numeric.empty()) {
    const ValueInfo* in = nullptr;
    for (const ValueInfo& v : model.inputs)
      if (v.dtype == DType::kF32 && !meta.takes_string(v.name)) in = &v;
    if (!in)
      return Status::Invalid("the model has no float input for its {} numeric features",
                             numeric.size());
    Tensor x = Tensor::empty(DType::kF32, {n, static_cast<int64_t>(numeric.size())});
    const float* a = all.data_as<float>();
    float* o = x.data_as<float>();
    for (int64_t r = 0; r < n; ++r)
      for (size_t k = 0; k < numeric.size(); ++k)
        o[r * numeric.size() + k] = a[r * nf + numeric[k]];
    out[in->name] = x;
  }
  return out;
}

}  // namespace

bool is_tabular_path(const std::string& path) {
  std::string e = extension(path);
  return e == ".csv" || e == ".tsv" || e == ".jsonl" || e == ".json";
}

Result<Tensor> read_input_file(const std::string& path, const Graph& model,
                               const ValueInfo& input) {
  if (!is_tabular_path(path)) return npy_read(path);
  ModelMetadata meta = ModelMetadata::read(model);
  if (!meta.string_inputs.empty()) {
    DLSYS_ASSIGN_OR_RETURN(auto all, read_rows_with_strings(path, model, meta));
    auto it = all.find(input.name);
    if (it == all.end())
      return Status::Invalid("{}: rows fill the model's feature inputs; '{}' is not one of them",
                             path, input.name);
    return it->second;
  }
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
  std::vector<std::string> names = meta.feature_names;
  if (static_cast<int64_t>(names.size()) != features) names.clear();
  std::vector<std::vector<std::string>> texts(names.size());
  DLSYS_ASSIGN_OR_RETURN(Tensor t, extension(path) == ".json"
                                       ? read_json_rows(path, meta, names, features, &texts)
                                       : read_source_rows(path, meta, names, features, &texts));
  Shape s = {t.dim(0)};
  for (size_t d = 1; d < input.dims.size(); ++d) s.push_back(input.dims[d].value);
  return t.view(s);
}

Result<std::map<std::string, Tensor>> read_rows(const std::string& path, const Graph& model) {
  ModelMetadata meta = ModelMetadata::read(model);
  if (!meta.string_inputs.empty()) return read_rows_with_strings(path, model, meta);
  if (model.inputs.size() != 1)
    return Status::Invalid("{}: rows fill a model with one input; this one has {} (give NAME=FILE)",
                           path, model.inputs.size());
  DLSYS_ASSIGN_OR_RETURN(Tensor t, read_input_file(path, model, model.inputs[0]));
  return std::map<std::string, Tensor>{{model.inputs[0].name, t}};
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
