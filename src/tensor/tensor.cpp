#include "tensor/tensor.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "core/check.h"

namespace dlsys {

namespace {
constexpr size_t kAlign = 64;

std::shared_ptr<void> alloc_aligned(size_t bytes) {
  size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  if (rounded == 0) rounded = kAlign;
  void* p = std::aligned_alloc(kAlign, rounded);
  if (!p) throw std::bad_alloc();
  return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
}

// Storage holding n constructed strings, destroyed with the storage.
std::shared_ptr<void> alloc_strings(int64_t n) {
  size_t rounded = (static_cast<size_t>(n) * sizeof(std::string) + kAlign - 1) / kAlign * kAlign;
  if (rounded == 0) rounded = kAlign;
  void* p = std::aligned_alloc(kAlign, rounded);
  if (!p) throw std::bad_alloc();
  auto* s = static_cast<std::string*>(p);
  for (int64_t i = 0; i < n; ++i) new (s + i) std::string();
  return std::shared_ptr<void>(p, [n](void* q) {
    auto* str = static_cast<std::string*>(q);
    for (int64_t i = 0; i < n; ++i) str[i].~basic_string();
    std::free(q);
  });
}
// Storage holding n constructed TensorLists (sequences, optionals), destroyed with the storage.
std::shared_ptr<void> alloc_lists(int64_t n) {
  size_t rounded = (static_cast<size_t>(n) * sizeof(TensorList) + kAlign - 1) / kAlign * kAlign;
  if (rounded == 0) rounded = kAlign;
  void* p = std::aligned_alloc(kAlign, rounded);
  if (!p) throw std::bad_alloc();
  auto* l = static_cast<TensorList*>(p);
  for (int64_t i = 0; i < n; ++i) new (l + i) TensorList();
  return std::shared_ptr<void>(p, [n](void* q) {
    auto* lists = static_cast<TensorList*>(q);
    for (int64_t i = 0; i < n; ++i) lists[i].~TensorList();
    std::free(q);
  });
}
}  // namespace

Tensor Tensor::empty(DType dtype, const Shape& shape) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.storage_ = dtype == DType::kString     ? alloc_strings(t.numel())
               : dtype_is_composite(dtype) ? alloc_lists(t.numel())
                                           : alloc_aligned(t.nbytes());
  t.data_ = t.storage_.get();
  return t;
}

Tensor Tensor::zeros(DType dtype, const Shape& shape) {
  Tensor t = empty(dtype, shape);
  if (!dtype_is_object(dtype)) std::memset(t.data_, 0, t.nbytes());
  return t;
}

Tensor Tensor::wrap(DType dtype, const Shape& shape, void* data) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.data_ = data;
  return t;
}

Tensor Tensor::from_f32(const Shape& shape, const float* values) {
  Tensor t = empty(DType::kF32, shape);
  if (t.nbytes()) std::memcpy(t.data_, values, t.nbytes());  // `values` may be null when empty
  return t;
}

Tensor Tensor::from_i64(const Shape& shape, const int64_t* values) {
  Tensor t = empty(DType::kI64, shape);
  if (t.nbytes()) std::memcpy(t.data_, values, t.nbytes());  // `values` may be null when empty
  return t;
}

Tensor Tensor::from_strings(const Shape& shape, const std::vector<std::string>& values) {
  Tensor t = empty(DType::kString, shape);
  DLSYS_CHECK(static_cast<int64_t>(values.size()) == t.numel(),
              "from_strings: {} values for shape {} ({} elements)", values.size(), shape_str(shape),
              t.numel());
  std::copy(values.begin(), values.end(), t.strings());
  return t;
}

Tensor Tensor::sequence(DType elem, std::vector<Tensor> items) {
  Tensor t = empty(sequence_of(elem), {});
  t.list()->items = std::move(items);
  return t;
}

Tensor Tensor::optional(DType contained, const Tensor* value) {
  Tensor t = empty(optional_of(contained), {});
  if (value) t.list()->items.push_back(*value);
  return t;
}

TensorList* Tensor::list() const {
  DLSYS_CHECK(dtype_is_composite(dtype_),
              "list() of a {} tensor: only sequence and optional tensors hold lists",
              dtype_name(dtype_));
  return static_cast<TensorList*>(data_);
}

std::string* Tensor::strings() const {
  DLSYS_CHECK(dtype_ == DType::kString,
              "strings() of a {} tensor: only kString tensors hold strings", dtype_name(dtype_));
  return static_cast<std::string*>(data_);
}

Tensor Tensor::view(const Shape& shape) const {
  DLSYS_CHECK(shape_numel(shape) == numel(),
              "view: element counts differ ({} vs {}); reshape to a shape of equal size",
              shape_numel(shape), numel());
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  DLSYS_CHECK(rank() >= 1 && begin >= 0 && begin <= end && end <= shape_[0],
              "slice_rows({}, {}) of a tensor with {} rows: the range must lie within the rows",
              begin, end, rank() >= 1 ? shape_[0] : 0);
  Tensor t = *this;
  t.shape_[0] = end - begin;
  int64_t row = shape_[0] ? numel() / shape_[0] : 0;
  t.data_ = static_cast<char*>(data_) + begin * row * dtype_size(dtype_);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(dtype_, shape_);
  if (dtype_ == DType::kString)
    std::copy(strings(), strings() + numel(), t.strings());
  else if (dtype_is_composite(dtype_))
    std::copy(list(), list() + numel(), t.list());  // items are shared: never written
  else if (nbytes())
    std::memcpy(t.data_, data_, nbytes());
  return t;
}

double Tensor::get_f64(int64_t i) const {
  DLSYS_CHECK(!dtype_is_composite(dtype_),
              "get_f64 of a {} value: sequences and optionals hold tensors, not numbers",
              dtype_name(dtype_));
  switch (dtype_) {
    case DType::kF32:
      return static_cast<const float*>(data_)[i];
    case DType::kBF16:
      return bf16_to_f32(static_cast<const uint16_t*>(data_)[i]);
    case DType::kF16:
      return f16_to_f32(static_cast<const uint16_t*>(data_)[i]);
    case DType::kI8:
      return static_cast<const int8_t*>(data_)[i];
    case DType::kU8:
      return static_cast<const uint8_t*>(data_)[i];
    case DType::kI32:
      return static_cast<const int32_t*>(data_)[i];
    case DType::kI64:
      return static_cast<double>(static_cast<const int64_t*>(data_)[i]);
    case DType::kBool:
      return static_cast<const uint8_t*>(data_)[i] ? 1.0 : 0.0;
    case DType::kString:
      DLSYS_CHECK(false,
                  "get_f64 of a string tensor: check dtype_is_string() before reading numbers");
      return 0;
    case DType::kF64:
      return static_cast<const double*>(data_)[i];
    case DType::kI16:
      return static_cast<const int16_t*>(data_)[i];
    case DType::kU16:
      return static_cast<const uint16_t*>(data_)[i];
    case DType::kU32:
      return static_cast<const uint32_t*>(data_)[i];
    case DType::kU64:
      return static_cast<double>(static_cast<const uint64_t*>(data_)[i]);
  }
  return 0;
}

int64_t Tensor::get_i64(int64_t i) const {
  switch (dtype_) {
    case DType::kI64:
      return static_cast<const int64_t*>(data_)[i];
    case DType::kI32:
      return static_cast<const int32_t*>(data_)[i];
    case DType::kI8:
      return static_cast<const int8_t*>(data_)[i];
    case DType::kU8:
    case DType::kBool:
      return static_cast<const uint8_t*>(data_)[i];
    case DType::kI16:
      return static_cast<const int16_t*>(data_)[i];
    case DType::kU16:
      return static_cast<const uint16_t*>(data_)[i];
    case DType::kU32:
      return static_cast<const uint32_t*>(data_)[i];
    case DType::kU64:  // bit pattern: values above INT64_MAX come back negative
      return static_cast<int64_t>(static_cast<const uint64_t*>(data_)[i]);
    default:
      return static_cast<int64_t>(get_f64(i));  // kString stops in get_f64
  }
}

}  // namespace dlsys
