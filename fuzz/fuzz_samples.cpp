// fuzz_samples: the request sample log reader (serve/request_sampler.h, docs/formats.md
// "Request samples"). Input: a mode byte, then bytes. Mode even: the bytes are a whole segment
// file. Mode odd: the bytes are one record's payload, which the harness wraps in a valid file
// header and frame (correct magic, length and CRC-32C), so that the payload parser is reached
// without the fuzzer having to forge checksums.
//
// A finding is a sanitizer report; an error that is not IOError (damage must be reported as
// such, naming the file); or a record handed to the visitor whose tensors break what the reader
// promises (a known datatype, bytes = product of the shape x the element size).
#include <array>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>

#include "core/crc32c.h"
#include "fuzz_common.h"
#include "serve/request_sampler.h"

namespace {

using dlsys::fuzz::fail;
using dlsys::fuzz::shown;
namespace serve = dlsys::serve;

using dlsys::crc32c;

template <typename T>
void put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(v));
}

// A valid segment holding one record whose payload is `payload`.
std::string wrap(const std::string& payload) {
  const std::string meta = R"({"format":"dlsys.samples/1","deployment":"d","created_us":1})";
  std::string f = "DLSYSSMP";
  put<uint32_t>(&f, 1);
  put<uint32_t>(&f, static_cast<uint32_t>(meta.size()));
  f += meta;
  put<uint32_t>(&f, crc32c(f.data(), f.size()));
  std::string frame;
  put<uint32_t>(&frame, 0x52534C44);
  put<uint32_t>(&frame, static_cast<uint32_t>(payload.size()));
  put<uint32_t>(&frame, crc32c(payload.data(), payload.size()));
  put<uint32_t>(&frame, crc32c(frame.data(), 12));
  return f + frame + payload;
}

size_t element_size(const std::string& dt) {
  static const std::map<std::string, size_t> sizes = {
      {"BOOL", 1},   {"UINT8", 1}, {"INT8", 1},   {"UINT16", 2}, {"INT16", 2},
      {"FP16", 2},   {"BF16", 2},  {"UINT32", 4}, {"INT32", 4},  {"FP32", 4},
      {"UINT64", 8}, {"INT64", 8}, {"FP64", 8}};
  auto it = sizes.find(dt);
  return it == sizes.end() ? 0 : it->second;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::string bytes = (data[0] & 1) ? wrap(rest) : rest;
  serve::SampleScan scan;
  dlsys::Status st = serve::parse_sample_segment(
      bytes, "seg", {},
      [&](serve::SampleRecord&& r) {
        for (const auto* list : {&r.inputs, &r.outputs})
          for (const auto& t : *list) {
            size_t es = element_size(t.datatype);
            uint64_t numel = 1;
            for (int64_t d : t.shape) {
              if (d < 0) fail("negative dimension accepted: %s", shown(rest).c_str());
              numel *= static_cast<uint64_t>(d);
            }
            if (es == 0 || t.data.size() != numel * es)
              fail("tensor '%s' %s of %zu bytes accepted: %s", t.name.c_str(), t.datatype.c_str(),
                   t.data.size(), shown(rest).c_str());
          }
        return dlsys::Status::OK();
      },
      &scan);
  if (!st.ok()) {
    if (st.code() != dlsys::StatusCode::kIOError ||
        st.message().find("sample log seg at offset ") != 0)
      fail("refused with %s instead of an IOError naming the file and offset: %s",
           st.to_string().c_str(), shown(rest).c_str());
  }
  return 0;
}
