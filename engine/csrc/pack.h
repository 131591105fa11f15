// Weight quantization (bit-identical to engine/quant/int8.py and int4.py) and repacking of
// 16-row blocks into the kernels' layout (kernels.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "common.h"

namespace hmoe {

enum SrcKind : int { SRC_BF16 = 0, SRC_Q8 = 1, SRC_Q4 = 2 };

// One logical [rows, K] matrix per expert. Row r of expert e starts at element
// (e * estride + r) * K of `data` (bf16 / int8), or byte (e * estride + r) * K/2 (int4 packed);
// its scales at (e * estride + r) * (1 for int8, K/group for int4) of `scale`.
struct RowSource {
  int kind = SRC_BF16;
  const void* data = nullptr;
  const float* scale = nullptr;
  int64_t estride = 0;  // rows between consecutive experts
  int rows = 0;         // logical rows per expert
  int K = 0;            // logical (unpadded) row length
  int group = 0;        // int4 group size
};

// Symmetric int8 per row: scale = amax/127 (1 if amax == 0), q = round_half_even(w/scale).
void quantize_row_int8(const uint16_t* w_bf16, int K, int8_t* q, float* scale);
// Symmetric int4 per group: scale = amax/7 (1 if 0), q = clamp(round(w/scale), -8, 7);
// packed[j] = (q[2j]+8) | (q[2j+1]+8) << 4; scales[K/group].
void quantize_row_int4(const uint16_t* w_bf16, int K, int group, uint8_t* packed, float* scales);

// Pack rows [r0, r0+16) (rows >= src.rows are zero) and columns [k0, k0+KP) (columns >= src.K
// are zero) of expert e into one block of format `fmt` at dst (block_bytes(fmt, KP, group)).
// `tmp` must hold 16 * (src.K + 64) bytes + 16 * (src.K / 32 + 1) floats (quantization rows).
void pack_block(int fmt, int group, int KP, int k0, const RowSource& src, int e, int r0,
                uint8_t* dst, void* tmp);
size_t pack_tmp_bytes(int K);

}  // namespace hmoe
