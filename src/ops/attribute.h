// Node attributes and the numeric precision a plan is built for: the vocabulary the graph IR
// (graph/ir.h) and the ops' build functions (ops/kernel.h) share. Deliberately free of oneDNN
// headers, so that code working on the IR alone (import, export, rewrite passes, autodiff)
// compiles without them.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace dlsys {

struct Graph;  // graph/ir.h

// An ONNX node attribute. `kind` says which one member holds the value; the others stay at
// their defaults. kGraph is a subgraph (If's branches, Loop's and Scan's body) in `g`, shared by
// copies of the node; kOther carries no payload (import records only that it is there).
struct Attribute {
  enum class Kind { kFloat, kInt, kString, kTensor, kFloats, kInts, kStrings, kGraph, kOther };
  Kind kind = Kind::kOther;
  float f = 0;
  int64_t i = 0;
  std::string s;
  Tensor t;
  std::vector<float> floats;
  std::vector<int64_t> ints;
  std::vector<std::string> strings;
  std::shared_ptr<const Graph> g;

  // An INT / FLOAT / STRING / INTS attribute (what graph rewrites and the autodiff emit).
  static Attribute of_int(int64_t v) {
    Attribute a;
    a.kind = Kind::kInt;
    a.i = v;
    return a;
  }
  static Attribute of_float(float v) {
    Attribute a;
    a.kind = Kind::kFloat;
    a.f = v;
    return a;
  }
  static Attribute of_string(std::string v) {
    Attribute a;
    a.kind = Kind::kString;
    a.s = std::move(v);
    return a;
  }
  static Attribute of_ints(std::vector<int64_t> v) {
    Attribute a;
    a.kind = Kind::kInts;
    a.ints = std::move(v);
    return a;
  }
};

// A node's attributes by name (ordered, so that printing and export are deterministic).
using AttributeMap = std::map<std::string, Attribute>;

// Numeric precision a plan is built for. kBF16: float matmul/conv kernels compute in bf16 on
// AMX (weights converted once, fp32 accumulation); other ops stay fp32.
enum class Precision { kF32, kBF16 };

}  // namespace dlsys
