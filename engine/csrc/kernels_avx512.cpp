// AVX-512 kernels (F/BW/VL/DQ + BF16 + VNNI), compiled with per-function target attributes so
// the file builds at baseline flags; only called after runtime dispatch.
//
//  BF16 weights: vdpbf16ps, 16 output rows in the lanes, an activation pair broadcast.
//  INT8 weights: [K/4][16][4] int8 sign-extended to int16 and regrouped into [16][2] pairs
//                (vpermt2d), vpdpwssd against int16 activations (per-token scale, 15 bits),
//                int32 flushed to fp32 every 512 K, then row and activation scales.
//  INT4 weights: nibbles -> int16 (q) pairs, vpdpwssd per group in int32, group scale in fp32.
// Only functions with internal linkage live in the target regions (no COMDAT clashes).
#include <atomic>
#include <cstring>

#include "kernels.h"

#if HMOE_HAVE_AVX512
// GCC 12's intrinsic headers trip -Wmaybe-uninitialized on their own _mm*_undefined_*()
// helpers (GCC PR 105593); the warning points into the header, so it is silenced there only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

namespace hmoe {

#if HMOE_HAVE_AVX512

namespace {

inline int32_t load_i32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Software prefetch distance (bytes ahead on each weight stream); process-wide tunable.
std::atomic<int> g_prefetch{2048};

HMOE_AVX512 inline __m512 dp_bf16(__m512 acc, __m512i w, __m512i x) {
  return _mm512_dpbf16_ps(acc, (__m512bh)w, (__m512bh)x);
}

// ---------------------------------------------------------------- BF16
template <int MR, int NR>
HMOE_AVX512 void mk_bf16(const uint8_t* W, size_t bstride, int K, const uint8_t* A, size_t lda,
                         float* C, int ldc, size_t pf) {
  __m512 acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int j = 0; j < NR; ++j) acc[m][j] = _mm512_setzero_ps();
  const int np = K / 2;
  for (int p = 0; p < np; ++p) {
    __m512i w[NR];
    for (int j = 0; j < NR; ++j) {
      const uint8_t* wp = W + j * bstride + static_cast<size_t>(p) * 64;
      _mm_prefetch(reinterpret_cast<const char*>(wp + pf), _MM_HINT_T0);
      w[j] = _mm512_loadu_si512(wp);
    }
    for (int m = 0; m < MR; ++m) {
      const __m512i x = _mm512_set1_epi32(load_i32(A + m * lda + static_cast<size_t>(p) * 4));
      for (int j = 0; j < NR; ++j) acc[m][j] = dp_bf16(acc[m][j], w[j], x);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int j = 0; j < NR; ++j) _mm512_storeu_ps(C + m * ldc + j * 16, acc[m][j]);
}

using MkBf16 = void (*)(const uint8_t*, size_t, int, const uint8_t*, size_t, float*, int, size_t);

template <int MR>
HMOE_AVX512 MkBf16 pick_bf16_nr(int nr) {
  switch (nr) {
    case 1:
      return &mk_bf16<MR, 1>;
    case 2:
      return &mk_bf16<MR, 2>;
    case 3:
      return &mk_bf16<MR, 3>;
    default:
      return &mk_bf16<MR, 4>;
  }
}

HMOE_AVX512 MkBf16 pick_bf16(int mr, int nr) {
  switch (mr) {
    case 1:
      return pick_bf16_nr<1>(nr);
    case 2:
      return pick_bf16_nr<2>(nr);
    case 3:
      return pick_bf16_nr<3>(nr);
    case 4:
      return pick_bf16_nr<4>(nr);
    case 5:
      return pick_bf16_nr<5>(nr);
    default:
      return pick_bf16_nr<6>(nr);
  }
}

HMOE_AVX512 void gemm_bf16(const GemmArgs& a) {
  const uint8_t* A = static_cast<const uint8_t*>(a.A);
  const size_t pf = static_cast<size_t>(g_prefetch.load(std::memory_order_relaxed));
  const int MRX = 6, NRX = 4;
  for (int j0 = 0; j0 < a.nb; j0 += NRX) {
    const int nr = imin(NRX, a.nb - j0);
    for (int m0 = 0; m0 < a.M; m0 += MRX) {
      const int mr = imin(MRX, a.M - m0);
      pick_bf16(mr, nr)(a.W + j0 * a.bstride, a.bstride, a.K, A + m0 * a.lda, a.lda,
                        a.C + static_cast<size_t>(m0) * a.ldc + j0 * 16, a.ldc, pf);
    }
  }
}

// ---------------------------------------------------------------- INT8 (x int16)
// 64 bytes of [16 rows][4 k] int8 -> two vectors of int16 pairs [16 rows][2 k]: (k0,k1), (k2,k3).
HMOE_AVX512 inline void i8_to_pairs(const uint8_t* p, __m512i& p01, __m512i& p23) {
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  const __m512i lo = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  const __m512i hi =
      _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32)));
  p01 = _mm512_permutex2var_epi32(lo, even, hi);
  p23 = _mm512_permutex2var_epi32(lo, odd, hi);
}

template <int MR, int NR>
HMOE_AVX512 void mk_i8(const uint8_t* W, size_t bstride, int K, const uint8_t* A, size_t lda,
                       const float* as, float* C, int ldc, size_t pf) {
  __m512 accf[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int j = 0; j < NR; ++j) accf[m][j] = _mm512_setzero_ps();
  for (int kc = 0; kc < K; kc += kI8Flush) {
    const int ke = imin(K, kc + kI8Flush);
    __m512i acc[MR][NR];
    for (int m = 0; m < MR; ++m)
      for (int j = 0; j < NR; ++j) acc[m][j] = _mm512_setzero_si512();
    for (int q = kc / 4; q < ke / 4; ++q) {
      __m512i p01[NR], p23[NR];
      for (int j = 0; j < NR; ++j) {
        const uint8_t* wp = W + j * bstride + static_cast<size_t>(q) * 64;
        _mm_prefetch(reinterpret_cast<const char*>(wp + pf), _MM_HINT_T0);
        i8_to_pairs(wp, p01[j], p23[j]);
      }
      for (int m = 0; m < MR; ++m) {
        const uint8_t* xp = A + m * lda + static_cast<size_t>(q) * 8;
        const __m512i xa = _mm512_set1_epi32(load_i32(xp));
        const __m512i xb = _mm512_set1_epi32(load_i32(xp + 4));
        for (int j = 0; j < NR; ++j) {
          acc[m][j] = _mm512_dpwssd_epi32(acc[m][j], p01[j], xa);
          acc[m][j] = _mm512_dpwssd_epi32(acc[m][j], p23[j], xb);
        }
      }
    }
    for (int m = 0; m < MR; ++m)
      for (int j = 0; j < NR; ++j) accf[m][j] = _mm512_add_ps(accf[m][j], _mm512_cvtepi32_ps(acc[m][j]));
  }
  for (int j = 0; j < NR; ++j) {
    const __m512 ws = _mm512_loadu_ps(W + j * bstride + static_cast<size_t>(K) * 16);
    for (int m = 0; m < MR; ++m)
      _mm512_storeu_ps(C + m * ldc + j * 16,
                       _mm512_mul_ps(_mm512_mul_ps(accf[m][j], _mm512_set1_ps(as[m])), ws));
  }
}

using MkQ = void (*)(const uint8_t*, size_t, int, const uint8_t*, size_t, const float*, float*,
                     int, size_t);

template <int MR>
HMOE_AVX512 MkQ pick_i8_nr(int nr) {
  switch (nr) {
    case 1:
      return &mk_i8<MR, 1>;
    case 2:
      return &mk_i8<MR, 2>;
    case 3:
      return &mk_i8<MR, 3>;
    default:
      return &mk_i8<MR, 4>;
  }
}

HMOE_AVX512 void gemm_i8(const GemmArgs& a) {
  const uint8_t* A = static_cast<const uint8_t*>(a.A);
  const size_t pf = static_cast<size_t>(g_prefetch.load(std::memory_order_relaxed));
  const int MRX = a.M == 1 ? 1 : 4, NRX = a.M == 1 ? 4 : 2;
  for (int j0 = 0; j0 < a.nb; j0 += NRX) {
    const int nr = imin(NRX, a.nb - j0);
    for (int m0 = 0; m0 < a.M; m0 += MRX) {
      const int mr = imin(MRX, a.M - m0);
      MkQ f = mr == 1 ? pick_i8_nr<1>(nr)
                      : mr == 2 ? pick_i8_nr<2>(nr) : mr == 3 ? pick_i8_nr<3>(nr) : pick_i8_nr<4>(nr);
      f(a.W + j0 * a.bstride, a.bstride, a.K, A + m0 * a.lda, a.lda, a.a_scale + m0,
        a.C + static_cast<size_t>(m0) * a.ldc + j0 * 16, a.ldc, pf);
    }
  }
}

// ---------------------------------------------------------------- INT4 (x int16)
// 64 bytes of int4 (see kernels.h) -> four vectors of int16 pairs [16 rows][2 k] (q, not q+8).
HMOE_AVX512 inline void i4_to_pairs(const uint8_t* ptr, __m512i p[4]) {
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  const __m512i eight = _mm512_set1_epi16(8);
  const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ptr));
  const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ptr + 32));
  p[0] = _mm512_sub_epi16(_mm512_cvtepu8_epi16(_mm256_and_si256(v0, m4)), eight);
  p[1] = _mm512_sub_epi16(_mm512_cvtepu8_epi16(_mm256_and_si256(_mm256_srli_epi16(v0, 4), m4)), eight);
  p[2] = _mm512_sub_epi16(_mm512_cvtepu8_epi16(_mm256_and_si256(v1, m4)), eight);
  p[3] = _mm512_sub_epi16(_mm512_cvtepu8_epi16(_mm256_and_si256(_mm256_srli_epi16(v1, 4), m4)), eight);
}

template <int MR, int NR>
HMOE_AVX512 void mk_i4(const uint8_t* W, size_t bstride, int K, int g, const uint8_t* A,
                       size_t lda, const float* as, float* C, int ldc, size_t pf) {
  __m512 accf[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int j = 0; j < NR; ++j) accf[m][j] = _mm512_setzero_ps();
  const int vpg = g / 8;
  const size_t grec = static_cast<size_t>(vpg) * 64 + 64;
  for (int gi = 0; gi < K / g; ++gi) {
    __m512i acc[MR][NR];
    for (int m = 0; m < MR; ++m)
      for (int j = 0; j < NR; ++j) acc[m][j] = _mm512_setzero_si512();
    for (int r = 0; r < vpg; ++r) {
      // Activation pairs of all rows first, then one weight block at a time (4 live vectors).
      const size_t xoff = (static_cast<size_t>(gi) * g + r * 8) * 2;
      __m512i x[MR][4];
      for (int m = 0; m < MR; ++m)
        for (int i = 0; i < 4; ++i) x[m][i] = _mm512_set1_epi32(load_i32(A + m * lda + xoff + 4 * i));
      for (int j = 0; j < NR; ++j) {
        const uint8_t* wp = W + j * bstride + gi * grec + r * 64;
        _mm_prefetch(reinterpret_cast<const char*>(wp + pf), _MM_HINT_T0);
        __m512i p[4];
        i4_to_pairs(wp, p);
        for (int m = 0; m < MR; ++m)
          for (int i = 0; i < 4; ++i) acc[m][j] = _mm512_dpwssd_epi32(acc[m][j], p[i], x[m][i]);
      }
    }
    for (int j = 0; j < NR; ++j) {
      const __m512 sc = _mm512_loadu_ps(W + j * bstride + gi * grec + static_cast<size_t>(vpg) * 64);
      for (int m = 0; m < MR; ++m)
        accf[m][j] = _mm512_add_ps(accf[m][j], _mm512_mul_ps(_mm512_cvtepi32_ps(acc[m][j]), sc));
    }
  }
  for (int m = 0; m < MR; ++m) {
    const __m512 s = _mm512_set1_ps(as[m]);
    for (int j = 0; j < NR; ++j) _mm512_storeu_ps(C + m * ldc + j * 16, _mm512_mul_ps(accf[m][j], s));
  }
}

using MkQ4 = void (*)(const uint8_t*, size_t, int, int, const uint8_t*, size_t, const float*,
                      float*, int, size_t);

template <int MR>
HMOE_AVX512 MkQ4 pick_i4_nr(int nr) {
  switch (nr) {
    case 1:
      return &mk_i4<MR, 1>;
    case 2:
      return &mk_i4<MR, 2>;
    case 3:
      return &mk_i4<MR, 3>;
    default:
      return &mk_i4<MR, 4>;
  }
}

HMOE_AVX512 void gemm_i4(const GemmArgs& a) {
  const uint8_t* A = static_cast<const uint8_t*>(a.A);
  const size_t pf = static_cast<size_t>(g_prefetch.load(std::memory_order_relaxed));
  const int MRX = a.M == 1 ? 1 : 3, NRX = a.M == 1 ? 4 : 2;
  for (int j0 = 0; j0 < a.nb; j0 += NRX) {
    const int nr = imin(NRX, a.nb - j0);
    for (int m0 = 0; m0 < a.M; m0 += MRX) {
      const int mr = imin(MRX, a.M - m0);
      MkQ4 f = mr == 1 ? pick_i4_nr<1>(nr) : mr == 2 ? pick_i4_nr<2>(nr) : pick_i4_nr<3>(nr);
      f(a.W + j0 * a.bstride, a.bstride, a.K, a.group, A + m0 * a.lda, a.lda, a.a_scale + m0,
        a.C + static_cast<size_t>(m0) * a.ldc + j0 * 16, a.ldc, pf);
    }
  }
}

// ---------------------------------------------------------------- dequant (AMX prefill)
// words: 32 int16 as [16 rows][2 k]; s: the 16 row scales. Stores bf16(q * s) pairs, rounded
// to nearest even (same as vcvtne2ps2bf16 for normal numbers).
HMOE_AVX512 inline __m512i round_bf16_bits(__m512 f) {
  const __m512i u = _mm512_castps_si512(f);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  return _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
}

HMOE_AVX512 inline void store_pair_bf16(uint16_t* out, __m512i words, __m512 s) {
  const __m512i e = _mm512_srai_epi32(_mm512_slli_epi32(words, 16), 16);
  const __m512i o = _mm512_srai_epi32(words, 16);
  const __m512i r0 = round_bf16_bits(_mm512_mul_ps(_mm512_cvtepi32_ps(e), s));
  const __m512i r1 = round_bf16_bits(_mm512_mul_ps(_mm512_cvtepi32_ps(o), s));
  const __m512i res = _mm512_or_si512(_mm512_srli_epi32(r0, 16),
                                      _mm512_and_si512(r1, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
  _mm512_storeu_si512(out, res);
}

HMOE_AVX512 void dequant_impl(int fmt, int g, const uint8_t* W, size_t bstride, int nb, int K,
                              int k0, int kn, uint16_t* dst) {
  for (int j = 0; j < nb; ++j) {
    const uint8_t* blk = W + j * bstride;
    uint16_t* d = dst + static_cast<size_t>(j) * kn * 16;
    if (fmt == FMT_INT8) {
      const __m512 s = _mm512_loadu_ps(blk + static_cast<size_t>(K) * 16);
      for (int q = k0 / 4; q < (k0 + kn) / 4; ++q) {
        __m512i p01, p23;
        i8_to_pairs(blk + static_cast<size_t>(q) * 64, p01, p23);
        const int pr = (q * 4 - k0) / 2;
        store_pair_bf16(d + static_cast<size_t>(pr) * 32, p01, s);
        store_pair_bf16(d + static_cast<size_t>(pr + 1) * 32, p23, s);
      }
    } else {
      const int vpg = g / 8;
      const size_t grec = static_cast<size_t>(vpg) * 64 + 64;
      for (int gi = k0 / g; gi < (k0 + kn) / g; ++gi) {
        const uint8_t* rec = blk + gi * grec;
        const __m512 s = _mm512_loadu_ps(rec + static_cast<size_t>(vpg) * 64);
        for (int r = 0; r < vpg; ++r) {
          __m512i p[4];
          i4_to_pairs(rec + r * 64, p);
          const int pr = (gi * g + r * 8 - k0) / 2;
          for (int i = 0; i < 4; ++i) store_pair_bf16(d + static_cast<size_t>(pr + i) * 32, p[i], s);
        }
      }
    }
  }
}

// ---------------------------------------------------------------- elementwise
HMOE_AVX512 inline __m512 bf16x16_to_ps(const uint16_t* p, __mmask16 m) {
  const __m256i h = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

HMOE_AVX512 inline __mmask16 tail16(int n) {
  return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1u);
}

// exp(x) for x in about [-88, 88]: 2^n * p(r), r = x - n ln2, degree-6 polynomial.
HMOE_AVX512 inline __m512 exp512(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.0f)), _mm512_set1_ps(-88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504089f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

template <int AF>
HMOE_AVX512 void store_q(void* dst, int i, __m512i q, __mmask16 m) {
  if (AF == ACT_I16)
    _mm256_mask_storeu_epi16(static_cast<int16_t*>(dst) + i, m, _mm512_cvtsepi32_epi16(q));
  else
    _mm_mask_storeu_epi8(static_cast<int8_t*>(dst) + i, m, _mm512_cvtsepi32_epi8(q));
}

// Quantize n values (fp32 via `load`) with inv and clamp to qmax; zero-pad to K.
template <int AF, bool BF>
HMOE_AVX512 void quantize_row(const void* x, int n, int K, void* dst, float* scale) {
  __m512 amax = _mm512_setzero_ps();
  for (int i = 0; i < n; i += 16) {
    const __mmask16 m = tail16(n - i);
    const __m512 v = BF ? bf16x16_to_ps(static_cast<const uint16_t*>(x) + i, m)
                        : _mm512_maskz_loadu_ps(m, static_cast<const float*>(x) + i);
    amax = _mm512_max_ps(amax, _mm512_abs_ps(v));
  }
  const float am = _mm512_reduce_max_ps(amax);
  const float qmax = AF == ACT_I16 ? kI16Max : kI8Max;
  const float inv = am > 0.0f ? qmax / am : 1.0f;
  *scale = am > 0.0f ? am / qmax : 1.0f;
  const __m512 vinv = _mm512_set1_ps(inv);
  const __m512i hi = _mm512_set1_epi32(static_cast<int>(qmax)), lo = _mm512_set1_epi32(-static_cast<int>(qmax));
  for (int i = 0; i < n; i += 16) {
    const __mmask16 m = tail16(n - i);
    const __m512 v = BF ? bf16x16_to_ps(static_cast<const uint16_t*>(x) + i, m)
                        : _mm512_maskz_loadu_ps(m, static_cast<const float*>(x) + i);
    __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(v, vinv));  // round to nearest even
    q = _mm512_min_epi32(_mm512_max_epi32(q, lo), hi);
    store_q<AF>(dst, i, q, m);
  }
  const size_t esz = AF == ACT_I16 ? 2 : 1;
  std::memset(static_cast<uint8_t*>(dst) + static_cast<size_t>(n) * esz, 0,
              static_cast<size_t>(K - n) * esz);
}

HMOE_AVX512 void act_from_bf16(const uint16_t* x, int H, int K, int afmt, void* dst, float* scale) {
  if (afmt == ACT_BF16) {
    std::memcpy(dst, x, static_cast<size_t>(H) * 2);
    std::memset(static_cast<uint16_t*>(dst) + H, 0, static_cast<size_t>(K - H) * 2);
    *scale = 1.0f;
  } else if (afmt == ACT_I16) {
    quantize_row<ACT_I16, true>(x, H, K, dst, scale);
  } else {
    quantize_row<ACT_I8, true>(x, H, K, dst, scale);
  }
}

HMOE_AVX512 void act_from_f32(const float* x, int K, int afmt, void* dst, float* scale) {
  if (afmt == ACT_I16)
    quantize_row<ACT_I16, false>(x, K, K, dst, scale);
  else
    quantize_row<ACT_I8, false>(x, K, K, dst, scale);
}

HMOE_AVX512 void silu_mul(const float* C, int ldc, int M, int nbi, bool to_f32, void* dst,
                          size_t ld_bytes) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int m = 0; m < M; ++m) {
    const float* c = C + static_cast<size_t>(m) * ldc;
    uint8_t* d = static_cast<uint8_t*>(dst) + static_cast<size_t>(m) * ld_bytes;
    for (int b = 0; b < nbi; ++b) {
      const __m512 g = _mm512_loadu_ps(c + 2 * b * 16);
      const __m512 u = _mm512_loadu_ps(c + (2 * b + 1) * 16);
      const __m512 s = _mm512_div_ps(g, _mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), g))));
      const __m512 v = _mm512_mul_ps(s, u);
      if (to_f32) {
        _mm512_storeu_ps(reinterpret_cast<float*>(d) + b * 16, v);
      } else {
        const __m256bh h = _mm512_cvtneps_pbh(v);
        __m256i bits;
        std::memcpy(&bits, &h, 32);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + static_cast<size_t>(b) * 32), bits);
      }
    }
  }
}

HMOE_AVX512 void scale_rows(const float* C, int ldc, int M, int ncols, const float* w, float* Y,
                            size_t ldy) {
  for (int m = 0; m < M; ++m) {
    const __m512 s = _mm512_set1_ps(w[m]);
    const float* c = C + static_cast<size_t>(m) * ldc;
    float* y = Y + static_cast<size_t>(m) * ldy;
    for (int i = 0; i < ncols; i += 16) {
      const __mmask16 mk = tail16(ncols - i);
      _mm512_mask_storeu_ps(y + i, mk, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(mk, c + i)));
    }
  }
}

HMOE_AVX512 void sum_rows_bf16(const float* const* rows, int nrows, int n, uint16_t* out) {
  for (int i = 0; i < n; i += 16) {
    const __mmask16 mk = tail16(n - i);
    __m512 acc = _mm512_setzero_ps();
    for (int r = 0; r < nrows; ++r) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(mk, rows[r] + i));
    const __m256bh h = _mm512_cvtneps_pbh(acc);
    __m256i bits;
    std::memcpy(&bits, &h, 32);
    _mm256_mask_storeu_epi16(out + i, mk, bits);
  }
}

HMOE_AVX512 double read_sum_impl(const uint8_t* p, size_t bytes) {
  __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
  size_t i = 0;
  for (; i + 256 <= bytes; i += 256) {
    s0 = _mm512_add_epi64(s0, _mm512_loadu_si512(p + i));
    s1 = _mm512_add_epi64(s1, _mm512_loadu_si512(p + i + 64));
    s2 = _mm512_add_epi64(s2, _mm512_loadu_si512(p + i + 128));
    s3 = _mm512_add_epi64(s3, _mm512_loadu_si512(p + i + 192));
  }
  uint64_t tail = 0;
  for (; i < bytes; ++i) tail += p[i];
  const __m512i s = _mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3));
  return static_cast<double>(static_cast<uint64_t>(_mm512_reduce_add_epi64(s)) + tail);
}

HMOE_AVX512 uint64_t peak_impl(uint64_t iters) {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  __m512i a = _mm512_set1_epi32(0x3f803f80), b = _mm512_set1_epi32(0x00010001);
  __asm__ volatile("" : "+v"(a), "+v"(b));  // opaque inputs: nothing to fold
  for (uint64_t it = 0; it < iters; ++it)
    for (int i = 0; i < 12; ++i) acc[i] = dp_bf16(acc[i], a, b);
  __m512 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, acc[i]);
  volatile float sink = _mm512_reduce_add_ps(s);
  (void)sink;
  return iters * 12ull * 16ull * 2ull * 2ull;  // 12 instr x 16 lanes x 2 pairs x 2 flops
}

HMOE_AVX512 void gemm_dispatch(int fmt, const GemmArgs& a) {
  if (fmt == FMT_BF16)
    gemm_bf16(a);
  else if (fmt == FMT_INT8)
    gemm_i8(a);
  else
    gemm_i4(a);
}

}  // namespace

bool avx512_compiled() { return true; }
void set_prefetch_distance(int bytes) { g_prefetch.store(bytes < 0 ? 0 : bytes); }
int prefetch_distance() { return g_prefetch.load(); }
void gemm_avx512(int fmt, const GemmArgs& a) { gemm_dispatch(fmt, a); }
void dequant_to_bf16_avx512(int fmt, int group, const uint8_t* W, size_t bstride, int nb, int K,
                            int k0, int kn, uint16_t* dst) {
  dequant_impl(fmt, group, W, bstride, nb, K, k0, kn, dst);
}
const Elementwise& elementwise_avx512() {
  static const Elementwise ew = {act_from_bf16, act_from_f32, silu_mul, scale_rows, sum_rows_bf16};
  return ew;
}
double read_sum_avx512(const uint8_t* p, size_t bytes) { return read_sum_impl(p, bytes); }
uint64_t peak_avx512_bf16(uint64_t iters) { return peak_impl(iters); }

#else  // !HMOE_HAVE_AVX512: stubs that are never called (dispatch checks avx512_compiled()).

bool avx512_compiled() { return false; }
void set_prefetch_distance(int) {}
int prefetch_distance() { return 0; }
void gemm_avx512(int fmt, const GemmArgs& a) { gemm_portable(fmt, a); }
void dequant_to_bf16_avx512(int, int, const uint8_t*, size_t, int, int, int, int, uint16_t*) {}
const Elementwise& elementwise_avx512() { return elementwise_portable(); }
double read_sum_avx512(const uint8_t* p, size_t bytes) { return read_sum_portable(p, bytes); }
uint64_t peak_avx512_bf16(uint64_t) { return 0; }

#endif

}  // namespace hmoe
