#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

#include <fmt/ranges.h>
#include <fnmatch.h>

#include "core/file_util.h"
#include "core/json_util.h"
#include "core/sha256.h"
#include "data/dataset_loader.h"
#include "data/in_memory_dataset.h"
#include "data/tensor_loader.h"
#include "dist/process_group.h"
#include "graph/model_info.h"
#include "graph/model_metadata.h"
#include "graph/onnx_export.h"
#include "graph/onnx_import.h"
#include "graph/session.h"
#include "ops/dnnl_util.h"
#include "tensor/npy.h"
#include "train/autodiff.h"
#include "train/checkpoint.h"
#include "train/optimizer.h"

namespace dlsys::train {

namespace {

// PyTorch's nn.Linear init ("default"): U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
void init_linear(Tensor* w, Tensor* b, int64_t in, int64_t out, const std::string& scheme,
                 std::mt19937_64& rng) {
  double bound = 1.0 / std::sqrt(static_cast<double>(in));
  float* wd = w->data_as<float>();
  if (scheme == "kaiming") {
    std::normal_distribution<double> d(0.0, std::sqrt(2.0 / static_cast<double>(in)));
    for (int64_t i = 0; i < in * out; ++i) wd[i] = static_cast<float>(d(rng));
  } else if (scheme == "xavier") {
    double a = std::sqrt(6.0 / static_cast<double>(in + out));
    std::uniform_real_distribution<double> d(-a, a);
    for (int64_t i = 0; i < in * out; ++i) wd[i] = static_cast<float>(d(rng));
  } else {
    std::uniform_real_distribution<double> d(-bound, bound);
    for (int64_t i = 0; i < in * out; ++i) wd[i] = static_cast<float>(d(rng));
  }
  std::uniform_real_distribution<double> db(-bound, bound);
  for (int64_t i = 0; i < out; ++i)
    b->data_as<float>()[i] = scheme == "default" ? static_cast<float>(db(rng)) : 0.0f;
}

int64_t argmax_row(const float* row, int64_t n) {
  int64_t best = 0;
  for (int64_t j = 1; j < n; ++j)
    if (row[j] > row[best]) best = j;
  return best;
}

}  // namespace

namespace {

// Emits the nodes of a layer list into a graph, tracking the per-sample shape.
class ForwardBuilder {
 public:
  ForwardBuilder(const TrainSpec& spec, Graph* g) : spec_(spec), g_(g), rng_(spec.seed) {}

  Status emit(const std::vector<LayerSpec>& layers, const std::string& prefix, std::string* cur,
              std::vector<int64_t>* shape) {
    for (size_t i = 0; i < layers.size(); ++i) {
      std::string name = fmt::format("{}.{}", prefix, i);
      DLSYS_RETURN_IF_ERROR(emit_one(layers[i], name, cur, shape));
    }
    return Status::OK();
  }

 private:
  template <typename... Args>
  Status error(const LayerSpec& l, fmt::format_string<Args...> f, Args&&... args) {
    return Status::Invalid("{}:{}: {}: {}", spec_.spec_path, l.line, l.type,
                           fmt::format(f, std::forward<Args>(args)...));
  }
  std::string node(const std::string& name, const std::string& op, std::vector<std::string> in,
                   AttributeMap attrs = {}) {
    std::string out = name + ".out" + (used_.count(name) ? std::to_string(used_[name]) : "");
    std::string node_name = name + (used_.count(name) ? "/" + std::to_string(used_[name]) : "");
    ++used_[name];
    g_->nodes.push_back({node_name, op, "", std::move(in), {out}, std::move(attrs)});
    return out;
  }
  std::string i64s(const std::string& name, std::vector<int64_t> v) {
    g_->initializers[name] = Tensor::from_i64({static_cast<int64_t>(v.size())}, v.data());
    return name;
  }
  std::string f32(const std::string& name, float v) {
    g_->initializers[name] = Tensor::from_f32({}, &v);
    return name;
  }
  Tensor filled(const Shape& s, float v) {
    Tensor t = Tensor::empty(DType::kF32, s);
    std::fill_n(t.data_as<float>(), t.numel(), v);
    return t;
  }
  // nn.Linear's layout ([out, in]) and init; applied over the last dimension.
  std::string linear(const std::string& name, const std::string& x, int64_t in, int64_t out,
                     bool bias, size_t rank) {
    Tensor w = Tensor::empty(DType::kF32, {out, in});
    Tensor b = Tensor::empty(DType::kF32, {out});
    init_linear(&w, &b, in, out, spec_.init, rng_);
    g_->initializers[name + ".weight"] = w;
    if (bias) g_->initializers[name + ".bias"] = b;
    if (rank == 1) {
      std::vector<std::string> in_names = {x, name + ".weight"};
      if (bias) in_names.push_back(name + ".bias");
      return node(name, "Gemm", in_names, {{"transB", Attribute::of_int(1)}});
    }
    std::string wt = node(name + ".wt", "Transpose", {name + ".weight"});
    std::string y = node(name, "MatMul", {x, wt});
    return bias ? node(name + ".add", "Add", {y, name + ".bias"}) : y;
  }

  Status emit_one(const LayerSpec& l, const std::string& name, std::string* cur,
                  std::vector<int64_t>* shape) {
    std::vector<int64_t>& sh = *shape;
    const std::string x = *cur;
    if (l.type == "linear") {
      if (sh.empty()) return error(l, "needs an input with at least one dimension");
      *cur = linear(name, x, sh.back(), l.out, l.bias, sh.size());
      sh.back() = l.out;
    } else if (l.type == "conv2d") {
      if (sh.size() != 3) return error(l, "needs inputs [C, H, W], got [{}]", fmt::join(sh, ", "));
      int64_t C = sh[0], k = l.kernel, st = l.stride ? l.stride : 1, pad = l.padding;
      if (C % l.groups)
        return error(l, "groups={} does not divide the {} input channels", l.groups, C);
      int64_t oh = (sh[1] + 2 * pad - k) / st + 1, ow = (sh[2] + 2 * pad - k) / st + 1;
      if (oh < 1 || ow < 1) return error(l, "the kernel {} is larger than the padded input", k);
      int64_t fan_in = C / l.groups * k * k;
      Tensor w = Tensor::empty(DType::kF32, {l.out, C / l.groups, k, k});
      Tensor b = Tensor::empty(DType::kF32, {l.out});
      init_linear(&w, &b, fan_in, l.out, spec_.init, rng_);
      g_->initializers[name + ".weight"] = w;
      std::vector<std::string> in = {x, name + ".weight"};
      if (l.bias) {
        g_->initializers[name + ".bias"] = b;
        in.push_back(name + ".bias");
      }
      *cur = node(name, "Conv", in,
                  {{"kernel_shape", Attribute::of_ints({k, k})},
                   {"strides", Attribute::of_ints({st, st})},
                   {"pads", Attribute::of_ints({pad, pad, pad, pad})},
                   {"group", Attribute::of_int(l.groups)}});
      sh = {l.out, oh, ow};
    } else if (l.type == "batchnorm") {
      if (sh.size() != 1 && sh.size() != 3)
        return error(l, "needs inputs [C] or [C, H, W], got [{}]", fmt::join(sh, ", "));
      int64_t C = sh[0];
      g_->initializers[name + ".weight"] = filled({C}, 1.f);
      g_->initializers[name + ".bias"] = filled({C}, 0.f);
      g_->initializers[name + ".running_mean"] = filled({C}, 0.f);
      g_->initializers[name + ".running_var"] = filled({C}, 1.f);
      *cur =
          node(name, "BatchNormalization",
               {x, name + ".weight", name + ".bias", name + ".running_mean", name + ".running_var"},
               {{"epsilon", Attribute::of_float(static_cast<float>(l.eps))},
                {"momentum", Attribute::of_float(static_cast<float>(1.0 - l.momentum))}});
    } else if (l.type == "layernorm") {
      if (sh.empty()) return error(l, "needs an input with at least one dimension");
      int64_t D = sh.back();
      g_->initializers[name + ".weight"] = filled({D}, 1.f);
      g_->initializers[name + ".bias"] = filled({D}, 0.f);
      *cur = node(name, "LayerNormalization", {x, name + ".weight", name + ".bias"},
                  {{"axis", Attribute::of_int(-1)},
                   {"epsilon", Attribute::of_float(static_cast<float>(l.eps))}});
    } else if (l.type == "dropout") {
      *cur = node(name, "Dropout", {x, f32(name + ".ratio", static_cast<float>(l.p))});
    } else if (l.type == "relu" || l.type == "gelu" || l.type == "sigmoid" || l.type == "tanh") {
      std::string op = l.type == "relu"      ? "Relu"
                       : l.type == "gelu"    ? "Gelu"
                       : l.type == "sigmoid" ? "Sigmoid"
                                             : "Tanh";
      *cur = node(name, op, {x});
    } else if (l.type == "maxpool" || l.type == "avgpool") {
      if (sh.size() != 3) return error(l, "needs inputs [C, H, W], got [{}]", fmt::join(sh, ", "));
      int64_t k = l.kernel, st = l.stride ? l.stride : l.kernel, pad = l.padding;
      int64_t oh = (sh[1] + 2 * pad - k) / st + 1, ow = (sh[2] + 2 * pad - k) / st + 1;
      if (oh < 1 || ow < 1) return error(l, "the kernel {} is larger than the padded input", k);
      AttributeMap at = {{"kernel_shape", Attribute::of_ints({k, k})},
                         {"strides", Attribute::of_ints({st, st})},
                         {"pads", Attribute::of_ints({pad, pad, pad, pad})}};
      if (l.type == "avgpool") at["count_include_pad"] = Attribute::of_int(1);  // as PyTorch
      *cur = node(name, l.type == "maxpool" ? "MaxPool" : "AveragePool", {x}, at);
      sh = {sh[0], oh, ow};
    } else if (l.type == "global_avg_pool") {
      if (sh.size() != 3) return error(l, "needs inputs [C, H, W], got [{}]", fmt::join(sh, ", "));
      std::string p = node(name, "GlobalAveragePool", {x});
      *cur = node(name + ".flatten", "Flatten", {p}, {{"axis", Attribute::of_int(1)}});
      sh = {sh[0]};
    } else if (l.type == "mean_pool") {
      if (sh.size() != 2) return error(l, "needs inputs [S, D], got [{}]", fmt::join(sh, ", "));
      *cur = node(name, "ReduceMean", {x},
                  {{"axes", Attribute::of_ints({1})}, {"keepdims", Attribute::of_int(0)}});
      sh = {sh[1]};
    } else if (l.type == "flatten") {
      *cur = node(name, "Flatten", {x}, {{"axis", Attribute::of_int(1)}});
      int64_t n = 1;
      for (int64_t d : sh) n *= d;
      sh = {n};
    } else if (l.type == "embedding") {
      if (sh.size() != 1) return error(l, "needs token ids [S], got [{}]", fmt::join(sh, ", "));
      Tensor t = Tensor::empty(DType::kF32, {l.vocab, l.dim});
      std::normal_distribution<double> d(0.0, 1.0);  // nn.Embedding's init
      for (int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = static_cast<float>(d(rng_));
      g_->initializers[name + ".weight"] = t;
      std::string ids = node(name + ".ids", "Cast", {x}, {{"to", Attribute::of_int(7)}});
      *cur = node(name, "Gather", {name + ".weight", ids}, {{"axis", Attribute::of_int(0)}});
      sh = {sh[0], l.dim};
    } else if (l.type == "attention") {
      if (sh.size() != 2) return error(l, "needs inputs [S, D], got [{}]", fmt::join(sh, ", "));
      int64_t D = sh[1], h = l.heads;
      if (D % h) return error(l, "heads={} does not divide the model width {}", h, D);
      int64_t dh = D / h;
      std::string split = i64s(name + ".split_shape", {0, 0, h, dh});
      auto heads = [&](const char* which, std::vector<int64_t> perm) {
        std::string p = linear(name + "." + which, x, D, D, true, 2);
        std::string r = node(name + "." + which + "_heads", "Reshape", {p, split});
        return node(name + "." + which + "_t", "Transpose", {r},
                    {{"perm", Attribute::of_ints(perm)}});
      };
      std::string q = heads("q", {0, 2, 1, 3});  // [N, h, S, dh]
      std::string k = heads("k", {0, 2, 3, 1});  // [N, h, dh, S]
      std::string v = heads("v", {0, 2, 1, 3});
      std::string s = node(name + ".scores", "MatMul", {q, k});
      std::string sc = node(name + ".scale", "Mul",
                            {s, f32(name + ".inv_sqrt_dh",
                                    static_cast<float>(1.0 / std::sqrt(static_cast<double>(dh))))});
      std::string a = node(name + ".softmax", "Softmax", {sc}, {{"axis", Attribute::of_int(-1)}});
      std::string c = node(name + ".context", "MatMul", {a, v});
      std::string ct =
          node(name + ".merge_t", "Transpose", {c}, {{"perm", Attribute::of_ints({0, 2, 1, 3})}});
      std::string m =
          node(name + ".merge", "Reshape", {ct, i64s(name + ".merge_shape", {0, 0, D})});
      *cur = linear(name + ".out", m, D, D, true, 2);
    } else if (l.type == "residual") {
      std::vector<int64_t> inner = sh;
      std::string y = x;
      DLSYS_RETURN_IF_ERROR(emit(l.layers, name, &y, &inner));
      std::vector<int64_t> skip_shape = sh;
      std::string skip = x;
      if (!l.shortcut.empty())
        DLSYS_RETURN_IF_ERROR(emit(l.shortcut, name + ".shortcut", &skip, &skip_shape));
      if (inner != skip_shape)
        return error(l,
                     "the inner layers change the shape [{}] to [{}]; a residual block must "
                     "keep it, or give a 'shortcut' that makes [{}] the same",
                     fmt::join(sh, ", "), fmt::join(inner, ", "), fmt::join(sh, ", "));
      *cur = node(name + ".add", "Add", {skip, y});
      sh = inner;
    } else {
      return error(l, "unknown layer");
    }
    return Status::OK();
  }

  const TrainSpec& spec_;
  Graph* g_;
  std::mt19937_64 rng_;
  std::map<std::string, int> used_;
};

}  // namespace

namespace {

// Renames value `from` to `to` everywhere in `g`.
void rename_value(Graph* g, const std::string& from, const std::string& to) {
  for (Node& n : g->nodes) {
    for (std::string& i : n.inputs)
      if (i == from) i = to;
    for (std::string& o : n.outputs)
      if (o == from) o = to;
  }
  for (std::vector<ValueInfo>* list : {&g->inputs, &g->outputs})
    for (ValueInfo& v : *list)
      if (v.name == from) v.name = to;
}

bool value_used(const Graph& g, const std::string& name) {
  if (g.initializers.count(name)) return true;
  for (const Node& n : g.nodes)
    for (const std::vector<std::string>* list : {&n.inputs, &n.outputs})
      if (std::find(list->begin(), list->end(), name) != list->end()) return true;
  return false;
}

// The model of `model.onnx`, with its input renamed "input" and its first output "logits" (the
// names the trainer feeds and reads; `original` keeps the model's own for the export).
Result<Graph> import_forward_graph(const TrainSpec& spec, ModelNames* original) {
  auto imported = import_onnx_file(spec.onnx_path);
  if (!imported.ok()) return imported.status().with_context("model.onnx");
  Graph g = std::move(imported).value();
  // A dlsys model that takes string columns as strings is fine-tuned in its codes form (the
  // loaders code the strings; the export then writes that form).
  DLSYS_RETURN_IF_ERROR(to_codes_form(&g).with_context(spec.onnx_path));
  if (g.inputs.size() != 1) {
    std::vector<std::string> names;
    for (const ValueInfo& v : g.inputs) names.push_back(v.name);
    return Status::Unsupported(
        "{}: fine-tuning needs a model with one input (the batch of samples); it has {}: {}",
        spec.onnx_path, names.size(), fmt::join(names, ", "));
  }
  if (g.outputs.empty()) return Status::Invalid("{}: the model has no outputs", spec.onnx_path);
  ValueInfo& in = g.inputs[0];
  if (in.dtype != DType::kF32 || g.outputs[0].dtype != DType::kF32)
    return Status::Unsupported("{}: input '{}' and output '{}' must be float32 to fine-tune",
                               spec.onnx_path, in.name, g.outputs[0].name);
  // The per-sample shape: the model's fixed dims after the batch, or model.input.
  std::vector<int64_t> sample;
  for (size_t d = 1; d < in.dims.size(); ++d) sample.push_back(in.dims[d].value);
  bool fixed = in.has_shape && !in.dims.empty() &&
               std::all_of(sample.begin(), sample.end(), [](int64_t v) { return v >= 0; });
  if (!spec.input_shape.empty()) {
    if (fixed && sample != spec.input_shape)
      return Status::Invalid("{}: model.input [{}] differs from the model's input '{}' {}",
                             spec.spec_path, fmt::join(spec.input_shape, ", "), in.name,
                             dims_str(in));
    sample = spec.input_shape;
  } else if (!fixed) {
    return Status::Invalid(
        "{}: the model's input '{}' is {}: give model.input, the shape of one sample",
        spec.spec_path, in.name, dims_str(in));
  }
  in.has_shape = true;
  in.dims = {Dim{-1, "batch"}};
  for (int64_t d : sample) in.dims.push_back(Dim{d, ""});
  if (original) *original = {in.name, g.outputs[0].name};
  for (auto [from, to] :
       {std::pair<std::string, std::string>{in.name, "input"}, {g.outputs[0].name, "logits"}}) {
    if (from == to) continue;
    if (value_used(g, to))
      return Status::Unsupported("{}: the model already has a value named '{}'; rename it",
                                 spec.onnx_path, to);
    rename_value(&g, from, to);
  }
  return g;
}

// The parameters to train: every trainable initializer of the model but those matching a
// `freeze` pattern. Every pattern must match something, and something must stay trainable.
Result<std::vector<std::string>> unfrozen_params(const TrainSpec& spec, const Graph& forward) {
  // Preprocessing constants (an exported model's first nodes) are never trained.
  std::vector<std::string> all, keep;
  for (const std::string& p : trainable_initializers(forward))
    if (!is_preprocess_constant(p)) all.push_back(p);
  if (spec.freeze.empty()) return all;
  std::vector<bool> matched(spec.freeze.size(), false);
  for (const std::string& p : all) {
    bool frozen = false;
    for (size_t i = 0; i < spec.freeze.size(); ++i)
      if (fnmatch(spec.freeze[i].c_str(), p.c_str(), 0) == 0) frozen = matched[i] = true;
    if (!frozen) keep.push_back(p);
  }
  for (size_t i = 0; i < spec.freeze.size(); ++i)
    if (!matched[i])
      return Status::Invalid("{}: freeze pattern '{}' matches no parameter; the parameters are: {}",
                             spec.spec_path, spec.freeze[i], fmt::join(all, ", "));
  if (keep.empty())
    return Status::Invalid("{}: the freeze patterns cover every parameter; nothing would train",
                           spec.spec_path);
  return keep;
}

}  // namespace

Result<Graph> build_forward_graph(const TrainSpec& spec, ModelNames* original) {
  if (!spec.onnx_path.empty()) return import_forward_graph(spec, original);
  if (original) *original = ModelNames{};
  Graph g;
  g.name = spec.name;
  g.opset = 17;
  ValueInfo in{"input", DType::kF32, true, {Dim{-1, "batch"}}};
  for (int64_t d : spec.input_shape) in.dims.push_back(Dim{d, ""});
  g.inputs.push_back(in);
  std::string cur = "input";
  std::vector<int64_t> shape = spec.input_shape;
  ForwardBuilder fb(spec, &g);
  DLSYS_RETURN_IF_ERROR(fb.emit(spec.layers, "layers", &cur, &shape));
  if (g.nodes.empty()) return Status::Invalid("{}: the model has no layers", spec.spec_path);
  // The output is called "logits" in the exported model.
  for (Node& n : g.nodes)
    for (std::string& i : n.inputs)
      if (i == cur) i = "logits";
  g.nodes.back().outputs[0] = "logits";
  ValueInfo out{"logits", DType::kF32, true, {Dim{-1, "batch"}}};
  for (int64_t d : shape) out.dims.push_back(Dim{d, ""});
  g.outputs.push_back(out);
  return g;
}

namespace {

// The batch norms' sums over the ranks (train.sync_batch_norm), on a channel of the group's own.
// The channel is formed after the ranks' specs are compared (Trainer::run), after the session
// that holds this: it is read through the trainer's member when a kernel runs.
class GroupGather : public CrossProcess {
 public:
  GroupGather(const std::unique_ptr<dist::ProcessGroup>* g, int world) : g_(g), world_(world) {}
  int processes() const override { return world_; }
  Status gather(const float* mine, size_t n, float* all) const override {
    if (!*g_) return Status::Internal("synchronized batch norm ran before its channel was formed");
    return (*g_)->all_gather(mine, n * sizeof(float), all).with_context("synchronized batch norm");
  }

 private:
  const std::unique_ptr<dist::ProcessGroup>* g_;
  int world_;
};

}  // namespace

Trainer::Trainer(TrainSpec spec, TrainOptions options)
    : spec_(std::move(spec)), options_(std::move(options)) {}

Trainer::~Trainer() = default;

Status Trainer::build_model() {
  if (options_.group) {
    rank_ = options_.group->rank();
    world_ = options_.group->world();
    if ((world_ & (world_ - 1)) != 0)
      return Status::Invalid(
          "{} workers: data-parallel training shares each batch's micro-batches equally, so "
          "it runs on a power of two of workers (1, 2, 4, 8, ...)",
          world_);
    if (spec_.micro_batches == 0 || spec_.micro_batches % world_ != 0)
      return Status::Invalid(
          "{}: training on {} workers needs train.micro_batches, a multiple of {} (e.g. "
          "micro_batches: {}): the micro-batches are what the workers share",
          spec_.spec_path, world_, world_, std::max<int64_t>(4, world_));
  }
  if (spec_.sync_batch_norm && spec_.micro_batches > world_)
    return Status::Invalid(
        "{}: train.sync_batch_norm normalizes over the whole batch, so each worker runs one "
        "micro-batch: micro_batches is {} on {} worker{}; set micro_batches: {}",
        spec_.spec_path, spec_.micro_batches, world_, world_ == 1 ? "" : "s", world_);
  DLSYS_RETURN_IF_ERROR(make_dirs(options_.out_dir));
  // The model first: a spec error shows before any data is read.
  DLSYS_ASSIGN_OR_RETURN(forward_, build_forward_graph(spec_, &names_));
  for (size_t d = 1; d < forward_.inputs[0].dims.size(); ++d)
    input_sample_.push_back(forward_.inputs[0].dims[d].value);
  // Targets of mse / bce take the logits' per-sample shape ([N] labels for [N, 1] logits).
  for (size_t d = 1; d < forward_.outputs[0].dims.size(); ++d)
    logits_sample_.push_back(forward_.outputs[0].dims[d].value);
  DLSYS_ASSIGN_OR_RETURN(trainable_, unfrozen_params(spec_, forward_));
  if (spec_.precision == "bf16" && !bf16_kernels_available())
    return Status::Unsupported(
        "train.precision bf16 needs a CPU with AVX512-BF16 or AMX, and this one has neither: "
        "use precision: fp32");
  classify_ = spec_.loss == "cross_entropy";
  bce_ = spec_.loss == "bce_with_logits";
  const int64_t outputs = logits_sample_.empty() ? 1 : logits_sample_.back();
  const size_t names = spec_.class_names.size();
  if (names > 0 && !((classify_ && static_cast<int64_t>(names) == outputs) ||
                     (bce_ && outputs == 1 && names == 2)))
    return Status::Invalid(
        "{}: data.class_names has {} names, but the model has {} outputs ({}); give one name "
        "per class",
        spec_.spec_path, names, outputs,
        classify_ ? "cross_entropy: one per class"
        : bce_    ? "bce_with_logits with one output takes two names: negative, positive"
                  : "mse predicts numbers, not classes");
  return Status::OK();
}

data::BatchPart Trainer::batch_part() const {
  data::BatchPart part;
  if (spec_.micro_batches > 0 && world_ > 1) {
    part.of = spec_.micro_batches;
    part.count = spec_.micro_batches / world_;
    part.first = rank_ * part.count;
  }
  return part;
}

Status Trainer::open_data() {
  Shape data_sample;
  data::InMemoryDataset train;  // file data, served by a TensorLoader
  if (!spec_.dataset.empty()) {
    // A version of the dataset store.
    std::string dir = options_.datasets_dir.empty() ? "datasets" : options_.datasets_dir;
    DLSYS_ASSIGN_OR_RETURN(store_, data::DatasetStore::open(dir));
    DLSYS_ASSIGN_OR_RETURN(data::VersionRef tref, data::parse_version_ref(spec_.dataset));
    DLSYS_ASSIGN_OR_RETURN(data::VersionRef vref,
                           data::parse_version_ref(spec_.dataset_validation));
    data::DatasetLoaderOptions dlo;
    dlo.features = spec_.features;
    dlo.label = spec_.label;
    dlo.nulls = spec_.nulls == "drop"     ? data::DatasetLoaderOptions::Nulls::kDrop
                : spec_.nulls == "impute" ? data::DatasetLoaderOptions::Nulls::kNaN
                                          : data::DatasetLoaderOptions::Nulls::kError;
    dlo.batch_size = spec_.batch_size;
    dlo.seed = spec_.seed;
    dlo.drop_last = spec_.sync_batch_norm;  // equal micro-batches (spec.h)
    dlo.part = batch_part();
    dlo.categorical = onehot_columns();
    auto dl = data::DatasetLoader::open(*store_, tref, dlo);
    if (!dl.ok())
      return dl.status().with_context(
          spec_.sync_batch_norm
              ? "data.dataset (train.sync_batch_norm drops an epoch's last, smaller batch)"
              : "data.dataset");
    data_sample = (*dl)->sample_shape();
    // The validation split, and every later pass, codes categories as the training split did.
    vocabularies_ = (*dl)->vocabularies();
    dlo.vocabularies = vocabularies_;
    for (const std::string& c : (*dl)->ignored_string_columns())
      ignored_strings_ += (ignored_strings_.empty() ? "" : ", ") + c;
    // Validation: the whole split in one batch, in stored order.
    data::DatasetLoaderOptions vo = dlo;
    vo.part = {};
    vo.shuffle = false;
    vo.drop_last = false;
    vo.threads = 1;
    vo.prefetch = 1;
    vo.batch_size = 1 << 30;
    auto vl = data::DatasetLoader::open(*store_, vref, vo);
    if (!vl.ok()) return vl.status().with_context("data.validation");
    DLSYS_ASSIGN_OR_RETURN(data::Batch vb, (*vl)->next());
    val_.features = vb.x;
    val_.labels = vb.y;
    if (classify_ && val_.labels.dtype() != DType::kI64)
      return Status::Invalid("{}: label column '{}' is not int64; cross_entropy needs class ids",
                             (*vl)->label(), spec_.label);
    // The training split streams: its range comes from the version's statistics (every row),
    // and each batch is checked again before its step.
    if (classify_) {
      auto info = store_->resolve(tref);
      if (info.ok() && info->manifest.contains("stats") &&
          info->manifest["stats"].contains(spec_.label)) {
        const nlohmann::json& st = info->manifest["stats"][spec_.label];
        if (st.contains("min") && st.contains("max") && st["min"].is_number() &&
            st["max"].is_number()) {
          int64_t mm[2] = {static_cast<int64_t>(st["min"].get<double>()),
                           static_cast<int64_t>(st["max"].get<double>())};
          DLSYS_RETURN_IF_ERROR(
              check_class_ids(Tensor::from_i64({2}, mm), "data.dataset " + (*dl)->label()));
        }
      }
    }
    DLSYS_RETURN_IF_ERROR(check_class_ids(val_.labels, "data.validation " + (*vl)->label()));
    dataset_label_ = (*dl)->label();
    validation_label_ = (*vl)->label();
    feature_names_ = (*dl)->feature_names();
    loader_ = std::move(dl).value();
  } else {
    // CSV, NPY and IDX files are read through the data module's ingest sources.
    auto read = [&](const std::string& path,
                    const std::string& labels) -> Result<data::InMemoryDataset> {
      data::FileDatasetOptions fo;
      fo.format = spec_.format;
      fo.labels_path = labels;
      fo.label_column = spec_.label_column;
      fo.labels_as_classes = classify_;
      fo.nulls = spec_.nulls == "impute" ? "nan" : spec_.nulls;
      fo.categorical = onehot_columns();
      fo.vocabularies = vocabularies_;
      return data::read_file_dataset(path, fo);
    };
    DLSYS_ASSIGN_OR_RETURN(data::InMemoryDataset all,
                           read(spec_.train_path, spec_.train_labels_path));
    vocabularies_ = all.vocabularies;  // a validation file is coded with the training file's
    if (!spec_.validation_path.empty()) {
      train = all;
      DLSYS_ASSIGN_OR_RETURN(val_, read(spec_.validation_path, spec_.validation_labels_path));
    } else {
      DLSYS_RETURN_IF_ERROR(
          data::split(all, spec_.validation_fraction, spec_.split_seed, &train, &val_));
    }
    DLSYS_RETURN_IF_ERROR(check_class_ids(train.labels, "training data " + spec_.train_path));
    DLSYS_RETURN_IF_ERROR(check_class_ids(
        val_.labels, "validation data " + (spec_.validation_path.empty() ? spec_.train_path
                                                                         : spec_.validation_path)));
    feature_names_ = train.feature_names;
    data_sample.assign(train.features.shape().begin() + 1, train.features.shape().end());
  }
  DLSYS_RETURN_IF_ERROR(fit_preprocessing(spec_.dataset.empty() ? &train : nullptr, data_sample));
  int64_t per_sample = shape_numel(input_sample_), data_per_sample = shape_numel(data_sample);
  if (data_per_sample != per_sample)
    return Status::Invalid("the data has {} features per sample but model.input {} needs {}{}",
                           data_per_sample, fmt::format("[{}]", fmt::join(input_sample_, ", ")),
                           per_sample, string_columns_hint());
  if (!loader_) {
    data::TensorLoaderOptions lo;
    lo.batch_size = spec_.batch_size;
    lo.seed = spec_.seed;
    lo.drop_last = spec_.sync_batch_norm;  // equal micro-batches (spec.h)
    lo.part = batch_part();
    auto tl = data::TensorLoader::make(train, lo);
    if (!tl.ok() && spec_.sync_batch_norm)
      return tl.status().with_context(
          "train.sync_batch_norm drops an epoch's last, smaller batch (lower batch_size)");
    DLSYS_ASSIGN_OR_RETURN(loader_, std::move(tl));
  }
  return Status::OK();
}

Status Trainer::fit_preprocessing(const data::InMemoryDataset* file_train,
                                  const Shape& data_sample) {
  std::vector<PreprocessStep> steps;
  if (spec_.feature_scale != 1.0) {
    PreprocessStep scale;
    scale.kind = "scale";
    scale.factor = spec_.feature_scale;
    steps.push_back(scale);
  }
  steps.insert(steps.end(), spec_.preprocess.begin(), spec_.preprocess.end());
  if (steps.empty()) return Status::OK();
  if (forward_.metadata.count("dlsys.preprocess"))
    return Status::Invalid(
        "{}: model.onnx {} already starts with its preprocessing (dlsys.preprocess in its "
        "metadata) and takes raw features: drop data.feature_scale and data.preprocess",
        spec_.spec_path, spec_.onnx_path);
  const int64_t features = shape_numel(data_sample);
  FeatureBatches batches;
  if (file_train) {
    batches = [&](const std::function<Status(const Tensor&)>& visit) {
      return visit(file_train->features.view({file_train->size(), features}));
    };
  } else {
    // A sequential pass over the training split, in large batches.
    batches = [&](const std::function<Status(const Tensor&)>& visit) -> Status {
      DLSYS_ASSIGN_OR_RETURN(data::VersionRef ref, data::parse_version_ref(spec_.dataset));
      data::DatasetLoaderOptions o;
      o.features = spec_.features;
      o.label = spec_.label;
      o.nulls = spec_.nulls == "drop" ? data::DatasetLoaderOptions::Nulls::kDrop
                                      : data::DatasetLoaderOptions::Nulls::kNaN;
      o.shuffle = false;
      o.batch_size = 8192;
      o.categorical = onehot_columns();
      o.vocabularies = vocabularies_;
      DLSYS_ASSIGN_OR_RETURN(auto l, data::DatasetLoader::open(*store_, ref, o));
      for (int64_t b = 0; b < l->batches_per_epoch(); ++b) {
        DLSYS_ASSIGN_OR_RETURN(data::Batch batch, l->next());
        DLSYS_RETURN_IF_ERROR(visit(batch.x.view({batch.x.dim(0), features})));
      }
      return Status::OK();
    };
  }
  DLSYS_ASSIGN_OR_RETURN(
      preprocess_, Preprocessor::fit(steps, feature_names_, features, batches, vocabularies_));
  if (spec_.nulls == "impute") {
    // Every null must meet an impute step: one left would train on NaN.
    DLSYS_RETURN_IF_ERROR(batches([&](const Tensor& raw) -> Status {
      DLSYS_ASSIGN_OR_RETURN(Tensor y, preprocess_.apply(raw));
      const float* p = y.data_as<float>();
      for (int64_t i = 0; i < y.numel(); ++i)
        if (std::isnan(p[i]))
          return Status::Invalid(
              "{}: feature {} has nulls that no impute step of data.preprocess covers; add it to "
              "an impute step's columns (or use data.nulls: drop)",
              spec_.spec_path, preprocess_.out_names()[i % preprocess_.out_features()]);
      return Status::OK();
    }));
  }
  if (Status st = preprocess_.prepend_to(&forward_); !st.ok())
    return Status(st.code(), spec_.spec_path + ": " + st.message() + string_columns_hint());
  {
    // The export's string inputs, tried now: a column name the model already uses fails here,
    // not after training.
    Graph probe = forward_;
    rename_value(&probe, "input", names_.input);
    rename_value(&probe, "logits", names_.output);
    auto strings = preprocess_.string_inputs_to(&probe, names_.input);
    if (!strings.ok())
      return Status(strings.status().code(), spec_.spec_path + ": " + strings.status().message());
  }
  input_sample_ = {preprocess_.in_features()};
  return Status::OK();
}

std::string Trainer::string_columns_hint() const {
  if (ignored_strings_.empty()) return "";
  return fmt::format(
      " (string columns are not features unless a onehot step takes them: {}; add `- onehot: "
      "[{}]` to data.preprocess to use one)",
      ignored_strings_, ignored_strings_.substr(0, ignored_strings_.find(',')));
}

std::vector<std::string> Trainer::onehot_columns() const {
  std::vector<std::string> out;
  for (const PreprocessStep& st : spec_.preprocess)
    if (st.kind == "onehot") out.insert(out.end(), st.columns.begin(), st.columns.end());
  return out;
}

std::string Trainer::label_column_name() const {
  if (!spec_.dataset.empty()) return "'" + spec_.label + "'";
  if (spec_.format != "csv") return "(the labels file)";
  return spec_.label_column < 0 ? "(the last column)" : fmt::format("{}", spec_.label_column);
}

Status Trainer::check_class_ids(const Tensor& labels, const std::string& where) const {
  if (!classify_ || labels.dtype() != DType::kI64) return Status::OK();
  const int64_t classes = logits_sample_.empty() ? 1 : logits_sample_.back();
  const int64_t* p = labels.data_as<int64_t>();
  int64_t lo = 0, hi = classes - 1, bad = -1;
  for (int64_t i = 0; i < labels.numel(); ++i) {
    if ((p[i] < 0 || p[i] >= classes) && bad < 0) bad = i;
    lo = std::min(lo, p[i]);
    hi = std::max(hi, p[i]);
  }
  if (bad < 0) return Status::OK();
  return Status::Invalid(
      "{}: label column {} holds {} (labels range {}..{}), but the model has {} outputs, so "
      "cross_entropy needs class ids in 0..{}; make the last layer's `out` {} or more, or map "
      "the labels to 0..N-1",
      where, label_column_name(), p[bad], lo, hi, classes, classes - 1, hi + 1);
}

Status Trainer::build_graphs() {
  // The training graph (loss and gradients, training-mode layers) and the forward graph for
  // evaluation (inference-mode layers), both with the weights as inputs.
  LossSpec ls{classify_ ? LossKind::kSoftmaxCrossEntropy
              : bce_    ? LossKind::kBinaryCrossEntropyWithLogits
                        : LossKind::kMeanSquaredError,
              "logits", "target", spec_.label_smoothing};
  DLSYS_ASSIGN_OR_RETURN(tg_, build_training_graph(forward_, ls, trainable_));
  if (spec_.sync_batch_norm && synchronize_batch_norms(&tg_) > 0 && options_.group && world_ > 1) {
    cross_process_ = std::make_unique<GroupGather>(&norm_group_, world_);
  }
  SessionOptions so;
  so.threads = options_.threads;
  if (so.threads <= 0) {
    // A small model trains fastest on one thread: estimate a step as 3x the forward FLOPs.
    auto probe = Session::from_graph(forward_, SessionOptions{});
    auto shapes = probe->concrete_input_shapes({}, 1);
    if (shapes.ok()) {
      auto plan = probe->plan_for_shapes(*shapes);
      if (plan.ok()) {
        ModelInfo info = model_info(forward_, *plan);
        if (info.flops_known)
          result_.step_flops = 3 * info.flops_per_sample * static_cast<double>(spec_.batch_size);
      }
    }
    if (result_.step_flops > 0 && result_.step_flops < kSmallStepFlops) so.threads = 1;
  }
  result_.threads = so.threads;
  // Mixed precision: the training graph's matmuls and convolutions in bf16; evaluation in fp32,
  // as the exported model runs by default.
  SessionOptions train_so = so;
  if (spec_.precision == "bf16") train_so.precision = Precision::kBF16;
  train_so.training = true;
  train_so.cross_process = cross_process_.get();
  session_ = Session::from_graph(tg_.graph, train_so);
  for (const std::string& p : tg_.params) inputs_[p] = forward_.initializers.at(p).clone();
  for (const std::string& p : tg_.params) params_.push_back(&inputs_.at(p));
  // Running statistics: state that is not trained but saved, restored and exported.
  for (const BatchStat& bs : tg_.batch_stats) {
    buffer_names_.push_back(bs.running_mean);
    buffer_names_.push_back(bs.running_var);
  }
  for (const std::string& b : buffer_names_) buffers_[b] = forward_.initializers.at(b).clone();
  Graph eval_graph = forward_;
  initializers_to_inputs(&eval_graph, tg_.params);
  initializers_to_inputs(&eval_graph, buffer_names_);
  eval_session_ = Session::from_graph(eval_graph, so);
  DLSYS_ASSIGN_OR_RETURN(Optimizer optimizer, Optimizer::make(spec_.optimizer));
  optimizer_.emplace(std::move(optimizer));
  // An optimizer step per `accumulate_steps` batches; the last group of an epoch may be shorter.
  batches_per_epoch_ = loader_->batches_per_epoch();
  steps_per_epoch_ = (batches_per_epoch_ + spec_.accumulate_steps - 1) / spec_.accumulate_steps;
  schedule_ = spec_.schedule;
  if (schedule_.total_steps == 0) schedule_.total_steps = spec_.epochs * steps_per_epoch_;
  // Overrides given on the command line are part of what must match on resume.
  spec_hash_ =
      sha256_hex(fmt::format("{}|{}|{}", spec_.spec_text, spec_.epochs, spec_.checkpoint_every));
  // Cosine annealing ends at the last epoch's step: another number of epochs changes every rate.
  if (schedule_.kind != ScheduleKind::kCosine) extend_hash_ = sha256_hex(spec_.extend_text);
  return Status::OK();
}

Status Trainer::restore() {
  if (options_.resume) {
    ResumeTarget target;
    for (const std::string& p : tg_.params) target.params[p] = &inputs_.at(p);
    for (const std::string& b : buffer_names_) target.buffers[b] = &buffers_.at(b);
    target.optimizer = &*optimizer_;
    // Only where to continue is kept: the tensors were copied into the live ones.
    DLSYS_ASSIGN_OR_RETURN(Checkpoint c,
                           resume_from_checkpoint(options_.out_dir, spec_hash_, target,
                                                  options_.extend ? extend_hash_ : ""));
    if (options_.extend && c.position.epoch > spec_.epochs)
      return Status::Invalid(
          "--extend: the checkpoint in {} is at epoch {}, past train.epochs = {}: a run is "
          "extended to more epochs, not fewer",
          options_.out_dir, c.position.epoch, spec_.epochs);
    start_step_ = c.step;
    start_position_ = c.position;
    if (sharded_) {
      // Sharded: keep this rank's pieces of the moments, under the names the steps use.
      std::map<std::string, Tensor> whole = optimizer_->state(), mine;
      std::vector<Tensor*> ptrs;
      for (const std::string& slot : optimizer_->slot_names()) {
        std::vector<Tensor> of;
        for (const std::string& p : tg_.params) {
          auto it = whole.find(p + "." + slot);
          if (it == whole.end()) break;
          of.push_back(it->second);
        }
        if (of.size() != tg_.params.size()) continue;
        ptrs.clear();
        for (Tensor& t : of) ptrs.push_back(&t);
        for (auto& [name, piece] : owned_pieces(ptrs)) mine[name + "." + slot] = piece.clone();
      }
      optimizer_->load_state(std::move(mine), optimizer_->steps());
    }
    DLSYS_RETURN_IF_ERROR(loader_->seek(start_position_));
  }
  step_ = start_step_;
  return Status::OK();
}

Status Trainer::open_metrics() {
  if (rank_ != 0) return Status::OK();  // rank 0 writes the run's files
  std::string path = options_.out_dir + "/metrics.jsonl";
  metrics_.reset(std::fopen(path.c_str(), options_.resume ? "a" : "w"));
  if (!metrics_) return Status::IOError("cannot write '{}'", path);
  return Status::OK();
}

void Trainer::emit(const TrainEvent& e) {
  if (options_.on_event) options_.on_event(e);
}

void Trainer::record(const TrainEvent& e) {
  if (metrics_) {
    std::fprintf(metrics_.get(), "%s\n", json_dump_line(to_json(e)).c_str());
    std::fflush(metrics_.get());
  }
  emit(e);
}

Tensor Trainer::input_batch(Tensor x) const {
  Shape s = {x.dim(0)};
  s.insert(s.end(), input_sample_.begin(), input_sample_.end());
  return x.view(s);
}

Tensor Trainer::target_batch(Tensor y) const {
  if (classify_) return y;
  if (y.dtype() != DType::kF32) {  // integer labels of a dataset column, as numbers
    Tensor f = Tensor::empty(DType::kF32, y.shape());
    for (int64_t i = 0; i < y.numel(); ++i)
      f.data_as<float>()[i] = static_cast<float>(y.get_f64(i));
    y = f;
  }
  Shape s = {y.dim(0)};
  s.insert(s.end(), logits_sample_.begin(), logits_sample_.end());
  return shape_numel(s) == y.numel() ? y.view(s) : y;
}

bool Trainer::stop_now() const {
  if (options_.group && spec_.micro_batches > 0) return group_stop_;
  return options_.stop_requested && options_.stop_requested();
}

void Trainer::lay_out_gradients() {
  if (!grad_offsets_.empty()) return;
  grad_offsets_.push_back(0);
  for (Tensor* p : params_)
    grad_offsets_.push_back(grad_offsets_.back() + static_cast<size_t>(p->numel()));
  for (size_t k = 0; k < params_.size(); ++k)
    grad_sums_.push_back(Tensor::zeros(DType::kF32, params_[k]->shape()));
}

std::vector<std::pair<std::string, Tensor>> Trainer::owned_pieces(
    const std::vector<Tensor*>& of) const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t k = 0; k < params_.size(); ++k) {
    const size_t off = grad_offsets_[k], n = grad_offsets_[k + 1] - off;
    const size_t a = std::max(off, shard_lo_), b = std::min(off + n, shard_hi_);
    if (a >= b) continue;
    Tensor flat = of[k]->view({static_cast<int64_t>(n)});
    out.emplace_back(fmt::format("{}@{}", tg_.params[k], a - off),
                     flat.slice_rows(static_cast<int64_t>(a - off), static_cast<int64_t>(b - off)));
  }
  return out;
}

Status Trainer::share_owned(const std::vector<float*>& values) {
  // The ranks' ranges are consecutive: gathered, they are the values laid end to end.
  std::vector<float>& mine = shard_mine_;
  std::vector<float>& all = shard_all_;
  mine.assign(shard_block_, 0.0f);
  all.resize(shard_block_ * static_cast<size_t>(world_));
  for (size_t k = 0; k < params_.size(); ++k) {
    const size_t off = grad_offsets_[k], n = grad_offsets_[k + 1] - off;
    const size_t a = std::max(off, shard_lo_), b = std::min(off + n, shard_hi_);
    if (a < b)
      std::copy(values[k] + (a - off), values[k] + (b - off), mine.begin() + (a - shard_lo_));
  }
  DLSYS_RETURN_IF_ERROR(
      options_.group->all_gather(mine.data(), shard_block_ * sizeof(float), all.data()));
  for (size_t k = 0; k < params_.size(); ++k)
    std::copy(all.begin() + static_cast<std::ptrdiff_t>(grad_offsets_[k]),
              all.begin() + static_cast<std::ptrdiff_t>(grad_offsets_[k + 1]), values[k]);
  return Status::OK();
}

Result<std::map<std::string, Tensor>> Trainer::gathered_optimizer_state() {
  std::map<std::string, Tensor> out;
  if (optimizer_->steps() == 0) return out;  // no slot exists yet, on any rank
  const auto& state = optimizer_->state();
  for (const std::string& slot : optimizer_->slot_names()) {
    // This rank's pieces of the slot into tensors shaped like the parameters, then everyone's.
    std::vector<Tensor> full;
    std::vector<Tensor*> ptrs;
    for (Tensor* p : params_) full.push_back(Tensor::zeros(DType::kF32, p->shape()));
    for (Tensor& t : full) ptrs.push_back(&t);
    for (auto& [name, piece] : owned_pieces(ptrs)) {
      auto it = state.find(name + "." + slot);
      if (it == state.end())
        return Status::Internal("the optimizer has no '{}.{}' after {} steps", name, slot,
                                optimizer_->steps());
      std::copy(it->second.data_as<float>(), it->second.data_as<float>() + it->second.numel(),
                piece.data_as<float>());
    }
    std::vector<float*> values;
    for (Tensor& t : full) values.push_back(t.data_as<float>());
    DLSYS_RETURN_IF_ERROR(share_owned(values).with_context("gathering the optimizer state"));
    for (size_t k = 0; k < params_.size(); ++k)
      out[tg_.params[k] + "." + slot] = std::move(full[k]);
  }
  return out;
}

Status Trainer::check_group() {
  if (options_.zero_stage != 0 && options_.zero_stage != 1)
    return Status::Invalid(
        "ZeRO stage {}: stage 1 (the optimizer's state sharded) is built, and "
        "0 (off)",
        options_.zero_stage);
  if (options_.zero_stage == 1 && options_.group && world_ > 1) {
    lay_out_gradients();
    const size_t total = grad_offsets_.back();
    shard_block_ = (total + static_cast<size_t>(world_) - 1) / static_cast<size_t>(world_);
    shard_lo_ = std::min(total, static_cast<size_t>(rank_) * shard_block_);
    shard_hi_ = std::min(total, shard_lo_ + shard_block_);
    sharded_ = true;
  }
  if (!options_.group || world_ == 1) return Status::OK();
  dist::ProcessGroup& g = *options_.group;
  std::string manifest = fmt::format("spec {}\n", spec_hash_);
  for (size_t k = 0; k < tg_.params.size(); ++k)
    manifest +=
        fmt::format("parameter {} {} {}\n", k, tg_.params[k], shape_str(params_[k]->shape()));
  const std::string digest = sha256_hex(manifest);  // 64 characters on every rank
  std::string all(64 * static_cast<size_t>(world_), '\0');
  DLSYS_RETURN_IF_ERROR(
      g.all_gather(digest.data(), 64, all.data()).with_context("comparing the ranks' models"));
  std::vector<int> differ;
  for (int r = 1; r < world_; ++r)
    if (all.compare(static_cast<size_t>(r) * 64, 64, all, 0, 64) != 0) differ.push_back(r);
  if (differ.empty()) return Status::OK();
  // Rank 0's manifest to every rank, which finds its own first difference.
  uint64_t len = manifest.size();
  DLSYS_RETURN_IF_ERROR(g.broadcast(&len, sizeof(len), 0));
  if (len > (64u << 20)) return Status::Invalid("rank 0 sent a model description of {} bytes", len);
  std::string zero = rank_ == 0 ? manifest : std::string(len, '\0');
  DLSYS_RETURN_IF_ERROR(g.broadcast(zero.data(), len, 0));
  if (std::find(differ.begin(), differ.end(), rank_) == differ.end())
    return Status::FailedPrecondition(
        "rank{} {} train{} another spec or model than rank {}: see {} error; start every rank "
        "with the same spec and --set overrides",
        differ.size() > 1 ? "s" : "", fmt::join(differ, ", "), differ.size() > 1 ? "" : "s", rank_,
        differ.size() > 1 ? "their" : "its");
  auto lines = [](const std::string& t) {
    std::vector<std::string> out;
    for (size_t at = 0; at < t.size();) {
      size_t nl = t.find('\n', at);
      out.push_back(t.substr(at, nl - at));
      at = nl == std::string::npos ? t.size() : nl + 1;
    }
    return out;
  };
  const auto mine = lines(manifest), theirs = lines(zero);
  for (size_t i = 0; i < std::max(mine.size(), theirs.size()); ++i) {
    const std::string a = i < mine.size() ? mine[i] : "(nothing)";
    const std::string b = i < theirs.size() ? theirs[i] : "(nothing)";
    if (a == b) continue;
    if (a.rfind("spec ", 0) == 0)
      return Status::FailedPrecondition(
          "rank {} was started with another spec than rank 0 (or other --set overrides): start "
          "every rank with the same ones",
          rank_);
    return Status::FailedPrecondition(
        "rank {}'s model differs from rank 0's: '{}' here, '{}' on rank 0; every rank must build "
        "the same parameters in the same order",
        rank_, a, b);
  }
  return Status::Internal("rank {}: the model descriptions differ, but no line does", rank_);
}

Status Trainer::check_start() {
  if (!options_.group || world_ == 1) return Status::OK();
  const int64_t mine[3] = {start_step_, start_position_.epoch, start_position_.batch};
  std::vector<int64_t> all(3 * static_cast<size_t>(world_));
  DLSYS_RETURN_IF_ERROR(options_.group->all_gather(mine, sizeof(mine), all.data())
                            .with_context("comparing where the ranks start"));
  for (int r = 1; r < world_; ++r) {
    const size_t at = 3 * static_cast<size_t>(r);
    if (all[at] != all[0] || all[at + 1] != all[1] || all[at + 2] != all[2])
      return Status::FailedPrecondition(
          "rank {} starts at step {} and rank 0 at step {}: the ranks resumed from different "
          "checkpoints; give every rank the same --out, on storage they all share (rank 0 writes "
          "the checkpoints there)",
          r, all[at], all[0]);
  }
  return Status::OK();
}

Status Trainer::form_buckets() {
  if (!options_.group || world_ == 1) return Status::OK();
  lay_out_gradients();
  size_t bytes = static_cast<size_t>(spec_.bucket_kib) * 1024;
  if (bytes == 0) {
    dist::LinkEstimate link;
    DLSYS_ASSIGN_OR_RETURN(link, dist::measure_link(*options_.group));
    bytes = dist::choose_bucket_bytes(link, grad_offsets_.back() * sizeof(float));
    dist_.link_latency_s = link.latency_s;
    dist_.link_bytes_per_s = link.bytes_per_s;
    dist_.bucket_bytes_measured = true;
  }
  std::vector<dist::Bucket> buckets = dist::buckets_from_the_end(grad_offsets_, bytes);
  if (buckets.empty()) buckets.push_back(dist::Bucket{0, 0});  // no parameters: the loss alone
  buckets[0].end = grad_offsets_.back() + 3;  // the loss sum, the stop and data-error flags
  bucket_of_param_.assign(params_.size(), 0);
  for (size_t b = 0; b < buckets.size(); ++b)
    for (size_t k = 0; k < params_.size(); ++k)
      if (grad_offsets_[k] >= buckets[b].begin && grad_offsets_[k] < buckets[b].end)
        bucket_of_param_[k] = b;
  bucket_outputs_.assign(buckets.size(), 0);
  for (size_t b : bucket_of_param_) ++bucket_outputs_[b];
  ++bucket_outputs_[0];  // the loss
  dist_.buckets = static_cast<int64_t>(buckets.size());
  dist_.bucket_bytes = static_cast<int64_t>(bytes);
  for (const dist::Bucket& b : buckets)
    dist_.bucket_sizes.push_back(static_cast<int64_t>((b.end - b.begin) * 4));
  reducer_ = std::make_unique<dist::BucketReducer>(options_.group, std::move(buckets));
  return Status::OK();
}

Status Trainer::other_ranks_failed(const std::string& where, float ranks) const {
  return Status::Invalid(
      "{}: {:.0f} other rank{} could not use {} part of it (the error is in {} output); every "
      "rank stops here",
      where, ranks, ranks == 1 ? "" : "s", ranks == 1 ? "its" : "their",
      ranks == 1 ? "its" : "their");
}

Status Trainer::micro_batch_step(int64_t epoch, int64_t* batch, double* loss_sum, int64_t* samples,
                                 double* lr) {
  auto tw = Clock::now();
  Result<data::Batch> got = loader_->next();
  result_.data_wait_seconds += std::chrono::duration<double>(Clock::now() - tw).count();
  const std::string where = fmt::format("training batch {} of epoch {}", *batch + 1, epoch + 1);
  // Each rank reads only its part of the batch, so a shard that fails or a bad label may be
  // this rank's alone. With other ranks, it still takes part in the step's all-reduce (zero
  // gradients and a data-error flag), so that every rank stops at this step with an error
  // rather than wait for this one and take it for lost.
  Status data_error = got.status().with_context(where);
  if (data_error.ok()) data_error = check_class_ids(got->y, where);
  data::Batch bd = data_error.ok() ? std::move(got).value() : data::Batch{};
  // The loader assembled this rank's micro-batches only (batch_part): rows [offset, ...) of the
  // batch's n.
  const int64_t n = bd.rows, offset = bd.offset;
  const int64_t m = spec_.micro_batches, per_rank = m / world_;
  if (const data::BatchPart part = batch_part();
      data_error.ok() && (offset != part.lo(n) || bd.x.dim(0) != part.hi(n) - offset))
    data_error = Status::Internal(
        "step {}: the loader gave rows [{}, {}) of a batch of {}, not rank {}'s rows [{}, {}) (was "
        "it opened without batch_part()?)",
        step_, offset, offset + bd.x.dim(0), n, rank_, part.lo(n), part.hi(n));
  if (!data_error.ok() && !reducer_) return data_error;
  // Synchronized batch norm exchanges statistics during the forward pass, which a rank without
  // data would not run: the ranks agree on a data error first (one float, summed).
  if (reducer_ && cross_process_) {
    float failed = data_error.ok() ? 0.0f : 1.0f;
    DLSYS_RETURN_IF_ERROR(options_.group->all_reduce_sum(&failed, 1).with_context(where));
    if (failed > 0) return data_error.ok() ? other_ranks_failed(where, failed) : data_error;
  }
  lay_out_gradients();
  const size_t total = grad_offsets_.back();  // then the leaf's loss x rows
  // After the gradients: the loss sum, a stop asked of this rank, and this rank's data error
  // (both summed: any rank's).
  const size_t extra = 3;
  leaf_grads_.resize(static_cast<size_t>(per_rank));
  for (auto& g : leaf_grads_) g.resize(total + extra);  // every element is written below
  std::vector<float*> leaves;
  for (auto& g : leaf_grads_) leaves.push_back(g.data());
  float* flat = leaves[0];  // this rank's micro-batches summed in place (then all the ranks')
  // A stop asked of this rank, once its gradients are computed (1: stop after this step).
  auto stop_here = [&] {
    return options_.stop_requested && options_.stop_requested() ? 1.0f : 0.0f;
  };
  // Bucket b of the last micro-batch is final: sum this rank's leaves over its range, and let
  // the reducer send it while the backward pass goes on.
  const size_t nb = reducer_ ? reducer_->buckets().size() : 0;
  std::vector<size_t> deferred;  // train.overlap false: ready after the backward pass
  std::vector<float*> part(leaves.size());
  auto bucket_final = [&](size_t b) {
    const dist::Bucket& r = reducer_->buckets()[b];
    for (size_t i = 0; i < leaves.size(); ++i) part[i] = leaves[i] + r.begin;
    dist::tree_sum_in_place(part, r.end - r.begin);
    if (b == 0) flat[total + 1] = stop_here();
    if (spec_.overlap)
      reducer_->ready(b);
    else
      deferred.push_back(b);
  };
  if (reducer_) reducer_->start(flat);
  // A step that fails part way leaves no all-reduce running on this rank.
  struct Abandon {
    dist::BucketReducer* r;
    ~Abandon() {
      if (r) r->abandon();
    }
  } abandon{reducer_.get()};
  // Batch statistics of each micro-batch: its row count, then every statistic's values (a
  // mean and a variance per channel of each batch norm), `one` floats in all.
  const size_t at = tg_.params.size() + 2;
  size_t one = 1;
  for (const BatchStat& bs : tg_.batch_stats)
    one += static_cast<size_t>(buffers_.at(bs.running_mean).numel() +
                               buffers_.at(bs.running_var).numel());
  std::vector<float> stats;
  std::vector<Tensor> out;
  std::vector<size_t> pending(nb);  // per bucket: outputs of this micro-batch still to come
  if (!data_error.ok()) {
    // Nothing to compute: zeros and the flag, through the same buckets as every other rank's.
    for (float* g : leaves) std::fill(g, g + total + extra, 0.0f);
    flat[total + 2] = 1.0f;
    for (size_t b = 0; b < nb; ++b) bucket_final(b);
  }
  int64_t nonfinite = -1;  // the first micro-batch of this rank whose loss was not finite
  float nonfinite_loss = 0;
  for (int64_t l = 0; l < per_rank && data_error.ok(); ++l) {
    const int64_t j = rank_ * per_rank + l;  // the micro-batch's place in the batch
    const int64_t lo = j * n / m, hi = (j + 1) * n / m;
    const bool last = l + 1 == per_rank;
    float* g = leaves[static_cast<size_t>(l)];
    if (hi == lo) {  // a batch of fewer rows than micro-batches: this one is empty
      std::fill(g, g + total + extra, 0.0f);
      if (!tg_.batch_stats.empty()) stats.resize(stats.size() + one, 0.0f);
      if (last)
        for (size_t b = 0; b < nb; ++b) bucket_final(b);
      continue;
    }
    inputs_["input"] = input_batch(bd.x.slice_rows(lo - offset, hi - offset));
    inputs_["target"] = target_batch(bd.y.slice_rows(lo - offset, hi - offset));
    if (!tg_.dropout_seed.empty()) {
      // A seed per micro-batch: the same whichever rank runs it.
      std::string key = fmt::format("{}/{}/micro{}", spec_.seed, step_, j);
      int64_t seed = static_cast<int64_t>(std::hash<std::string>{}(key) >> 1);
      inputs_[tg_.dropout_seed] = Tensor::from_i64({}, &seed);
    }
    // Its share of the batch (1/m exactly when the batch divides evenly).
    const float w = static_cast<float>(static_cast<double>(hi - lo) / static_cast<double>(n));
    pending = bucket_outputs_;
    auto done_one = [&](size_t b) {
      if (--pending[b] == 0 && last) bucket_final(b);
    };
    // Output 0 is the loss, 1..P the parameters' gradients: each weighted into this leaf as
    // soon as the plan has computed it.
    auto on_ready = [&](size_t o, const Tensor& t) {
      if (o == 0) {
        g[total] = t.data_as<float>()[0] * static_cast<float>(hi - lo);
        g[total + 1] = 0.0f;
        g[total + 2] = 0.0f;
        if (nb > 0) done_one(0);
      } else if (o <= params_.size()) {
        const size_t k = o - 1;
        const float* src = t.data_as<float>();
        float* dst = g + grad_offsets_[k];
        const size_t n_k = grad_offsets_[k + 1] - grad_offsets_[k];
        for (size_t i = 0; i < n_k; ++i) dst[i] = src[i] * w;
        if (nb > 0) done_one(bucket_of_param_[k]);
      }
    };
    const auto tc = Clock::now();
    DLSYS_RETURN_IF_ERROR(
        session_->run(inputs_, &out, on_ready).with_context(fmt::format("step {}", step_)));
    dist_.compute_s += std::chrono::duration<double>(Clock::now() - tc).count();
    // A loss that is not finite is said after the all-reduce, on every rank (the sum carries it).
    if (nonfinite < 0 && !std::isfinite(out[0].data_as<float>()[0])) {
      nonfinite = j;
      nonfinite_loss = out[0].data_as<float>()[0];
    }
    if (!tg_.batch_stats.empty()) {
      stats.push_back(static_cast<float>(hi - lo));
      for (size_t s = 0; s < 2 * tg_.batch_stats.size(); ++s) {
        const Tensor& t = out[at + s];
        stats.insert(stats.end(), t.data_as<float>(), t.data_as<float>() + t.numel());
      }
    }
  }
  if (reducer_) {
    if (!deferred.empty()) reducer_->ready(deferred);
    abandon.r = nullptr;
    Status finished = reducer_->finish().with_context(fmt::format("step {}", step_));
    // A rank whose data failed says so even when the all-reduce failed too (a peer lost).
    if (!finished.ok() && !data_error.ok())
      return data_error.with_context(fmt::format("(and then: {})", finished.message()));
    DLSYS_RETURN_IF_ERROR(finished);
  } else {
    // One process (or a group of one): the tree of this rank's micro-batches is the sum.
    dist::tree_sum_in_place(leaves, total + extra);
    flat[total + 1] = stop_here();
  }
  if (flat[total + 2] > 0)
    return data_error.ok() ? other_ranks_failed(where, flat[total + 2]) : data_error;
  if (!std::isfinite(flat[total]))
    return Status::Invalid(
        "the loss became {} at step {} (epoch {}, {}); lower optimizer.lr or set "
        "train.clip_grad_norm",
        nonfinite >= 0 ? nonfinite_loss : flat[total], step_, epoch + 1,
        nonfinite >= 0 ? fmt::format("micro-batch {}", nonfinite)
        : world_ > 1   ? std::string("on another rank")
                       : std::string("the sum of its micro-batches' losses"));
  group_stop_ = flat[total + 1] > 0;
  for (size_t k = 0; k < params_.size(); ++k)
    std::copy(flat + grad_offsets_[k], flat + grad_offsets_[k + 1], grad_sums_[k].data_as<float>());
  // Running statistics: every micro-batch's, in order, on every rank (as one process would).
  if (!tg_.batch_stats.empty()) {
    if (stats.size() != static_cast<size_t>(per_rank) * one)
      return Status::Internal("step {}: {} floats of batch statistics, expected {} x {}", step_,
                              stats.size(), per_rank, one);
    std::vector<float> all(static_cast<size_t>(m) * one);
    if (options_.group) {
      DLSYS_RETURN_IF_ERROR(
          options_.group->all_gather(stats.data(), stats.size() * sizeof(float), all.data()));
    } else {
      all = stats;
    }
    std::vector<Tensor> view(at + 2 * tg_.batch_stats.size());
    for (int64_t j = 0; j < m; ++j) {
      const float* p = all.data() + static_cast<size_t>(j) * one;
      if (p[0] == 0) continue;  // an empty micro-batch
      // Synchronized: every micro-batch holds the whole batch's statistics, folded in once.
      if (spec_.sync_batch_norm && j > 0) break;
      ++p;
      for (size_t s = 0; s < 2 * tg_.batch_stats.size(); ++s) {
        const Tensor& like = buffers_.at(s % 2 ? tg_.batch_stats[s / 2].running_var
                                               : tg_.batch_stats[s / 2].running_mean);
        view[at + s] = Tensor::from_f32(like.shape(), p);
        p += like.numel();
      }
      DLSYS_RETURN_IF_ERROR(apply_batch_stats(tg_, view, &buffers_));
    }
  }
  std::vector<Tensor*> gp;
  std::vector<const Tensor*> cg;
  for (Tensor& g : grad_sums_) {
    gp.push_back(&g);
    cg.push_back(&g);
  }
  if (spec_.clip_grad_norm > 0) clip_grad_norm(gp, spec_.clip_grad_norm);
  *lr = learning_rate(schedule_, step_);
  if (!sharded_) {
    DLSYS_RETURN_IF_ERROR(optimizer_->step(tg_.params, params_, cg, *lr));
  } else {
    // ZeRO-1: this rank's range of the parameters only, then everyone's to everyone.
    auto pieces = owned_pieces(params_);
    auto grads = owned_pieces(gp);
    std::vector<std::string> names;
    std::vector<Tensor*> mine;
    std::vector<const Tensor*> g;
    for (size_t i = 0; i < pieces.size(); ++i) {
      names.push_back(pieces[i].first);
      mine.push_back(&pieces[i].second);
      g.push_back(&grads[i].second);
    }
    DLSYS_RETURN_IF_ERROR(optimizer_->step(names, mine, g, *lr));
    std::vector<float*> values;
    for (Tensor* p : params_) values.push_back(p->data_as<float>());
    DLSYS_RETURN_IF_ERROR(share_owned(values).with_context(fmt::format("step {}", step_)));
  }
  *loss_sum = flat[total];
  *samples = n;
  ++*batch;
  return Status::OK();
}

Status Trainer::train_step(int64_t epoch, int64_t* batch, double* loss_sum, int64_t* samples,
                           double* lr) {
  if (spec_.micro_batches > 0) return micro_batch_step(epoch, batch, loss_sum, samples, lr);
  // The batches [*batch, group_end): with accumulation, the gradients of each batch are weighted
  // by its size and averaged, as for one batch of them all.
  int64_t accumulate = spec_.accumulate_steps;
  int64_t& b = *batch;
  int64_t group_end = std::min(batches_per_epoch_, (b / accumulate + 1) * accumulate);
  double step_loss = 0;
  int64_t step_samples = 0;
  std::vector<Tensor> out;
  for (; b < group_end; ++b) {
    auto tw = Clock::now();
    DLSYS_ASSIGN_OR_RETURN(data::Batch batch_data, loader_->next());
    result_.data_wait_seconds += std::chrono::duration<double>(Clock::now() - tw).count();
    DLSYS_RETURN_IF_ERROR(check_class_ids(
        batch_data.y, fmt::format("training batch {} of epoch {}", b + 1, epoch + 1)));
    inputs_["input"] = input_batch(batch_data.x);
    inputs_["target"] = target_batch(batch_data.y);
    if (!tg_.dropout_seed.empty()) {
      // A seed per batch, the same when a resumed run repeats it.
      std::string key = accumulate == 1
                            ? fmt::format("{}/{}", spec_.seed, step_)
                            : fmt::format("{}/{}/{}", spec_.seed, step_, b % accumulate);
      int64_t seed = static_cast<int64_t>(std::hash<std::string>{}(key) >> 1);
      inputs_[tg_.dropout_seed] = Tensor::from_i64({}, &seed);
    }
    DLSYS_RETURN_IF_ERROR(session_->run(inputs_, &out).with_context(fmt::format("step {}", step_)));
    double loss = out[0].data_as<float>()[0];
    if (!std::isfinite(loss))
      return Status::Invalid(
          "the loss became {} at step {} (epoch {}); lower optimizer.lr or "
          "set train.clip_grad_norm",
          loss, step_, epoch + 1);
    int64_t n = batch_data.x.dim(0);
    if (accumulate > 1) {
      // Session outputs are overwritten by the next run: fold them into the sums now.
      if (grad_sums_.empty())
        for (size_t k = 0; k < tg_.params.size(); ++k)
          grad_sums_.push_back(Tensor::zeros(DType::kF32, out[k + 1].shape()));
      for (size_t k = 0; k < tg_.params.size(); ++k) {
        float* acc = grad_sums_[k].data_as<float>();
        const float* g = out[k + 1].data_as<float>();
        float w = step_samples == 0 ? 0.0f : 1.0f;  // the first batch overwrites
        for (int64_t i = 0; i < grad_sums_[k].numel(); ++i)
          acc[i] = acc[i] * w + g[i] * static_cast<float>(n);
      }
    }
    DLSYS_RETURN_IF_ERROR(apply_batch_stats(tg_, out, &buffers_));
    step_loss += loss * static_cast<double>(n);
    step_samples += n;
  }
  if (accumulate > 1)
    for (Tensor& g : grad_sums_) {
      float* acc = g.data_as<float>();
      for (int64_t i = 0; i < g.numel(); ++i) acc[i] /= static_cast<float>(step_samples);
    }
  // Without accumulation the gradients are used in place (valid until the next run).
  std::vector<Tensor*> gp;
  std::vector<const Tensor*> cg;
  for (size_t k = 0; k < tg_.params.size(); ++k) {
    Tensor* g = accumulate > 1 ? &grad_sums_[k] : &out[k + 1];
    gp.push_back(g);
    cg.push_back(g);
  }
  if (spec_.clip_grad_norm > 0) clip_grad_norm(gp, spec_.clip_grad_norm);
  *lr = learning_rate(schedule_, step_);
  DLSYS_RETURN_IF_ERROR(optimizer_->step(tg_.params, params_, cg, *lr));
  *loss_sum = step_loss;
  *samples = step_samples;
  return Status::OK();
}

Status Trainer::run_epoch(int64_t epoch, double* train_loss) {
  double epoch_loss = 0;
  int64_t seen = 0;
  auto te = Clock::now();
  int64_t b = epoch == start_position_.epoch ? start_position_.batch : 0;
  for (; b < batches_per_epoch_; ++step_) {
    double step_loss = 0, lr = 0;
    int64_t step_samples = 0;
    DLSYS_RETURN_IF_ERROR(train_step(epoch, &b, &step_loss, &step_samples, &lr));
    double loss = step_loss / static_cast<double>(std::max<int64_t>(step_samples, 1));
    epoch_loss += step_loss;
    seen += step_samples;
    const bool periodic = spec_.checkpoint_every > 0 && (step_ + 1) % spec_.checkpoint_every == 0;
    if (periodic) DLSYS_RETURN_IF_ERROR(checkpoint(step_ + 1).with_context("checkpoint"));
    if (options_.heartbeat) options_.heartbeat();
    if (stop_now()) {
      if (!periodic) DLSYS_RETURN_IF_ERROR(checkpoint(step_ + 1).with_context("checkpoint"));
      return Status::Unavailable("{} after step {}; checkpoint step-{} in {} (--resume {} goes on)",
                                 kStopped, step_ + 1, step_ + 1, options_.out_dir,
                                 options_.out_dir);
    }
    if (options_.step_event_every > 0 && step_ % options_.step_event_every == 0) {
      double secs = std::chrono::duration<double>(Clock::now() - te).count();
      double elapsed = std::chrono::duration<double>(Clock::now() - t0_).count();
      int64_t done_here = step_ + 1 - start_step_;  // steps this process ran
      StepEvent e;
      e.epoch = epoch + 1;
      e.step = step_;
      e.total_steps = spec_.epochs * steps_per_epoch_;
      e.loss = loss;
      e.lr = lr;
      e.samples_per_s = secs > 0 ? static_cast<double>(seen) / secs : 0.0;
      e.eta_s =
          elapsed / static_cast<double>(done_here) * static_cast<double>(e.total_steps - step_ - 1);
      record(e);
    }
  }
  *train_loss = epoch_loss / static_cast<double>(std::max<int64_t>(1, seen));
  return Status::OK();
}

Result<EvalMetrics> Trainer::evaluate() {
  EvalMetrics m;
  double total = 0, abs_err = 0;
  int64_t correct = 0, correct5 = 0, n = val_.size(), elems = 0;
  std::map<std::string, Tensor> ein;
  for (const std::string& p : tg_.params) ein[p] = inputs_.at(p);
  for (const std::string& b : buffer_names_) ein[b] = buffers_.at(b);
  int64_t classes = 0;
  for (int64_t b = 0; b < n; b += 256) {
    int64_t e = std::min(n, b + 256);
    ein["input"] = input_batch(val_.features.slice_rows(b, e));
    std::vector<Tensor> out;
    DLSYS_RETURN_IF_ERROR(eval_session_->run(ein, &out).with_context("validation"));
    if (options_.heartbeat) options_.heartbeat();
    const Tensor& z = out[0];
    const float* zd = z.data_as<float>();
    if (classify_) {
      int64_t c = z.dim(1);
      classes = c;
      float eps = spec_.label_smoothing;
      for (int64_t i = 0; i < e - b; ++i) {
        const float* row = zd + i * c;
        int64_t t = val_.labels.data_as<int64_t>()[b + i];
        double mx = row[argmax_row(row, c)], sum = 0, mean_logp = 0;
        for (int64_t j = 0; j < c; ++j) sum += std::exp(row[j] - mx);
        double lse = mx + std::log(sum);
        for (int64_t j = 0; j < c; ++j) mean_logp += (row[j] - lse) / static_cast<double>(c);
        total += -(1 - eps) * (row[t] - lse) - eps * mean_logp;
        correct += argmax_row(row, c) == t;
        int64_t above = 0;
        for (int64_t j = 0; j < c; ++j) above += row[j] > row[t];
        correct5 += above < 5;
      }
    } else {
      Tensor y = target_batch(val_.labels.slice_rows(b, e));
      const float* yd = y.data_as<float>();
      for (int64_t i = 0; i < z.numel(); ++i) {
        double zi = zd[i], ti = yd[i];
        if (bce_) {
          total += std::max(zi, 0.0) - zi * ti + std::log1p(std::exp(-std::abs(zi)));
          correct += (zi > 0) == (ti > 0.5);
        } else {
          total += (zi - ti) * (zi - ti);
          abs_err += std::abs(zi - ti);
        }
      }
      elems += z.numel();
    }
  }
  if (classify_) {
    m.val_loss = total / static_cast<double>(n);
    m.val_accuracy = static_cast<double>(correct) / static_cast<double>(n);
    if (classes > 5) m.val_top5_accuracy = static_cast<double>(correct5) / static_cast<double>(n);
  } else {
    double count = static_cast<double>(std::max<int64_t>(elems, 1));
    m.val_loss = total / count;
    if (bce_)
      m.val_accuracy = static_cast<double>(correct) / count;
    else
      m.val_mae = abs_err / count;
  }
  return m;
}

Status Trainer::checkpoint(int64_t at_step) {
  // Sharded, the moments are spread over the ranks: gathered first (every rank takes part).
  std::map<std::string, Tensor> state;
  if (sharded_) {
    DLSYS_ASSIGN_OR_RETURN(state, gathered_optimizer_state());
  }
  if (rank_ != 0) return Status::OK();  // every rank holds the same state: rank 0 writes it
  // Views of the live tensors: written out before they change.
  Checkpoint c;
  c.step = at_step;
  c.position = loader_->position();
  c.optimizer_steps = optimizer_->steps();
  c.spec_sha256 = spec_hash_;
  c.extend_sha256 = extend_hash_;
  for (const std::string& p : tg_.params) c.params[p] = inputs_.at(p);
  c.buffers = buffers_;
  c.optimizer_state = sharded_ ? std::move(state) : optimizer_->state();
  return write_checkpoint(options_.out_dir, c);
}

Status Trainer::export_model() {
  if (rank_ != 0) return Status::OK();  // rank 0 writes the model
  // The forward graph with the trained weights.
  Graph trained = forward_;
  for (const std::string& p : tg_.params) trained.initializers[p] = inputs_.at(p);
  for (const std::string& b : buffer_names_) trained.initializers[b] = buffers_.at(b);
  // A fine-tuned model keeps its own input and output names.
  rename_value(&trained, "input", names_.input);
  rename_value(&trained, "logits", names_.output);
  // What a runtime needs to read the model's answers and feed it rows (docs/formats.md).
  trained.metadata["dlsys.task"] = classify_ ? "classification"
                                   : bce_    ? "binary_classification"
                                             : "regression";
  if (!preprocess_.empty()) trained.metadata["dlsys.preprocess"] = preprocess_.to_json().dump();
  if (!feature_names_.empty())
    trained.metadata["dlsys.feature_names"] = nlohmann::json(feature_names_).dump();
  if (!spec_.class_names.empty())
    trained.metadata["dlsys.class_names"] = nlohmann::json(spec_.class_names).dump();
  // String columns go in as strings (a LabelEncoder per column maps them to their codes).
  DLSYS_ASSIGN_OR_RETURN(std::vector<std::string> strings,
                         preprocess_.string_inputs_to(&trained, names_.input));
  if (!strings.empty()) trained.metadata["dlsys.string_inputs"] = nlohmann::json(strings).dump();
  result_.model_path = options_.out_dir + "/model.onnx";
  DLSYS_RETURN_IF_ERROR(export_onnx_file(trained, result_.model_path).with_context("export"));
  // The validation split, so that the exported model can be checked on exactly these rows.
  DLSYS_RETURN_IF_ERROR(npy_write(options_.out_dir + "/val_x.npy", input_batch(val_.features)));
  DLSYS_RETURN_IF_ERROR(npy_write(options_.out_dir + "/val_y.npy", val_.labels));
  return write_file_atomic(options_.out_dir + "/spec.yaml", spec_.spec_text);
}

Result<TrainResult> Trainer::run() {
  if (ran_) return Status::Invalid("a Trainer runs once; make another for a new run");
  ran_ = true;
  DLSYS_RETURN_IF_ERROR(build_model());
  DLSYS_RETURN_IF_ERROR(open_data());
  DLSYS_RETURN_IF_ERROR(build_graphs());
  DLSYS_RETURN_IF_ERROR(check_group());
  // Synchronized batch norm's own channel, once every rank is known to train the same model.
  if (cross_process_) {
    DLSYS_ASSIGN_OR_RETURN(norm_group_, options_.group->split("batch-norm"));
  }
  DLSYS_RETURN_IF_ERROR(form_buckets().with_context("forming the gradient buckets"));
  DLSYS_RETURN_IF_ERROR(restore());
  DLSYS_RETURN_IF_ERROR(check_start());
  DLSYS_RETURN_IF_ERROR(open_metrics());
  // Before any evaluation, the metrics a run without epochs reports.
  if (classify_ || bce_) last_metrics_.val_accuracy = 0.0;
  t0_ = Clock::now();
  for (int64_t epoch = start_position_.epoch; epoch < spec_.epochs; ++epoch) {
    EvalEvent ev;
    ev.epoch = epoch + 1;
    DLSYS_RETURN_IF_ERROR(run_epoch(epoch, &ev.train_loss));
    ev.step = step_;
    DLSYS_ASSIGN_OR_RETURN(ev.metrics, evaluate());
    ev.elapsed_s = std::chrono::duration<double>(Clock::now() - t0_).count();
    result_.epochs = epoch + 1;
    result_.val_loss = ev.metrics.val_loss;
    result_.val_accuracy = ev.metrics.val_accuracy.value_or(0);
    result_.val_top5_accuracy = ev.metrics.val_top5_accuracy.value_or(-1);
    result_.val_mae = ev.metrics.val_mae.value_or(-1);
    last_metrics_ = ev.metrics;
    record(ev);
    if (spec_.target_accuracy > 0 && ev.metrics.val_accuracy &&
        *ev.metrics.val_accuracy >= spec_.target_accuracy)
      break;
  }
  result_.steps = step_;
  result_.seconds = std::chrono::duration<double>(Clock::now() - t0_).count();
  for (const auto& [_, t] : optimizer_->state())
    result_.optimizer_state_bytes += static_cast<int64_t>(t.numel()) * 4;
  result_.optimizer_shards = sharded_ ? world_ : 1;
  if (options_.steps_done) options_.steps_done();
  metrics_.reset();
  DLSYS_RETURN_IF_ERROR(checkpoint(step_).with_context("final checkpoint"));
  DLSYS_RETURN_IF_ERROR(export_model());
  result_.dataset = dataset_label_;
  result_.validation_dataset = validation_label_;
  DoneEvent& done = result_.done;
  done.epochs = result_.epochs;
  done.steps = result_.steps;
  done.seconds = result_.seconds;
  done.metrics = last_metrics_;
  done.model = result_.model_path;
  // Time the steps spent waiting for the loader, against the whole training time.
  done.data_wait_s = result_.data_wait_seconds;
  done.data_wait_fraction = result_.seconds > 0 ? result_.data_wait_seconds / result_.seconds : 0;
  done.threads = result_.threads;
  done.dataset = dataset_label_;
  done.validation_dataset = validation_label_;
  if (options_.group) {
    DistributedStats& d = dist_;
    d.rank = rank_;
    d.world = world_;
    d.gradient_bytes = static_cast<int64_t>(grad_offsets_.empty() ? 0 : grad_offsets_.back() * 4);
    d.optimizer_state_bytes = result_.optimizer_state_bytes;
    d.optimizer_shards = result_.optimizer_shards;
    if (reducer_) {
      const dist::BucketStats& c = reducer_->stats();
      d.allreduce_s = c.comm_seconds;
      d.exposed_allreduce_s = c.wait_seconds;
      d.allreduces = c.buckets;
      d.started_during_backward = c.started_early;
      d.bucket_seconds = c.bucket_seconds;
    }
    done.distributed = d;
  }
  emit(done);
  return result_;
}

Result<TrainResult> train_model(const TrainSpec& spec, const TrainOptions& options) {
  return Trainer(spec, options).run();
}

}  // namespace dlsys::train
