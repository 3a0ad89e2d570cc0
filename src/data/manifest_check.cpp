#include "data/manifest_check.h"

#include <fmt/format.h>

#include "core/json_get.h"

namespace dlsys::data {
namespace {

constexpr size_t kQuantileCount = 101;  // p0..p100, as StatsBuilder writes them

bool is_hex64(const json& v) {
  if (!v.is_string()) return false;
  const std::string& s = v.get_ref<const std::string&>();
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

// One error shape for every field: "the manifest of digits@v3: 'shards[2].rows' must be a
// non-negative integer, got a string; the store is damaged".
Status bad(std::string_view doc, std::string_view label, std::string_view field,
           std::string_view expected, const json* got) {
  return Status::Invalid("the {} of {}: '{}' must be {}{}; the store is damaged", doc, label, field,
                         expected,
                         got ? fmt::format(", got {}", json_type_phrase(*got)) : ", it is missing");
}

bool is_count(const json& v) {
  return v.is_number_integer() && (v.is_number_unsigned() || v.get<int64_t>() >= 0);
}

}  // namespace

Status check_stats(const json& stats, std::string_view label) {
  const std::string_view doc = "statistics";
  if (!stats.is_object()) return bad(doc, label, "stats", "an object", &stats);
  for (auto it = stats.begin(); it != stats.end(); ++it) {
    const std::string& col = it.key();
    const json& c = it.value();
    if (!c.is_object()) return bad(doc, label, col, "an object", &c);
    for (const char* k : {"count", "nulls", "sample_size", "distinct_in_sample"})
      if (auto f = c.find(k); f != c.end() && !is_count(*f))
        return bad(doc, label, col + "." + k, "a non-negative integer", &*f);
    for (const char* k : {"min", "max", "mean", "std"})
      if (auto f = c.find(k); f != c.end() && !f->is_number())
        return bad(doc, label, col + "." + k, "a number", &*f);
    if (auto f = c.find("quantiles"); f != c.end()) {
      if (!f->is_array() || f->size() != kQuantileCount)
        return bad(doc, label, col + ".quantiles", "an array of 101 numbers", &*f);
      for (const auto& q : *f)
        if (!q.is_number()) return bad(doc, label, col + ".quantiles[]", "a number", &q);
    }
    if (auto f = c.find("histogram"); f != c.end()) {
      auto e = f->find("edges"), n = f->find("counts");
      if (!f->is_object() || e == f->end() || n == f->end() || !e->is_array() || !n->is_array() ||
          e->size() != n->size() + 1)
        return bad(doc, label, col + ".histogram",
                   "an object with \"edges\" one longer than \"counts\"", &*f);
      for (const auto& x : *e)
        if (!x.is_number()) return bad(doc, label, col + ".histogram.edges[]", "a number", &x);
      for (const auto& x : *n)
        if (!is_count(x))
          return bad(doc, label, col + ".histogram.counts[]", "a non-negative integer", &x);
    }
    if (auto f = c.find("top"); f != c.end()) {
      if (!f->is_array()) return bad(doc, label, col + ".top", "an array", &*f);
      for (const auto& t : *f) {
        auto v = t.find("value"), n = t.find("count");
        if (!t.is_object() || v == t.end() || !v->is_string() || n == t.end() || !is_count(*n))
          return bad(doc, label, col + ".top[]",
                     "an object with a string \"value\" and an integer \"count\"", &t);
      }
    }
  }
  return Status::OK();
}

Status check_manifest(const json& m, std::string_view label) {
  const std::string_view doc = "manifest";
  if (!m.is_object()) return bad(doc, label, "(top level)", "an object", &m);
  auto need = [&](const char* key) -> const json* {
    auto f = m.find(key);
    return f == m.end() ? nullptr : &*f;
  };
  const json* rows = need("rows");
  if (!rows || !is_count(*rows)) return bad(doc, label, "rows", "a non-negative integer", rows);
  const json* created = need("created_ms");
  if (!created || !created->is_number_integer())
    return bad(doc, label, "created_ms", "an integer", created);
  if (const json* p = need("parent"); p && !p->is_null() && !p->is_string())
    return bad(doc, label, "parent", "null or a string", p);
  for (const char* k : {"author", "message", "name", "format"})
    if (const json* f = need(k); f && !f->is_string()) return bad(doc, label, k, "a string", f);

  const json* schema = need("schema");
  const json* cols = schema && schema->is_object() && schema->contains("columns")
                         ? &(*schema)["columns"]
                         : nullptr;
  if (!cols || !cols->is_array())
    return bad(doc, label, "schema.columns", "an array", cols ? cols : schema);
  for (size_t i = 0; i < cols->size(); ++i) {
    const json& c = (*cols)[i];
    std::string at = fmt::format("schema.columns[{}]", i);
    if (!c.is_object()) return bad(doc, label, at, "an object", &c);
    for (const char* k : {"name", "type"}) {
      auto f = c.find(k);
      if (f == c.end() || !f->is_string())
        return bad(doc, label, at + "." + k, "a string", f == c.end() ? nullptr : &*f);
    }
    if (auto f = c.find("shape"); f != c.end()) {
      if (!f->is_array()) return bad(doc, label, at + ".shape", "an array of integers", &*f);
      for (const auto& d : *f)
        if (!is_count(d)) return bad(doc, label, at + ".shape[]", "a non-negative integer", &d);
    }
  }

  const json* shards = need("shards");
  if (!shards || !shards->is_array()) return bad(doc, label, "shards", "an array", shards);
  for (size_t i = 0; i < shards->size(); ++i) {
    const json& s = (*shards)[i];
    std::string at = fmt::format("shards[{}]", i);
    if (!s.is_object()) return bad(doc, label, at, "an object", &s);
    auto id = s.find("id");
    if (id == s.end() || !is_hex64(*id))
      return bad(doc, label, at + ".id", "a SHA-256 (64 lower-case hex digits)",
                 id == s.end() ? nullptr : &*id);
    for (const char* k : {"rows", "bytes"}) {
      auto f = s.find(k);
      if (f == s.end() || !is_count(*f))
        return bad(doc, label, at + "." + k, "a non-negative integer",
                   f == s.end() ? nullptr : &*f);
    }
  }

  if (const json* split = need("split")) {
    if (!split->is_object()) return bad(doc, label, "split", "an object", split);
    auto r = split->find("rows");
    if (r == split->end() || !r->is_object())
      return bad(doc, label, "split.rows", "an object", r == split->end() ? nullptr : &*r);
    for (const char* k : {"train", "validation", "test"}) {
      auto f = r->find(k);
      if (f == r->end() || !is_count(*f))
        return bad(doc, label, fmt::format("split.rows.{}", k), "a non-negative integer",
                   f == r->end() ? nullptr : &*f);
    }
    if (auto k = split->find("key"); k != split->end() && !k->is_null() && !k->is_string())
      return bad(doc, label, "split.key", "null or a string", &*k);
  }
  if (const json* src = need("source"); src && !src->is_object())
    return bad(doc, label, "source", "an object", src);
  if (const json* sid = need("stats_id"); sid && !is_hex64(*sid))
    return bad(doc, label, "stats_id", "a SHA-256 (64 lower-case hex digits)", sid);
  if (const json* st = need("stats")) DLSYS_RETURN_IF_ERROR(check_stats(*st, label));
  return Status::OK();
}

}  // namespace dlsys::data
