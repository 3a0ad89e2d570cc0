#include "serve/v2_codec.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "core/json_parse.h"

namespace dlsys::serve {
namespace {

using nlohmann::json;

// The protocol's datatypes, including BYTES, which dlsys has no tensor type for: it parses, so
// that the error says "the model expects FP32, got BYTES".
struct V2Type {
  const char* name;
  std::optional<DType> dtype;
};
constexpr V2Type kTypes[] = {
    {"BOOL", DType::kBool},  {"UINT8", DType::kU8},   {"INT8", DType::kI8},
    {"INT32", DType::kI32},  {"INT64", DType::kI64},  {"FP16", DType::kF16},
    {"BF16", DType::kBF16},  {"FP32", DType::kF32},   {"FP64", DType::kF64},
    {"UINT16", DType::kU16}, {"UINT32", DType::kU32}, {"UINT64", DType::kU64},
    {"INT16", DType::kI16},  {"BYTES", std::nullopt},
};

const V2Type* find_type(std::string_view name) {
  for (const auto& t : kTypes)
    if (name == t.name) return &t;
  return nullptr;
}

std::string shape_text(const std::vector<int64_t>& s) {
  return fmt::format("[{}]", fmt::join(s, ", "));
}

// Writes one JSON element into `out` (element `i` of a tensor of dtype `t`).
Status put_element(const json& v, DType t, void* out, int64_t i, const std::string& input) {
  auto bad = [&](const char* expected) {
    return Status::Invalid("input '{}': element {} is {}, expected {} for {}", input, i,
                           v.is_string() ? "a string" : v.dump().substr(0, 40), expected,
                           v2_datatype(t));
  };
  switch (t) {
    case DType::kBool:
      if (!v.is_boolean()) return bad("true or false");
      static_cast<uint8_t*>(out)[i] = v.get<bool>() ? 1 : 0;
      return Status::OK();
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16: {
      if (!v.is_number()) return bad("a number");
      double d = v.get<double>();
      float f = static_cast<float>(d);
      if (std::isfinite(d) && !std::isfinite(f)) return bad("a number within FP32's range");
      if (t == DType::kF32)
        static_cast<float*>(out)[i] = f;
      else if (t == DType::kF16)
        static_cast<uint16_t*>(out)[i] = f32_to_f16(f);
      else
        static_cast<uint16_t*>(out)[i] = f32_to_bf16(f);
      return Status::OK();
    }
    case DType::kF64:
      if (!v.is_number()) return bad("a number");
      static_cast<double*>(out)[i] = v.get<double>();
      return Status::OK();
    case DType::kU64:
      if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<int64_t>() < 0))
        return bad("an integer in 0..18446744073709551615");
      static_cast<uint64_t*>(out)[i] = v.get<uint64_t>();
      return Status::OK();
    default: {
      if (!v.is_number_integer()) return bad("an integer");
      int64_t lo = 0, hi = 0;
      if (t == DType::kI8) lo = -128, hi = 127;
      if (t == DType::kU8) lo = 0, hi = 255;
      if (t == DType::kI16) lo = -32768, hi = 32767;
      if (t == DType::kU16) lo = 0, hi = 65535;
      if (t == DType::kI32)
        lo = std::numeric_limits<int32_t>::min(), hi = std::numeric_limits<int32_t>::max();
      if (t == DType::kU32) lo = 0, hi = std::numeric_limits<uint32_t>::max();
      if (t == DType::kI64)
        lo = std::numeric_limits<int64_t>::min(), hi = std::numeric_limits<int64_t>::max();
      if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi))
        return bad(fmt::format("an integer in {}..{}", lo, hi).c_str());
      int64_t x = v.get<int64_t>();
      if (x < lo || x > hi) return bad(fmt::format("an integer in {}..{}", lo, hi).c_str());
      if (t == DType::kI8) static_cast<int8_t*>(out)[i] = static_cast<int8_t>(x);
      if (t == DType::kU8) static_cast<uint8_t*>(out)[i] = static_cast<uint8_t>(x);
      if (t == DType::kI16) static_cast<int16_t*>(out)[i] = static_cast<int16_t>(x);
      if (t == DType::kU16) static_cast<uint16_t*>(out)[i] = static_cast<uint16_t>(x);
      if (t == DType::kI32) static_cast<int32_t*>(out)[i] = static_cast<int32_t>(x);
      if (t == DType::kU32) static_cast<uint32_t*>(out)[i] = static_cast<uint32_t>(x);
      if (t == DType::kI64) static_cast<int64_t*>(out)[i] = x;
      return Status::OK();
    }
  }
}

// Flattens `data` (flat or nested arrays, row-major) into `out`, counting elements in `*n`;
// stops at `expected` + 1 so that an oversized array costs no more than the body did.
Status flatten(const json& data, DType t, void* out, int64_t expected, int64_t* n,
               const std::string& input) {
  for (const auto& v : data) {
    if (v.is_array()) {
      DLSYS_RETURN_IF_ERROR(flatten(v, t, out, expected, n, input));
      continue;
    }
    if (*n >= expected)
      return Status::Invalid("input '{}': \"data\" holds more than the {} elements its shape has",
                             input, expected);
    DLSYS_RETURN_IF_ERROR(put_element(v, t, out, *n, input));
    ++*n;
  }
  return Status::OK();
}

json element_json(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kBool:
      return t.data_as<uint8_t>()[i] != 0;
    case DType::kF32:
      return t.data_as<float>()[i];
    case DType::kF16:
      return f16_to_f32(t.data_as<uint16_t>()[i]);
    case DType::kBF16:
      return bf16_to_f32(t.data_as<uint16_t>()[i]);
    case DType::kI8:
      return t.data_as<int8_t>()[i];
    case DType::kU8:
      return t.data_as<uint8_t>()[i];
    case DType::kI32:
      return t.data_as<int32_t>()[i];
    case DType::kI64:
      return t.data_as<int64_t>()[i];
    case DType::kString:
      return t.strings()[i];
    case DType::kF64:
      return t.data_as<double>()[i];
    case DType::kI16:
      return t.data_as<int16_t>()[i];
    case DType::kU16:
      return t.data_as<uint16_t>()[i];
    case DType::kU32:
      return t.data_as<uint32_t>()[i];
    case DType::kU64:
      return t.data_as<uint64_t>()[i];
  }
  return nullptr;
}

// parameters.<key> as a non-negative integer, when present.
Result<std::optional<int64_t>> int_param(const json& params, const char* key,
                                         const std::string& where) {
  auto it = params.find(key);
  if (it == params.end() || it->is_null()) return std::optional<int64_t>();
  if (!it->is_number_integer() ||
      (it->is_number_integer() && !it->is_number_unsigned() && it->get<int64_t>() < 0))
    return Status::Invalid("{}: parameter \"{}\" must be a non-negative integer", where, key);
  return std::optional<int64_t>(it->get<int64_t>());
}

Result<bool> bool_param(const json& params, const char* key, const std::string& where) {
  auto it = params.find(key);
  if (it == params.end() || it->is_null()) return false;
  if (!it->is_boolean())
    return Status::Invalid("{}: parameter \"{}\" must be true or false", where, key);
  return it->get<bool>();
}

Result<const json*> params_of(const json& obj, const std::string& where) {
  static const json kEmpty = json::object();
  auto it = obj.find("parameters");
  if (it == obj.end() || it->is_null()) return &kEmpty;
  if (!it->is_object()) return Status::Invalid("{}: \"parameters\" must be an object", where);
  return &*it;
}

// The names in `names` quoted and joined, at most 16 of them ("'a', 'b', … (40 in all)").
std::string quoted_list(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < 16; ++i)
    s += (i ? ", '" : "'") + names[i].substr(0, 64) + "'";
  if (names.size() > 16) s += fmt::format(", … ({} in all)", names.size());
  return s;
}

std::string feature_list(const V2ModelExtras& x) {
  std::vector<std::string> names;
  for (const auto& f : x.features) names.push_back(f.name);
  return quoted_list(names);
}

// Collects the leaves of `data` (flat or nested arrays, row-major) into `out`; more than
// `expected` of them is an error.
Status leaves(const json& data, int64_t expected, std::vector<const json*>* out,
              const std::string& where) {
  for (const auto& v : data) {
    if (v.is_array()) {
      DLSYS_RETURN_IF_ERROR(leaves(v, expected, out, where));
      continue;
    }
    if (static_cast<int64_t>(out->size()) >= expected)
      return Status::Invalid("{}: \"data\" holds more than the {} elements its shape has", where,
                             expected);
    out->push_back(&v);
  }
  return Status::OK();
}

uint32_t read_u32_le(const char* p) {
  const auto* b = reinterpret_cast<const unsigned char*>(p);
  return static_cast<uint32_t>(b[0]) | static_cast<uint32_t>(b[1]) << 8 |
         static_cast<uint32_t>(b[2]) << 16 | static_cast<uint32_t>(b[3]) << 24;
}

// The "name" of request input `in` (an object); errors name the input (`where`).
Result<std::string> input_name(const json& in, const std::string& where) {
  if (!in.is_object()) return Status::Invalid("{} must be an object", where);
  auto it = in.find("name");
  if (it == in.end() || !it->is_string())
    return Status::Invalid("{} needs a string \"name\"", where);
  return it->get<std::string>();
}

// The column form: one input per raw feature of the model, assembled into its input f32
// [N, F] in feature order (serve/v2_extras.h). Sets req->inputs, batch_rows and columns.
Status parse_columns(const json& inputs, std::string_view binary, size_t jlen,
                     const std::vector<TensorSpec>& model_inputs, const V2ModelExtras& x,
                     const V2Limits& limits, V2InferRequest* req) {
  constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
  const TensorSpec& target = model_inputs[x.feature_input];
  const size_t nf = x.features.size();
  std::vector<std::optional<std::vector<float>>> cols(nf);
  std::string first_column;
  size_t binary_used = 0;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const json& in = inputs[k];
    std::string where = fmt::format("inputs[{}]", k);
    DLSYS_ASSIGN_OR_RETURN(std::string name, input_name(in, where));
    int f = x.feature_index(name);
    if (f < 0)
      return Status::Invalid(
          "input '{}' is not a feature of the model (its features: {}; or send its input '{}' "
          "as one tensor)",
          name.substr(0, 128), feature_list(x), target.name);
    if (cols[f]) return Status::Invalid("column '{}' is given twice", name);
    const V2Feature& feat = x.features[f];
    where = "column '" + name + "'";

    auto dt_it = in.find("datatype");
    if (dt_it == in.end() || !dt_it->is_string())
      return Status::Invalid(
          "{} needs a string \"datatype\" ({})", where,
          feat.categorical ? "BYTES for its category names" : "FP32, FP64, INT32 or INT64");
    const std::string dt = dt_it->get<std::string>();
    const bool bytes = dt == "BYTES";
    if (feat.categorical && !bytes)
      return Status::Invalid(
          "{}: feature '{}' takes category names; send them as datatype BYTES, not {}", where, name,
          dt.substr(0, 32));
    if (!feat.categorical && bytes)
      return Status::Invalid(
          "{}: feature '{}' is numeric; send FP32, FP64, INT32 or INT64, not BYTES (strings)",
          where, name);
    if (!feat.categorical && dt != "FP32" && dt != "FP64" && dt != "INT32" && dt != "INT64")
      return Status::Invalid(
          "{}: datatype '{}' is not one a numeric feature takes (FP32, FP64, INT32 or INT64)",
          where, dt.substr(0, 32));
    const bool integer = dt == "INT32" || dt == "INT64";

    auto shape_it = in.find("shape");
    if (shape_it == in.end() || !shape_it->is_array())
      return Status::Invalid("{} needs \"shape\": [rows] or [rows, 1]", where);
    std::vector<int64_t> shape;
    for (const auto& d : *shape_it) {
      if (!d.is_number_integer() || (!d.is_number_unsigned() && d.get<int64_t>() < 0))
        return Status::Invalid("{}: shape {} must hold non-negative integers", where,
                               shape_it->dump().substr(0, 80));
      shape.push_back(d.get<int64_t>());
    }
    if (shape.empty() || shape.size() > 2 || (shape.size() == 2 && shape[1] != 1))
      return Status::Invalid("{}: shape {} is not a column; send [rows] or [rows, 1]", where,
                             shape_text(shape));
    const int64_t n = shape[0];
    if (n < 1)
      return Status::Invalid("{}: shape {} needs at least 1 row", where, shape_text(shape));
    if (n > limits.max_elements)
      return Status::Invalid("{}: shape {} holds more than {} elements", where, shape_text(shape),
                             limits.max_elements);
    if (req->batch_rows == 0) {
      req->batch_rows = n;
      first_column = name;
    } else if (n != req->batch_rows) {
      return Status::Invalid(
          "{}: {} rows, but column '{}' has {}; every column carries the same rows", where, n,
          first_column, req->batch_rows);
    }

    // Allocated once the body is known to hold the column: a shape alone allocates nothing.
    std::vector<float> values;
    // A category name's code (unknown names: -1, as an unseen category).
    auto category = [&](std::string_view text) { return *x.metadata.encode(name, text); };
    DLSYS_ASSIGN_OR_RETURN(const json* ip, params_of(in, where));
    DLSYS_ASSIGN_OR_RETURN(std::optional<int64_t> bsize, int_param(*ip, "binary_data_size", where));
    auto data_it = in.find("data");
    if (bsize) {
      if (data_it != in.end())
        return Status::Invalid("{} has both \"data\" and parameter binary_data_size; send one",
                               where);
      const size_t size = static_cast<size_t>(*bsize);
      if (binary.size() - binary_used < size)
        return Status::Invalid(
            "{}: its {} bytes of binary data go past the end of the body ({} bytes follow the "
            "JSON header, {} taken by earlier inputs)",
            where, size, binary.size(), binary_used);
      const char* p = binary.data() + binary_used;
      if (bytes) {
        if (size / 4 < static_cast<size_t>(n))
          return Status::Invalid(
              "{}: binary_data_size is {} bytes, too few for {} BYTES elements (each takes a "
              "4-byte length)",
              where, size, n);
        values.resize(static_cast<size_t>(n));
        size_t off = 0;
        for (int64_t i = 0; i < n; ++i) {
          if (size - off < 4)
            return Status::Invalid(
                "{}: BYTES element {} at byte offset {} needs a 4-byte length, but {} of its {} "
                "bytes remain",
                where, i, off, size - off, size);
          const size_t len = read_u32_le(p + off);
          if (len > size - off - 4)
            return Status::Invalid(
                "{}: BYTES element {} at byte offset {} is {} bytes long, but {} of its {} bytes "
                "remain after the length",
                where, i, off, len, size - off - 4, size);
          values[static_cast<size_t>(i)] = category(std::string_view(p + off + 4, len));
          off += 4 + len;
        }
        if (off != size)
          return Status::Invalid(
              "{}: binary_data_size is {} bytes, but its {} BYTES elements end at byte offset {}",
              where, size, n, off);
      } else {
        const size_t width = dt == "FP64" || dt == "INT64" ? 8 : 4;
        if (size != static_cast<size_t>(n) * width)
          return Status::Invalid("{}: binary_data_size is {} bytes, but shape {} of {} takes {}",
                                 where, size, shape_text(shape), dt,
                                 static_cast<size_t>(n) * width);
        values.resize(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) {
          const char* e = p + static_cast<size_t>(i) * width;
          float v = 0;
          if (dt == "FP32") {
            std::memcpy(&v, e, 4);
          } else if (dt == "FP64") {
            double d;
            std::memcpy(&d, e, 8);
            v = static_cast<float>(d);
            if (std::isfinite(d) && !std::isfinite(v))
              return Status::Invalid("{}: element {} is {}, outside FP32's range", where, i, d);
          } else if (dt == "INT32") {
            int32_t d;
            std::memcpy(&d, e, 4);
            v = static_cast<float>(d);
          } else {
            int64_t d;
            std::memcpy(&d, e, 8);
            v = static_cast<float>(d);
          }
          values[static_cast<size_t>(i)] = v;
        }
      }
      binary_used += size;
    } else {
      if (data_it == in.end() || !data_it->is_array())
        return Status::Invalid(
            "{} needs \"data\" (an array of {}, null for a missing value) or parameter "
            "binary_data_size with the bytes after the JSON",
            where, feat.categorical ? "category names" : "numbers");
      if (static_cast<size_t>(n) > jlen)
        return Status::Invalid(
            "{}: shape {} holds {} elements, more than the {}-byte request could carry", where,
            shape_text(shape), n, jlen);
      std::vector<const json*> vs;
      DLSYS_RETURN_IF_ERROR(leaves(*data_it, n, &vs, where));
      if (static_cast<int64_t>(vs.size()) != n)
        return Status::Invalid("{}: \"data\" holds {} elements, shape {} needs {}", where,
                               vs.size(), shape_text(shape), n);
      values.resize(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        const json& v = *vs[static_cast<size_t>(i)];
        float& out = values[static_cast<size_t>(i)];
        if (v.is_null()) {
          out = kNaN;
        } else if (bytes) {
          if (!v.is_string())
            return Status::Invalid("{}: element {} is {}, expected a category name (a string)",
                                   where, i, v.dump().substr(0, 40));
          out = category(v.get_ref<const std::string&>());
        } else if (integer ? !v.is_number_integer() : !v.is_number()) {
          return Status::Invalid("{}: element {} is {}, expected {} for feature '{}'", where, i,
                                 v.is_string() ? "a string" : v.dump().substr(0, 40),
                                 integer ? "an integer" : "a number or null", name);
        } else {
          const double d = v.get<double>();
          out = static_cast<float>(d);
          if (std::isfinite(d) && !std::isfinite(out))
            return Status::Invalid("{}: element {} is {}, outside FP32's range", where, i, d);
        }
      }
    }
    cols[f] = std::move(values);
  }
  for (size_t f = 0; f < nf; ++f)
    if (!cols[f])
      return Status::Invalid("feature '{}' is missing (the model's features: {})",
                             x.features[f].name, feature_list(x));
  if (binary_used != binary.size())
    return Status::Invalid(
        "the body has {} bytes after the JSON header, but the inputs' binary_data_size take {}",
        binary.size(), binary_used);
  const int64_t rows = req->batch_rows;
  Shape s = {rows};
  for (size_t d = 1; d < target.shape.size(); ++d) s.push_back(target.shape[d]);
  Tensor t = Tensor::empty(DType::kF32, s);
  float* o = t.data_as<float>();
  for (int64_t r = 0; r < rows; ++r)
    for (size_t f = 0; f < nf; ++f)
      o[static_cast<size_t>(r) * nf + f] = (*cols[f])[static_cast<size_t>(r)];
  req->inputs.push_back(V2Input{target.name, std::move(t)});
  req->columns = true;
  return Status::OK();
}

Status parse_tensors(const json& inputs, std::string_view binary, size_t jlen,
                     const std::vector<TensorSpec>& model_inputs, const V2ModelExtras* extras,
                     const V2Limits& limits, V2InferRequest* out) {
  V2InferRequest& req = *out;
  const json* inputs_it = &inputs;
  std::vector<std::optional<V2Input>> by_model(model_inputs.size());
  size_t binary_used = 0;
  for (size_t k = 0; k < inputs_it->size(); ++k) {
    const json& in = (*inputs_it)[k];
    std::string where = fmt::format("inputs[{}]", k);
    DLSYS_ASSIGN_OR_RETURN(std::string name, input_name(in, where));
    size_t m = 0;
    while (m < model_inputs.size() && model_inputs[m].name != name) ++m;
    if (m == model_inputs.size()) {
      std::vector<std::string> names;
      for (const auto& s : model_inputs) names.push_back("'" + s.name + "'");
      return Status::Invalid(
          "input '{}' is not an input of the model (it has {}){}", name.substr(0, 128),
          fmt::join(names, ", "),
          extras && !extras->features.empty()
              ? fmt::format("; or send every input as a column, one per feature: {}",
                            feature_list(*extras))
              : "");
    }
    if (by_model[m]) return Status::Invalid("input '{}' is given twice", name);
    const TensorSpec& spec = model_inputs[m];
    where = "input '" + name + "'";

    auto dt_it = in.find("datatype");
    if (dt_it == in.end() || !dt_it->is_string())
      return Status::Invalid("{} needs a string \"datatype\" ({} for this model)", where,
                             v2_datatype(spec.dtype));
    const V2Type* vt = find_type(dt_it->get<std::string>());
    if (!vt)
      return Status::Invalid("{}: datatype '{}' is not a protocol datatype (the model expects {})",
                             where, dt_it->get<std::string>().substr(0, 32),
                             v2_datatype(spec.dtype));
    if (vt->dtype != spec.dtype)
      return Status::Invalid("{}: datatype {} does not match the model's {}", where, vt->name,
                             v2_datatype(spec.dtype));

    auto shape_it = in.find("shape");
    if (shape_it == in.end() || !shape_it->is_array())
      return Status::Invalid("{} needs \"shape\": an array of dimensions (the model's is {})",
                             where, shape_text(spec.shape));
    std::vector<int64_t> shape;
    for (const auto& d : *shape_it) {
      if (!d.is_number_integer() || (!d.is_number_unsigned() && d.get<int64_t>() < 0))
        return Status::Invalid("{}: shape {} must hold non-negative integers", where,
                               shape_it->dump().substr(0, 80));
      shape.push_back(d.get<int64_t>());
    }
    bool fits = shape.size() == spec.shape.size();
    for (size_t i = 0; fits && i < shape.size(); ++i)
      fits = spec.shape[i] < 0 || spec.shape[i] == shape[i];
    if (!fits)
      return Status::Invalid("{}: shape {} does not match the model's {}", where, shape_text(shape),
                             shape_text(spec.shape));
    int64_t numel = 1;
    for (int64_t d : shape) {
      if (d != 0 && numel > limits.max_elements / d)
        return Status::Invalid("{}: shape {} holds more than {} elements", where, shape_text(shape),
                               limits.max_elements);
      numel *= d;
    }
    if (shape.empty() || shape[0] < 1)
      return Status::Invalid("{}: shape {} needs a batch dimension of at least 1", where,
                             shape_text(shape));

    DLSYS_ASSIGN_OR_RETURN(const json* ip, params_of(in, where));
    DLSYS_ASSIGN_OR_RETURN(std::optional<int64_t> bsize, int_param(*ip, "binary_data_size", where));
    auto data_it = in.find("data");
    Tensor t;
    size_t bytes = static_cast<size_t>(numel) * dtype_size(spec.dtype);
    if (bsize) {
      if (data_it != in.end())
        return Status::Invalid("{} has both \"data\" and parameter binary_data_size; send one",
                               where);
      if (static_cast<size_t>(*bsize) != bytes)
        return Status::Invalid("{}: binary_data_size is {} bytes, but shape {} of {} takes {}",
                               where, *bsize, shape_text(shape), vt->name, bytes);
      if (binary.size() - binary_used < bytes)
        return Status::Invalid(
            "{}: its {} bytes of binary data go past the end of the body ({} bytes follow the "
            "JSON header, {} taken by earlier inputs)",
            where, bytes, binary.size(), binary_used);
      t = Tensor::empty(spec.dtype, shape);
      if (bytes) std::memcpy(t.data(), binary.data() + binary_used, bytes);
      binary_used += bytes;
      if (spec.dtype == DType::kBool)
        for (size_t i = 0; i < bytes; ++i)
          if (t.data_as<uint8_t>()[i] > 1)
            return Status::Invalid("{}: BOOL element {} is byte {}, expected 0 or 1", where, i,
                                   t.data_as<uint8_t>()[i]);
    } else {
      if (data_it == in.end() || !data_it->is_array())
        return Status::Invalid(
            "{} needs \"data\" (an array, flat or nested, row-major) or parameter "
            "binary_data_size with the bytes after the JSON",
            where);
      // Every JSON element takes at least one byte of the body: a shape claiming more cannot
      // be filled, and is refused before anything is allocated for it.
      if (static_cast<size_t>(numel) > jlen)
        return Status::Invalid(
            "{}: shape {} holds {} elements, more than the {}-byte request "
            "could carry",
            where, shape_text(shape), numel, jlen);
      t = Tensor::empty(spec.dtype, shape);
      int64_t n = 0;
      DLSYS_RETURN_IF_ERROR(flatten(*data_it, spec.dtype, t.data(), numel, &n, name));
      if (n != numel)
        return Status::Invalid("{}: \"data\" holds {} elements, shape {} needs {}", where, n,
                               shape_text(shape), numel);
    }
    if (req.batch_rows == 0) req.batch_rows = shape[0];
    if (shape[0] != req.batch_rows)
      return Status::Invalid(
          "{}: its first (batch) dimension is {}, but earlier inputs have {}; every input "
          "carries the same rows",
          where, shape[0], req.batch_rows);
    by_model[m] = V2Input{name, std::move(t)};
  }
  for (size_t m = 0; m < model_inputs.size(); ++m) {
    if (!by_model[m]) {
      std::vector<std::string> names;
      for (const auto& s : model_inputs) names.push_back("'" + s.name + "'");
      return Status::Invalid("input '{}' is missing (the model's inputs: {})", model_inputs[m].name,
                             fmt::join(names, ", "));
    }
    req.inputs.push_back(std::move(*by_model[m]));
  }
  if (binary_used != binary.size())
    return Status::Invalid(
        "the body has {} bytes after the JSON header, but the inputs' binary_data_size take {}",
        binary.size(), binary_used);
  return Status::OK();
}

Status parse_outputs(const json& doc, const std::vector<TensorSpec>& model_outputs,
                     const V2ModelExtras* extras, V2InferRequest* out) {
  V2InferRequest& req = *out;
  if (auto out_it = doc.find("outputs"); out_it != doc.end() && !out_it->is_null()) {
    if (!out_it->is_array())
      return Status::Invalid("the request's \"outputs\" must be an array of {{\"name\"}}");
    for (size_t k = 0; k < out_it->size(); ++k) {
      const json& o = (*out_it)[k];
      std::string where = fmt::format("outputs[{}]", k);
      if (!o.is_object() || !o.contains("name") || !o["name"].is_string())
        return Status::Invalid("{} needs a string \"name\"", where);
      V2RequestedOutput ro{o["name"].get<std::string>(), false};
      bool known = false;
      for (const auto& s : model_outputs) known = known || s.name == ro.name;
      ro.derived = !known && extras && extras->derives(ro.name);
      if (!known && !ro.derived) {
        std::string offered;
        if (extras)
          for (const auto& d : extras->derived)
            offered += (offered.empty() ? "'" : ", '") + d.name + "'";
        return Status::Invalid("output '{}' is not an output of the model{}",
                               ro.name.substr(0, 128),
                               offered.empty() ? "" : "; derived outputs: " + offered + "'");
      }
      for (const auto& prev : req.outputs)
        if (prev.name == ro.name) return Status::Invalid("output '{}' is asked for twice", ro.name);
      DLSYS_ASSIGN_OR_RETURN(const json* op, params_of(o, where));
      DLSYS_ASSIGN_OR_RETURN(ro.binary, bool_param(*op, "binary_data", where));
      ro.binary = ro.binary || req.binary_output;
      req.outputs.push_back(std::move(ro));
    }
  }
  return Status::OK();
}

}  // namespace

std::optional<DType> v2_dtype(std::string_view name) {
  const V2Type* t = find_type(name);
  return t ? t->dtype : std::nullopt;
}

const char* v2_datatype(DType t) {
  for (const auto& k : kTypes)
    if (k.dtype == t) return k.name;
  return "?";
}

Result<std::optional<size_t>> parse_inference_header_length(std::string_view value,
                                                            size_t body_size) {
  if (value.empty()) return std::optional<size_t>();
  size_t n = 0;
  for (char c : value) {
    if (c < '0' || c > '9' || n > (size_t{1} << 40))
      return Status::Invalid(
          "header Inference-Header-Content-Length must be a decimal byte count, got '{}'",
          std::string(value.substr(0, 32)));
    n = n * 10 + static_cast<size_t>(c - '0');
  }
  if (n > body_size)
    return Status::Invalid(
        "header Inference-Header-Content-Length is {} but the body has only {} bytes", n,
        body_size);
  return std::optional<size_t>(n);
}

Result<V2InferRequest> parse_v2_infer_request(std::string_view body,
                                              std::optional<size_t> json_length,
                                              const std::vector<TensorSpec>& model_inputs,
                                              const std::vector<TensorSpec>& model_outputs,
                                              const V2Limits& limits, const V2ModelExtras* extras) {
  size_t jlen = json_length.value_or(body.size());
  if (jlen > body.size())
    return Status::Invalid("the JSON header length {} exceeds the body's {} bytes", jlen,
                           body.size());
  std::string_view binary = body.substr(jlen);
  DLSYS_ASSIGN_OR_RETURN(json doc,
                         parse_json(body.substr(0, jlen), JsonLimits{}, "the inference request"));
  if (!doc.is_object()) return Status::Invalid("the inference request must be a JSON object");
  V2InferRequest req;
  if (auto it = doc.find("id"); it != doc.end() && !it->is_null()) {
    if (!it->is_string()) return Status::Invalid("the request's \"id\" must be a string");
    req.id = it->get<std::string>();
    if (req.id.size() > 256) return Status::Invalid("the request's \"id\" is over 256 bytes");
  }
  DLSYS_ASSIGN_OR_RETURN(const json* params, params_of(doc, "the request"));
  DLSYS_ASSIGN_OR_RETURN(req.timeout_us, int_param(*params, "timeout", "the request"));
  DLSYS_ASSIGN_OR_RETURN(req.priority, int_param(*params, "priority", "the request"));
  DLSYS_ASSIGN_OR_RETURN(req.binary_output,
                         bool_param(*params, "binary_data_output", "the request"));

  auto inputs_it = doc.find("inputs");
  if (inputs_it == doc.end() || !inputs_it->is_array() || inputs_it->empty())
    return Status::Invalid("the request needs \"inputs\": a non-empty array of tensors");
  const bool offers_columns = extras && !extras->features.empty();
  const size_t max_inputs =
      std::max(limits.max_inputs, offers_columns ? extras->features.size() : size_t{0});
  if (inputs_it->size() > max_inputs)
    return Status::Invalid("the request has {} inputs; at most {}", inputs_it->size(), max_inputs);
  // The column form: no input named like a model input.
  bool columns = offers_columns;
  for (const json& in : *inputs_it) {
    if (!in.is_object()) continue;
    auto n = in.find("name");
    if (n == in.end() || !n->is_string()) continue;
    for (const auto& s : model_inputs) columns = columns && s.name != n->get<std::string>();
  }
  if (columns) {
    DLSYS_RETURN_IF_ERROR(
        parse_columns(*inputs_it, binary, jlen, model_inputs, *extras, limits, &req));
  } else {
    DLSYS_RETURN_IF_ERROR(
        parse_tensors(*inputs_it, binary, jlen, model_inputs, extras, limits, &req));
  }
  DLSYS_RETURN_IF_ERROR(parse_outputs(doc, model_outputs, extras, &req));
  return req;
}

std::vector<std::string> V2InferRequest::derived_outputs() const {
  std::vector<std::string> names;
  for (const auto& o : outputs)
    if (o.derived) names.push_back(o.name);
  return names;
}

V2EncodedResponse encode_v2_infer_response(const std::string& model_name,
                                           const std::string& model_version,
                                           const V2InferRequest& request,
                                           const std::vector<TensorSpec>& model_outputs,
                                           const std::vector<Tensor>& outputs,
                                           const std::vector<V2ExtraOutput>& derived) {
  json doc = {{"model_name", model_name}, {"model_version", model_version}};
  if (!request.id.empty()) doc["id"] = request.id;
  json outs = json::array();
  std::string binary;
  auto emit = [&](const std::string& name, const Tensor& t, bool as_binary) {
    json o = {{"name", name}, {"datatype", v2_datatype(t.dtype())}, {"shape", t.shape()}};
    if (as_binary) {
      o["parameters"] = {{"binary_data_size", t.nbytes()}};
      binary.append(static_cast<const char*>(t.data()), t.nbytes());
    } else {
      json data = json::array();
      data.get_ref<json::array_t&>().reserve(static_cast<size_t>(t.numel()));
      for (int64_t i = 0; i < t.numel(); ++i) data.push_back(element_json(t, i));
      o["data"] = std::move(data);
    }
    outs.push_back(std::move(o));
  };
  auto emit_bytes = [&](const V2ExtraOutput& e, bool as_binary) {
    json o = {{"name", e.name}, {"datatype", "BYTES"}, {"shape", e.shape}};
    if (as_binary) {
      size_t size = 0;
      for (const auto& b : e.bytes) {
        const auto len = static_cast<uint32_t>(b.size());
        const char le[4] = {static_cast<char>(len & 0xff), static_cast<char>((len >> 8) & 0xff),
                            static_cast<char>((len >> 16) & 0xff),
                            static_cast<char>((len >> 24) & 0xff)};
        binary.append(le, 4);
        binary.append(b);
        size += 4 + b.size();
      }
      o["parameters"] = {{"binary_data_size", size}};
    } else {
      o["data"] = e.bytes;
    }
    outs.push_back(std::move(o));
  };
  if (request.outputs.empty()) {
    for (size_t m = 0; m < model_outputs.size() && m < outputs.size(); ++m)
      emit(model_outputs[m].name, outputs[m], request.binary_output);
  } else {
    for (const auto& ro : request.outputs) {
      if (ro.derived) {
        for (const auto& e : derived)
          if (e.name == ro.name)
            e.is_bytes ? emit_bytes(e, ro.binary) : emit(e.name, e.tensor, ro.binary);
        continue;
      }
      for (size_t m = 0; m < model_outputs.size() && m < outputs.size(); ++m)
        if (model_outputs[m].name == ro.name) emit(ro.name, outputs[m], ro.binary);
    }
  }
  doc["outputs"] = std::move(outs);
  V2EncodedResponse r;
  // Class names come from the model's metadata: replace what is not UTF-8 rather than throw.
  r.body = doc.dump(-1, ' ', false, json::error_handler_t::replace);
  if (!binary.empty() || request.binary_output) {
    r.json_length = r.body.size();
    r.body += binary;
  }
  return r;
}

}  // namespace dlsys::serve
