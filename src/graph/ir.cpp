#include "graph/ir.h"

namespace dlsys {

std::string dims_str(const ValueInfo& v) {
  if (!v.has_shape) return "unknown";
  std::string out = "[";
  for (size_t i = 0; i < v.dims.size(); ++i) {
    if (i) out += ", ";
    const Dim& d = v.dims[i];
    out += d.fixed() ? std::to_string(d.value) : (d.param.empty() ? "?" : d.param);
  }
  return out + "]";
}

}  // namespace dlsys
