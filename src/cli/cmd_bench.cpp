// `dlsys bench MODEL.onnx --batch B [--threads N] [--json]`: warm-up, then latency per batch
// (median, p90) and items/s over a few seconds, on generated inputs. `dlsys bench serve ...`
// (cmd_bench_serve.cpp) is its subcommand: the serving load generator.
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "cli/commands.h"
#include "cli/engine_options.h"
#include "cli/inputs.h"
#include "core/json_util.h"
#include "graph/session.h"
#include "graph/thread_tuner.h"

namespace dlsys::cli {
namespace {

struct BenchArgs {
  EngineOptions engine;
  double seconds = 3.0;
};

using Clock = std::chrono::steady_clock;

int run_bench(const BenchArgs& args) {
  const EngineOptions& a = args.engine;
  auto session = open_session(a);
  if (!session.ok()) return fail(session.status().message());
  Session& s = *session.value();
  std::map<std::string, Tensor> named;
  {
    auto made = make_inputs(s, a.inputs, a.dims, a.batch);
    if (!made.ok()) return fail(made.status().message());
    named = std::move(made).value();
  }
  int64_t batch = named.begin()->second.rank() ? named.begin()->second.dim(0) : 1;
  bool tty = !a.json && isatty(STDERR_FILENO);
  if (tty) std::fprintf(stderr, "warming up (building the plan)...\n");
  std::vector<Tensor> outputs;
  auto t0 = Clock::now();
  Status st = s.run(named, &outputs);
  if (!st.ok()) return fail(st.message());
  double plan_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  // Warm-up: 300 ms and 3 runs, then on until the plan's thread tuner has chosen its count
  // (graph/thread_tuner.h: 3 runs per candidate), at most 5 s: the figures are steady-state.
  std::vector<Tensor> bound;
  for (const ValueInfo& v : s.graph().inputs)
    if (named.count(v.name)) bound.push_back(named.at(v.name));
  auto tuned_now = [&] {
    auto plan = s.plan_for(bound);
    return plan.ok() ? plan.value()->tuned_threads() : 0;
  };
  auto warm_end = Clock::now() + std::chrono::milliseconds(300);
  auto tune_end = Clock::now() + std::chrono::seconds(5);
  int warm = 0;
  while (warm < 3 || Clock::now() < warm_end ||
         (tuned_now() == 0 && warm < 3 + 4 * ThreadTuner::kTrials && Clock::now() < tune_end)) {
    st = s.run(named, &outputs);
    if (!st.ok()) return fail(st.message());
    ++warm;
  }
  if (tty) std::fprintf(stderr, "measuring for %.1f s...\n", args.seconds);
  std::vector<double> lat;
  lat.reserve(100000);
  auto start = Clock::now();
  auto end = start + std::chrono::duration<double>(args.seconds);
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
  // The thread count the plan's tuner settled on (0: still trying, or off).
  int tuned = tuned_now();
  double items_per_s = static_cast<double>(batch) * static_cast<double>(lat.size()) / total_s;
  if (a.json) {
    nlohmann::json j = {
        {"model", a.model},           {"batch", batch},           {"threads", a.threads},
        {"tuned_threads", tuned},     {"median_ms", median},      {"p90_ms", p90},
        {"items_per_s", items_per_s}, {"runs", lat.size()},       {"seconds", total_s},
        {"first_run_ms", plan_ms},    {"precision", a.precision}, {"optimized", !a.no_optimize}};
    std::printf("%s\n", json_dump_line(j).c_str());
  } else {
    std::printf("model:      %s\n", a.model.c_str());
    std::printf("batch:      %lld, threads: %s, precision: %s%s\n", static_cast<long long>(a.batch),
                a.threads ? std::to_string(a.threads).c_str() : "all", a.precision.c_str(),
                a.no_optimize ? ", graph optimizations off" : "");
    if (tuned > 0) std::printf("tuned:      the plan settled on %d thread(s)\n", tuned);
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
  CLI::App* sub = app.add_subcommand(
      "bench",
      "Measure a model's latency and throughput on generated inputs (`dlsys bench serve`: "
      "load-test a served model)");
  EngineOptions* e = &a->engine;
  // Required unless the `serve` subcommand is given (checked in the callback): CLI11 takes a
  // word that names a subcommand as the subcommand, any other as MODEL.
  add_model_arg(sub, e)->required(false);
  add_batch_option(sub, e, "Batch size (the first dimension of each input)");
  add_threads_option(sub, e);
  sub->add_option("--seconds", a->seconds, "How long to measure (default 3)")
      ->check(CLI::PositiveNumber);
  add_dim_option(sub, e, "NAME=VALUE for a symbolic dimension other than the batch (e.g. seq=128)");
  add_input_option(sub, e,
                   "NAME=FILE.npy to measure on given data (its first dimension is the batch)");
  add_json_flag(sub, e);
  add_precision_option(sub, e);
  add_no_optimize_flag(sub, e);
  add_bench_serve(*sub, rc);
  sub->callback([a, rc, sub] {
    if (sub->got_subcommand("serve")) return;  // its own callback ran
    if (a->engine.model.empty()) {
      *rc = fail(
          "bench needs MODEL.onnx (or `dlsys bench serve --model NAME ...` for a served "
          "model); see `dlsys bench --help`");
      return;
    }
    *rc = run_bench(*a);
  });
}

}  // namespace dlsys::cli
