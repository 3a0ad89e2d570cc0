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
  bool plan = false;
  int64_t batch = 1;
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

std::string human_flops(double f) {
  if (f >= 1e9) return fmt::format("{:.3f} GFLOP", f / 1e9);
  if (f >= 1e6) return fmt::format("{:.3f} MFLOP", f / 1e6);
  if (f >= 1e3) return fmt::format("{:.3f} KFLOP", f / 1e3);
  return fmt::format("{:.0f} FLOP", f);
}

std::string layout_str(const PlanStepInfo& st) {
  return st.blocked_output ? "oneDNN" : "plain";
}

// `inspect --plan`: the graph after optimization, the executed steps and the memory plan.
int run_inspect_plan(const InspectArgs& a) {
  auto session = Session::open(a.model);
  if (!session.ok()) return fail(session.status().message());
  Session& s = *session.value();
  auto dims = parse_dims(a.dims);
  if (!dims.ok()) return fail(dims.status().message());
  auto shapes = s.concrete_input_shapes(dims.value(), a.batch);
  if (!shapes.ok()) return fail(shapes.status().message());
  auto planned = s.plan_for_shapes(shapes.value());
  if (!planned.ok()) return fail(planned.status().message());
  const Plan& plan = *planned.value();
  const OptimizeReport& r = s.optimize_report();
  const MemoryPlanStats& m = plan.memory();
  int folded = 0;
  for (const PlannedNode& n : plan.nodes()) folded += n.folded;
  if (a.json) {
    nlohmann::json j;
    j["model"] = a.model;
    j["batch"] = a.batch;
    j["nodes_before"] = r.nodes_before;
    j["nodes_after"] = r.nodes_after;
    for (const PassStats& p : r.passes) j["passes"][p.pass] = p.rewrites;
    j["rewrites"] = r.rewrites;
    j["folded_at_plan_time"] = folded;
    for (const PlanStepInfo& st : plan.steps()) {
      nlohmann::json o = {{"name", st.name}, {"op", st.op}, {"output_layout", layout_str(st)}};
      if (!st.kernel.empty()) o["kernel"] = st.kernel;
      if (st.planned && !st.planned->output_shapes.empty())
        o["output_shape"] = st.planned->output_shapes[0];
      j["steps"].push_back(o);
    }
    j["memory"] = {{"arena_bytes", m.arena_bytes},
                   {"sum_of_intermediates_bytes", m.sum_value_bytes},
                   {"values", m.num_values}};
    j["static_shapes"] = plan.static_shapes();
    j["nodes_planned_at_run_time"] = plan.continuation_nodes();
    std::printf("%s\n", json_dump_line(j).c_str());
    return 0;
  }
  std::printf("model:      %s (planned at batch %lld)\n", a.model.c_str(),
              static_cast<long long>(a.batch));
  std::printf("graph:      %d nodes as given, %d after optimization\n", r.nodes_before,
              r.nodes_after);
  std::printf("passes:\n");
  for (const PassStats& p : r.passes)
    if (p.rewrites) std::printf("  %-32s %d rewrites\n", p.pass.c_str(), p.rewrites);
  std::printf("rewrites:\n");
  for (const std::string& line : r.rewrites) std::printf("  %s\n", line.c_str());
  std::printf("plan:       %zu steps run per call; %d nodes folded while planning\n",
              plan.steps().size(), folded);
  for (const PlanStepInfo& st : plan.steps()) {
    std::string shape = st.planned && !st.planned->output_shapes.empty()
                            ? shape_str(st.planned->output_shapes[0])
                            : "";
    if (st.dynamic_output) shape = "(run time)";
    std::printf("  %-12s %-44s %-20s %-7s %s\n", st.op.c_str(), st.name.substr(0, 44).c_str(),
                shape.c_str(), layout_str(st).c_str(), st.kernel.c_str());
  }
  if (plan.continuation_nodes() > 0)
    std::printf(
        "then:       %zu more nodes, planned when a run gets there (the shapes they see depend "
        "on values computed while running) and cached per shape\n",
        plan.continuation_nodes());
  std::printf(
      "memory:     arena (peak activations) %s for %zu values; one buffer per value "
      "would take %s\n",
      human_bytes(static_cast<double>(m.arena_bytes)).c_str(), m.num_values,
      human_bytes(static_cast<double>(m.sum_value_bytes)).c_str());
  return 0;
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
  if (a.plan) return run_inspect_plan(a);
  SessionOptions opts;
  opts.optimize = false;  // describe the model as given; --plan shows the optimized graph
  auto session = Session::open(a.model, opts);
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
    if (g.converted_from_opset)
      j["converted_from_opset"] = g.converted_from_opset;
    else
      j["converted_from_opset"] = nullptr;
    j["ir_version"] = g.ir_version;
    for (const auto& v : g.inputs)
      j["inputs"].push_back(
          {{"name", v.name}, {"dtype", dtype_name(v.dtype)}, {"shape", dims_json(v)}});
    for (const auto& v : g.outputs)
      j["outputs"].push_back(
          {{"name", v.name}, {"dtype", dtype_name(v.dtype)}, {"shape", dims_json(v)}});
    j["nodes"] = g.nodes.size();
    j["ops"] = info.op_histogram;
    j["subgraph_nodes"] = info.subgraph_nodes;
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
  std::string converted = g.converted_from_opset
                              ? fmt::format(" (converted from opset {})", g.converted_from_opset)
                              : std::string();
  std::printf("producer:   %s, opset %d%s, IR version %lld\n",
              g.producer.empty() ? "unknown" : g.producer.c_str(), g.opset, converted.c_str(),
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
  if (info.subgraph_nodes > 0)
    std::printf("ops:        %zu nodes, and %d more inside If/Loop/Scan subgraphs\n",
                g.nodes.size(), info.subgraph_nodes);
  else
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
  sub->add_flag("--plan", a->plan,
                "Show the graph after optimization (fused and removed nodes), the executed steps "
                "with their layouts, and the memory plan");
  sub->add_option("--batch,-b", a->batch, "Batch size the --plan view is built for (default 1)")
      ->check(CLI::PositiveNumber);
  sub->callback([a, rc] { *rc = run_inspect(*a); });
}

}  // namespace dlsys::cli
