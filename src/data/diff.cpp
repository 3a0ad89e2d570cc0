#include "data/diff.h"

#include <set>
#include <unordered_map>

#include "data/shard.h"

namespace dlsys::data {

namespace {

Status count_rows(const DatasetStore& store, const VersionInfo& v,
                  const std::set<std::string>& skip, int sign,
                  std::unordered_map<int64_t, int64_t>* counts) {
  for (const auto& s : v.manifest.at("shards")) {
    std::string id = s.at("id").get<std::string>();
    if (skip.count(id)) continue;
    std::string w = fmt::format("shard {} of {}", id.substr(0, 12), v.label());
    DLSYS_ASSIGN_OR_RETURN(RowBatch b, read_shard(store.shard_path(id), {"__row"}, w));
    for (int64_t h : b.columns[0].i64) (*counts)[h] += sign;
  }
  return Status::OK();
}

}  // namespace

Result<json> diff_versions(const DatasetStore& store, const VersionInfo& from,
                           const VersionInfo& to, const DriftThresholds& thresholds) {
  std::set<std::string> a, b, shared;
  for (const auto& s : from.manifest.at("shards")) a.insert(s.at("id").get<std::string>());
  for (const auto& s : to.manifest.at("shards")) b.insert(s.at("id").get<std::string>());
  for (const auto& id : a)
    if (b.count(id)) shared.insert(id);
  std::unordered_map<int64_t, int64_t> counts;
  DLSYS_RETURN_IF_ERROR(count_rows(store, from, shared, -1, &counts));
  DLSYS_RETURN_IF_ERROR(count_rows(store, to, shared, +1, &counts));
  int64_t added = 0, removed = 0;
  for (auto& [h, n] : counts) (n > 0 ? added : removed) += std::abs(n);

  DLSYS_ASSIGN_OR_RETURN(Schema sa, Schema::from_json(from.manifest.at("schema")));
  DLSYS_ASSIGN_OR_RETURN(Schema sb, Schema::from_json(to.manifest.at("schema")));
  json cols_added = json::array(), cols_removed = json::array(), changed = json::array();
  for (const auto& c : sa.columns) {
    if (c.name.rfind("__", 0) == 0) continue;
    int i = sb.index(c.name);
    if (i < 0) {
      cols_removed.push_back(c.name);
    } else if (sb.columns[i].type != c.type || sb.columns[i].shape != c.shape) {
      changed.push_back({{"name", c.name},
                         {"from", column_type_name(c.type)},
                         {"to", column_type_name(sb.columns[i].type)}});
    }
  }
  for (const auto& c : sb.columns)
    if (c.name.rfind("__", 0) != 0 && sa.index(c.name) < 0) cols_added.push_back(c.name);
  return json{{"from", from.label()},
              {"to", to.label()},
              {"rows",
               {{"from", from.manifest.value("rows", int64_t(0))},
                {"to", to.manifest.value("rows", int64_t(0))},
                {"added", added},
                {"removed", removed},
                {"shards_shared", shared.size()}}},
              {"schema", {{"added", cols_added}, {"removed", cols_removed}, {"changed", changed}}},
              {"drift", compute_drift(from.manifest.value("stats", json::object()),
                                      to.manifest.value("stats", json::object()), thresholds)}};
}

Result<json> drift_of_sample(const VersionInfo& reference, const json& sample,
                             const DriftThresholds& thresholds) {
  if (!sample.is_object() || sample.empty())
    return Status::Invalid("the sample must be an object {{\"column\": [values...]}}");
  DLSYS_ASSIGN_OR_RETURN(Schema ref_schema, Schema::from_json(reference.manifest.at("schema")));
  Schema s;
  int64_t rows = -1;
  for (auto it = sample.begin(); it != sample.end(); ++it) {
    int c = ref_schema.index(it.key());
    if (c < 0 || it.key().rfind("__", 0) == 0)
      return Status::Invalid("sample column '{}' is not a column of {}", it.key(),
                             reference.label());
    if (!it->is_array())
      return Status::Invalid("sample column '{}' must be an array of values", it.key());
    if (rows >= 0 && static_cast<int64_t>(it->size()) != rows)
      return Status::Invalid("sample columns have different lengths ({} and {})", rows, it->size());
    rows = it->size();
    ColumnSchema cs = ref_schema.columns[c];
    if (is_tensor(cs.type))
      return Status::Unsupported("drift of tensor column '{}' is not measured", it.key());
    s.columns.push_back(cs);
  }
  RowBatch b = RowBatch::empty(s);
  for (size_t c = 0; c < s.columns.size(); ++c) {
    const json& vals = sample[s.columns[c].name];
    ColumnData& d = b.columns[c];
    b.rows = 0;
    for (const auto& v : vals) {
      if (v.is_null()) {
        b.append_null(static_cast<int>(c));
      } else {
        if (!d.valid.empty()) d.valid.push_back(1);
        switch (s.columns[c].type) {
          case ColumnType::kInt64:
            if (!v.is_number())
              return Status::Invalid("sample column '{}': {} is not a number", s.columns[c].name,
                                     v.dump());
            d.i64.push_back(v.get<int64_t>());
            break;
          case ColumnType::kFloat64:
            if (!v.is_number())
              return Status::Invalid("sample column '{}': {} is not a number", s.columns[c].name,
                                     v.dump());
            d.f64.push_back(v.get<double>());
            break;
          default:
            d.bytes += v.is_string() ? v.get<std::string>() : v.dump();
            d.offsets.push_back(d.bytes.size());
        }
      }
      ++b.rows;
    }
  }
  b.rows = rows;
  StatsBuilder stats(s, std::max<int64_t>(rows, 1));
  stats.add(b);
  json ref_stats = json::object();
  const json& all = reference.manifest.value("stats", json::object());
  for (const auto& c : s.columns)
    if (all.contains(c.name)) ref_stats[c.name] = all[c.name];
  json out = compute_drift(ref_stats, stats.finish(), thresholds);
  out["__summary"]["reference"] = reference.label();
  out["__summary"]["sample_rows"] = rows;
  return out;
}

}  // namespace dlsys::data
