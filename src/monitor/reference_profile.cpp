#include "monitor/reference_profile.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "data/export.h"

namespace dlsys::monitor {

int ReferenceProfile::index_of(const std::string& name) const {
  for (size_t i = 0; i < columns.size(); ++i)
    if (columns[i].name == name) return static_cast<int>(i);
  return -1;
}

namespace {

// A column's bins from its (non-empty) reference values, their counts and mean.
void fill_bins(std::vector<double> values, int bins, ReferenceColumn* col) {
  std::sort(values.begin(), values.end());
  col->bins = ColumnBins::from_sorted(values, bins);
  col->counts.assign(col->bins.size(), 0);
  double sum = 0;
  for (double x : values) {
    ++col->counts[col->bins.bin_of(x)];
    sum += x;
  }
  col->mean = sum / double(values.size());
}

}  // namespace

ReferenceBuilder::ReferenceBuilder(std::vector<std::string> columns, int64_t max_values,
                                   uint64_t seed, int bins)
    : names_(std::move(columns)),
      capacity_(std::max<int64_t>(1000, max_values / std::max<int64_t>(1, names_.size()))),
      bins_(bins),
      rng_(seed) {}

void ReferenceBuilder::add(const double* values, int64_t rows) {
  const size_t c = names_.size();
  for (int64_t r = 0; r < rows; ++r, ++rows_) {
    const double* row = values + r * c;
    if (rows_ < capacity_) {
      sample_.insert(sample_.end(), row, row + c);
      continue;
    }
    // Algorithm R: row i replaces a random slot with probability capacity / (i + 1).
    uint64_t j = rng_() % static_cast<uint64_t>(rows_ + 1);
    if (j < static_cast<uint64_t>(capacity_)) std::copy(row, row + c, sample_.begin() + j * c);
  }
}

ReferenceProfile ReferenceBuilder::finish(std::string source) const {
  ReferenceProfile p;
  p.source = std::move(source);
  p.rows = rows_;
  const size_t c = names_.size(), n = c ? sample_.size() / c : 0;
  std::vector<double> v;
  for (size_t k = 0; k < c; ++k) {
    ReferenceColumn col;
    col.name = names_[k];
    v.clear();
    for (size_t r = 0; r < n; ++r) {
      double x = sample_[r * c + k];
      if (std::isnan(x))
        ++col.nulls;
      else
        v.push_back(x);
    }
    if (v.empty()) v.push_back(0);  // an all-null column: one bin at 0, every value out of range
    fill_bins(std::move(v), bins_, &col);
    p.columns.push_back(std::move(col));
  }
  // The projection's scores of every sampled row, as columns of their own.
  std::vector<int> features;
  for (size_t k = 0; k < c; ++k)
    if (names_[k].rfind("__", 0) != 0) features.push_back(static_cast<int>(k));
  if (projection_k_ > 0 && features.size() >= projection_min_columns_ && n >= 2) {
    p.projection = fit_projection(sample_, c, features, projection_k_);
    const size_t kk = p.projection.components.size();
    if (kk > 0) {
      p.projection_first = static_cast<int>(p.columns.size());
      std::vector<std::vector<double>> scores(kk, std::vector<double>(n));
      std::vector<double> out(kk);
      for (size_t r = 0; r < n; ++r) {
        p.projection.project(&sample_[r * c], out.data());
        for (size_t j = 0; j < kk; ++j) scores[j][r] = out[j];
      }
      for (size_t j = 0; j < kk; ++j) {
        ReferenceColumn col;
        col.name = "__pc" + std::to_string(j + 1);
        fill_bins(std::move(scores[j]), bins_, &col);
        p.columns.push_back(std::move(col));
      }
    }
  }
  return p;
}

namespace {

// One dataset column's contribution to the profile's columns.
struct ColumnPlan {
  int schema_index = -1;
  data::ColumnType type;
  int64_t numel = 1;
  int64_t channels = 0;  // > 0: per channel (numel / channels elements each)
};

}  // namespace

Result<ReferenceProfile> profile_dataset(const data::DatasetStore& store,
                                         const data::VersionInfo& v, const std::string& split,
                                         std::vector<std::string> features,
                                         const std::string& label,
                                         const std::vector<std::string>& class_names,
                                         const TensorColumns& tensors) {
  const std::string source = split.empty() ? v.label() : v.label() + ":" + split;
  DLSYS_ASSIGN_OR_RETURN(data::Schema schema, data::Schema::from_json(v.manifest.at("schema")));
  auto find = [&](const std::string& name) {
    for (size_t i = 0; i < schema.columns.size(); ++i)
      if (schema.columns[i].name == name) return static_cast<int>(i);
    return -1;
  };
  if (features.empty())
    for (const auto& c : schema.columns)
      if (c.name != label && c.name.rfind("__", 0) != 0 && c.type != data::ColumnType::kString)
        features.push_back(c.name);
  std::vector<std::string> names;
  std::vector<ColumnPlan> plans;
  std::vector<std::string> read;
  for (const std::string& f : features) {
    int i = find(f);
    if (i < 0)
      return Status::NotFound(
          "{} has no column '{}' the model reads: is the lineage's dataset the one the model was "
          "trained on?",
          source, f);
    const data::ColumnSchema& cs = schema.columns[i];
    if (cs.type == data::ColumnType::kString) continue;  // categorical: not monitored yet
    ColumnPlan p{i, cs.type, cs.numel()};
    if (data::is_tensor(cs.type)) {
      if (p.numel > tensors.max_elements && !cs.shape.empty() && cs.shape[0] > 0) {
        p.channels = cs.shape[0];
        for (int64_t ch = 0; ch < p.channels; ++ch) names.push_back(fmt::format("{}[c={}]", f, ch));
      } else {
        for (int64_t e = 0; e < p.numel; ++e) names.push_back(fmt::format("{}[{}]", f, e));
      }
    } else {
      names.push_back(f);
    }
    plans.push_back(p);
    read.push_back(f);
  }
  int label_index = label.empty() ? -1 : find(label);
  if (!label.empty() && label_index < 0)
    return Status::NotFound("{} has no label column '{}'", source, label);
  if (label_index >= 0) {
    names.push_back("__prediction");
    read.push_back(label);
  }
  if (names.empty())
    return Status::Invalid("{}: none of the model's features is a numeric column to monitor",
                           source);
  ReferenceBuilder builder(names);
  builder.set_projection(tensors.projection_components);
  DLSYS_RETURN_IF_ERROR(
      data::for_each_batch(store, v, split, read, [&](const data::RowBatch& b) -> Status {
        std::vector<double> values(static_cast<size_t>(b.rows) * names.size());
        for (int64_t r = 0; r < b.rows; ++r) {
          double* out = values.data() + r * names.size();
          size_t k = 0;
          for (size_t pi = 0; pi < plans.size(); ++pi) {
            const ColumnPlan& p = plans[pi];
            const data::ColumnData& d = b.columns[pi];
            const bool null = d.is_null(r);
            if (!data::is_tensor(p.type)) {
              out[k++] = null                                 ? NAN
                         : p.type == data::ColumnType::kInt64 ? double(d.i64[r])
                                                              : d.f64[r];
              continue;
            }
            auto elem = [&](int64_t e) -> double {
              if (p.type == data::ColumnType::kTensorU8) return d.raw[r * p.numel + e];
              float f;
              std::memcpy(&f, d.raw.data() + (r * p.numel + e) * 4, 4);
              return f;
            };
            if (p.channels > 0) {
              int64_t per = p.numel / p.channels;
              for (int64_t ch = 0; ch < p.channels; ++ch) {
                double s = 0;
                for (int64_t e = 0; e < per; ++e) s += null ? 0 : elem(ch * per + e);
                out[k++] = null ? NAN : s / double(per);
              }
            } else {
              for (int64_t e = 0; e < p.numel; ++e) out[k++] = null ? NAN : elem(e);
            }
          }
          if (label_index >= 0) {
            const data::ColumnData& d = b.columns[plans.size()];
            double y = NAN;
            if (!d.is_null(r)) {
              std::string text = b.value_text(r, static_cast<int>(plans.size()));
              auto it = std::find(class_names.begin(), class_names.end(), text);
              if (it != class_names.end())
                y = double(it - class_names.begin());
              else if (b.schema.columns[plans.size()].type == data::ColumnType::kInt64)
                y = double(d.i64[r]);
              else if (b.schema.columns[plans.size()].type == data::ColumnType::kFloat64)
                y = d.f64[r];
            }
            out[k++] = y;
          }
        }
        builder.add(values.data(), b.rows);
        return Status::OK();
      }));
  return builder.finish(source);
}

}  // namespace dlsys::monitor
