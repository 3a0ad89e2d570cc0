#include "ops/dnnl_util.h"

#include <omp.h>

#include <cstdio>
#include <cstdlib>

#include <algorithm>
#include <cstring>

namespace dlsys {

using dt = dnnl::memory::data_type;

dnnl::memory::data_type to_dnnl(DType t) {
  switch (t) {
    case DType::kF32:
      return dt::f32;
    case DType::kBF16:
      return dt::bf16;
    case DType::kF16:
      return dt::f16;
    case DType::kI8:
      return dt::s8;
    case DType::kU8:
      return dt::u8;
    case DType::kBool:
      return dt::u8;
    case DType::kI32:
      return dt::s32;
    case DType::kI64:
    case DType::kString:
    case DType::kF64:
    case DType::kI16:
    case DType::kU16:
    case DType::kU32:
    case DType::kU64:
      return dt::undef;
  }
  return dt::undef;
}

bool dnnl_has(DType t) {
  return to_dnnl(t) != dt::undef;
}

dnnl::memory::desc plain_md(const Shape& s, DType t) {
  dnnl::memory::dims dims(s.begin(), s.end());
  if (dims.empty()) dims.push_back(1);
  dnnl::memory::dims strides(dims.size(), 1);
  for (int i = static_cast<int>(dims.size()) - 2; i >= 0; --i)
    strides[i] = strides[i + 1] * dims[i + 1];
  return dnnl::memory::desc(dims, to_dnnl(t), strides);
}

dnnl::memory::format_tag channels_last_tag(size_t rank) {
  using tag = dnnl::memory::format_tag;
  return rank == 3 ? tag::acb : rank == 4 ? tag::acdb : tag::acdeb;
}

dnnl::memory::desc strided_md(const Shape& s, DType t, const std::vector<int64_t>& strides) {
  dnnl::memory::dims dims(s.begin(), s.end());
  dnnl::memory::dims st(strides.begin(), strides.end());
  return dnnl::memory::desc(dims, to_dnnl(t), st);
}

void DnnlCall::add(int arg, const dnnl::memory::desc& md) {
  auto it = args.emplace(arg, dnnl::memory(md, dnnl_engine(), DNNL_MEMORY_NONE)).first;
  c_args_.push_back(dnnl_exec_arg_t{arg, it->second.get()});
}

dnnl::primitive_attr dnnl_attr() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

GrowingBuffer::~GrowingBuffer() {
  std::free(data);
}

void* GrowingBuffer::grow(size_t bytes, const char* what) {
  if (size < bytes) {
    std::free(data);
    size_t rounded = (bytes + 63) / 64 * 64;
    data = std::aligned_alloc(64, rounded);
    DLSYS_CHECK(data != nullptr, "out of memory allocating a {}-byte {}", rounded, what);
    size = rounded;
  }
  return data;
}

namespace {

// The calling thread's scratchpad, grown to at least `bytes` (never shrunk: a thread's largest
// primitive sets its size). One run at a time per thread, so primitives share it.
void* thread_scratchpad(size_t bytes) {
  thread_local GrowingBuffer buf;
  return buf.grow(bytes, "oneDNN scratchpad");
}

}  // namespace

void DnnlCall::init_scratchpad() {
  const_dnnl_primitive_desc_t pd = nullptr;
  DLSYS_CHECK(dnnl_primitive_get_primitive_desc(prim.get(), &pd) == dnnl_success,
              "DnnlCall::exec before a primitive was set");
  const_dnnl_primitive_attr_t attr = nullptr;
  dnnl_scratchpad_mode_t mode = dnnl_scratchpad_mode_library;
  DLSYS_CHECK(dnnl_primitive_desc_get_attr(pd, &attr) == dnnl_success &&
                  dnnl_primitive_attr_get_scratchpad_mode(attr, &mode) == dnnl_success &&
                  mode == dnnl_scratchpad_mode_user,
              "a oneDNN primitive was created without dnnl_attr(): its scratchpad would belong to "
              "the creating thread (pass dnnl_attr() to its primitive_desc)");
  const dnnl_memory_desc_t* md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  scratchpad_bytes_ = md ? static_cast<int64_t>(dnnl_memory_desc_get_size(md)) : 0;
  if (scratchpad_bytes_ > 0) {
    scratchpad_ = dnnl::memory(dnnl::memory::desc(*md), dnnl_engine(), DNNL_MEMORY_NONE);
    c_args_.push_back(dnnl_exec_arg_t{DNNL_ARG_SCRATCHPAD, scratchpad_.get()});
  }
}

void DnnlCall::exec() {
  if (scratchpad_bytes_ < 0) init_scratchpad();
  if (scratchpad_bytes_ > 0)
    scratchpad_.set_data_handle(thread_scratchpad(static_cast<size_t>(scratchpad_bytes_)));
  dnnl_status_t st = dnnl_primitive_execute(prim.get(), dnnl_stream().get(),
                                            static_cast<int>(c_args_.size()), c_args_.data());
  if (st != dnnl_success) {
    // A programming error (an argument the primitive needs was never added or bound): stop here
    // rather than hand on a buffer the primitive never wrote.
    DLSYS_CHECK(false,
                "oneDNN execute failed with status {} (primitive kind {}): are all its arguments "
                "added and bound to buffers?",
                static_cast<int>(st), static_cast<int>(prim.get_kind()));
  }
}

void DnnlReorder::init(const dnnl::memory::desc& src, const dnnl::memory::desc& dst) {
  call.prim = dnnl::reorder(
      dnnl::reorder::primitive_desc(dnnl_engine(), src, dnnl_engine(), dst, dnnl_attr()));
  call.add(DNNL_ARG_FROM, src);
  call.add(DNNL_ARG_TO, dst);
}

}  // namespace dlsys

namespace dlsys {

Tensor reorder_once(const void* src, const dnnl::memory::desc& from, const dnnl::memory::desc& to) {
  Tensor buf = Tensor::empty(DType::kU8, {static_cast<int64_t>(to.get_size())});
  DnnlReorder r;
  r.init(from, to);
  r.run(src, buf.data());
  dnnl_stream().wait();
  return buf;
}

OneOmpThread::OneOmpThread() : saved_(omp_get_max_threads()) {
  if (saved_ != 1) omp_set_num_threads(1);
}

OneOmpThread::~OneOmpThread() {
  if (saved_ != 1) omp_set_num_threads(saved_);
}

void copy_bytes(void* dst, const void* src, size_t n) {
  constexpr size_t kChunk = 1 << 18;
  if (n < 2 * kChunk) {
    std::memcpy(dst, src, n);
    return;
  }
  int64_t chunks = static_cast<int64_t>((n + kChunk - 1) / kChunk);
#pragma omp parallel for
  for (int64_t c = 0; c < chunks; ++c) {
    size_t b = static_cast<size_t>(c) * kChunk, e = std::min(n, b + kChunk);
    std::memcpy(static_cast<char*>(dst) + b, static_cast<const char*>(src) + b, e - b);
  }
}

bool bf16_kernels_available() {
  static const bool ok = [] {
    try {
      dnnl::memory::desc a({16, 16}, dt::bf16, dnnl::memory::format_tag::ab);
      dnnl::memory::desc c({16, 16}, dt::f32, dnnl::memory::format_tag::ab);
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, a, c), dnnl_engine());
      return true;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return ok;
}

bool int8_kernels_exact() {
  // oneDNN's ISA values are bit sets: 0x40 is AVX512-VNNI (and every ISA above it), 0x400
  // AVX-VNNI on AVX2.
  unsigned isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  return (isa & 0x40u) != 0 || (isa & 0x400u) != 0;
}

std::string cpu_isa_name() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41:
      return "sse41";
    case dnnl::cpu_isa::avx:
      return "avx";
    case dnnl::cpu_isa::avx2:
      return "avx2";
    case dnnl::cpu_isa::avx512_core:
      return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni:
      return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16:
      return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx:
      return "avx512_core_amx";
    default:
      return "other";
  }
}

}  // namespace dlsys
