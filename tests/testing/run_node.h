// Runs one ONNX node through the whole path (an ONNX model built with the real protobuf classes,
// imported, planned and run by a Session): the op tests' way to check a kernel on chosen inputs.
#pragma once

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "graph/onnx_import.h"
#include "graph/session.h"
#include "tensor/dtype.h"
#include "testing/onnx_builder.h"

namespace dlsys::testing {

// One input of the node: a graph input fed `value`, or (`constant`) a Constant node holding it,
// known when the plan is built. An empty name leaves an optional input out.
struct NodeInput {
  std::string name;
  Tensor value;
  bool constant = false;
};

// Runs node `node_name` of type `op` on `inputs` with `outputs` outputs (y0, y1, ...); `attrs`
// sets its attributes. Returns the import or run status; `out` gets copies of the outputs (they
// outlive the session); `kernel`, when given, the implementation the node's step reports
// (oneDNN's name, or empty).
inline Status run_node(const std::string& op, const std::vector<NodeInput>& inputs, size_t outputs,
                       const std::function<void(onnx::NodeProto*)>& attrs, std::vector<Tensor>* out,
                       const std::string& node_name = "q", std::string* kernel = nullptr) {
  OnnxBuilder b(17);
  std::vector<std::string> names, outs;
  std::map<std::string, Tensor> feed;
  for (const NodeInput& i : inputs) {
    names.push_back(i.name);
    if (i.name.empty()) continue;
    if (i.constant) {
      auto* c = b.node("Constant", {}, {i.name}, i.name + "_const");
      auto* a = c->add_attribute();
      a->set_name("value");
      a->set_type(onnx::AttributeProto::TENSOR);
      auto* t = a->mutable_t();
      t->set_data_type(dtype_to_onnx(i.value.dtype()));
      for (int64_t d : i.value.shape()) t->add_dims(d);
      t->set_raw_data(i.value.data(), i.value.nbytes());
      continue;
    }
    b.input(i.name, dtype_to_onnx(i.value.dtype()), i.value.shape());
    feed[i.name] = i.value;
  }
  for (size_t k = 0; k < outputs; ++k) {
    outs.push_back("y" + std::to_string(k));
    b.output(outs.back(), onnx::TensorProto::FLOAT, {});
  }
  auto* n = b.node(op, names, outs, node_name);
  if (attrs) attrs(n);
  auto g = import_onnx_bytes(b.bytes(), "t.onnx");
  if (!g.ok()) return g.status();
  auto s = Session::from_graph(std::move(g).value());
  Status st = s->run(feed, out);
  for (Tensor& t : *out) t = t.clone();
  if (kernel && st.ok()) {
    auto bound = s->bind_inputs(feed);
    if (!bound.ok()) return bound.status();
    auto plan = s->plan_for(bound.value());
    if (!plan.ok()) return plan.status();
    for (const PlanStepInfo& step : plan.value()->steps())
      if (step.name == node_name) *kernel = step.kernel;
  }
  return st;
}

// A tensor of dtype `dt` and `shape` holding `v` (T is the element's C++ type).
template <typename T>
Tensor make_tensor(DType dt, const Shape& shape, const std::vector<T>& v) {
  Tensor t = Tensor::empty(dt, shape);
  EXPECT_EQ(t.numel(), static_cast<int64_t>(v.size()));
  std::copy(v.begin(), v.end(), t.data_as<T>());
  return t;
}

}  // namespace dlsys::testing
