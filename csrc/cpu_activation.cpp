// Activation aggregation (SPEC.md A): per-channel spatial max, per-image selection (mass
// rule or top-k), count update — one OpenMP region, reading each activation once.
#include <vector>

#include "cpu_extrema.h"
#include "cpu_kernels.h"
#include "cpu_select.h"

namespace summit {

void activation_update(const ActivationArgs& a) {
  const int64_t B = a.acts.shape[0], C = a.acts.shape[1];
  const AxisSamples rows = AxisSamples::full(a.acts.shape[2]), cols = AxisSamples::full(a.acts.shape[3]);
  std::vector<double> z(static_cast<size_t>(B * C));
#pragma omp parallel if (B * C * a.acts.shape[2] * a.acts.shape[3] >= kParallelWork)
  {
    dispatch_dtype(a.acts.dtype, [&](auto e) {
      all_channel_extrema<decltype(e)>(a.acts, rows, cols, z.data(), nullptr);
    });  // the omp for inside ends with a barrier: z is complete below

    std::vector<double> v(C);
    std::vector<int64_t> chosen(C);
    SelectScratch scratch;
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < B; ++b) {
      // Excluded channels count as z = 0; the mass rule works on q = max(z, 0).
      for (int64_t c = 0; c < C; ++c) {
        const double zc = a.excluded && a.excluded[c] ? 0.0 : z[b * C + c];
        v[c] = a.topk || zc > 0.0 ? zc : 0.0;
      }
      const int64_t m = a.topk ? select_top_k(v.data(), C, a.k, chosen.data(), scratch)
                               : select_mass(v.data(), C, a.tau, chosen.data(), scratch);
      int32_t* row = a.counts + a.labels[b] * C;
      for (int64_t i = 0; i < m; ++i) {
#pragma omp atomic
        row[chosen[i]] += 1;  // images of one class share a row
      }
    }
  }
}

}  // namespace summit
