#include "ops/int_gemm.h"

namespace dlsys {

void gemm_s32(int64_t M, int64_t N, int64_t K, const int32_t* A, int64_t lda, const int32_t* B,
              int64_t ldb, int32_t* C, int64_t ldc) {
#pragma omp parallel for if (M * N * K > 65536) schedule(static)
  for (int64_t m = 0; m < M; ++m) {
    int32_t* c = C + m * ldc;
    for (int64_t n = 0; n < N; ++n) c[n] = 0;
    const int32_t* a = A + m * lda;
    for (int64_t k = 0; k < K; ++k) {
      int32_t av = a[k];
      if (av == 0) continue;
      const int32_t* b = B + k * ldb;
      for (int64_t n = 0; n < N; ++n) c[n] += av * b[n];
    }
  }
}

}  // namespace dlsys
