// Ops of the ai.onnx.ml domain, as plain loops: LabelEncoder.
//
// LabelEncoder maps each element of its input through a table of keys and values, and gives
// the default for a key the table lacks. ai.onnx.ml opset 2: exactly one of keys_strings /
// keys_int64s / keys_floats (the input's type: STRING, INT64, FLOAT) and one of values_strings /
// values_int64s / values_floats (the output's type), of equal length, with default_string
// ("_Unused"), default_int64 (-1) or default_float (-0.0). Opset 1's form (classes_strings: a
// string maps to its index, an int64 to the string at that index) is read too. A NaN key matches
// a NaN input. Opset 4's tensor attributes (keys_tensor, values_tensor) are not supported.
#include <cmath>
#include <unordered_map>

#include "ops/op_registry.h"

namespace dlsys {
namespace {

// The index of each key; floats compare exactly, and a NaN key matches NaN.
template <typename K>
class KeyIndex {
 public:
  // False when `k` is already a key (a table with two values for one key is refused).
  bool add(const K& k, int64_t i) {
    if constexpr (std::is_floating_point_v<K>) {
      if (std::isnan(k)) {
        if (nan_ >= 0) return false;
        nan_ = i;
        return true;
      }
    }
    return at_.emplace(k, i).second;
  }
  int64_t find(const K& k) const {
    if constexpr (std::is_floating_point_v<K>) {
      if (std::isnan(k)) return nan_;
    }
    auto it = at_.find(k);
    return it == at_.end() ? -1 : it->second;
  }

 private:
  std::unordered_map<K, int64_t> at_;
  int64_t nan_ = -1;
};

template <typename K>
const K* elements(const Tensor& t) {
  if constexpr (std::is_same_v<K, std::string>)
    return t.strings();
  else
    return t.data_as<K>();
}

template <typename V>
V* mutable_elements(Tensor& t) {
  if constexpr (std::is_same_v<V, std::string>)
    return t.strings();
  else
    return t.data_as<V>();
}

// A kernel for keys of type K and values of type V.
template <typename K, typename V>
Result<KernelPtr> encoder(BuildContext& ctx, const std::vector<K>& keys, std::vector<V> values,
                          V fallback, DType out) {
  if (keys.size() != values.size())
    return ctx.error("has {} keys and {} values; they pair up, so their counts must be equal",
                     keys.size(), values.size());
  KeyIndex<K> index;
  for (size_t i = 0; i < keys.size(); ++i)
    if (!index.add(keys[i], static_cast<int64_t>(i)))
      return ctx.error("key {} is listed twice; each key maps to one value", i);
  ctx.set_output(0, out, ctx.in_shape(0));
  return make_kernel([index = std::move(index), values = std::move(values), fallback](
                         const Tensor* const* in, Tensor* const* o) {
    const K* x = elements<K>(*in[0]);
    V* y = mutable_elements<V>(*o[0]);
    const int64_t n = in[0]->numel();
    for (int64_t i = 0; i < n; ++i) {
      int64_t k = index.find(x[i]);
      y[i] = k >= 0 ? values[static_cast<size_t>(k)] : fallback;
    }
    return Status::OK();
  });
}

// The values attribute's type picks V.
template <typename K>
Result<KernelPtr> encode_keys(BuildContext& ctx, const std::vector<K>& keys) {
  const Attribute* vs = ctx.attr("values_strings");
  const Attribute* vi = ctx.attr("values_int64s");
  const Attribute* vf = ctx.attr("values_floats");
  if ((vs != nullptr) + (vi != nullptr) + (vf != nullptr) != 1)
    return ctx.error(
        "needs exactly one of values_strings, values_int64s and values_floats (it has {})",
        (vs != nullptr) + (vi != nullptr) + (vf != nullptr));
  if (vs)
    return encoder<K, std::string>(ctx, keys, vs->strings,
                                   ctx.attr_string("default_string", "_Unused"), DType::kString);
  if (vi)
    return encoder<K, int64_t>(ctx, keys, vi->ints, ctx.attr_int("default_int64", -1), DType::kI64);
  return encoder<K, float>(ctx, keys, vf->floats, ctx.attr_float("default_float", -0.0f),
                           DType::kF32);
}

Result<KernelPtr> build_label_encoder(BuildContext& ctx) {
  if (ctx.has_attr("keys_tensor") || ctx.has_attr("values_tensor"))
    return ctx.unsupported(
        "keys_tensor/values_tensor (ai.onnx.ml opset 4) are not supported; give the table as "
        "keys_*/values_* lists (opset 2)");
  const DType in = ctx.in_dtype(0);
  auto expect_input = [&](DType want, const char* attr) -> Status {
    if (in != want)
      return ctx.error("input 0 is {}, but its keys ({}) are {}: the input must be {}",
                       dtype_name(in), attr, dtype_name(want), dtype_name(want));
    return Status::OK();
  };
  if (const Attribute* classes = ctx.attr("classes_strings")) {
    // Opset 1: a string maps to its index in classes_strings, an int64 to the string there.
    if (in == DType::kString) {
      std::vector<int64_t> index(classes->strings.size());
      for (size_t i = 0; i < index.size(); ++i) index[i] = static_cast<int64_t>(i);
      return encoder<std::string, int64_t>(ctx, classes->strings, std::move(index),
                                           ctx.attr_int("default_int64", -1), DType::kI64);
    }
    if (in == DType::kI64) {
      std::vector<int64_t> keys(classes->strings.size());
      for (size_t i = 0; i < keys.size(); ++i) keys[i] = static_cast<int64_t>(i);
      return encoder<int64_t, std::string>(ctx, keys, classes->strings,
                                           ctx.attr_string("default_string", "_Unused"),
                                           DType::kString);
    }
    return ctx.error("input 0 is {}; with classes_strings it must be string or i64",
                     dtype_name(in));
  }
  const Attribute* ks = ctx.attr("keys_strings");
  const Attribute* ki = ctx.attr("keys_int64s");
  const Attribute* kf = ctx.attr("keys_floats");
  if ((ks != nullptr) + (ki != nullptr) + (kf != nullptr) != 1)
    return ctx.error("needs exactly one of keys_strings, keys_int64s and keys_floats (it has {})",
                     (ks != nullptr) + (ki != nullptr) + (kf != nullptr));
  if (ks) {
    DLSYS_RETURN_IF_ERROR(expect_input(DType::kString, "keys_strings"));
    return encode_keys<std::string>(ctx, ks->strings);
  }
  if (ki) {
    DLSYS_RETURN_IF_ERROR(expect_input(DType::kI64, "keys_int64s"));
    return encode_keys<int64_t>(ctx, ki->ints);
  }
  DLSYS_RETURN_IF_ERROR(expect_input(DType::kF32, "keys_floats"));
  return encode_keys<float>(ctx, kf->floats);
}

}  // namespace

void register_ml_ops(OpRegistry& r) {
  r.add("LabelEncoder", 1, 1, 1, 1, build_label_encoder);
  r.set_domain("LabelEncoder", "ai.onnx.ml");
  r.set_strings("LabelEncoder", 1u, true);
}

}  // namespace dlsys
