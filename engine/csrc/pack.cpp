#include "pack.h"

#include <cmath>
#include <cstring>

#include "kernels.h"

namespace hmoe {

void quantize_row_int8(const uint16_t* w, int K, int8_t* q, float* scale) {
  float amax = 0.0f;
  for (int k = 0; k < K; ++k) {
    float v = std::fabs(bf16_to_f32(w[k]));
    amax = v > amax ? v : amax;
  }
  const float s = amax > 0.0f ? amax / 127.0f : 1.0f;
  for (int k = 0; k < K; ++k) {
    float r = clampf(round_even(bf16_to_f32(w[k]) / s), -127.0f, 127.0f);
    q[k] = static_cast<int8_t>(static_cast<int>(r));
  }
  *scale = s;
}

void quantize_row_int4(const uint16_t* w, int K, int group, uint8_t* packed, float* scales) {
  std::memset(packed, 0, static_cast<size_t>(K / 2));
  for (int g = 0; g < K / group; ++g) {
    const uint16_t* wg = w + static_cast<size_t>(g) * group;
    float amax = 0.0f;
    for (int k = 0; k < group; ++k) {
      float v = std::fabs(bf16_to_f32(wg[k]));
      amax = v > amax ? v : amax;
    }
    const float s = amax > 0.0f ? amax / 7.0f : 1.0f;
    scales[g] = s;
    for (int k = 0; k < group; ++k) {
      float r = clampf(round_even(bf16_to_f32(wg[k]) / s), -8.0f, 7.0f);
      const int nib = static_cast<int>(r) + 8;
      const int kk = g * group + k;
      packed[kk >> 1] = static_cast<uint8_t>(packed[kk >> 1] | (nib << ((kk & 1) * 4)));
    }
  }
}

size_t pack_tmp_bytes(int K) {
  return static_cast<size_t>(kBlockN) * (static_cast<size_t>(K) + 64) +
         static_cast<size_t>(kBlockN) * (static_cast<size_t>(K) / 32 + 1) * sizeof(float) + 64;
}

namespace {

inline int64_t row_index(const RowSource& s, int e, int r) {
  return static_cast<int64_t>(e) * s.estride + r;
}

void pack_bf16(int KP, int k0, const RowSource& s, int e, int r0, uint8_t* dst) {
  const uint16_t* rows[kBlockN];
  for (int n = 0; n < kBlockN; ++n) {
    const int r = r0 + n;
    rows[n] = r < s.rows ? static_cast<const uint16_t*>(s.data) + row_index(s, e, r) * s.K : nullptr;
  }
  // Pairs fully inside the row (and present rows) take the fast path: one 4-byte copy each.
  const int full = imax(0, imin(KP / 2, (s.K - k0) / 2));
  for (int p = 0; p < full; ++p) {
    uint8_t* d = dst + static_cast<size_t>(p) * 64;
    for (int n = 0; n < kBlockN; ++n) {
      if (rows[n])
        std::memcpy(d + n * 4, rows[n] + k0 + 2 * p, 4);
      else
        std::memset(d + n * 4, 0, 4);
    }
  }
  uint16_t* d = reinterpret_cast<uint16_t*>(dst);
  for (int p = full; p < KP / 2; ++p) {
    const int k = k0 + 2 * p;
    for (int n = 0; n < kBlockN; ++n) {
      const uint16_t* row = rows[n];
      d[(p * kBlockN + n) * 2 + 0] = (row && k < s.K) ? row[k] : 0;
      d[(p * kBlockN + n) * 2 + 1] = (row && k + 1 < s.K) ? row[k + 1] : 0;
    }
  }
}

void pack_int8(int KP, int k0, const RowSource& s, int e, int r0, uint8_t* dst, void* tmp) {
  const int8_t* rows[kBlockN];
  float sc[kBlockN];
  int8_t* qbuf = static_cast<int8_t*>(tmp);
  for (int n = 0; n < kBlockN; ++n) {
    const int r = r0 + n;
    rows[n] = nullptr;
    sc[n] = 0.0f;
    if (r >= s.rows) continue;
    const int64_t ri = row_index(s, e, r);
    if (s.kind == SRC_Q8) {
      rows[n] = static_cast<const int8_t*>(s.data) + ri * s.K;
      sc[n] = s.scale[ri];
    } else {
      int8_t* q = qbuf + static_cast<size_t>(n) * (s.K + 64);
      quantize_row_int8(static_cast<const uint16_t*>(s.data) + ri * s.K, s.K, q, &sc[n]);
      rows[n] = q;
    }
  }
  int8_t* d = reinterpret_cast<int8_t*>(dst);
  const int full = imax(0, imin(KP / 4, (s.K - k0) / 4));
  for (int q4 = 0; q4 < full; ++q4) {
    for (int n = 0; n < kBlockN; ++n) {
      if (rows[n])
        std::memcpy(d + (q4 * kBlockN + n) * 4, rows[n] + k0 + 4 * q4, 4);
      else
        std::memset(d + (q4 * kBlockN + n) * 4, 0, 4);
    }
  }
  for (int q4 = full; q4 < KP / 4; ++q4) {
    for (int n = 0; n < kBlockN; ++n) {
      for (int i = 0; i < 4; ++i) {
        const int k = k0 + 4 * q4 + i;
        d[(q4 * kBlockN + n) * 4 + i] = (rows[n] && k < s.K) ? rows[n][k] : 0;
      }
    }
  }
  std::memcpy(dst + static_cast<size_t>(KP) * kBlockN, sc, sizeof(sc));
}

void pack_int4(int group, int KP, int k0, const RowSource& s, int e, int r0, uint8_t* dst,
               void* tmp) {
  const uint8_t* rows[kBlockN];
  const float* scs[kBlockN];
  uint8_t* qbuf = static_cast<uint8_t*>(tmp);
  float* sbuf = reinterpret_cast<float*>(qbuf + static_cast<size_t>(kBlockN) * (s.K + 64));
  const int ng = s.K / group;
  for (int n = 0; n < kBlockN; ++n) {
    const int r = r0 + n;
    rows[n] = nullptr;
    scs[n] = nullptr;
    if (r >= s.rows) continue;
    const int64_t ri = row_index(s, e, r);
    if (s.kind == SRC_Q4) {
      rows[n] = static_cast<const uint8_t*>(s.data) + ri * (s.K / 2);
      scs[n] = s.scale + ri * ng;
    } else {
      uint8_t* q = qbuf + static_cast<size_t>(n) * (s.K + 64);
      float* sc = sbuf + static_cast<size_t>(n) * (s.K / 32 + 1);
      quantize_row_int4(static_cast<const uint16_t*>(s.data) + ri * s.K, s.K, group, q, sc);
      rows[n] = q;
      scs[n] = sc;
    }
  }
  auto nib = [&](int n, int k) -> int {
    if (!rows[n] || k >= s.K) return 8;
    return (rows[n][k >> 1] >> ((k & 1) * 4)) & 15;
  };
  const int vpg = group / 8;
  const size_t grec = static_cast<size_t>(vpg) * 64 + 64;
  for (int gi = 0; gi < KP / group; ++gi) {
    uint8_t* rec = dst + gi * grec;
    const int kb = k0 + gi * group;
    for (int r = 0; r < vpg; ++r) {
      uint8_t* v = rec + r * 64;
      const int k8 = kb + r * 8;
      if (k8 + 8 <= s.K) {  // fast path: 4 source bytes hold k8..k8+7 of a row
        for (int n = 0; n < kBlockN; ++n) {
          uint8_t b4[4] = {0x88, 0x88, 0x88, 0x88};
          if (rows[n]) std::memcpy(b4, rows[n] + k8 / 2, 4);
          v[2 * n] = static_cast<uint8_t>((b4[0] & 15) | ((b4[1] & 15) << 4));
          v[2 * n + 1] = static_cast<uint8_t>((b4[0] >> 4) | (b4[1] & 0xf0));
          v[32 + 2 * n] = static_cast<uint8_t>((b4[2] & 15) | ((b4[3] & 15) << 4));
          v[32 + 2 * n + 1] = static_cast<uint8_t>((b4[2] >> 4) | (b4[3] & 0xf0));
        }
        continue;
      }
      for (int b = 0; b < 32; ++b) {
        const int n = b >> 1, j = b & 1;
        v[b] = static_cast<uint8_t>(nib(n, k8 + j) | (nib(n, k8 + 2 + j) << 4));
        v[32 + b] = static_cast<uint8_t>(nib(n, k8 + 4 + j) | (nib(n, k8 + 6 + j) << 4));
      }
    }
    float sc[kBlockN];
    for (int n = 0; n < kBlockN; ++n) sc[n] = (scs[n] && kb < s.K) ? scs[n][kb / group] : 0.0f;
    std::memcpy(rec + static_cast<size_t>(vpg) * 64, sc, sizeof(sc));
  }
}

}  // namespace

void pack_block(int fmt, int group, int KP, int k0, const RowSource& src, int e, int r0,
                uint8_t* dst, void* tmp) {
  switch (fmt) {
    case FMT_BF16:
      pack_bf16(KP, k0, src, e, r0, dst);
      break;
    case FMT_INT8:
      pack_int8(KP, k0, src, e, r0, dst, tmp);
      break;
    default:
      pack_int4(group, KP, k0, src, e, r0, dst, tmp);
      break;
  }
}

}  // namespace hmoe
