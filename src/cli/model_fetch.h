// A registered model version's ONNX file, fetched from the registry of the server (or data
// directory) a command uses: for `dlsys predict` and for fine-tuning (`model.onnx:
// models:/NAME@REF` in a training spec, what a train job with `model:` sets).
#pragma once

#include <string>

#include "api/client.h"
#include "core/status.h"

namespace dlsys::cli {

// A registered model version as fetched: its number and its ONNX file.
struct ModelFile {
  std::string name;
  int64_t version = 0;
  std::string path;  // <dir>/model-<version>.onnx
  std::string label() const { return name + "@" + std::to_string(version); }
};

// Resolves `text` (name@version, name@alias or name: its newest version) through `c` and
// downloads the version's ONNX file into `dir` once (kept when its SHA-256 matches; a download
// that does not match is refused). Errors name the model and what the registry answered.
Result<ModelFile> fetch_model_version(api::ApiClient& c, const std::string& text,
                                      const std::string& dir);

// The prefix of a training spec's model.onnx that names a registered version:
// "models:/digits@production".
inline constexpr const char* kRegisteredModelPrefix = "models:/";

}  // namespace dlsys::cli
