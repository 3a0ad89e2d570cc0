#include "tensor/safetensors.h"

#include <nlohmann/json.hpp>

#include <cstring>

#include "core/file_util.h"

namespace dlsys {

namespace {

using json = nlohmann::json;

const char* st_dtype(DType t) {
  switch (t) {
    case DType::kF32:
      return "F32";
    case DType::kBF16:
      return "BF16";
    case DType::kF16:
      return "F16";
    case DType::kI8:
      return "I8";
    case DType::kU8:
      return "U8";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
    case DType::kBool:
      return "BOOL";
    case DType::kString:
      return "";  // safetensors has no strings (parse_dtype never matches "")
    case DType::kF64:
      return "F64";
    case DType::kI16:
      return "I16";
    case DType::kU16:
      return "U16";
    case DType::kU32:
      return "U32";
    case DType::kU64:
      return "U64";
  }
  return "F32";
}

Result<DType> parse_dtype(const std::string& s) {
  for (DType t :
       {DType::kF32, DType::kBF16, DType::kF16, DType::kI8, DType::kU8, DType::kI32, DType::kI64,
        DType::kBool, DType::kF64, DType::kI16, DType::kU16, DType::kU32, DType::kU64})
    if (s == st_dtype(t)) return t;
  return Status::Unsupported("dtype '{}' is not supported", s);
}

constexpr uint64_t kMaxHeader = 100ull << 20;

}  // namespace

std::string safetensors_serialize(const SafetensorsFile& f) {
  json h = json::object();
  uint64_t off = 0;
  for (const auto& [name, t] : f.tensors) {
    h[name] = {{"dtype", st_dtype(t.dtype())},
               {"shape", t.shape()},
               {"data_offsets", {off, off + t.nbytes()}}};
    off += t.nbytes();
  }
  if (!f.metadata.empty()) h["__metadata__"] = f.metadata;
  std::string header = h.dump();
  while (header.size() % 8) header += ' ';  // aligns the data (allowed by the format)
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += header;
  out.reserve(out.size() + off);
  for (const auto& [name, t] : f.tensors)
    out.append(static_cast<const char*>(t.data()), t.nbytes());
  return out;
}

Result<SafetensorsFile> safetensors_parse(const std::string& b, const std::string& where) {
  if (b.size() < 8)
    return Status::Invalid("{}: {} bytes is too short for safetensors", where, b.size());
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<uint8_t>(b[i])) << (8 * i);
  if (n > kMaxHeader || n > b.size() - 8)
    return Status::Invalid(
        "{}: header length {} is beyond the file ({} bytes) or over 100 MiB; "
        "the file is truncated or not safetensors",
        where, n, b.size());
  json h = json::parse(b.substr(8, n), nullptr, false);
  if (h.is_discarded() || !h.is_object())
    return Status::Invalid("{}: the header is not a JSON object", where);
  SafetensorsFile f;
  uint64_t data_start = 8 + n, data_size = b.size() - data_start;
  for (auto& [name, v] : h.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) return Status::Invalid("{}: __metadata__ must be an object", where);
      for (auto& [k, m] : v.items()) {
        if (!m.is_string()) return Status::Invalid("{}: metadata '{}' must be a string", where, k);
        f.metadata[k] = m.get<std::string>();
      }
      continue;
    }
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") ||
        !v.contains("data_offsets") || !v["dtype"].is_string() || !v["shape"].is_array() ||
        !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
      return Status::Invalid("{}: tensor '{}' needs dtype, shape and data_offsets [begin, end]",
                             where, name);
    auto dt = parse_dtype(v["dtype"].get<std::string>());
    if (!dt.ok()) return dt.status().with_context(fmt::format("{}: tensor '{}'", where, name));
    Shape shape;
    uint64_t numel = 1;
    for (auto& d : v["shape"]) {
      if (!d.is_number_unsigned())
        return Status::Invalid("{}: tensor '{}' has a bad dimension", where, name);
      shape.push_back(d.get<int64_t>());
      numel *= d.get<uint64_t>();
      if (numel > data_size)
        return Status::Invalid("{}: tensor '{}' is larger than the file", where, name);
    }
    if (!v["data_offsets"][0].is_number_unsigned() || !v["data_offsets"][1].is_number_unsigned())
      return Status::Invalid("{}: tensor '{}' has bad data_offsets", where, name);
    uint64_t begin = v["data_offsets"][0], end = v["data_offsets"][1];
    if (begin > end || end > data_size)
      return Status::Invalid("{}: tensor '{}' data_offsets [{}, {}] fall outside the {} data bytes",
                             where, name, begin, end, data_size);
    if (end - begin != numel * dtype_size(*dt))
      return Status::Invalid("{}: tensor '{}' has {} bytes but {} {} needs {}", where, name,
                             end - begin, shape_str(shape), dtype_name(*dt),
                             numel * dtype_size(*dt));
    Tensor t = Tensor::empty(*dt, shape);
    if (end > begin) std::memcpy(t.data(), b.data() + data_start + begin, end - begin);
    f.tensors[name] = t;
  }
  return f;
}

Status safetensors_write(const std::string& path, const SafetensorsFile& f) {
  return write_file_atomic(path, safetensors_serialize(f));
}

Result<SafetensorsFile> safetensors_read(const std::string& path) {
  DLSYS_ASSIGN_OR_RETURN(std::string bytes, read_file(path));
  return safetensors_parse(bytes, path);
}

}  // namespace dlsys
