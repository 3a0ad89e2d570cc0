// TensorSpec: a model input or output as serving sees it, shared by the model runner (which reads
// it from the graph) and the protocol codec (which checks requests against it and reports it in
// model metadata).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tensor/dtype.h"

namespace dlsys::serve {

struct TensorSpec {
  std::string name;
  DType dtype = DType::kF32;
  // -1 marks the batch dimension (and, for outputs, any other dimension the model leaves free).
  std::vector<int64_t> shape;
  // False for an output the model declares without a shape (then `shape` is empty).
  bool has_shape = true;
};

}  // namespace dlsys::serve
