// This machine's roofline: peak compute per dtype, measured with a oneDNN matmul (1024^3) on the
// calling thread's OpenMP team, and the memory bandwidth, measured with a large copy. The
// profiler divides each op's achieved rate by these.
#pragma once

#include <string>

namespace dlsys {

struct MachinePeak {
  std::string isa;         // what oneDNN dispatches to
  double f32_gflops = 0;   // 0: not measurable here
  double bf16_gflops = 0;  // 0 when the CPU has no bf16 kernels
  double int8_gops = 0;    // u8 x s8 -> s32
  double mem_gbps = 0;     // bytes read + written per second by a 256 MiB copy
  // Arithmetic intensity (FLOP per byte) above which an op is compute-bound at f32.
  double ridge_f32() const { return mem_gbps > 0 ? f32_gflops / mem_gbps : 0; }
};

// Takes about a second. Uses the current OpenMP thread count.
MachinePeak measure_peak();

}  // namespace dlsys
