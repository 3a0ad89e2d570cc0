// A pipeline step's cache key (issue 23, "Step caching"): the SHA-256 of everything a step's
// result depends on: its kind, its parameters with every reference resolved, the content ids of
// its inputs (a dataset version's id, a model version's file SHA-256, an artifact's SHA-256) and,
// for a command step, the content of the code files it names. Any change to one of these is a
// different key (a miss); the same ones are the same key whatever their order in the spec.
// Whether a hit may be used (every output still exists) is the runner's check, not the key's.
//
// Threading: a pure function (it reads the code files).
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "core/status.h"

namespace dlsys::flow {

struct StepCacheInputs {
  std::string kind;                                  // "train", "command", ...
  nlohmann::json params = nlohmann::json::object();  // resolved: no ${...} left
  // Content ids of the inputs, e.g. "dataset digits@3 4e8bf56345f7", "model digits@7 <sha256>":
  // an id that says what the input holds, not only its name (a re-pushed version is another).
  std::vector<std::string> inputs;
  std::vector<std::string> code_files;  // a command step's code, hashed by content
};

// The key: 64 lower-case hex characters. InvalidArgument when a parameter still holds a
// reference; NotFound/IOError naming a code file that cannot be read (a step whose code is gone
// cannot be cached, nor run).
Result<std::string> step_cache_key(const StepCacheInputs& in);

}  // namespace dlsys::flow
