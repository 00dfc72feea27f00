// Gated linear attention as a recurrence on the CPU, forward and backward: one (batch, head) pair
// per OpenMP iteration, its (K, V) state in a local buffer, the V axis innermost and vectorised.
//
//     S_t = D_t S_{t-1} + k_t v_t^T          D_t = exp(g_t): 1 (no decay), a scalar, or one per row
//     o_t = scale * S_t^T q_t
//
// The chunked PyTorch form builds (C, C) score and decay matrices per chunk ((C, C, K) for a
// vector decay): on a CPU at the sweeps' shapes most of its time goes to the elementwise work on
// those. The recurrence does K * V multiply-adds per step and nothing else.
//
// The forward saves the state at the start of every CHUNK-step chunk. The backward recomputes a
// chunk's states from there into a (CHUNK + 1, K, V) buffer and walks the adjoint dS back through
// them:
//     dS   += scale * q_t do_t^T             (o_t reads S_t)
//     dq_t  = scale * S_t do_t
//     dk_t  = dS v_t,   dv_t = dS^T k_t
//     dg_t  = D_t * sum_j dS[i][j] S_{t-1}[i][j]   (per row; summed over rows for a scalar decay)
//     dS    = D_t dS                          (to S_{t-1})
// and dh0 = dS after the first step. Layouts (contiguous): q, k (B, H, L, K); v, o, do (B, H, L, V);
// g (B, H, L) or (B, H, L, K) or null; h0, last, dlast, dh0 (B, H, K, V); checkpoints
// (B, H, ceil(L / CHUNK), K, V).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

int threads_or_one(int threads) { return threads > 0 ? threads : 1; }

enum Decay { kNone = 0, kScalar = 1, kVector = 2 };

// One step of the state: S = D S + k v^T.
template <typename T>
inline void advance(T* S, const T* kt, const T* vt, const T* gt, int decay, int64_t K, int64_t V) {
  const T scalar = decay == kScalar ? std::exp(gt[0]) : T(1);
  for (int64_t i = 0; i < K; ++i) {
    T* row = S + i * V;
    const T d = decay == kVector ? std::exp(gt[i]) : scalar;
    const T ki = kt[i];
#pragma omp simd
    for (int64_t j = 0; j < V; ++j) row[j] = d * row[j] + ki * vt[j];
  }
}

template <typename T>
void attention_forward(const T* q, const T* k, const T* v, const T* g, int decay, const T* h0, T scale, T* o, T* last,
                       T* checkpoints, int64_t BH, int64_t L, int64_t K, int64_t V, int64_t chunk, int threads) {
  const int64_t n_chunks = (L + chunk - 1) / chunk;
  const int64_t g_width = decay == kVector ? K : 1;
#pragma omp parallel for schedule(static) num_threads(threads_or_one(threads))
  for (int64_t bh = 0; bh < BH; ++bh) {
    std::vector<T> state(K * V, T(0));
    T* S = state.data();
    if (h0) std::memcpy(S, h0 + bh * K * V, K * V * sizeof(T));
    for (int64_t t = 0; t < L; ++t) {
      if (t % chunk == 0) std::memcpy(checkpoints + (bh * n_chunks + t / chunk) * K * V, S, K * V * sizeof(T));
      const T* qt = q + (bh * L + t) * K;
      advance(S, k + (bh * L + t) * K, v + (bh * L + t) * V, g ? g + (bh * L + t) * g_width : nullptr, decay, K, V);
      T* ot = o + (bh * L + t) * V;
      for (int64_t j = 0; j < V; ++j) ot[j] = T(0);
      for (int64_t i = 0; i < K; ++i) {
        const T qi = scale * qt[i];
        const T* row = S + i * V;
#pragma omp simd
        for (int64_t j = 0; j < V; ++j) ot[j] += qi * row[j];
      }
    }
    if (last) std::memcpy(last + bh * K * V, S, K * V * sizeof(T));
  }
}

template <typename T>
void attention_backward(const T* q, const T* k, const T* v, const T* g, int decay, T scale, const T* checkpoints,
                        const T* dout, const T* dlast, T* dq, T* dk, T* dv, T* dg, T* dh0, int64_t BH, int64_t L,
                        int64_t K, int64_t V, int64_t chunk, int threads) {
  const int64_t n_chunks = (L + chunk - 1) / chunk;
  const int64_t g_width = decay == kVector ? K : 1;
#pragma omp parallel for schedule(static) num_threads(threads_or_one(threads))
  for (int64_t bh = 0; bh < BH; ++bh) {
    std::vector<T> adjoint(K * V, T(0));
    std::vector<T> states((chunk + 1) * K * V);  // states[s]: the state after s steps of the chunk
    T* dS = adjoint.data();
    if (dlast) std::memcpy(dS, dlast + bh * K * V, K * V * sizeof(T));
    for (int64_t c = n_chunks - 1; c >= 0; --c) {
      const int64_t start = c * chunk, end = std::min(L, start + chunk);
      std::memcpy(states.data(), checkpoints + (bh * n_chunks + c) * K * V, K * V * sizeof(T));
      for (int64_t t = start; t < end; ++t) {
        T* S = states.data() + (t - start + 1) * K * V;
        std::memcpy(S, S - K * V, K * V * sizeof(T));
        advance(S, k + (bh * L + t) * K, v + (bh * L + t) * V, g ? g + (bh * L + t) * g_width : nullptr, decay, K, V);
      }
      for (int64_t t = end - 1; t >= start; --t) {
        const T* S = states.data() + (t - start + 1) * K * V;
        const T* prev = S - K * V;
        const T* qt = q + (bh * L + t) * K;
        const T* kt = k + (bh * L + t) * K;
        const T* vt = v + (bh * L + t) * V;
        const T* dot = dout + (bh * L + t) * V;
        const T* gt = g ? g + (bh * L + t) * g_width : nullptr;
        T* dqt = dq + (bh * L + t) * K;
        T* dkt = dk + (bh * L + t) * K;
        T* dvt = dv + (bh * L + t) * V;
        for (int64_t j = 0; j < V; ++j) dvt[j] = T(0);
        T dg_scalar = T(0);
        const T scalar = decay == kScalar ? std::exp(gt[0]) : T(1);
        for (int64_t i = 0; i < K; ++i) {
          const T* row = S + i * V;
          const T* prev_row = prev + i * V;
          T* drow = dS + i * V;
          const T qi = scale * qt[i], ki = kt[i];
          T dq_i = T(0), dk_i = T(0), dg_i = T(0);
#pragma omp simd reduction(+ : dq_i, dk_i, dg_i)
          for (int64_t j = 0; j < V; ++j) {
            dq_i += row[j] * dot[j];
            const T d = drow[j] + qi * dot[j];
            drow[j] = d;
            dk_i += d * vt[j];
            dvt[j] += d * ki;
            dg_i += d * prev_row[j];
          }
          dqt[i] = scale * dq_i;
          dkt[i] = dk_i;
          const T decay_i = decay == kVector ? std::exp(gt[i]) : scalar;
          if (decay == kVector) dg[(bh * L + t) * K + i] = decay_i * dg_i;
          dg_scalar += dg_i;
#pragma omp simd
          for (int64_t j = 0; j < V; ++j) drow[j] *= decay_i;
        }
        if (decay == kScalar) dg[bh * L + t] = scalar * dg_scalar;
      }
    }
    if (dh0) std::memcpy(dh0 + bh * K * V, dS, K * V * sizeof(T));
  }
}

}  // namespace

extern "C" {

#define HYBRIDS_LINEAR_ATTENTION_EXPORTS(T, SUFFIX)                                                                  \
  void hybrids_linear_attention_forward_##SUFFIX(const T* q, const T* k, const T* v, const T* g, int decay,          \
                                                 const T* h0, double scale, T* o, T* last, T* checkpoints,          \
                                                 int64_t BH, int64_t L, int64_t K, int64_t V, int64_t chunk,         \
                                                 int threads) {                                                     \
    attention_forward<T>(q, k, v, g, decay, h0, T(scale), o, last, checkpoints, BH, L, K, V, chunk, threads);       \
  }                                                                                                                  \
  void hybrids_linear_attention_backward_##SUFFIX(const T* q, const T* k, const T* v, const T* g, int decay,         \
                                                  double scale, const T* checkpoints, const T* dout, const T* dlast, \
                                                  T* dq, T* dk, T* dv, T* dg, T* dh0, int64_t BH, int64_t L,          \
                                                  int64_t K, int64_t V, int64_t chunk, int threads) {                \
    attention_backward<T>(q, k, v, g, decay, T(scale), checkpoints, dout, dlast, dq, dk, dv, dg, dh0, BH, L, K, V,  \
                          chunk, threads);                                                                           \
  }

HYBRIDS_LINEAR_ATTENTION_EXPORTS(float, f32)
HYBRIDS_LINEAR_ATTENTION_EXPORTS(double, f64)

}  // extern "C"
