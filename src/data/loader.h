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

// The share of every batch one consumer takes (data-parallel training: one rank's micro-batches).
// A batch of n rows is cut into `of` micro-batches, micro-batch j holding rows
// [j*n/of, (j+1)*n/of); a part is micro-batches [first, first + count). The cut depends only on
// n and `of`, never on how many parts there are, so parts taken by W ranks are exactly the
// rows one process taking the whole batch would cut into the same micro-batches (what makes
// training bit-identical across worker counts). The default part is the whole batch.
struct BatchPart {
  int64_t first = 0, count = 1, of = 1;
  // The rows of a batch of n rows that the part holds: [lo(n), hi(n)).
  int64_t lo(int64_t n) const { return first * n / of; }
  int64_t hi(int64_t n) const { return (first + count) * n / of; }
  // Errors unless 0 <= first, 1 <= count, first + count <= of.
  Status check() const {
    if (of < 1 || count < 1 || first < 0 || first + count > of)
      return Status::Invalid(
          "batch part: micro-batches [{}, {}) are not within the {} of a batch (a rank's part "
          "must lie inside the batch: check rank, world size and micro_batches)",
          first, first + count, of);
    return Status::OK();
  }
};

struct Batch {
  Tensor x;                 // f32 [B, ...]: rows [offset, offset + B) of the batch
  Tensor y;                 // labels [B] or [B, K]
  LoaderPosition position;  // where this batch came from
  int64_t rows = 0;         // the whole batch's rows (B unless the loader takes a BatchPart)
  int64_t offset = 0;       // the first of the batch's rows that x holds
};

class Loader {
 public:
  virtual ~Loader() = default;
  // The samples of an epoch and its batches (whole batches: a BatchPart changes neither).
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
