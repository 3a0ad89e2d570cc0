// NumPy .npy files (format versions 1.0-3.0), the command line's tensor format.
#pragma once

#include <string>

#include "core/file_util.h"  // read_file, write_file_atomic (used with .npy files)
#include "core/status.h"
#include "tensor/tensor.h"

namespace dlsys {

// The header of a .npy file: NumPy's dtype string ("<f4", "<f8", "|u1", ...), the shape and
// where the data starts.
struct NpyHeader {
  std::string descr;
  Shape shape;
  size_t data_offset = 0;
};
// Parses the header at the start of `bytes` (which may hold only the first bytes of the file).
Result<NpyHeader> npy_parse_header(const std::string& bytes, const std::string& where);
// Parses an in-memory .npy image. Errors name the problem and the byte offset; `where` (a file
// name) prefixes messages. Only little-endian, C-order arrays of dlsys dtypes are accepted.
Result<Tensor> npy_parse(const std::string& bytes, const std::string& where);
// Reads a .npy file.
Result<Tensor> npy_read(const std::string& path);
// Serializes `t` as .npy version 1.0. bf16 is written as float32 (NumPy has no bf16).
std::string npy_serialize(const Tensor& t);
// Writes `t` to `path` atomically (temporary file, fsync, rename); a string tensor is refused.
Status npy_write(const std::string& path, const Tensor& t);

}  // namespace dlsys
