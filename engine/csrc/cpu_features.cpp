// cpuid/xgetbv feature detection and the AMX tile-data permission request (Linux).
#include "cpu_features.h"

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>

#include "common.h"

#if HMOE_X86
#include <cpuid.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace hmoe {

namespace {

#if HMOE_X86
void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
  __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
}
uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}
#endif

bool request_amx_permission(std::string* err) {
#if defined(__linux__) && HMOE_X86
  const long ARCH_GET_XCOMP_PERM = 0x1022, ARCH_REQ_XCOMP_PERM = 0x1023;
  const long XFEATURE_XTILEDATA = 18;
  unsigned long bitmask = 0;
  if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) {
    *err = std::string("arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA) failed: ") + std::strerror(errno);
    return false;
  }
  if (syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &bitmask) != 0) {
    *err = std::string("arch_prctl(ARCH_GET_XCOMP_PERM) failed: ") + std::strerror(errno);
    return false;
  }
  if (!(bitmask & (1ul << XFEATURE_XTILEDATA))) {
    *err = "the kernel did not grant the XTILEDATA permission";
    return false;
  }
  return true;
#else
  *err = "AMX needs Linux on x86-64";
  return false;
#endif
}

CpuFeatures detect() {
  CpuFeatures f;
#if HMOE_X86
  uint32_t r[4];
  cpuid(0, 0, r);
  const uint32_t max_leaf = r[0];
  cpuid(1, 0, r);
  const bool osxsave = (r[2] >> 27) & 1;
  f.fma = (r[2] >> 12) & 1;
  uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool os_avx = (xcr0 & 0x6) == 0x6;
  const bool os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;
  const bool os_amx = (xcr0 & (3ull << 17)) == (3ull << 17);
  f.fma = f.fma && os_avx;
  if (max_leaf >= 7) {
    cpuid(7, 0, r);
    const uint32_t ebx = r[1], ecx = r[2], edx = r[3];
    const uint32_t max_sub = r[0];
    f.avx2 = os_avx && ((ebx >> 5) & 1);
    f.avx512f = os_avx512 && ((ebx >> 16) & 1);
    f.avx512dq = f.avx512f && ((ebx >> 17) & 1);
    f.avx512bw = f.avx512f && ((ebx >> 30) & 1);
    f.avx512vl = f.avx512f && ((ebx >> 31) & 1);
    f.avx512_vnni = f.avx512f && ((ecx >> 11) & 1);
    f.amx_bf16 = (edx >> 22) & 1;
    f.amx_tile = (edx >> 24) & 1;
    f.amx_int8 = (edx >> 25) & 1;
    if (max_sub >= 1) {
      cpuid(7, 1, r);
      f.avx512_bf16 = f.avx512f && ((r[0] >> 5) & 1);
    }
  }
  if (f.amx_tile) {
    if (!os_amx) {
      f.amx_permission_error = "XCR0 does not enable the AMX tile state (OS without AMX support)";
    } else {
      f.amx_os_permitted = request_amx_permission(&f.amx_permission_error);
    }
  }
#endif
#if defined(HMOE_AMX_EMULATE)
  // Self-test build: tile instructions are emulated in software on top of AVX-512.
  if (f.avx512_method(true)) {
    f.amx_tile = f.amx_bf16 = f.amx_int8 = f.amx_os_permitted = true;
    f.amx_emulated = true;
  }
#endif
#if !HMOE_HAVE_AVX512
  // The compiler could not build the AVX-512 kernels: never report them usable.
  f.avx512_bf16 = false;
  f.avx512_vnni = false;
#endif
#if !HMOE_HAVE_AMX
  if (f.amx_tile && f.amx_permission_error.empty())
    f.amx_permission_error = "this build's compiler has no AMX intrinsics";
  f.amx_os_permitted = false;
#endif
  return f;
}

}  // namespace

std::vector<std::pair<std::string, bool>> CpuFeatures::items() const {
  return {{"avx2", avx2},
          {"fma", fma},
          {"avx512f", avx512f},
          {"avx512bw", avx512bw},
          {"avx512vl", avx512vl},
          {"avx512dq", avx512dq},
          {"avx512_bf16", avx512_bf16},
          {"avx512_vnni", avx512_vnni},
          {"amx_tile", amx_tile},
          {"amx_bf16", amx_bf16},
          {"amx_int8", amx_int8},
          {"amx_os_permitted", amx_os_permitted},
          {"amx_emulated", amx_emulated}};
}

const CpuFeatures& cpu_features() {
  static std::once_flag once;
  static CpuFeatures f;
  std::call_once(once, [] { f = detect(); });
  return f;
}

std::string missing_for(const std::string& method, int fmt, bool int8_w8a8) {
  const CpuFeatures& f = cpu_features();
  std::string miss;
  auto need = [&](bool have, const char* name) {
    if (!have) miss += (miss.empty() ? "" : ", ") + std::string(name);
  };
  if (method == "avx512" || method == "amx") {
    need(f.avx512f, "avx512f");
    need(f.avx512bw, "avx512bw");
    need(f.avx512vl, "avx512vl");
    need(f.avx512dq, "avx512dq");
    need(f.avx512_bf16, "avx512_bf16");
    // int8/int4 decode uses vpdpwssd; the AMX method's small-token experts use it too
    if (fmt != FMT_BF16 || method == "amx") need(f.avx512_vnni, "avx512_vnni");
#if !HMOE_HAVE_AVX512
    miss += (miss.empty() ? "" : ", ") + std::string("compiler support for AVX-512 BF16");
#endif
  }
  if (method == "amx") {
    need(f.amx_tile, "amx_tile");
    need(f.amx_bf16, "amx_bf16");
    if (fmt == FMT_INT8 && int8_w8a8) need(f.amx_int8, "amx_int8");
    if (f.amx_tile && !f.amx_os_permitted)
      miss += (miss.empty() ? "" : ", ") + std::string("OS permission for AMX tile data (") +
              f.amx_permission_error + ")";
  }
  return miss;
}

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto pos = line.find(':');
      if (pos != std::string::npos) {
        std::string v = line.substr(pos + 1);
        size_t s = v.find_first_not_of(" \t");
        return s == std::string::npos ? v : v.substr(s);
      }
    }
  }
  return "unknown";
}

}  // namespace hmoe
