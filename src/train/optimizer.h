// Optimizers (SGD with momentum/Nesterov, Adam, AdamW) with PyTorch's update rules, learning
// rate schedules, and gradient clipping by global norm. Plain loops over f32 tensors; the
// state (moments, momentum buffers, step count) is exposed for checkpoints.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "tensor/tensor.h"

namespace dlsys::train {

enum class OptimizerKind { kSgd, kAdam, kAdamW };

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::kSgd;
  double momentum = 0.0;      // SGD
  bool nesterov = false;      // SGD, needs momentum > 0
  double weight_decay = 0.0;  // SGD/Adam: L2 added to the gradient; AdamW: decoupled
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // Adam, AdamW
};

// Parses "sgd", "adam", "adamw".
Result<OptimizerKind> parse_optimizer(const std::string& name);

class Optimizer {
 public:
  // Checks the configuration (ranges, Nesterov without momentum).
  static Result<Optimizer> make(const OptimizerConfig& config);

  // Updates each params[i] in place from grads[i] (same shapes, f32) at learning rate `lr`.
  Status step(const std::vector<std::string>& names, const std::vector<Tensor*>& params,
              const std::vector<const Tensor*>& grads, double lr);
  int64_t steps() const { return t_; }
  // The state for a checkpoint: "<param>.momentum", "<param>.exp_avg", "<param>.exp_avg_sq".
  const std::map<std::string, Tensor>& state() const { return state_; }
  // The slots it keeps per parameter once it has stepped (the state's keys are "<param>.<slot>"):
  // {"momentum"} for SGD with momentum, {} without, {"exp_avg", "exp_avg_sq"} for Adam/AdamW.
  std::vector<std::string> slot_names() const;
  // Restores a saved state and step count.
  void load_state(std::map<std::string, Tensor> state, int64_t steps);

 private:
  explicit Optimizer(const OptimizerConfig& c) : c_(c) {}
  Tensor& slot(const std::string& name, const Shape& shape);
  OptimizerConfig c_;
  std::map<std::string, Tensor> state_;
  int64_t t_ = 0;
};

enum class ScheduleKind { kConstant, kStep, kCosine };

struct ScheduleConfig {
  ScheduleKind kind = ScheduleKind::kConstant;
  double lr = 0.01;
  int64_t warmup_steps = 0;  // linear warm-up from lr/warmup_steps to lr over these steps
  int64_t step_size = 1000;  // kStep: multiply by gamma every step_size steps
  double gamma = 0.1;
  int64_t total_steps = 0;  // kCosine: anneal to min_lr by this step
  double min_lr = 0.0;
};

Result<ScheduleKind> parse_schedule(const std::string& name);
// The learning rate at optimizer step `step` (0-based).
double learning_rate(const ScheduleConfig& s, int64_t step);

// Scales the gradients in place so that their global L2 norm is at most `max_norm` (as
// torch.nn.utils.clip_grad_norm_); returns the norm before clipping.
double clip_grad_norm(const std::vector<Tensor*>& grads, double max_norm);

}  // namespace dlsys::train
