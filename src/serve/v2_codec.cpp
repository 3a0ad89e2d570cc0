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

// The protocol's datatypes, including those dlsys has no tensor type for (FP64, UINT16, ...):
// those parse, so that the error says "the model expects FP32, got FP64".
struct V2Type {
  const char* name;
  std::optional<DType> dtype;
};
constexpr V2Type kTypes[] = {
    {"BOOL", DType::kBool},   {"UINT8", DType::kU8},    {"INT8", DType::kI8},
    {"INT32", DType::kI32},   {"INT64", DType::kI64},   {"FP16", DType::kF16},
    {"BF16", DType::kBF16},   {"FP32", DType::kF32},    {"FP64", std::nullopt},
    {"UINT16", std::nullopt}, {"UINT32", std::nullopt}, {"UINT64", std::nullopt},
    {"INT16", std::nullopt},  {"BYTES", std::nullopt},
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
    default: {
      if (!v.is_number_integer()) return bad("an integer");
      int64_t lo = 0, hi = 0;
      if (t == DType::kI8) lo = -128, hi = 127;
      if (t == DType::kU8) lo = 0, hi = 255;
      if (t == DType::kI32)
        lo = std::numeric_limits<int32_t>::min(), hi = std::numeric_limits<int32_t>::max();
      if (t == DType::kI64)
        lo = std::numeric_limits<int64_t>::min(), hi = std::numeric_limits<int64_t>::max();
      if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi))
        return bad(fmt::format("an integer in {}..{}", lo, hi).c_str());
      int64_t x = v.get<int64_t>();
      if (x < lo || x > hi) return bad(fmt::format("an integer in {}..{}", lo, hi).c_str());
      if (t == DType::kI8) static_cast<int8_t*>(out)[i] = static_cast<int8_t>(x);
      if (t == DType::kU8) static_cast<uint8_t*>(out)[i] = static_cast<uint8_t>(x);
      if (t == DType::kI32) static_cast<int32_t*>(out)[i] = static_cast<int32_t>(x);
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

}  // namespace

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
                                              const V2Limits& limits) {
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
  if (inputs_it->size() > limits.max_inputs)
    return Status::Invalid("the request has {} inputs; at most {}", inputs_it->size(),
                           limits.max_inputs);

  std::vector<std::optional<V2Input>> by_model(model_inputs.size());
  size_t binary_used = 0;
  for (size_t k = 0; k < inputs_it->size(); ++k) {
    const json& in = (*inputs_it)[k];
    std::string where = fmt::format("inputs[{}]", k);
    if (!in.is_object()) return Status::Invalid("{} must be an object", where);
    auto name_it = in.find("name");
    if (name_it == in.end() || !name_it->is_string())
      return Status::Invalid("{} needs a string \"name\"", where);
    std::string name = name_it->get<std::string>();
    size_t m = 0;
    while (m < model_inputs.size() && model_inputs[m].name != name) ++m;
    if (m == model_inputs.size()) {
      std::vector<std::string> names;
      for (const auto& s : model_inputs) names.push_back("'" + s.name + "'");
      return Status::Invalid("input '{}' is not an input of the model (it has {})",
                             name.substr(0, 128), fmt::join(names, ", "));
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
      if (!known)
        return Status::Invalid("output '{}' is not an output of the model", ro.name.substr(0, 128));
      for (const auto& prev : req.outputs)
        if (prev.name == ro.name) return Status::Invalid("output '{}' is asked for twice", ro.name);
      DLSYS_ASSIGN_OR_RETURN(const json* op, params_of(o, where));
      DLSYS_ASSIGN_OR_RETURN(ro.binary, bool_param(*op, "binary_data", where));
      ro.binary = ro.binary || req.binary_output;
      req.outputs.push_back(std::move(ro));
    }
  }
  return req;
}

V2EncodedResponse encode_v2_infer_response(const std::string& model_name,
                                           const std::string& model_version,
                                           const V2InferRequest& request,
                                           const std::vector<TensorSpec>& model_outputs,
                                           const std::vector<Tensor>& outputs) {
  json doc = {{"model_name", model_name}, {"model_version", model_version}};
  if (!request.id.empty()) doc["id"] = request.id;
  json outs = json::array();
  std::string binary;
  auto emit = [&](size_t m, bool as_binary) {
    const Tensor& t = outputs[m];
    json o = {{"name", model_outputs[m].name},
              {"datatype", v2_datatype(t.dtype())},
              {"shape", t.shape()}};
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
  if (request.outputs.empty()) {
    for (size_t m = 0; m < model_outputs.size() && m < outputs.size(); ++m)
      emit(m, request.binary_output);
  } else {
    for (const auto& ro : request.outputs)
      for (size_t m = 0; m < model_outputs.size() && m < outputs.size(); ++m)
        if (model_outputs[m].name == ro.name) emit(m, ro.binary);
  }
  doc["outputs"] = std::move(outs);
  V2EncodedResponse r;
  r.body = doc.dump();
  if (!binary.empty() || request.binary_output) {
    r.json_length = r.body.size();
    r.body += binary;
  }
  return r;
}

}  // namespace dlsys::serve
