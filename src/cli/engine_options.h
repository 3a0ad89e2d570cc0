// The options the engine commands (run, bench, profile, quantize) share, and the prologue that
// opens the model with them. A command keeps its options in one EngineOptions and adds each
// shared option with one call, in the order its --help lists them (the order differs between
// commands, so there is one adder per option rather than one for all); the help texts are
// here, and a command passes its own only where it says more than the shared text.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "graph/session.h"

namespace dlsys::cli {

struct EngineOptions {
  std::string model;                // the positional model path
  int threads = 0;                  // --threads; 0: all cores
  std::string precision = "fp32";   // --precision fp32|f32|bf16
  bool no_optimize = false;         // --no-optimize: skip the graph rewrite passes
  int64_t batch = 1;                // --batch (set another default before adding it)
  std::vector<std::string> dims;    // --dim NAME=VALUE
  std::vector<std::string> inputs;  // --input NAME=FILE.npy
  bool json = false;                // --json
};

// The help text of --precision where a command says no more.
inline constexpr const char* kPrecisionHelp =
    "fp32 (default) or bf16: matmul/conv in bf16 on AMX, fp32 elsewhere";

// Each adds one option to `sub`, stored in `*o` (which must outlive `sub`'s parsing and
// callback), and returns it so the caller can refine it (->required()).
// The positional model path, required.
CLI::Option* add_model_arg(CLI::App* sub, EngineOptions* o,
                           const std::string& help = "ONNX model file");
// --threads N (N >= 0; 0: all cores).
CLI::Option* add_threads_option(CLI::App* sub, EngineOptions* o);
// --precision fp32|bf16 (checked when the session is opened, by session_options).
CLI::Option* add_precision_option(CLI::App* sub, EngineOptions* o,
                                  const std::string& help = kPrecisionHelp);
// --batch B (B > 0) under `names` (CLI11 syntax, e.g. "--batch,-b").
CLI::Option* add_batch_option(CLI::App* sub, EngineOptions* o, const std::string& help,
                              const std::string& names = "--batch,-b");
// --dim NAME=VALUE, repeatable.
CLI::Option* add_dim_option(CLI::App* sub, EngineOptions* o, const std::string& help);
// --input,-i NAME=FILE.npy, repeatable.
CLI::Option* add_input_option(CLI::App* sub, EngineOptions* o, const std::string& help);
// --json.
CLI::Option* add_json_flag(CLI::App* sub, EngineOptions* o,
                           const std::string& help = "Print one JSON object");
// --no-optimize.
CLI::Option* add_no_optimize_flag(CLI::App* sub, EngineOptions* o);

// Session options from --threads, --precision and --no-optimize. Fails on a precision other
// than fp32, f32 or bf16: "--precision 'X' is not one of fp32, bf16".
Result<SessionOptions> session_options(const EngineOptions& o);

// Imports `o.model` with session_options(o). Errors are session_options' or Session::open's
// (which name the file), as the commands print them after "error: ".
Result<std::unique_ptr<Session>> open_session(const EngineOptions& o);

}  // namespace dlsys::cli
