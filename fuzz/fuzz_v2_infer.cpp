// fuzz_v2_infer: the KServe v2 inference request parser (serve/v2_codec.h), JSON and binary.
// Input: a decimal Inference-Header-Content-Length, a newline, then the body (a first line that
// is not a number means "no header": the whole input is the body). The model has three inputs
// (x FP32 [-1, 3], ids INT64 [-1], mask BOOL [-1, 2]) and two outputs. The same body is parsed
// again for a classifier trained by dlsys (one input x FP32 [-1, 3] with features a, color
// (categorical) and b; logits y [-1, 3]), whose requests may send columns (BYTES included) and ask
// for derived outputs (serve/v2_extras.h).
//
// A finding is a sanitizer report; a parse that succeeds with inputs that break what the parser
// promises (every model input once, in model order, each with the shared batch rows and a shape
// the model allows, tensors exactly as large as their shapes); or a response for such a request
// whose JSON header does not parse back. For the classifier: a parse that succeeds without
// exactly one input f32 [rows, 3], or derived outputs asked for that cannot be computed.
#include <cstdint>
#include <string>

#include "fuzz_common.h"
#include "serve/v2_codec.h"

namespace {

using dlsys::DType;
using dlsys::fuzz::fail;
using dlsys::fuzz::shown;
namespace serve = dlsys::serve;

const std::vector<serve::TensorSpec> kIn = {
    {"x", DType::kF32, {-1, 3}}, {"ids", DType::kI64, {-1}}, {"mask", DType::kBool, {-1, 2}}};
const std::vector<serve::TensorSpec> kOut = {{"y", DType::kF32, {-1, 3}},
                                             {"ids", DType::kI64, {-1}}};
const std::vector<serve::TensorSpec> kRowIn = {{"x", DType::kF32, {-1, 3}}};
const std::vector<serve::TensorSpec> kRowOut = {{"y", DType::kF32, {-1, 3}}};

const serve::V2ModelExtras& Classifier() {
  static const serve::V2ModelExtras x = [] {
    dlsys::ModelMetadata m;
    m.task = "classification";
    m.feature_names = {"a", "color", "b"};
    m.class_names = {"cat", "dog", "eel"};
    m.vocabularies["color"] = {{"red", 0.0f}, {"green", 1.0f}, {"blue", 2.0f}};
    return serve::v2_model_extras(m, kRowIn, kRowOut);
  }();
  return x;
}

// The same body for the classifier: columns and derived outputs.
void parse_for_classifier(const std::string& body, std::optional<size_t> jlen,
                          const serve::V2Limits& limits, const std::string& input) {
  auto r = serve::parse_v2_infer_request(body, jlen, kRowIn, kRowOut, limits, &Classifier());
  if (!r.ok()) {
    if (r.status().code() != dlsys::StatusCode::kInvalidArgument)
      fail("classifier: refused with %s instead of InvalidArgument: %s",
           r.status().to_string().c_str(), shown(input).c_str());
    return;
  }
  if (r->inputs.size() != 1 || r->inputs[0].name != "x") fail("classifier: not one input 'x'");
  const dlsys::Tensor& t = r->inputs[0].tensor;
  if (t.dtype() != DType::kF32 || t.rank() != 2 || t.dim(0) != r->batch_rows || t.dim(1) != 3)
    fail("classifier: the input is not f32 [rows, 3]");
  std::vector<dlsys::Tensor> outs = {t};
  auto d = serve::v2_derived_outputs(Classifier(), r->derived_outputs(), outs);
  if (!d.ok()) fail("classifier: derived outputs failed: %s", d.status().to_string().c_str());
  auto e = serve::encode_v2_infer_response("m", "1", *r, kRowOut, outs, *d);
  size_t jl = e.json_length.value_or(e.body.size());
  auto back = nlohmann::json::parse(e.body.substr(0, jl), nullptr, false);
  if (back.is_discarded()) fail("classifier: the response header is not JSON");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string input(reinterpret_cast<const char*>(data), size);
  std::optional<size_t> jlen;
  std::string body = input;
  size_t nl = input.find('\n');
  if (nl != std::string::npos && nl > 0 && nl <= 8) {
    auto h = serve::parse_inference_header_length(input.substr(0, nl), size - nl - 1);
    if (h.ok()) {
      jlen = *h;
      body = input.substr(nl + 1);
    }
  }
  serve::V2Limits limits;
  limits.max_elements = 1 << 16;
  parse_for_classifier(body, jlen, limits, input);
  auto r = serve::parse_v2_infer_request(body, jlen, kIn, kOut, limits);
  if (!r.ok()) {
    if (r.status().code() != dlsys::StatusCode::kInvalidArgument)
      fail("refused with %s instead of InvalidArgument: %s", r.status().to_string().c_str(),
           shown(input).c_str());
    return 0;
  }
  if (r->inputs.size() != kIn.size()) fail("%zu inputs for a model of 3", r->inputs.size());
  std::vector<dlsys::Tensor> outs;
  for (size_t i = 0; i < kIn.size(); ++i) {
    const auto& t = r->inputs[i].tensor;
    if (r->inputs[i].name != kIn[i].name) fail("input %zu is '%s'", i, r->inputs[i].name.c_str());
    if (t.dtype() != kIn[i].dtype || t.rank() != static_cast<int64_t>(kIn[i].shape.size()))
      fail("input '%s' has the wrong dtype or rank", kIn[i].name.c_str());
    if (t.dim(0) != r->batch_rows) fail("input '%s' has other rows", kIn[i].name.c_str());
    for (size_t d = 1; d < kIn[i].shape.size(); ++d)
      if (t.dim(static_cast<int64_t>(d)) != kIn[i].shape[d]) fail("a fixed dim changed");
    if (t.dtype() == DType::kBool)
      for (int64_t k = 0; k < t.numel(); ++k)
        if (t.data_as<uint8_t>()[k] > 1) fail("a BOOL element is %d", t.data_as<uint8_t>()[k]);
  }
  outs.push_back(r->inputs[0].tensor);
  outs.push_back(r->inputs[1].tensor);
  auto e = serve::encode_v2_infer_response("m", "1", *r, kOut, outs);
  size_t jl = e.json_length.value_or(e.body.size());
  auto back = nlohmann::json::parse(e.body.substr(0, jl), nullptr, false);
  if (back.is_discarded()) fail("the response header is not JSON for %s", shown(input).c_str());
  return 0;
}
