#include "tensor/npy.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

namespace dlsys {

namespace {

constexpr size_t kMaxHeader = 1 << 16;

// Finds `'key':` in a NumPy header dict and returns the offset just after the colon, or npos.
size_t find_key(const std::string& h, const std::string& key) {
  for (const char* q : {"'", "\""}) {
    std::string pat = std::string(q) + key + q;
    size_t p = h.find(pat);
    if (p != std::string::npos) {
      p = h.find(':', p + pat.size());
      if (p != std::string::npos) return p + 1;
    }
  }
  return std::string::npos;
}

size_t skip_ws(const std::string& h, size_t p) {
  while (p < h.size() && (h[p] == ' ' || h[p] == '\t')) ++p;
  return p;
}

Result<DType> dtype_from_descr(const std::string& d, const std::string& where) {
  if (d == "<f4") return DType::kF32;
  if (d == "<f2") return DType::kF16;
  if (d == "|i1" || d == "<i1" || d == "i1") return DType::kI8;
  if (d == "|u1" || d == "<u1" || d == "u1") return DType::kU8;
  if (d == "<i4") return DType::kI32;
  if (d == "<i8") return DType::kI64;
  if (d == "|b1" || d == "<b1" || d == "b1") return DType::kBool;
  if (d == "<f8") return DType::kF64;
  if (d == "<i2") return DType::kI16;
  if (d == "<u2") return DType::kU16;
  if (d == "<u4") return DType::kU32;
  if (d == "<u8") return DType::kU64;
  return Status::Unsupported(
      "{}: NumPy dtype '{}' is not supported; convert the array to float32, float64, float16, "
      "int8, uint8, int16, uint16, int32, uint32, int64, uint64 or bool (little-endian), e.g. "
      "arr.astype(np.float32)",
      where, d);
}

}  // namespace

Result<NpyHeader> npy_parse_header(const std::string& b, const std::string& where) {
  if (b.size() < 10 || std::memcmp(b.data(), "\x93NUMPY", 6) != 0)
    return Status::Invalid("{}: not a .npy file (missing the \\x93NUMPY magic at offset 0)", where);
  uint8_t major = static_cast<uint8_t>(b[6]);
  size_t hlen, hstart;
  if (major == 1) {
    hlen = static_cast<uint8_t>(b[8]) | (static_cast<size_t>(static_cast<uint8_t>(b[9])) << 8);
    hstart = 10;
  } else if (major == 2 || major == 3) {
    if (b.size() < 12) return Status::Invalid("{}: truncated .npy header at offset 8", where);
    hlen = 0;
    for (int i = 0; i < 4; ++i)
      hlen |= static_cast<size_t>(static_cast<uint8_t>(b[8 + i])) << (8 * i);
    hstart = 12;
  } else {
    return Status::Unsupported("{}: .npy format version {} is not supported (1, 2 or 3)", where,
                               static_cast<int>(major));
  }
  if (hlen > kMaxHeader)
    return Status::Invalid("{}: .npy header of {} bytes exceeds the {} byte limit", where, hlen,
                           kMaxHeader);
  if (hstart + hlen > b.size())
    return Status::Invalid("{}: truncated .npy header: needs {} bytes, file has {}", where,
                           hstart + hlen, b.size());
  std::string h = b.substr(hstart, hlen);

  size_t p = find_key(h, "descr");
  if (p == std::string::npos) return Status::Invalid("{}: .npy header has no 'descr'", where);
  p = skip_ws(h, p);
  if (p >= h.size() || (h[p] != '\'' && h[p] != '"'))
    return Status::Invalid("{}: .npy 'descr' is not a string (offset {})", where, hstart + p);
  size_t e = h.find(h[p], p + 1);
  if (e == std::string::npos) return Status::Invalid("{}: unterminated .npy 'descr'", where);
  NpyHeader out;
  out.descr = h.substr(p + 1, e - p - 1);

  p = find_key(h, "fortran_order");
  if (p == std::string::npos)
    return Status::Invalid("{}: .npy header has no 'fortran_order'", where);
  p = skip_ws(h, p);
  if (h.compare(p, 4, "True") == 0)
    return Status::Unsupported(
        "{}: Fortran-order arrays are not supported; save with "
        "np.ascontiguousarray(arr)",
        where);
  if (h.compare(p, 5, "False") != 0)
    return Status::Invalid("{}: .npy 'fortran_order' must be True or False", where);

  p = find_key(h, "shape");
  if (p == std::string::npos) return Status::Invalid("{}: .npy header has no 'shape'", where);
  p = skip_ws(h, p);
  if (p >= h.size() || h[p] != '(')
    return Status::Invalid("{}: .npy 'shape' is not a tuple (offset {})", where, hstart + p);
  e = h.find(')', p);
  if (e == std::string::npos) return Status::Invalid("{}: unterminated .npy 'shape'", where);
  Shape shape;
  std::string inner = h.substr(p + 1, e - p - 1);
  size_t i = 0;
  int64_t total = 1;
  while (i < inner.size()) {
    while (i < inner.size() && (inner[i] == ' ' || inner[i] == ',')) ++i;
    if (i >= inner.size()) break;
    if (!std::isdigit(static_cast<unsigned char>(inner[i])))
      return Status::Invalid("{}: bad character '{}' in .npy 'shape'", where, inner[i]);
    int64_t v = 0;
    while (i < inner.size() && std::isdigit(static_cast<unsigned char>(inner[i]))) {
      v = v * 10 + (inner[i] - '0');
      if (v > (int64_t{1} << 40)) return Status::Invalid("{}: .npy dimension too large", where);
      ++i;
    }
    if (v > 0 && total > std::numeric_limits<int64_t>::max() / 16 / v)
      return Status::Invalid("{}: .npy shape overflows", where);
    total *= v;
    shape.push_back(v);
  }
  out.shape = std::move(shape);
  out.data_offset = hstart + hlen;
  return out;
}

Result<Tensor> npy_parse(const std::string& b, const std::string& where) {
  DLSYS_ASSIGN_OR_RETURN(NpyHeader h, npy_parse_header(b, where));
  DType dtype;
  DLSYS_ASSIGN_OR_RETURN(dtype, dtype_from_descr(h.descr, where));
  const Shape& shape = h.shape;
  int64_t total = 1;
  for (int64_t d : shape) total *= d;
  size_t data_off = h.data_offset;
  size_t need = static_cast<size_t>(total) * dtype_size(dtype);
  if (b.size() - data_off != need)
    return Status::Invalid("{}: .npy data is {} bytes but shape {} of {} needs {} bytes{}", where,
                           b.size() - data_off, shape_str(shape), dtype_name(dtype), need,
                           b.size() - data_off < need ? " (file truncated?)" : "");
  Tensor t = Tensor::empty(dtype, shape);
  if (need) std::memcpy(t.data(), b.data() + data_off, need);
  return t;
}

Result<Tensor> npy_read(const std::string& path) {
  std::string bytes;
  DLSYS_ASSIGN_OR_RETURN(bytes, read_file(path));
  return npy_parse(bytes, path);
}

std::string npy_serialize(const Tensor& t) {
  Tensor src = t;
  if (t.dtype() == DType::kBF16) {
    src = Tensor::empty(DType::kF32, t.shape());
    for (int64_t i = 0; i < t.numel(); ++i)
      src.data_as<float>()[i] = bf16_to_f32(t.data_as<uint16_t>()[i]);
  }
  std::string shape = "(";
  for (size_t i = 0; i < src.shape().size(); ++i) shape += std::to_string(src.shape()[i]) + ", ";
  if (src.shape().size() > 1) shape.resize(shape.size() - 2);
  if (src.shape().size() == 1) shape.resize(shape.size() - 1);
  shape += ")";
  std::string header = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
                                   dtype_npy_descr(src.dtype()), shape);
  size_t total = 10 + header.size() + 1;
  size_t pad = (64 - total % 64) % 64;
  header.append(pad, ' ');
  header.push_back('\n');
  std::string out = "\x93NUMPY";
  out.push_back(1);
  out.push_back(0);
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  out += header;
  out.append(static_cast<const char*>(src.data()), src.nbytes());
  return out;
}

Status npy_write(const std::string& path, const Tensor& t) {
  if (t.dtype() == DType::kString)
    return Status::Unsupported(
        "{}: a string tensor has no .npy form dlsys writes (NumPy's are fixed-width unicode or "
        "Python objects)",
        path);
  if (dtype_is_composite(t.dtype()))
    return Status::Unsupported(
        "{}: a {} value (a sequence or optional of tensors) has no .npy form; write its items",
        path, dtype_name(t.dtype()));
  return write_file_atomic(path, npy_serialize(t));
}

}  // namespace dlsys
