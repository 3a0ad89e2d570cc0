#include "graph/onnx_export.h"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <algorithm>

#include "core/file_util.h"

namespace dlsys {

namespace {

void set_value_info(onnx::ValueInfoProto* p, const ValueInfo& v) {
  p->set_name(v.name);
  auto* tt = p->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(dtype_to_onnx(v.dtype));
  if (!v.has_shape) return;
  auto* shape = tt->mutable_shape();
  for (const Dim& d : v.dims) {
    auto* dim = shape->add_dim();
    if (d.fixed())
      dim->set_dim_value(d.value);
    else if (!d.param.empty())
      dim->set_dim_param(d.param);
  }
}

void set_tensor(onnx::TensorProto* p, const std::string& name, const Tensor& t) {
  p->set_name(name);
  p->set_data_type(dtype_to_onnx(t.dtype()));
  for (int64_t d : t.shape()) p->add_dims(d);
  if (t.dtype() == DType::kString) {
    for (int64_t i = 0; i < t.numel(); ++i) p->add_string_data(t.strings()[i]);
    return;
  }
  p->set_raw_data(std::string(static_cast<const char*>(t.data()), t.nbytes()));
}

Status set_attribute(onnx::AttributeProto* p, const std::string& name, const Attribute& a) {
  p->set_name(name);
  switch (a.kind) {
    case Attribute::Kind::kFloat:
      p->set_type(onnx::AttributeProto::FLOAT);
      p->set_f(a.f);
      break;
    case Attribute::Kind::kInt:
      p->set_type(onnx::AttributeProto::INT);
      p->set_i(a.i);
      break;
    case Attribute::Kind::kString:
      p->set_type(onnx::AttributeProto::STRING);
      p->set_s(a.s);
      break;
    case Attribute::Kind::kFloats:
      p->set_type(onnx::AttributeProto::FLOATS);
      for (float f : a.floats) p->add_floats(f);
      break;
    case Attribute::Kind::kInts:
      p->set_type(onnx::AttributeProto::INTS);
      for (int64_t i : a.ints) p->add_ints(i);
      break;
    case Attribute::Kind::kStrings:
      p->set_type(onnx::AttributeProto::STRINGS);
      for (const auto& s : a.strings) p->add_strings(s);
      break;
    case Attribute::Kind::kTensor:
      p->set_type(onnx::AttributeProto::TENSOR);
      set_tensor(p->mutable_t(), "", a.t);
      break;
    default:
      return Status::Unsupported("attribute '{}' has a kind the exporter does not write", name);
  }
  return Status::OK();
}

}  // namespace

Result<std::string> export_onnx_bytes(const Graph& g) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name("dlsys");
  m.set_producer_version("0.1.0");
  for (const auto& [k, v] : g.metadata) {
    auto* mp = m.add_metadata_props();
    mp->set_key(k);
    mp->set_value(v);
  }
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(std::max(g.opset, 13));
  // ai.onnx.ml nodes (LabelEncoder) are written at ai.onnx.ml opset 2 (keys_*/values_*).
  if (std::any_of(g.nodes.begin(), g.nodes.end(),
                  [](const Node& n) { return n.domain == "ai.onnx.ml"; })) {
    auto* ml = m.add_opset_import();
    ml->set_domain("ai.onnx.ml");
    ml->set_version(2);
  }
  auto* gp = m.mutable_graph();
  gp->set_name(g.name.empty() ? "dlsys" : g.name);
  for (const ValueInfo& v : g.inputs) set_value_info(gp->add_input(), v);
  for (const ValueInfo& v : g.outputs) set_value_info(gp->add_output(), v);
  for (const auto& [name, t] : g.initializers) set_tensor(gp->add_initializer(), name, t);
  for (const Node& n : g.nodes) {
    auto* np = gp->add_node();
    np->set_name(n.name);
    np->set_op_type(n.op_type);
    if (!n.domain.empty()) np->set_domain(n.domain);
    for (const auto& i : n.inputs) np->add_input(i);
    for (const auto& o : n.outputs) np->add_output(o);
    for (const auto& [k, a] : n.attrs)
      DLSYS_RETURN_IF_ERROR(set_attribute(np->add_attribute(), k, a));
  }
  try {
    onnx::checker::check_model(m);
  } catch (const std::exception& e) {
    return Status::Internal("the exported model fails the ONNX checker: {}", e.what());
  }
  std::string bytes;
  if (!m.SerializeToString(&bytes)) return Status::Internal("ONNX serialization failed");
  return bytes;
}

Status export_onnx_file(const Graph& g, const std::string& path) {
  DLSYS_ASSIGN_OR_RETURN(std::string bytes, export_onnx_bytes(g));
  return write_file_atomic(path, bytes);
}

}  // namespace dlsys
