#include "data/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "core/natural_order.h"

namespace dlsys::data {

namespace {

constexpr int kQuantiles = 101;  // p0, p1, ..., p100
constexpr int kHistogramBins = 20;
constexpr int kTopValues = 20;

double uniform01(std::mt19937_64& rng) {
  return (rng() >> 11) * 0x1.0p-53;
}

// Quantile q in [0,1] of sorted `v` (linear interpolation).
double quantile(const std::vector<double>& v, double q) {
  double pos = q * (v.size() - 1);
  size_t lo = static_cast<size_t>(pos);
  size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}

// CDF read off quantiles qs (qs[i] is the i/(n-1) quantile), piecewise linear.
double cdf(const std::vector<double>& qs, double x) {
  size_t n = qs.size();
  if (x < qs.front()) return 0;
  if (x >= qs.back()) return 1;
  size_t i = std::upper_bound(qs.begin(), qs.end(), x) - qs.begin();  // qs[i-1] <= x < qs[i]
  double lo = qs[i - 1], hi = qs[i];
  // Among equal quantiles, the CDF jumps to the last of them.
  size_t j = i - 1;
  double frac = hi > lo ? (x - lo) / (hi - lo) : 0;
  return (j + frac) / (n - 1);
}

double psi_term(double expected, double actual) {
  const double eps = 1e-4;
  expected = std::max(expected, eps);
  actual = std::max(actual, eps);
  return (actual - expected) * std::log(actual / expected);
}

}  // namespace

void StatsBuilder::Moments::add(double v) {
  if (count == 0) {
    min = max = shift = v;
  } else {
    min = std::min(min, v);
    max = std::max(max, v);
  }
  ++count;
  double d = v - shift;
  sum += d;
  sumsq += d * d;
}

StatsBuilder::StatsBuilder(const Schema& schema, int64_t sample_size, uint64_t seed)
    : schema_(schema), sample_size_(sample_size), rng_(seed) {
  size_t n = schema.columns.size();
  moments_.resize(n);
  num_sample_.resize(n);
  str_sample_.resize(n);
  str_null_.resize(n);
  next_take_ = 0;
}

void StatsBuilder::take_sample_row(const RowBatch& b, int64_t r, int64_t slot) {
  for (size_t c = 0; c < b.columns.size(); ++c) {
    const ColumnData& d = b.columns[c];
    ColumnType t = schema_.columns[c].type;
    if (t == ColumnType::kString) {
      if ((int64_t)str_sample_[c].size() <= slot) {
        str_sample_[c].resize(slot + 1);
        str_null_[c].resize(slot + 1);
      }
      str_null_[c][slot] = d.is_null(r);
      str_sample_[c][slot] = d.is_null(r) ? std::string() : std::string(d.str(r));
    } else if (is_numeric_scalar(t)) {
      if ((int64_t)num_sample_[c].size() <= slot) num_sample_[c].resize(slot + 1);
      double v = std::numeric_limits<double>::quiet_NaN();
      if (!d.is_null(r)) v = t == ColumnType::kInt64 ? double(d.i64[r]) : d.f64[r];
      num_sample_[c][slot] = v;
    }
  }
}

void StatsBuilder::add(const RowBatch& b) {
  for (size_t c = 0; c < b.columns.size(); ++c) {
    const ColumnData& d = b.columns[c];
    const ColumnSchema& s = schema_.columns[c];
    Moments& m = moments_[c];
    bool has_nulls = !d.valid.empty();
    switch (s.type) {
      case ColumnType::kInt64:
        for (int64_t r = 0; r < b.rows; ++r) {
          if (has_nulls && !d.valid[r]) {
            ++m.nulls;
            continue;
          }
          m.add(double(d.i64[r]));
        }
        break;
      case ColumnType::kFloat64:
        for (int64_t r = 0; r < b.rows; ++r) {
          if (has_nulls && !d.valid[r]) {
            ++m.nulls;
            continue;
          }
          m.add(d.f64[r]);
        }
        break;
      case ColumnType::kString:
        for (int64_t r = 0; r < b.rows; ++r) {
          if (has_nulls && !d.valid[r])
            ++m.nulls;
          else
            ++m.count;
        }
        break;
      case ColumnType::kTensorU8:
        for (int64_t r = 0; r < b.rows; ++r) {
          if (has_nulls && !d.valid[r]) {
            ++m.nulls;
            continue;
          }
          int64_t n = s.numel();
          const uint8_t* p = d.raw.data() + r * n;
          uint64_t sum = 0, sq = 0;
          uint8_t lo = 255, hi = 0;
          for (int64_t i = 0; i < n; ++i) {
            sum += p[i];
            sq += uint64_t(p[i]) * p[i];
            lo = std::min(lo, p[i]);
            hi = std::max(hi, p[i]);
          }
          if (m.count == 0) m.min = lo, m.max = hi;
          m.min = std::min(m.min, double(lo));
          m.max = std::max(m.max, double(hi));
          m.count += n;
          m.sum += sum;  // shift stays 0 for bytes
          m.sumsq += sq;
        }
        break;
      case ColumnType::kTensorF32:
        for (int64_t r = 0; r < b.rows; ++r) {
          if (has_nulls && !d.valid[r]) {
            ++m.nulls;
            continue;
          }
          int64_t n = s.numel();
          const float* p = reinterpret_cast<const float*>(d.raw.data()) + r * n;
          for (int64_t i = 0; i < n; ++i) m.add(p[i]);
        }
        break;
    }
  }
  // Algorithm L reservoir over rows: the same rows are sampled for every column.
  int64_t base = rows_;
  for (int64_t r = 0; r < b.rows; ++r) {
    int64_t g = base + r;
    if (g < sample_size_) {
      take_sample_row(b, r, g);
      sample_rows_ = g + 1;
      if (g + 1 == sample_size_) {
        w_ = std::exp(std::log(uniform01(rng_) + 1e-300) / sample_size_);
        next_take_ =
            g + 1 +
            static_cast<int64_t>(std::floor(std::log(uniform01(rng_) + 1e-300) / std::log1p(-w_)));
      }
      continue;
    }
    if (g == next_take_) {
      int64_t slot = static_cast<int64_t>(uniform01(rng_) * sample_size_);
      take_sample_row(b, r, slot);
      w_ *= std::exp(std::log(uniform01(rng_) + 1e-300) / sample_size_);
      next_take_ =
          g + 1 +
          static_cast<int64_t>(std::floor(std::log(uniform01(rng_) + 1e-300) / std::log1p(-w_)));
    }
  }
  rows_ += b.rows;
}

json StatsBuilder::finish() const {
  json out = json::object();
  for (size_t c = 0; c < schema_.columns.size(); ++c) {
    const ColumnSchema& s = schema_.columns[c];
    if (s.name.rfind("__", 0) == 0) continue;
    const Moments& m = moments_[c];
    json j = {{"type", column_type_name(s.type)}, {"count", m.count}, {"nulls", m.nulls}};
    if (s.type != ColumnType::kString && m.count > 0) {
      double mean = m.shift + m.sum / m.count;
      double var = std::max(0.0, m.sumsq / m.count - (m.sum / m.count) * (m.sum / m.count));
      j["min"] = m.min;
      j["max"] = m.max;
      j["mean"] = mean;
      j["std"] = std::sqrt(var);
    }
    if (is_numeric_scalar(s.type)) {
      std::vector<double> v;
      for (int64_t i = 0; i < sample_rows_; ++i)
        if (!std::isnan(num_sample_[c][i])) v.push_back(num_sample_[c][i]);
      std::sort(v.begin(), v.end());
      j["sample_size"] = v.size();
      if (!v.empty()) {
        json q = json::array();
        for (int i = 0; i < kQuantiles; ++i) q.push_back(quantile(v, i / double(kQuantiles - 1)));
        j["quantiles"] = std::move(q);
        double lo = v.front(), hi = v.back();
        int bins = hi > lo ? kHistogramBins : 1;
        std::vector<int64_t> counts(bins, 0);
        for (double x : v) {
          int k = hi > lo ? static_cast<int>((x - lo) / (hi - lo) * bins) : 0;
          counts[std::min(k, bins - 1)]++;
        }
        json edges = json::array();
        for (int k = 0; k <= bins; ++k) edges.push_back(lo + (hi - lo) * k / bins);
        j["histogram"] = {{"edges", std::move(edges)}, {"counts", counts}};
      }
    } else if (s.type == ColumnType::kString) {
      std::map<std::string, int64_t> freq;
      int64_t n = 0;
      for (int64_t i = 0; i < sample_rows_; ++i)
        if (!str_null_[c][i]) ++freq[str_sample_[c][i]], ++n;
      std::vector<std::pair<std::string, int64_t>> top(freq.begin(), freq.end());
      std::sort(top.begin(), top.end(), [](const auto& a, const auto& b) {
        return a.second != b.second ? a.second > b.second : a.first < b.first;
      });
      json t = json::array();
      for (size_t i = 0; i < top.size() && i < size_t(kTopValues); ++i)
        t.push_back({{"value", top[i].first}, {"count", top[i].second}});
      j["sample_size"] = n;
      j["distinct_in_sample"] = freq.size();
      j["top"] = std::move(t);
    } else {
      j["shape"] = s.shape;
    }
    out[s.name] = std::move(j);
  }
  return out;
}

json compute_drift(const json& reference, const json& current, const DriftThresholds& t) {
  json out = json::object();
  json drifted = json::array(), added = json::array(), removed = json::array();
  for (auto it = reference.begin(); it != reference.end(); ++it) {
    const std::string& name = it.key();
    if (!current.contains(name)) {
      removed.push_back(name);
      continue;
    }
    const json& r = it.value();
    const json& c = current[name];
    json d = json::object();
    if (r.contains("quantiles") && c.contains("quantiles")) {
      std::vector<double> qr = r["quantiles"].get<std::vector<double>>();
      std::vector<double> qc = c["quantiles"].get<std::vector<double>>();
      double ks = 0;
      for (const auto* qs : {&qr, &qc})
        for (double x : *qs) {
          ks = std::max(ks, std::fabs(cdf(qr, x) - cdf(qc, x)));
          // Just below x too: the CDFs are right-continuous step-like at repeated quantiles.
          double below = std::nextafter(x, -INFINITY);
          ks = std::max(ks, std::fabs(cdf(qr, below) - cdf(qc, below)));
        }
      // PSI over the reference's deciles; repeated edges (a discrete column) are merged.
      std::vector<double> edges;
      for (int k = 1; k < 10; ++k) {
        double e = qr[k * 10];
        if (edges.empty() || e > edges.back()) edges.push_back(e);
      }
      double psi = 0, prev_r = 0, prev_c = 0;
      for (size_t k = 0; k <= edges.size(); ++k) {
        double fr = k < edges.size() ? cdf(qr, edges[k]) : 1.0;
        double fc = k < edges.size() ? cdf(qc, edges[k]) : 1.0;
        psi += psi_term(fr - prev_r, fc - prev_c);
        prev_r = fr;
        prev_c = fc;
      }
      d["ks"] = ks;
      d["psi"] = psi;
      d["drift"] = ks >= t.ks || psi >= t.psi;
      d["mean"] = {r.value("mean", 0.0), c.value("mean", 0.0)};
    } else if (r.contains("top") && c.contains("top")) {
      double nr = std::max<double>(1, r.value("sample_size", int64_t(0)));
      double nc = std::max<double>(1, c.value("sample_size", int64_t(0)));
      std::map<std::string, double> cur;
      for (const auto& e : c["top"])
        cur[e["value"].get<std::string>()] = e["count"].get<double>() / nc;
      double psi = 0, sr = 0, sc = 0;
      for (const auto& e : r["top"]) {
        double fr = e["count"].get<double>() / nr;
        auto f = cur.find(e["value"].get<std::string>());
        double fc = f == cur.end() ? 0 : f->second;
        psi += psi_term(fr, fc);
        sr += fr;
        sc += fc;
      }
      psi += psi_term(std::max(0.0, 1 - sr), std::max(0.0, 1 - sc));  // "other"
      d["psi"] = psi;
      d["drift"] = psi >= t.psi;
    } else {
      continue;  // tensors: no drift measure
    }
    if (d["drift"].get<bool>()) drifted.push_back(name);
    out[name] = std::move(d);
  }
  for (auto it = current.begin(); it != current.end(); ++it)
    if (!reference.contains(it.key())) added.push_back(it.key());
  auto natural = [](const std::string& x, const std::string& y) { return natural_less(x, y); };
  std::sort(drifted.begin(), drifted.end(), natural);
  std::sort(added.begin(), added.end(), natural);
  std::sort(removed.begin(), removed.end(), natural);
  out["__summary"] = {{"columns_drifted", drifted},
                      {"columns_added", added},
                      {"columns_removed", removed},
                      {"thresholds", {{"psi", t.psi}, {"ks", t.ks}}}};
  return out;
}

}  // namespace dlsys::data
