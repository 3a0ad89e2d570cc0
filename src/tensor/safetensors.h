// safetensors files (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}}, then the
// raw little-endian tensor bytes. A tensor file format beside .npy (tensor/npy.h): the trainer's
// checkpoints are written in it, and any module above tensor may read it. Reading checks every
// offset, dtype and size and rejects malformed or oversized files with the file and tensor named.
#pragma once

#include <map>
#include <string>

#include "core/status.h"
#include "tensor/tensor.h"

namespace dlsys {

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;
};

// Serializes the tensors (sorted by name) and metadata.
std::string safetensors_serialize(const SafetensorsFile& f);
// Parses bytes read from `where` (for messages).
Result<SafetensorsFile> safetensors_parse(const std::string& bytes, const std::string& where);
// Writes atomically (temporary file, fsync, rename).
Status safetensors_write(const std::string& path, const SafetensorsFile& f);
Result<SafetensorsFile> safetensors_read(const std::string& path);

}  // namespace dlsys
