// Depthwise causal 1-D convolution on the CPU, with an optional SiLU, forward and backward; one
// (batch, channel) row per OpenMP iteration, the time axis vectorised.
//
//     pre[t] = bias + sum_k w[k] * xp[t + k]        xp = (initial states or zeros, x), width - 1 + L
//     out[t] = silu(pre[t]) if silu else pre[t]
//
// Layouts (contiguous): x, out, dout, dx (batch, dim, L); init, dinit (batch, dim, width - 1);
// w (dim, width); bias (dim); dw_part (batch, dim, width) and dbias_part (batch, dim), summed over
// the batch by the caller (rows of one channel belong to different threads).
// The backward recomputes pre[t] (width multiply-adds) rather than storing it.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "fast_exp.h"

namespace {

int threads_or_one(int threads) { return threads > 0 ? threads : 1; }

template <typename T>
inline T sigmoid(T v) {
  return T(1) / (T(1) + exp_approx(-v));
}

// The padded input row of (b, d): width - 1 history values, then the L inputs.
template <typename T>
void padded_row(const T* x, const T* init, int64_t bd, int64_t L, int64_t W, T* xp) {
  if (init)
    std::memcpy(xp, init + bd * (W - 1), (W - 1) * sizeof(T));
  else
    std::fill(xp, xp + (W - 1), T(0));
  std::memcpy(xp + (W - 1), x + bd * L, L * sizeof(T));
}

template <typename T>
void pre_activation(const T* xp, const T* w, T b, int64_t L, int64_t W, T* pre) {
  for (int64_t t = 0; t < L; ++t) pre[t] = b;
  for (int64_t k = 0; k < W; ++k) {
    const T wk = w[k];
    const T* src = xp + k;
#pragma omp simd
    for (int64_t t = 0; t < L; ++t) pre[t] += wk * src[t];
  }
}

template <typename T>
void conv_forward(const T* x, const T* init, const T* w, const T* bias, int silu, T* out, int64_t batch,
                  int64_t dim, int64_t L, int64_t W, int threads) {
#pragma omp parallel num_threads(threads_or_one(threads))
  {
  std::vector<T> xp(W - 1 + L);  // one buffer per thread, not one allocation per row
#pragma omp for schedule(static)
  for (int64_t bd = 0; bd < batch * dim; ++bd) {
    const int64_t d = bd % dim;
    padded_row(x, init, bd, L, W, xp.data());
    T* o = out + bd * L;
    pre_activation(xp.data(), w + d * W, bias ? bias[d] : T(0), L, W, o);
    if (silu) {
#pragma omp simd
      for (int64_t t = 0; t < L; ++t) o[t] = o[t] * sigmoid(o[t]);
    }
  }
  }
}

template <typename T>
void conv_backward(const T* x, const T* init, const T* w, const T* bias, int silu, const T* dout, T* dx, T* dinit,
                   T* dw_part, T* dbias_part, int64_t batch, int64_t dim, int64_t L, int64_t W, int threads) {
#pragma omp parallel num_threads(threads_or_one(threads))
  {
  std::vector<T> xp(W - 1 + L), g(L), dxp(W - 1 + L);  // per thread
#pragma omp for schedule(static)
  for (int64_t bd = 0; bd < batch * dim; ++bd) {
    const int64_t d = bd % dim;
    const T* wd = w + d * W;
    std::fill(dxp.begin(), dxp.end(), T(0));
    padded_row(x, init, bd, L, W, xp.data());
    const T* go = dout + bd * L;
    if (silu) {
      pre_activation(xp.data(), wd, bias ? bias[d] : T(0), L, W, g.data());
#pragma omp simd
      for (int64_t t = 0; t < L; ++t) {  // d silu(p) / dp = s (1 + p (1 - s)), s = sigmoid(p)
        const T p = g[t], s = sigmoid(p);
        g[t] = go[t] * s * (T(1) + p * (T(1) - s));
      }
    } else {
      std::memcpy(g.data(), go, L * sizeof(T));
    }
    T db = 0;
#pragma omp simd reduction(+ : db)
    for (int64_t t = 0; t < L; ++t) db += g[t];
    for (int64_t k = 0; k < W; ++k) {
      const T wk = wd[k];
      const T* src = xp.data() + k;
      T* dst = dxp.data() + k;
      T acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t t = 0; t < L; ++t) {
        acc += g[t] * src[t];
        dst[t] += wk * g[t];
      }
      dw_part[bd * W + k] = acc;
    }
    if (dbias_part) dbias_part[bd] = db;
    if (dx) std::memcpy(dx + bd * L, dxp.data() + (W - 1), L * sizeof(T));
    if (dinit) std::memcpy(dinit + bd * (W - 1), dxp.data(), (W - 1) * sizeof(T));
  }
  }
}

}  // namespace

extern "C" {

#define HYBRIDS_CONV_EXPORTS(T, SUFFIX)                                                                      \
  void hybrids_conv_forward_##SUFFIX(const T* x, const T* init, const T* w, const T* bias, int silu, T* out, \
                                     int64_t batch, int64_t dim, int64_t L, int64_t W, int threads) {         \
    conv_forward<T>(x, init, w, bias, silu, out, batch, dim, L, W, threads);                                  \
  }                                                                                                          \
  void hybrids_conv_backward_##SUFFIX(const T* x, const T* init, const T* w, const T* bias, int silu,        \
                                      const T* dout, T* dx, T* dinit, T* dw_part, T* dbias_part,              \
                                      int64_t batch, int64_t dim, int64_t L, int64_t W, int threads) {        \
    conv_backward<T>(x, init, w, bias, silu, dout, dx, dinit, dw_part, dbias_part, batch, dim, L, W, threads); \
  }

HYBRIDS_CONV_EXPORTS(float, f32)
HYBRIDS_CONV_EXPORTS(double, f64)

}  // extern "C"
