// Schema of a dataset: named, typed columns, and the validation rules a push checks rows
// against. Column types: int64, float64, string (scalars, nullable), and fixed-shape tensors of
// uint8 or float32 (images, feature vectors). Column names starting with "__" are reserved for
// the columns dlsys adds itself (__row: a hash of the row, __split: its split).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"

namespace dlsys::data {

using nlohmann::json;

enum class ColumnType { kInt64, kFloat64, kString, kTensorU8, kTensorF32 };

// "int64", "float64", "string", "tensor<u8>", "tensor<f32>".
const char* column_type_name(ColumnType t);
// Parses a type name (also "int", "float", "double", "str"); errors list the accepted names.
Result<ColumnType> parse_column_type(const std::string& s);
inline bool is_tensor(ColumnType t) {
  return t == ColumnType::kTensorU8 || t == ColumnType::kTensorF32;
}
inline bool is_numeric_scalar(ColumnType t) {
  return t == ColumnType::kInt64 || t == ColumnType::kFloat64;
}

// Validation rules of one column (from a schema file); unset rules are not checked.
struct ColumnRules {
  std::optional<double> min, max;    // inclusive range of numeric values
  std::vector<std::string> allowed;  // the values a string (or integer) column may take
  bool not_null = false;
};

struct ColumnSchema {
  std::string name;
  ColumnType type = ColumnType::kFloat64;
  std::vector<int64_t> shape;  // tensor columns: the shape of one row's value
  ColumnRules rules;
  // Elements per row (1 for scalars) and bytes per element of the stored payload.
  int64_t numel() const;
  int64_t elem_bytes() const;
};

struct Schema {
  std::vector<ColumnSchema> columns;
  // Index of the column named `name`, or -1.
  int index(const std::string& name) const;
  // {"columns":[{"name":..,"type":..,"shape":[..]}]} (rules are not part of a version's schema).
  json to_json() const;
  static Result<Schema> from_json(const json& j);
};

// A schema file given to `dlsys data push --schema`: column types and rules, and the policy for
// rows that break them.
struct SchemaFile {
  Schema schema;                  // columns named in the file, in file order
  std::string policy = "reject";  // "reject" or "quarantine"
};
// Parses a YAML schema file:
//   columns:
//     - {name: age, type: int64, min: 0, max: 120, not_null: true}
//     - {name: color, type: string, allowed: [red, green]}
//   policy: reject
// Errors name the file, the line and the field.
Result<SchemaFile> read_schema_file(const std::string& path);

// Names a user may give a column: non-empty, at most 128 bytes, not starting with "__".
Status check_column_name(const std::string& name);

}  // namespace dlsys::data
