// Metric chunks and the downsampling of a series: see metric_chunk.h.
#include "meta/metric_chunk.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <tuple>

namespace dlsys::meta {

namespace {

constexpr size_t kPointBytes = 24;
constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// x86-64 and aarch64 are little-endian; the layout is little-endian on disk.
static_assert(std::endian::native == std::endian::little, "metric chunks assume little-endian");

auto order(const HistoryPoint& p) {
  return std::tie(p.step, p.timestamp, p.value);
}

}  // namespace

std::string encode_metric_chunk(const std::vector<HistoryPoint>& points) {
  std::string raw(points.size() * kPointBytes, '\0');
  for (size_t i = 0; i < points.size(); ++i) {
    char* d = raw.data() + i * kPointBytes;
    std::memcpy(d, &points[i].step, 8);
    std::memcpy(d + 8, &points[i].timestamp, 8);
    std::memcpy(d + 16, &points[i].value, 8);
  }
  // 24 bytes a point: always whole groups of 3, so no padding.
  std::string out;
  out.reserve(raw.size() / 3 * 4);
  for (size_t i = 0; i < raw.size(); i += 3) {
    uint32_t v = (uint32_t(uint8_t(raw[i])) << 16) | (uint32_t(uint8_t(raw[i + 1])) << 8) |
                 uint32_t(uint8_t(raw[i + 2]));
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  return out;
}

Status decode_metric_chunk(std::string_view text, int64_t n_expected, int64_t min_step,
                           int64_t max_step, std::vector<HistoryPoint>* out) {
  static const auto table = [] {
    std::array<int8_t, 256> t;
    t.fill(-1);
    for (int i = 0; i < 64; ++i) t[static_cast<uint8_t>(kAlphabet[i])] = static_cast<int8_t>(i);
    return t;
  }();
  if (text.size() % 32 != 0)
    return Status::IOError("a metric chunk of {} characters is damaged: a point takes 32",
                           text.size());
  const size_t n = text.size() / 32;
  if (static_cast<int64_t>(n) != n_expected)
    return Status::IOError("a metric chunk is damaged: it holds {} points, its row says {}", n,
                           n_expected);
  out->reserve(out->size() + n);
  unsigned char raw[kPointBytes];
  for (size_t p = 0; p < n; ++p) {
    const char* s = text.data() + p * 32;
    for (size_t g = 0; g < 8; ++g) {
      uint32_t v = 0;
      for (size_t k = 0; k < 4; ++k) {
        int8_t c = table[static_cast<uint8_t>(s[g * 4 + k])];
        if (c < 0)
          return Status::IOError("a metric chunk is damaged: character {} is not base64",
                                 p * 32 + g * 4 + k);
        v = (v << 6) | static_cast<uint32_t>(c);
      }
      raw[g * 3] = static_cast<unsigned char>(v >> 16);
      raw[g * 3 + 1] = static_cast<unsigned char>(v >> 8);
      raw[g * 3 + 2] = static_cast<unsigned char>(v);
    }
    HistoryPoint h;
    std::memcpy(&h.step, raw, 8);
    std::memcpy(&h.timestamp, raw + 8, 8);
    std::memcpy(&h.value, raw + 16, 8);
    if (h.step < min_step || h.step > max_step || !std::isfinite(h.value))
      return Status::IOError(
          "a metric chunk is damaged: point {} (step {}, value {}) does not fit "
          "its row (steps {}..{}, finite values)",
          p, h.step, h.value, min_step, max_step);
    out->push_back(h);
  }
  return Status::OK();
}

void HistoryDownsampler::count(const HistoryPoint& p) {
  if (p.step >= lo_ && p.step <= hi_) count_span(1, p.step, p.step);
}

void HistoryDownsampler::count_span(int64_t n, int64_t first, int64_t last) {
  if (n <= 0) return;
  if (total_ == 0 || first < first_) first_ = first;
  if (total_ == 0 || last > last_) last_ = last;
  total_ += n;
}

void HistoryDownsampler::layout() {
  laid_out_ = true;
  whole_ = total_ <= limit_;
  if (whole_ || total_ == 0) return;
  // Equal-width buckets of steps from the first. When the steps span more than int64 (last -
  // first overflows), bucket = step / width - first / width, which never overflows (width >= 3)
  // and makes up to 3 more buckets (truncation toward zero), so fewer are asked.
  const __int128 span = static_cast<__int128>(last_) - first_ + 1;
  exact_ = span <= INT64_MAX;
  const int64_t buckets = std::max<int64_t>(1, limit_ / 3 - (exact_ ? 0 : 3));
  __int128 w = (span + buckets - 1) / buckets;
  if (!exact_) w = std::max<__int128>(w, 3);
  width_ = static_cast<int64_t>(std::min<__int128>(w, INT64_MAX));
  offset_ = exact_ ? first_ : first_ / width_;
  buckets_.assign(static_cast<size_t>(buckets + 4), Bucket{});
}

void HistoryDownsampler::keep(const HistoryPoint& p) {
  if (!laid_out_) layout();
  if (p.step < lo_ || p.step > hi_ || p.step < first_ || p.step > last_) return;
  if (whole_) {
    all_.push_back(p);
    return;
  }
  const int64_t b = exact_ ? (p.step - offset_) / width_ : p.step / width_ - offset_;
  if (b < 0 || b >= static_cast<int64_t>(buckets_.size()))
    return;  // cannot happen: asserted by the layout
  Bucket& k = buckets_[static_cast<size_t>(b)];
  if (!k.used) {
    k = {true, p, p, p};
    return;
  }
  auto before = [](const HistoryPoint& a, const HistoryPoint& c) {
    return std::tie(a.step, a.timestamp) < std::tie(c.step, c.timestamp);
  };
  if (p.value < k.lo.value || (p.value == k.lo.value && before(p, k.lo))) k.lo = p;
  if (p.value > k.hi.value || (p.value == k.hi.value && before(p, k.hi))) k.hi = p;
  if (order(p) > order(k.last)) k.last = p;
}

MetricHistory HistoryDownsampler::finish(int64_t run_id, const std::string& key) {
  if (!laid_out_) layout();
  MetricHistory h{run_id, key, total_, !whole_ && total_ > 0, {}};
  std::vector<HistoryPoint>& out = h.points;
  auto by_order = [](const HistoryPoint& a, const HistoryPoint& b) { return order(a) < order(b); };
  if (whole_) {
    out = std::move(all_);
    std::sort(out.begin(), out.end(), by_order);
    if (out.size() <= static_cast<size_t>(limit_)) return h;
    // More points came in pass 2 than pass 1 counted (a writer's chunk became visible in
    // between, on PostgreSQL): downsample what was read, in memory.
    HistoryDownsampler again(limit_, lo_, hi_);
    for (const HistoryPoint& p : out) again.count(p);
    for (const HistoryPoint& p : out) again.keep(p);
    return again.finish(run_id, key);
  }
  for (const Bucket& b : buckets_)
    if (b.used) {
      out.push_back(b.lo);
      out.push_back(b.hi);
      out.push_back(b.last);
    }
  std::sort(out.begin(), out.end(), by_order);
  out.erase(std::unique(
                out.begin(), out.end(),
                [](const HistoryPoint& a, const HistoryPoint& b) { return order(a) == order(b); }),
            out.end());
  // Only with limit < 3 (or the overflow case) can the buckets give more: keep the latest.
  if (out.size() > static_cast<size_t>(limit_)) out.erase(out.begin(), out.end() - limit_);
  return h;
}

}  // namespace dlsys::meta
