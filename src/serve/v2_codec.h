// The Open Inference Protocol (KServe v2) REST encoding of inference requests and responses,
// with the binary tensor data extension. No HTTP here: the routes hand in the body and the
// Inference-Header-Content-Length header, and get back a body and that header.
//
// A request is checked against the model's metadata before anything reaches a queue: every
// input named once, no unknown input, the datatype the model expects, the rank and every fixed
// dimension of its shape, and exactly as many elements (JSON data, flat or nested in row-major
// order) or bytes (binary data) as the shape holds. Each error names the input, what the model
// expects and what was sent ("input 'x': shape [2, 63] does not match the model's [-1, 64]").
//
//   request   {"id"?, "parameters"?, "inputs": [{"name", "shape", "datatype", "parameters"?:
//              {"binary_data_size"?}, "data"?}], "outputs"?: [{"name", "parameters"?:
//              {"binary_data"?}}]}  [binary tensor bytes, in the order of the inputs that
//              declare binary_data_size]
//   response  {"model_name", "model_version", "id"?, "outputs": [{"name", "datatype", "shape",
//              "data" | "parameters": {"binary_data_size"}}]}  [binary output bytes]
//
// Request parameters dlsys reads: "timeout" (microseconds, the request's deadline),
// "priority" (0 = most urgent), "binary_data_output" (every output in binary). Others are
// accepted and ignored.
//
// With a model's V2ModelExtras (serve/v2_extras.h), a request may also send columns, one input
// per raw feature, in place of the model's input (the column form: detected when no input of
// the request is named like a model input), and ask for derived outputs by name. A column is
// [N] or [N, 1]: FP32, FP64, INT32 or INT64 for a numeric feature, BYTES (category names) for a
// categorical one, null in JSON for a missing value (NaN). BYTES data is a JSON array of strings,
// or in binary each element's byte count (4 bytes, little-endian) then its bytes. Errors name the
// column (a missing feature, an unknown column, a string for a numeric feature, other rows) and,
// for malformed binary BYTES, the element and its byte offset.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "serve/tensor_spec.h"
#include "serve/v2_extras.h"
#include "tensor/tensor.h"

namespace dlsys::serve {

// The protocol's datatype for `t`: "FP32", "BF16", "FP16", "INT8", "UINT8", "INT32", "INT64",
// "BOOL".
const char* v2_datatype(DType t);
// The tensor type of the protocol's datatype `name` ("FP32" -> kF32); nullopt for BYTES (no
// tensor type) and for a name that is not a datatype.
std::optional<DType> v2_dtype(std::string_view name);

// Limits on what a request may hold (the route's body limit bounds the rest).
struct V2Limits {
  size_t max_inputs = 64;
  int64_t max_elements = int64_t{1} << 28;  // per input
};

struct V2Input {
  std::string name;
  Tensor tensor;  // owned; shape as sent
};

struct V2RequestedOutput {
  std::string name;
  bool binary = false;
  bool derived = false;  // one of V2ModelExtras::derived, computed by serving
};

struct V2InferRequest {
  std::string id;  // echoed in the response; "" when absent
  // Inputs in the model's input order (every model input exactly once).
  std::vector<V2Input> inputs;
  // What the caller asked for; empty means every output (as JSON unless binary_output).
  std::vector<V2RequestedOutput> outputs;
  bool binary_output = false;         // parameters.binary_data_output
  std::optional<int64_t> timeout_us;  // parameters.timeout
  std::optional<int64_t> priority;    // parameters.priority
  int64_t batch_rows = 0;             // dim 0 shared by every input (the batch)
  bool columns = false;               // sent in the column form (assembled into `inputs`)
  // When the server read the request's first byte; its deadline counts from here (the epoch,
  // the default, means "when ModelServer::infer is called": requests made in process).
  std::chrono::steady_clock::time_point received{};
  // How long an answer lately waited for the I/O thread once computed (api::Request::
  // answer_delay_us; 0 in process): the batcher's deadline comes twice that much earlier (the
  // wait to be read and the wait to be written), at most a quarter of the timeout, so that an
  // admitted answer reaches its caller by the request's deadline.
  int64_t answer_delay_us = 0;

  // The derived outputs asked for, in the order asked.
  std::vector<std::string> derived_outputs() const;
};

// Parses and checks the body of POST /v2/models/{name}[/versions/{v}]/infer. `json_length` is
// the Inference-Header-Content-Length header's value (std::nullopt when absent: the whole body
// is the JSON document). Every error is InvalidArgument and names the place. `extras` (may be
// null: none) adds the column form and the derived outputs; the column form may have as many
// inputs as the model has features, even past limits.max_inputs.
Result<V2InferRequest> parse_v2_infer_request(std::string_view body,
                                              std::optional<size_t> json_length,
                                              const std::vector<TensorSpec>& model_inputs,
                                              const std::vector<TensorSpec>& model_outputs,
                                              const V2Limits& limits = {},
                                              const V2ModelExtras* extras = nullptr);

// Parses the Inference-Header-Content-Length header ("" -> nullopt). Errors name the header.
Result<std::optional<size_t>> parse_inference_header_length(std::string_view value,
                                                            size_t body_size);

struct V2EncodedResponse {
  std::string body;
  // Set when binary outputs follow the JSON: the Inference-Header-Content-Length to send.
  std::optional<size_t> json_length;
};

// Encodes a response. `outputs` are in the model's output order, matching `model_outputs`;
// `derived` holds the derived outputs the request asks for (v2_derived_outputs). Without
// "outputs" in the request every model output is written (no derived one); with it, those asked
// for in the order asked, each as JSON or binary as it asks (BYTES: a JSON array of strings, or
// each element's 4-byte little-endian length and bytes).
V2EncodedResponse encode_v2_infer_response(const std::string& model_name,
                                           const std::string& model_version,
                                           const V2InferRequest& request,
                                           const std::vector<TensorSpec>& model_outputs,
                                           const std::vector<Tensor>& outputs,
                                           const std::vector<V2ExtraOutput>& derived = {});

}  // namespace dlsys::serve
