// AMX kernels (AMX-TILE/BF16/INT8 with AVX-512 epilogues), compiled with per-function target
// attributes; only called after runtime dispatch (CPUID + OS permission, cpu_features.cpp).
//
// Tiles: one configuration for every kernel (8 tiles of 16 rows x 64 bytes), loaded once per
// thread per task and released at the end of the task (amx_release_thread).
//   tmm0..3: C accumulators (2 x 2), tmm4/5: A (16 token rows each), tmm6/7: B (16 outputs each)
// Loop nest per call: K chunks (kc) -> 32-row A pairs -> 2-block B pairs -> k in the chunk.
// The B panel of a chunk (nb x 16 x kc) stays in L2 across A pairs, an A pair stays in L1/L2
// across B pairs; C partial sums go through the caller's fp32/int32 C buffer between chunks.
// BF16: B is the packed weight ([K/2][16][2]). INT8 (w8a8): tdpbssd on int8 activations,
// int32 C scaled by act_scale[m] * w_scale[n]. INT8 (w8a16) and INT4: each chunk of the B panel
// is dequantized to bf16 in per-thread scratch (AVX-512), then the BF16 tiles run.
#include <cstring>

#include "kernels.h"

#if HMOE_HAVE_AMX
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#if defined(HMOE_AMX_EMULATE)
#include "amx_emu.h"
#define HMOE_AMX HMOE_AVX512
#else
#define HMOE_AMX                                                                             \
  __attribute__((target("amx-tile,amx-bf16,amx-int8,avx512f,avx512bw,avx512vl,avx512dq," \
                        "avx512bf16,avx512vnni,fma")))
#endif
#endif

namespace hmoe {

#if HMOE_HAVE_AMX

namespace {

struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};
static_assert(sizeof(TileConfig) == 64, "tile config is 64 bytes");

thread_local bool t_tiles_loaded = false;

HMOE_AMX void ensure_config() {
  if (t_tiles_loaded) return;
  TileConfig cfg;
  std::memset(&cfg, 0, sizeof(cfg));
  cfg.palette_id = 1;
  for (int i = 0; i < 8; ++i) {
    cfg.colsb[i] = 64;
    cfg.rows[i] = 16;
  }
  _tile_loadconfig(&cfg);
  t_tiles_loaded = true;
}

// C (row stride ldcb bytes) += A[0..16*(1+TM)) x B blocks (1+TN) over kn K values.
// A: bf16 rows (lda bytes); B0/B1: [kn/2][16][2] bf16 at 64-byte pair rows.
template <bool TM, bool TN>
HMOE_AMX void tiles_bf16(const uint8_t* A, size_t lda, const uint8_t* B0, const uint8_t* B1,
                         int kn, uint8_t* C, size_t ldcb, bool first) {
  if (first) {
    _tile_zero(0);
    if (TN) _tile_zero(1);
    if (TM) _tile_zero(2);
    if (TM && TN) _tile_zero(3);
  } else {
    _tile_loadd(0, C, ldcb);
    if (TN) _tile_loadd(1, C + 64, ldcb);
    if (TM) _tile_loadd(2, C + 16 * ldcb, ldcb);
    if (TM && TN) _tile_loadd(3, C + 16 * ldcb + 64, ldcb);
  }
  for (int kk = 0; kk < kn; kk += 32) {
    _tile_loadd(4, A + static_cast<size_t>(kk) * 2, lda);
    _tile_loadd(6, B0 + static_cast<size_t>(kk) * 32, 64);
    if (TM) _tile_loadd(5, A + 16 * lda + static_cast<size_t>(kk) * 2, lda);
    if (TN) _tile_loadd(7, B1 + static_cast<size_t>(kk) * 32, 64);
    _tile_dpbf16ps(0, 4, 6);
    if (TN) _tile_dpbf16ps(1, 4, 7);
    if (TM) _tile_dpbf16ps(2, 5, 6);
    if (TM && TN) _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, C, ldcb);
  if (TN) _tile_stored(1, C + 64, ldcb);
  if (TM) _tile_stored(2, C + 16 * ldcb, ldcb);
  if (TM && TN) _tile_stored(3, C + 16 * ldcb + 64, ldcb);
}

// Same for int8 x int8 -> int32: A int8 rows, B [kn/4][16][4] at 64-byte quad rows.
template <bool TM, bool TN>
HMOE_AMX void tiles_i8(const uint8_t* A, size_t lda, const uint8_t* B0, const uint8_t* B1, int kn,
                       uint8_t* C, size_t ldcb, bool first) {
  if (first) {
    _tile_zero(0);
    if (TN) _tile_zero(1);
    if (TM) _tile_zero(2);
    if (TM && TN) _tile_zero(3);
  } else {
    _tile_loadd(0, C, ldcb);
    if (TN) _tile_loadd(1, C + 64, ldcb);
    if (TM) _tile_loadd(2, C + 16 * ldcb, ldcb);
    if (TM && TN) _tile_loadd(3, C + 16 * ldcb + 64, ldcb);
  }
  for (int kk = 0; kk < kn; kk += 64) {
    _tile_loadd(4, A + kk, lda);
    _tile_loadd(6, B0 + static_cast<size_t>(kk) * 16, 64);
    if (TM) _tile_loadd(5, A + 16 * lda + kk, lda);
    if (TN) _tile_loadd(7, B1 + static_cast<size_t>(kk) * 16, 64);
    _tile_dpbssd(0, 4, 6);
    if (TN) _tile_dpbssd(1, 4, 7);
    if (TM) _tile_dpbssd(2, 5, 6);
    if (TM && TN) _tile_dpbssd(3, 5, 7);
  }
  _tile_stored(0, C, ldcb);
  if (TN) _tile_stored(1, C + 64, ldcb);
  if (TM) _tile_stored(2, C + 16 * ldcb, ldcb);
  if (TM && TN) _tile_stored(3, C + 16 * ldcb + 64, ldcb);
}

using TileFn = void (*)(const uint8_t*, size_t, const uint8_t*, const uint8_t*, int, uint8_t*,
                        size_t, bool);

// One K chunk over all A pairs and B pairs. Wc: block 0 of the chunk, bs: bytes between blocks.
HMOE_AMX void chunk(bool int8, const uint8_t* Ak, size_t lda, int M, const uint8_t* Wc, size_t bs,
                    int nb, int kn, uint8_t* C, size_t ldcb, bool first) {
  TileFn f11 = int8 ? &tiles_i8<true, true> : &tiles_bf16<true, true>;
  TileFn f10 = int8 ? &tiles_i8<true, false> : &tiles_bf16<true, false>;
  TileFn f01 = int8 ? &tiles_i8<false, true> : &tiles_bf16<false, true>;
  TileFn f00 = int8 ? &tiles_i8<false, false> : &tiles_bf16<false, false>;
  for (int m0 = 0; m0 < M; m0 += 32) {
    const bool tm = M - m0 >= 32;
    const uint8_t* A = Ak + static_cast<size_t>(m0) * lda;
    for (int j0 = 0; j0 < nb; j0 += 2) {
      const bool tn = nb - j0 >= 2;
      const uint8_t* B0 = Wc + static_cast<size_t>(j0) * bs;
      uint8_t* Cp = C + static_cast<size_t>(m0) * ldcb + static_cast<size_t>(j0) * 64;
      TileFn f = tm ? (tn ? f11 : f10) : (tn ? f01 : f00);
      f(A, lda, B0, B0 + bs, kn, Cp, ldcb, first);
    }
  }
}

HMOE_AMX void gemm_impl(int fmt, bool w8a8, const GemmArgs& a) {
  ensure_config();
  const bool int8 = fmt == FMT_INT8 && w8a8;
  const bool deq = fmt != FMT_BF16 && !int8;
  const int K = a.K;
  int kc = a.kc > 0 ? a.kc : 1024;
  kc = kc < 64 ? 64 : kc / 64 * 64;
  if (kc > K) kc = K;
  const uint8_t* A = static_cast<const uint8_t*>(a.A);
  uint8_t* C = reinterpret_cast<uint8_t*>(a.C);
  const size_t ldcb = static_cast<size_t>(a.ldc) * 4;
  for (int k0 = 0; k0 < K; k0 += kc) {
    const int kn = imin(kc, K - k0);
    const uint8_t* Wc;
    size_t bs;
    if (deq) {
      dequant_to_bf16_avx512(fmt, a.group, a.W, a.bstride, a.nb, K, k0, kn,
                             static_cast<uint16_t*>(a.scratch));
      Wc = static_cast<const uint8_t*>(a.scratch);
      bs = static_cast<size_t>(kn) * 32;
    } else if (int8) {
      Wc = a.W + static_cast<size_t>(k0) * 16;
      bs = a.bstride;
    } else {
      Wc = a.W + static_cast<size_t>(k0) * 32;
      bs = a.bstride;
    }
    chunk(int8, A + static_cast<size_t>(k0) * (int8 ? 1 : 2), a.lda, a.M, Wc, bs, a.nb, kn, C,
          ldcb, k0 == 0);
  }
  if (int8) {
    // int32 -> fp32 in place: act_scale[m] * w_scale[n].
    for (int j = 0; j < a.nb; ++j) {
      const __m512 ws = _mm512_loadu_ps(a.W + j * a.bstride + static_cast<size_t>(K) * 16);
      for (int m = 0; m < a.M; ++m) {
        float* c = a.C + static_cast<size_t>(m) * a.ldc + j * 16;
        const __m512 v = _mm512_cvtepi32_ps(_mm512_loadu_si512(c));
        _mm512_storeu_ps(c, _mm512_mul_ps(_mm512_mul_ps(v, _mm512_set1_ps(a.a_scale[m])), ws));
      }
    }
  }
}

HMOE_AMX void release_impl() {
  if (t_tiles_loaded) {
    _tile_release();
    t_tiles_loaded = false;
  }
}

HMOE_AMX uint64_t peak_impl(bool int8, uint64_t iters) {
  ensure_config();
  alignas(64) static const uint8_t zeros[2048] = {};
  alignas(64) uint8_t out[1024];
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, zeros, 64);
  _tile_loadd(5, zeros + 1024, 64);
  _tile_loadd(6, zeros, 64);
  _tile_loadd(7, zeros + 1024, 64);
  if (int8) {
    for (uint64_t i = 0; i < iters; ++i) {
      _tile_dpbssd(0, 4, 6);
      _tile_dpbssd(1, 4, 7);
      _tile_dpbssd(2, 5, 6);
      _tile_dpbssd(3, 5, 7);
    }
  } else {
    for (uint64_t i = 0; i < iters; ++i) {
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
  }
  _tile_stored(0, out, 64);
  volatile uint8_t sink = out[0];
  (void)sink;
  release_impl();
  // per instruction: 16 x 16 outputs x (32 bf16 | 64 int8) products x 2 ops
  return iters * 4ull * 16ull * 16ull * (int8 ? 64ull : 32ull) * 2ull;
}

}  // namespace

bool amx_compiled() { return true; }
void gemm_amx(int fmt, bool w8a8, const GemmArgs& a) { gemm_impl(fmt, w8a8, a); }
void amx_release_thread() { release_impl(); }
uint64_t peak_amx(bool int8, uint64_t iters) { return peak_impl(int8, iters); }

#else  // !HMOE_HAVE_AMX: never called (dispatch checks amx_compiled()).

bool amx_compiled() { return false; }
void gemm_amx(int fmt, bool, const GemmArgs& a) { gemm_portable(fmt, a); }
void amx_release_thread() {}
uint64_t peak_amx(bool, uint64_t) { return 0; }

#endif

size_t amx_scratch_bytes(int nb, int kc) {
  return static_cast<size_t>(nb) * kBlockN * static_cast<size_t>(kc) * 2 + 64;
}

}  // namespace hmoe
