// Reading a step's resolved `with` values (flow/pipeline_service.h, and the server's step
// handlers in cli/pipeline_steps.h), with errors that name the step and the field, and the model
// version a reference in them names.
//
// Threading: pure functions.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "core/status.h"
#include "meta/meta_store.h"

namespace dlsys::flow {

// with[key] as text (a number is written out: "3"). Absent or null: "" unless `required`, then
// InvalidArgument "<where>: '<key>' has no value". Another type: InvalidArgument naming it.
Result<std::string> with_text(const nlohmann::json& with, const std::string& key,
                              const std::string& where, bool required = true);
// with[key] as a whole number (or text holding one); absent or null: `fallback`.
Result<int64_t> with_int(const nlohmann::json& with, const std::string& key,
                         const std::string& where, int64_t fallback);
// The registered version `text` names: NAME@N, NAME@ALIAS, or NAME (its newest). `what` names
// the field in a malformed reference's error; NotFound when there is no such version.
Result<meta::ModelVersion> find_model_version(meta::MetaStore& store, const std::string& text,
                                              const std::string& what);

}  // namespace dlsys::flow
