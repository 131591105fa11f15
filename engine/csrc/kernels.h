// Kernel entry points shared by the portable, AVX-512 and AMX implementations.
//
// Packed weight layout (one 16-output-row block; K padded to a multiple of 64 with zeros):
//   BF16: [K/2][16][2] bf16            (AMX B tile of tdpbf16ps / vdpbf16ps operand)
//   INT8: [K/4][16][4] int8, then 16 fp32 row scales  (AMX B tile of tdpbssd)
//   INT4: per group of g (32|64) K: g/8 vectors of 64 bytes, then 16 fp32 group scales.
//         A 64-byte vector covers 8 K (k0..k7) x 16 rows: byte b < 32 (n = b/2, j = b%2)
//         holds k0+j (low nibble) and k2+j (high nibble); byte 32+b holds k4+j and k6+j.
//         Nibbles store q+8 (q in [-8, 7]), as the Python quantizer does.
// Activation rows: ACT_BF16 (bf16), ACT_I16 (int16, per-row scale, |q| <= 16383),
// ACT_I8 (int8, per-row scale, |q| <= 127); rows are K long, zero padded.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common.h"

namespace hmoe {

// C[m][j*16 + n] = sum_k A[m][k] * W_j[n][k] (dequantized, all scales applied), fp32.
struct GemmArgs {
  const uint8_t* W = nullptr;  // first packed block
  size_t bstride = 0;          // bytes between consecutive blocks
  int nb = 0;                  // number of 16-row blocks
  int K = 0;                   // packed reduction length (multiple of 64)
  int group = 0;               // int4 group size
  const void* A = nullptr;     // first activation row
  size_t lda = 0;              // bytes between activation rows
  const float* a_scale = nullptr;  // per-row scales for ACT_I16 / ACT_I8
  int M = 0;                   // rows (AMX: a multiple of 16)
  float* C = nullptr;          // fp32 output rows
  int ldc = 0;                 // floats between output rows
  void* scratch = nullptr;     // per-thread scratch (AMX dequantized panel)
  size_t scratch_bytes = 0;
  int kc = 1024;               // AMX K chunk (multiple of 64)
};

// Row-wise helpers of one ISA (portable or AVX-512).
struct Elementwise {
  // bf16 row x[H] -> activation row of K >= H elements in afmt (zero padded), scale for I16/I8.
  void (*act_from_bf16)(const uint16_t* x, int H, int K, int afmt, void* dst, float* scale);
  // fp32 row x[K] -> I16/I8 activation row (+ scale).
  void (*act_from_f32)(const float* x, int K, int afmt, void* dst, float* scale);
  // Gate/up epilogue: C[m][(2b)*16 + n] gate, C[m][(2b+1)*16 + n] up (b < nbi) ->
  // dst row m, column b*16+n = silu(gate) * up, as fp32 (to_f32) or bf16.
  void (*silu_mul)(const float* C, int ldc, int M, int nbi, bool to_f32, void* dst,
                   size_t ld_bytes);
  // Y[m][c] = w[m] * C[m][c] for c < ncols.
  void (*scale_rows)(const float* C, int ldc, int M, int ncols, const float* w, float* Y,
                     size_t ldy);
  // out[c] = bf16(sum_r rows[r][c]), c < n (zeros when nrows == 0).
  void (*sum_rows_bf16)(const float* const* rows, int nrows, int n, uint16_t* out);
};

// ---- portable (always present) ----
void gemm_portable(int fmt, const GemmArgs& a);
const Elementwise& elementwise_portable();
double read_sum_portable(const uint8_t* p, size_t bytes);

// ---- AVX-512 (call only when cpu_features().avx512_method(...)) ----
bool avx512_compiled();
// Software prefetch distance of the AVX-512 weight streams (bytes; process-wide, default 2048).
void set_prefetch_distance(int bytes);
int prefetch_distance();
void gemm_avx512(int fmt, const GemmArgs& a);
const Elementwise& elementwise_avx512();
double read_sum_avx512(const uint8_t* p, size_t bytes);
uint64_t peak_avx512_bf16(uint64_t iters);  // returns flops executed
// Dequantize K range [k0, k0+kn) of `nb` INT8/INT4 blocks into bf16 blocks [kn/2][16][2]
// (scale folded, round to nearest even), written consecutively (kn*32 bytes per block).
void dequant_to_bf16_avx512(int fmt, int group, const uint8_t* W, size_t bstride, int nb, int K,
                            int k0, int kn, uint16_t* dst);

// ---- AMX (call only when cpu_features().amx_method(...)) ----
bool amx_compiled();
// fmt BF16: bf16 x bf16 tiles; INT8 with w8a8: int8 x int8 tiles (A is ACT_I8);
// INT8 without w8a8 and INT4: weights dequantized per K chunk to bf16 (A is ACT_BF16).
void gemm_amx(int fmt, bool w8a8, const GemmArgs& a);
size_t amx_scratch_bytes(int nb, int kc);
void amx_release_thread();  // tilerelease if this thread loaded a tile configuration
uint64_t peak_amx(bool int8, uint64_t iters);  // returns (int)ops executed

}  // namespace hmoe
