// TfIdfVectorizer (ONNX): n-gram counts of integer token sequences against a pool of n-grams,
// in TF, IDF or TFIDF mode. The pool is indexed once, when the plan is built; each run is a loop
// over start positions, skip distances and n-gram lengths. String tokens (pool_strings) are not
// supported.
//
// StringNormalizer (ONNX): removes stopwords (case-sensitively or not) and changes case
// (LOWER/UPPER/NONE) of a [C] or [1, C] string tensor. Case changes are ASCII only (the
// `locale` attribute is read and not applied to other letters). With stopwords the output's
// length depends on the values: computed when the plan is built from a constant input, else a
// dynamic output (BuildContext::set_output_dynamic) computed per run.
#include <algorithm>
#include <cctype>
#include <map>
#include <set>
#include <string>

#include "ops/op_registry.h"

namespace dlsys {
namespace {

struct TfIdf {
  // n-gram (its tokens) -> output index, one map per length n (index n - 1).
  std::vector<std::map<std::vector<int64_t>, int64_t>> pool;
  std::vector<float> weights;  // per output index (empty: 1)
  int64_t min_n = 1, max_n = 1, max_skip = 0, rows = 1, cols = 0, out_size = 0;
  int mode = 0;                // 0 TF, 1 IDF, 2 TFIDF
  std::vector<int64_t> key;    // reused lookup key (capacity max_n)
  std::vector<int64_t> count;  // per output index, one row at a time
};

// The tokens of row `r` as int64 (x is i32 or i64).
int64_t token(const Tensor& x, int64_t i) {
  return x.dtype() == DType::kI32 ? x.data_as<int32_t>()[i] : x.data_as<int64_t>()[i];
}

Result<KernelPtr> build_tfidf(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kI32, DType::kI64}));
  const Shape& x = ctx.in_shape(0);
  if (x.empty() || x.size() > 2)
    return ctx.error("X must be 1-D [C] or 2-D [N, C], got {}", shape_str(x));
  auto st = std::make_shared<TfIdf>();
  st->min_n = ctx.attr_int("min_gram_length", 0);
  st->max_n = ctx.attr_int("max_gram_length", 0);
  st->max_skip = ctx.attr_int("max_skip_count", 0);
  if (st->min_n < 1 || st->max_n < st->min_n || st->max_skip < 0)
    return ctx.error(
        "needs 1 <= min_gram_length <= max_gram_length and max_skip_count >= 0, got "
        "{}, {}, {}",
        st->min_n, st->max_n, st->max_skip);
  std::string mode = ctx.attr_string("mode", "");
  if (mode == "TF")
    st->mode = 0;
  else if (mode == "IDF")
    st->mode = 1;
  else if (mode == "TFIDF")
    st->mode = 2;
  else
    return ctx.error("mode must be TF, IDF or TFIDF, got '{}'", mode);
  if (ctx.has_attr("pool_strings") && !ctx.has_attr("pool_int64s"))
    return ctx.unsupported("pool_strings (string tokens); only pool_int64s is supported");
  std::vector<int64_t> pool = ctx.attr_ints("pool_int64s");
  std::vector<int64_t> counts = ctx.attr_ints("ngram_counts");
  std::vector<int64_t> indexes = ctx.attr_ints("ngram_indexes");
  if (counts.empty()) return ctx.error("ngram_counts is missing");
  // Length n's n-grams fill pool[counts[n-1], counts[n]) (the last one up to the pool's end).
  size_t next = 0;  // index into ngram_indexes
  st->pool.resize(counts.size());
  for (size_t k = 0; k < counts.size(); ++k) {
    int64_t n = static_cast<int64_t>(k) + 1;
    int64_t begin = counts[k],
            end = k + 1 < counts.size() ? counts[k + 1] : static_cast<int64_t>(pool.size());
    if (begin < 0 || end < begin || end > static_cast<int64_t>(pool.size()) ||
        (end - begin) % n != 0)
      return ctx.error("ngram_counts {} do not split the pool of {} values into {}-grams",
                       shape_str(counts), pool.size(), n);
    for (int64_t p = begin; p < end; p += n) {
      if (next >= indexes.size())
        return ctx.error("ngram_indexes has {} values, fewer than the pool's n-grams",
                         indexes.size());
      if (indexes[next] < 0)
        return ctx.error("ngram_indexes has a negative value {}", indexes[next]);
      st->pool[k][std::vector<int64_t>(pool.begin() + p, pool.begin() + p + n)] = indexes[next];
      st->out_size = std::max(st->out_size, indexes[next] + 1);
      ++next;
    }
  }
  if (next != indexes.size())
    return ctx.error("ngram_indexes has {} values but the pool holds {} n-grams", indexes.size(),
                     next);
  st->weights = ctx.attr_floats("weights");
  if (!st->weights.empty() && static_cast<int64_t>(st->weights.size()) != st->out_size)
    return ctx.error("weights has {} values, expected {} (one per output index)",
                     st->weights.size(), st->out_size);
  st->rows = x.size() == 2 ? x[0] : 1;
  st->cols = x.back();
  st->key.reserve(st->max_n);
  st->count.resize(st->out_size);
  ctx.set_output(0, DType::kF32,
                 x.size() == 2 ? Shape{st->rows, st->out_size} : Shape{st->out_size});
  return make_kernel([st](const Tensor* const* in, Tensor* const* out) {
    TfIdf& s = *st;
    const Tensor& xt = *in[0];
    float* y = out[0]->data_as<float>();
    int64_t max_n = std::min<int64_t>(s.max_n, static_cast<int64_t>(s.pool.size()));
    for (int64_t r = 0; r < s.rows; ++r) {
      std::fill(s.count.begin(), s.count.end(), 0);
      int64_t base = r * s.cols;
      for (int64_t i = 0; i < s.cols; ++i)
        for (int64_t d = 1; d <= s.max_skip + 1; ++d) {
          s.key.clear();
          for (int64_t n = 1; n <= max_n; ++n) {
            int64_t pos = i + (n - 1) * d;
            if (pos >= s.cols) break;
            s.key.push_back(token(xt, base + pos));
            if (n < s.min_n || (n == 1 && d > 1)) continue;  // unigrams count once
            const auto& m = s.pool[n - 1];
            auto it = m.find(s.key);
            if (it != m.end()) ++s.count[it->second];
          }
        }
      float* yr = y + r * s.out_size;
      for (int64_t j = 0; j < s.out_size; ++j) {
        float w = s.weights.empty() ? 1.f : s.weights[j];
        float c = static_cast<float>(s.count[j]);
        yr[j] = s.mode == 0 ? c : s.mode == 1 ? (c > 0 ? w : 0.f) : c * w;
      }
    }
    return Status::OK();
  });
}

struct Normalizer {
  int change = 0;  // 0 NONE, 1 LOWER, 2 UPPER
  bool case_sensitive = false;
  std::set<std::string> stopwords;  // lower-cased unless case_sensitive

  static std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  }
  static std::string upper(std::string s) {
    for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return s;
  }
  bool stop(const std::string& w) const {
    return !stopwords.empty() && stopwords.count(case_sensitive ? w : lower(w)) > 0;
  }
  std::string changed(const std::string& w) const {
    return change == 1 ? lower(w) : change == 2 ? upper(w) : w;
  }
};

Result<KernelPtr> build_string_normalizer(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kString}));
  const Shape& in = ctx.in_shape(0);
  if (!(in.size() == 1 || (in.size() == 2 && in[0] == 1)))
    return ctx.error("input must be [C] or [1, C], got {}", shape_str(in));
  auto n = std::make_shared<Normalizer>();
  const std::string action = ctx.attr_string("case_change_action", "NONE");
  if (action == "LOWER")
    n->change = 1;
  else if (action == "UPPER")
    n->change = 2;
  else if (action != "NONE")
    return ctx.error("case_change_action '{}' is not LOWER, UPPER or NONE", action);
  n->case_sensitive = ctx.attr_int("is_case_sensitive", 0) != 0;
  if (const Attribute* a = ctx.attr("stopwords"))
    for (const std::string& w : a->strings)
      n->stopwords.insert(n->case_sensitive ? w : Normalizer::lower(w));
  if (n->stopwords.empty()) {  // the output has the input's shape: at run time
    ctx.set_output(0, DType::kString, in);
    return make_kernel([n](const Tensor* const* x, Tensor* const* y) {
      const std::string* s = x[0]->data_as<std::string>();
      std::string* d = y[0]->data_as<std::string>();
      for (int64_t i = 0; i < x[0]->numel(); ++i) d[i] = n->changed(s[i]);
      return Status::OK();
    });
  }
  const bool flat = in.size() == 1;
  // The words that are not stopwords, case-changed; every word a stopword gives one empty
  // string (ONNX's rule).
  auto normalize = [n, flat](const Tensor& v) {
    std::vector<std::string> kept;
    const std::string* s = v.data_as<std::string>();
    for (int64_t i = 0; i < v.numel(); ++i)
      if (!n->stop(s[i])) kept.push_back(n->changed(s[i]));
    if (kept.empty()) kept.push_back("");
    const int64_t c = static_cast<int64_t>(kept.size());
    return Tensor::from_strings(flat ? Shape{c} : Shape{1, c}, kept);
  };
  if (const Tensor* v = ctx.in_value(0)) {
    ctx.set_output_value(0, normalize(*v));
    return KernelPtr();
  }
  ctx.set_output_dynamic(0, DType::kString);
  return make_kernel([normalize](const Tensor* const* x, Tensor* const* y) {
    *y[0] = normalize(*x[0]);
    return Status::OK();
  });
}

}  // namespace

void register_text_ops(OpRegistry& r) {
  r.add("TfIdfVectorizer", 1, 1, 1, 1, build_tfidf);
  r.add("StringNormalizer", 1, 1, 1, 1, build_string_normalizer);
  r.set_strings("StringNormalizer", 1u, true);
}

}  // namespace dlsys
