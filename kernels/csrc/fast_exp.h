// Shared by the C++ CPU kernels (each built as one translation unit): an exp the compiler can
// vectorise.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

// exp for float in a form the compiler can vectorise (libm's expf is a scalar call):
// exp(x) = 2^k exp(r) with k = round(x / ln 2), |r| <= ln(2) / 2, exp(r) by its Taylor series
// to r^7 (relative error < 1e-8, below float's 6e-8 rounding).
inline float exp_approx(float x_in) {
  // Clamped by comparisons, which compile to vector max/min: std::fmin/fmax do not (without
  // -ffast-math they call libm, which made the scan 15x slower). A NaN fails the first
  // comparison and becomes -87 (a NaN reaching the integer cast below would be undefined);
  // the NaN itself is returned at the end.
  float x = x_in > -87.0f ? x_in : -87.0f;
  x = x < 88.0f ? x : 88.0f;
  // +126.5 keeps the argument of the truncating cast positive, so truncation rounds to nearest.
  const int k = static_cast<int>(x * 1.4426950408889634f + 126.5f) - 126;
  const float kf = static_cast<float>(k);
  const float r = (x - kf * 0.693145751953125f) - kf * 1.428606765330187e-06f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (k + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x_in == x_in ? p * scale : x_in;
}
inline double exp_approx(double x) { return std::exp(x); }  // float64 is for tests: exact libm
