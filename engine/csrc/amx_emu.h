// Software emulation of the AMX tile intrinsics used by kernels_amx.cpp, for the C++ self-test
// on machines without AMX (compile with -DHMOE_AMX_EMULATE). It models the tile registers,
// the tile configuration (rows/colsb per tile), and reads/writes exactly the bytes a real
// tileloadd/tilestored touches, so AddressSanitizer checks the kernels' tile addressing.
// Arithmetic: tdpbf16ps accumulates each pair in fp32, tdpbssd in int32 (wrapping).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace hmoe_emu {

struct State {
  alignas(64) unsigned char t[8][16][64];
  unsigned char cfg[64];
  bool loaded;
};

inline State& st() {
  static thread_local State s{};
  return s;
}

inline void fail(const char* what) {
  std::fprintf(stderr, "AMX emulation: %s\n", what);
  std::abort();
}

inline int rows(int i) { return st().cfg[48 + i]; }
inline int colsb(int i) {
  uint16_t c;
  std::memcpy(&c, &st().cfg[16 + 2 * i], 2);
  return c;
}
inline void need(int i) {
  if (!st().loaded) fail("tile used without ldtilecfg");
  if (i < 0 || i > 7) fail("bad tile index");
  if (rows(i) == 0 || colsb(i) == 0) fail("tile not configured");
}

inline void loadconfig(const void* c) {
  std::memcpy(st().cfg, c, 64);
  if (st().cfg[0] != 1) fail("palette must be 1");
  for (int i = 0; i < 8; ++i)
    if (rows(i) > 16 || colsb(i) > 64) fail("tile shape too large");
  std::memset(st().t, 0, sizeof(st().t));
  st().loaded = true;
}
inline void release() {
  std::memset(st().cfg, 0, 64);
  st().loaded = false;
}
inline void zero(int i) {
  need(i);
  std::memset(st().t[i], 0, sizeof(st().t[i]));
}
inline void loadd(int i, const void* base, long stride) {
  need(i);
  for (int r = 0; r < rows(i); ++r)
    std::memcpy(st().t[i][r], static_cast<const unsigned char*>(base) + r * stride,
                static_cast<size_t>(colsb(i)));
}
inline void stored(int i, void* base, long stride) {
  need(i);
  for (int r = 0; r < rows(i); ++r)
    std::memcpy(static_cast<unsigned char*>(base) + r * stride, st().t[i][r],
                static_cast<size_t>(colsb(i)));
}
inline float bf(const unsigned char* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline void dpbf16ps(int c, int a, int b) {
  need(c);
  need(a);
  need(b);
  if (colsb(a) / 4 != rows(b) || rows(a) != rows(c) || colsb(b) != colsb(c))
    fail("tdpbf16ps shape mismatch");
  for (int m = 0; m < rows(c); ++m)
    for (int n = 0; n < colsb(c) / 4; ++n) {
      float acc;
      std::memcpy(&acc, &st().t[c][m][4 * n], 4);
      for (int p = 0; p < rows(b); ++p) {
        acc += bf(&st().t[a][m][4 * p + 2]) * bf(&st().t[b][p][4 * n + 2]);
        acc += bf(&st().t[a][m][4 * p]) * bf(&st().t[b][p][4 * n]);
      }
      std::memcpy(&st().t[c][m][4 * n], &acc, 4);
    }
}
inline void dpbssd(int c, int a, int b) {
  need(c);
  need(a);
  need(b);
  if (colsb(a) / 4 != rows(b) || rows(a) != rows(c) || colsb(b) != colsb(c))
    fail("tdpbssd shape mismatch");
  for (int m = 0; m < rows(c); ++m)
    for (int n = 0; n < colsb(c) / 4; ++n) {
      int32_t acc;
      std::memcpy(&acc, &st().t[c][m][4 * n], 4);
      uint32_t u = static_cast<uint32_t>(acc);
      for (int p = 0; p < rows(b); ++p)
        for (int i = 0; i < 4; ++i) {
          const int32_t x = static_cast<int8_t>(st().t[a][m][4 * p + i]);
          const int32_t y = static_cast<int8_t>(st().t[b][p][4 * n + i]);
          u += static_cast<uint32_t>(x * y);
        }
      std::memcpy(&st().t[c][m][4 * n], &u, 4);
    }
}

}  // namespace hmoe_emu

#undef _tile_loadconfig
#undef _tile_release
#undef _tile_zero
#undef _tile_loadd
#undef _tile_stored
#undef _tile_dpbf16ps
#undef _tile_dpbssd
#define _tile_loadconfig(c) ::hmoe_emu::loadconfig(c)
#define _tile_release() ::hmoe_emu::release()
#define _tile_zero(i) ::hmoe_emu::zero(i)
#define _tile_loadd(i, b, s) ::hmoe_emu::loadd(i, b, static_cast<long>(s))
#define _tile_stored(i, b, s) ::hmoe_emu::stored(i, b, static_cast<long>(s))
#define _tile_dpbf16ps(c, a, b) ::hmoe_emu::dpbf16ps(c, a, b)
#define _tile_dpbssd(c, a, b) ::hmoe_emu::dpbssd(c, a, b)
