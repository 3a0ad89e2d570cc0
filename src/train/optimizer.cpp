#include "train/optimizer.h"

#include <cmath>
#include <cstring>

namespace dlsys::train {

Result<OptimizerKind> parse_optimizer(const std::string& name) {
  if (name == "sgd") return OptimizerKind::kSgd;
  if (name == "adam") return OptimizerKind::kAdam;
  if (name == "adamw") return OptimizerKind::kAdamW;
  return Status::Invalid("unknown optimizer '{}': use sgd, adam or adamw", name);
}

Result<ScheduleKind> parse_schedule(const std::string& name) {
  if (name == "constant") return ScheduleKind::kConstant;
  if (name == "step") return ScheduleKind::kStep;
  if (name == "cosine") return ScheduleKind::kCosine;
  return Status::Invalid("unknown learning-rate schedule '{}': use constant, step or cosine", name);
}

Result<Optimizer> Optimizer::make(const OptimizerConfig& c) {
  if (c.momentum < 0 || c.momentum >= 1)
    return Status::Invalid("momentum {} must be in [0, 1)", c.momentum);
  if (c.nesterov && c.momentum <= 0) return Status::Invalid("Nesterov momentum needs momentum > 0");
  if (c.weight_decay < 0) return Status::Invalid("weight_decay {} must be >= 0", c.weight_decay);
  if (c.beta1 < 0 || c.beta1 >= 1 || c.beta2 < 0 || c.beta2 >= 1)
    return Status::Invalid("betas ({}, {}) must be in [0, 1)", c.beta1, c.beta2);
  if (c.eps <= 0) return Status::Invalid("eps {} must be > 0", c.eps);
  return Optimizer(c);
}

Tensor& Optimizer::slot(const std::string& name, const Shape& shape) {
  auto it = state_.find(name);
  if (it == state_.end()) it = state_.emplace(name, Tensor::zeros(DType::kF32, shape)).first;
  return it->second;
}

std::vector<std::string> Optimizer::slot_names() const {
  if (c_.kind != OptimizerKind::kSgd) return {"exp_avg", "exp_avg_sq"};
  if (c_.momentum > 0) return {"momentum"};
  return {};
}

void Optimizer::load_state(std::map<std::string, Tensor> state, int64_t steps) {
  state_ = std::move(state);
  t_ = steps;
}

Status Optimizer::step(const std::vector<std::string>& names, const std::vector<Tensor*>& params,
                       const std::vector<const Tensor*>& grads, double lr) {
  if (params.size() != grads.size() || names.size() != params.size())
    return Status::Internal("optimizer step: {} names, {} params, {} grads", names.size(),
                            params.size(), grads.size());
  ++t_;
  const double b1 = c_.beta1, b2 = c_.beta2, wd = c_.weight_decay;
  const double bc1 = 1 - std::pow(b1, static_cast<double>(t_));
  const double bc2 = 1 - std::pow(b2, static_cast<double>(t_));
  for (size_t k = 0; k < params.size(); ++k) {
    Tensor& p = *params[k];
    const Tensor& g = *grads[k];
    if (p.shape() != g.shape() || p.dtype() != DType::kF32 || g.dtype() != DType::kF32)
      return Status::Internal("optimizer step: parameter '{}' {} and its gradient {} differ",
                              names[k], shape_str(p.shape()), shape_str(g.shape()));
    float* w = p.data_as<float>();
    const float* gr = g.data_as<float>();
    int64_t n = p.numel();
    if (c_.kind == OptimizerKind::kSgd) {
      float* buf =
          c_.momentum > 0 ? slot(names[k] + ".momentum", p.shape()).data_as<float>() : nullptr;
      bool first = t_ == 1;
      for (int64_t i = 0; i < n; ++i) {
        double d = gr[i] + wd * w[i];
        if (buf) {
          // PyTorch: the buffer starts as the first gradient (no dampening).
          buf[i] = static_cast<float>(first ? d : c_.momentum * buf[i] + d);
          d = c_.nesterov ? d + c_.momentum * buf[i] : buf[i];
        }
        w[i] = static_cast<float>(w[i] - lr * d);
      }
    } else {
      float* m = slot(names[k] + ".exp_avg", p.shape()).data_as<float>();
      float* v = slot(names[k] + ".exp_avg_sq", p.shape()).data_as<float>();
      bool decoupled = c_.kind == OptimizerKind::kAdamW;
      for (int64_t i = 0; i < n; ++i) {
        double d = gr[i];
        double wi = w[i];
        if (decoupled)
          wi *= 1 - lr * wd;
        else
          d += wd * wi;
        m[i] = static_cast<float>(b1 * m[i] + (1 - b1) * d);
        v[i] = static_cast<float>(b2 * v[i] + (1 - b2) * d * d);
        double denom = std::sqrt(v[i] / bc2) + c_.eps;
        w[i] = static_cast<float>(wi - lr * (m[i] / bc1) / denom);
      }
    }
  }
  return Status::OK();
}

double learning_rate(const ScheduleConfig& s, int64_t step) {
  if (s.warmup_steps > 0 && step < s.warmup_steps)
    return s.lr * static_cast<double>(step + 1) / static_cast<double>(s.warmup_steps);
  int64_t t = step - s.warmup_steps;
  switch (s.kind) {
    case ScheduleKind::kConstant:
      return s.lr;
    case ScheduleKind::kStep:
      return s.lr * std::pow(s.gamma, static_cast<double>(t / std::max<int64_t>(1, s.step_size)));
    case ScheduleKind::kCosine: {
      int64_t span = std::max<int64_t>(1, s.total_steps - s.warmup_steps);
      double frac = std::min(1.0, static_cast<double>(t) / static_cast<double>(span));
      return s.min_lr + (s.lr - s.min_lr) * 0.5 * (1 + std::cos(M_PI * frac));
    }
  }
  return s.lr;
}

double clip_grad_norm(const std::vector<Tensor*>& grads, double max_norm) {
  double sq = 0;
  for (const Tensor* g : grads)
    for (int64_t i = 0; i < g->numel(); ++i) {
      double v = g->data_as<float>()[i];
      sq += v * v;
    }
  double norm = std::sqrt(sq);
  if (max_norm > 0 && norm > max_norm) {
    double scale = max_norm / (norm + 1e-6);
    for (Tensor* g : grads)
      for (int64_t i = 0; i < g->numel(); ++i)
        g->data_as<float>()[i] = static_cast<float>(g->data_as<float>()[i] * scale);
  }
  return norm;
}

}  // namespace dlsys::train
