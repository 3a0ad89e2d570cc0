// Reading a step's resolved `with` values (flow/pipeline_service.h, and the server's step
// handlers in cli/pipeline_steps.h), with errors that name the step and the field.
//
// Threading: pure functions.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "core/status.h"

namespace dlsys::flow {

// with[key] as text (a number is written out: "3"). Absent or null: "" unless `required`, then
// InvalidArgument "<where>: '<key>' has no value". Another type: InvalidArgument naming it.
Result<std::string> with_text(const nlohmann::json& with, const std::string& key,
                              const std::string& where, bool required = true);
// with[key] as a whole number (or text holding one); absent or null: `fallback`.
Result<int64_t> with_int(const nlohmann::json& with, const std::string& key,
                         const std::string& where, int64_t fallback);

}  // namespace dlsys::flow
