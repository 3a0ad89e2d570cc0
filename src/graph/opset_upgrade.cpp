#include "graph/opset_upgrade.h"

#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>
#include <onnx/version_converter/convert.h>

#include <map>
#include <set>

#include "ops/op_registry.h"

namespace dlsys {

namespace {

bool default_domain(const onnx::NodeProto& n) {
  return n.domain().empty() || n.domain() == "ai.onnx";
}

// Rank of every value whose shape is known (graph inputs, initializers, inferred value_info).
std::map<std::string, int> known_ranks(const onnx::GraphProto& g) {
  std::map<std::string, int> ranks;
  auto add = [&](const onnx::ValueInfoProto& v) {
    if (v.type().has_tensor_type() && v.type().tensor_type().has_shape())
      ranks[v.name()] = v.type().tensor_type().shape().dim_size();
  };
  for (const auto& v : g.input()) add(v);
  for (const auto& v : g.value_info()) add(v);
  for (const auto& v : g.output()) add(v);
  for (const auto& t : g.initializer()) ranks[t.name()] = t.dims_size();
  return ranks;
}

onnx::AttributeProto int_attr(const std::string& name, int64_t v) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::INT);
  a.set_i(v);
  return a;
}

// Before opset 13, Softmax / LogSoftmax / Hardmax coerce the input to 2-D at `axis` (default 1)
// and normalize each row; from 13 they normalize along `axis` alone. Both agree when axis is the
// last one, so such a node only gets axis = -1. Any other node (or one whose input rank is
// unknown) becomes Flatten(axis) -> op(axis = -1) -> Reshape(to Shape(x)), which is the old
// definition written with opset-13 ops and needs no shape.
void rewrite_softmax_family(onnx::ModelProto* m) {
  onnx::GraphProto* g = m->mutable_graph();
  std::map<std::string, int> ranks = known_ranks(*g);
  google::protobuf::RepeatedPtrField<onnx::NodeProto> out;
  int fresh = 0;
  for (const auto& n : g->node()) {
    bool family = default_domain(n) && (n.op_type() == "Softmax" || n.op_type() == "LogSoftmax" ||
                                        n.op_type() == "Hardmax");
    if (!family || n.input_size() != 1 || n.output_size() != 1) {
      *out.Add() = n;
      continue;
    }
    int64_t axis = 1;
    for (const auto& a : n.attribute())
      if (a.name() == "axis") axis = a.i();
    auto r = ranks.find(n.input(0));
    bool last = axis == -1;
    if (r != ranks.end() && r->second > 0)
      last = last || (axis < 0 ? axis + r->second : axis) == r->second - 1;
    onnx::NodeProto op = n;
    op.clear_attribute();
    for (const auto& a : n.attribute())
      if (a.name() != "axis") *op.add_attribute() = a;
    *op.add_attribute() = int_attr("axis", -1);
    if (last) {
      *out.Add() = op;
      continue;
    }
    std::string base = n.output(0) + "_dlsys_opset13_" + std::to_string(fresh++);
    onnx::NodeProto shape;
    shape.set_op_type("Shape");
    shape.set_name(base + "_shape");
    shape.add_input(n.input(0));
    shape.add_output(base + "_shape");
    onnx::NodeProto flatten;
    flatten.set_op_type("Flatten");
    flatten.set_name(base + "_flatten");
    flatten.add_input(n.input(0));
    flatten.add_output(base + "_flat");
    *flatten.add_attribute() = int_attr("axis", axis);
    op.set_input(0, base + "_flat");
    op.set_output(0, base + "_rows");
    onnx::NodeProto reshape;
    reshape.set_op_type("Reshape");
    reshape.set_name(base + "_reshape");
    reshape.add_input(base + "_rows");
    reshape.add_input(base + "_shape");
    reshape.add_output(n.output(0));
    *out.Add() = shape;
    *out.Add() = flatten;
    *out.Add() = op;
    *out.Add() = reshape;
  }
  g->mutable_node()->Swap(&out);
}

// Pad before opset 11 has an optional `value` (default 0) that the converter's Pad 10->11 adapter
// reads unconditionally (it throws "required undefined attribute 'value'"): write the default.
void fill_pad_value(onnx::ModelProto* m, int from) {
  if (from >= 11) return;
  for (auto& n : *m->mutable_graph()->mutable_node()) {
    if (!default_domain(n) || n.op_type() != "Pad") continue;
    bool has_value = false;
    for (const auto& a : n.attribute()) has_value = has_value || a.name() == "value";
    if (has_value) continue;
    auto* a = n.add_attribute();
    a->set_name("value");
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(0.f);
  }
}

// The one-node model of `n` (its inputs and outputs typed as shape inference left them), to find
// which node the converter fails on.
onnx::ModelProto single_node_model(const onnx::ModelProto& m, const onnx::NodeProto& n) {
  std::map<std::string, const onnx::ValueInfoProto*> info;
  const auto& g = m.graph();
  for (const auto& v : g.input()) info[v.name()] = &v;
  for (const auto& v : g.value_info()) info[v.name()] = &v;
  for (const auto& v : g.output()) info[v.name()] = &v;
  std::map<std::string, const onnx::TensorProto*> inits;
  for (const auto& t : g.initializer()) inits[t.name()] = &t;
  onnx::ModelProto one;
  one.set_ir_version(m.ir_version());
  *one.mutable_opset_import() = m.opset_import();
  onnx::GraphProto* og = one.mutable_graph();
  og->set_name("one_node");
  *og->add_node() = n;
  auto typed = [&](const std::string& name, onnx::ValueInfoProto* v) {
    v->set_name(name);
    auto it = info.find(name);
    if (it != info.end()) {
      *v->mutable_type() = it->second->type();
    } else if (inits.count(name)) {
      auto* tt = v->mutable_type()->mutable_tensor_type();
      tt->set_elem_type(inits[name]->data_type());
      auto* s = tt->mutable_shape();
      for (int64_t d : inits[name]->dims()) s->add_dim()->set_dim_value(d);
    } else {
      v->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
    }
  };
  std::set<std::string> seen;
  for (const auto& in : n.input())
    if (!in.empty() && seen.insert(in).second) {
      typed(in, og->add_input());
      if (inits.count(in)) *og->add_initializer() = *inits[in];
    }
  for (const auto& o : n.output())
    if (!o.empty()) typed(o, og->add_output());
  return one;
}

int default_opset(const onnx::ModelProto& m) {
  for (const auto& o : m.opset_import())
    if (o.domain().empty() || o.domain() == "ai.onnx") return static_cast<int>(o.version());
  return 0;
}

std::string short_message(const std::exception& e) {
  std::string msg = e.what();
  if (msg.size() > 400) msg = msg.substr(0, 400) + "...";
  while (!msg.empty() && (msg.back() == '.' || msg.back() == ' ' || msg.back() == '\n'))
    msg.pop_back();
  return msg;
}

}  // namespace

Status upgrade_onnx_opset(onnx::ModelProto* m, int from, const std::string& where) {
  if (from < kMinConvertibleOpset || from >= kMinOpset)
    return Status::Invalid("'{}': cannot upgrade from opset {} (dlsys converts opsets {} to {})",
                           where, from, kMinConvertibleOpset, kMinOpset - 1);
  // libonnx's IR import (under the converter) dereferences a null pointer on a graph output that
  // nothing defines, which the checker lets through: refuse that here.
  {
    const auto& g = m->graph();
    std::set<std::string> defined;
    for (const auto& v : g.input()) defined.insert(v.name());
    for (const auto& t : g.initializer()) defined.insert(t.name());
    for (const auto& n : g.node()) defined.insert(n.output().begin(), n.output().end());
    for (const auto& v : g.output())
      if (!defined.count(v.name()))
        return Status::Invalid(
            "'{}': graph output '{}' is not produced by any node, input or initializer", where,
            v.name());
  }
  // Unnamed nodes get the name the importer would give them from their place in the file as
  // written ("{op}_{index}"), before rewrites and the converter insert nodes and shift indices.
  for (int i = 0; i < m->graph().node_size(); ++i) {
    auto* n = m->mutable_graph()->mutable_node(i);
    if (n->name().empty()) n->set_name(fmt::format("{}_{}", n->op_type(), i));
  }
  // Shape inference first: the converter's adapters read input ranks from the graph.
  try {
    onnx::shape_inference::InferShapes(*m);
  } catch (const std::exception& e) {
    return Status::Invalid("'{}': ONNX shape inference failed at opset {}: {}", where, from,
                           short_message(e));
  }
  rewrite_softmax_family(m);
  fill_pad_value(m, from);
  onnx::ModelProto converted;
  std::string failure;
  try {
    converted = onnx::version_conversion::ConvertVersion(*m, kMinOpset);
  } catch (const std::exception& e) {
    failure = short_message(e);
  }
  if (failure.empty() && default_opset(converted) != kMinOpset)
    failure = "the converter could not read the model and left it unchanged";
  if (!failure.empty()) {
    // Name the node: convert each default-domain node on its own until one fails.
    for (int i = 0; i < m->graph().node_size(); ++i) {
      const auto& n = m->graph().node(i);
      if (!default_domain(n)) continue;
      std::string why;
      try {
        onnx::ModelProto one = single_node_model(*m, n);
        onnx::ModelProto c = onnx::version_conversion::ConvertVersion(one, kMinOpset);
        if (default_opset(c) != kMinOpset) why = "the converter left it unchanged";
      } catch (const std::exception& e) {
        why = short_message(e);
      }
      if (!why.empty())
        return Status::Unsupported(
            "'{}': node '{}' ({}) cannot be converted from opset {} to opset {}: {}. Re-export "
            "the model with torch.onnx.export(..., opset_version=17)",
            where, n.name(), n.op_type(), from, kMinOpset, why);
    }
    return Status::Unsupported(
        "'{}': converting from opset {} to opset {} failed: {}. Re-export the model with "
        "torch.onnx.export(..., opset_version=17)",
        where, from, kMinOpset, failure);
  }
  *m = std::move(converted);
  return Status::OK();
}

}  // namespace dlsys
