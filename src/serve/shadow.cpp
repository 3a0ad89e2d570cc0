#include "serve/shadow.h"

#include <cmath>

namespace dlsys::serve {
namespace {

bool is_float(DType t) {
  return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16;
}

int64_t argmax_row(const Tensor& t, int64_t row, int64_t cols) {
  int64_t best = 0;
  for (int64_t c = 1; c < cols; ++c)
    if (t.get_f64(row * cols + c) > t.get_f64(row * cols + best)) best = c;
  return best;
}

bool output_agrees(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  const int64_t n = a.numel();
  if (!is_float(a.dtype())) {
    for (int64_t i = 0; i < n; ++i)
      if (a.get_i64(i) != b.get_i64(i)) return false;
    return true;
  }
  if (a.rank() == 2 && a.dim(1) >= 2) {
    for (int64_t r = 0; r < a.dim(0); ++r)
      if (argmax_row(a, r, a.dim(1)) != argmax_row(b, r, b.dim(1))) return false;
    return true;
  }
  for (int64_t i = 0; i < n; ++i) {
    double x = a.get_f64(i), y = b.get_f64(i);
    if (!(std::fabs(x - y) <= 1e-4 + 1e-3 * std::fabs(x))) return false;
  }
  return true;
}

}  // namespace

bool answers_agree(const std::vector<Tensor>& served, const std::vector<Tensor>& shadow) {
  if (served.size() != shadow.size()) return false;
  for (size_t i = 0; i < served.size(); ++i)
    if (!output_agrees(served[i], shadow[i])) return false;
  return true;
}

void ShadowPair::arrive(bool is_served, const Result<std::vector<Tensor>>& out) {
  std::lock_guard<std::mutex> lock(mu_);
  if (is_served) {
    served_ok_ = out.ok();
    if (out.ok()) served_ = out.value();
  } else {
    shadow_ok_ = out.ok();
    if (out.ok()) shadow_ = out.value();
  }
  if (++arrived_ < 2) return;
  if (!shadow_ok_)
    stats_->failed.fetch_add(1, std::memory_order_relaxed);
  else if (served_ok_)
    (answers_agree(served_, shadow_) ? stats_->agreed : stats_->disagreed)
        .fetch_add(1, std::memory_order_relaxed);
}

}  // namespace dlsys::serve
