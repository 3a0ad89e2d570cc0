// Hyperparameter search specs and the ASHA policy (jobs/search_spec.h, jobs/search_policy.h),
// without processes: the rungs, the trials a grid or a seed draws, the errors a spec gets, and
// what the policy starts, promotes and calls best.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "jobs/search_policy.h"
#include "jobs/search_spec.h"

namespace dlsys::jobs {
namespace {

using nlohmann::json;

SearchSpec parse(const std::string& yaml) {
  auto s = parse_search_spec(yaml, "search.yaml");
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return s.ok() ? *s : SearchSpec{};
}

std::string error_of(const std::string& yaml) {
  auto s = parse_search_spec(yaml, "search.yaml");
  return s.ok() ? "(accepted)" : s.status().message();
}

const char* kBase = "name: s\ntrial: {spec: mlp.yaml}\n";

TEST(SearchSpec, RungsGrowByTheReductionFactorUpToTheTopBudget) {
  SearchSpec s;
  s.epochs = 27;
  EXPECT_EQ(rung_epochs(s), (std::vector<int64_t>{27})) << "without asha: one rung";
  s.asha = true;
  s.min_epochs = 1;
  s.reduction_factor = 3;
  EXPECT_EQ(rung_epochs(s), (std::vector<int64_t>{1, 3, 9, 27}));
  s.min_epochs = 2;
  EXPECT_EQ(rung_epochs(s), (std::vector<int64_t>{2, 6, 18, 27}));
  s.epochs = 81;
  s.min_epochs = 3;
  s.reduction_factor = 4;
  EXPECT_EQ(rung_epochs(s), (std::vector<int64_t>{3, 12, 48, 81}));
  s.min_epochs = 81;
  EXPECT_EQ(rung_epochs(s), (std::vector<int64_t>{81}));
}

TEST(SearchSpec, AGridIsEveryCombinationInOrderAndCappedByTrials) {
  SearchSpec s = parse(std::string(kBase) +
                       "algorithm: grid\nspace:\n  lr: {choice: [0.1, 0.01]}\n"
                       "  optimizer: {choice: [adam, sgd, adamw]}\n");
  auto p = trial_params(s);
  ASSERT_EQ(p.size(), 6u);
  // Dimensions in name order, the last fastest.
  EXPECT_EQ(p[0], (json{{"lr", 0.1}, {"optimizer", "adam"}}));
  EXPECT_EQ(p[1], (json{{"lr", 0.1}, {"optimizer", "sgd"}}));
  EXPECT_EQ(p[3], (json{{"lr", 0.01}, {"optimizer", "adam"}}));
  EXPECT_EQ(p[5], (json{{"lr", 0.01}, {"optimizer", "adamw"}}));
  s.trials = 4;
  EXPECT_EQ(trial_params(s).size(), 4u);
}

TEST(SearchSpec, RandomDrawsAreInTheirRangesAndTheSameForTheSameSeed) {
  const std::string yaml = std::string(kBase) +
                           "trials: 200\nseed: 7\nspace:\n  lr: {log_uniform: [0.0001, 0.1]}\n"
                           "  momentum: {uniform: [0.8, 0.99]}\n  hidden: {int: [16, 20]}\n"
                           "  batch_size: {choice: [32, 64]}\n";
  SearchSpec s = parse(yaml);
  auto p = trial_params(s);
  ASSERT_EQ(p.size(), 200u);
  std::set<int64_t> hidden;
  int small_lr = 0;
  for (const json& t : p) {
    const double lr = t["lr"].get<double>();
    EXPECT_GE(lr, 0.0001);
    EXPECT_LE(lr, 0.1);
    small_lr += lr < 0.00316;  // the lower half on a log scale
    EXPECT_GE(t["momentum"].get<double>(), 0.8);
    EXPECT_LT(t["momentum"].get<double>(), 0.99);
    ASSERT_TRUE(t["hidden"].is_number_integer());
    hidden.insert(t["hidden"].get<int64_t>());
    EXPECT_TRUE(t["batch_size"] == 32 || t["batch_size"] == 64);
  }
  EXPECT_EQ(hidden, (std::set<int64_t>{16, 17, 18, 19, 20})) << "both ends are drawn";
  // Log-uniform: about half below the geometric middle (a uniform draw would put ~3% there).
  EXPECT_GT(small_lr, 70);
  EXPECT_LT(small_lr, 130);
  EXPECT_EQ(trial_params(parse(yaml)), p) << "a seed draws the same trials (after a restart)";
  s.seed = 8;
  EXPECT_NE(trial_params(s), p);
}

TEST(SearchSpec, ErrorsNameTheFieldAndWhatToWrite) {
  EXPECT_NE(error_of("name: s\nspace: {lr: {choice: [1]}}\n").find("needs 'trial'"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kBase) + "trials: 3\nspace: {lr: {between: [1, 2]}}\n")
                .find("'space.lr' has 'between'"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kBase) + "algorithm: grid\nspace: {lr: {uniform: [0.1, 1]}}\n")
                .find("a grid search needs choice lists"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kBase) + "trials: 3\nspace: {lr: {log_uniform: [0, 1]}}\n")
                .find("needs low > 0"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kBase) + "trials: 3\nspace: {lr: {uniform: [2, 1]}}\n")
                .find("needs finite low < high"),
            std::string::npos);
  EXPECT_NE(
      error_of(std::string(kBase) + "trials: 3\nspace: {n: {int: [0, 18446744073709551615]}}\n")
          .find("needs whole numbers within +-2^53"),
      std::string::npos);
  EXPECT_NE(error_of(std::string(kBase) + "trials: 3\nspace: {x: {uniform: [-1e308, 1e308]}}\n")
                .find("needs finite low < high"),
            std::string::npos);
  EXPECT_NE(error_of("name: s\ntrial: {spec: mlp.yaml, hyperparameters: {train.epochs: 5}}\n"
                     "trials: 3\nepochs: 9\nspace: {lr: {choice: [1]}}\n")
                .find("'trial.hyperparameters.train.epochs'"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kBase) + "trials: 3\nspace: {epochs: {choice: [1, 2]}}\n")
                .find("the epochs are the search's budget"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kBase) + "space: {lr: {choice: [1]}}\n")
                .find("a random search needs 'trials'"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kBase) + "trials: 3\nasha: {min_epochs: 1}\n"
                                          "space: {lr: {choice: [1]}}\n")
                .find("'asha' needs 'epochs'"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kBase) + "trials: 3\nepochs: 9\nasha: {grace: 1}\n"
                                          "space: {lr: {choice: [1]}}\n")
                .find("'asha.grace' is not a field"),
            std::string::npos);
  EXPECT_NE(error_of("name: s\ntrial: {kind: command, command: [x]}\ntrials: 1\n"
                     "space: {lr: {choice: [1]}}\n")
                .find("must be a train job"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kBase) + "trials: 1\nmode: maximum\nspace: {lr: {choice: [1]}}\n")
                .find("use max"),
            std::string::npos);
  // Stored as JSON and read back unchanged.
  SearchSpec s = parse(std::string(kBase) +
                       "trials: 5\nseed: 3\nepochs: 9\nasha: {min_epochs: 1}\nmode: min\n"
                       "metric: val_loss\nspace: {lr: {log_uniform: [0.001, 0.1]}, b: {int: [1, "
                       "4]}}\nregister: {model: m, alias: a}\n");
  auto back = search_spec_from_json(to_json(s), "stored");
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(to_json(*back), to_json(s));
  EXPECT_EQ(trial_params(*back), trial_params(s));
}

meta::SearchTrial trial(int64_t n, const std::string& state, std::vector<double> results,
                        int64_t rung = -1) {
  meta::SearchTrial t;
  t.trial = n;
  t.state = state;
  for (double v : results) t.results.push_back(v);
  t.rung = rung >= 0 ? rung : std::max<int64_t>(0, static_cast<int64_t>(results.size()) - 1);
  return t;
}

SearchSpec asha(int64_t parallelism) {
  SearchSpec s;
  s.epochs = 9;
  s.asha = true;
  s.min_epochs = 1;
  s.reduction_factor = 3;  // rungs 1, 3, 9
  s.parallelism = parallelism;
  return s;
}

TEST(SearchPolicy, StartsTrialsUpToTheParallelism) {
  auto step = decide_search(asha(2), 10, {});
  ASSERT_EQ(step.actions.size(), 2u);
  EXPECT_EQ(step.actions[0].kind, SearchAction::Kind::kStart);
  EXPECT_EQ(step.actions[0].trial, 0);
  EXPECT_EQ(step.actions[1].trial, 1);
  EXPECT_FALSE(step.done);
  step = decide_search(asha(2), 10, {trial(0, "RUNNING", {}), trial(1, "RUNNING", {})});
  EXPECT_TRUE(step.actions.empty()) << "both slots taken";
  EXPECT_FALSE(step.done);
}

TEST(SearchPolicy, PromotesOnlyTheBestThirdOfARungAsResultsArrive) {
  // Two results at rung 0: floor(2 / 3) = 0 may go on; the next trial starts instead.
  std::vector<meta::SearchTrial> t = {trial(0, "PAUSED", {0.5}), trial(1, "PAUSED", {0.9})};
  auto step = decide_search(asha(1), 10, t);
  ASSERT_EQ(step.actions.size(), 1u);
  EXPECT_EQ(step.actions[0].kind, SearchAction::Kind::kStart);
  EXPECT_EQ(step.actions[0].trial, 2);
  // A third: the best of the three (trial 1) goes on to rung 1.
  t.push_back(trial(2, "PAUSED", {0.7}));
  step = decide_search(asha(1), 10, t);
  ASSERT_EQ(step.actions.size(), 1u);
  EXPECT_EQ(step.actions[0].kind, SearchAction::Kind::kPromote);
  EXPECT_EQ(step.actions[0].trial, 1);
  EXPECT_EQ(step.actions[0].rung, 0);
  // Promoted (now running at rung 1), it is not promoted again; trial 2 is not in the best
  // third, so a new trial starts.
  t[1] = trial(1, "RUNNING", {0.9}, 1);
  step = decide_search(asha(2), 10, t);
  ASSERT_EQ(step.actions.size(), 1u);
  EXPECT_EQ(step.actions[0].kind, SearchAction::Kind::kStart);
  EXPECT_EQ(step.actions[0].trial, 3);
  // Min mode: lower is better.
  SearchSpec low = asha(1);
  low.maximize = false;
  step = decide_search(
      low, 10, {trial(0, "PAUSED", {0.5}), trial(1, "PAUSED", {0.9}), trial(2, "PAUSED", {0.7})});
  ASSERT_EQ(step.actions.size(), 1u);
  EXPECT_EQ(step.actions[0].kind, SearchAction::Kind::kPromote);
  EXPECT_EQ(step.actions[0].trial, 0);
}

TEST(SearchPolicy, HigherRungsFirstAndTheBudgetsEndPromotesTheBestToTheTop) {
  // Rung 1 has three results: its best (trial 4) goes to rung 2 before anything from rung 0.
  std::vector<meta::SearchTrial> t = {
      trial(0, "PAUSED", {0.6, 0.7}),   trial(1, "PAUSED", {0.5}),       trial(2, "PAUSED", {0.4}),
      trial(3, "PAUSED", {0.65, 0.71}), trial(4, "PAUSED", {0.62, 0.8}), trial(5, "PAUSED", {0.3})};
  auto step = decide_search(asha(1), 6, t);
  ASSERT_EQ(step.actions.size(), 1u);
  EXPECT_EQ(step.actions[0].kind, SearchAction::Kind::kPromote);
  EXPECT_EQ(step.actions[0].trial, 4);
  EXPECT_EQ(step.actions[0].rung, 1);
  // Every trial started, none runs: the top rung gets the best of rung 1 even below quota.
  std::vector<meta::SearchTrial> end = {trial(0, "PAUSED", {0.6, 0.7}),
                                        trial(1, "PAUSED", {0.9, 0.75}), trial(2, "PAUSED", {0.1})};
  step = decide_search(asha(2), 3, end);
  ASSERT_EQ(step.actions.size(), 1u);
  EXPECT_EQ(step.actions[0].kind, SearchAction::Kind::kPromote);
  EXPECT_EQ(step.actions[0].trial, 1);
  EXPECT_EQ(step.actions[0].rung, 1);
  // With it done at the top, nothing is left: done, and the best is the one at the top rung
  // (not trial 0, better at rung 0).
  end[1] = trial(1, "COMPLETED", {0.9, 0.75, 0.8});
  end[0] = trial(0, "PAUSED", {0.95, 0.7});
  step = decide_search(asha(2), 3, end);
  EXPECT_TRUE(step.actions.empty());
  EXPECT_TRUE(step.done);
  EXPECT_EQ(step.best_trial, 1);
  // The trial promoted at the end failed at the next rung: the next best paused one goes on.
  step = decide_search(asha(2), 3,
                       {trial(0, "PAUSED", {0.6, 0.7}), trial(1, "FAILED", {0.9, 0.75}, 2),
                        trial(2, "PAUSED", {0.1})});
  ASSERT_EQ(step.actions.size(), 1u);
  EXPECT_EQ(step.actions[0].kind, SearchAction::Kind::kPromote);
  EXPECT_EQ(step.actions[0].trial, 0);
  EXPECT_EQ(step.actions[0].rung, 1);
  // Failed trials are never promoted and a search of failures has no best.
  step = decide_search(asha(2), 2, {trial(0, "FAILED", {}), trial(1, "FAILED", {})});
  EXPECT_TRUE(step.done);
  EXPECT_EQ(step.best_trial, -1);
}

TEST(SearchPolicy, WithoutAshaEveryTrialRunsOnceAtTheBudget) {
  SearchSpec s;
  s.epochs = 5;
  s.parallelism = 3;
  auto step = decide_search(s, 2, {});
  EXPECT_EQ(step.actions.size(), 2u) << "only two trials to draw";
  step = decide_search(s, 2, {trial(0, "COMPLETED", {0.5}), trial(1, "COMPLETED", {0.6})});
  EXPECT_TRUE(step.done);
  EXPECT_EQ(step.best_trial, 1);
}

}  // namespace
}  // namespace dlsys::jobs
