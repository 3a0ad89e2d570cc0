// Helpers for building oneDNN 2.6 primitives from dlsys shapes and running them without
// per-call allocation.
#pragma once

#include <dnnl.hpp>

#include <unordered_map>

#include "ops/kernel.h"

namespace dlsys {

// oneDNN data type for a dlsys dtype (bool maps to u8); i64, f64, i16, u16, u32 and u64 have
// none and return undef.
dnnl::memory::data_type to_dnnl(DType t);
// True when oneDNN can hold `t` in memory (to_dnnl(t) is not undef).
bool dnnl_has(DType t);
// Plain row-major memory descriptor (a rank-0 shape becomes {1}).
dnnl::memory::desc plain_md(const Shape& s, DType t);
// The channels-last format tag (nwc, nhwc, ndhwc) for an activation of rank 3 to 5: what
// oneDNN's int8 convolutions and pools run on (their plain-NCHW forms are reference kernels).
dnnl::memory::format_tag channels_last_tag(size_t rank);
// Memory descriptor with explicit element strides.
dnnl::memory::desc strided_md(const Shape& s, DType t, const std::vector<int64_t>& strides);

// The attributes every primitive dlsys executes is created with: a user-managed scratchpad.
// oneDNN's own (library) scratchpad is thread-local to the thread that *created* the primitive,
// so a plan built on one thread and run on another (a server's loader and its instances) read
// a buffer that was never allocated for it and crashed (Winograd convolutions on AVX-512).
// DnnlCall::exec passes a scratchpad owned by the executing thread instead. Add post-ops and
// scales to the returned attributes; never start from a default-constructed primitive_attr.
dnnl::primitive_attr dnnl_attr();

// A 64-byte-aligned buffer that only grows: what a thread keeps for scratch it reuses run after
// run (declare it thread_local). grow() returns at least `bytes`, keeping the contents only when
// no reallocation was needed; `what` names the buffer in the out-of-memory error.
struct GrowingBuffer {
  void* data = nullptr;
  size_t size = 0;
  GrowingBuffer() = default;
  GrowingBuffer(const GrowingBuffer&) = delete;
  GrowingBuffer& operator=(const GrowingBuffer&) = delete;
  ~GrowingBuffer();
  void* grow(size_t bytes, const char* what);
};

// A oneDNN primitive plus its argument memories, created once per plan; bind() swaps data
// pointers before each run, and exec() calls the C API with a prebuilt argument array (the C++
// execute() builds a vector per call), so running allocates nothing (after a thread's first run
// of its largest primitive, whose scratchpad it allocates).
struct DnnlCall {
  dnnl::primitive prim;  // its primitive_desc made with dnnl_attr()
  std::unordered_map<int, dnnl::memory> args;

  // Adds argument `arg` with descriptor `md` (no data yet).
  void add(int arg, const dnnl::memory::desc& md);
  void bind(int arg, const void* data) { args.at(arg).set_data_handle(const_cast<void*>(data)); }
  // Runs the primitive on the calling thread, with that thread's scratchpad.
  void exec();

 private:
  void init_scratchpad();
  std::vector<dnnl_exec_arg_t> c_args_;
  int64_t scratchpad_bytes_ = -1;  // -1: not asked yet
  dnnl::memory scratchpad_;
};

// Runs `f` and turns a dnnl::error into an Unsupported status naming the node.
template <typename F>
Status dnnl_try(const BuildContext& ctx, F&& f) {
  try {
    f();
    return Status::OK();
  } catch (const dnnl::error& e) {
    return ctx.unsupported("oneDNN could not create a primitive for these shapes ({})", e.what());
  }
}

// A reorder between two descriptors (layout or dtype change), prepared once.
struct DnnlReorder {
  DnnlCall call;
  void init(const dnnl::memory::desc& src, const dnnl::memory::desc& dst);
  void run(const void* src, void* dst) {
    call.bind(DNNL_ARG_FROM, src);
    call.bind(DNNL_ARG_TO, dst);
    call.exec();
  }
};

}  // namespace dlsys

namespace dlsys {

// A new byte buffer holding `src` (laid out as `from`) converted to `to`: for constants (weights,
// biases) prepared once at plan time, never on the run path.
Tensor reorder_once(const void* src, const dnnl::memory::desc& from, const dnnl::memory::desc& to);

// memcpy split over the OpenMP team (large copies are memory-bound; one core does not saturate
// the memory bus).
void copy_bytes(void* dst, const void* src, size_t n);

// Sets the calling thread's OpenMP thread count to 1 for its scope, then back. oneDNN fixes a
// convolution's or an RNN's thread count when the primitive is created: one made in this scope
// never opens a parallel region, which is what a kernel too small to pay for one needs (with
// passive waiting each region wakes a sleeping thread, tens of microseconds on a VM).
class OneOmpThread {
 public:
  OneOmpThread();
  ~OneOmpThread();
  OneOmpThread(const OneOmpThread&) = delete;
  OneOmpThread& operator=(const OneOmpThread&) = delete;

 private:
  int saved_;
};

// True when oneDNN can run bf16 matmul/conv here (AVX512-BF16 or AMX; probed once with a tiny
// primitive). On other CPUs oneDNN 2.6 has no bf16 kernels at all.
bool bf16_kernels_available();
// The instruction set oneDNN dispatches to on this CPU, e.g. "avx2", "avx512_core_amx".
std::string cpu_isa_name();
// True when oneDNN's int8 kernels compute exact int32 sums here (VNNI: AVX512-VNNI or
// AVX-VNNI). Without VNNI they multiply u8 x s8 with vpmaddubsw, whose int16 pair sums
// saturate (2 * 255 * 127 > 32767), and results drift far from the QDQ graph: the optimizer
// then leaves QDQ models to run op by op in f32.
bool int8_kernels_exact();

}  // namespace dlsys
