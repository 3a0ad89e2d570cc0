// BitShift (X shifted by Y bits, `direction` LEFT or RIGHT) on unsigned integers with numpy
// broadcasting, as a plain loop. dlsys's one unsigned integer dtype today is uint8; a shift by
// the type's width or more gives 0 (C++ leaves it undefined; ONNX Runtime and numpy give 0).
#include "ops/broadcast.h"
#include "ops/op_registry.h"

namespace dlsys {
namespace {

template <typename T>
T shift(T x, T y, bool left) {
  if (y >= sizeof(T) * 8) return 0;
  return static_cast<T>(left ? x << y : x >> y);
}

Result<KernelPtr> build_bit_shift(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kU8}));
  if (ctx.in_dtype(1) != ctx.in_dtype(0))
    return ctx.error("X is {} and Y is {}; they must have one dtype", dtype_name(ctx.in_dtype(0)),
                     dtype_name(ctx.in_dtype(1)));
  const std::string dir = ctx.attr_string("direction", "");
  if (dir != "LEFT" && dir != "RIGHT")
    return ctx.error("direction '{}' must be LEFT or RIGHT", dir);
  Shape y;
  DLSYS_ASSIGN_OR_RETURN(y, broadcast_shapes(ctx.in_shape(0), ctx.in_shape(1)));
  ctx.set_output(0, ctx.in_dtype(0), y);
  const std::vector<int64_t> st[2] = {broadcast_strides(ctx.in_shape(0), y),
                                      broadcast_strides(ctx.in_shape(1), y)};
  const bool left = dir == "LEFT";
  return make_kernel([st, y, left](const Tensor* const* in, Tensor* const* out) {
    const uint8_t* a = in[0]->data_as<uint8_t>();
    const uint8_t* b = in[1]->data_as<uint8_t>();
    uint8_t* o = out[0]->data_as<uint8_t>();
    broadcast_for_each<2>(y, st, [&](int64_t i, const int64_t* off) {
      o[i] = shift<uint8_t>(a[off[0]], b[off[1]], left);
    });
    return Status::OK();
  });
}

}  // namespace

void register_bitwise_ops(OpRegistry& r) {
  r.add("BitShift", 2, 2, 1, 1, build_bit_shift);
}

}  // namespace dlsys
