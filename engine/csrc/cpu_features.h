// Runtime CPU feature detection (cpuid + xgetbv) and the Linux AMX tile-data permission.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace hmoe {

struct CpuFeatures {
  bool avx2 = false, fma = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512_bf16 = false, avx512_vnni = false;
  bool amx_tile = false, amx_bf16 = false, amx_int8 = false;
  bool amx_os_permitted = false;  // XCR0 tile state enabled and arch_prctl permission granted
  bool amx_emulated = false;      // built with HMOE_AMX_EMULATE (self-test only)
  std::string amx_permission_error;  // why the permission was refused, if it was

  // The AVX-512 method: F+BW+VL+DQ+BF16 (+VNNI for int8/int4).
  bool avx512_method(bool need_vnni) const {
    return avx512f && avx512bw && avx512vl && avx512dq && avx512_bf16 && (!need_vnni || avx512_vnni);
  }
  bool amx_method(bool need_int8) const {
    return avx512_method(true) && amx_tile && amx_bf16 && (!need_int8 || amx_int8) && amx_os_permitted;
  }
  std::vector<std::pair<std::string, bool>> items() const;
};

// Detected once (thread-safe); also requests the AMX permission once on Linux.
const CpuFeatures& cpu_features();

// Names of what `method` ("avx512" or "amx") lacks for format fmt ("" when usable).
std::string missing_for(const std::string& method, int fmt, bool int8_w8a8);

std::string cpu_model_name();

}  // namespace hmoe
