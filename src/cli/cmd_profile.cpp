// `dlsys profile MODEL.onnx --batch B`: per-step time, GFLOP/s and the fraction of this
// machine's measured peak, with a roofline verdict (compute- or memory-bound) per step.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>

#include "bench/roofline.h"
#include "cli/commands.h"
#include "cli/engine_options.h"
#include "cli/inputs.h"
#include "core/json_util.h"
#include "graph/model_info.h"
#include "graph/session.h"

namespace dlsys::cli {
namespace {

struct ProfileArgs {
  EngineOptions engine;
  int runs = 20;
};

struct StepRow {
  std::string op, name, kernel;
  double ms = 0, flops = 0, bytes = 0;
  double gflops() const { return ms > 0 ? flops / (ms * 1e6) : 0; }
  double intensity() const { return bytes > 0 ? flops / bytes : 0; }
};

int run_profile(const ProfileArgs& args) {
  const EngineOptions& a = args.engine;
  auto session = open_session(a);
  if (!session.ok()) return fail(session.status().message());
  Session& s = *session.value();
  s.apply_threads();
  auto named = make_inputs(s, a.inputs, a.dims, a.batch);
  if (!named.ok()) return fail(named.status().message());
  auto bound = s.bind_inputs(named.value());
  if (!bound.ok()) return fail(bound.status().message());
  auto planned = s.plan_for(bound.value());
  if (!planned.ok()) return fail(planned.status().message());
  Plan& plan = *planned.value();
  if (!a.json) std::fprintf(stderr, "measuring this machine's peak (oneDNN matmul, copy)...\n");
  MachinePeak peak = measure_peak();
  if (!a.json) std::fprintf(stderr, "profiling %d runs...\n", args.runs);
  std::vector<Tensor> outputs;
  std::vector<int64_t> ns;
  for (int i = 0; i < 3; ++i) {
    Status st = plan.run(bound.value(), &outputs);
    if (!st.ok()) return fail(st.message());
  }
  size_t nsteps = plan.steps().size();
  std::vector<std::vector<int64_t>> samples(nsteps);
  for (int r = 0; r < args.runs; ++r) {
    Status st = plan.run(bound.value(), &outputs, &ns);
    if (!st.ok()) return fail(st.message());
    for (size_t k = 0; k < nsteps; ++k) samples[k].push_back(ns[k]);
  }
  std::vector<StepRow> rows(nsteps);
  double total_ms = 0, total_flops = 0;
  for (size_t k = 0; k < nsteps; ++k) {
    const PlanStepInfo& info = plan.steps()[k];
    std::vector<int64_t>& v = samples[k];
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    StepRow& row = rows[k];
    row.op = info.op;
    row.name = info.name;
    row.kernel = info.kernel;
    row.ms = static_cast<double>(v[v.size() / 2]) / 1e6;
    row.flops = info.planned ? node_flops(*info.planned) : 0;
    row.bytes = static_cast<double>(info.bytes_in + info.bytes_out);
    total_ms += row.ms;
    total_flops += row.flops;
  }
  bool bf16 = s.options().precision == Precision::kBF16;
  auto peak_for = [&](const std::string& op) {
    bool heavy = op.find("Conv") != std::string::npos || op.find("MatMul") != std::string::npos ||
                 op.find("Gemm") != std::string::npos || op.find("Attention") != std::string::npos;
    bool int8 = op == "QConv" || op == "QMatMul" || op == "QMatMulDynamic" || op == "ConvInteger" ||
                op == "QLinearConv" || op == "MatMulInteger" || op == "QLinearMatMul";
    if (int8 && peak.int8_gops > 0) return peak.int8_gops;
    return bf16 && heavy ? peak.bf16_gflops : peak.f32_gflops;
  };
  auto verdict = [&](const StepRow& r) {
    double p = peak_for(r.op);
    double ridge = peak.mem_gbps > 0 ? p / peak.mem_gbps : 0;
    return r.intensity() >= ridge ? "compute" : "memory";
  };
  std::vector<std::pair<std::string, StepRow>> by_op;
  for (const StepRow& r : rows) {
    auto it = std::find_if(by_op.begin(), by_op.end(), [&](auto& p) { return p.first == r.op; });
    if (it == by_op.end()) {
      by_op.push_back({r.op, r});
      by_op.back().second.name = "1";
    } else {
      it->second.ms += r.ms;
      it->second.flops += r.flops;
      it->second.bytes += r.bytes;
      it->second.name = std::to_string(std::stoi(it->second.name) + 1);
    }
  }
  std::sort(by_op.begin(), by_op.end(), [](auto& x, auto& y) { return x.second.ms > y.second.ms; });
  if (a.json) {
    nlohmann::json j;
    j["model"] = a.model;
    j["batch"] = a.batch;
    j["precision"] = a.precision;
    j["peak"] = {{"isa", peak.isa},
                 {"f32_gflops", peak.f32_gflops},
                 {"bf16_gflops", peak.bf16_gflops},
                 {"int8_gops", peak.int8_gops},
                 {"mem_gbps", peak.mem_gbps}};
    j["total_ms"] = total_ms;
    for (const StepRow& r : rows)
      j["steps"].push_back({{"op", r.op},
                            {"name", r.name},
                            {"ms", r.ms},
                            {"gflops", r.gflops()},
                            {"fraction_of_peak", r.gflops() / std::max(1e-9, peak_for(r.op))},
                            {"flop_per_byte", r.intensity()},
                            {"bound", verdict(r)},
                            {"kernel", r.kernel}});
    for (auto& [op, r] : by_op)
      j["ops"][op] = {{"count", std::stoi(r.name)}, {"ms", r.ms}, {"gflops", r.gflops()}};
    std::printf("%s\n", json_dump_line(j).c_str());
    return 0;
  }
  std::printf(
      "machine: oneDNN isa %s; peak f32 %.0f GFLOP/s, bf16 %s, int8 %.0f GOP/s, memory "
      "%.1f GB/s (ridge %.1f FLOP/byte at f32)\n",
      peak.isa.c_str(), peak.f32_gflops,
      peak.bf16_gflops > 0 ? fmt::format("{:.0f} GFLOP/s", peak.bf16_gflops).c_str()
                           : "unavailable",
      peak.int8_gops, peak.mem_gbps, peak.ridge_f32());
  std::printf(
      "model:   %s, batch %lld, %s, %d runs; total %.3f ms per batch (sum of step "
      "medians), %.2f GFLOP/s overall\n\n",
      a.model.c_str(), static_cast<long long>(a.batch), a.precision.c_str(), args.runs, total_ms,
      total_flops / (total_ms * 1e6));
  std::printf("%-4s %-18s %-40s %9s %6s %9s %7s %8s %-8s %s\n", "#", "op", "name", "ms", "%time",
              "GFLOP/s", "%peak", "FLOP/B", "bound", "kernel");
  for (size_t k = 0; k < rows.size(); ++k) {
    const StepRow& r = rows[k];
    std::string name = r.name.size() > 40 ? "..." + r.name.substr(r.name.size() - 37) : r.name;
    std::printf("%-4zu %-18s %-40s %9.3f %5.1f%% %9.1f %6.1f%% %8.2f %-8s %s\n", k, r.op.c_str(),
                name.c_str(), r.ms, 100 * r.ms / total_ms, r.gflops(),
                100 * r.gflops() / std::max(1e-9, peak_for(r.op)), r.intensity(), verdict(r),
                r.kernel.c_str());
  }
  bool wino = std::any_of(rows.begin(), rows.end(), [](const StepRow& r) {
    return r.kernel.find("wino") != std::string::npos;
  });
  if (wino)
    std::printf(
        "\nWinograd kernels (wino) do fewer multiplications than a direct convolution; GFLOP/s and "
        "%%peak count the direct convolution's, so they can exceed 100%%.\n");
  std::printf("\nby op type:\n%-18s %5s %9s %6s %9s %7s\n", "op", "count", "ms", "%time", "GFLOP/s",
              "%peak");
  for (auto& [op, r] : by_op)
    std::printf("%-18s %5s %9.3f %5.1f%% %9.1f %6.1f%%\n", op.c_str(), r.name.c_str(), r.ms,
                100 * r.ms / total_ms, r.gflops(), 100 * r.gflops() / std::max(1e-9, peak_for(op)));
  return 0;
}

}  // namespace

void add_profile(CLI::App& app, int* rc) {
  auto a = std::make_shared<ProfileArgs>();
  CLI::App* sub = app.add_subcommand(
      "profile",
      "Time each step of a model's plan: ms, GFLOP/s, fraction of this machine's measured peak, "
      "and whether it is compute- or memory-bound");
  EngineOptions* e = &a->engine;
  add_model_arg(sub, e);
  add_batch_option(sub, e, "Batch size (default 1)");
  add_threads_option(sub, e);
  sub->add_option("--runs", a->runs, "Timed runs; each step's median is shown (default 20)")
      ->check(CLI::PositiveNumber);
  add_precision_option(sub, e, "fp32 (default) or bf16");
  add_dim_option(sub, e, "NAME=VALUE for a symbolic dimension (e.g. seq=128)");
  add_input_option(sub, e, "NAME=FILE.npy to profile on given data");
  add_json_flag(sub, e);
  sub->callback([a, rc] { *rc = run_profile(*a); });
}

}  // namespace dlsys::cli
