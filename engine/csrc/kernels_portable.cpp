// Portable (any CPU) kernels: same packed layouts and the same integer arithmetic as the
// AVX-512 kernels (int8/int4 results are bit-identical to them; bf16 differs only in fp32
// summation order), written as plain loops the compiler may vectorize at baseline flags.
#include <cmath>
#include <cstring>

#include "kernels.h"

namespace hmoe {

namespace {

inline int32_t load_i32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline int16_t load_i16(const void* p) {
  int16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline float load_f32(const void* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}

void gemm_bf16(const GemmArgs& a) {
  const uint8_t* A = static_cast<const uint8_t*>(a.A);
  for (int m = 0; m < a.M; ++m) {
    const uint8_t* x = A + static_cast<size_t>(m) * a.lda;
    for (int j = 0; j < a.nb; ++j) {
      const uint8_t* w = a.W + static_cast<size_t>(j) * a.bstride;
      float acc[kBlockN] = {};
      for (int p = 0; p < a.K / 2; ++p) {
        uint16_t xp[2];
        std::memcpy(xp, x + static_cast<size_t>(p) * 4, 4);
        if ((xp[0] | xp[1]) == 0) continue;  // zero padding and exact zeros add nothing
        const float x0 = bf16_to_f32(xp[0]), x1 = bf16_to_f32(xp[1]);
        uint16_t wp[2 * kBlockN];
        std::memcpy(wp, w + static_cast<size_t>(p) * 64, 64);
        for (int n = 0; n < kBlockN; ++n)
          acc[n] += bf16_to_f32(wp[2 * n + 1]) * x1 + bf16_to_f32(wp[2 * n]) * x0;
      }
      std::memcpy(a.C + static_cast<size_t>(m) * a.ldc + j * kBlockN, acc, sizeof(acc));
    }
  }
}

void gemm_i8(const GemmArgs& a) {
  const uint8_t* A = static_cast<const uint8_t*>(a.A);
  for (int m = 0; m < a.M; ++m) {
    const uint8_t* x = A + static_cast<size_t>(m) * a.lda;
    int16_t xv[kI8Flush];
    for (int j = 0; j < a.nb; ++j) {
      const uint8_t* blk = a.W + static_cast<size_t>(j) * a.bstride;
      const int8_t* w = reinterpret_cast<const int8_t*>(blk);
      float accf[kBlockN] = {};
      for (int kc = 0; kc < a.K; kc += kI8Flush) {
        const int ke = imin(a.K, kc + kI8Flush);
        std::memcpy(xv, x + static_cast<size_t>(kc) * 2, static_cast<size_t>(ke - kc) * 2);
        int32_t acc[kBlockN] = {};
        for (int q = kc / 4; q < ke / 4; ++q) {
          const int16_t* xq = xv + (q * 4 - kc);
          const int8_t* wq = w + static_cast<size_t>(q) * 64;
          for (int n = 0; n < kBlockN; ++n)
            acc[n] += wq[4 * n] * xq[0] + wq[4 * n + 1] * xq[1] + wq[4 * n + 2] * xq[2] +
                      wq[4 * n + 3] * xq[3];
        }
        for (int n = 0; n < kBlockN; ++n) accf[n] += static_cast<float>(acc[n]);
      }
      const float as = a.a_scale[m];
      float* c = a.C + static_cast<size_t>(m) * a.ldc + j * kBlockN;
      for (int n = 0; n < kBlockN; ++n)
        c[n] = accf[n] * as * load_f32(blk + static_cast<size_t>(a.K) * kBlockN + 4 * n);
    }
  }
}

void gemm_i4(const GemmArgs& a) {
  const uint8_t* A = static_cast<const uint8_t*>(a.A);
  const int g = a.group, vpg = g / 8;
  const size_t grec = static_cast<size_t>(vpg) * 64 + 64;
  for (int m = 0; m < a.M; ++m) {
    const uint8_t* x = A + static_cast<size_t>(m) * a.lda;
    for (int j = 0; j < a.nb; ++j) {
      const uint8_t* blk = a.W + static_cast<size_t>(j) * a.bstride;
      float accf[kBlockN] = {};
      for (int gi = 0; gi < a.K / g; ++gi) {
        const uint8_t* rec = blk + gi * grec;
        int32_t acc[kBlockN] = {};
        for (int r = 0; r < vpg; ++r) {
          const uint8_t* v = rec + r * 64;
          const int k8 = gi * g + r * 8;
          int32_t xs[8];
          for (int i = 0; i < 8; ++i) xs[i] = load_i16(x + static_cast<size_t>(k8 + i) * 2);
          for (int b = 0; b < 32; ++b) {
            const int n = b >> 1, jj = b & 1;
            acc[n] += ((v[b] & 15) - 8) * xs[jj] + ((v[b] >> 4) - 8) * xs[2 + jj] +
                      ((v[32 + b] & 15) - 8) * xs[4 + jj] + ((v[32 + b] >> 4) - 8) * xs[6 + jj];
          }
        }
        const uint8_t* sc = rec + static_cast<size_t>(vpg) * 64;
        for (int n = 0; n < kBlockN; ++n)
          accf[n] = accf[n] + static_cast<float>(acc[n]) * load_f32(sc + 4 * n);
      }
      const float as = a.a_scale[m];
      float* c = a.C + static_cast<size_t>(m) * a.ldc + j * kBlockN;
      for (int n = 0; n < kBlockN; ++n) c[n] = accf[n] * as;
    }
  }
}

// ---- elementwise ----

template <class T>
void quantize_to(const float* x, int n, float inv, float qmax, T* dst) {
  for (int i = 0; i < n; ++i)
    dst[i] = static_cast<T>(static_cast<int>(clampf(round_even(x[i] * inv), -qmax, qmax)));
}

void quantize_f32_row(const float* x, int n, int K, int afmt, void* dst, float* scale) {
  float amax = 0.0f;
  for (int i = 0; i < n; ++i) {
    float v = std::fabs(x[i]);
    amax = v > amax ? v : amax;
  }
  const float qmax = afmt == ACT_I16 ? kI16Max : kI8Max;
  const float inv = amax > 0.0f ? qmax / amax : 1.0f;
  *scale = amax > 0.0f ? amax / qmax : 1.0f;
  if (afmt == ACT_I16) {
    int16_t* d = static_cast<int16_t*>(dst);
    quantize_to(x, n, inv, qmax, d);
    std::memset(d + n, 0, static_cast<size_t>(K - n) * 2);
  } else {
    int8_t* d = static_cast<int8_t*>(dst);
    quantize_to(x, n, inv, qmax, d);
    std::memset(d + n, 0, static_cast<size_t>(K - n));
  }
}

void act_from_bf16(const uint16_t* x, int H, int K, int afmt, void* dst, float* scale) {
  if (afmt == ACT_BF16) {
    std::memcpy(dst, x, static_cast<size_t>(H) * 2);
    std::memset(static_cast<uint16_t*>(dst) + H, 0, static_cast<size_t>(K - H) * 2);
    *scale = 1.0f;
    return;
  }
  float buf[256];
  // Two passes over chunks: amax first, then quantize with the row scale.
  float amax = 0.0f;
  for (int i = 0; i < H; ++i) {
    float v = std::fabs(bf16_to_f32(x[i]));
    amax = v > amax ? v : amax;
  }
  const float qmax = afmt == ACT_I16 ? kI16Max : kI8Max;
  const float inv = amax > 0.0f ? qmax / amax : 1.0f;
  *scale = amax > 0.0f ? amax / qmax : 1.0f;
  for (int c0 = 0; c0 < H; c0 += 256) {
    const int n = imin(256, H - c0);
    for (int i = 0; i < n; ++i) buf[i] = bf16_to_f32(x[c0 + i]);
    if (afmt == ACT_I16)
      quantize_to(buf, n, inv, qmax, static_cast<int16_t*>(dst) + c0);
    else
      quantize_to(buf, n, inv, qmax, static_cast<int8_t*>(dst) + c0);
  }
  if (afmt == ACT_I16)
    std::memset(static_cast<int16_t*>(dst) + H, 0, static_cast<size_t>(K - H) * 2);
  else
    std::memset(static_cast<int8_t*>(dst) + H, 0, static_cast<size_t>(K - H));
}

void act_from_f32(const float* x, int K, int afmt, void* dst, float* scale) {
  quantize_f32_row(x, K, K, afmt, dst, scale);
}

void silu_mul(const float* C, int ldc, int M, int nbi, bool to_f32, void* dst, size_t ld_bytes) {
  for (int m = 0; m < M; ++m) {
    const float* c = C + static_cast<size_t>(m) * ldc;
    uint8_t* d = static_cast<uint8_t*>(dst) + static_cast<size_t>(m) * ld_bytes;
    for (int b = 0; b < nbi; ++b) {
      for (int n = 0; n < kBlockN; ++n) {
        const float g = c[2 * b * kBlockN + n], u = c[(2 * b + 1) * kBlockN + n];
        const float v = g / (1.0f + std::exp(-g)) * u;
        const int col = b * kBlockN + n;
        if (to_f32) {
          std::memcpy(d + static_cast<size_t>(col) * 4, &v, 4);
        } else {
          const uint16_t h = f32_to_bf16(v);
          std::memcpy(d + static_cast<size_t>(col) * 2, &h, 2);
        }
      }
    }
  }
}

void scale_rows(const float* C, int ldc, int M, int ncols, const float* w, float* Y, size_t ldy) {
  for (int m = 0; m < M; ++m)
    for (int c = 0; c < ncols; ++c)
      Y[static_cast<size_t>(m) * ldy + c] = w[m] * C[static_cast<size_t>(m) * ldc + c];
}

void sum_rows_bf16(const float* const* rows, int nrows, int n, uint16_t* out) {
  for (int c0 = 0; c0 < n; c0 += 64) {
    const int cn = imin(64, n - c0);
    float acc[64];
    for (int c = 0; c < cn; ++c) acc[c] = 0.0f;
    for (int r = 0; r < nrows; ++r)
      for (int c = 0; c < cn; ++c) acc[c] += rows[r][c0 + c];
    for (int c = 0; c < cn; ++c) out[c0 + c] = f32_to_bf16(acc[c]);
  }
}

}  // namespace

void gemm_portable(int fmt, const GemmArgs& a) {
  switch (fmt) {
    case FMT_BF16:
      gemm_bf16(a);
      break;
    case FMT_INT8:
      gemm_i8(a);
      break;
    default:
      gemm_i4(a);
      break;
  }
}

const Elementwise& elementwise_portable() {
  static const Elementwise ew = {act_from_bf16, act_from_f32, silu_mul, scale_rows,
                                 sum_rows_bf16};
  return ew;
}

double read_sum_portable(const uint8_t* p, size_t bytes) {
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 32 <= bytes; i += 32) {
    uint64_t v[4];
    std::memcpy(v, p + i, 32);
    s0 += v[0];
    s1 += v[1];
    s2 += v[2];
    s3 += v[3];
  }
  for (; i < bytes; ++i) s0 += p[i];
  return static_cast<double>(s0 + s1 + s2 + s3);
}

}  // namespace hmoe
