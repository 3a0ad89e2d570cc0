#include "serve/batch_tensors.h"

#include <cstring>

namespace dlsys::serve {

namespace {

// Bytes of one row (everything after dim 0).
size_t row_bytes(const Tensor& t) {
  int64_t row = 1;
  for (int64_t d = 1; d < t.rank(); ++d) row *= t.dim(d);
  return static_cast<size_t>(row) * dtype_size(t.dtype());
}

Shape tail(const Shape& s) {
  return Shape(s.begin() + 1, s.end());
}

}  // namespace

Result<std::vector<Tensor>> concat_rows(const std::vector<const std::vector<Tensor>*>& parts,
                                        int64_t padded_rows) {
  if (parts.empty()) return Status::Invalid("concat_rows: no parts to concatenate");
  for (size_t p = 0; p < parts.size(); ++p) {
    if (parts[p] == nullptr) return Status::Invalid("concat_rows: part {} is null", p);
  }
  const std::vector<Tensor>& first = *parts[0];
  const size_t num_inputs = first.size();
  std::vector<Tensor> out;
  out.reserve(num_inputs);
  for (size_t i = 0; i < num_inputs; ++i) {
    const Tensor& ref = first[i];
    if (ref.rank() < 1) {
      return Status::Invalid("concat_rows: input {} of part 0 is a scalar; it has no rows", i);
    }
    int64_t total = 0;
    for (size_t p = 0; p < parts.size(); ++p) {
      const std::vector<Tensor>& part = *parts[p];
      if (part.size() != num_inputs) {
        return Status::Invalid("concat_rows: part {} has {} inputs, part 0 has {}", p, part.size(),
                               num_inputs);
      }
      const Tensor& t = part[i];
      if (t.dtype() != ref.dtype()) {
        return Status::Invalid("concat_rows: input {} of part {} has dtype {}, part 0 has {}", i, p,
                               dtype_name(t.dtype()), dtype_name(ref.dtype()));
      }
      if (t.rank() < 1) {
        return Status::Invalid("concat_rows: input {} of part {} is a scalar; it has no rows", i,
                               p);
      }
      if (tail(t.shape()) != tail(ref.shape())) {
        return Status::Invalid(
            "concat_rows: input {} of part {} has shape {}, part 0 has {}: the dims after the "
            "first must agree",
            i, p, shape_str(t.shape()), shape_str(ref.shape()));
      }
      total += t.dim(0);
    }
    if (padded_rows < total) {
      return Status::Invalid("concat_rows: padded_rows {} is less than the {} rows of input {}",
                             padded_rows, total, i);
    }
    Shape shape = ref.shape();
    shape[0] = padded_rows;
    Tensor dst = Tensor::empty(ref.dtype(), shape);
    const size_t rb = row_bytes(ref);
    char* w = static_cast<char*>(dst.data());
    for (size_t p = 0; p < parts.size(); ++p) {
      const Tensor& t = (*parts[p])[i];
      const size_t n = static_cast<size_t>(t.dim(0)) * rb;
      if (n) std::memcpy(w, t.data(), n);
      w += n;
    }
    const size_t pad = static_cast<size_t>(padded_rows - total) * rb;
    if (pad) std::memset(w, 0, pad);
    out.push_back(std::move(dst));
  }
  return out;
}

Result<std::vector<std::vector<Tensor>>> split_rows(const std::vector<Tensor>& outputs,
                                                    const std::vector<int64_t>& rows) {
  int64_t total = 0;
  for (size_t r = 0; r < rows.size(); ++r) {
    if (rows[r] < 0) return Status::Invalid("split_rows: request {} has {} rows", r, rows[r]);
    total += rows[r];
  }
  for (size_t o = 0; o < outputs.size(); ++o) {
    const Tensor& t = outputs[o];
    if (t.rank() < 1) {
      return Status::Invalid(
          "split_rows: output {} is a scalar ({}): its first dimension is not the batch, so it "
          "cannot be split per request",
          o, shape_str(t.shape()));
    }
    if (t.dim(0) < total) {
      return Status::Invalid(
          "split_rows: output {} has shape {}: its first dimension is not the batch of {} rows", o,
          shape_str(t.shape()), total);
    }
  }
  std::vector<std::vector<Tensor>> result(rows.size());
  int64_t begin = 0;
  for (size_t r = 0; r < rows.size(); ++r) {
    result[r].reserve(outputs.size());
    for (const Tensor& t : outputs) {
      result[r].push_back(t.slice_rows(begin, begin + rows[r]).clone());
    }
    begin += rows[r];
  }
  return result;
}

int64_t bucket_for(int64_t rows, const std::vector<int64_t>& buckets) {
  for (int64_t b : buckets) {
    if (b >= rows) return b;
  }
  return -1;
}

std::vector<int64_t> default_buckets(int64_t max_batch) {
  std::vector<int64_t> b;
  for (int64_t v = 1; v < max_batch; v *= 2) b.push_back(v);
  if (max_batch >= 1) b.push_back(max_batch);
  return b;
}

}  // namespace dlsys::serve
