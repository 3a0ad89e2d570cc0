#include "graph/onnx_import.h"

#include <onnx/checker.h>
#include <onnx/defs/schema.h>
#include <onnx/onnx-data.pb.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <set>

#include "graph/opset_upgrade.h"
#include "ops/op_registry.h"
#include "tensor/npy.h"

namespace dlsys {

namespace {

constexpr int64_t kMaxTensorElements = int64_t{1} << 36;

// Reads a graph's initializers, inputs, outputs and nodes into `out` (subgraphs of nodes
// recursively: see Graph::outer_inputs). `subgraph`: values may be untyped, and names read but
// not defined are collected as outer_inputs.
Status import_body(const onnx::GraphProto& gp, const std::string& where, bool subgraph, Graph* out);

Result<Tensor> tensor_from_proto(const onnx::TensorProto& p, const std::string& where) {
  std::string what = p.name().empty() ? where : fmt::format("{}: tensor '{}'", where, p.name());
  if (p.data_location() == onnx::TensorProto::EXTERNAL)
    return Status::Unsupported(
        "{}: external tensor data is not supported; save the model with "
        "the weights inside (onnx.save(model, path, save_as_external_data=False))",
        what);
  auto dt = dtype_from_onnx(p.data_type());
  if (!dt.ok()) return dt.status().with_context(what);
  DType t = dt.value();
  Shape shape;
  int64_t n = 1;
  for (int64_t d : p.dims()) {
    if (d < 0) return Status::Invalid("{}: negative dimension {}", what, d);
    if (d > 0 && n > kMaxTensorElements / d) return Status::Invalid("{}: tensor too large", what);
    n *= d;
    shape.push_back(d);
  }
  Tensor out = Tensor::empty(t, shape);
  if (t == DType::kString) {
    // Strings are only ever in string_data (raw_data has no encoding for them).
    if (p.has_raw_data())
      return Status::Invalid("{}: a STRING tensor keeps its values in string_data, not raw_data",
                             what);
    if (p.string_data_size() != n)
      return Status::Invalid("{}: has {} strings, shape {} needs {}", what, p.string_data_size(),
                             shape_str(shape), n);
    for (int64_t i = 0; i < n; ++i) out.strings()[i] = p.string_data(static_cast<int>(i));
    return out;
  }
  size_t bytes = static_cast<size_t>(n) * dtype_size(t);
  if (p.has_raw_data()) {
    if (p.raw_data().size() != bytes)
      return Status::Invalid("{}: raw_data has {} bytes, shape {} of {} needs {}", what,
                             p.raw_data().size(), shape_str(shape), dtype_name(t), bytes);
    if (bytes) std::memcpy(out.data(), p.raw_data().data(), bytes);
    return out;
  }
  auto check = [&](int64_t have) -> Status {
    if (have != n)
      return Status::Invalid("{}: has {} values, shape {} needs {}", what, have, shape_str(shape),
                             n);
    return Status::OK();
  };
  switch (t) {
    case DType::kF32:
      DLSYS_RETURN_IF_ERROR(check(p.float_data_size()));
      for (int64_t i = 0; i < n; ++i) out.data_as<float>()[i] = p.float_data(i);
      break;
    case DType::kI64:
      DLSYS_RETURN_IF_ERROR(check(p.int64_data_size()));
      for (int64_t i = 0; i < n; ++i) out.data_as<int64_t>()[i] = p.int64_data(i);
      break;
    case DType::kI32:
      DLSYS_RETURN_IF_ERROR(check(p.int32_data_size()));
      for (int64_t i = 0; i < n; ++i) out.data_as<int32_t>()[i] = p.int32_data(i);
      break;
    case DType::kI8:
    case DType::kU8:
    case DType::kBool:
      DLSYS_RETURN_IF_ERROR(check(p.int32_data_size()));
      for (int64_t i = 0; i < n; ++i)
        out.data_as<uint8_t>()[i] = static_cast<uint8_t>(p.int32_data(i));
      break;
    case DType::kF16:
    case DType::kBF16:
    case DType::kI16:
    case DType::kU16:
      // int32_data holds 16-bit values (and the bit patterns of f16/bf16) one per entry.
      DLSYS_RETURN_IF_ERROR(check(p.int32_data_size()));
      for (int64_t i = 0; i < n; ++i)
        out.data_as<uint16_t>()[i] = static_cast<uint16_t>(p.int32_data(i));
      break;
    case DType::kString:
      break;  // read above
    case DType::kF64:
      DLSYS_RETURN_IF_ERROR(check(p.double_data_size()));
      for (int64_t i = 0; i < n; ++i) out.data_as<double>()[i] = p.double_data(i);
      break;
    case DType::kU32:
      DLSYS_RETURN_IF_ERROR(check(p.uint64_data_size()));
      for (int64_t i = 0; i < n; ++i)
        out.data_as<uint32_t>()[i] = static_cast<uint32_t>(p.uint64_data(i));
      break;
    case DType::kU64:
      DLSYS_RETURN_IF_ERROR(check(p.uint64_data_size()));
      for (int64_t i = 0; i < n; ++i) out.data_as<uint64_t>()[i] = p.uint64_data(i);
      break;
  }
  return out;
}

// The dlsys dtype of an ONNX type: a tensor's element type, or a composite for a sequence of
// tensors, an optional tensor and an optional sequence of tensors (tensor/dtype.h). Sets
// *untyped when an element type is left out (0, or no type at all).
Result<DType> dtype_from_type_proto(const onnx::TypeProto& t, const std::string& what,
                                    bool* untyped) {
  if (t.has_tensor_type()) {
    if (t.tensor_type().elem_type() == 0) {
      *untyped = true;
      return DType::kF32;
    }
    auto dt = dtype_from_onnx(t.tensor_type().elem_type());
    if (!dt.ok()) return dt.status().with_context(what);
    return dt.value();
  }
  if (t.has_sequence_type() || t.has_optional_type()) {
    const bool seq = t.has_sequence_type();
    if (!(seq ? t.sequence_type().has_elem_type() : t.optional_type().has_elem_type())) {
      *untyped = true;
      return DType::kF32;
    }
    const onnx::TypeProto& e = seq ? t.sequence_type().elem_type() : t.optional_type().elem_type();
    DLSYS_ASSIGN_OR_RETURN(DType inner, dtype_from_type_proto(e, what, untyped));
    if (dtype_is_optional(inner) || (seq && dtype_is_sequence(inner)))
      return Status::Unsupported(
          "{} is a {} of {}: dlsys holds sequences of tensors, optional tensors and optional "
          "sequences of tensors",
          what, seq ? "sequence" : "optional", dtype_name(inner));
    return seq ? sequence_of(inner) : optional_of(inner);
  }
  return Status::Unsupported(
      "{} is not a tensor, a sequence of tensors or an optional (maps and sparse tensors are not "
      "supported)",
      what);
}

// `untyped_ok`: a subgraph's value may leave its type out (it is the outer value's, known when
// the node is planned); it is then f32 without a shape here.
Result<ValueInfo> value_info_from_proto(const onnx::ValueInfoProto& v, const std::string& where,
                                        bool untyped_ok = false) {
  ValueInfo vi;
  vi.name = v.name();
  if (untyped_ok && !v.has_type()) return vi;
  bool untyped = false;
  auto dt =
      dtype_from_type_proto(v.type(), fmt::format("{}: value '{}'", where, v.name()), &untyped);
  if (!dt.ok()) return dt.status();
  if (untyped && untyped_ok) return vi;
  if (!v.type().has_tensor_type()) {
    if (untyped) return Status::Invalid("{}: value '{}' has no element type", where, v.name());
    vi.dtype = dt.value();  // a sequence or optional: rank 0, one list
    vi.has_shape = true;
    return vi;
  }
  const auto& tt = v.type().tensor_type();
  auto edt = dtype_from_onnx(tt.elem_type());
  if (!edt.ok()) return edt.status().with_context(fmt::format("{}: value '{}'", where, v.name()));
  vi.dtype = edt.value();
  if (tt.has_shape()) {
    vi.has_shape = true;
    for (const auto& d : tt.shape().dim()) {
      Dim dim;
      if (d.has_dim_value())
        dim.value = d.dim_value();
      else if (d.has_dim_param())
        dim.param = d.dim_param();
      vi.dims.push_back(dim);
    }
  }
  return vi;
}

Result<Attribute> attribute_from_proto(const onnx::AttributeProto& a, const std::string& where) {
  Attribute out;
  using A = onnx::AttributeProto;
  switch (a.type()) {
    case A::FLOAT:
      out.kind = Attribute::Kind::kFloat;
      out.f = a.f();
      break;
    case A::INT:
      out.kind = Attribute::Kind::kInt;
      out.i = a.i();
      break;
    case A::STRING:
      out.kind = Attribute::Kind::kString;
      out.s = a.s();
      break;
    case A::TENSOR: {
      out.kind = Attribute::Kind::kTensor;
      DLSYS_ASSIGN_OR_RETURN(out.t,
                             tensor_from_proto(a.t(), where + ": attribute '" + a.name() + "'"));
      break;
    }
    case A::FLOATS:
      out.kind = Attribute::Kind::kFloats;
      out.floats.assign(a.floats().begin(), a.floats().end());
      break;
    case A::INTS:
      out.kind = Attribute::Kind::kInts;
      out.ints.assign(a.ints().begin(), a.ints().end());
      break;
    case A::STRINGS:
      out.kind = Attribute::Kind::kStrings;
      out.strings.assign(a.strings().begin(), a.strings().end());
      break;
    case A::GRAPH:
    case A::GRAPHS:
      out.kind = Attribute::Kind::kGraph;
      break;
    case A::TYPE_PROTO: {
      // Optional's `type`: kept as the dlsys dtype's code (an INT attribute).
      bool untyped = false;
      auto dt = dtype_from_type_proto(a.tp(), where + ": attribute '" + a.name() + "'", &untyped);
      if (!dt.ok()) return dt.status();
      if (untyped)
        return Status::Invalid("{}: attribute '{}' has no element type", where, a.name());
      out.kind = Attribute::Kind::kInt;
      out.i = static_cast<int64_t>(dt.value());
      break;
    }
    default:
      out.kind = Attribute::Kind::kOther;
      break;
  }
  return out;
}

// Unsupported ops, all of them in one message: every node outside the default domain, and with
// !custom_domains_only every default-domain op dlsys does not implement.
// Each is named with its node (its path inside subgraphs) and its domain and opset as the model
// declares them (`opsets`: domain -> version, "" for the default domain).
Status check_supported_ops(const onnx::GraphProto& gp, const std::string& where,
                           bool custom_domains_only, const std::map<std::string, int64_t>& opsets) {
  std::vector<std::string> unsupported;
  // Nodes of subgraphs (If's branches, Loop's body) too, named by their path.
  std::function<void(const onnx::GraphProto&, const std::string&)> visit =
      [&](const onnx::GraphProto& body, const std::string& prefix) {
        for (int i = 0; i < body.node_size(); ++i) {
          const auto& n = body.node(i);
          std::string name =
              prefix + (n.name().empty() ? fmt::format("{}_{}", n.op_type(), i) : n.name());
          bool default_domain = n.domain().empty() || n.domain() == "ai.onnx";
          // An op is dlsys's when the registry has it for the node's domain (ai.onnx or
          // ai.onnx.ml).
          const OpSchema* op = find_op(n.op_type());
          bool ours = op && op->domain == (default_domain ? std::string() : n.domain());
          if (custom_domains_only ? (!default_domain && !ours) : !ours) {
            const std::string domain = default_domain ? std::string() : n.domain();
            auto v = opsets.find(domain);
            unsupported.push_back(fmt::format(
                "{}{} (node '{}', {} opset {})", domain.empty() ? "" : domain + ".", n.op_type(),
                name, domain.empty() ? "ai.onnx" : domain,
                v == opsets.end() ? std::string("undeclared") : std::to_string(v->second)));
          }
          for (const auto& a : n.attribute()) {
            if (a.has_g()) visit(a.g(), name + "/" + a.name() + "/");
            for (const auto& sub : a.graphs()) visit(sub, name + "/" + a.name() + "/");
          }
        }
      };
  visit(gp, "");
  if (unsupported.empty()) return Status::OK();
  std::string list;
  for (auto& u : unsupported) list += (list.empty() ? "" : ", ") + u;
  return Status::Unsupported(
      "'{}' uses {} unsupported op{}: {}. `dlsys inspect --ops` lists "
      "the supported ones",
      where, unsupported.size(), unsupported.size() == 1 ? "" : "s", list);
}

}  // namespace

Result<Tensor> parse_onnx_tensor(const std::string& bytes, const std::string& where) {
  onnx::TensorProto p;
  if (!p.ParseFromString(bytes))
    return Status::Invalid("{}: not a serialized ONNX TensorProto", where);
  return tensor_from_proto(p, where);
}

namespace {
Result<Tensor> sequence_from_proto(const onnx::SequenceProto& p, DType declared,
                                   const std::string& where);

Result<Tensor> optional_from_proto(const onnx::OptionalProto& p, DType declared,
                                   const std::string& where) {
  const DType inner = element_dtype(declared);
  if (p.elem_type() == onnx::OptionalProto::UNDEFINED) return Tensor::optional(inner, nullptr);
  if (dtype_is_sequence(inner)) {
    if (p.elem_type() != onnx::OptionalProto::SEQUENCE)
      return Status::Invalid("{}: the optional holds element type {}, {} was declared", where,
                             p.elem_type(), dtype_name(declared));
    DLSYS_ASSIGN_OR_RETURN(Tensor s, sequence_from_proto(p.sequence_value(), inner, where));
    return Tensor::optional(inner, &s);
  }
  if (p.elem_type() != onnx::OptionalProto::TENSOR)
    return Status::Invalid("{}: the optional holds element type {}, {} was declared", where,
                           p.elem_type(), dtype_name(declared));
  DLSYS_ASSIGN_OR_RETURN(Tensor t, tensor_from_proto(p.tensor_value(), where));
  if (t.dtype() != inner)
    return Status::Invalid("{}: the optional holds a {} tensor, {} was declared", where,
                           dtype_name(t.dtype()), dtype_name(declared));
  return Tensor::optional(inner, &t);
}

Result<Tensor> sequence_from_proto(const onnx::SequenceProto& p, DType declared,
                                   const std::string& where) {
  const DType elem = element_dtype(declared);
  if (p.elem_type() != onnx::SequenceProto::TENSOR && p.tensor_values_size() + p.elem_type() > 0)
    return Status::Unsupported(
        "{}: a sequence of element type {}; dlsys reads sequences of tensors", where,
        p.elem_type());
  std::vector<Tensor> items;
  for (int i = 0; i < p.tensor_values_size(); ++i) {
    DLSYS_ASSIGN_OR_RETURN(Tensor t,
                           tensor_from_proto(p.tensor_values(i), fmt::format("{}[{}]", where, i)));
    if (t.dtype() != elem)
      return Status::Invalid("{}: item {} is {}, the sequence is declared {}", where, i,
                             dtype_name(t.dtype()), dtype_name(declared));
    items.push_back(std::move(t));
  }
  return Tensor::sequence(elem, std::move(items));
}
}  // namespace

Result<Tensor> parse_onnx_value(const std::string& bytes, DType declared,
                                const std::string& where) {
  if (dtype_is_sequence(declared)) {
    onnx::SequenceProto p;
    if (!p.ParseFromString(bytes))
      return Status::Invalid("{}: not a serialized ONNX SequenceProto", where);
    return sequence_from_proto(p, declared, where);
  }
  if (dtype_is_optional(declared)) {
    onnx::OptionalProto p;
    if (!p.ParseFromString(bytes))
      return Status::Invalid("{}: not a serialized ONNX OptionalProto", where);
    return optional_from_proto(p, declared, where);
  }
  return parse_onnx_tensor(bytes, where);
}

Result<Graph> import_onnx_bytes(const std::string& bytes, const std::string& where) {
  onnx::ModelProto m;
  if (bytes.empty()) return Status::Invalid("'{}' is empty, not an ONNX model", where);
  if (!m.ParseFromString(bytes))
    return Status::Invalid(
        "'{}' is not an ONNX model: protobuf parsing failed (is the file "
        "truncated or of another format?)",
        where);
  if (m.ir_version() <= 0 || !m.has_graph() || m.opset_import_size() == 0)
    return Status::Invalid(
        "'{}' is not an ONNX model: it has no {} (export it with "
        "torch.onnx.export or onnx.save)",
        where,
        m.ir_version() <= 0 ? "ir_version"
        : !m.has_graph()    ? "graph"
                            : "opset_import");
  Graph g;
  g.ir_version = m.ir_version();
  g.producer = m.producer_name();
  for (const auto& mp : m.metadata_props()) g.metadata[mp.key()] = mp.value();
  std::map<std::string, int64_t> declared_opsets;  // before any upgrade, for error messages
  for (const auto& o : m.opset_import()) {
    if (o.domain().empty() || o.domain() == "ai.onnx") g.opset = static_cast<int>(o.version());
    declared_opsets[o.domain() == "ai.onnx" ? std::string() : o.domain()] = o.version();
  }
  if (g.opset == 0) {
    // No default-domain opset: a model of other domains only (the ONNX training cases, whose
    // Adagrad/Adam/Momentum are ai.onnx.preview.training ops) has no default-domain semantics to
    // pin, and runs as the newest opset; one that uses default-domain ops anyway keeps the error.
    bool uses_default = false;
    for (const auto& n : m.graph().node())
      uses_default |= n.domain().empty() || n.domain() == "ai.onnx";
    if (!uses_default) g.opset = kMaxOpset;
  }
  if (g.opset > 0 && g.opset < kMinOpset) {
    // An older opset whose ops all have the same definition there as at opset 13 (the ONNX
    // schema registry says when each op last changed) is only relabelled; from opset 7 on, one
    // with changed ops goes through ONNX's version converter (graph/opset_upgrade.h).
    std::vector<std::string> changed;
    for (const auto& n : m.graph().node()) {
      if (!n.domain().empty() && n.domain() != "ai.onnx") continue;
      const auto* at_model = onnx::OpSchemaRegistry::Schema(n.op_type(), g.opset, "");
      const auto* at_min = onnx::OpSchemaRegistry::Schema(n.op_type(), kMinOpset, "");
      if (!at_model || !at_min || at_model->SinceVersion() != at_min->SinceVersion()) {
        std::string op = n.op_type();
        if (std::find(changed.begin(), changed.end(), op) == changed.end()) changed.push_back(op);
      }
    }
    if (!changed.empty() && g.opset >= kMinConvertibleOpset) {
      // The checker runs on the model as written first, so the converter sees a valid graph.
      try {
        onnx::checker::check_model(m);
      } catch (const std::exception& e) {
        std::string msg = e.what();
        if (msg.size() > 600) msg = msg.substr(0, 600) + "...";
        return Status::Invalid("'{}' fails the ONNX checker: {}", where, msg);
      }
      // Nodes of other domains (which dlsys does not run) make the converter throw
      // "unordered_map::at": report them as unsupported first.
      DLSYS_RETURN_IF_ERROR(
          check_supported_ops(m.graph(), where, /*custom_domains_only=*/true, declared_opsets));
      DLSYS_RETURN_IF_ERROR(upgrade_onnx_opset(&m, g.opset, where));
      g.converted_from_opset = g.opset;
      g.opset = kMinOpset;
    } else if (changed.empty()) {
      g.converted_from_opset = g.opset;
      g.opset = kMinOpset;
    } else {
      std::string list;
      for (auto& c : changed) list += (list.empty() ? "" : ", ") + c;
      return Status::Unsupported(
          "'{}' uses opset {} of the default ONNX domain, and these ops "
          "changed between it and opset {}: {}. dlsys supports opsets {} "
          "to {} and converts opsets {} to {}: re-export with torch.onnx.export(..., "
          "opset_version=17)",
          where, g.opset, kMinOpset, list, kMinOpset, kMaxOpset, kMinConvertibleOpset,
          kMinOpset - 1);
    }
  }
  if (g.opset < kMinOpset || g.opset > kMaxOpset)
    return Status::Unsupported(
        "'{}' uses opset {} of the default ONNX domain; dlsys supports "
        "opsets {} to {} (and converts {} to {}): re-export with torch.onnx.export(..., "
        "opset_version=17)",
        where, g.opset, kMinOpset, kMaxOpset, kMinConvertibleOpset, kMinOpset - 1);
  try {
    onnx::checker::check_model(m);
  } catch (const std::exception& e) {
    std::string msg = e.what();
    if (msg.size() > 600) msg = msg.substr(0, 600) + "...";
    return Status::Invalid("'{}' fails the ONNX checker: {}", where, msg);
  }
  const auto& gp = m.graph();
  g.name = gp.name();
  DLSYS_RETURN_IF_ERROR(
      check_supported_ops(gp, where, /*custom_domains_only=*/false, declared_opsets));
  DLSYS_RETURN_IF_ERROR(import_body(gp, where, /*subgraph=*/false, &g));
  return g;
}

Result<Graph> import_onnx_file(const std::string& path) {
  std::string bytes;
  DLSYS_ASSIGN_OR_RETURN(bytes, read_file(path));
  return import_onnx_bytes(bytes, path);
}

namespace {

Status import_body(const onnx::GraphProto& gp, const std::string& where, bool subgraph,
                   Graph* out) {
  Graph& g = *out;
  for (const auto& init : gp.initializer()) {
    Tensor t;
    DLSYS_ASSIGN_OR_RETURN(t, tensor_from_proto(init, where));
    g.initializers[init.name()] = std::move(t);
  }
  for (const auto& v : gp.input()) {
    if (g.initializers.count(v.name())) continue;
    ValueInfo vi;
    DLSYS_ASSIGN_OR_RETURN(vi, value_info_from_proto(v, where, subgraph));
    g.inputs.push_back(std::move(vi));
  }
  for (const auto& v : gp.output()) {
    ValueInfo vi;
    DLSYS_ASSIGN_OR_RETURN(vi, value_info_from_proto(v, where, subgraph));
    g.outputs.push_back(std::move(vi));
  }
  // Names this graph defines; in a subgraph, any other name a node reads is an outer value.
  std::set<std::string> defined;
  for (const auto& [name, t] : g.initializers) defined.insert(name);
  for (const auto& v : g.inputs) defined.insert(v.name);
  auto read = [&](const std::string& name) {
    if (!subgraph || name.empty() || defined.count(name)) return;
    if (std::find(g.outer_inputs.begin(), g.outer_inputs.end(), name) == g.outer_inputs.end())
      g.outer_inputs.push_back(name);
  };
  for (int i = 0; i < gp.node_size(); ++i) {
    const auto& n = gp.node(i);
    Node node;
    node.name = n.name().empty() ? fmt::format("{}_{}", n.op_type(), i) : n.name();
    node.op_type = n.op_type();
    node.domain = n.domain();
    node.inputs.assign(n.input().begin(), n.input().end());
    node.outputs.assign(n.output().begin(), n.output().end());
    std::string nwhere = fmt::format("{}: node '{}' ({})", where, node.name, node.op_type);
    std::vector<std::shared_ptr<Graph>> subgraphs;
    for (const auto& a : n.attribute()) {
      Attribute attr;
      DLSYS_ASSIGN_OR_RETURN(attr, attribute_from_proto(a, nwhere));
      if (a.type() == onnx::AttributeProto::GRAPH) {
        auto sub = std::make_shared<Graph>();
        sub->name = a.g().name();
        sub->opset = g.opset;
        DLSYS_RETURN_IF_ERROR(
            import_body(a.g(), nwhere + ": attribute '" + a.name() + "'", true, sub.get()));
        subgraphs.push_back(sub);
        attr.g = sub;
      }
      node.attrs[a.name()] = std::move(attr);
    }
    const OpSchema* s = find_op(node.op_type);
    int nin = static_cast<int>(node.inputs.size()), nout = static_cast<int>(node.outputs.size());
    if (nin < s->min_inputs || nin > s->max_inputs || nout < s->min_outputs ||
        nout > s->max_outputs)
      return Status::Invalid(
          "{}: has {} inputs and {} outputs; {} takes {}-{} inputs and {}-{} outputs", nwhere, nin,
          nout, node.op_type, s->min_inputs, s->max_inputs, s->min_outputs, s->max_outputs);
    if (!subgraphs.empty()) {
      // The outer values the node's subgraphs read become its trailing inputs (Graph::
      // outer_inputs), the same list for each of its subgraphs.
      std::vector<std::string> outer;
      for (const auto& sub : subgraphs)
        for (const auto& name : sub->outer_inputs)
          if (std::find(outer.begin(), outer.end(), name) == outer.end()) outer.push_back(name);
      for (const auto& sub : subgraphs) {
        sub->outer_inputs = outer;
        for (const auto& name : outer) {
          ValueInfo vi;
          vi.name = name;
          sub->inputs.push_back(vi);
        }
      }
      node.inputs.insert(node.inputs.end(), outer.begin(), outer.end());
    }
    for (const auto& in : node.inputs) read(in);
    for (const auto& o : node.outputs)
      if (!o.empty()) defined.insert(o);
    g.nodes.push_back(std::move(node));
  }
  if (subgraph)
    for (const auto& v : g.outputs) read(v.name);  // an output may be an outer value itself
  return Status::OK();
}

}  // namespace

}  // namespace dlsys
