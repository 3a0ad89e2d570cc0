// The random source of the ops that draw values (random_ops.cpp, and Dropout in training mode):
// one generator per kernel, seeded from the node's `seed` attribute when it has one.
#pragma once

#include <random>

#include "ops/kernel.h"

namespace dlsys {

class RandomSource {
 public:
  // Seeds from ctx's `seed` attribute (the Random ops' float, by its bits, or Dropout's int):
  // equal seeds give equal streams. Without one, from std::random_device.
  explicit RandomSource(const BuildContext& ctx);
  // A double in [0, 1), 53 random bits.
  double uniform();
  // A standard normal value (Marsaglia's polar method).
  double normal();

 private:
  std::mt19937_64 engine_;
  double spare_ = 0;
  bool has_spare_ = false;
};

}  // namespace dlsys
