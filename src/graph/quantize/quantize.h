// Post-training quantization to a QDQ ONNX model (QuantizeLinear/DequantizeLinear pairs around
// the quantized ops), the format every ONNX runtime reads. dlsys itself runs the quantized
// patterns on oneDNN int8 kernels (graph/passes: QuantizedConvFusion, QuantizedMatMulFusion).
//
// Static mode: Conv, MatMul and Gemm with constant weights get per-channel symmetric int8
// weights (and int32 biases); their activation inputs get per-tensor scales calibrated on
// sample inputs (u8 when the observed range is non-negative, else symmetric s8; zero points 0).
// MaxPool between two quantized tensors shares its input's scale so it can run on int8.
// Dynamic mode: only the weights of MatMul/Gemm are quantized; activations are quantized at run
// time from each batch's range.
#pragma once

#include <string>
#include <vector>

#include "graph/ir.h"

namespace dlsys {

enum class CalibrationMethod { kMinMax, kPercentile };

struct QuantizeOptions {
  bool dynamic = false;
  CalibrationMethod method = CalibrationMethod::kMinMax;
  double percentile = 99.99;  // kPercentile: the range covers this share of |values|
  int64_t batch = 8;          // calibration batch size
  int threads = 0;
};

// One activation tensor's calibrated quantization.
struct TensorQuant {
  std::string name;
  float min = 0, max = 0;  // observed range
  float scale = 1;
  bool is_unsigned = false;  // u8 (range >= 0) or s8 (symmetric)
};

struct QuantizeReport {
  int weights_quantized = 0;      // initializers turned into int8 + scales
  int activations_quantized = 0;  // tensors given a QuantizeLinear/DequantizeLinear pair
  int64_t calibration_samples = 0;
  int64_t bytes_before = 0, bytes_after = 0;  // model file sizes
  std::vector<TensorQuant> tensors;
};

// Reads the ONNX model at `in_path`, calibrates on `calib` (a batch of inputs for the model's
// single input; split into batches of opts.batch along axis 0), and writes the QDQ model to
// `out_path` atomically. The written model passes the ONNX checker (it is re-imported to check).
// `progress(done, total)` is called after each calibration batch when set.
Result<QuantizeReport> quantize_model(const std::string& in_path, const Tensor& calib,
                                      const std::string& out_path, const QuantizeOptions& opts,
                                      void (*progress)(int64_t done, int64_t total) = nullptr);

// Runs `a` and `b` (two model files with the same single input) on `inputs` in batches and
// compares their first outputs: top-1 agreement (argmax over the last axis) and the largest
// |a - b| relative to max |a|.
struct AgreementReport {
  int64_t samples = 0;
  double top1_agreement = 0;  // fraction in [0, 1]
  double max_rel_error = 0;
};
Result<AgreementReport> compare_models(const std::string& a, const std::string& b,
                                       const Tensor& inputs, int64_t batch, int threads);

}  // namespace dlsys
