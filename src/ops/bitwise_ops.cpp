// BitShift (X shifted by Y bits, `direction` LEFT or RIGHT) on unsigned integers with numpy
// broadcasting, as a plain loop over every unsigned dtype DLSYS_DISPATCH_NUMERIC knows. A shift
// by the type's width or more gives 0 (C++ leaves it undefined; ONNX Runtime and numpy give 0).
#include <type_traits>

#include "ops/broadcast.h"
#include "ops/dispatch.h"
#include "ops/op_registry.h"

namespace dlsys {
namespace {

template <typename T>
void shift_all(const Shape& y, const std::vector<int64_t> (&st)[2], const T* a, const T* b, T* o,
               bool left) {
  broadcast_for_each<2>(y, st, [&](int64_t i, const int64_t* off) {
    const T x = a[off[0]], n = b[off[1]];
    o[i] = n >= sizeof(T) * 8 ? T(0) : static_cast<T>(left ? x << n : x >> n);
  });
}

Result<KernelPtr> build_bit_shift(BuildContext& ctx) {
  const DType t = ctx.in_dtype(0);
  bool is_unsigned = false;
  DLSYS_DISPATCH_NUMERIC(t, T, is_unsigned = std::is_unsigned_v<T>);
  if (!is_unsigned)
    return ctx.unsupported("X has dtype {}; BitShift is defined on unsigned integers",
                           dtype_name(t));
  if (ctx.in_dtype(1) != t)
    return ctx.error("X is {} and Y is {}; they must have one dtype", dtype_name(t),
                     dtype_name(ctx.in_dtype(1)));
  const std::string dir = ctx.attr_string("direction", "");
  if (dir != "LEFT" && dir != "RIGHT")
    return ctx.error("direction '{}' must be LEFT or RIGHT", dir);
  Shape y;
  DLSYS_ASSIGN_OR_RETURN(y, broadcast_shapes(ctx.in_shape(0), ctx.in_shape(1)));
  ctx.set_output(0, t, y);
  const std::vector<int64_t> st[2] = {broadcast_strides(ctx.in_shape(0), y),
                                      broadcast_strides(ctx.in_shape(1), y)};
  const bool left = dir == "LEFT";
  return make_kernel([st, y, left, t](const Tensor* const* in, Tensor* const* out) {
    DLSYS_DISPATCH_NUMERIC(t, T, {
      if constexpr (std::is_unsigned_v<T>)
        shift_all<T>(y, st, in[0]->data_as<T>(), in[1]->data_as<T>(), out[0]->data_as<T>(), left);
    });
    return Status::OK();
  });
}

}  // namespace

void register_bitwise_ops(OpRegistry& r) {
  r.add("BitShift", 2, 2, 1, 1, build_bit_shift);
}

}  // namespace dlsys
