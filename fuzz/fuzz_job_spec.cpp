// fuzz_job_spec: training-service job specs (YAML or JSON text, as `dlsys jobs submit` and the
// REST API will take them): jobs::parse_job_spec.
//
// A finding is a sanitizer report (deep nesting that overflows the stack included), an Internal
// error, or a spec that parses but whose stored JSON form (to_json) does not read back
// (job_spec_from_json) to the same JSON: what the server stores must be what it can load.
#include <cstdint>
#include <string>

#include "fuzz_common.h"
#include "jobs/job_spec.h"

using dlsys::fuzz::fail;
using dlsys::fuzz::shown;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 8192) return 0;
  std::string text(reinterpret_cast<const char*>(data), size);
  auto spec = dlsys::jobs::parse_job_spec(text, "job.yaml");
  if (!spec.ok()) {
    if (spec.status().code() == dlsys::StatusCode::kInternal)
      fail("an internal error for %s: %s", shown(text).c_str(), spec.status().to_string().c_str());
    return 0;
  }
  nlohmann::json stored = dlsys::jobs::to_json(*spec);
  auto back = dlsys::jobs::job_spec_from_json(stored, "stored");
  if (!back.ok())
    fail("%s parses, but its stored form %s does not read back: %s", shown(text).c_str(),
         shown(stored.dump()).c_str(), back.status().to_string().c_str());
  if (dlsys::jobs::to_json(*back) != stored)
    fail("%s: stored %s reads back as %s", shown(text).c_str(), shown(stored.dump()).c_str(),
         shown(dlsys::jobs::to_json(*back).dump()).c_str());
  return 0;
}
