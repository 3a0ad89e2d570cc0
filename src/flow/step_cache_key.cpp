#include "flow/step_cache_key.h"

#include <algorithm>

#include "core/sha256.h"
#include "flow/pipeline_spec.h"

namespace dlsys::flow {

Result<std::string> step_cache_key(const StepCacheInputs& in) {
  DLSYS_ASSIGN_OR_RETURN(std::vector<Reference> refs, find_references(in.params, "the step"));
  if (!refs.empty())
    return Status::Invalid(
        "a step's cache key is made of resolved parameters: '{}' still holds a reference",
        in.params.dump());
  // One canonical text: nlohmann's objects keep their keys sorted, so the same parameters in
  // another order dump the same; inputs and code files are sorted for the same reason. Each
  // part is length-prefixed, so that no two different lists of parts make the same text.
  std::vector<std::string> inputs = in.inputs;
  std::sort(inputs.begin(), inputs.end());
  std::vector<std::string> files = in.code_files;
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  Sha256 h;
  auto part = [&h](const std::string& tag, const std::string& value) {
    const std::string head = tag + " " + std::to_string(value.size()) + "\n";
    h.update(head);
    h.update(value);
  };
  part("kind", in.kind);
  part("params", in.params.dump());
  for (const std::string& i : inputs) part("input", i);
  for (const std::string& f : files) {
    auto sum = sha256_file(f);
    if (!sum.ok())
      return sum.status().with_context("hashing the code file " + f + " of a command step");
    part("code", f + " " + *sum);
  }
  return h.hex_digest();
}

}  // namespace dlsys::flow
