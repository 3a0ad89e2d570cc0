// Builds small ONNX models in tests with the real protobuf classes.
#pragma once

#include <onnx/onnx_pb.h>

#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace dlsys::testing {

class OnnxBuilder {
 public:
  explicit OnnxBuilder(int opset = 17) {
    model_.set_ir_version(8);
    model_.set_producer_name("dlsys-test");
    auto* o = model_.add_opset_import();
    o->set_domain("");
    o->set_version(opset);
    model_.mutable_graph()->set_name("test");
  }
  // Declares a graph input or output; a dim < 0 is symbolic (named `sym`).
  void input(const std::string& name, int elem, const std::vector<int64_t>& dims,
             const std::string& sym = "batch") {
    value(model_.mutable_graph()->add_input(), name, elem, dims, sym);
  }
  void output(const std::string& name, int elem, const std::vector<int64_t>& dims,
              const std::string& sym = "batch") {
    value(model_.mutable_graph()->add_output(), name, elem, dims, sym);
  }
  void initializer_f32(const std::string& name, const std::vector<int64_t>& dims,
                       const std::vector<float>& v) {
    auto* t = model_.mutable_graph()->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (auto d : dims) t->add_dims(d);
    for (float f : v) t->add_float_data(f);
  }
  void initializer_i64(const std::string& name, const std::vector<int64_t>& dims,
                       const std::vector<int64_t>& v) {
    auto* t = model_.mutable_graph()->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::INT64);
    for (auto d : dims) t->add_dims(d);
    for (auto x : v) t->add_int64_data(x);
  }
  onnx::NodeProto* node(const std::string& op, const std::vector<std::string>& in,
                        const std::vector<std::string>& out, const std::string& name = "",
                        const std::string& domain = "") {
    auto* n = model_.mutable_graph()->add_node();
    n->set_op_type(op);
    n->set_name(name);
    if (!domain.empty()) n->set_domain(domain);
    for (auto& i : in) n->add_input(i);
    for (auto& o : out) n->add_output(o);
    return n;
  }
  static void attr_int(onnx::NodeProto* n, const std::string& name, int64_t v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void attr_ints(onnx::NodeProto* n, const std::string& name,
                        const std::vector<int64_t>& v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (auto x : v) a->add_ints(x);
  }
  static void attr_float(onnx::NodeProto* n, const std::string& name, float v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }
  static void attr_floats(onnx::NodeProto* n, const std::string& name,
                          const std::vector<float>& v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOATS);
    for (float x : v) a->add_floats(x);
  }
  static void attr_string(onnx::NodeProto* n, const std::string& name, const std::string& v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::STRING);
    a->set_s(v);
  }
  static void attr_strings(onnx::NodeProto* n, const std::string& name,
                           const std::vector<std::string>& v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::STRINGS);
    for (const auto& x : v) a->add_strings(x);
  }
  void initializer_strings(const std::string& name, const std::vector<int64_t>& dims,
                           const std::vector<std::string>& v) {
    auto* t = model_.mutable_graph()->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::STRING);
    for (auto d : dims) t->add_dims(d);
    for (const auto& x : v) t->add_string_data(x);
  }
  // A float initializer filled with a deterministic pseudo-random pattern in [-scale, scale].
  void random_f32(const std::string& name, const std::vector<int64_t>& dims, float scale,
                  uint32_t seed) {
    int64_t n = 1;
    for (auto d : dims) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) {
      seed = seed * 1664525u + 1013904223u;
      x = scale * (static_cast<float>(seed >> 8) / 8388608.f - 1.f);
    }
    initializer_f32(name, dims, v);
  }
  void add_opset(const std::string& domain, int version) {
    auto* o = model_.add_opset_import();
    o->set_domain(domain);
    o->set_version(version);
  }
  // A subgraph attribute (If's branches, Loop's and Scan's body): `body`'s graph, named `name`.
  static void attr_graph(onnx::NodeProto* n, const std::string& name, const OnnxBuilder& body) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::GRAPH);
    *a->mutable_g() = body.model_.graph();
    a->mutable_g()->set_name(name);
  }
  std::string bytes() const { return model_.SerializeAsString(); }
  onnx::ModelProto& model() { return model_; }

 private:
  static void value(onnx::ValueInfoProto* v, const std::string& name, int elem,
                    const std::vector<int64_t>& dims, const std::string& sym) {
    v->set_name(name);
    auto* tt = v->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(elem);
    auto* sh = tt->mutable_shape();
    for (auto d : dims) {
      auto* dim = sh->add_dim();
      if (d >= 0)
        dim->set_dim_value(d);
      else
        dim->set_dim_param(sym);
    }
  }
  onnx::ModelProto model_;
};

// A two-layer MLP: x[batch,4] -> MatMul W1[4,8] -> Add b1 -> Relu -> MatMul W2[8,3] -> y[batch,3].
inline OnnxBuilder tiny_mlp(int opset = 17) {
  OnnxBuilder b(opset);
  b.input("x", onnx::TensorProto::FLOAT, {-1, 4});
  b.output("y", onnx::TensorProto::FLOAT, {-1, 3});
  std::vector<float> w1(32), b1(8), w2(24);
  for (int i = 0; i < 32; ++i) w1[i] = 0.1f * ((i * 7) % 11 - 5);
  for (int i = 0; i < 8; ++i) b1[i] = 0.05f * (i - 4);
  for (int i = 0; i < 24; ++i) w2[i] = 0.1f * ((i * 5) % 9 - 4);
  b.initializer_f32("W1", {4, 8}, w1);
  b.initializer_f32("b1", {8}, b1);
  b.initializer_f32("W2", {8, 3}, w2);
  b.node("MatMul", {"x", "W1"}, {"h0"}, "fc1");
  b.node("Add", {"h0", "b1"}, {"h1"}, "bias1");
  b.node("Relu", {"h1"}, {"h2"}, "relu1");
  b.node("MatMul", {"h2", "W2"}, {"y"}, "fc2");
  return b;
}

}  // namespace dlsys::testing
