// Shapes are plain vectors of dimension sizes (ggml's habit: no class where a vector will do).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dlsys {

using Shape = std::vector<int64_t>;

// Product of the dimensions (1 for a scalar shape {}).
int64_t shape_numel(const Shape& s);
// "[2, 3, 224, 224]".
std::string shape_str(const Shape& s);
// Row-major strides in elements.
std::vector<int64_t> shape_strides(const Shape& s);
// A shape seen as [outer, n, inner] around `axis` (which must be in range): the layout every
// per-axis kernel (ArgMax, CumSum, Hardmax, Gather, Concat, ...) walks.
struct AxisSplit {
  int64_t outer = 1, n = 1, inner = 1;
};
AxisSplit split_at_axis(const Shape& s, int64_t axis);
// Normalizes a possibly negative axis into [0, rank); returns -1 when out of range.
int64_t normalize_axis(int64_t axis, int64_t rank);

}  // namespace dlsys
