// `dlsys run MODEL.onnx --input [NAME=]FILE ... [--output-dir DIR] [--table] [--json]`: inputs
// from .npy, or rows from .csv/.tsv/.jsonl/.json (cli/tabular_input.h); outputs as .npy files,
// and a classifier's predictions (class, probability) as a table or JSON.
#include <algorithm>
#include <filesystem>

#include "cli/client_options.h"
#include "cli/commands.h"
#include "cli/engine_options.h"
#include "cli/tabular_input.h"
#include "graph/session.h"
#include "tensor/npy.h"

namespace dlsys::cli {
namespace {

struct RunArgs {
  EngineOptions engine;
  std::string output_dir;
  bool table = false;
};

int run_run(const RunArgs& a) {
  auto session = open_session(a.engine);
  if (!session.ok()) return fail(session.status().message());
  Session& s = *session.value();
  std::map<std::string, Tensor> named;
  for (const std::string& spec : a.engine.inputs) {
    std::string name, path;
    size_t eq = spec.find('=');
    if (eq == std::string::npos && is_tabular_path(spec) && s.graph().inputs.size() != 1) {
      // Rows fill every input of a model that takes string columns as strings.
      auto all = read_rows(spec, s.graph());
      if (!all.ok()) return fail(all.status().message());
      for (auto& [n, t] : all.value()) {
        if (named.count(n)) return fail(fmt::format("input '{}' is given twice", n));
        named[n] = t;
      }
      continue;
    }
    if (eq == std::string::npos) {
      if (s.graph().inputs.size() != 1)
        return fail(
            fmt::format("--input '{}' needs the form NAME=FILE.npy (the model has {} inputs)", spec,
                        s.graph().inputs.size()));
      name = s.graph().inputs[0].name;
      path = spec;
    } else {
      name = spec.substr(0, eq);
      path = spec.substr(eq + 1);
    }
    auto in = std::find_if(s.graph().inputs.begin(), s.graph().inputs.end(),
                           [&](const ValueInfo& v) { return v.name == name; });
    if (in == s.graph().inputs.end())
      return fail(fmt::format("the model has no input '{}'; its inputs: {}", name,
                              s.graph().inputs.size() == 1 ? s.graph().inputs[0].name
                                                           : std::string("(see dlsys inspect)")));
    auto t = read_input_file(path, s.graph(), *in);
    if (!t.ok()) return fail(t.status().message());
    if (named.count(name)) return fail(fmt::format("input '{}' is given twice", name));
    named[name] = std::move(t).value();
  }
  std::vector<Tensor> outputs;
  Status st = s.run(named, &outputs);
  if (!st.ok()) return fail(st.message());
  if (a.table || a.engine.json) {
    std::vector<Prediction> p = predict(ModelMetadata::read(s.graph()), outputs[0]);
    if (a.engine.json) {
      print_json({{"output", s.graph().outputs[0].name}, {"predictions", predictions_json(p)}});
    } else {
      print_predictions(p);
    }
  }
  if (a.output_dir.empty()) return 0;
  std::error_code ec;
  std::filesystem::create_directories(a.output_dir, ec);
  if (ec)
    return fail(fmt::format("cannot create output directory '{}': {}", a.output_dir, ec.message()));
  for (size_t i = 0; i < outputs.size(); ++i) {
    std::string name = s.graph().outputs[i].name;
    for (char& c : name)
      if (c == '/' || c == '\\' || c == ':') c = '_';
    std::string path = (std::filesystem::path(a.output_dir) / (name + ".npy")).string();
    Status w = npy_write(path, outputs[i]);
    if (!w.ok()) return fail(w.message());
    if (a.engine.json) continue;
    std::printf("%s: %s %s -> %s\n", s.graph().outputs[i].name.c_str(),
                dtype_name(outputs[i].dtype()), shape_str(outputs[i].shape()).c_str(),
                path.c_str());
  }
  return 0;
}

}  // namespace

void add_run(CLI::App& app, int* rc) {
  auto a = std::make_shared<RunArgs>();
  CLI::App* sub = app.add_subcommand(
      "run",
      "Run a model on .npy inputs or rows of a CSV/JSON file; write its outputs as .npy or "
      "print predictions");
  add_model_arg(sub, &a->engine);
  add_input_option(sub, &a->engine,
                   "NAME=FILE for each model input (FILE alone for a one-input model): .npy, or "
                   "rows from .csv/.tsv/.jsonl/.json, columns matched by the names the model was "
                   "trained on")
      ->required();
  sub->add_option("--output-dir,-o", a->output_dir, "Directory for <output name>.npy files");
  sub->add_flag("--table", a->table,
                "Print the predictions: class and probability per row for a classifier trained "
                "by dlsys, else the output values");
  add_json_flag(sub, &a->engine, "Print the predictions as one JSON object");
  add_threads_option(sub, &a->engine);
  add_precision_option(sub, &a->engine);
  sub->callback([a, rc] {
    if (a->output_dir.empty() && !a->table && !a->engine.json) {
      *rc = fail("give --output-dir DIR (outputs as .npy), --table or --json (predictions)");
      return;
    }
    *rc = run_run(*a);
  });
}

}  // namespace dlsys::cli
