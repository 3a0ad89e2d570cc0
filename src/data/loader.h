// The Loader interface: how batches reach whoever consumes them (the trainer today; evaluation
// and serving's replay later). The data module owns loading: TensorLoader (data/tensor_loader.h)
// serves an in-memory dataset, DatasetLoader (data/dataset_loader.h) serves versions of the
// dataset store; train depends on data, never the reverse.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "tensor/tensor.h"

namespace dlsys::data {

// The categories of string (categorical) feature columns, by column name: a value's code is its
// index in the sorted list, and -1 for a value the list lacks (so a validation split coded with
// the training vocabulary gives an unseen category a code no onehot step matches).
using Vocabularies = std::map<std::string, std::vector<std::string>>;
// Most distinct values a string feature column may have (a bound on the vocabulary's memory;
// onehot takes at most 256 anyway).
constexpr int64_t kMaxVocabulary = 65536;

struct LoaderPosition {
  int64_t epoch = 0;
  int64_t batch = 0;  // index of the next batch within the epoch
  bool operator==(const LoaderPosition& o) const { return epoch == o.epoch && batch == o.batch; }
};

struct Batch {
  Tensor x;                 // f32 [B, ...]
  Tensor y;                 // labels [B] or [B, K]
  LoaderPosition position;  // where this batch came from
};

class Loader {
 public:
  virtual ~Loader() = default;
  virtual int64_t samples() const = 0;
  virtual int64_t batches_per_epoch() const = 0;
  // Returns the next batch; after an epoch's last batch comes the next epoch's first.
  virtual Result<Batch> next() = 0;
  // The position of the batch next() returns next.
  virtual LoaderPosition position() const = 0;
  // Continues from `p` (a position() saved earlier).
  virtual Status seek(LoaderPosition p) = 0;
};

}  // namespace dlsys::data
