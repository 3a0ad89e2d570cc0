// Tensor: a dtype, a shape and a pointer into 64-byte aligned, reference-counted storage.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tensor/dtype.h"
#include "tensor/shape.h"

namespace dlsys {

struct TensorList;

// A dense, row-major tensor. Copying a Tensor shares its storage (a view); use clone() for a
// deep copy. A default-constructed Tensor is empty (no storage, valid() is false).
// A kString tensor's storage holds constructed std::string objects (empty() and zeros() make
// empty strings; the last owner destroys them): read and write them with strings().
// A tensor of a composite dtype (a sequence or an optional, tensor/dtype.h) is rank 0 and holds
// one TensorList object: read and write it with list(). Its items are immutable once in a list:
// ops put clones of their inputs into a list and hand out clones of items, so clone() of a
// composite copies the list and shares the item tensors.
// Not thread-safe for concurrent writes to the same storage.
class Tensor {
 public:
  Tensor() = default;

  // Allocates uninitialized, 64-byte aligned storage for `shape`.
  static Tensor empty(DType dtype, const Shape& shape);
  // Allocates and zero-fills.
  static Tensor zeros(DType dtype, const Shape& shape);
  // A non-owning view of caller memory; the caller keeps `data` alive while the view is used.
  static Tensor wrap(DType dtype, const Shape& shape, void* data);
  // A scalar or 1-D tensor holding `values` (helpers for tests and shape arithmetic).
  static Tensor from_f32(const Shape& shape, const float* values);
  static Tensor from_i64(const Shape& shape, const int64_t* values);
  // A rank-0 tensor of dtype sequence_of(elem) holding `items` (each of dtype `elem`; the
  // caller hands over tensors nobody writes to again, e.g. clones).
  static Tensor sequence(DType elem, std::vector<Tensor> items);
  // A rank-0 tensor of dtype optional_of(contained) holding `value`, or nothing when null.
  static Tensor optional(DType contained, const Tensor* value);
  // A kString tensor holding `values` (numel(shape) of them, row-major).
  static Tensor from_strings(const Shape& shape, const std::vector<std::string>& values);

  bool valid() const { return data_ != nullptr || numel() == 0; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t rank() const { return static_cast<int64_t>(shape_.size()); }
  int64_t dim(int64_t i) const { return shape_[i]; }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }

  void* data() const { return data_; }
  template <typename T>
  T* data_as() const {
    return static_cast<T*>(data_);
  }

  // Points this tensor at other memory holding the same dtype and shape (no ownership taken).
  // Used by the executor to bind caller buffers without allocating.
  void reset_data(void* data) {
    storage_.reset();
    data_ = data;
  }
  // The same storage seen with another shape of equal element count (no copy).
  Tensor view(const Shape& shape) const;
  // Rows [begin, end) along axis 0, sharing storage.
  Tensor slice_rows(int64_t begin, int64_t end) const;
  // A deep copy with its own storage.
  Tensor clone() const;
  // The elements of a kString tensor (stops the process for another dtype: a caller's bug).
  std::string* strings() const;
  // The list of a composite (sequence or optional) tensor (stops the process for another
  // dtype: a caller's bug; check dtype_is_composite).
  TensorList* list() const;
  // Reads element i (row-major) converted to double / int64, whatever the numeric dtype (a
  // kString tensor has no numbers: stops the process; callers check dtype_is_string first).
  // get_i64 of a u64 above INT64_MAX returns its bit pattern (negative); get_f64 of a large
  // i64/u64 rounds.
  double get_f64(int64_t i) const;
  int64_t get_i64(int64_t i) const;

 private:
  std::shared_ptr<void> storage_;
  void* data_ = nullptr;
  DType dtype_ = DType::kF32;
  Shape shape_;
};

// The value of a sequence (any number of items) or of an optional (no item: empty, or one).
struct TensorList {
  std::vector<Tensor> items;
};

}  // namespace dlsys
