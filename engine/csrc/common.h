// Shared definitions of the hybrid-moe-ae CPU MoE kernel library (engine/csrc).
//
// The whole library compiles with baseline flags (x86-64 or any other target); ISA-specific
// functions carry per-function target attributes (HMOE_AVX512 / HMOE_AMX) and are only called
// after runtime dispatch (cpu_features.h). On non-x86 targets only the portable code exists.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

// HMOE_FORCE_NO_X86 compiles the non-x86 configuration on x86 (a test of the #if guards).
#if (defined(__x86_64__) || defined(_M_X64)) && !defined(HMOE_FORCE_NO_X86)
#define HMOE_X86 1
#else
#define HMOE_X86 0
#endif

// Compilers that know the AVX-512 BF16/VNNI intrinsics (GCC >= 10, clang >= 9).
// setup.py defines HMOE_DISABLE_AVX512 / HMOE_DISABLE_AMX when a probe compile shows that the
// compiler or assembler cannot build that ISA (the extension then simply lacks the path).
#if HMOE_X86 && !defined(HMOE_DISABLE_AVX512) &&                 \
    ((defined(__clang__) && __clang_major__ >= 9) ||             \
     (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 10))
#define HMOE_HAVE_AVX512 1
#define HMOE_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vnni,fma")))
#else
#define HMOE_HAVE_AVX512 0
#define HMOE_AVX512
#endif

// Compilers that know the AMX intrinsics (GCC >= 11, clang >= 12), or the emulation used by
// the C++ self-test on machines without AMX (HMOE_AMX_EMULATE).
#if defined(HMOE_AMX_EMULATE) && HMOE_HAVE_AVX512
#define HMOE_HAVE_AMX 1
#elif HMOE_HAVE_AVX512 && !defined(HMOE_DISABLE_AMX) &&                \
    ((defined(__clang__) && __clang_major__ >= 12) ||                  \
     (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11))
#define HMOE_HAVE_AMX 1
#else
#define HMOE_HAVE_AMX 0
#endif

namespace hmoe {

enum Fmt : int { FMT_BF16 = 0, FMT_INT8 = 1, FMT_INT4 = 2 };
enum Isa : int { ISA_PORTABLE = 0, ISA_AVX512 = 1, ISA_AMX = 2 };
// Activation row formats fed to the GEMM kernels.
enum ActFmt : int { ACT_BF16 = 0, ACT_I16 = 1, ACT_I8 = 2 };

// Per-token activation quantization ranges: int16 rows (AVX-512/portable int8/int4 paths,
// W8A16/W4A16 in effect) use 15 bits so int32 sums of 512 products cannot overflow; int8 rows
// (AMX W8A8) use the symmetric int8 range.
constexpr float kI16Max = 16383.0f;
constexpr float kI8Max = 127.0f;
// int32 accumulators of the int16 x int8 path are flushed to fp32 every kI8Flush K values.
constexpr int kI8Flush = 512;

constexpr int kBlockN = 16;   // output rows per packed block
constexpr int kKAlign = 64;   // K is padded to a multiple of this (AMX int8 tile depth)
constexpr int kShardAlign = 64;  // NUMA shards split the intermediate dim in 64-row steps

inline size_t round_up(size_t x, size_t m) { return (x + m - 1) / m * m; }
inline int iround_up(int x, int m) { return (x + m - 1) / m * m; }
inline int imin(int a, int b) { return a < b ? a : b; }
inline int imax(int a, int b) { return a > b ? a : b; }

// ---- bf16 helpers (bit patterns held in uint16_t) ----
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// Round to nearest even, NaN kept quiet (same as torch's .to(torch.bfloat16)).
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
// Round half to even for |v| < 2^22 without libm (matches torch.round / nearbyint).
inline float round_even(float v) {
  // Needs IEEE semantics (no -ffast-math): v + magic rounds to an integer, half to even.
  const float magic = 12582912.0f;  // 1.5 * 2^23
  float t = v + magic;
  return t - magic;
}
// NaN maps to lo (so float->int conversions after it are always defined).
inline float clampf(float v, float lo, float hi) { return v > lo ? (v < hi ? v : hi) : lo; }

// Bytes of one packed 16-row block with reduction length K (already padded to kKAlign).
inline size_t block_bytes(int fmt, int K, int group) {
  switch (fmt) {
    case FMT_BF16:
      return static_cast<size_t>(K) * kBlockN * 2;
    case FMT_INT8:  // [K/4][16][4] int8, then 16 fp32 row scales
      return static_cast<size_t>(K) * kBlockN + 64;
    default:  // int4: per group [(g/8) x 64 B nibbles][16 fp32 scales]
      return static_cast<size_t>(K / group) * (static_cast<size_t>(group) / 8 * 64 + 64);
  }
}

// ---- aligned memory ----
void* aligned_alloc_bytes(size_t bytes, size_t align = 64);  // throws std::bad_alloc
void aligned_free(void* p);
void advise_huge(void* p, size_t bytes);

// Grow-only scratch buffer (64-byte aligned, huge-page advised when large). Contents are not
// preserved on growth.
class Buffer {
 public:
  Buffer() = default;
  ~Buffer() { aligned_free(ptr_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void* ensure(size_t bytes) {
    if (bytes > cap_) {
      aligned_free(ptr_);
      ptr_ = nullptr;
      cap_ = 0;
      size_t want = round_up(bytes + bytes / 8, 4096);
      ptr_ = aligned_alloc_bytes(want, bytes >= (4u << 20) ? (2u << 20) : 64);
      if (want >= (4u << 20)) advise_huge(ptr_, want);
      cap_ = want;
    }
    return ptr_;
  }
  template <class T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t capacity() const { return cap_; }
  void release() {
    aligned_free(ptr_);
    ptr_ = nullptr;
    cap_ = 0;
  }

 private:
  void* ptr_ = nullptr;
  size_t cap_ = 0;
};

}  // namespace hmoe
