// `dlsys run MODEL.onnx --input NAME=FILE.npy ... --output-dir DIR [--threads N]`.
#include <filesystem>

#include "cli/commands.h"
#include "cli/engine_options.h"
#include "graph/session.h"
#include "tensor/npy.h"

namespace dlsys::cli {
namespace {

struct RunArgs {
  EngineOptions engine;
  std::string output_dir;
};

int run_run(const RunArgs& a) {
  auto session = open_session(a.engine);
  if (!session.ok()) return fail(session.status().message());
  Session& s = *session.value();
  std::map<std::string, Tensor> named;
  for (const std::string& spec : a.engine.inputs) {
    std::string name, path;
    size_t eq = spec.find('=');
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
    auto t = npy_read(path);
    if (!t.ok()) return fail(t.status().message());
    if (named.count(name)) return fail(fmt::format("input '{}' is given twice", name));
    named[name] = std::move(t).value();
  }
  std::vector<Tensor> outputs;
  Status st = s.run(named, &outputs);
  if (!st.ok()) return fail(st.message());
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
    std::printf("%s: %s %s -> %s\n", s.graph().outputs[i].name.c_str(),
                dtype_name(outputs[i].dtype()), shape_str(outputs[i].shape()).c_str(),
                path.c_str());
  }
  return 0;
}

}  // namespace

void add_run(CLI::App& app, int* rc) {
  auto a = std::make_shared<RunArgs>();
  CLI::App* sub =
      app.add_subcommand("run", "Run a model on .npy inputs and write its outputs as .npy");
  add_model_arg(sub, &a->engine);
  add_input_option(sub, &a->engine,
                   "NAME=FILE.npy for each model input (FILE.npy alone for a one-input model)")
      ->required();
  sub->add_option("--output-dir,-o", a->output_dir, "Directory for <output name>.npy files")
      ->required();
  add_threads_option(sub, &a->engine);
  add_precision_option(sub, &a->engine);
  sub->callback([a, rc] { *rc = run_run(*a); });
}

}  // namespace dlsys::cli
