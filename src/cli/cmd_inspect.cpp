// `dlsys inspect MODEL.onnx [--json]`: inputs, outputs, op histogram, parameters, FLOPs.
#include <nlohmann/json.hpp>

#include <cstdio>

#include "cli/commands.h"
#include "core/json_util.h"
#include "graph/model_info.h"
#include "graph/session.h"
#include "ops/op_registry.h"

namespace dlsys::cli {
namespace {

struct InspectArgs {
  std::string model;
  bool json = false;
  bool ops = false;
  std::vector<std::string> dims;
};

nlohmann::json dims_json(const ValueInfo& v) {
  nlohmann::json a = nlohmann::json::array();
  for (const Dim& d : v.dims) {
    if (d.fixed())
      a.push_back(d.value);
    else
      a.push_back(d.param.empty() ? "?" : d.param);
  }
  return a;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB"};
  int u = 0;
  while (b >= 1024 && u < 3) {
    b /= 1024;
    ++u;
  }
  return fmt::format("{:.1f} {}", b, units[u]);
}

std::string human_flops(double f) {
  if (f >= 1e9) return fmt::format("{:.3f} GFLOP", f / 1e9);
  if (f >= 1e6) return fmt::format("{:.3f} MFLOP", f / 1e6);
  if (f >= 1e3) return fmt::format("{:.3f} KFLOP", f / 1e3);
  return fmt::format("{:.0f} FLOP", f);
}

int run_inspect(const InspectArgs& a) {
  if (a.ops) {
    auto ops = supported_ops();
    if (a.json) {
      std::printf("%s\n", json_dump_line(nlohmann::json(ops)).c_str());
    } else {
      std::printf("%zu supported ops (default ONNX domain, opsets %d-%d):\n", ops.size(), kMinOpset,
                  kMaxOpset);
      for (auto& o : ops) std::printf("  %s\n", o.c_str());
    }
    return 0;
  }
  if (a.model.empty()) return fail("give a model: dlsys inspect MODEL.onnx (or --ops)");
  auto session = Session::open(a.model);
  if (!session.ok()) return fail(session.status().message());
  Session& s = *session.value();
  const Graph& g = s.graph();
  const Plan* plan = nullptr;
  std::string plan_error;
  auto dims = parse_dims(a.dims);
  if (!dims.ok()) return fail(dims.status().message());
  auto shapes = s.concrete_input_shapes(dims.value(), 1);
  if (shapes.ok()) {
    auto p = s.plan_for_shapes(shapes.value());
    if (p.ok())
      plan = p.value();
    else
      plan_error = p.status().message();
  } else {
    plan_error = shapes.status().message();
  }
  ModelInfo info = model_info(g, plan);
  if (a.json) {
    nlohmann::json j;
    j["model"] = a.model;
    j["producer"] = g.producer;
    j["opset"] = g.opset;
    j["ir_version"] = g.ir_version;
    for (const auto& v : g.inputs)
      j["inputs"].push_back(
          {{"name", v.name}, {"dtype", dtype_name(v.dtype)}, {"shape", dims_json(v)}});
    for (const auto& v : g.outputs)
      j["outputs"].push_back(
          {{"name", v.name}, {"dtype", dtype_name(v.dtype)}, {"shape", dims_json(v)}});
    j["nodes"] = g.nodes.size();
    j["ops"] = info.op_histogram;
    j["parameters"] = info.parameters;
    j["parameter_bytes"] = info.parameter_bytes;
    if (plan)
      j["flops_per_sample"] = info.flops_per_sample;
    else
      j["flops_per_sample"] = nullptr, j["flops_error"] = plan_error;
    std::printf("%s\n", json_dump_line(j).c_str());
    return 0;
  }
  std::printf("model:      %s\n", a.model.c_str());
  std::printf("producer:   %s, opset %d, IR version %lld\n",
              g.producer.empty() ? "unknown" : g.producer.c_str(), g.opset,
              static_cast<long long>(g.ir_version));
  std::printf("inputs:\n");
  for (const auto& v : g.inputs)
    std::printf("  %-24s %-5s %s\n", v.name.c_str(), dtype_name(v.dtype), dims_str(v).c_str());
  std::printf("outputs:\n");
  for (const auto& v : g.outputs)
    std::printf("  %-24s %-5s %s\n", v.name.c_str(), dtype_name(v.dtype), dims_str(v).c_str());
  std::printf("parameters: %lld (%s)\n", static_cast<long long>(info.parameters),
              human_bytes(static_cast<double>(info.parameter_bytes)).c_str());
  if (plan)
    std::printf("FLOPs:      %s per sample (estimated at batch 1)\n",
                human_flops(info.flops_per_sample).c_str());
  else
    std::printf("FLOPs:      unknown (%s)\n", plan_error.c_str());
  std::printf("ops:        %zu nodes\n", g.nodes.size());
  std::vector<std::pair<int, std::string>> hist;
  for (auto& [op, n] : info.op_histogram) hist.push_back({-n, op});
  std::sort(hist.begin(), hist.end());
  for (auto& [n, op] : hist) std::printf("  %-24s %d\n", op.c_str(), -n);
  return 0;
}

}  // namespace

void add_inspect(CLI::App& app, int* rc) {
  auto a = std::make_shared<InspectArgs>();
  CLI::App* sub =
      app.add_subcommand("inspect", "Show a model's inputs, outputs, ops, parameters and FLOPs");
  sub->add_option("model", a->model, "ONNX model file");
  sub->add_flag("--json", a->json, "Print one JSON object");
  sub->add_flag("--ops", a->ops, "List the ops dlsys supports");
  sub->add_option("--dim", a->dims,
                  "NAME=VALUE for a symbolic dimension other than the batch (e.g. seq=128)");
  sub->callback([a, rc] { *rc = run_inspect(*a); });
}

}  // namespace dlsys::cli
