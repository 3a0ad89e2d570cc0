// `dlsys bench MODEL.onnx --batch B [--threads N] [--json]`: warm-up, then latency per batch
// (median, p90) and items/s over a few seconds, on generated inputs.
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

#include "cli/commands.h"
#include "core/json_util.h"
#include "graph/session.h"
#include "tensor/npy.h"

namespace dlsys::cli {
namespace {

struct BenchArgs {
  std::string model;
  int64_t batch = 1;
  int threads = 0;
  bool json = false;
  double seconds = 3.0;
  std::vector<std::string> dims;
  std::vector<std::string> inputs;
};

using Clock = std::chrono::steady_clock;

int run_bench(const BenchArgs& a) {
  auto session = Session::open(a.model, SessionOptions{a.threads});
  if (!session.ok()) return fail(session.status().message());
  Session& s = *session.value();
  std::map<std::string, Tensor> named;
  for (const std::string& spec : a.inputs) {
    size_t eq = spec.find('=');
    if (eq == std::string::npos)
      return fail(fmt::format("--input '{}' needs the form NAME=FILE.npy", spec));
    std::string name = spec.substr(0, eq);
    bool known = false;
    for (const ValueInfo& v : s.graph().inputs) known = known || v.name == name;
    if (!known) return fail(fmt::format("the model has no input '{}'", name));
    auto t = npy_read(spec.substr(eq + 1));
    if (!t.ok()) return fail(t.status().message());
    named[name] = std::move(t).value();
  }
  if (named.size() < s.graph().inputs.size()) {
    // Generate the inputs not given: normal floats, small integers (valid token ids).
    auto dims = parse_dims(a.dims);
    if (!dims.ok()) return fail(dims.status().message());
    auto shapes = s.concrete_input_shapes(dims.value(), a.batch);
    if (!shapes.ok()) return fail(shapes.status().message());
    std::mt19937 rng(42);
    std::normal_distribution<float> normal(0.f, 1.f);
    for (size_t k = 0; k < s.graph().inputs.size(); ++k) {
      const ValueInfo& v = s.graph().inputs[k];
      if (named.count(v.name)) continue;
      Tensor t = Tensor::zeros(v.dtype, shapes.value()[k]);
      for (int64_t i = 0; i < t.numel(); ++i) {
        switch (v.dtype) {
          case DType::kF32:
            t.data_as<float>()[i] = normal(rng);
            break;
          case DType::kI64:
            t.data_as<int64_t>()[i] = static_cast<int64_t>(rng() % 8);
            break;
          case DType::kI32:
            t.data_as<int32_t>()[i] = static_cast<int32_t>(rng() % 8);
            break;
          default:
            break;
        }
      }
      named[v.name] = t;
    }
  }
  int64_t batch = named.begin()->second.rank() ? named.begin()->second.dim(0) : 1;
  bool tty = !a.json && isatty(STDERR_FILENO);
  if (tty) std::fprintf(stderr, "warming up (building the plan)...\n");
  std::vector<Tensor> outputs;
  auto t0 = Clock::now();
  Status st = s.run(named, &outputs);
  if (!st.ok()) return fail(st.message());
  double plan_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  auto warm_end = Clock::now() + std::chrono::milliseconds(300);
  int warm = 0;
  while (warm < 3 || Clock::now() < warm_end) {
    st = s.run(named, &outputs);
    if (!st.ok()) return fail(st.message());
    ++warm;
  }
  if (tty) std::fprintf(stderr, "measuring for %.1f s...\n", a.seconds);
  std::vector<double> lat;
  lat.reserve(100000);
  auto start = Clock::now();
  auto end = start + std::chrono::duration<double>(a.seconds);
  while (lat.size() < 5 || Clock::now() < end) {
    auto r0 = Clock::now();
    st = s.run(named, &outputs);
    auto r1 = Clock::now();
    if (!st.ok()) return fail(st.message());
    lat.push_back(std::chrono::duration<double, std::milli>(r1 - r0).count());
  }
  double total_s = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> sorted = lat;
  std::sort(sorted.begin(), sorted.end());
  auto pct = [&](double q) {
    return sorted[std::min(sorted.size() - 1, static_cast<size_t>(q * (sorted.size() - 1) + 0.5))];
  };
  double median = pct(0.5), p90 = pct(0.9);
  double items_per_s = static_cast<double>(batch) * static_cast<double>(lat.size()) / total_s;
  if (a.json) {
    nlohmann::json j = {{"model", a.model},    {"batch", batch},     {"threads", a.threads},
                        {"median_ms", median}, {"p90_ms", p90},      {"items_per_s", items_per_s},
                        {"runs", lat.size()},  {"seconds", total_s}, {"first_run_ms", plan_ms}};
    std::printf("%s\n", json_dump_line(j).c_str());
  } else {
    std::printf("model:      %s\n", a.model.c_str());
    std::printf("batch:      %lld, threads: %s\n", static_cast<long long>(a.batch),
                a.threads ? std::to_string(a.threads).c_str() : "all");
    std::printf("first run:  %.2f ms (plan build + run)\n", plan_ms);
    std::printf("latency:    median %.3f ms, p90 %.3f ms per batch (%zu runs in %.1f s)\n", median,
                p90, lat.size(), total_s);
    std::printf("throughput: %.1f items/s\n", items_per_s);
  }
  return 0;
}

}  // namespace

void add_bench(CLI::App& app, int* rc) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* sub =
      app.add_subcommand("bench", "Measure a model's latency and throughput on generated inputs");
  sub->add_option("model", a->model, "ONNX model file")->required();
  sub->add_option("--batch,-b", a->batch, "Batch size (the first dimension of each input)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--threads", a->threads, "Threads (default: all cores)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--seconds", a->seconds, "How long to measure (default 3)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--dim", a->dims,
                  "NAME=VALUE for a symbolic dimension other than the batch (e.g. seq=128)");
  sub->add_option("--input,-i", a->inputs,
                  "NAME=FILE.npy to measure on given data (its first dimension is the batch)");
  sub->add_flag("--json", a->json, "Print one JSON object");
  sub->callback([a, rc] { *rc = run_bench(*a); });
}

}  // namespace dlsys::cli
