// The inside of a Mamba block on the CPU, in the projections' own (batch, L, channels) layout:
// the causal depthwise convolution with its SiLU, and the selective scan with the step's bias and
// softplus, the skip term D u and the silu(z) gate, each forward and backward. The matrix products
// between them (x_proj, dt_proj) stay with torch (kernels/mamba_inner/cpp.py).
//
// Why another scan beside selective_scan.cpp: that one takes (batch, dim, L) rows, one channel per
// iteration with the d_state axis in the vector, so a step's output is a horizontal sum and a
// Mamba block spends a tenth of its time transposing in and out of that layout. Here a vector holds
// LANES neighbouring channels of one time step: the projections' rows are read as they are, every
// lane's recurrence is independent (no horizontal sums in the forward), and the d_state loop
// carries LANES independent exps at a time.
//
// Layouts (row-major; a "row" is one (b, t), `stride` its length in elements):
//     x         in_proj's output (batch, L, 2 dim): the conv's input is columns [0, dim),
//               z columns [dim, 2 dim) (row stride xs = 2 dim, also for dx and dz)
//     u         conv output, (batch, L, dim) contiguous
//     dt        the step before its bias, (batch, L, dim) contiguous
//     bc        x_proj's output (batch, L, R + 2N): B at column R, C at column R + N (row stride bcs)
//     At        A transposed, (N, dim); wt the conv weight transposed, (W, dim)
//     out       the gated output, (batch, L, dim) contiguous
//     ckpt      (batch, n_chunks, N, dim): the state entering each chunk of `chunk` steps
// The scan, for lane d and state index n:
//     delta[t] = softplus(dt[t] + dt_bias)
//     h[t, n]  = exp(delta[t] A[n]) h[t-1, n] + delta[t] u[t] B[t, n]      h[-1] = 0
//     y[t]     = sum_n C[t, n] h[t, n] + D u[t];  out[t] = y[t] silu(z[t])
// The backward recomputes one chunk of states (and the decays, steps, outputs) per block of lanes
// into a small buffer and runs the adjoint g[t] = C[t] dy[t] + exp(delta[t+1] A) g[t+1] backwards
// through it. dB and dC sum over channels: one vector accumulator per (step, n) collects the
// blocks' lanes, summed across lanes once per chunk.
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

int threads_or_one(int threads) { return threads > 0 ? threads : 1; }

// log(1 + y) for y in [0, 1], vectorisable: 2 atanh(s) with s = y / (2 + y) <= 1/3, its series to
// s^17 (the next term is below 1e-9 relative).
inline float log1p_unit(float y) {
  const float s = y / (2.0f + y), s2 = s * s;
  float p = 1.0f / 17.0f;
  p = p * s2 + 1.0f / 15.0f;
  p = p * s2 + 1.0f / 13.0f;
  p = p * s2 + 1.0f / 11.0f;
  p = p * s2 + 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  return 2.0f * s * p;
}
inline double log1p_unit(double y) { return std::log1p(y); }

// torch's softplus (threshold 20): x above it, else log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)).
template <typename T>
inline T softplus(T x) {
  const T ax = x > T(0) ? x : -x;
  const T pos = x > T(0) ? x : T(0);
  const T sp = pos + log1p_unit(exp_approx(-ax));
  return x > T(20) ? x : sp;
}

template <typename T>
inline T sigmoid(T v) {
  return T(1) / (T(1) + exp_approx(-v));
}

// ---- the convolution ------------------------------------------------------------------------
//     pre[t, d] = bias[d] + sum_k w[k, d] x[t - (W - 1) + k, d]    (x before t = 0 is zero)
//     u[t, d]   = silu(pre[t, d])

template <typename T>
inline void conv_pre(const T* xb, int64_t xs, const T* wt, const T* bias, int64_t t, int64_t d0, int64_t n,
                     int64_t dim, int64_t W, T* pre) {
#pragma omp simd
  for (int64_t l = 0; l < n; ++l) pre[l] = bias ? bias[d0 + l] : T(0);
  for (int64_t k = 0; k < W; ++k) {
    const int64_t s = t - (W - 1) + k;
    if (s < 0) continue;
    const T* xr = xb + s * xs + d0;
    const T* wk = wt + k * dim + d0;
#pragma omp simd
    for (int64_t l = 0; l < n; ++l) pre[l] += wk[l] * xr[l];
  }
}

template <typename T>
void conv_forward(const T* x, int64_t xs, const T* wt, const T* bias, T* u, int64_t batch, int64_t L, int64_t dim,
                  int64_t W, int threads) {
#pragma omp parallel for num_threads(threads_or_one(threads)) schedule(static)
  for (int64_t bt = 0; bt < batch * L; ++bt) {
    const int64_t b = bt / L, t = bt % L;
    T* ur = u + bt * dim;
    conv_pre(x + b * L * xs, xs, wt, bias, t, 0, dim, dim, W, ur);
#pragma omp simd
    for (int64_t d = 0; d < dim; ++d) ur[d] = ur[d] * sigmoid(ur[d]);
  }
}

// du: the gradient of u; dx written into columns [0, dim) of rows of stride xs; dw_part (batch, W,
// dim) and dbias_part (batch, dim) are summed over the batch by the caller.
template <typename T>
void conv_backward(const T* x, int64_t xs, const T* wt, const T* bias, const T* du, T* dx, T* dw_part, T* dbias_part,
                   int64_t batch, int64_t L, int64_t dim, int64_t W, int threads) {
#pragma omp parallel num_threads(threads_or_one(threads))
  {
  std::vector<T> g(L * dim);  // dL/dpre for one sequence
#pragma omp for schedule(static)
  for (int64_t b = 0; b < batch; ++b) {
    const T* xb = x + b * L * xs;
    T* dw = dw_part + b * W * dim;
    T* db = dbias_part ? dbias_part + b * dim : nullptr;
    std::fill(dw, dw + W * dim, T(0));
    if (db) std::fill(db, db + dim, T(0));
    for (int64_t t = 0; t < L; ++t) {
      T* gr = g.data() + t * dim;
      const T* dur = du + (b * L + t) * dim;
      conv_pre(xb, xs, wt, bias, t, 0, dim, dim, W, gr);
#pragma omp simd
      for (int64_t d = 0; d < dim; ++d) {  // d silu(p) / dp = s (1 + p (1 - s)), s = sigmoid(p)
        const T p = gr[d], s = sigmoid(p);
        gr[d] = dur[d] * s * (T(1) + p * (T(1) - s));
      }
      if (db) {
#pragma omp simd
        for (int64_t d = 0; d < dim; ++d) db[d] += gr[d];
      }
      for (int64_t k = 0; k < W; ++k) {  // input s = t - (W - 1) + k feeds pre[t] through w[k]
        const int64_t s = t - (W - 1) + k;
        if (s < 0) continue;
        const T* xr = xb + s * xs;
        T* dwk = dw + k * dim;
#pragma omp simd
        for (int64_t d = 0; d < dim; ++d) dwk[d] += gr[d] * xr[d];
      }
    }
    for (int64_t s = 0; s < L; ++s) {  // dx[s] = sum_k w[k] g[s + (W - 1) - k]
      T* dxr = dx + (b * L + s) * xs;
#pragma omp simd
      for (int64_t d = 0; d < dim; ++d) dxr[d] = T(0);
      for (int64_t k = 0; k < W; ++k) {
        const int64_t t = s + (W - 1) - k;
        if (t >= L) continue;
        const T* gr = g.data() + t * dim;
        const T* wk = wt + k * dim;
#pragma omp simd
        for (int64_t d = 0; d < dim; ++d) dxr[d] += wk[d] * gr[d];
      }
    }
  }
  }
}

// ---- the scan -------------------------------------------------------------------------------

template <typename T>
struct ScanArgs {
  const T *u, *dt, *dt_bias, *At, *bc, *Dskip, *z;
  int64_t xs, bcs, R;  // z's row stride; bc's row stride; B's column in bc (C's is R + N)
  int64_t batch, L, dim, N, chunk;
};

// One block of LANES channels [d0, d0 + LANES) of sequence b through all steps. FIXED_N > 0
// compiles for d_state == FIXED_N (Mamba's 16): the state's n loops unroll.
template <typename T, int LANES, int FIXED_N>
void scan_block_forward(const ScanArgs<T>& a, int64_t b, int64_t d0, T* h, T* out, T* ckpt) {
  const int64_t N = FIXED_N > 0 ? FIXED_N : a.N, dim = a.dim, n_chunks = (a.L + a.chunk - 1) / a.chunk;
  const T* Bp = a.bc + b * a.L * a.bcs + a.R;
  for (int64_t i = 0; i < N * LANES; ++i) h[i] = T(0);
  T bias[LANES], Dv[LANES];
  for (int l = 0; l < LANES; ++l) bias[l] = a.dt_bias[d0 + l], Dv[l] = a.Dskip[d0 + l];
  for (int64_t t = 0; t < a.L; ++t) {
    const int64_t row = b * a.L + t;
    if (t % a.chunk == 0) {
      T* c = ckpt + (b * n_chunks + t / a.chunk) * N * dim + d0;
      for (int64_t n = 0; n < N; ++n) std::memcpy(c + n * dim, h + n * LANES, LANES * sizeof(T));
    }
    const T* ur = a.u + row * dim + d0;
    const T* dr = a.dt + row * dim + d0;
    const T* zr = a.z + row * a.xs + d0;
    const T* Bn = Bp + t * a.bcs;
    const T* Cn = Bn + N;
    T delta[LANES], x[LANES], y[LANES];
#pragma omp simd
    for (int l = 0; l < LANES; ++l) {
      delta[l] = softplus(dr[l] + bias[l]);
      x[l] = delta[l] * ur[l];
      y[l] = Dv[l] * ur[l];
    }
    for (int64_t n = 0; n < N; ++n) {
      const T* An = a.At + n * dim + d0;
      T* hn = h + n * LANES;
      const T bn = Bn[n], cn = Cn[n];
#pragma omp simd
      for (int l = 0; l < LANES; ++l) {
        hn[l] = exp_approx(delta[l] * An[l]) * hn[l] + x[l] * bn;
        y[l] += cn * hn[l];
      }
    }
    T* o = out + row * dim + d0;
#pragma omp simd
    for (int l = 0; l < LANES; ++l) o[l] = y[l] * zr[l] * sigmoid(zr[l]);
  }
}

template <typename T, int LANES, int FIXED_N>
void scan_forward(const ScanArgs<T>& a, T* out, T* ckpt, int threads) {
  const int64_t N = FIXED_N > 0 ? FIXED_N : a.N;
  const int64_t full = a.dim / LANES;
#pragma omp parallel num_threads(threads_or_one(threads))
  {
  std::vector<T> h(N * LANES);
#pragma omp for schedule(static)
  for (int64_t bd = 0; bd < a.batch * (full + (a.dim % LANES)); ++bd) {
    const int64_t per_b = full + a.dim % LANES, b = bd / per_b, j = bd % per_b;
    if (j < full)
      scan_block_forward<T, LANES, FIXED_N>(a, b, j * LANES, h.data(), out, ckpt);
    else  // the channels past the last full block, one at a time
      scan_block_forward<T, 1, FIXED_N>(a, b, full * LANES + (j - full), h.data(), out, ckpt);
  }
  }
}

// Per-thread work space of the backward: for one chunk of one block, the states after each step,
// the decays, the steps, the sigmoid of the step's argument and the ungated outputs; the dB and dC
// accumulators of the chunk (VL lanes a row, whatever the block's width).
template <typename T>
struct Work {
  std::vector<T> states, decays, delta, dsig, dy, h_in, dB_acc, dC_acc;
  Work(int64_t chunk, int64_t N, int VL)
      : states(chunk * N * VL), decays(chunk * N * VL), delta(chunk * VL), dsig(chunk * VL), dy(chunk * VL),
        h_in(N * VL), dB_acc(chunk * N * VL), dC_acc(chunk * N * VL) {}
};

// The backward of one chunk [start, stop) of one block. g (N, dim) is the adjoint carried from the
// step after the chunk (updated to the one entering it); dA (N, dim), dD and dbias (dim) accumulate.
template <typename T, int LANES, int FIXED_N, int VL>
void scan_block_backward(const ScanArgs<T>& a, int64_t b, int64_t d0, int64_t c, const T* ckpt, const T* dout, T* du,
                         T* ddt, T* dz, T* g, T* dA, T* dD, T* dbias, Work<T>& w) {
  const int64_t N = FIXED_N > 0 ? FIXED_N : a.N, dim = a.dim, n_chunks = (a.L + a.chunk - 1) / a.chunk;
  const int64_t start = c * a.chunk, stop = std::min(a.L, start + a.chunk);
  const T* Bp = a.bc + b * a.L * a.bcs + a.R;
  T bias[LANES], Dv[LANES];
  for (int l = 0; l < LANES; ++l) bias[l] = a.dt_bias[d0 + l], Dv[l] = a.Dskip[d0 + l];
  const T* c_in = ckpt + (b * n_chunks + c) * N * dim + d0;
  for (int64_t n = 0; n < N; ++n)
    for (int l = 0; l < LANES; ++l) w.h_in[n * VL + l] = c_in[n * dim + l];
  T dD_acc[LANES], dbias_acc[LANES];
  for (int l = 0; l < LANES; ++l) dD_acc[l] = T(0), dbias_acc[l] = T(0);
  // Recompute the chunk. What does not need the adjoint is done here, while the state is in
  // registers: the gate's gradient dz (from the output y), dL/dy before the gate, dC and dD.
  for (int64_t t = start; t < stop; ++t) {
    const int64_t i = t - start, row = b * a.L + t;
    const T* ur = a.u + row * dim + d0;
    const T* dr = a.dt + row * dim + d0;
    const T* zr = a.z + row * a.xs + d0;
    const T* gor = dout + row * dim + d0;
    const T* Bn = Bp + t * a.bcs;
    const T* Cn = Bn + N;
    T* delta = w.delta.data() + i * VL;
    T* dsig = w.dsig.data() + i * VL;
    T* dy = w.dy.data() + i * VL;
    T x[LANES], y[LANES];
#pragma omp simd
    for (int l = 0; l < LANES; ++l) {
      const T arg = dr[l] + bias[l];
      delta[l] = softplus(arg);
      dsig[l] = sigmoid(arg);  // softplus'(arg)
      x[l] = delta[l] * ur[l];
      y[l] = Dv[l] * ur[l];
      const T zv = zr[l], s = sigmoid(zv);
      dy[l] = gor[l] * zv * s;  // dL/dy before the gate
      dD_acc[l] += dy[l] * ur[l];
    }
    for (int64_t n = 0; n < N; ++n) {
      const T* An = a.At + n * dim + d0;
      const T* prev = i == 0 ? w.h_in.data() + n * VL : w.states.data() + ((i - 1) * N + n) * VL;
      T* cur = w.states.data() + (i * N + n) * VL;
      T* dec = w.decays.data() + (i * N + n) * VL;
      T* dCa = w.dC_acc.data() + (i * N + n) * VL;
      const T bn = Bn[n], cn = Cn[n];
#pragma omp simd
      for (int l = 0; l < LANES; ++l) {
        dec[l] = exp_approx(delta[l] * An[l]);
        cur[l] = dec[l] * prev[l] + x[l] * bn;
        y[l] += cn * cur[l];
        dCa[l] += cur[l] * dy[l];
      }
    }
    T* dzr = dz + row * a.xs + d0;
#pragma omp simd
    for (int l = 0; l < LANES; ++l) {
      const T zv = zr[l], s = sigmoid(zv);
      dzr[l] = gor[l] * y[l] * s * (T(1) + zv * (T(1) - s));
    }
  }
  T gv[FIXED_N > 0 ? FIXED_N * LANES : 1];
  T* gl = FIXED_N > 0 ? gv : g;  // the adjoint: in registers when N is fixed, else in place in g
  const int64_t gs = FIXED_N > 0 ? LANES : dim;
  if (FIXED_N > 0)
    for (int64_t n = 0; n < N; ++n)
      for (int l = 0; l < LANES; ++l) gv[n * LANES + l] = g[n * dim + d0 + l];
  T dA_acc[FIXED_N > 0 ? FIXED_N * LANES : 1];
  T* dAl = FIXED_N > 0 ? dA_acc : dA;
  const int64_t das = FIXED_N > 0 ? LANES : dim;
  if (FIXED_N > 0)
    for (int64_t i = 0; i < N * LANES; ++i) dA_acc[i] = T(0);
  if (FIXED_N == 0) gl += d0, dAl += d0;
  for (int64_t t = stop - 1; t >= start; --t) {  // the adjoint, backwards
    const int64_t i = t - start, row = b * a.L + t;
    const T* ur = a.u + row * dim + d0;
    const T* Bn = Bp + t * a.bcs;
    const T* Cn = Bn + N;
    const T* delta = w.delta.data() + i * VL;
    const T* dsig = w.dsig.data() + i * VL;
    const T* dy = w.dy.data() + i * VL;
    T x[LANES], dx[LANES], dd[LANES];
#pragma omp simd
    for (int l = 0; l < LANES; ++l) {
      x[l] = delta[l] * ur[l];
      dx[l] = T(0);
      dd[l] = T(0);
    }
    for (int64_t n = 0; n < N; ++n) {
      const T* An = a.At + n * dim + d0;
      const T* prev = i == 0 ? w.h_in.data() + n * VL : w.states.data() + ((i - 1) * N + n) * VL;
      const T* dec = w.decays.data() + (i * N + n) * VL;
      T* dBa = w.dB_acc.data() + (i * N + n) * VL;
      T* gn_ = gl + n * gs;
      T* dAn = dAl + n * das;
      const T bn = Bn[n], cn = Cn[n];
#pragma omp simd
      for (int l = 0; l < LANES; ++l) {
        const T gn = gn_[l] + cn * dy[l];  // dL/dh[t]
        const T d_decay = gn * prev[l] * dec[l];  // dL/d(delta A)
        dd[l] += d_decay * An[l];
        dAn[l] += d_decay * delta[l];
        dx[l] += gn * bn;  // dL/d(delta u)
        dBa[l] += gn * x[l];
        gn_[l] = gn * dec[l];
      }
    }
    T* dur = du + row * dim + d0;
    T* ddr = ddt + row * dim + d0;
#pragma omp simd
    for (int l = 0; l < LANES; ++l) {
      dur[l] = dx[l] * delta[l] + dy[l] * Dv[l];
      const T d_arg = (dd[l] + dx[l] * ur[l]) * dsig[l];
      ddr[l] = d_arg;
      dbias_acc[l] += d_arg;
    }
  }
  if (FIXED_N > 0)
    for (int64_t n = 0; n < N; ++n)
      for (int l = 0; l < LANES; ++l) {
        g[n * dim + d0 + l] = gv[n * LANES + l];
        dA[n * dim + d0 + l] += dA_acc[n * LANES + l];
      }
  for (int l = 0; l < LANES; ++l) dD[d0 + l] += dD_acc[l], dbias[d0 + l] += dbias_acc[l];
}

// Outputs: du, ddt (batch, L, dim) contiguous; dz into columns [dim, 2 dim) of rows of stride xs
// (dz points at column dim); dB, dC into bc-shaped rows (dbc points at column R); dA_part (batch,
// N, dim), dD_part and dbias_part (batch, dim), summed over the batch by the caller.
template <typename T, int LANES, int FIXED_N>
void scan_backward(const ScanArgs<T>& a, const T* ckpt, const T* dout, T* du, T* ddt, T* dz, T* dbc, T* dA_part,
                   T* dD_part, T* dbias_part, int threads) {
  const int64_t N = FIXED_N > 0 ? FIXED_N : a.N, dim = a.dim, n_chunks = (a.L + a.chunk - 1) / a.chunk;
  const int64_t full = dim / LANES;
#pragma omp parallel num_threads(threads_or_one(threads))
  {
  Work<T> w(a.chunk, N, LANES);
  std::vector<T> g(N * dim);
#pragma omp for schedule(static)
  for (int64_t b = 0; b < a.batch; ++b) {
    T* dA = dA_part + b * N * dim;
    T* dD = dD_part + b * dim;
    T* dbias = dbias_part + b * dim;
    std::fill(g.begin(), g.end(), T(0));
    std::fill(dA, dA + N * dim, T(0));
    std::fill(dD, dD + dim, T(0));
    std::fill(dbias, dbias + dim, T(0));
    for (int64_t c = n_chunks - 1; c >= 0; --c) {
      const int64_t start = c * a.chunk, stop = std::min(a.L, start + a.chunk);
      std::fill(w.dB_acc.begin(), w.dB_acc.end(), T(0));
      std::fill(w.dC_acc.begin(), w.dC_acc.end(), T(0));
      for (int64_t j = 0; j < full; ++j)
        scan_block_backward<T, LANES, FIXED_N, LANES>(a, b, j * LANES, c, ckpt, dout, du, ddt, dz, g.data(), dA, dD,
                                                      dbias, w);
      for (int64_t d = full * LANES; d < dim; ++d)
        scan_block_backward<T, 1, FIXED_N, LANES>(a, b, d, c, ckpt, dout, du, ddt, dz, g.data(), dA, dD, dbias, w);
      for (int64_t t = start; t < stop; ++t) {  // the lanes' sums: dB and dC of the chunk's steps
        const int64_t i = t - start;
        T* dBr = dbc + (b * a.L + t) * a.bcs;
        for (int64_t n = 0; n < N; ++n) {
          const T* dBa = w.dB_acc.data() + (i * N + n) * LANES;
          const T* dCa = w.dC_acc.data() + (i * N + n) * LANES;
          T sb = 0, sc = 0;
          for (int l = 0; l < LANES; ++l) sb += dBa[l], sc += dCa[l];
          dBr[n] = sb;
          dBr[N + n] = sc;
        }
      }
    }
  }
  }
}

template <typename T, int LANES>
void scan_forward_any(const ScanArgs<T>& a, T* out, T* ckpt, int threads) {
  if (a.N == 16)
    scan_forward<T, LANES, 16>(a, out, ckpt, threads);
  else
    scan_forward<T, LANES, 0>(a, out, ckpt, threads);
}

template <typename T, int LANES>
void scan_backward_any(const ScanArgs<T>& a, const T* ckpt, const T* dout, T* du, T* ddt, T* dz, T* dbc, T* dA_part,
                       T* dD_part, T* dbias_part, int threads) {
  if (a.N == 16)
    scan_backward<T, LANES, 16>(a, ckpt, dout, du, ddt, dz, dbc, dA_part, dD_part, dbias_part, threads);
  else
    scan_backward<T, LANES, 0>(a, ckpt, dout, du, ddt, dz, dbc, dA_part, dD_part, dbias_part, threads);
}

}  // namespace

extern "C" {

// One 512-bit vector of lanes: 16 floats or 8 doubles.
#define HYBRIDS_MAMBA_INNER_EXPORTS(T, SUFFIX, LANES)                                                          \
  void hybrids_mamba_conv_forward_##SUFFIX(const T* x, int64_t xs, const T* wt, const T* bias, T* u,           \
                                           int64_t batch, int64_t L, int64_t dim, int64_t W, int threads) {    \
    conv_forward<T>(x, xs, wt, bias, u, batch, L, dim, W, threads);                                           \
  }                                                                                                            \
  void hybrids_mamba_conv_backward_##SUFFIX(const T* x, int64_t xs, const T* wt, const T* bias, const T* du,   \
                                            T* dx, T* dw_part, T* dbias_part, int64_t batch, int64_t L,        \
                                            int64_t dim, int64_t W, int threads) {                             \
    conv_backward<T>(x, xs, wt, bias, du, dx, dw_part, dbias_part, batch, L, dim, W, threads);                 \
  }                                                                                                            \
  void hybrids_mamba_scan_forward_##SUFFIX(const T* u, const T* dt, const T* dt_bias, const T* At, const T* bc, \
                                           const T* Dskip, const T* z, T* out, T* ckpt, int64_t xs,            \
                                           int64_t bcs, int64_t R, int64_t batch, int64_t L, int64_t dim,      \
                                           int64_t N, int64_t chunk, int threads) {                            \
    const ScanArgs<T> a{u, dt, dt_bias, At, bc, Dskip, z, xs, bcs, R, batch, L, dim, N, chunk};                \
    scan_forward_any<T, LANES>(a, out, ckpt, threads);                                                         \
  }                                                                                                            \
  void hybrids_mamba_scan_backward_##SUFFIX(const T* u, const T* dt, const T* dt_bias, const T* At,            \
                                            const T* bc, const T* Dskip, const T* z, const T* ckpt,            \
                                            const T* dout, T* du, T* ddt, T* dz, T* dbc, T* dA_part,           \
                                            T* dD_part, T* dbias_part, int64_t xs, int64_t bcs, int64_t R,     \
                                            int64_t batch, int64_t L, int64_t dim, int64_t N, int64_t chunk,   \
                                            int threads) {                                                     \
    const ScanArgs<T> a{u, dt, dt_bias, At, bc, Dskip, z, xs, bcs, R, batch, L, dim, N, chunk};                \
    scan_backward_any<T, LANES>(a, ckpt, dout, du, ddt, dz, dbc, dA_part, dD_part, dbias_part, threads);       \
  }

HYBRIDS_MAMBA_INNER_EXPORTS(float, f32, 16)
HYBRIDS_MAMBA_INNER_EXPORTS(double, f64, 8)

}  // extern "C"
