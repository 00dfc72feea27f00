// A diagonal linear recurrence on the CPU, forward and backward, in the (batch, L, dim) layout
// that a mixer's activations already have, so the channel axis is innermost and contiguous and
// the compiler vectorises it; one batch row per OpenMP iteration.
//
//     h[t] = a[t] * h[t-1] + x[t]        h[-1] = h0 (or 0)
//
// The backward walks the adjoint g[t] = dh[t] + a[t+1] g[t+1] from the end (plus dlast, the
// gradient of the last state): dx[t] = g[t], da[t] = g[t] * h[t-1], dh0 = a[0] g[0].
// Layouts (contiguous): a, x, h, dh, da, dx (batch, L, dim); h0, dlast, dh0 (batch, dim).
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

int threads_or_one(int threads) { return threads > 0 ? threads : 1; }

template <typename T>
void recurrence_forward(const T* a, const T* x, const T* h0, T* h, int64_t batch, int64_t L, int64_t dim,
                        int threads) {
#pragma omp parallel for schedule(static) num_threads(threads_or_one(threads))
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t row = b * L * dim;
    std::vector<T> zeros(h0 ? 0 : dim, T(0));
    const T* prev = h0 ? h0 + b * dim : zeros.data();
    for (int64_t t = 0; t < L; ++t) {
      const T* at = a + row + t * dim;
      const T* xt = x + row + t * dim;
      T* ht = h + row + t * dim;
#pragma omp simd
      for (int64_t d = 0; d < dim; ++d) ht[d] = at[d] * prev[d] + xt[d];
      prev = ht;
    }
  }
}

template <typename T>
void recurrence_backward(const T* a, const T* h, const T* h0, const T* dh, const T* dlast, T* da, T* dx, T* dh0,
                         int64_t batch, int64_t L, int64_t dim, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads_or_one(threads))
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t row = b * L * dim;
    std::vector<T> g(dim, T(0));
    if (dlast) std::memcpy(g.data(), dlast + b * dim, dim * sizeof(T));
    T* gp = g.data();
    for (int64_t t = L - 1; t >= 0; --t) {
      const T* at = a + row + t * dim;
      const T* dht = dh + row + t * dim;
      const T* prev = t > 0 ? h + row + (t - 1) * dim : (h0 ? h0 + b * dim : nullptr);
      T* dat = da + row + t * dim;
      T* dxt = dx + row + t * dim;
      if (prev) {
#pragma omp simd
        for (int64_t d = 0; d < dim; ++d) {
          const T gd = gp[d] + dht[d];
          dxt[d] = gd;
          dat[d] = gd * prev[d];
          gp[d] = gd * at[d];
        }
      } else {  // the first step from a zero state: nothing flows to a[0]
#pragma omp simd
        for (int64_t d = 0; d < dim; ++d) {
          const T gd = gp[d] + dht[d];
          dxt[d] = gd;
          dat[d] = T(0);
          gp[d] = gd * at[d];
        }
      }
    }
    if (dh0) std::memcpy(dh0 + b * dim, gp, dim * sizeof(T));
  }
}

}  // namespace

extern "C" {

#define HYBRIDS_RECURRENCE_EXPORTS(T, SUFFIX)                                                                   \
  void hybrids_recurrence_forward_##SUFFIX(const T* a, const T* x, const T* h0, T* h, int64_t batch, int64_t L, \
                                           int64_t dim, int threads) {                                          \
    recurrence_forward<T>(a, x, h0, h, batch, L, dim, threads);                                                  \
  }                                                                                                             \
  void hybrids_recurrence_backward_##SUFFIX(const T* a, const T* h, const T* h0, const T* dh, const T* dlast,   \
                                            T* da, T* dx, T* dh0, int64_t batch, int64_t L, int64_t dim,        \
                                            int threads) {                                                      \
    recurrence_backward<T>(a, h, h0, dh, dlast, da, dx, dh0, batch, L, dim, threads);                            \
  }

HYBRIDS_RECURRENCE_EXPORTS(float, f32)
HYBRIDS_RECURRENCE_EXPORTS(double, f64)

}  // extern "C"
