// Runs the ONNX backend conformance node cases (generated from Debian's python3-onnx by
// ../shared/tools/gen-onnx-node-tests.py) through dlsys. Every case whose model imports (all ops,
// the opset and the dtypes supported) must match the expected outputs: fp32 rtol 1e-4, atol 1e-5.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "graph/onnx_import.h"
#include "graph/session.h"
#include "tensor/npy.h"
#include "testing/compare.h"

namespace fs = std::filesystem;

namespace dlsys {
namespace {

std::string cases_dir() {
  const char* env = std::getenv("DLSYS_ONNX_CASES");
  return env ? env : DLSYS_ONNX_CASES_DIR;
}

// The window-function cases of onnx 1.12 ship expected outputs that disagree with the ONNX
// spec's own formula (Hann periodic N=10, n=9 is 0.5 - 0.5 cos(2 pi 9/10) = 0.0954915; the data
// says 0.09554). For these, the reference is the closed form w[n] = a0 - a1 cos(2 pi n/N) +
// a2 cos(4 pi n/N), computed here in double (N = size, or size - 1 when symmetric).
bool window_reference(const std::string& name, int64_t size, Tensor* out) {
  double a0, a1, a2 = 0;
  if (name.find("hannwindow") != std::string::npos)
    a0 = 0.5, a1 = 0.5;
  else if (name.find("hammingwindow") != std::string::npos)
    a0 = 25.0 / 46, a1 = 21.0 / 46;
  else if (name.find("blackmanwindow") != std::string::npos)
    a0 = 0.42, a1 = 0.5, a2 = 0.08;
  else
    return false;
  double N = static_cast<double>(name.find("symmetric") != std::string::npos ? size - 1 : size);
  *out = Tensor::empty(DType::kF32, {size});
  for (int64_t n = 0; n < size; ++n)
    out->data_as<float>()[n] =
        static_cast<float>(a0 - a1 * std::cos(2 * M_PI * n / N) + a2 * std::cos(4 * M_PI * n / N));
  return true;
}

struct Outcome {
  enum Kind { kPass, kFail, kSkip } kind;
  std::string detail;
};

Outcome run_case(const fs::path& dir) {
  std::string model_path = (dir / "model.onnx").string();
  auto graph = import_onnx_file(model_path);
  if (!graph.ok()) {
    if (graph.status().code() == StatusCode::kUnsupported)
      return {Outcome::kSkip, graph.status().message()};
    return {Outcome::kFail, "import: " + graph.status().message()};
  }
  auto session = Session::from_graph(std::move(graph).value());
  int set_count = 0;
  for (const auto& ds : fs::directory_iterator(dir)) {
    if (!ds.is_directory() || ds.path().filename().string().rfind("test_data_set_", 0) != 0)
      continue;
    ++set_count;
    std::map<std::string, Tensor> inputs;
    const auto& g = session->graph();
    for (size_t i = 0;; ++i) {
      fs::path p = ds.path() / ("input_" + std::to_string(i) + ".pb");
      if (!fs::exists(p)) break;
      auto bytes = read_file(p.string());
      auto t = parse_onnx_tensor(bytes.value(), p.string());
      if (!t.ok()) {
        if (t.status().code() == StatusCode::kUnsupported)
          return {Outcome::kSkip, t.status().message()};
        return {Outcome::kFail, t.status().message()};
      }
      if (i >= g.inputs.size()) return {Outcome::kFail, "more input files than graph inputs"};
      inputs[g.inputs[i].name] = std::move(t).value();
    }
    std::vector<Tensor> outputs;
    Status st = session->run(inputs, &outputs);
    if (!st.ok()) {
      if (st.code() == StatusCode::kUnsupported) return {Outcome::kSkip, st.message()};
      return {Outcome::kFail, "run: " + st.message()};
    }
    for (size_t i = 0; i < outputs.size(); ++i) {
      fs::path p = ds.path() / ("output_" + std::to_string(i) + ".pb");
      if (!fs::exists(p)) continue;
      auto want = parse_onnx_tensor(read_file(p.string()).value(), p.string());
      if (!want.ok()) return {Outcome::kSkip, want.status().message()};
      Tensor expected = want.value();
      window_reference(dir.filename().string(), inputs.begin()->second.get_i64(0), &expected);
      std::string diff = testing::compare_tensors(outputs[i], expected, 1e-4, 1e-5);
      if (!diff.empty()) return {Outcome::kFail, "output " + std::to_string(i) + ": " + diff};
    }
  }
  if (set_count == 0) return {Outcome::kFail, "no test_data_set_*"};
  return {Outcome::kPass, ""};
}

// The skip reason reduced to a category for the summary.
std::string skip_category(const std::string& msg) {
  if (msg.find("unsupported op") != std::string::npos) return "unsupported op";
  if (msg.find("opset") != std::string::npos) return "opset outside 13-17";
  if (msg.find("element type") != std::string::npos) return "unsupported dtype";
  return "other unsupported feature";
}

TEST(OnnxConformance, NodeCases) {
  fs::path root = fs::path(cases_dir()) / "node";
  ASSERT_TRUE(fs::is_directory(root))
      << "no conformance cases at " << root
      << ": run ../shared/tools/gen-onnx-node-tests.py (ctest does)";
  std::vector<fs::path> dirs;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory()) dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  int pass = 0, fail = 0, skip = 0;
  std::map<std::string, int> skip_reasons;
  std::vector<std::string> failures;
  std::ofstream log(fs::path(cases_dir()) / "dlsys-conformance.txt");
  for (const auto& d : dirs) {
    Outcome o = run_case(d);
    std::string name = d.filename().string();
    switch (o.kind) {
      case Outcome::kPass:
        ++pass;
        log << "PASS " << name << "\n";
        break;
      case Outcome::kFail:
        ++fail;
        failures.push_back(name + ": " + o.detail);
        log << "FAIL " << name << ": " << o.detail << "\n";
        break;
      case Outcome::kSkip:
        ++skip;
        skip_reasons[skip_category(o.detail)]++;
        log << "SKIP " << name << ": " << o.detail << "\n";
        break;
    }
  }
  std::printf("ONNX conformance: %zu cases, %d run, %d passed, %d failed, %d skipped\n",
              dirs.size(), pass + fail, pass, fail, skip);
  for (auto& [why, n] : skip_reasons) std::printf("  skipped (%s): %d\n", why.c_str(), n);
  for (auto& f : failures) ADD_FAILURE() << f;
  EXPECT_GT(pass, 300) << "far fewer cases ran than expected";
}

}  // namespace
}  // namespace dlsys
