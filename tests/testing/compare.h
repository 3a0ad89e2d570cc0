// Shared test helper: element-wise comparison of tensors with a tolerance.
#pragma once

#include <cmath>
#include <string>

#include "tensor/tensor.h"

namespace dlsys::testing {

// Empty string when `got` matches `want` (same dtype and shape; floats within
// atol + rtol * |want|, NaN equal to NaN; other dtypes, strings included, exactly); else what
// differs and where.
inline std::string compare_tensors(const Tensor& got, const Tensor& want, double rtol,
                                   double atol) {
  if (got.dtype() != want.dtype())
    return std::string("dtype ") + dtype_name(got.dtype()) + " vs expected " +
           dtype_name(want.dtype());
  if (got.shape() != want.shape())
    return "shape " + shape_str(got.shape()) + " vs expected " + shape_str(want.shape());
  if (want.dtype() == DType::kString) {
    for (int64_t i = 0; i < want.numel(); ++i)
      if (got.strings()[i] != want.strings()[i])
        return "element " + std::to_string(i) + ": '" + got.strings()[i] + "' vs expected '" +
               want.strings()[i] + "'";
    return "";
  }
  bool is_float = dtype_is_float(want.dtype());
  double worst = 0;
  int64_t worst_i = -1;
  for (int64_t i = 0; i < want.numel(); ++i) {
    if (is_float) {
      double g = got.get_f64(i), w = want.get_f64(i);
      if (std::isnan(w) && std::isnan(g)) continue;
      if (std::isinf(w) && g == w) continue;
      double excess = std::fabs(g - w) - (atol + rtol * std::fabs(w));
      if (!(excess <= 0) && (worst_i < 0 || excess > worst || std::isnan(excess))) {
        worst = excess;
        worst_i = i;
      }
    } else if (got.get_i64(i) != want.get_i64(i)) {
      return "element " + std::to_string(i) + ": " + std::to_string(got.get_i64(i)) +
             " vs expected " + std::to_string(want.get_i64(i));
    }
  }
  if (worst_i >= 0)
    return "element " + std::to_string(worst_i) + ": " + std::to_string(got.get_f64(worst_i)) +
           " vs expected " + std::to_string(want.get_f64(worst_i));
  return "";
}

}  // namespace dlsys::testing
