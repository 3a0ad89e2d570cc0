// Linear algebra beyond MatMul, as plain loops: Einsum (any numeric dtype) and Det (f32).
//
// Einsum parses its equation when the plan is built into one label per operand axis (a
// repeated label takes a diagonal, "..." stands for broadcast leading axes, an absent "->"
// means numpy's implicit output: the labels used once, sorted, after the ellipsis). The kernel
// then walks every combination of output and summed labels once, multiplying the operands'
// elements (addresses precomputed per label as strides): transposes, sums, diagonals, inner,
// outer and batched matrix products are all this one loop. A two-operand f32 contraction
// without diagonals or labels summed within one operand (`bij,bjk->bik`, `bhqd,bhkd->bhqk`,
// `i,i`) runs instead as one oneDNN batched matmul: the operands are copied into
// [batch, M, K] and [batch, K, N] order (skipped when already there) and the product copied
// out into the output's label order.
// Det: LU factorization with partial pivoting per matrix, in double.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <type_traits>

#include "ops/dispatch.h"
#include "ops/dnnl_util.h"
#include "ops/op_registry.h"

namespace dlsys {
namespace {

// ---- Einsum ------------------------------------------------------------------------------------

// A parsed equation: per operand, one label per axis; the output's labels. Labels are chars;
// the ellipsis's axes get labels '0', '1', ... (right-aligned across operands).
struct EinsumSpec {
  std::vector<std::string> in;
  std::string out;
};

Result<EinsumSpec> parse_einsum(BuildContext& ctx, const std::string& eq_in) {
  std::string eq;
  for (char c : eq_in)
    if (c != ' ') eq += c;
  const size_t arrow = eq.find("->");
  const std::string lhs = eq.substr(0, arrow);
  std::vector<std::string> terms;
  size_t start = 0;
  while (true) {
    const size_t comma = lhs.find(',', start);
    terms.push_back(lhs.substr(start, comma == std::string::npos ? comma : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (terms.size() != ctx.num_inputs())
    return ctx.error("equation '{}' has {} operands; the node has {} inputs", eq_in, terms.size(),
                     ctx.num_inputs());
  // Ellipsis rank: the most axes any operand's "..." covers.
  int64_t ell = 0;
  std::vector<int64_t> ell_of(terms.size(), -1);
  for (size_t i = 0; i < terms.size(); ++i) {
    const std::string& t = terms[i];
    const size_t dots = t.find("...");
    int64_t letters = 0;
    for (char c : t)
      if (c != '.') {
        if (!std::isalpha(static_cast<unsigned char>(c)))
          return ctx.error("equation '{}': '{}' is not a letter", eq_in, c);
        ++letters;
      }
    const int64_t rank = static_cast<int64_t>(ctx.in_shape(i).size());
    if (dots == std::string::npos) {
      if (letters != rank)
        return ctx.error("equation '{}': operand {} has {} labels for rank {}", eq_in, i, letters,
                         rank);
    } else {
      if (letters > rank || t.find("...", dots + 3) != std::string::npos)
        return ctx.error("equation '{}': operand {} of rank {} does not fit '{}'", eq_in, i, rank,
                         t);
      ell_of[i] = rank - letters;
      ell = std::max(ell, ell_of[i]);
    }
  }
  if (ell > 10) return ctx.error("equation '{}': an ellipsis of more than 10 axes", eq_in);
  auto expand = [&](const std::string& t, int64_t n) {
    std::string s;
    for (size_t k = 0; k < t.size(); ++k) {
      if (t.compare(k, 3, "...") == 0) {
        for (int64_t j = ell - n; j < ell; ++j) s += static_cast<char>('0' + j);
        k += 2;
      } else {
        s += t[k];
      }
    }
    return s;
  };
  EinsumSpec spec;
  for (size_t i = 0; i < terms.size(); ++i) spec.in.push_back(expand(terms[i], ell_of[i]));
  if (arrow != std::string::npos) {
    const std::string rhs = eq.substr(arrow + 2);
    spec.out = expand(rhs, ell);
    for (char c : spec.out) {
      bool found = false;
      for (const std::string& t : spec.in) found = found || t.find(c) != std::string::npos;
      if (!found) return ctx.error("equation '{}': output label '{}' is in no operand", eq_in, c);
      if (std::count(spec.out.begin(), spec.out.end(), c) > 1)
        return ctx.error("equation '{}': output label '{}' repeats", eq_in, c);
    }
  } else {
    std::map<char, int> uses;
    for (const std::string& t : spec.in)
      for (char c : t)
        if (std::isalpha(static_cast<unsigned char>(c))) ++uses[c];
    for (int64_t j = 0; j < ell; ++j) spec.out += static_cast<char>('0' + j);
    for (auto& [c, n] : uses)  // std::map: sorted, as numpy's implicit output
      if (n == 1) spec.out += c;
  }
  return spec;
}

// The kernel's loop. `idx` (one per label) and `base` (one per operand) are scratch.
template <typename T>
void einsum_loop(const Tensor* const* in, size_t K,
                 const std::vector<std::vector<int64_t>>& strides,
                 const std::vector<int64_t>& sizes, size_t n_out, T* y, int64_t* idx,
                 int64_t* base) {
  using Acc = std::conditional_t<std::is_floating_point_v<T>, double, T>;
  const size_t L = sizes.size();
  int64_t out_count = 1, sum_count = 1;
  for (size_t l = 0; l < n_out; ++l) out_count *= sizes[l];
  for (size_t l = n_out; l < L; ++l) sum_count *= sizes[l];
  for (int64_t o = 0; o < out_count; ++o) {
    // Operand offsets at this output position (output labels are the first n_out).
    int64_t rest = o;
    for (size_t k = 0; k < K; ++k) base[k] = 0;
    for (size_t l = n_out; l-- > 0;) {
      const int64_t c = rest % sizes[l];
      rest /= sizes[l];
      for (size_t k = 0; k < K; ++k) base[k] += c * strides[k][l];
    }
    Acc acc = 0;
    std::fill(idx + n_out, idx + L, 0);
    for (int64_t s = 0; s < sum_count; ++s) {
      Acc p = 1;
      for (size_t k = 0; k < K; ++k) {
        int64_t off = base[k];
        for (size_t l = n_out; l < L; ++l) off += idx[l] * strides[k][l];
        p *= static_cast<Acc>(in[k]->data_as<T>()[off]);
      }
      acc += p;
      for (size_t l = L; l-- > n_out;) {
        if (++idx[l] < sizes[l]) break;
        idx[l] = 0;
      }
    }
    y[o] = static_cast<T>(acc);
  }
}

// Copies a strided view (dims `d`, element strides `st` into src) into contiguous dst.
void gather_strided(const float* src, const std::vector<int64_t>& d, const std::vector<int64_t>& st,
                    float* dst) {
  const size_t r = d.size();
  int64_t total = 1;
  for (int64_t v : d) total *= v;
  if (total == 0) return;
  const int64_t inner = r ? d[r - 1] : 1, inner_st = r ? st[r - 1] : 0;
  for (int64_t row = 0; row < total / inner; ++row) {
    int64_t off = 0, rest = row;
    for (size_t a = r - 1; a-- > 0;) {
      off += rest % d[a] * st[a];
      rest /= d[a];
    }
    float* o = dst + row * inner;
    for (int64_t j = 0; j < inner; ++j) o[j] = src[off + j * inner_st];
  }
}

// One operand's (or the product's) reordering: dims and source strides in the packed order;
// `identity`: the source is already contiguous in that order.
struct Packing {
  std::vector<int64_t> dims, strides;
  bool identity = true;
};

Packing packing(const std::vector<int64_t>& dims, const std::vector<int64_t>& strides) {
  Packing p{dims, strides, true};
  int64_t want = 1;
  for (size_t a = dims.size(); a-- > 0;) {
    if (dims[a] != 1 && strides[a] != want) p.identity = false;
    want *= dims[a];
  }
  return p;
}

// The Einsum as a oneDNN batched matmul, or null when the equation is not a plain two-operand
// contraction (then the loop runs).
Result<KernelPtr> einsum_as_matmul(BuildContext& ctx, const EinsumSpec& spec, DType t) {
  if (spec.in.size() != 2 || t != DType::kF32) return KernelPtr();
  const std::string &a = spec.in[0], &b = spec.in[1], &o = spec.out;
  auto in = [](const std::string& s, char c) { return s.find(c) != std::string::npos; };
  for (const std::string* term : {&a, &b})
    for (char c : *term) {
      if (std::count(term->begin(), term->end(), c) > 1) return KernelPtr();  // a diagonal
      if (!in(o, c) && !(in(a, c) && in(b, c))) return KernelPtr();  // summed in one operand
    }
  const Shape &sa = ctx.in_shape(0), &sb = ctx.in_shape(1);
  std::map<char, int64_t> size;
  for (size_t i = 0; i < a.size(); ++i) size[a[i]] = sa[i];
  for (size_t i = 0; i < b.size(); ++i)
    if (size.count(b[i]) && size[b[i]] != sb[i])
      return KernelPtr();  // broadcast: the loop
    else
      size[b[i]] = sb[i];
  std::string batch, m, n, k;
  for (char c : o) (in(a, c) && in(b, c) ? batch : in(a, c) ? m : n) += c;
  for (char c : a)
    if (!in(o, c)) k += c;
  auto prod = [&](const std::string& ls) {
    int64_t p = 1;
    for (char c : ls) p *= size[c];
    return p;
  };
  const int64_t B = prod(batch), M = prod(m), N = prod(n), K = prod(k);
  if (B * M * N * K == 0) return KernelPtr();
  // Packed orders: A as batch, m, k; B as batch, k, n; the product [B, M, N] read in o's order.
  auto view = [&](const std::string& term, const Shape& s, const std::string& order) {
    const std::vector<int64_t> st = shape_strides(s);
    std::vector<int64_t> d, ss;
    for (char c : order) {
      d.push_back(size[c]);
      ss.push_back(st[term.find(c)]);
    }
    return packing(d, ss);
  };
  Packing pa = view(a, sa, batch + m + k), pb = view(b, sb, batch + k + n);
  const std::string prod_order = batch + m + n;
  std::vector<int64_t> prod_dims;
  for (char c : prod_order) prod_dims.push_back(size[c]);
  Packing po = view(prod_order, prod_dims, o);
  auto call = std::make_shared<DnnlCall>();
  const auto ma = plain_md({B, M, K}, t), mb = plain_md({B, K, N}, t), mc = plain_md({B, M, N}, t);
  DLSYS_RETURN_IF_ERROR(dnnl_try(ctx, [&] {
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(ma, mb, mc), dnnl_attr(), dnnl_engine());
    call->prim = dnnl::matmul(pd);
    call->add(DNNL_ARG_SRC, ma);
    call->add(DNNL_ARG_WEIGHTS, mb);
    call->add(DNNL_ARG_DST, mc);
    ctx.set_impl(pd.impl_info_str());
  }));
  // Scratch for the packed operands and the product (only where a copy is needed).
  auto buf = std::make_shared<std::vector<float>>(
      static_cast<size_t>((pa.identity ? 0 : B * M * K) + (pb.identity ? 0 : B * K * N) +
                          (po.identity ? 0 : B * M * N)));
  return make_kernel([=](const Tensor* const* inp, Tensor* const* out) {
    float* scratch = buf->data();
    const float* A = inp[0]->data_as<float>();
    const float* Bm = inp[1]->data_as<float>();
    if (!pa.identity) {
      gather_strided(A, pa.dims, pa.strides, scratch);
      A = scratch;
      scratch += B * M * K;
    }
    if (!pb.identity) {
      gather_strided(Bm, pb.dims, pb.strides, scratch);
      Bm = scratch;
      scratch += B * K * N;
    }
    float* C = po.identity ? out[0]->data_as<float>() : scratch;
    call->bind(DNNL_ARG_SRC, A);
    call->bind(DNNL_ARG_WEIGHTS, Bm);
    call->bind(DNNL_ARG_DST, C);
    call->exec();
    if (!po.identity) gather_strided(C, po.dims, po.strides, out[0]->data_as<float>());
    return Status::OK();
  });
}

Result<KernelPtr> build_einsum(BuildContext& ctx) {
  // Every dtype with native C++ arithmetic (DLSYS_DISPATCH_NUMERIC's list); floats sum in double.
  const DType t = ctx.in_dtype(0);
  bool numeric = false;
  DLSYS_DISPATCH_NUMERIC(t, T, numeric = true);
  if (!numeric)
    return ctx.unsupported("operands of dtype {}; Einsum computes in f32 and the integer types",
                           dtype_name(t));
  for (size_t i = 1; i < ctx.num_inputs(); ++i)
    if (ctx.in_dtype(i) != t)
      return ctx.error("operand {} is {}, operand 0 is {}; they must have one dtype", i,
                       dtype_name(ctx.in_dtype(i)), dtype_name(t));
  if (!ctx.has_attr("equation")) return ctx.error("attribute 'equation' is required");
  const std::string eq = ctx.attr_string("equation", "");
  EinsumSpec spec;
  DLSYS_ASSIGN_OR_RETURN(spec, parse_einsum(ctx, eq));
  // Labels: the output's first, then the summed ones.
  std::string labels = spec.out;
  for (const std::string& term : spec.in)
    for (char c : term)
      if (labels.find(c) == std::string::npos) labels += c;
  const size_t L = labels.size(), K = spec.in.size();
  std::vector<int64_t> sizes(L, 1);
  std::vector<std::vector<int64_t>> strides(K, std::vector<int64_t>(L, 0));
  for (size_t k = 0; k < K; ++k) {
    const Shape& s = ctx.in_shape(k);
    const std::vector<int64_t> st = shape_strides(s);
    for (size_t a = 0; a < s.size(); ++a) {
      const size_t l = labels.find(spec.in[k][a]);
      if (s[a] != 1) {
        if (sizes[l] != 1 && sizes[l] != s[a])
          return ctx.error("equation '{}': label '{}' is {} in one operand and {} in another", eq,
                           spec.in[k][a], sizes[l], s[a]);
        sizes[l] = s[a];
        strides[k][l] += st[a];  // a repeated label adds its strides: the diagonal
      }                          // a label of size 1 broadcasts (stride 0), as numpy.einsum does
    }
  }
  Shape y(sizes.begin(), sizes.begin() + static_cast<int64_t>(spec.out.size()));
  ctx.set_output(0, t, y);
  KernelPtr gemm;
  DLSYS_ASSIGN_OR_RETURN(gemm, einsum_as_matmul(ctx, spec, t));
  if (gemm) return gemm;
  const size_t n_out = spec.out.size();
  auto scratch = std::make_shared<std::vector<int64_t>>(L + K);
  return make_kernel([=](const Tensor* const* in, Tensor* const* out) {
    int64_t* idx = scratch->data();
    DLSYS_DISPATCH_NUMERIC(t, T, {
      einsum_loop<T>(in, K, strides, sizes, n_out, out[0]->data_as<T>(), idx, idx + L);
    });
    return Status::OK();
  });
}

// ---- Det ---------------------------------------------------------------------------------------

Result<KernelPtr> build_det(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32}));
  const Shape& x = ctx.in_shape(0);
  if (x.size() < 2 || x[x.size() - 1] != x[x.size() - 2])
    return ctx.error("input {} must be [*, M, M] (square matrices)", shape_str(x));
  const int64_t M = x.back();
  const Shape y(x.begin(), x.end() - 2);
  ctx.set_output(0, DType::kF32, y);
  const int64_t count = shape_numel(y);
  auto lu = std::make_shared<std::vector<double>>(static_cast<size_t>(M * M));
  return make_kernel([M, count, lu](const Tensor* const* in, Tensor* const* out) {
    const float* X = in[0]->data_as<float>();
    float* Y = out[0]->data_as<float>();
    double* a = lu->data();
    for (int64_t b = 0; b < count; ++b) {
      for (int64_t i = 0; i < M * M; ++i) a[i] = X[b * M * M + i];
      double det = 1;
      for (int64_t c = 0; c < M && det != 0; ++c) {
        int64_t p = c;
        for (int64_t r = c + 1; r < M; ++r)
          if (std::fabs(a[r * M + c]) > std::fabs(a[p * M + c])) p = r;
        if (a[p * M + c] == 0) {
          det = 0;
          break;
        }
        if (p != c) {
          for (int64_t k = 0; k < M; ++k) std::swap(a[p * M + k], a[c * M + k]);
          det = -det;
        }
        det *= a[c * M + c];
        for (int64_t r = c + 1; r < M; ++r) {
          const double f = a[r * M + c] / a[c * M + c];
          for (int64_t k = c; k < M; ++k) a[r * M + k] -= f * a[c * M + k];
        }
      }
      Y[b] = static_cast<float>(det);
    }
    return Status::OK();
  });
}

}  // namespace

void register_linalg_ops(OpRegistry& r) {
  r.add("Einsum", 1, 64, 1, 1, build_einsum);
  r.add("Det", 1, 1, 1, 1, build_det);
}

}  // namespace dlsys
