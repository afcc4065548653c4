// Activation aggregation (SPEC.md A): per-channel spatial max, per-image selection (mass
// rule or top-k), count update — one OpenMP region, reading each activation once. On request
// the same pass also yields each channel's max and where it first occurs (dataset examples).
#include <type_traits>
#include <vector>

#include "cpu/extrema.h"
#include "cpu/kernels.h"
#include "cpu/select.h"

namespace summit {

// Below this many bytes of activations one thread does the work. Two threads read at most
// ~1.5x faster here, only from ~2.5 MB on, while waking the second one costs tens of
// microseconds on bare metal, and on a shared VM whose other vCPU is busy or halted the join
// can wait 14-18 ms for it (measured on the project's 2-core machine).
constexpr int64_t kParallelBytes = int64_t{2} << 20;

void activation_update(const ActivationArgs& a) {
  const int64_t B = a.acts.shape[0], C = a.acts.shape[1];
  const AxisSamples rows = AxisSamples::full(a.acts.shape[2]), cols = AxisSamples::full(a.acts.shape[3]);
  std::vector<double> z(static_cast<size_t>(B * C));
  [[maybe_unused]] const int64_t bytes = B * C * a.acts.shape[2] * a.acts.shape[3] * dispatch_dtype(a.acts.dtype, [](auto e) {
    return static_cast<int64_t>(sizeof(typename decltype(e)::raw));
  });
#pragma omp parallel if (bytes >= kParallelBytes)
  {
    dispatch_dtype(a.acts.dtype, [&](auto e) {
      using E = decltype(e);
      using X = typename Float32Order<E>::type;  // keys that tie exactly when the float32 values do
      if (a.argmax_out) all_channel_max_first<X>(a.acts, rows, cols, z.data(), a.argmax_out);
      // float64 inputs select on double maxima, but their positions are those of the float32
      // maxima (distinct doubles may round to one float): for that rare dtype a second pass
      // overwrites z with the double maxima.
      if (!a.argmax_out || std::is_same_v<E, F64>) all_channel_extrema<E>(a.acts, rows, cols, z.data(), nullptr);
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
      if (a.max_out)  // a float32/16 max is a float; rounding is monotone, so a float64 one rounds to the float32 max
        for (int64_t c = 0; c < C; ++c) a.max_out[b * C + c] = static_cast<float>(z[b * C + c]);
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
