// `dlsys quantize MODEL.onnx --calibrate DATA.npy [--method minmax|percentile] -o OUT.onnx`:
// post-training int8 quantization to a QDQ ONNX model, then an accuracy report against the
// float model on the calibration inputs (or --eval inputs).
#include <unistd.h>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/engine_options.h"
#include "graph/quantize/quantize.h"
#include "tensor/npy.h"

namespace dlsys::cli {
namespace {

struct QuantizeArgs {
  EngineOptions engine;  // model, --batch (default 8 here), --threads, --json
  std::string calibrate, eval, output, method = "minmax";
  double percentile = 99.99;
  bool dynamic = false;
  QuantizeArgs() { engine.batch = 8; }
};

void show_progress(int64_t done, int64_t total) {
  if (!isatty(STDERR_FILENO)) return;
  int width = 30, fill = static_cast<int>(width * done / std::max<int64_t>(1, total));
  std::fprintf(stderr, "\rcalibrating [%s%s] %lld/%lld batches", std::string(fill, '#').c_str(),
               std::string(width - fill, '.').c_str(), static_cast<long long>(done),
               static_cast<long long>(total));
  if (done == total) std::fprintf(stderr, "\n");
}

int run_quantize(const QuantizeArgs& a) {
  const EngineOptions& e = a.engine;
  QuantizeOptions o;
  o.dynamic = a.dynamic;
  o.batch = e.batch;
  o.threads = e.threads;
  o.percentile = a.percentile;
  if (a.method == "minmax") {
    o.method = CalibrationMethod::kMinMax;
  } else if (a.method == "percentile") {
    o.method = CalibrationMethod::kPercentile;
    if (!(a.percentile > 50 && a.percentile <= 100))
      return fail(fmt::format("--percentile {} must be in (50, 100]", a.percentile));
  } else {
    return fail(fmt::format("--method '{}' is not one of minmax, percentile", a.method));
  }
  if (!a.dynamic && a.calibrate.empty())
    return fail(
        "static quantization needs sample inputs: --calibrate DATA.npy (a few hundred samples "
        "along axis 0), or --dynamic for weight-only MatMul quantization");
  Tensor calib, eval;
  if (!a.calibrate.empty()) {
    auto t = npy_read(a.calibrate);
    if (!t.ok()) return fail(t.status().message());
    calib = std::move(t).value();
  }
  if (!a.eval.empty()) {
    auto t = npy_read(a.eval);
    if (!t.ok()) return fail(t.status().message());
    eval = std::move(t).value();
  } else {
    eval = calib;
  }
  auto rep = quantize_model(e.model, calib, a.output, o, e.json ? nullptr : show_progress);
  if (!rep.ok()) return fail(rep.status().message());
  const QuantizeReport& r = rep.value();
  AgreementReport acc;
  bool have_acc = eval.valid() && eval.data() && eval.rank() >= 1;
  if (have_acc) {
    auto c = compare_models(e.model, a.output, eval, e.batch, e.threads);
    if (!c.ok()) return fail(c.status().with_context("accuracy check").message());
    acc = c.value();
  }
  if (e.json) {
    nlohmann::json j = {{"model", e.model},
                        {"output", a.output},
                        {"mode", a.dynamic ? "dynamic" : "static"},
                        {"method", a.method},
                        {"weights_quantized", r.weights_quantized},
                        {"activations_quantized", r.activations_quantized},
                        {"calibration_samples", r.calibration_samples},
                        {"bytes_before", r.bytes_before},
                        {"bytes_after", r.bytes_after}};
    if (have_acc)
      j["accuracy"] = {{"samples", acc.samples},
                       {"top1_agreement", acc.top1_agreement},
                       {"max_rel_error", acc.max_rel_error}};
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::printf("quantized %s -> %s (%s, %s)\n", e.model.c_str(), a.output.c_str(),
              a.dynamic ? "dynamic" : "static", a.method.c_str());
  std::printf("  weights:     %d tensors int8 per-channel\n", r.weights_quantized);
  std::printf("  activations: %d tensors calibrated on %lld samples\n", r.activations_quantized,
              static_cast<long long>(r.calibration_samples));
  std::printf("  size:        %.1f MiB -> %.1f MiB\n", r.bytes_before / 1048576.0,
              r.bytes_after / 1048576.0);
  if (have_acc)
    std::printf(
        "  accuracy vs fp32 on %lld samples: top-1 agreement %.2f%%, max relative error "
        "of outputs %.3g\n",
        static_cast<long long>(acc.samples), 100 * acc.top1_agreement, acc.max_rel_error);
  return 0;
}

}  // namespace

void add_quantize(CLI::App& app, int* rc) {
  auto a = std::make_shared<QuantizeArgs>();
  CLI::App* sub = app.add_subcommand(
      "quantize",
      "Post-training int8 quantization to a QDQ ONNX model (runs on dlsys's int8 kernels and on "
      "any ONNX runtime), with an accuracy report against the float model");
  add_model_arg(sub, &a->engine, "float ONNX model");
  sub->add_option("--calibrate", a->calibrate,
                  "sample inputs (.npy, samples along axis 0) for static activation ranges");
  sub->add_option("--method", a->method, "calibration: minmax (default) or percentile");
  sub->add_option("--percentile", a->percentile,
                  "with --method percentile: share of |values| the range covers (default 99.99)");
  sub->add_flag("--dynamic", a->dynamic,
                "weight-only for MatMul/Gemm; activations quantized per batch at run time");
  sub->add_option("--eval", a->eval,
                  "inputs (.npy) for the accuracy report (default: the calibration inputs)");
  sub->add_option("--output,-o", a->output, "where to write the QDQ model")->required();
  add_batch_option(sub, &a->engine, "calibration batch size (default 8)", "--batch");
  add_threads_option(sub, &a->engine);
  add_json_flag(sub, &a->engine, "print one JSON object");
  sub->callback([a, rc] { *rc = run_quantize(*a); });
}

}  // namespace dlsys::cli
