#include "cli/inputs.h"

#include <random>

#include "cli/commands.h"
#include "cli/tabular_input.h"
#include "tensor/npy.h"

namespace dlsys::cli {

Result<std::map<std::string, Tensor>> make_inputs(const Session& s,
                                                  const std::vector<std::string>& input_specs,
                                                  const std::vector<std::string>& dim_specs,
                                                  int64_t batch) {
  std::map<std::string, Tensor> named;
  for (const std::string& spec : input_specs) {
    size_t eq = spec.find('=');
    if (eq == std::string::npos)
      return Status::Invalid("--input '{}' needs the form NAME=FILE (.npy, .csv, .jsonl, .json)",
                             spec);
    std::string name = spec.substr(0, eq);
    bool known = false;
    for (const ValueInfo& v : s.graph().inputs) known = known || v.name == name;
    if (!known) return Status::Invalid("the model has no input '{}'", name);
    const ValueInfo* in = nullptr;
    for (const ValueInfo& v : s.graph().inputs)
      if (v.name == name) in = &v;
    auto t = read_input_file(spec.substr(eq + 1), s.graph(), *in);
    if (!t.ok()) return t.status();
    named[name] = std::move(t).value();
  }
  if (named.size() < s.graph().inputs.size()) {
    // Generate the inputs not given: normal floats, small integers (valid token ids).
    auto dims = parse_dims(dim_specs);
    if (!dims.ok()) return dims.status();
    auto shapes = s.concrete_input_shapes(dims.value(), batch);
    if (!shapes.ok()) return shapes.status();
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
          case DType::kF64:
            t.data_as<double>()[i] = normal(rng);
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
  return named;
}

}  // namespace dlsys::cli
