// The graph IR: values by name, nodes with attributes, initializers. It mirrors ONNX closely so
// that import and export are direct; passes and the planner work on it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ops/attribute.h"
#include "tensor/tensor.h"

namespace dlsys {

// One dimension of a declared shape: a fixed size, or symbolic (`param` names it, may be empty).
struct Dim {
  int64_t value = -1;
  std::string param;
  bool fixed() const { return value >= 0; }
};

// A graph input or output as declared by the model.
struct ValueInfo {
  std::string name;
  DType dtype = DType::kF32;
  bool has_shape = false;
  std::vector<Dim> dims;
};

struct Node {
  std::string name;  // never empty after import (generated when the model has none)
  std::string op_type;
  std::string domain;
  std::vector<std::string> inputs;   // "" marks an absent optional input
  std::vector<std::string> outputs;  // "" marks an unused optional output
  AttributeMap attrs;
};

struct Graph {
  std::string name;
  std::vector<Node> nodes;        // topologically sorted
  std::vector<ValueInfo> inputs;  // excludes initializers
  std::vector<ValueInfo> outputs;
  std::map<std::string, Tensor> initializers;
  int opset = 0;  // default-domain opset
  // The default-domain opset the file declared when import upgraded it to `opset` (0: none).
  int converted_from_opset = 0;
  int64_t ir_version = 0;
  std::string producer;
  // ONNX metadata_props: key -> value (dlsys writes "dlsys.*" keys: the preprocessing, feature
  // and class names a trained model carries; see docs/formats.md).
  std::map<std::string, std::string> metadata;
  // A subgraph (a node's kGraph attribute) may read values of the graphs around it. Import
  // makes that explicit: the outer values it reads (`outer_inputs`, by their outer names) are
  // its last graph inputs, and are appended, in the same order, to the inputs of the node that
  // holds it (every subgraph of one node gets the node's whole list). Their dtypes and shapes
  // are the outer values', known when the node is planned.
  std::vector<std::string> outer_inputs;
};

// "[batch, 3, 224, 224]" ("?" for an unnamed symbolic dim, "unknown" without a shape).
std::string dims_str(const ValueInfo& v);

}  // namespace dlsys
