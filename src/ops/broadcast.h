// NumPy-style (multidirectional) broadcasting for plain C++ kernels.
#pragma once

#include <vector>

#include "core/status.h"
#include "tensor/shape.h"

namespace dlsys {

// The broadcast of `a` and `b`, or InvalidArgument naming both shapes.
Result<Shape> broadcast_shapes(const Shape& a, const Shape& b);
// Element strides of a tensor of shape `in` seen with shape `out` (0 where broadcast).
std::vector<int64_t> broadcast_strides(const Shape& in, const Shape& out);

// For every output element in row-major order calls f(out_index, offsets of each input).
// N inputs with strides from broadcast_strides. Parallel over rows (OpenMP); f must be pure.
// `strides` points at N stride vectors.
template <size_t N, typename F>
void broadcast_for_each_n(const Shape& out, const std::vector<int64_t>* strides, F f) {
  const int64_t rank = static_cast<int64_t>(out.size());
  const int64_t total = shape_numel(out);
  if (total == 0) return;
  const int64_t inner = rank ? out[rank - 1] : 1;
  const int64_t rows = total / inner;
  int64_t inner_stride[N];
  for (size_t k = 0; k < N; ++k) inner_stride[k] = rank ? strides[k][rank - 1] : 0;
#pragma omp parallel for if (total > 32768) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t base[N] = {};
    int64_t rem = r;
    for (int64_t d = rank - 2; d >= 0; --d) {
      int64_t idx = rem % out[d];
      rem /= out[d];
      for (size_t k = 0; k < N; ++k) base[k] += idx * strides[k][d];
    }
    int64_t off[N];
    for (int64_t j = 0; j < inner; ++j) {
      for (size_t k = 0; k < N; ++k) off[k] = base[k] + j * inner_stride[k];
      f(r * inner + j, off);
    }
  }
}

template <size_t N, typename F>
void broadcast_for_each(const Shape& out, const std::vector<int64_t> (&strides)[N], F f) {
  broadcast_for_each_n<N>(out, strides, f);
}

}  // namespace dlsys
