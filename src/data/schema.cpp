#include "data/schema.h"

#include "core/utf8.h"

#include <yaml-cpp/yaml.h>

#include <fstream>

namespace dlsys::data {

const char* column_type_name(ColumnType t) {
  switch (t) {
    case ColumnType::kInt64:
      return "int64";
    case ColumnType::kFloat64:
      return "float64";
    case ColumnType::kString:
      return "string";
    case ColumnType::kTensorU8:
      return "tensor<u8>";
    case ColumnType::kTensorF32:
      return "tensor<f32>";
  }
  return "?";
}

Result<ColumnType> parse_column_type(const std::string& s) {
  if (s == "int64" || s == "int" || s == "integer") return ColumnType::kInt64;
  if (s == "float64" || s == "float" || s == "double" || s == "number") return ColumnType::kFloat64;
  if (s == "string" || s == "str" || s == "text") return ColumnType::kString;
  if (s == "tensor<u8>") return ColumnType::kTensorU8;
  if (s == "tensor<f32>") return ColumnType::kTensorF32;
  return Status::Invalid(
      "unknown column type '{}'; use int64, float64, string, tensor<u8> or tensor<f32>", s);
}

int64_t ColumnSchema::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t ColumnSchema::elem_bytes() const {
  switch (type) {
    case ColumnType::kInt64:
    case ColumnType::kFloat64:
      return 8;
    case ColumnType::kTensorU8:
      return 1;
    case ColumnType::kTensorF32:
      return 4;
    case ColumnType::kString:
      return 1;
  }
  return 1;
}

int Schema::index(const std::string& name) const {
  for (size_t i = 0; i < columns.size(); ++i)
    if (columns[i].name == name) return static_cast<int>(i);
  return -1;
}

json Schema::to_json() const {
  json cols = json::array();
  for (const auto& c : columns) {
    json jc = {{"name", c.name}, {"type", column_type_name(c.type)}};
    if (is_tensor(c.type)) jc["shape"] = c.shape;
    cols.push_back(std::move(jc));
  }
  return json{{"columns", std::move(cols)}};
}

Result<Schema> Schema::from_json(const json& j) {
  Schema s;
  if (!j.is_object() || !j.contains("columns") || !j["columns"].is_array())
    return Status::Invalid("schema: expected an object with a 'columns' array");
  for (const auto& jc : j["columns"]) {
    if (!jc.is_object() || !jc.contains("name") || !jc["name"].is_string() ||
        !jc.contains("type") || !jc["type"].is_string())
      return Status::Invalid("schema: each column needs a string 'name' and 'type'");
    ColumnSchema c;
    c.name = jc["name"].get<std::string>();
    DLSYS_ASSIGN_OR_RETURN(c.type, parse_column_type(jc["type"].get<std::string>()));
    if (is_tensor(c.type)) {
      if (!jc.contains("shape") || !jc["shape"].is_array())
        return Status::Invalid("schema: tensor column '{}' needs a 'shape' array", c.name);
      for (const auto& d : jc["shape"]) {
        if (!d.is_number_integer() || d.get<int64_t>() <= 0)
          return Status::Invalid("schema: column '{}' has a non-positive dimension", c.name);
        c.shape.push_back(d.get<int64_t>());
      }
    }
    s.columns.push_back(std::move(c));
  }
  return s;
}

Status check_column_name(const std::string& name) {
  if (name.empty()) return Status::Invalid("a column name is empty");
  if (size_t bad = 0; !is_valid_utf8(name, &bad))
    return Status::Invalid(
        "a column name is not valid UTF-8 (byte {} of it); save the file as UTF-8", bad);
  if (name.size() > 128)
    return Status::Invalid("column name '{}...' is longer than 128 bytes", name.substr(0, 20));
  if (name.rfind("__", 0) == 0)
    return Status::Invalid("column name '{}' starts with '__', which dlsys reserves; rename it",
                           name);
  return Status::OK();
}

Result<SchemaFile> read_schema_file(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    return Status::IOError("cannot read schema file {}", path);
  } catch (const YAML::Exception& e) {
    return Status::Invalid("{}:{}: {}", path, e.mark.line + 1, e.msg);
  }
  auto at = [&](const YAML::Node& n) { return fmt::format("{}:{}", path, n.Mark().line + 1); };
  if (!root.IsMap()) return Status::Invalid("{}: expected a map with 'columns'", path);
  SchemaFile out;
  // Iterate by value: yaml-cpp's iterator proxies dangle when bound to references.
  for (const auto& kv : root) {
    YAML::Node k = kv.first;
    std::string key = k.as<std::string>();
    if (key != "columns" && key != "policy")
      return Status::Invalid("{}: unknown field '{}'; the fields are columns and policy", at(k),
                             key);
  }
  if (root["policy"]) {
    out.policy = root["policy"].as<std::string>();
    if (out.policy != "reject" && out.policy != "quarantine")
      return Status::Invalid("{}: policy '{}' is not reject or quarantine", at(root["policy"]),
                             out.policy);
  }
  YAML::Node cols = root["columns"];
  if (!cols || !cols.IsSequence())
    return Status::Invalid("{}: 'columns' must be a list of {{name, type, ...}}", path);
  try {
    for (const auto& n : cols) {
      if (!n.IsMap()) return Status::Invalid("{}: each column is a map", at(n));
      ColumnSchema c;
      for (const auto& kv : n) {
        YAML::Node k = kv.first, v = kv.second;
        std::string key = k.as<std::string>();
        if (key == "name") {
          c.name = v.as<std::string>();
        } else if (key == "type") {
          auto t = parse_column_type(v.as<std::string>());
          if (!t.ok()) return t.status().with_context(at(v));
          c.type = *t;
        } else if (key == "min") {
          c.rules.min = v.as<double>();
        } else if (key == "max") {
          c.rules.max = v.as<double>();
        } else if (key == "allowed") {
          if (!v.IsSequence()) return Status::Invalid("{}: 'allowed' must be a list", at(v));
          for (const auto& a : v) c.rules.allowed.push_back(a.as<std::string>());
        } else if (key == "not_null") {
          c.rules.not_null = v.as<bool>();
        } else if (key == "shape") {
          for (const auto& d : v) c.shape.push_back(d.as<int64_t>());
        } else {
          return Status::Invalid(
              "{}: unknown column field '{}'; use name, type, min, max, allowed, not_null, shape",
              at(k), key);
        }
      }
      if (c.name.empty()) return Status::Invalid("{}: a column has no name", at(n));
      if (!n["type"]) return Status::Invalid("{}: column '{}' has no type", at(n), c.name);
      if (c.rules.min && c.rules.max && *c.rules.min > *c.rules.max)
        return Status::Invalid("{}: column '{}' has min > max", at(n), c.name);
      if (out.schema.index(c.name) >= 0)
        return Status::Invalid("{}: column '{}' appears twice", at(n), c.name);
      out.schema.columns.push_back(std::move(c));
    }
  } catch (const YAML::Exception& e) {
    return Status::Invalid("{}:{}: {}", path, e.mark.line + 1, e.msg);
  }
  return out;
}

}  // namespace dlsys::data
