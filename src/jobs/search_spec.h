// A hyperparameter search spec (YAML or JSON, docs/search.md): the train job every trial runs,
// the space its hyperparameters are drawn from (grid or random), the metric to optimize, how many
// trials run at once, and successive halving (ASHA) to stop poor trials early. Parsed like a job
// spec (job_spec.h): unknown fields are errors, and every error names the file and the field.
//
//   name: digits-lr
//   trial: {spec: ../digits/mlp.yaml, resources: {threads: 1}}   # a train job (job_spec.h)
//   space:
//     lr: {log_uniform: [0.0001, 0.1]}
//     batch_size: {choice: [32, 64, 128]}
//   algorithm: random        # or grid (every combination of choice lists)
//   trials: 27               # random: how many; grid: at most this many (0: all)
//   metric: val_accuracy     # a metric of the trial's run (its last value), and
//   mode: max                # whether higher or lower is better
//   parallelism: 2           # trials queued or running at once
//   epochs: 27               # what every trial trains (the top rung's budget with asha)
//   asha: {min_epochs: 3, reduction_factor: 3}   # rungs of 3, 9, 27 epochs
//   register: {model: digits-best, alias: candidate}   # the best trial's model, when it ends
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "jobs/job_spec.h"

namespace dlsys::jobs {

// One dimension of the search space.
struct ParamSpace {
  enum class Kind { kChoice, kUniform, kLogUniform, kInt };
  std::string name;  // as `dlsys train --set` names it: lr, batch_size, train.optimizer.lr
  Kind kind = Kind::kChoice;
  std::vector<nlohmann::json> choices;  // kChoice: scalars
  double low = 0, high = 0;             // kUniform, kLogUniform (low > 0), kInt: [low, high]
};

struct SearchSpec {
  std::string name;
  JobSpec trial;  // a train job; its hyperparameters are every trial's, the space's added
  std::vector<ParamSpace> space;  // in name order
  bool grid = false;              // grid (choices only) or random
  int64_t trials = 0;             // random: how many; grid: at most (0: every combination)
  uint64_t seed = 0;              // random draws
  std::string metric = "val_accuracy";
  bool maximize = true;
  int64_t parallelism = 1;
  int64_t epochs = 0;  // each trial's epochs (the top rung); 0: the trial spec's own (no asha)
  bool asha = false;
  int64_t min_epochs = 1;                  // asha: the first rung's budget
  int64_t reduction_factor = 3;            // asha: 1/reduction_factor of a rung go on to the next
  std::string register_model, move_alias;  // when it ends: the best trial's model
};

// Parses a spec from `text` (YAML or JSON); `path` names it in errors.
Result<SearchSpec> parse_search_spec(const std::string& text, const std::string& path);
// Reads the file at `path`; the trial's spec (and working_dir) are made absolute, relative to
// the file's folder (load_job_spec).
Result<SearchSpec> load_search_spec(const std::string& path);
// As stored and served (every field) and back, with the same checks.
nlohmann::json to_json(const SearchSpec& s);
Result<SearchSpec> search_spec_from_json(const nlohmann::json& j, const std::string& what);

// The epochs of each rung, lowest first: min_epochs x reduction_factor^k below epochs, then
// epochs (asha: 3, 9, 27); without asha one rung, `epochs` (0: the trial spec's own).
std::vector<int64_t> rung_epochs(const SearchSpec& s);

// The hyperparameters of every trial, in trial order: grid, every combination of the choice
// lists (the last dimension varying fastest), at most `trials`; random, `trials` draws from
// `seed` (the same spec draws the same trials, after a restart too).
std::vector<nlohmann::json> trial_params(const SearchSpec& s);

// The job trial `params` runs at `epochs` (0: the spec's own): the trial's job spec with the
// search's hyperparameters added, named <search>-t<trial>.
JobSpec trial_job(const SearchSpec& s, const std::string& search_name, int64_t trial,
                  const nlohmann::json& params, int64_t epochs);

}  // namespace dlsys::jobs
