// The inside of a Mamba block on the CPU, in the projections' own (batch, L, channels) layout:
// the causal depthwise convolution with its SiLU, and the selective scan with the step's bias and
// softplus, the skip term D u and the silu(z) gate, each forward and backward. The matrix products
// between them (x_proj, dt_proj) stay with torch (kernels/mamba_block/cpp.py).
//
// Why another scan beside selective_scan.cpp: that one takes (batch, dim, L) rows, one channel per
// iteration with the d_state axis in the vector, so a step's output is a horizontal sum and a
// Mamba block spends a tenth of its time transposing in and out of that layout. Here a vector holds
// LANES neighbouring channels of one time step (LANES = 16 floats, a 512-bit vector where the build
// has AVX-512; with narrower vectors the compiler splits each lane loop in two or four): the projections' rows are read as they are, every
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
  const T *u, *dt, *dt_bias, *A, *bc, *Dskip, *z;  // z null: no gate (Mamba-2 gates in its norm)
  int64_t us;   // row stride of u (and of du)
  int64_t xs;   // row stride of z (and of dz)
  int64_t bcs;  // row stride of bc; group g's B at column R + g N, its C at column R + (G + g) N
  int64_t R, batch, L, dim, N, G, chunk;
};

// Channel range of one block: channels [d0, d0 + lanes) of group g.
struct Block {
  int64_t d0, g;
};

// The blocks of one sequence: per group (dim / G channels, all reading the group's B and C), full
// blocks of LANES channels, then the group's remaining channels one at a time.
template <int LANES>
Block block_of(int64_t j, int64_t dim, int64_t G, bool* full) {
  const int64_t per_group = dim / G, n_full = per_group / LANES, per_g = n_full + per_group % LANES;
  const int64_t g = j / per_g, k = j % per_g;
  *full = k < n_full;
  return {g * per_group + (k < n_full ? k * LANES : n_full * LANES + (k - n_full)), g};
}

template <int LANES>
int64_t blocks_per_sequence(int64_t dim, int64_t G) {
  const int64_t per_group = dim / G;
  return G * (per_group / LANES + per_group % LANES);
}

// One block of LANES channels of sequence b through all steps. FIXED_N > 0 compiles for d_state
// == FIXED_N (16): the n loops unroll. SCALAR_A: A is one value per channel (Mamba-2's, one per
// head, repeated over its channels), so the decay is one exp per channel and step instead of N.
template <typename T, int LANES, int FIXED_N, bool SCALAR_A>
void scan_block_forward(const ScanArgs<T>& a, int64_t b, Block blk, T* h, T* out, T* ckpt) {
  const int64_t N = FIXED_N > 0 ? FIXED_N : a.N, dim = a.dim, d0 = blk.d0;
  const int64_t n_chunks = (a.L + a.chunk - 1) / a.chunk;
  const T* Bp = a.bc + b * a.L * a.bcs + a.R + blk.g * N;
  const T* Cp = a.bc + b * a.L * a.bcs + a.R + (a.G + blk.g) * N;
  for (int64_t i = 0; i < N * LANES; ++i) h[i] = T(0);
  T bias[LANES], Dv[LANES], Ad[LANES];
  for (int l = 0; l < LANES; ++l) bias[l] = a.dt_bias[d0 + l], Dv[l] = a.Dskip[d0 + l], Ad[l] = SCALAR_A ? a.A[d0 + l] : T(0);
  for (int64_t t = 0; t < a.L; ++t) {
    const int64_t row = b * a.L + t;
    if (t % a.chunk == 0) {
      T* c = ckpt + (b * n_chunks + t / a.chunk) * N * dim + d0;
      for (int64_t n = 0; n < N; ++n) std::memcpy(c + n * dim, h + n * LANES, LANES * sizeof(T));
    }
    const T* ur = a.u + row * a.us + d0;
    const T* dr = a.dt + row * dim + d0;
    const T* Bn = Bp + t * a.bcs;
    const T* Cn = Cp + t * a.bcs;
    T delta[LANES], x[LANES], y[LANES], dec[LANES];
#pragma omp simd
    for (int l = 0; l < LANES; ++l) {
      delta[l] = softplus(dr[l] + bias[l]);
      x[l] = delta[l] * ur[l];
      y[l] = Dv[l] * ur[l];
      dec[l] = SCALAR_A ? exp_approx(delta[l] * Ad[l]) : T(0);
    }
    for (int64_t n = 0; n < N; ++n) {
      const T* An = a.A + n * dim + d0;
      T* hn = h + n * LANES;
      const T bn = Bn[n], cn = Cn[n];
#pragma omp simd
      for (int l = 0; l < LANES; ++l) {
        hn[l] = (SCALAR_A ? dec[l] : exp_approx(delta[l] * An[l])) * hn[l] + x[l] * bn;
        y[l] += cn * hn[l];
      }
    }
    T* o = out + row * dim + d0;
    if (a.z) {
      const T* zr = a.z + row * a.xs + d0;
#pragma omp simd
      for (int l = 0; l < LANES; ++l) o[l] = y[l] * zr[l] * sigmoid(zr[l]);
    } else {
      for (int l = 0; l < LANES; ++l) o[l] = y[l];
    }
  }
}

template <typename T, int LANES, int FIXED_N, bool SCALAR_A>
void scan_forward(const ScanArgs<T>& a, T* out, T* ckpt, int threads) {
  const int64_t N = FIXED_N > 0 ? FIXED_N : a.N, per_b = blocks_per_sequence<LANES>(a.dim, a.G);
#pragma omp parallel num_threads(threads_or_one(threads))
  {
  std::vector<T> h(N * LANES);
#pragma omp for schedule(static)
  for (int64_t bj = 0; bj < a.batch * per_b; ++bj) {
    bool full;
    const Block blk = block_of<LANES>(bj % per_b, a.dim, a.G, &full);
    if (full)
      scan_block_forward<T, LANES, FIXED_N, SCALAR_A>(a, bj / per_b, blk, h.data(), out, ckpt);
    else
      scan_block_forward<T, 1, FIXED_N, SCALAR_A>(a, bj / per_b, blk, h.data(), out, ckpt);
  }
  }
}

// Per-thread work space of the backward: for one chunk of one block, the states after each step,
// the decays (one per channel and step if SCALAR_A, else N), the steps, softplus' derivative and
// dL/dy; the chunk's dB and dC accumulators per group (VL lanes a row, whatever the block's width).
template <typename T>
struct Work {
  std::vector<T> states, decays, delta, dsig, dy, h_in, dB_acc, dC_acc;
  Work(int64_t chunk, int64_t N, int64_t G, int VL)
      : states(chunk * N * VL), decays(chunk * N * VL), delta(chunk * VL), dsig(chunk * VL), dy(chunk * VL),
        h_in(N * VL), dB_acc(chunk * G * N * VL), dC_acc(chunk * G * N * VL) {}
};

// The backward of one chunk [start, stop) of one block. g (N, dim) is the adjoint carried from the
// step after the chunk (updated to the one entering it); dA ((N, dim), or (dim) if SCALAR_A), dD
// and dbias (dim) accumulate over the chunks.
template <typename T, int LANES, int FIXED_N, bool SCALAR_A, int VL>
void scan_block_backward(const ScanArgs<T>& a, int64_t b, Block blk, int64_t c, const T* ckpt, const T* dout, T* du,
                         T* ddt, T* dz, T* g, T* dA, T* dD, T* dbias, Work<T>& w) {
  const int64_t N = FIXED_N > 0 ? FIXED_N : a.N, dim = a.dim, d0 = blk.d0, G = a.G;
  const int64_t n_chunks = (a.L + a.chunk - 1) / a.chunk;
  const int64_t start = c * a.chunk, stop = std::min(a.L, start + a.chunk);
  const T* Bp = a.bc + b * a.L * a.bcs + a.R + blk.g * N;
  const T* Cp = a.bc + b * a.L * a.bcs + a.R + (G + blk.g) * N;
  const int64_t decay_n = SCALAR_A ? 1 : N;  // decays stored per step
  T bias[LANES], Dv[LANES], Ad[LANES];
  for (int l = 0; l < LANES; ++l) bias[l] = a.dt_bias[d0 + l], Dv[l] = a.Dskip[d0 + l], Ad[l] = SCALAR_A ? a.A[d0 + l] : T(0);
  const T* c_in = ckpt + (b * n_chunks + c) * N * dim + d0;
  for (int64_t n = 0; n < N; ++n)
    for (int l = 0; l < LANES; ++l) w.h_in[n * VL + l] = c_in[n * dim + l];
  T dD_acc[LANES], dbias_acc[LANES], dAs_acc[LANES];
  for (int l = 0; l < LANES; ++l) dD_acc[l] = T(0), dbias_acc[l] = T(0), dAs_acc[l] = T(0);
  // Recompute the chunk. What does not need the adjoint is done here, while the state is in
  // registers: the gate's gradient dz (from the output y), dL/dy before the gate, dC and dD.
  for (int64_t t = start; t < stop; ++t) {
    const int64_t i = t - start, row = b * a.L + t;
    const T* ur = a.u + row * a.us + d0;
    const T* dr = a.dt + row * dim + d0;
    const T* gor = dout + row * dim + d0;
    const T* zr = a.z ? a.z + row * a.xs + d0 : nullptr;
    const T* Bn = Bp + t * a.bcs;
    const T* Cn = Cp + t * a.bcs;
    T* delta = w.delta.data() + i * VL;
    T* dsig = w.dsig.data() + i * VL;
    T* dy = w.dy.data() + i * VL;
    T* dec1 = w.decays.data() + i * VL;  // SCALAR_A: the step's one decay per channel
    T x[LANES], y[LANES];
#pragma omp simd
    for (int l = 0; l < LANES; ++l) {
      const T arg = dr[l] + bias[l];
      delta[l] = softplus(arg);
      dsig[l] = sigmoid(arg);  // softplus'(arg)
      x[l] = delta[l] * ur[l];
      y[l] = Dv[l] * ur[l];
      if (SCALAR_A) dec1[l] = exp_approx(delta[l] * Ad[l]);
    }
    if (zr) {
#pragma omp simd
      for (int l = 0; l < LANES; ++l) dy[l] = gor[l] * zr[l] * sigmoid(zr[l]);  // dL/dy before the gate
    } else {
      for (int l = 0; l < LANES; ++l) dy[l] = gor[l];
    }
    for (int l = 0; l < LANES; ++l) dD_acc[l] += dy[l] * ur[l];
    for (int64_t n = 0; n < N; ++n) {
      const T* An = a.A + n * dim + d0;
      const T* prev = i == 0 ? w.h_in.data() + n * VL : w.states.data() + ((i - 1) * N + n) * VL;
      T* cur = w.states.data() + (i * N + n) * VL;
      T* dec = w.decays.data() + (i * decay_n + (SCALAR_A ? 0 : n)) * VL;
      T* dCa = w.dC_acc.data() + ((i * G + blk.g) * N + n) * VL;
      const T bn = Bn[n], cn = Cn[n];
#pragma omp simd
      for (int l = 0; l < LANES; ++l) {
        if (!SCALAR_A) dec[l] = exp_approx(delta[l] * An[l]);
        cur[l] = dec[l] * prev[l] + x[l] * bn;
        y[l] += cn * cur[l];
        dCa[l] += cur[l] * dy[l];
      }
    }
    if (zr) {
      T* dzr = dz + row * a.xs + d0;
#pragma omp simd
      for (int l = 0; l < LANES; ++l) {
        const T zv = zr[l], s = sigmoid(zv);
        dzr[l] = gor[l] * y[l] * s * (T(1) + zv * (T(1) - s));
      }
    }
  }
  T gv[FIXED_N > 0 ? FIXED_N * LANES : 1];
  T* gl = FIXED_N > 0 ? gv : g + d0;  // the adjoint: local when N is fixed, else in place in g
  const int64_t gs = FIXED_N > 0 ? LANES : dim;
  if (FIXED_N > 0)
    for (int64_t n = 0; n < N; ++n)
      for (int l = 0; l < LANES; ++l) gv[n * LANES + l] = g[n * dim + d0 + l];
  T dA_acc[FIXED_N > 0 && !SCALAR_A ? FIXED_N * LANES : 1];
  T* dAl = FIXED_N > 0 ? dA_acc : dA + d0;
  const int64_t das = FIXED_N > 0 ? LANES : dim;
  if (FIXED_N > 0 && !SCALAR_A)
    for (int64_t i = 0; i < N * LANES; ++i) dA_acc[i] = T(0);
  for (int64_t t = stop - 1; t >= start; --t) {  // the adjoint, backwards
    const int64_t i = t - start, row = b * a.L + t;
    const T* ur = a.u + row * a.us + d0;
    const T* Bn = Bp + t * a.bcs;
    const T* Cn = Cp + t * a.bcs;
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
      const T* An = a.A + n * dim + d0;
      const T* prev = i == 0 ? w.h_in.data() + n * VL : w.states.data() + ((i - 1) * N + n) * VL;
      const T* dec = w.decays.data() + (i * decay_n + (SCALAR_A ? 0 : n)) * VL;
      T* dBa = w.dB_acc.data() + ((i * G + blk.g) * N + n) * VL;
      T* gn_ = gl + n * gs;
      T* dAn = dAl + n * das;
      const T bn = Bn[n], cn = Cn[n];
#pragma omp simd
      for (int l = 0; l < LANES; ++l) {
        const T gn = gn_[l] + cn * dy[l];  // dL/dh[t]
        const T d_decay = gn * prev[l] * dec[l];  // dL/d(delta A), A of this n (or the channel's)
        if (SCALAR_A) {
          dd[l] += d_decay;
        } else {
          dd[l] += d_decay * An[l];
          dAn[l] += d_decay * delta[l];
        }
        dx[l] += gn * bn;  // dL/d(delta u)
        dBa[l] += gn * x[l];
        gn_[l] = gn * dec[l];
      }
    }
    T* dur = du + row * a.us + d0;
    T* ddr = ddt + row * dim + d0;
#pragma omp simd
    for (int l = 0; l < LANES; ++l) {
      T d_delta = dx[l] * ur[l];
      if (SCALAR_A) {
        dAs_acc[l] += dd[l] * delta[l];
        d_delta += dd[l] * Ad[l];
      } else {
        d_delta += dd[l];
      }
      dur[l] = dx[l] * delta[l] + dy[l] * Dv[l];
      const T d_arg = d_delta * dsig[l];
      ddr[l] = d_arg;
      dbias_acc[l] += d_arg;
    }
  }
  if (FIXED_N > 0)
    for (int64_t n = 0; n < N; ++n)
      for (int l = 0; l < LANES; ++l) g[n * dim + d0 + l] = gv[n * LANES + l];
  if (FIXED_N > 0 && !SCALAR_A)
    for (int64_t n = 0; n < N; ++n)
      for (int l = 0; l < LANES; ++l) dA[n * dim + d0 + l] += dA_acc[n * LANES + l];
  if (SCALAR_A)
    for (int l = 0; l < LANES; ++l) dA[d0 + l] += dAs_acc[l];
  for (int l = 0; l < LANES; ++l) dD[d0 + l] += dD_acc[l], dbias[d0 + l] += dbias_acc[l];
}

// Outputs: du in u's layout (row stride us); ddt (batch, L, dim) contiguous; dz (if z) in z's
// layout; dB, dC into bc-shaped rows (dbc points at column R); dA_part (batch, N, dim), or (batch,
// dim) if SCALAR_A, dD_part and dbias_part (batch, dim): summed over the batch by the caller.
template <typename T, int LANES, int FIXED_N, bool SCALAR_A>
void scan_backward(const ScanArgs<T>& a, const T* ckpt, const T* dout, T* du, T* ddt, T* dz, T* dbc, T* dA_part,
                   T* dD_part, T* dbias_part, int threads) {
  const int64_t N = FIXED_N > 0 ? FIXED_N : a.N, dim = a.dim, G = a.G, n_chunks = (a.L + a.chunk - 1) / a.chunk;
  const int64_t per_b = blocks_per_sequence<LANES>(dim, G), dA_size = SCALAR_A ? dim : N * dim;
#pragma omp parallel num_threads(threads_or_one(threads))
  {
  Work<T> w(a.chunk, N, G, LANES);
  std::vector<T> g(N * dim);
#pragma omp for schedule(static)
  for (int64_t b = 0; b < a.batch; ++b) {
    T* dA = dA_part + b * dA_size;
    T* dD = dD_part + b * dim;
    T* dbias = dbias_part + b * dim;
    std::fill(g.begin(), g.end(), T(0));
    std::fill(dA, dA + dA_size, T(0));
    std::fill(dD, dD + dim, T(0));
    std::fill(dbias, dbias + dim, T(0));
    for (int64_t c = n_chunks - 1; c >= 0; --c) {
      const int64_t start = c * a.chunk, stop = std::min(a.L, start + a.chunk);
      std::fill(w.dB_acc.begin(), w.dB_acc.end(), T(0));
      std::fill(w.dC_acc.begin(), w.dC_acc.end(), T(0));
      for (int64_t j = 0; j < per_b; ++j) {
        bool full;
        const Block blk = block_of<LANES>(j, dim, G, &full);
        if (full)
          scan_block_backward<T, LANES, FIXED_N, SCALAR_A, LANES>(a, b, blk, c, ckpt, dout, du, ddt, dz, g.data(), dA,
                                                                  dD, dbias, w);
        else
          scan_block_backward<T, 1, FIXED_N, SCALAR_A, LANES>(a, b, blk, c, ckpt, dout, du, ddt, dz, g.data(), dA, dD,
                                                              dbias, w);
      }
      for (int64_t t = start; t < stop; ++t) {  // the lanes' sums: dB and dC of the chunk's steps
        const int64_t i = t - start;
        T* dBr = dbc + (b * a.L + t) * a.bcs;
        for (int64_t gi = 0; gi < G; ++gi)
          for (int64_t n = 0; n < N; ++n) {
            const T* dBa = w.dB_acc.data() + ((i * G + gi) * N + n) * LANES;
            const T* dCa = w.dC_acc.data() + ((i * G + gi) * N + n) * LANES;
            T sb = 0, sc = 0;
            for (int l = 0; l < LANES; ++l) sb += dBa[l], sc += dCa[l];
            dBr[gi * N + n] = sb;
            dBr[(G + gi) * N + n] = sc;
          }
      }
    }
  }
  }
}

template <typename T, int LANES>
void scan_forward_any(const ScanArgs<T>& a, bool scalar_a, T* out, T* ckpt, int threads) {
  if (scalar_a) {
    if (a.N == 16)
      scan_forward<T, LANES, 16, true>(a, out, ckpt, threads);
    else
      scan_forward<T, LANES, 0, true>(a, out, ckpt, threads);
  } else {
    if (a.N == 16)
      scan_forward<T, LANES, 16, false>(a, out, ckpt, threads);
    else
      scan_forward<T, LANES, 0, false>(a, out, ckpt, threads);
  }
}

template <typename T, int LANES>
void scan_backward_any(const ScanArgs<T>& a, bool scalar_a, const T* ckpt, const T* dout, T* du, T* ddt, T* dz,
                       T* dbc, T* dA_part, T* dD_part, T* dbias_part, int threads) {
  if (scalar_a) {
    if (a.N == 16)
      scan_backward<T, LANES, 16, true>(a, ckpt, dout, du, ddt, dz, dbc, dA_part, dD_part, dbias_part, threads);
    else
      scan_backward<T, LANES, 0, true>(a, ckpt, dout, du, ddt, dz, dbc, dA_part, dD_part, dbias_part, threads);
  } else {
    if (a.N == 16)
      scan_backward<T, LANES, 16, false>(a, ckpt, dout, du, ddt, dz, dbc, dA_part, dD_part, dbias_part, threads);
    else
      scan_backward<T, LANES, 0, false>(a, ckpt, dout, du, ddt, dz, dbc, dA_part, dD_part, dbias_part, threads);
  }
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
  void hybrids_mamba_scan_forward_##SUFFIX(const T* u, const T* dt, const T* dt_bias, const T* A, const T* bc,  \
                                           const T* Dskip, const T* z, T* out, T* ckpt, int64_t us,            \
                                           int64_t xs, int64_t bcs, int64_t R, int64_t batch, int64_t L,       \
                                           int64_t dim, int64_t N, int64_t G, int64_t scalar_a,                \
                                           int64_t chunk, int threads) {                                       \
    const ScanArgs<T> a{u, dt, dt_bias, A, bc, Dskip, z, us, xs, bcs, R, batch, L, dim, N, G, chunk};          \
    scan_forward_any<T, LANES>(a, scalar_a != 0, out, ckpt, threads);                                          \
  }                                                                                                            \
  void hybrids_mamba_scan_backward_##SUFFIX(const T* u, const T* dt, const T* dt_bias, const T* A,             \
                                            const T* bc, const T* Dskip, const T* z, const T* ckpt,            \
                                            const T* dout, T* du, T* ddt, T* dz, T* dbc, T* dA_part,           \
                                            T* dD_part, T* dbias_part, int64_t us, int64_t xs, int64_t bcs,    \
                                            int64_t R, int64_t batch, int64_t L, int64_t dim, int64_t N,       \
                                            int64_t G, int64_t scalar_a, int64_t chunk, int threads) {         \
    const ScanArgs<T> a{u, dt, dt_bias, A, bc, Dskip, z, us, xs, bcs, R, batch, L, dim, N, G, chunk};          \
    scan_backward_any<T, LANES>(a, scalar_a != 0, ckpt, dout, du, ddt, dz, dbc, dA_part, dD_part, dbias_part,  \
                                threads);                                                                      \
  }

HYBRIDS_MAMBA_INNER_EXPORTS(float, f32, 16)
HYBRIDS_MAMBA_INNER_EXPORTS(double, f64, 8)

}  // extern "C"
