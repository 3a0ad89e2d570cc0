#include "cli/engine_options.h"

namespace dlsys::cli {

CLI::Option* add_model_arg(CLI::App* sub, EngineOptions* o, const std::string& help) {
  return sub->add_option("model", o->model, help)->required();
}

CLI::Option* add_threads_option(CLI::App* sub, EngineOptions* o) {
  return sub->add_option("--threads", o->threads, "Threads (default: all cores)")
      ->check(CLI::NonNegativeNumber);
}

CLI::Option* add_precision_option(CLI::App* sub, EngineOptions* o, const std::string& help) {
  return sub->add_option("--precision", o->precision, help);
}

CLI::Option* add_batch_option(CLI::App* sub, EngineOptions* o, const std::string& help,
                              const std::string& names) {
  return sub->add_option(names, o->batch, help)->check(CLI::PositiveNumber);
}

CLI::Option* add_dim_option(CLI::App* sub, EngineOptions* o, const std::string& help) {
  return sub->add_option("--dim", o->dims, help);
}

CLI::Option* add_input_option(CLI::App* sub, EngineOptions* o, const std::string& help) {
  return sub->add_option("--input,-i", o->inputs, help);
}

CLI::Option* add_json_flag(CLI::App* sub, EngineOptions* o, const std::string& help) {
  return sub->add_flag("--json", o->json, help);
}

CLI::Option* add_no_optimize_flag(CLI::App* sub, EngineOptions* o) {
  return sub->add_flag(
      "--no-optimize", o->no_optimize,
      "Skip the graph optimization passes (fusion, folding) to measure their effect");
}

Result<SessionOptions> session_options(const EngineOptions& o) {
  SessionOptions opts;
  opts.threads = o.threads;
  if (o.precision == "fp32" || o.precision == "f32")
    opts.precision = Precision::kF32;
  else if (o.precision == "bf16")
    opts.precision = Precision::kBF16;
  else
    return Status::Invalid("--precision '{}' is not one of fp32, bf16", o.precision);
  opts.optimize = !o.no_optimize;
  return opts;
}

Result<std::unique_ptr<Session>> open_session(const EngineOptions& o) {
  auto opts = session_options(o);
  if (!opts.ok()) return opts.status();
  return Session::open(o.model, opts.value());
}

}  // namespace dlsys::cli
