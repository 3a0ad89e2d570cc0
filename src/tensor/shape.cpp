#include "tensor/shape.h"

namespace dlsys {

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

std::vector<int64_t> shape_strides(const Shape& s) {
  std::vector<int64_t> st(s.size(), 1);
  for (int64_t i = static_cast<int64_t>(s.size()) - 2; i >= 0; --i) st[i] = st[i + 1] * s[i + 1];
  return st;
}

AxisSplit split_at_axis(const Shape& s, int64_t axis) {
  AxisSplit a;
  for (int64_t i = 0; i < axis; ++i) a.outer *= s[i];
  a.n = s[axis];
  for (size_t i = static_cast<size_t>(axis) + 1; i < s.size(); ++i) a.inner *= s[i];
  return a;
}

int64_t normalize_axis(int64_t axis, int64_t rank) {
  if (axis < 0) axis += rank;
  if (axis < 0 || axis >= rank) return -1;
  return axis;
}

}  // namespace dlsys
