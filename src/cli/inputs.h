// Inputs for the commands that run a model on data the user may not have (bench, profile):
// NAME=FILE.npy where given, generated values (seeded normal floats, small integer ids) else.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "graph/session.h"

namespace dlsys::cli {

// Loads each NAME=FILE.npy in `input_specs` and generates the other inputs with their symbolic
// dims from `dim_specs` (NAME=VALUE) and dimension 0 = `batch`. Errors say which spec is wrong.
Result<std::map<std::string, Tensor>> make_inputs(const Session& s,
                                                  const std::vector<std::string>& input_specs,
                                                  const std::vector<std::string>& dim_specs,
                                                  int64_t batch);

}  // namespace dlsys::cli
