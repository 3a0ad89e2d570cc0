#include "graph/quantize/quantize.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include "graph/onnx_import.h"
#include "graph/session.h"
#include "tensor/npy.h"

namespace dlsys {
namespace {

// What the quantizer does to one node of the original graph.
struct NodePlan {
  bool quantize_weight = false;
  int weight_axis = 0;  // the weight's output-channel axis (per-channel scales)
  bool quantize_bias = false;
  int bias_input = -1;  // Conv: 2, Gemm: 2
};

// Statistics of one observed activation.
struct Observed {
  float min = std::numeric_limits<float>::infinity();
  float max = -std::numeric_limits<float>::infinity();
  std::vector<int64_t> hist;  // |x| histogram over [0, absmax] (percentile method)
  float absmax() const { return std::max(std::fabs(min), std::fabs(max)); }
};
constexpr int kBins = 4096;

void observe_range(const Tensor& t, Observed* o) {
  const float* x = t.data_as<float>();
  float lo = o->min, hi = o->max;
  for (int64_t i = 0; i < t.numel(); ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  o->min = lo;
  o->max = hi;
}

void observe_hist(const Tensor& t, Observed* o) {
  if (o->hist.empty()) o->hist.assign(kBins, 0);
  float am = o->absmax();
  if (am <= 0) return;
  const float* x = t.data_as<float>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    int b = static_cast<int>(std::fabs(x[i]) / am * (kBins - 1));
    o->hist[std::min(b, kBins - 1)]++;
  }
}

float percentile_absmax(const Observed& o, double pct) {
  int64_t total = 0;
  for (int64_t c : o.hist) total += c;
  if (total == 0) return o.absmax();
  double want = pct / 100.0 * static_cast<double>(total);
  int64_t acc = 0;
  for (int b = 0; b < kBins; ++b) {
    acc += o.hist[b];
    if (static_cast<double>(acc) >= want)
      return o.absmax() * static_cast<float>(b + 1) / (kBins - 1);
  }
  return o.absmax();
}

const Tensor* init_of(const Graph& g, const std::string& name) {
  auto it = g.initializers.find(name);
  return it == g.initializers.end() ? nullptr : &it->second;
}

int64_t attr_i(const Node& n, const char* name, int64_t def) {
  auto it = n.attrs.find(name);
  return it == n.attrs.end() ? def : it->second.i;
}
float attr_f(const Node& n, const char* name, float def) {
  auto it = n.attrs.find(name);
  return it == n.attrs.end() ? def : it->second.f;
}

// Decides, per node, what gets quantized; fills the activation names to calibrate.
std::vector<NodePlan> plan_nodes(const Graph& g, bool dynamic, std::vector<std::string>* acts,
                                 std::map<std::string, std::string>* share) {
  std::vector<NodePlan> plans(g.nodes.size());
  auto add_act = [&](const std::string& v) {
    if (v.empty() || init_of(g, v)) return;
    if (std::find(acts->begin(), acts->end(), v) == acts->end()) acts->push_back(v);
  };
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    NodePlan& p = plans[i];
    if (n.inputs.size() < 2) continue;
    const Tensor* w = init_of(g, n.inputs[1]);
    if (!w || w->dtype() != DType::kF32) continue;
    if (n.op_type == "Conv" && !dynamic && w->rank() >= 3) {
      p.quantize_weight = true;
      p.weight_axis = 0;
      p.bias_input = 2;
    } else if (n.op_type == "MatMul" && w->rank() == 2) {
      p.quantize_weight = true;
      p.weight_axis = 1;
    } else if (n.op_type == "Gemm" && w->rank() == 2 && attr_f(n, "alpha", 1.f) == 1.f &&
               attr_f(n, "beta", 1.f) == 1.f) {
      p.quantize_weight = true;
      p.weight_axis = attr_i(n, "transB", 0) ? 0 : 1;
      p.bias_input = 2;
    } else {
      continue;
    }
    if (!dynamic) {
      add_act(n.inputs[0]);
      if (p.bias_input >= 0 && static_cast<int>(n.inputs.size()) > p.bias_input) {
        const Tensor* b = init_of(g, n.inputs[p.bias_input]);
        p.quantize_bias =
            b && b->dtype() == DType::kF32 && b->rank() == 1 && b->dim(0) == w->dim(p.weight_axis);
      }
    }
  }
  if (dynamic) return plans;
  // MaxPool commutes with quantization at one scale: when its output is quantized, quantize its
  // input with the same parameters (the input's range covers the output's).
  for (const Node& n : g.nodes) {
    if (n.op_type != "MaxPool" || n.outputs.size() != 1 || n.inputs.empty()) continue;
    if (std::find(acts->begin(), acts->end(), n.outputs[0]) == acts->end()) continue;
    if (init_of(g, n.inputs[0])) continue;
    add_act(n.inputs[0]);
    (*share)[n.outputs[0]] = n.inputs[0];
  }
  return plans;
}

// Names not used anywhere in the model yet.
class NameGen {
 public:
  explicit NameGen(const onnx::GraphProto& g) {
    for (const auto& n : g.node()) {
      used_.insert(n.name());
      for (const auto& v : n.input()) used_.insert(v);
      for (const auto& v : n.output()) used_.insert(v);
    }
    for (const auto& t : g.initializer()) used_.insert(t.name());
    for (const auto& v : g.input()) used_.insert(v.name());
  }
  std::string make(const std::string& base) {
    std::string n = base;
    for (int k = 1; used_.count(n); ++k) n = base + "_" + std::to_string(k);
    used_.insert(n);
    return n;
  }

 private:
  std::set<std::string> used_;
};

void set_tensor(onnx::TensorProto* p, const std::string& name, int onnx_type, const Shape& shape,
                const void* data, size_t bytes) {
  p->set_name(name);
  p->set_data_type(onnx_type);
  for (int64_t d : shape) p->add_dims(d);
  p->set_raw_data(std::string(static_cast<const char*>(data), bytes));
}

onnx::NodeProto make_qdq(const std::string& op, const std::string& name, const std::string& x,
                         const std::string& scale, const std::string& zp, const std::string& y,
                         int axis) {
  onnx::NodeProto n;
  n.set_op_type(op);
  n.set_name(name);
  n.add_input(x);
  n.add_input(scale);
  n.add_input(zp);
  n.add_output(y);
  if (axis >= 0) {
    auto* a = n.add_attribute();
    a->set_name("axis");
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(axis);
  }
  return n;
}

}  // namespace

Result<QuantizeReport> quantize_model(const std::string& in_path, const Tensor& calib,
                                      const std::string& out_path, const QuantizeOptions& opts,
                                      void (*progress)(int64_t, int64_t)) {
  std::string bytes;
  DLSYS_ASSIGN_OR_RETURN(bytes, read_file(in_path));
  Graph g;
  DLSYS_ASSIGN_OR_RETURN(g, import_onnx_bytes(bytes, in_path));
  onnx::ModelProto m;
  if (!m.ParseFromString(bytes)) return Status::Invalid("'{}': protobuf parsing failed", in_path);
  if (static_cast<int>(g.nodes.size()) != m.graph().node_size())
    return Status::Internal("'{}': imported graph and file disagree on the node count", in_path);
  if (g.inputs.size() != 1)
    return Status::Unsupported("'{}' has {} inputs; quantization calibrates models with one input",
                               in_path, g.inputs.size());

  QuantizeReport rep;
  rep.bytes_before = static_cast<int64_t>(bytes.size());
  std::vector<std::string> acts;
  std::map<std::string, std::string> share;  // activation -> activation whose params it uses
  std::vector<NodePlan> plans = plan_nodes(g, opts.dynamic, &acts, &share);
  bool any = false;
  for (const auto& p : plans) any = any || p.quantize_weight;
  if (!any)
    return Status::Invalid("'{}' has no {} with a constant float weight: nothing to quantize",
                           in_path, opts.dynamic ? "MatMul or Gemm" : "Conv, MatMul or Gemm");

  // Calibration: run the float model with every activation to observe as an extra output.
  std::map<std::string, Observed> obs;
  if (!opts.dynamic) {
    const ValueInfo& in = g.inputs[0];
    if (calib.dtype() != in.dtype)
      return Status::Invalid("calibration data is {}, but input '{}' takes {}",
                             dtype_name(calib.dtype()), in.name, dtype_name(in.dtype));
    if (calib.rank() < 1 || calib.dim(0) < 1)
      return Status::Invalid("calibration data needs at least one sample along axis 0");
    Graph cg = g;
    std::vector<std::string> observed;
    for (const auto& a : acts) {
      if (a == in.name) continue;
      ValueInfo vi;
      vi.name = a;
      cg.outputs.push_back(vi);
      observed.push_back(a);
    }
    SessionOptions so;
    so.threads = opts.threads;
    auto sess = Session::from_graph(std::move(cg), so);
    sess->apply_threads();
    int64_t n = calib.dim(0), bs = std::max<int64_t>(1, opts.batch);
    int passes = opts.method == CalibrationMethod::kPercentile ? 2 : 1;
    int64_t nb = (n + bs - 1) / bs;
    for (int pass = 0; pass < passes; ++pass) {
      for (int64_t b0 = 0, k = 0; b0 < n; b0 += bs, ++k) {
        Tensor batch = calib.slice_rows(b0, std::min(n, b0 + bs));
        std::vector<Tensor> outs;
        Status st = sess->run({{in.name, batch}}, &outs);
        if (!st.ok()) return st.with_context("calibration batch " + std::to_string(k));
        size_t base = g.outputs.size();
        for (size_t j = 0; j < observed.size(); ++j) {
          const Tensor& t = outs[base + j];
          if (t.dtype() != DType::kF32) continue;
          if (pass == 0)
            observe_range(t, &obs[observed[j]]);
          else
            observe_hist(t, &obs[observed[j]]);
        }
        if (std::find(acts.begin(), acts.end(), in.name) != acts.end()) {
          if (pass == 0)
            observe_range(batch, &obs[in.name]);
          else
            observe_hist(batch, &obs[in.name]);
        }
        if (progress) progress(pass * nb + k + 1, passes * nb);
      }
    }
    rep.calibration_samples = n;
  }
  std::map<std::string, TensorQuant> tq;
  for (const auto& a : acts) {
    auto it = obs.find(a);
    if (it == obs.end() || !std::isfinite(it->second.min)) continue;  // not f32: left as is
    const Observed& o = it->second;
    TensorQuant q;
    q.name = a;
    q.min = o.min;
    q.max = o.max;
    q.is_unsigned = o.min >= 0;
    float amax = opts.method == CalibrationMethod::kPercentile
                     ? percentile_absmax(o, opts.percentile)
                     : o.absmax();
    q.scale = amax > 0 ? amax / (q.is_unsigned ? 255.f : 127.f) : 1.f;
    tq[a] = q;
  }
  for (const auto& [out, in] : share) {
    auto it = tq.find(in);
    if (it == tq.end()) {
      tq.erase(out);
      continue;
    }
    TensorQuant q = it->second;
    q.name = out;
    tq[out] = q;
  }

  // Rewrite the model.
  onnx::GraphProto* gp = m.mutable_graph();
  NameGen names(*gp);
  std::map<std::string, const onnx::TensorProto*> inits;
  for (const auto& t : gp->initializer()) inits[t.name()] = &t;
  std::vector<onnx::TensorProto> new_inits;
  std::vector<onnx::NodeProto> prefix;
  std::map<std::string, std::string> act_dq;  // activation -> its DequantizeLinear output
  auto emit_act_qdq = [&](const std::string& a, std::vector<onnx::NodeProto>* out) {
    const TensorQuant& q = tq.at(a);
    std::string s = names.make(a + "_scale"), z = names.make(a + "_zero_point");
    std::string qv = names.make(a + "_quantized"), dq = names.make(a + "_dequantized");
    onnx::TensorProto st, zt;
    set_tensor(&st, s, 1 /*FLOAT*/, {}, &q.scale, 4);
    uint8_t zero = 0;
    set_tensor(&zt, z, q.is_unsigned ? 2 /*UINT8*/ : 3 /*INT8*/, {}, &zero, 1);
    new_inits.push_back(st);
    new_inits.push_back(zt);
    out->push_back(make_qdq("QuantizeLinear", names.make(a + "_QuantizeLinear"), a, s, z, qv, -1));
    out->push_back(
        make_qdq("DequantizeLinear", names.make(a + "_DequantizeLinear"), qv, s, z, dq, -1));
    act_dq[a] = dq;
    rep.activations_quantized++;
    rep.tensors.push_back(q);
  };
  for (const auto& v : g.inputs)
    if (tq.count(v.name)) emit_act_qdq(v.name, &prefix);

  std::vector<onnx::NodeProto> body;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    onnx::NodeProto node = gp->node(static_cast<int>(i));
    const NodePlan& p = plans[i];
    std::vector<float> wscale;
    if (p.quantize_weight) {
      const Tensor& w = *init_of(g, g.nodes[i].inputs[1]);
      int64_t M = w.dim(p.weight_axis);
      int64_t inner = 1;
      for (int64_t d = p.weight_axis + 1; d < w.rank(); ++d) inner *= w.dim(d);
      const float* wd = w.data_as<float>();
      wscale.assign(M, 0.f);
      for (int64_t e = 0; e < w.numel(); ++e) {
        int64_t c = (e / inner) % M;
        wscale[c] = std::max(wscale[c], std::fabs(wd[e]));
      }
      for (float& s : wscale) s = s > 0 ? s / 127.f : 1.f;
      std::vector<int8_t> wq(w.numel());
      for (int64_t e = 0; e < w.numel(); ++e) {
        float v = std::nearbyint(wd[e] / wscale[(e / inner) % M]);
        wq[e] = static_cast<int8_t>(std::min(127.f, std::max(-127.f, v)));
      }
      const std::string& wn = g.nodes[i].inputs[1];
      std::string qn = names.make(wn + "_quantized"), sn = names.make(wn + "_scale"),
                  zn = names.make(wn + "_zero_point"), dn = names.make(wn + "_dequantized");
      onnx::TensorProto qt, st, zt;
      set_tensor(&qt, qn, 3 /*INT8*/, w.shape(), wq.data(), wq.size());
      set_tensor(&st, sn, 1, {M}, wscale.data(), wscale.size() * 4);
      std::vector<int8_t> zeros(M, 0);
      set_tensor(&zt, zn, 3, {M}, zeros.data(), zeros.size());
      new_inits.push_back(qt);
      new_inits.push_back(st);
      new_inits.push_back(zt);
      prefix.push_back(make_qdq("DequantizeLinear", names.make(wn + "_DequantizeLinear"), qn, sn,
                                zn, dn, p.weight_axis));
      node.set_input(1, dn);
      rep.weights_quantized++;
      if (p.quantize_bias && tq.count(g.nodes[i].inputs[0])) {
        const std::string& bn = g.nodes[i].inputs[p.bias_input];
        const Tensor& b = *init_of(g, bn);
        float sx = tq.at(g.nodes[i].inputs[0]).scale;
        std::vector<int32_t> bq(M), bz(M, 0);
        std::vector<float> bs(M);
        for (int64_t c = 0; c < M; ++c) {
          bs[c] = sx * wscale[c];
          double v = std::nearbyint(static_cast<double>(b.data_as<float>()[c]) / bs[c]);
          bq[c] = static_cast<int32_t>(std::min(2147483647.0, std::max(-2147483647.0, v)));
        }
        std::string bqn = names.make(bn + "_quantized"), bsn = names.make(bn + "_scale"),
                    bzn = names.make(bn + "_zero_point"), bdn = names.make(bn + "_dequantized");
        onnx::TensorProto a1, a2, a3;
        set_tensor(&a1, bqn, 6 /*INT32*/, {M}, bq.data(), bq.size() * 4);
        set_tensor(&a2, bsn, 1, {M}, bs.data(), bs.size() * 4);
        set_tensor(&a3, bzn, 6, {M}, bz.data(), bz.size() * 4);
        new_inits.push_back(a1);
        new_inits.push_back(a2);
        new_inits.push_back(a3);
        prefix.push_back(make_qdq("DequantizeLinear", names.make(bn + "_DequantizeLinear"), bqn,
                                  bsn, bzn, bdn, 0));
        node.set_input(p.bias_input, bdn);
      }
    }
    for (int k = 0; k < node.input_size(); ++k) {
      auto it = act_dq.find(node.input(k));
      if (it != act_dq.end()) node.set_input(k, it->second);
    }
    body.push_back(node);
    for (const auto& o : g.nodes[i].outputs)
      if (tq.count(o)) emit_act_qdq(o, &body);
  }
  gp->clear_node();
  for (auto& n : prefix) *gp->add_node() = n;
  for (auto& n : body) *gp->add_node() = n;
  // Drop float initializers nothing reads any more (the weights and biases replaced above).
  std::set<std::string> read;
  for (const auto& n : gp->node())
    for (const auto& v : n.input()) read.insert(v);
  for (const auto& o : gp->output()) read.insert(o.name());
  google::protobuf::RepeatedPtrField<onnx::TensorProto> kept;
  for (const auto& t : gp->initializer())
    if (read.count(t.name())) *kept.Add() = t;
  for (auto& t : new_inits) *kept.Add() = t;
  gp->mutable_initializer()->Swap(&kept);
  std::set<std::string> init_names;
  for (const auto& t : gp->initializer()) init_names.insert(t.name());
  google::protobuf::RepeatedPtrField<onnx::ValueInfoProto> ins;
  for (const auto& v : gp->input())
    if (!inits.count(v.name()) || init_names.count(v.name())) *ins.Add() = v;
  gp->mutable_input()->Swap(&ins);
  m.set_producer_name("dlsys quantize");
  m.set_producer_version(g.producer);

  std::string out_bytes;
  if (!m.SerializeToString(&out_bytes)) return Status::Internal("serializing the QDQ model failed");
  auto imported = import_onnx_bytes(out_bytes, out_path);
  if (!imported.ok())
    return imported.status().with_context("the quantized model does not re-import (a dlsys bug)");
  DLSYS_RETURN_IF_ERROR(write_file_atomic(out_path, out_bytes));
  rep.bytes_after = static_cast<int64_t>(out_bytes.size());
  return rep;
}

Result<AgreementReport> compare_models(const std::string& a, const std::string& b,
                                       const Tensor& inputs, int64_t batch, int threads) {
  SessionOptions so;
  so.threads = threads;
  std::unique_ptr<Session> sa, sb;
  DLSYS_ASSIGN_OR_RETURN(sa, Session::open(a, so));
  DLSYS_ASSIGN_OR_RETURN(sb, Session::open(b, so));
  sa->apply_threads();
  if (sa->graph().inputs.size() != 1 || sb->graph().inputs.size() != 1)
    return Status::Unsupported("comparing models needs one input each");
  AgreementReport r;
  int64_t n = inputs.dim(0), agree = 0;
  double max_err = 0, max_ref = 0;
  for (int64_t b0 = 0; b0 < n; b0 += batch) {
    Tensor x = inputs.slice_rows(b0, std::min(n, b0 + batch));
    std::vector<Tensor> oa, ob;
    DLSYS_RETURN_IF_ERROR(sa->run({{sa->graph().inputs[0].name, x}}, &oa));
    std::vector<Tensor> ca = {oa[0].clone()};  // the next run may reuse the plan's buffers
    DLSYS_RETURN_IF_ERROR(sb->run({{sb->graph().inputs[0].name, x}}, &ob));
    const Tensor &ta = ca[0], &tb = ob[0];
    if (ta.shape() != tb.shape() || ta.dtype() != DType::kF32 || tb.dtype() != DType::kF32)
      return Status::Invalid("the models' first outputs differ: {} {} vs {} {}",
                             dtype_name(ta.dtype()), shape_str(ta.shape()), dtype_name(tb.dtype()),
                             shape_str(tb.shape()));
    int64_t cls = ta.shape().empty() ? 1 : ta.shape().back();
    int64_t rows = ta.numel() / std::max<int64_t>(1, cls);
    const float *pa = ta.data_as<float>(), *pb = tb.data_as<float>();
    for (int64_t i = 0; i < ta.numel(); ++i) {
      max_err = std::max(max_err, static_cast<double>(std::fabs(pa[i] - pb[i])));
      max_ref = std::max(max_ref, static_cast<double>(std::fabs(pa[i])));
    }
    for (int64_t r0 = 0; r0 < rows; ++r0) {
      const float *ra = pa + r0 * cls, *rb = pb + r0 * cls;
      agree += (std::max_element(ra, ra + cls) - ra) == (std::max_element(rb, rb + cls) - rb);
    }
    r.samples += rows;
  }
  r.top1_agreement = r.samples ? static_cast<double>(agree) / static_cast<double>(r.samples) : 0;
  r.max_rel_error = max_ref > 0 ? max_err / max_ref : max_err;
  return r;
}

}  // namespace dlsys
