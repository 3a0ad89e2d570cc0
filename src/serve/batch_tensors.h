// Batch assembly for serving: requests' inputs are concatenated along dimension 0 (padded to a
// bucket size) before a run, and the run's outputs are split back per request after it.
// Plain functions, no state; thread-safe as long as the tensors they read are not written.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"
#include "tensor/tensor.h"

namespace dlsys::serve {

// Concatenates `parts` (one pointer per request, each the request's inputs in graph order)
// input by input along dimension 0, then zero-fills rows up to `padded_rows`. Every part must
// have the same number of inputs, and input i of every part the same dtype, a rank >= 1 and the
// same dims after 0; errors name the part, the input index and what differs. `padded_rows` below
// the total rows is an error. Returns freshly allocated tensors, one per input.
Result<std::vector<Tensor>> concat_rows(const std::vector<const std::vector<Tensor>*>& parts,
                                        int64_t padded_rows);

// The inverse of concat_rows for a run's outputs: request r receives rows
// [sum(rows[0..r)), sum(rows[0..r])) of every output, as owned copies (plan outputs are views
// valid only until the next run). An output whose rank is 0 or whose dim 0 is smaller than the
// rows asked for is an error naming its index; rows < 0 is an error.
Result<std::vector<std::vector<Tensor>>> split_rows(const std::vector<Tensor>& outputs,
                                                    const std::vector<int64_t>& rows);

// The smallest bucket >= rows from `buckets` (ascending), or -1 when rows exceeds them all.
int64_t bucket_for(int64_t rows, const std::vector<int64_t>& buckets);

// The default buckets: powers of two up to and including max_batch (1, 2, 4, 8, 16, 32 for 32;
// a max_batch that is not a power of two ends the list: 1, 2, 4, 6 for 6). Empty when
// max_batch < 1.
std::vector<int64_t> default_buckets(int64_t max_batch);

}  // namespace dlsys::serve
