#include "bench/roofline.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "ops/dnnl_util.h"

namespace dlsys {
namespace {

using dt = dnnl::memory::data_type;
using Clock = std::chrono::steady_clock;

// Best-of-N seconds per call of `f` after one warm-up call.
template <typename F>
double best_seconds(F f, int reps) {
  f();
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    auto t0 = Clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

// GFLOP/s of an n^3 matmul with the given dtypes; 0 when oneDNN has no kernel for them.
double matmul_rate(dt a, dt b, dt c, int64_t n) {
  try {
    dnnl::memory::desc ma({n, n}, a, dnnl::memory::format_tag::ab);
    dnnl::memory::desc mb({n, n}, b, dnnl::memory::format_tag::any);
    dnnl::memory::desc mc({n, n}, c, dnnl::memory::format_tag::ab);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(ma, mb, mc), dnnl_engine());
    dnnl::matmul prim(pd);
    dnnl::memory A(ma, dnnl_engine()), B(pd.weights_desc(), dnnl_engine()), C(mc, dnnl_engine());
    std::fill_n(static_cast<char*>(A.get_data_handle()), ma.get_size(), 1);
    std::fill_n(static_cast<char*>(B.get_data_handle()), pd.weights_desc().get_size(), 1);
    auto run = [&] {
      prim.execute(dnnl_stream(), {{DNNL_ARG_SRC, A}, {DNNL_ARG_WEIGHTS, B}, {DNNL_ARG_DST, C}});
      dnnl_stream().wait();
    };
    double s = best_seconds(run, 5);
    return 2.0 * static_cast<double>(n) * n * n / s / 1e9;
  } catch (const dnnl::error&) {
    return 0;
  }
}

}  // namespace

MachinePeak measure_peak() {
  MachinePeak p;
  p.isa = cpu_isa_name();
  p.f32_gflops = matmul_rate(dt::f32, dt::f32, dt::f32, 1024);
  if (bf16_kernels_available()) p.bf16_gflops = matmul_rate(dt::bf16, dt::bf16, dt::f32, 1024);
  p.int8_gops = matmul_rate(dt::u8, dt::s8, dt::s32, 1024);
  // Bandwidth: a 256 MiB copy through a oneDNN reorder (parallel, streaming).
  const int64_t n = 64 << 20;  // floats
  dnnl::memory::desc md({n}, dt::f32, dnnl::memory::format_tag::a);
  dnnl::memory src(md, dnnl_engine()), dst(md, dnnl_engine());
  std::fill_n(static_cast<float*>(src.get_data_handle()), n, 1.f);
  std::fill_n(static_cast<float*>(dst.get_data_handle()), n, 0.f);
  dnnl::reorder r(src, dst);
  double s = best_seconds(
      [&] {
        r.execute(dnnl_stream(), src, dst);
        dnnl_stream().wait();
      },
      3);
  p.mem_gbps = 2.0 * static_cast<double>(n) * 4 / s / 1e9;
  return p;
}

}  // namespace dlsys
