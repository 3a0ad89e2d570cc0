#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "core/file_util.h"
#include "core/json_util.h"
#include "core/sha256.h"
#include "data/dataset_loader.h"
#include "graph/onnx_export.h"
#include "graph/session.h"
#include "tensor/npy.h"
#include "train/autodiff.h"
#include "train/loader.h"
#include "train/optimizer.h"
#include "train/safetensors.h"

namespace dlsys::train {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

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

struct Checkpoint {
  int64_t step = 0;  // steps completed
  LoaderPosition position;
};

Status write_checkpoint(const std::string& out_dir, const std::string& spec_hash,
                        const std::vector<std::string>& params, std::map<std::string, Tensor>& in,
                        const Optimizer& opt, const Checkpoint& c) {
  namespace fs = std::filesystem;
  std::string root = out_dir + "/checkpoints";
  DLSYS_RETURN_IF_ERROR(make_dirs(root));
  std::string tmp = root + "/.tmp-" + random_hex(6);
  DLSYS_RETURN_IF_ERROR(make_dirs(tmp));
  SafetensorsFile f;
  for (const std::string& p : params) f.tensors["param/" + p] = in.at(p);
  for (const auto& [k, t] : opt.state()) f.tensors["optim/" + k] = t;
  f.metadata["format"] = "dlsys-checkpoint-1";
  DLSYS_RETURN_IF_ERROR(safetensors_write(tmp + "/weights.safetensors", f));
  json state = {{"step", c.step},
                {"loader", {{"epoch", c.position.epoch}, {"batch", c.position.batch}}},
                {"optimizer_steps", opt.steps()},
                {"spec_sha256", spec_hash}};
  DLSYS_RETURN_IF_ERROR(write_file_atomic(tmp + "/state.json", state.dump(2)));
  std::string name = fmt::format("step-{}", c.step);
  std::error_code ec;
  fs::remove_all(root + "/" + name, ec);
  fs::rename(tmp, root + "/" + name, ec);
  if (ec) return Status::IOError("cannot rename checkpoint folder {}: {}", tmp, ec.message());
  DLSYS_RETURN_IF_ERROR(write_file_atomic(root + "/latest", name));
  // Keep the newest three.
  std::vector<std::pair<int64_t, std::string>> all;
  for (auto& e : fs::directory_iterator(root, ec)) {
    std::string n = e.path().filename().string();
    if (n.rfind("step-", 0) == 0) all.push_back({std::atoll(n.c_str() + 5), e.path().string()});
  }
  std::sort(all.begin(), all.end());
  for (size_t i = 0; i + 3 < all.size(); ++i) fs::remove_all(all[i].second, ec);
  return Status::OK();
}

Result<Checkpoint> read_checkpoint(const std::string& out_dir, const std::string& spec_hash,
                                   const std::vector<std::string>& params,
                                   std::map<std::string, Tensor>& in, Optimizer& opt) {
  std::string root = out_dir + "/checkpoints";
  auto latest = read_file(root + "/latest");
  if (!latest.ok())
    return Status::NotFound(
        "--resume: {} has no checkpoint (checkpoints/latest is missing); "
        "start without --resume",
        out_dir);
  std::string dir = root + "/" + *latest;
  DLSYS_ASSIGN_OR_RETURN(std::string state_text, read_file(dir + "/state.json"));
  json state = json::parse(state_text, nullptr, false);
  if (state.is_discarded() || !state.contains("step"))
    return Status::Invalid("{}/state.json is not a checkpoint state", dir);
  if (state.value("spec_sha256", "") != spec_hash)
    return Status::Invalid(
        "--resume: the spec changed since the checkpoint in {}; resume with "
        "the same spec or start a new run directory",
        dir);
  DLSYS_ASSIGN_OR_RETURN(SafetensorsFile f, safetensors_read(dir + "/weights.safetensors"));
  for (const std::string& p : params) {
    auto it = f.tensors.find("param/" + p);
    if (it == f.tensors.end() || it->second.shape() != in.at(p).shape())
      return Status::Invalid("checkpoint {} has no parameter '{}' of shape {}", dir, p,
                             shape_str(in.at(p).shape()));
    std::memcpy(in.at(p).data(), it->second.data(), it->second.nbytes());
  }
  std::map<std::string, Tensor> ostate;
  for (auto& [k, t] : f.tensors)
    if (k.rfind("optim/", 0) == 0) ostate[k.substr(6)] = t;
  opt.load_state(std::move(ostate), state["optimizer_steps"].get<int64_t>());
  Checkpoint c;
  c.step = state["step"];
  c.position = {state["loader"]["epoch"].get<int64_t>(), state["loader"]["batch"].get<int64_t>()};
  return c;
}

}  // namespace

Result<Graph> build_forward_graph(const TrainSpec& spec) {
  Graph g;
  g.name = spec.name;
  g.opset = 17;
  ValueInfo in{"input", DType::kF32, true, {Dim{-1, "batch"}}};
  for (int64_t d : spec.input_shape) in.dims.push_back(Dim{d, ""});
  g.inputs.push_back(in);
  std::mt19937_64 rng(spec.seed);
  std::string cur = "input";
  std::vector<int64_t> shape = spec.input_shape;
  int idx = 0;
  for (const LayerSpec& l : spec.layers) {
    std::string out = fmt::format("layers.{}.out", idx);
    std::string name = fmt::format("layers.{}", idx);
    if (l.type == "linear") {
      if (shape.size() != 1)
        return Status::Invalid(
            "{}:{}: linear needs flat inputs, but its input has shape per "
            "sample [{}]; add a flatten layer before it",
            spec.spec_path, l.line, fmt::join(shape, ", "));
      int64_t fan_in = shape[0];
      Tensor w = Tensor::empty(DType::kF32, {l.out, fan_in});
      Tensor b = Tensor::empty(DType::kF32, {l.out});
      init_linear(&w, &b, fan_in, l.out, spec.init, rng);
      g.initializers[name + ".weight"] = w;
      g.initializers[name + ".bias"] = b;
      g.nodes.push_back({name,
                         "Gemm",
                         "",
                         {cur, name + ".weight", name + ".bias"},
                         {out},
                         {{"transB", Attribute::of_int(1)}}});
      shape = {l.out};
    } else if (l.type == "flatten") {
      g.nodes.push_back({name, "Flatten", "", {cur}, {out}, {{"axis", Attribute::of_int(1)}}});
      int64_t n = 1;
      for (int64_t d : shape) n *= d;
      shape = {n};
    } else {
      std::string op = l.type == "relu" ? "Relu" : l.type == "sigmoid" ? "Sigmoid" : "Tanh";
      g.nodes.push_back({name, op, "", {cur}, {out}, {}});
    }
    cur = out;
    ++idx;
  }
  // The output is called "logits" in the exported model.
  g.nodes.back().outputs[0] = "logits";
  ValueInfo out{"logits", DType::kF32, true, {Dim{-1, "batch"}}};
  for (int64_t d : shape) out.dims.push_back(Dim{d, ""});
  g.outputs.push_back(out);
  return g;
}

Result<TrainResult> train_model(const TrainSpec& spec, const TrainOptions& opt) {
  auto emit = [&](const json& e) {
    if (opt.on_event) opt.on_event(e);
  };
  DLSYS_RETURN_IF_ERROR(make_dirs(opt.out_dir));
  // Data: a version of the dataset store, or a CSV file.
  bool classify = spec.loss == "cross_entropy";
  Dataset train, val;
  std::unique_ptr<Loader> loader;
  std::unique_ptr<data::DatasetStore> store;
  std::string dataset_label, validation_label;
  Shape data_sample_shape;
  if (!spec.dataset.empty()) {
    std::string dir = opt.datasets_dir.empty() ? "datasets" : opt.datasets_dir;
    DLSYS_ASSIGN_OR_RETURN(store, data::DatasetStore::open(dir));
    DLSYS_ASSIGN_OR_RETURN(data::VersionRef tref, data::parse_version_ref(spec.dataset));
    DLSYS_ASSIGN_OR_RETURN(data::VersionRef vref, data::parse_version_ref(spec.dataset_validation));
    data::DatasetLoaderOptions dlo;
    dlo.features = spec.features;
    dlo.label = spec.label;
    dlo.scale = static_cast<float>(spec.feature_scale);
    dlo.batch_size = spec.batch_size;
    dlo.seed = spec.seed;
    auto dl = data::DatasetLoader::open(*store, tref, dlo);
    if (!dl.ok()) return dl.status().with_context("data.dataset");
    data_sample_shape = (*dl)->sample_shape();
    // Validation: the whole split in one batch, in stored order.
    data::DatasetLoaderOptions vo = dlo;
    vo.shuffle = false;
    vo.threads = 1;
    vo.prefetch = 1;
    vo.batch_size = 1 << 30;
    auto vl = data::DatasetLoader::open(*store, vref, vo);
    if (!vl.ok()) return vl.status().with_context("data.validation");
    DLSYS_ASSIGN_OR_RETURN(Batch vb, (*vl)->next());
    val.features = vb.x;
    val.labels = vb.y;
    if (classify && val.labels.dtype() != DType::kI64)
      return Status::Invalid("{}: label column '{}' is not int64; cross_entropy needs class ids",
                             (*vl)->label(), spec.label);
    dataset_label = (*dl)->label();
    validation_label = (*vl)->label();
    loader = std::move(dl).value();
  } else {
    CsvOptions csv;
    csv.label_column = spec.label_column;
    csv.labels_as_classes = classify;
    DLSYS_ASSIGN_OR_RETURN(Dataset all, read_csv(spec.train_path, csv));
    if (!spec.validation_path.empty()) {
      train = all;
      DLSYS_ASSIGN_OR_RETURN(val, read_csv(spec.validation_path, csv));
    } else {
      DLSYS_RETURN_IF_ERROR(split(all, spec.validation_fraction, spec.split_seed, &train, &val));
    }
    for (Dataset* d : {&train, &val})
      if (spec.feature_scale != 1.0)
        for (int64_t i = 0; i < d->features.numel(); ++i)
          d->features.data_as<float>()[i] *= static_cast<float>(spec.feature_scale);
    data_sample_shape = {train.features.dim(1)};
  }
  int64_t per_sample = 1, data_per_sample = 1;
  for (int64_t d : spec.input_shape) per_sample *= d;
  for (int64_t d : data_sample_shape) data_per_sample *= d;
  if (data_per_sample != per_sample)
    return Status::Invalid("the data has {} features per sample but model.input {} needs {}",
                           data_per_sample, fmt::format("[{}]", fmt::join(spec.input_shape, ", ")),
                           per_sample);
  Shape sample_shape = {-1};
  for (int64_t d : spec.input_shape) sample_shape.push_back(d);
  auto reshape_x = [&](Tensor x) {
    Shape s = sample_shape;
    s[0] = x.dim(0);
    return x.view(s);
  };

  // Graphs.
  DLSYS_ASSIGN_OR_RETURN(Graph forward, build_forward_graph(spec));
  LossSpec ls{classify ? LossKind::kSoftmaxCrossEntropy : LossKind::kMeanSquaredError, "logits",
              "target", spec.label_smoothing};
  DLSYS_ASSIGN_OR_RETURN(TrainingGraph tg, build_training_graph(forward, ls, {}));
  SessionOptions so;
  so.threads = opt.threads;
  auto session = Session::from_graph(tg.graph, so);
  std::map<std::string, Tensor> in;
  for (const std::string& p : tg.params) in[p] = forward.initializers.at(p).clone();
  DLSYS_ASSIGN_OR_RETURN(Optimizer optimizer, Optimizer::make(spec.optimizer));
  if (!loader) {
    LoaderOptions lo;
    lo.batch_size = spec.batch_size;
    lo.seed = spec.seed;
    DLSYS_ASSIGN_OR_RETURN(loader, TensorLoader::make(train, lo));
  }
  ScheduleConfig sched = spec.schedule;
  if (sched.total_steps == 0) sched.total_steps = spec.epochs * loader->batches_per_epoch();

  std::string metrics_path = opt.out_dir + "/metrics.jsonl";
  // Overrides given on the command line are part of what must match on resume.
  std::string spec_hash =
      sha256_hex(fmt::format("{}|{}|{}", spec.spec_text, spec.epochs, spec.checkpoint_every));
  Checkpoint start;
  if (opt.resume) {
    DLSYS_ASSIGN_OR_RETURN(start,
                           read_checkpoint(opt.out_dir, spec_hash, tg.params, in, optimizer));
    DLSYS_RETURN_IF_ERROR(loader->seek(start.position));
  }
  std::FILE* metrics = std::fopen(metrics_path.c_str(), opt.resume ? "a" : "w");
  if (!metrics) return Status::IOError("cannot write '{}'", metrics_path);
  auto record = [&](const json& e) {
    std::fprintf(metrics, "%s\n", json_dump_line(e).c_str());
    std::fflush(metrics);
    emit(e);
  };

  // Validation: loss and accuracy over the whole split, in batches.
  auto evaluate = [&](double* loss, double* acc) -> Status {
    double total = 0;
    int64_t correct = 0, n = val.size();
    for (int64_t b = 0; b < n; b += 256) {
      int64_t e = std::min(n, b + 256);
      in["input"] = reshape_x(val.features.slice_rows(b, e));
      in["target"] = val.labels.slice_rows(b, e);
      std::vector<Tensor> out;
      DLSYS_RETURN_IF_ERROR(session->run(in, &out).with_context("validation"));
      total += out[0].data_as<float>()[0] * static_cast<double>(e - b);
      if (classify) {
        const Tensor& logits = out.back();
        int64_t c = logits.dim(1);
        for (int64_t i = 0; i < e - b; ++i)
          correct += argmax_row(logits.data_as<float>() + i * c, c) ==
                     val.labels.data_as<int64_t>()[b + i];
      }
    }
    *loss = total / static_cast<double>(n);
    *acc = classify ? static_cast<double>(correct) / static_cast<double>(n) : 0.0;
    return Status::OK();
  };

  TrainResult res;
  auto t0 = Clock::now();
  int64_t step = start.step;
  std::vector<Tensor*> params;  // the weights the optimizer updates, in gradient order
  for (const std::string& p : tg.params) params.push_back(&in[p]);
  for (int64_t epoch = start.position.epoch; epoch < spec.epochs; ++epoch) {
    double epoch_loss = 0;
    int64_t seen = 0;
    auto te = Clock::now();
    int64_t first_batch = epoch == start.position.epoch ? start.position.batch : 0;
    for (int64_t b = first_batch; b < loader->batches_per_epoch(); ++b, ++step) {
      auto tw = Clock::now();
      DLSYS_ASSIGN_OR_RETURN(Batch batch, loader->next());
      res.data_wait_seconds += std::chrono::duration<double>(Clock::now() - tw).count();
      in["input"] = reshape_x(batch.x);
      in["target"] = batch.y;
      std::vector<Tensor> out;
      DLSYS_RETURN_IF_ERROR(session->run(in, &out).with_context(fmt::format("step {}", step)));
      double loss = out[0].data_as<float>()[0];
      if (!std::isfinite(loss))
        return Status::Invalid(
            "the loss became {} at step {} (epoch {}); lower optimizer.lr or "
            "set train.clip_grad_norm",
            loss, step, epoch + 1);
      // The gradients are used in place: outputs stay valid until the next run.
      std::vector<Tensor*> gp;
      std::vector<const Tensor*> cg;
      for (size_t k = 0; k < tg.params.size(); ++k) {
        gp.push_back(&out[k + 1]);
        cg.push_back(&out[k + 1]);
      }
      if (spec.clip_grad_norm > 0) clip_grad_norm(gp, spec.clip_grad_norm);
      double lr = learning_rate(sched, step);
      DLSYS_RETURN_IF_ERROR(optimizer.step(tg.params, params, cg, lr));
      epoch_loss += loss * static_cast<double>(batch.x.dim(0));
      seen += batch.x.dim(0);
      if (spec.checkpoint_every > 0 && (step + 1) % spec.checkpoint_every == 0)
        DLSYS_RETURN_IF_ERROR(write_checkpoint(opt.out_dir, spec_hash, tg.params, in, optimizer,
                                               {step + 1, loader->position()})
                                  .with_context("checkpoint"));
      if (opt.step_event_every > 0 && step % opt.step_event_every == 0) {
        double secs = std::chrono::duration<double>(Clock::now() - te).count();
        int64_t total_steps = spec.epochs * loader->batches_per_epoch();
        double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
        record({{"event", "step"},
                {"epoch", epoch + 1},
                {"step", step},
                {"total_steps", total_steps},
                {"loss", loss},
                {"lr", lr},
                {"samples_per_s", secs > 0 ? static_cast<double>(seen) / secs : 0.0},
                {"eta_s", step > 0 ? elapsed / static_cast<double>(step) *
                                         static_cast<double>(total_steps - step)
                                   : 0.0}});
      }
    }
    double vl = 0, va = 0;
    DLSYS_RETURN_IF_ERROR(evaluate(&vl, &va));
    res.epochs = epoch + 1;
    res.val_loss = vl;
    res.val_accuracy = va;
    json ev = {{"event", "eval"},
               {"epoch", epoch + 1},
               {"step", step},
               {"train_loss", epoch_loss / static_cast<double>(std::max<int64_t>(1, seen))},
               {"val_loss", vl},
               {"elapsed_s", std::chrono::duration<double>(Clock::now() - t0).count()}};
    if (classify) ev["val_accuracy"] = va;
    record(ev);
    if (spec.target_accuracy > 0 && classify && va >= spec.target_accuracy) break;
  }
  res.steps = step;
  res.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  std::fclose(metrics);
  DLSYS_RETURN_IF_ERROR(
      write_checkpoint(opt.out_dir, spec_hash, tg.params, in, optimizer, {step, loader->position()})
          .with_context("final checkpoint"));

  // Export: the forward graph with the trained weights.
  Graph trained = forward;
  for (const std::string& p : tg.params) trained.initializers[p] = in[p];
  res.model_path = opt.out_dir + "/model.onnx";
  DLSYS_RETURN_IF_ERROR(export_onnx_file(trained, res.model_path).with_context("export"));
  // The validation split, so that the exported model can be checked on exactly these rows.
  DLSYS_RETURN_IF_ERROR(npy_write(opt.out_dir + "/val_x.npy", reshape_x(val.features)));
  DLSYS_RETURN_IF_ERROR(npy_write(opt.out_dir + "/val_y.npy", val.labels));
  DLSYS_RETURN_IF_ERROR(write_file_atomic(opt.out_dir + "/spec.yaml", spec.spec_text));
  json metrics_json = {{"val_loss", res.val_loss}};
  if (classify) metrics_json["val_accuracy"] = res.val_accuracy;
  res.dataset = dataset_label;
  res.validation_dataset = validation_label;
  res.done_event = {{"event", "done"},        {"epochs", res.epochs},    {"steps", res.steps},
                    {"seconds", res.seconds}, {"metrics", metrics_json}, {"model", res.model_path}};
  // Time the steps spent waiting for the loader, against the whole training time.
  res.done_event["data"] = {
      {"wait_s", res.data_wait_seconds},
      {"wait_fraction", res.seconds > 0 ? res.data_wait_seconds / res.seconds : 0}};
  if (!dataset_label.empty()) {
    res.done_event["data"]["dataset"] = dataset_label;
    res.done_event["data"]["validation"] = validation_label;
  }
  emit(res.done_event);
  return res;
}

}  // namespace dlsys::train
