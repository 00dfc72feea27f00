// Selective scan on the CPU: forward and backward loops over time, one (batch, channel) pair per
// iteration of an OpenMP loop, the d_state axis innermost so that the compiler vectorises it.
//
// The recurrence, for one (b, d) and state index n (delta already biased and softplus-ed):
//     h[t] = exp(delta[t] A[n]) h[t-1] + delta[t] u[t] B[t, n]        h[-1] = h0
//     y[t] = sum_n C[t, n] h[t, n]
// Layouts (all contiguous, row-major):
//     u, delta, y, dy, du, ddelta      (batch, dim, L)
//     A                                (dim, N)
//     Bt, Ct                           (batch, groups, L, N)   channel d reads group d / (dim / groups)
//     ckpt                             (batch, dim, n_chunks, N)  state entering each chunk of `chunk` steps
//     last, dlast                      (batch, dim, N)
//     dA_part                          (batch, dim, N)          summed over batch by the caller
//     dB_part, dC_part                 (threads, batch, groups, L, N)  one private copy per thread
// The forward keeps only the chunk-boundary states; the backward recomputes each chunk's states
// and decays into a small buffer, then runs the adjoint recurrence
//     g[t] = C[t] dy[t] + exp(delta[t+1] A) g[t+1]
// backwards through it. Nothing of size (batch, dim, L, N) is ever allocated.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "fast_exp.h"

namespace {

int threads_or_default(int threads) {
#ifdef _OPENMP
  return threads > 0 ? threads : omp_get_max_threads();
#else
  (void)threads;
  return 1;
#endif
}

int thread_index() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// FIXED_N > 0 compiles the loops for d_state == FIXED_N (Mamba's 16): the state of a row then
// lives in registers across steps and the n-loops unroll, which measured 1.5-2x faster than the
// same loops over a run-time N. FIXED_N == 0 takes N at run time (any d_state).
template <typename T, int FIXED_N>
void scan_forward(const T* u, const T* delta, const T* A, const T* Bt, const T* Ct, const T* h0, T* y, T* last,
                  T* ckpt, int64_t batch, int64_t dim, int64_t groups, int64_t L, int64_t n_runtime, int64_t chunk,
                  int threads) {
  const int64_t N = FIXED_N > 0 ? FIXED_N : n_runtime;
  const int64_t n_chunks = (L + chunk - 1) / chunk;
  const int64_t per_group = dim / groups;
#pragma omp parallel num_threads(threads_or_default(threads))
  {
  std::vector<T> h(N);  // one buffer per thread: an allocation per row costs more than a row at small L
#pragma omp for schedule(static)
  for (int64_t bd = 0; bd < batch * dim; ++bd) {
    const int64_t b = bd / dim, d = bd % dim, g = d / per_group;
    const T* a_row = A + d * N;
    const T* ub = u + bd * L;
    const T* db = delta + bd * L;
    const T* Bg = Bt + (b * groups + g) * L * N;
    const T* Cg = Ct + (b * groups + g) * L * N;
    T* yb = y + bd * L;
    for (int64_t n = 0; n < N; ++n) h[n] = h0 ? h0[bd * N + n] : T(0);
    T* hp = h.data();
    for (int64_t t = 0; t < L; ++t) {
      if (t % chunk == 0) std::memcpy(ckpt + (bd * n_chunks + t / chunk) * N, hp, N * sizeof(T));
      const T dt = db[t], x = dt * ub[t];
      const T* Bn = Bg + t * N;
      const T* Cn = Cg + t * N;
      T acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t n = 0; n < N; ++n) {
        hp[n] = exp_approx(dt * a_row[n]) * hp[n] + x * Bn[n];
        acc += Cn[n] * hp[n];
      }
      yb[t] = acc;
    }
    std::memcpy(last + bd * N, hp, N * sizeof(T));
  }
  }
}

template <typename T, int FIXED_N>
void scan_backward(const T* u, const T* delta, const T* A, const T* Bt, const T* Ct, const T* ckpt, const T* dy,
                   const T* dlast, T* du, T* ddelta, T* dA_part, T* dh0, T* dB_part, T* dC_part, int64_t batch,
                   int64_t dim, int64_t groups, int64_t L, int64_t n_runtime, int64_t chunk, int threads) {
  const int64_t N = FIXED_N > 0 ? FIXED_N : n_runtime;
  const int64_t n_chunks = (L + chunk - 1) / chunk;
  const int64_t per_group = dim / groups;
  const int64_t slab = batch * groups * L * N;  // one thread's copy of dB / dC
#pragma omp parallel num_threads(threads_or_default(threads))
  {
  // Per-thread buffers, reused row after row (allocating and zeroing them per row cost more
  // than the arithmetic at L = 64): states[i] = h after step (start + i), decays[i] =
  // exp(delta A) at that step, for one chunk; g the adjoint; dA_acc the row's dA.
  std::vector<T> states(chunk * N), decays(chunk * N), g(N), dA_acc(N);
#pragma omp for schedule(static)
  for (int64_t bd = 0; bd < batch * dim; ++bd) {
    const int64_t b = bd / dim, d = bd % dim, gi = d / per_group;
    const int64_t tid = thread_index();
    const T* a_row = A + d * N;
    const T* ub = u + bd * L;
    const T* db = delta + bd * L;
    const T* dyb = dy + bd * L;
    const int64_t offset = (b * groups + gi) * L * N;
    const T* Bg = Bt + offset;
    const T* Cg = Ct + offset;
    T* dBg = dB_part + tid * slab + offset;
    T* dCg = dC_part + tid * slab + offset;
    for (int64_t n = 0; n < N; ++n) {
      g[n] = dlast ? dlast[bd * N + n] : T(0);
      dA_acc[n] = T(0);
    }
    T* gp = g.data();
    T* dAp = dA_acc.data();
    for (int64_t c = n_chunks - 1; c >= 0; --c) {
      const int64_t start = c * chunk, stop = std::min(L, start + chunk);
      const T* h_in = ckpt + (bd * n_chunks + c) * N;
      for (int64_t t = start; t < stop; ++t) {  // recompute the chunk's states
        const T dt = db[t], x = dt * ub[t];
        const T* prev = t == start ? h_in : states.data() + (t - start - 1) * N;
        T* cur = states.data() + (t - start) * N;
        T* dec = decays.data() + (t - start) * N;
        const T* Bn = Bg + t * N;
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) {
          dec[n] = exp_approx(dt * a_row[n]);
          cur[n] = dec[n] * prev[n] + x * Bn[n];
        }
      }
      for (int64_t t = stop - 1; t >= start; --t) {  // the adjoint recurrence, backwards
        const T dt = db[t], ut = ub[t], x = dt * ut, dyt = dyb[t];
        const T* prev = t == start ? h_in : states.data() + (t - start - 1) * N;
        const T* cur = states.data() + (t - start) * N;
        const T* dec = decays.data() + (t - start) * N;
        const T* Bn = Bg + t * N;
        const T* Cn = Cg + t * N;
        T* dBn = dBg + t * N;
        T* dCn = dCg + t * N;
        T ddt = 0, dx = 0;
#pragma omp simd reduction(+ : ddt, dx)
        for (int64_t n = 0; n < N; ++n) {
          const T gn = gp[n] + Cn[n] * dyt;  // dL/dh[t]
          dCn[n] += cur[n] * dyt;
          const T d_decay = gn * prev[n] * dec[n];  // dL/d(delta A), before the chain to delta or A
          ddt += d_decay * a_row[n];
          dAp[n] += d_decay * dt;
          dx += gn * Bn[n];  // dL/d(delta u)
          dBn[n] += gn * x;
          gp[n] = gn * dec[n];  // carried to step t - 1
        }
        du[bd * L + t] = dx * dt;
        ddelta[bd * L + t] = ddt + dx * ut;
      }
    }
    for (int64_t n = 0; n < N; ++n) dA_part[bd * N + n] = dAp[n];
    if (dh0)
      for (int64_t n = 0; n < N; ++n) dh0[bd * N + n] = gp[n];
  }
  }
}

}  // namespace

extern "C" {

int hybrids_openmp_threads() { return threads_or_default(0); }

#define HYBRIDS_SCAN_EXPORTS(T, SUFFIX)                                                                      \
  void hybrids_scan_forward_##SUFFIX(const T* u, const T* delta, const T* A, const T* Bt, const T* Ct,      \
                                     const T* h0, T* y, T* last, T* ckpt, int64_t batch, int64_t dim,         \
                                     int64_t groups, int64_t L, int64_t N, int64_t chunk, int threads) {      \
    if (N == 16)                                                                                             \
      scan_forward<T, 16>(u, delta, A, Bt, Ct, h0, y, last, ckpt, batch, dim, groups, L, N, chunk, threads); \
    else                                                                                                     \
      scan_forward<T, 0>(u, delta, A, Bt, Ct, h0, y, last, ckpt, batch, dim, groups, L, N, chunk, threads);  \
  }                                                                                                          \
  void hybrids_scan_backward_##SUFFIX(const T* u, const T* delta, const T* A, const T* Bt, const T* Ct,     \
                                      const T* ckpt, const T* dy, const T* dlast, T* du, T* ddelta,          \
                                      T* dA_part, T* dh0, T* dB_part, T* dC_part, int64_t batch, int64_t dim, \
                                      int64_t groups, int64_t L, int64_t N, int64_t chunk, int threads) {     \
    if (N == 16)                                                                                             \
      scan_backward<T, 16>(u, delta, A, Bt, Ct, ckpt, dy, dlast, du, ddelta, dA_part, dh0, dB_part, dC_part,  \
                           batch, dim, groups, L, N, chunk, threads);                                        \
    else                                                                                                     \
      scan_backward<T, 0>(u, delta, A, Bt, Ct, ckpt, dy, dlast, du, ddelta, dA_part, dh0, dB_part, dC_part,   \
                          batch, dim, groups, L, N, chunk, threads);                                         \
  }

HYBRIDS_SCAN_EXPORTS(float, f32)
HYBRIDS_SCAN_EXPORTS(double, f64)

}  // extern "C"
