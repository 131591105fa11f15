// C++ self-test of the MoE kernel library (engine/csrc), built by tests/kernels/test_selftest.py
// with -fsanitize=address,undefined. Runs every available method (portable; AVX-512; AMX, which
// is emulated in software when built with -DHMOE_AMX_EMULATE), every format, both schedulers and
// 1/2/3 NUMA shards against a double-precision reference; also bad ids, async submits and the
// slot C API. Exit status 0 = all passed.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_features.h"
#include "moe_layer.h"
#include "pack.h"

using namespace hmoe;

namespace {

int g_failures = 0;
int g_checks = 0;

struct Weights {
  int E, H, I, fmt, group;
  std::vector<uint16_t> gu, dn;   // bf16 [E,2I,H], [E,H,I]
  std::vector<double> gud, dnd;   // dequantized
};

void dequant_rows(const uint16_t* src, int rows, int K, int fmt, int group, double* dst) {
  std::vector<int8_t> q(static_cast<size_t>(K));
  std::vector<uint8_t> p(static_cast<size_t>(K / 2 + 1));
  std::vector<float> sc(static_cast<size_t>(K / 32 + 1));
  for (int r = 0; r < rows; ++r) {
    const uint16_t* w = src + static_cast<size_t>(r) * K;
    double* d = dst + static_cast<size_t>(r) * K;
    if (fmt == FMT_BF16) {
      for (int k = 0; k < K; ++k) d[k] = bf16_to_f32(w[k]);
    } else if (fmt == FMT_INT8) {
      float s;
      quantize_row_int8(w, K, q.data(), &s);
      for (int k = 0; k < K; ++k) d[k] = static_cast<double>(static_cast<float>(q[static_cast<size_t>(k)]) * s);
    } else {
      quantize_row_int4(w, K, group, p.data(), sc.data());
      for (int k = 0; k < K; ++k) {
        const int nib = (p[static_cast<size_t>(k / 2)] >> ((k & 1) * 4)) & 15;
        d[k] = static_cast<double>(static_cast<float>(nib - 8) * sc[static_cast<size_t>(k / group)]);
      }
    }
  }
}

Weights make_weights(int E, int H, int I, int fmt, int group, unsigned seed) {
  Weights w{E, H, I, fmt, group, {}, {}, {}, {}};
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  w.gu.resize(static_cast<size_t>(E) * 2 * I * H);
  w.dn.resize(static_cast<size_t>(E) * H * I);
  for (auto& v : w.gu) v = f32_to_bf16(nd(rng) / std::sqrt(static_cast<float>(H)));
  for (auto& v : w.dn) v = f32_to_bf16(nd(rng) / std::sqrt(static_cast<float>(I)));
  w.gud.resize(w.gu.size());
  w.dnd.resize(w.dn.size());
  dequant_rows(w.gu.data(), E * 2 * I, H, fmt, group, w.gud.data());
  dequant_rows(w.dn.data(), E * H, I, fmt, group, w.dnd.data());
  return w;
}

std::vector<double> reference(const Weights& w, int T, int k, const std::vector<uint16_t>& x,
                              const std::vector<int32_t>& ids, const std::vector<float>& wt) {
  const int H = w.H, I = w.I;
  std::vector<double> out(static_cast<size_t>(T) * H, 0.0), xs(static_cast<size_t>(H)),
      a(static_cast<size_t>(I));
  for (int t = 0; t < T; ++t) {
    for (int h = 0; h < H; ++h) xs[static_cast<size_t>(h)] = bf16_to_f32(x[static_cast<size_t>(t) * H + h]);
    for (int j = 0; j < k; ++j) {
      const int e = ids[static_cast<size_t>(t) * k + j];
      if (e < 0) continue;
      for (int i = 0; i < I; ++i) {
        const double* g = &w.gud[(static_cast<size_t>(e) * 2 * I + i) * H];
        const double* u = &w.gud[(static_cast<size_t>(e) * 2 * I + I + i) * H];
        double gs = 0, us = 0;
        for (int h = 0; h < H; ++h) {
          gs += g[h] * xs[static_cast<size_t>(h)];
          us += u[h] * xs[static_cast<size_t>(h)];
        }
        a[static_cast<size_t>(i)] = gs / (1.0 + std::exp(-gs)) * us;
      }
      for (int h = 0; h < H; ++h) {
        const double* d = &w.dnd[(static_cast<size_t>(e) * H + h) * I];
        double s = 0;
        for (int i = 0; i < I; ++i) s += d[i] * a[static_cast<size_t>(i)];
        out[static_cast<size_t>(t) * H + h] += wt[static_cast<size_t>(t) * k + j] * s;
      }
    }
  }
  return out;
}

void check(bool ok, const std::string& what) {
  ++g_checks;
  if (!ok) {
    ++g_failures;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

// Compares out (bf16) with ref; returns the relative error.
double compare(const std::vector<uint16_t>& out, const std::vector<double>& ref, double tol,
               const std::string& what) {
  double num = 0, den = 0, amax = 0;
  bool finite = true;
  for (size_t i = 0; i < ref.size(); ++i) amax = std::fmax(amax, std::fabs(ref[i]));
  size_t bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double o = bf16_to_f32(out[i]);
    if (!std::isfinite(o)) finite = false;
    num += (o - ref[i]) * (o - ref[i]);
    den += ref[i] * ref[i];
    if (std::fabs(o - ref[i]) > 2 * tol * amax + 2 * tol * std::fabs(ref[i])) ++bad;
  }
  const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  char buf[128];
  std::snprintf(buf, sizeof(buf), " rel=%.3g bad=%zu finite=%d", rel, bad, finite ? 1 : 0);
  check(finite && rel <= tol && bad == 0, what + buf);
  return rel;
}

struct Call {
  int T, k;
  std::vector<uint16_t> x;
  std::vector<int32_t> ids;
  std::vector<float> w;
};

Call make_call(int T, int k, int E, int H, unsigned seed, int pattern) {
  Call c{T, k, {}, {}, {}};
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> ud(0.1f, 1.0f);
  c.x.resize(static_cast<size_t>(T) * H);
  for (auto& v : c.x) v = f32_to_bf16(nd(rng));
  c.ids.resize(static_cast<size_t>(T) * k);
  c.w.resize(static_cast<size_t>(T) * k);
  for (int t = 0; t < T; ++t)
    for (int j = 0; j < k; ++j) {
      int e;
      if (pattern == 1) {
        e = j == 0 ? 1 : -1;  // all tokens on expert 1
      } else {
        // experts 0..E-2 only (expert E-1 gets no tokens), distinct per token
        e = static_cast<int>((t * 7 + j * 3 + static_cast<int>(rng() % 3)) % (E - 1));
        for (int jj = 0; jj < j; ++jj)
          if (c.ids[static_cast<size_t>(t) * k + jj] == e) e = (e + 1) % (E - 1);
      }
      c.ids[static_cast<size_t>(t) * k + j] = e;
      c.w[static_cast<size_t>(t) * k + j] = ud(rng);
    }
  if (pattern == 0 && T > 2) {
    for (int j = 0; j < k; ++j) c.ids[static_cast<size_t>(1) * k + j] = -1;  // token 1: no expert
    c.ids[static_cast<size_t>(2) * k + (k - 1)] = -1;                          // one skipped slot
  }
  return c;
}

ForwardArgs args_for(int layer, Call& c, std::vector<uint16_t>& out) {
  ForwardArgs a;
  a.layer = layer;
  a.T = c.T;
  a.k = c.k;
  a.hidden = c.x.data();
  a.ids = c.ids.data();
  a.ids64 = false;
  a.weights = c.w.data();
  a.out = out.data();
  return a;
}

void run_config(const Weights& w, const std::string& method, bool dynamic, int shards, bool w8a8,
                int amx_threshold) {
  EngineConfig cfg;
  cfg.threads = 3;
  cfg.method = method;
  cfg.dynamic = dynamic;
  cfg.numa_nodes = shards;
  cfg.int8_w8a8 = w8a8;
  cfg.amx_threshold = amx_threshold;
  cfg.spin_us = 20;
  cfg.m_chunk_amx = 32;  // several token chunks per expert at these sizes
  cfg.m_chunk_amx_deq = 32;
  cfg.m_chunk_vec = 8;
  cfg.kc_amx = 64;       // several K chunks (C round trips through memory)
  cfg.gu_nbi_amx = 3;    // odd block counts: 1x2 / 2x1 tile tails
  cfg.dn_nb_amx = 3;
  Engine eng(cfg);
  LayerSource src;
  src.fmt = w.fmt;
  src.group = w.group;
  src.E = w.E;
  src.H = w.H;
  src.I = w.I;
  auto rs = [&](const uint16_t* base, int64_t estride, int rows, int K) {
    RowSource r;
    r.kind = SRC_BF16;
    r.data = base;
    r.estride = estride;
    r.rows = rows;
    r.K = K;
    r.group = w.group;
    return r;
  };
  src.gate = rs(w.gu.data(), 2 * w.I, w.I, w.H);
  src.up = rs(w.gu.data() + static_cast<size_t>(w.I) * w.H, 2 * w.I, w.I, w.H);
  src.down = rs(w.dn.data(), w.H, w.H, w.I);
  eng.add_layer(7, src);
  const double tol = (w.fmt == FMT_INT8 && w8a8 && method != "portable" && method != "avx512") ? 4e-2 : 1e-2;
  char name[160];
  std::snprintf(name, sizeof(name), "fmt=%d g=%d H=%d I=%d %s %s shards=%d w8a8=%d thr=%d", w.fmt,
                w.group, w.H, w.I, method.c_str(), dynamic ? "dynamic" : "static", shards, w8a8 ? 1 : 0,
                amx_threshold);
  const int Ts[] = {1, 3, 17, 40};
  unsigned seed = 11;
  for (int T : Ts) {
    for (int pattern = 0; pattern < 2; ++pattern) {
      if (pattern == 1 && T != 40) continue;
      const int k = T == 3 ? 1 : 3;
      Call c = make_call(T, pattern == 1 ? 2 : k, w.E, w.H, seed++, pattern);
      std::vector<uint16_t> out(static_cast<size_t>(T) * w.H, 0x7fc0);  // NaN poison
      eng.forward(args_for(7, c, out));
      compare(out, reference(w, c.T, c.k, c.x, c.ids, c.w), tol,
              std::string(name) + " T=" + std::to_string(T) + " pattern=" + std::to_string(pattern));
    }
  }
}

void run_api_tests(const Weights& w) {
  EngineConfig cfg;
  cfg.threads = 2;
  cfg.method = "auto";
  cfg.amx_threshold = 4;
  Engine eng(cfg);
  LayerSource src;
  src.fmt = w.fmt;
  src.group = w.group;
  src.E = w.E;
  src.H = w.H;
  src.I = w.I;
  RowSource g;
  g.kind = SRC_BF16;
  g.data = w.gu.data();
  g.estride = 2 * w.I;
  g.rows = w.I;
  g.K = w.H;
  src.gate = g;
  src.up = g;
  src.up.data = w.gu.data() + static_cast<size_t>(w.I) * w.H;
  RowSource d = g;
  d.data = w.dn.data();
  d.estride = w.H;
  d.rows = w.H;
  d.K = w.I;
  src.down = d;
  eng.add_layer(0, src);
  eng.add_layer(1, src);  // a second layer, same weights

  // async: several submits then one sync == synchronous results
  std::vector<Call> calls;
  for (int i = 0; i < 4; ++i) calls.push_back(make_call(5 + 7 * i, 2, w.E, w.H, 100 + i, 0));
  std::vector<std::vector<uint16_t>> outs(4), ref_outs(4);
  for (int i = 0; i < 4; ++i) {
    outs[static_cast<size_t>(i)].assign(static_cast<size_t>(calls[static_cast<size_t>(i)].T) * w.H, 0x7fc0);
    ref_outs[static_cast<size_t>(i)] = outs[static_cast<size_t>(i)];
    eng.forward(args_for(i % 2, calls[static_cast<size_t>(i)], ref_outs[static_cast<size_t>(i)]));
  }
  uint64_t last = 0;
  for (int i = 0; i < 4; ++i) last = eng.submit(args_for(i % 2, calls[static_cast<size_t>(i)], outs[static_cast<size_t>(i)]));
  eng.sync(last);
  for (int i = 0; i < 4; ++i)
    check(outs[static_cast<size_t>(i)] == ref_outs[static_cast<size_t>(i)], "async result == sync result");

  // bad ids raise (and a later call still works)
  Call bad = make_call(4, 2, w.E, w.H, 5, 0);
  bad.ids[3] = w.E;
  std::vector<uint16_t> bout(static_cast<size_t>(4) * w.H);
  bool threw = false;
  try {
    eng.forward(args_for(0, bad, bout));
  } catch (const std::runtime_error& e) {
    threw = std::string(e.what()).find("outside") != std::string::npos;
  }
  check(threw, "out-of-range expert id raises");
  bad.ids[3] = -2;
  threw = false;
  try {
    eng.forward(args_for(0, bad, bout));
  } catch (const std::runtime_error&) {
    threw = true;
  }
  check(threw, "id -2 raises");

  // int64 ids
  Call c = make_call(6, 2, w.E, w.H, 9, 0);
  std::vector<int64_t> ids64(c.ids.begin(), c.ids.end());
  std::vector<uint16_t> o32(static_cast<size_t>(6) * w.H), o64 = o32;
  eng.forward(args_for(0, c, o32));
  ForwardArgs a64 = args_for(0, c, o64);
  a64.ids = ids64.data();
  a64.ids64 = true;
  eng.forward(a64);
  check(o32 == o64, "int64 ids == int32 ids");

  // slot C API: token count read at task start
  Call sc = make_call(9, 2, w.E, w.H, 21, 0);
  std::vector<uint16_t> sout(static_cast<size_t>(9) * w.H, 0x7fc0), sref = sout;
  int32_t ntok = 0;
  Slot slot;
  slot.engine = &eng;
  slot.args = args_for(1, sc, sout);
  slot.args.T = 0;
  slot.args.T_ptr = &ntok;
  slot.args.max_T = 9;
  ntok = 6;
  hmoe_slot_submit(&slot);
  hmoe_slot_sync(&slot);
  check(slot.error.empty(), "slot ran without error: " + slot.error);
  Call sc6 = sc;
  sc6.T = 6;
  eng.forward(args_for(1, sc6, sref));
  check(std::memcmp(sout.data(), sref.data(), static_cast<size_t>(6) * w.H * 2) == 0, "slot == forward (T=6)");
  check(sout[static_cast<size_t>(6) * w.H] == 0x7fc0, "slot left rows >= T untouched");
  ntok = 10;  // > max_T: recorded as an error
  hmoe_slot_submit(&slot);
  hmoe_slot_sync(&slot);
  check(!slot.error.empty(), "slot with T > max_T reports an error");

  // removing a layer, then calling it, raises
  eng.remove_layer(1);
  threw = false;
  try {
    eng.forward(args_for(1, c, o32));
  } catch (const std::runtime_error&) {
    threw = true;
  }
  check(threw, "missing layer raises");
  EngineStats st = eng.stats();
  check(st.forwards > 0 && st.wall_ns > 0 && st.busy_ns > 0, "stats are counted");
}

// Python-quantizer-layout sources give the same packed results as bf16 sources.
void run_prequantized(const Weights& w) {
  if (w.fmt == FMT_BF16) return;
  const int E = w.E, H = w.H, I = w.I, g = w.group;
  std::vector<int8_t> q8gu, q8dn;
  std::vector<uint8_t> q4gu, q4dn;
  std::vector<float> sgu, sdn;
  if (w.fmt == FMT_INT8) {
    q8gu.resize(w.gu.size());
    q8dn.resize(w.dn.size());
    sgu.resize(static_cast<size_t>(E) * 2 * I);
    sdn.resize(static_cast<size_t>(E) * H);
    for (size_t r = 0; r < sgu.size(); ++r) quantize_row_int8(&w.gu[r * H], H, &q8gu[r * H], &sgu[r]);
    for (size_t r = 0; r < sdn.size(); ++r) quantize_row_int8(&w.dn[r * I], I, &q8dn[r * I], &sdn[r]);
  } else {
    q4gu.resize(w.gu.size() / 2);
    q4dn.resize(w.dn.size() / 2);
    sgu.resize(static_cast<size_t>(E) * 2 * I * (H / g));
    sdn.resize(static_cast<size_t>(E) * H * (I / g));
    for (size_t r = 0; r < static_cast<size_t>(E) * 2 * I; ++r)
      quantize_row_int4(&w.gu[r * H], H, g, &q4gu[r * H / 2], &sgu[r * (H / g)]);
    for (size_t r = 0; r < static_cast<size_t>(E) * H; ++r)
      quantize_row_int4(&w.dn[r * I], I, g, &q4dn[r * I / 2], &sdn[r * (I / g)]);
  }
  EngineConfig cfg;
  cfg.threads = 2;
  cfg.method = "portable";
  Engine eng(cfg);
  for (int pre = 0; pre < 2; ++pre) {
    LayerSource src;
    src.fmt = w.fmt;
    src.group = g;
    src.E = E;
    src.H = H;
    src.I = I;
    const bool q8 = w.fmt == FMT_INT8;
    const size_t srow_gu = q8 ? 1 : static_cast<size_t>(H / g);
    RowSource r;
    r.group = g;
    r.kind = pre ? (q8 ? SRC_Q8 : SRC_Q4) : SRC_BF16;
    r.estride = 2 * I;
    r.rows = I;
    r.K = H;
    if (pre) {
      r.data = q8 ? static_cast<const void*>(q8gu.data()) : static_cast<const void*>(q4gu.data());
      r.scale = sgu.data();
    } else {
      r.data = w.gu.data();
    }
    src.gate = r;
    src.up = r;
    const size_t up_off = static_cast<size_t>(I) * (q8 ? H : H / 2);
    if (pre) {
      src.up.data = static_cast<const uint8_t*>(r.data) + up_off;
      src.up.scale = sgu.data() + static_cast<size_t>(I) * srow_gu;
    } else {
      src.up.data = w.gu.data() + static_cast<size_t>(I) * H;
    }
    RowSource d = r;
    d.estride = H;
    d.rows = H;
    d.K = I;
    if (pre) {
      d.data = q8 ? static_cast<const void*>(q8dn.data()) : static_cast<const void*>(q4dn.data());
      d.scale = sdn.data();
    } else {
      d.data = w.dn.data();
    }
    src.down = d;
    eng.add_layer(pre, src);
  }
  Call c = make_call(7, 2, E, H, 77, 0);
  std::vector<uint16_t> o0(static_cast<size_t>(7) * H), o1 = o0;
  eng.forward(args_for(0, c, o0));
  eng.forward(args_for(1, c, o1));
  check(o0 == o1, "pre-quantized source == bf16 source (fmt " + std::to_string(w.fmt) + ")");
}

}  // namespace

int main() {
  const CpuFeatures& f = cpu_features();
  std::vector<std::string> methods = {"portable"};
  if (avx512_compiled() && f.avx512_method(true)) methods.push_back("avx512");
  if (amx_compiled() && f.amx_method(true)) methods.push_back("amx");
  std::printf("methods:");
  for (auto& m : methods) std::printf(" %s", m.c_str());
  std::printf("%s\n", f.amx_emulated ? " (AMX emulated)" : "");

  struct Shape {
    int fmt, group, H, I;
  };
  // H=160/I=96: K padding (160 -> 192, 96 -> 128) and an intermediate size that is not a
  // multiple of the 64-row shard step; int4 g64 needs multiples of 64.
  const Shape shapes[] = {{FMT_BF16, 0, 160, 96},  {FMT_INT8, 0, 160, 96},
                          {FMT_INT4, 32, 160, 96}, {FMT_INT4, 64, 192, 128},
                          {FMT_BF16, 0, 256, 128}};
  unsigned seed = 1;
  for (const Shape& s : shapes) {
    Weights w = make_weights(6, s.H, s.I, s.fmt, s.group, seed++);
    for (const std::string& m : methods) {
      for (int dyn = 0; dyn < 2; ++dyn) {
        // 3 shards on 3 threads: one thread per group, and with I=96 one shard owns nothing.
        for (int shards : {1, 3}) {
          run_config(w, m, dyn == 1, shards, false, 32);
          if (m == "amx" && s.fmt == FMT_INT8 && shards == 1)
            run_config(w, m, dyn == 1, shards, true, 32);
        }
      }
    }
    if (std::find(methods.begin(), methods.end(), "amx") != methods.end())
      run_config(w, "auto", true, 2, false, 4);  // auto: AMX and AVX-512 experts in one call
    run_prequantized(w);
    if (s.H == 160) run_api_tests(w);
  }
  std::printf("%d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
