#include "moe_layer.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "cpu_features.h"

namespace hmoe {

namespace {

std::string fmt_name(int fmt) {
  return fmt == FMT_BF16 ? "bf16" : fmt == FMT_INT8 ? "int8" : "int4";
}

struct HotGuard {
  ThreadPool* p;
  explicit HotGuard(ThreadPool* pool) : p(pool) { p->set_hot(true); }
  ~HotGuard() { p->set_hot(false); }
};

}  // namespace

// ------------------------------------------------------------------ construction

Engine::Engine(const EngineConfig& cfg) : cfg_(cfg), queue_(cfg.spin_us) {
  nthreads_ = cfg_.threads < 1 ? 1 : cfg_.threads;
  nshards_ = cfg_.numa_nodes < 1 ? 1 : cfg_.numa_nodes;
  if (nshards_ > 64) throw std::invalid_argument("numa_nodes must be <= 64");
  if (nshards_ > nthreads_)
    throw std::invalid_argument("numa_nodes (" + std::to_string(nshards_) +
                                ") needs at least as many threads (" + std::to_string(nthreads_) +
                                ")");
  if (cfg_.gu_nbi_vec < 1) cfg_.gu_nbi_vec = 1;
  if (cfg_.gu_nbi_amx < 1) cfg_.gu_nbi_amx = 4;
  if (cfg_.dn_nb_vec < 1) cfg_.dn_nb_vec = 2;
  if (cfg_.dn_nb_amx < 1) cfg_.dn_nb_amx = 8;
  if (cfg_.m_chunk_vec < 1) cfg_.m_chunk_vec = 64;
  if (cfg_.m_chunk_amx < 32) cfg_.m_chunk_amx = 256;
  cfg_.m_chunk_amx = cfg_.m_chunk_amx / 32 * 32;
  if (cfg_.m_chunk_amx_deq < 32) cfg_.m_chunk_amx_deq = 1024;
  cfg_.m_chunk_amx_deq = cfg_.m_chunk_amx_deq / 32 * 32;
  if (cfg_.kc_amx < 64) cfg_.kc_amx = 1024;
  cfg_.kc_amx = cfg_.kc_amx / 64 * 64;
  if (cfg_.amx_threshold < 0) cfg_.amx_threshold = 0;

  const CpuFeatures& f = cpu_features();
  avx_bf16_ok_ = avx512_compiled() && f.avx512_method(false);
  avx_int_ok_ = avx512_compiled() && f.avx512_method(true);
  amx_ok_ = amx_compiled() && f.amx_method(false);
  amx_int8_ok_ = amx_compiled() && f.amx_method(true);
  method_ = parse_method(cfg_.method);
  refresh_method_ok();

  // CPUs and thread groups (one group per NUMA shard).
  std::vector<int> cand = cfg_.cpus.empty() ? allowed_cpus() : cfg_.cpus;
  const int real_nodes = numa_node_count();
  numa_simulated_ = nshards_ > 1 && real_nodes < nshards_;
  group_start_.resize(static_cast<size_t>(nshards_) + 1);
  for (int g = 0; g <= nshards_; ++g)
    group_start_[static_cast<size_t>(g)] =
        static_cast<int>(static_cast<int64_t>(nthreads_) * g / nshards_);
  group_of_.resize(static_cast<size_t>(nthreads_));
  rank_of_.resize(static_cast<size_t>(nthreads_));
  thread_cpus_.assign(static_cast<size_t>(nthreads_), -1);
  for (int g = 0; g < nshards_; ++g) {
    std::vector<int> gc;
    if (nshards_ > 1 && !numa_simulated_) {
      for (int c : numa_node_cpus(g))
        if (std::find(cand.begin(), cand.end(), c) != cand.end()) gc.push_back(c);
    }
    if (gc.empty()) {  // simulated (or unknown): an even split of the candidate CPUs
      const size_t n = cand.size();
      for (size_t i = n * static_cast<size_t>(g) / nshards_; i < n * (g + 1) / nshards_; ++i)
        gc.push_back(cand[i]);
      if (gc.empty()) gc = cand;
    }
    for (int t = group_start_[static_cast<size_t>(g)]; t < group_start_[static_cast<size_t>(g) + 1];
         ++t) {
      group_of_[static_cast<size_t>(t)] = g;
      rank_of_[static_cast<size_t>(t)] = t - group_start_[static_cast<size_t>(g)];
      thread_cpus_[static_cast<size_t>(t)] =
          gc[static_cast<size_t>(t - group_start_[static_cast<size_t>(g)]) % gc.size()];
    }
  }
  numa_bound_ = nshards_ > 1 && !numa_simulated_ && libnuma_available();
  pinned_ = cfg_.pin || (nshards_ > 1 && !numa_simulated_);
  pool_.reset(new ThreadPool(nthreads_, pinned_ ? thread_cpus_ : std::vector<int>(), cfg_.spin_us));
  for (int t = 0; t < nthreads_; ++t) tscratch_.emplace_back(new TScratch());
  runner_ = std::thread(&Engine::runner_loop, this);
}

Engine::~Engine() {
  std::string ignored;
  queue_.wait(0, &ignored);
  queue_.stop();
  if (runner_.joinable()) runner_.join();
  pool_.reset();
  std::lock_guard<std::mutex> lk(layers_mu_);
  layers_.clear();
}

int Engine::parse_method(const std::string& m) {
  if (m == "auto") return -1;
  if (m == "portable") return ISA_PORTABLE;
  if (m == "avx512" || m == "amx") {
    std::string miss = missing_for(m, FMT_BF16, false);
    if (!miss.empty()) throw std::runtime_error("method " + m + " needs: " + miss);
    return m == "amx" ? ISA_AMX : ISA_AVX512;
  }
  throw std::invalid_argument("unknown method '" + m + "' (auto, amx, avx512, portable)");
}

void Engine::set_policy(const std::string& method, bool dynamic, int amx_threshold,
                        bool int8_w8a8) {
  const int m = parse_method(method);
  uint64_t ticket = submit_generic([=] {
    method_ = m;
    cfg_.method = method;
    cfg_.dynamic = dynamic;
    cfg_.amx_threshold = amx_threshold < 0 ? 0 : amx_threshold;
    cfg_.int8_w8a8 = int8_w8a8;
    refresh_method_ok();
  });
  sync(ticket);
}

void Engine::refresh_method_ok() {
  for (int f = FMT_BF16; f <= FMT_INT4; ++f) method_ok_[f] = method_missing(f).empty();
}

// ------------------------------------------------------------------ queue / runner

void Engine::runner_loop() {
  if (pinned_) pin_current_thread(thread_cpus_[0]);
  Task t;
  while (queue_.pop(&t)) execute(t);
}

void Engine::execute(Task& t) {
  std::string err;
  bool failed = false;
  const uint64_t t0 = now_ns();
  try {
    if (t.kind == Task::FORWARD) {
      execute_forward(t.fwd);
      st_forwards_.fetch_add(1, std::memory_order_relaxed);
    } else {
      t.fn();
    }
  } catch (const std::exception& e) {
    err = e.what();
    failed = true;
  } catch (...) {
    err = "unknown error";
    failed = true;
  }
  t.fn = nullptr;
  st_wall_ns_.fetch_add(now_ns() - t0, std::memory_order_relaxed);
  st_tasks_.fetch_add(1, std::memory_order_relaxed);
  queue_.complete(t.ticket, failed ? &err : nullptr);
}

uint64_t Engine::submit(const ForwardArgs& a) {
  Task t;
  t.kind = Task::FORWARD;
  t.fwd = a;
  return queue_.push(std::move(t));
}

uint64_t Engine::submit_generic(std::function<void()> fn) {
  Task t;
  t.kind = Task::GENERIC;
  t.fn = std::move(fn);
  return queue_.push(std::move(t));
}

void Engine::sync(uint64_t ticket) {
  std::string err;
  if (!queue_.wait(ticket, &err)) throw std::runtime_error(err);
}

bool Engine::sync_noexcept(uint64_t ticket, std::string* err) { return queue_.wait(ticket, err); }

EngineStats Engine::stats() const {
  EngineStats s;
  {
    std::lock_guard<std::mutex> lk(stats_mu_);
    s = last_;
  }
  s.tasks = st_tasks_.load();
  s.forwards = st_forwards_.load();
  s.wall_ns = st_wall_ns_.load();
  const uint64_t b = pool_->busy_ns_total();
  s.busy_ns = b >= busy_base_ ? b - busy_base_ : 0;
  return s;
}

void Engine::reset_stats() {
  st_tasks_.store(0);
  st_forwards_.store(0);
  st_wall_ns_.store(0);
  busy_base_ = pool_->busy_ns_total();
  std::lock_guard<std::mutex> lk(stats_mu_);
  last_ = EngineStats();
}

// ------------------------------------------------------------------ layers

Layer* Engine::find_layer(int id) const {
  std::lock_guard<std::mutex> lk(layers_mu_);
  auto it = layers_.find(id);
  return it == layers_.end() ? nullptr : it->second.get();
}

int Engine::layer_experts(int id) const {
  Layer* L = find_layer(id);
  return L ? L->E : -1;
}

size_t Engine::packed_bytes(int id) const {
  std::lock_guard<std::mutex> lk(layers_mu_);
  size_t s = 0;
  for (const auto& kv : layers_)
    if (id < 0 || kv.first == id) s += kv.second->bytes;
  return s;
}

std::string Engine::method_missing(int fmt) const {
  if (method_ == ISA_AVX512) return missing_for("avx512", fmt, cfg_.int8_w8a8);
  if (method_ == ISA_AMX) return missing_for("amx", fmt, cfg_.int8_w8a8);
  return "";
}

int Engine::isa_for(int fmt, int n) const {
  if (method_ >= 0) return method_;
  const bool avx = fmt == FMT_BF16 ? avx_bf16_ok_ : avx_int_ok_;
  const bool amx = amx_ok_ && (fmt != FMT_INT8 || !cfg_.int8_w8a8 || amx_int8_ok_);
  if (amx && n >= cfg_.amx_threshold) return ISA_AMX;
  if (avx) return ISA_AVX512;
  return ISA_PORTABLE;
}

const Elementwise& Engine::ew_for(int isa) const {
  if (isa == ISA_PORTABLE || !avx_bf16_ok_) return elementwise_portable();
  return elementwise_avx512();
}

void Engine::add_layer(int id, const LayerSource& src) {
  if (src.fmt < FMT_BF16 || src.fmt > FMT_INT4) throw std::invalid_argument("bad format");
  if (src.E <= 0 || src.H <= 0 || src.I <= 0)
    throw std::invalid_argument("experts, hidden and intermediate sizes must be positive");
  const std::string miss = method_missing(src.fmt);
  if (!miss.empty())
    throw std::runtime_error("method " + cfg_.method + " cannot run " + fmt_name(src.fmt) +
                             ": missing " + miss);
  const RowSource* rs[3] = {&src.gate, &src.up, &src.down};
  for (int i = 0; i < 3; ++i) {
    const RowSource& r = *rs[i];
    const int want_rows = i < 2 ? src.I : src.H, want_k = i < 2 ? src.H : src.I;
    if (!r.data) throw std::invalid_argument("null weight pointer");
    if (r.rows != want_rows || r.K != want_k) throw std::invalid_argument("weight shape mismatch");
    const bool ok = r.kind == SRC_BF16 || (r.kind == SRC_Q8 && src.fmt == FMT_INT8) ||
                    (r.kind == SRC_Q4 && src.fmt == FMT_INT4);
    if (!ok) throw std::invalid_argument("weight source kind does not match the format");
    if (r.kind != SRC_BF16 && !r.scale) throw std::invalid_argument("null scale pointer");
  }
  if (src.fmt == FMT_INT4) {
    if (src.group != 32 && src.group != 64)
      throw std::invalid_argument("int4 group size must be 32 or 64");
    if (src.H % src.group || src.I % src.group)
      throw std::invalid_argument("int4: hidden (" + std::to_string(src.H) +
                                  ") and intermediate (" + std::to_string(src.I) +
                                  ") sizes must be multiples of the group size " +
                                  std::to_string(src.group));
    for (int i = 0; i < 3; ++i)
      if (rs[i]->kind == SRC_Q4 && rs[i]->group != src.group)
        throw std::invalid_argument("int4 source group size differs from the layer's");
  }
  std::unique_ptr<Layer> L(new Layer());
  L->fmt = src.fmt;
  L->group = src.fmt == FMT_INT4 ? src.group : 0;
  L->E = src.E;
  L->H = src.H;
  L->I = src.I;
  L->KH = iround_up(src.H, kKAlign);
  L->KI = iround_up(src.I, kShardAlign);
  L->NH = iround_up(src.H, kBlockN);
  const int S = L->KI / kShardAlign;
  L->shards.resize(static_cast<size_t>(nshards_));
  for (int s = 0; s < nshards_; ++s) {
    Shard& sh = L->shards[static_cast<size_t>(s)];
    const int sb0 = static_cast<int>(static_cast<int64_t>(S) * s / nshards_);
    const int sb1 = static_cast<int>(static_cast<int64_t>(S) * (s + 1) / nshards_);
    sh.ib0 = sb0 * (kShardAlign / kBlockN);
    sh.ib1 = sb1 * (kShardAlign / kBlockN);
    sh.KIn = (sh.ib1 - sh.ib0) * kBlockN;
    sh.nblk_gu = 2 * (sh.ib1 - sh.ib0);
    sh.nblk_dn = sh.KIn > 0 ? L->NH / kBlockN : 0;
    sh.bb_gu = block_bytes(L->fmt, L->KH, L->group);
    sh.bb_dn = sh.KIn > 0 ? block_bytes(L->fmt, sh.KIn, L->group) : 0;
    const size_t gu_bytes = static_cast<size_t>(L->E) * sh.nblk_gu * sh.bb_gu;
    const size_t dn_bytes = static_cast<size_t>(L->E) * sh.nblk_dn * sh.bb_dn;
    sh.mem = node_alloc(gu_bytes + dn_bytes, s, numa_bound_);
    sh.gu = static_cast<uint8_t*>(sh.mem.ptr);
    sh.dn = sh.gu + gu_bytes;
    L->bytes += gu_bytes + dn_bytes;
  }
  Layer* Lp = L.get();
  uint64_t ticket = submit_generic([this, Lp, &src] {
    pack_layer_ = Lp;
    pack_src_ = &src;
    for (int s = 0; s < nshards_; ++s) {
      std::vector<Unit>& us = units_[PH_PACK][s];
      us.clear();
      const Shard& sh = Lp->shards[static_cast<size_t>(s)];
      for (int e = 0; e < Lp->E; ++e) {
        for (int b = 0; b < sh.ib1 - sh.ib0; ++b) us.push_back(Unit{e, 0, 0, b, 0});
        for (int h = 0; h < sh.nblk_dn; ++h) us.push_back(Unit{e, 1, 0, h, 0});
      }
    }
    run_phase(PH_PACK, true);
    for (int s = 0; s < nshards_; ++s) {
      units_[PH_PACK][s].clear();
      units_[PH_PACK][s].shrink_to_fit();
    }
    pack_layer_ = nullptr;
    pack_src_ = nullptr;
  });
  sync(ticket);
  // Replace an existing layer only when no task can still use it.
  std::unique_ptr<Layer> old;
  {
    std::lock_guard<std::mutex> lk(layers_mu_);
    auto it = layers_.find(id);
    if (it != layers_.end()) {
      old = std::move(it->second);
      it->second = std::move(L);
    } else {
      layers_.emplace(id, std::move(L));
    }
  }
  if (old) {
    queue_.wait(0, nullptr);
    old.reset();
  }
}

void Engine::remove_layer(int id) {
  std::string ignored;
  queue_.wait(0, &ignored);
  std::lock_guard<std::mutex> lk(layers_mu_);
  layers_.erase(id);
}

void Engine::unit_pack(int g, const Unit& u, int tid) {
  const Layer& L = *pack_layer_;
  const LayerSource& src = *pack_src_;
  const Shard& sh = L.shards[static_cast<size_t>(g)];
  void* tmp = tscratch_[static_cast<size_t>(tid)]->tmp.ensure(pack_tmp_bytes(imax(L.H, L.I)));
  if (u.a0 == 0) {
    const int b = u.b0, ib = sh.ib0 + b;
    uint8_t* dst = sh.gu + (static_cast<size_t>(u.e) * sh.nblk_gu + 2 * b) * sh.bb_gu;
    pack_block(L.fmt, L.group, L.KH, 0, src.gate, u.e, ib * kBlockN, dst, tmp);
    pack_block(L.fmt, L.group, L.KH, 0, src.up, u.e, ib * kBlockN, dst + sh.bb_gu, tmp);
  } else {
    uint8_t* dst = sh.dn + (static_cast<size_t>(u.e) * sh.nblk_dn + u.b0) * sh.bb_dn;
    pack_block(L.fmt, L.group, sh.KIn, sh.ib0 * kBlockN, src.down, u.e, u.b0 * kBlockN, dst, tmp);
  }
}

// ------------------------------------------------------------------ phases

void Engine::run_phase(Phase ph, bool grouped) {
  cur_phase_ = ph;
  cur_grouped_ = grouped;
  for (int g = 0; g < (grouped ? nshards_ : 1); ++g) next_[g].v.store(0, std::memory_order_relaxed);
  pool_->run(&Engine::phase_entry, this);
}

void Engine::phase_entry(void* self, int tid) { static_cast<Engine*>(self)->phase_thread(tid); }

void Engine::phase_thread(int tid) {
  const Phase ph = cur_phase_;
  if (ph == PH_FN) {
    fn_(tid);
    return;
  }
  int g = 0, rank = tid, gsize = nthreads_;
  if (cur_grouped_) {
    g = group_of_[static_cast<size_t>(tid)];
    rank = rank_of_[static_cast<size_t>(tid)];
    gsize = group_start_[static_cast<size_t>(g) + 1] - group_start_[static_cast<size_t>(g)];
  }
  const std::vector<Unit>& units = units_[ph][g];
  const int U = static_cast<int>(units.size());
  if (!cfg_.dynamic || ph == PH_PACK) {
    const int u0 = static_cast<int>(static_cast<int64_t>(U) * rank / gsize);
    const int u1 = static_cast<int>(static_cast<int64_t>(U) * (rank + 1) / gsize);
    for (int u = u0; u < u1; ++u) do_unit(ph, g, units[static_cast<size_t>(u)], tid);
  } else {
    for (;;) {
      const int u = next_[g].v.fetch_add(1, std::memory_order_relaxed);
      if (u >= U) break;
      do_unit(ph, g, units[static_cast<size_t>(u)], tid);
    }
  }
  // The last AMX phase of a task: give the tile state back (one ldtilecfg per thread per task).
  if (ph == PH_DOWN) amx_release_thread();
}

void Engine::run_serial(Phase ph) {
  for (const Unit& u : units_[ph][0]) do_unit(ph, 0, u, 0);
}

void Engine::do_unit(Phase ph, int g, const Unit& u, int tid) {
  switch (ph) {
    case PH_GATHER:
      unit_gather(u);
      break;
    case PH_GATEUP:
      unit_gateup(g, u, tid);
      break;
    case PH_QUANT:
      unit_quant(u);
      break;
    case PH_DOWN:
      unit_down(g, u, tid);
      break;
    case PH_REDUCE:
      unit_reduce(u, tid);
      break;
    case PH_PACK:
      unit_pack(g, u, tid);
      break;
    default:
      break;
  }
}

void Engine::gemm(int isa, int fmt, bool w8a8, GemmArgs& ga, int tid) {
  if (isa == ISA_AMX) {
    ga.kc = cfg_.kc_amx;
    const bool deq = fmt != FMT_BF16 && !(fmt == FMT_INT8 && w8a8);
    if (deq) {
      const size_t need = amx_scratch_bytes(ga.nb, imin(ga.K, cfg_.kc_amx));
      ga.scratch = tscratch_[static_cast<size_t>(tid)]->deq.ensure(need);
      ga.scratch_bytes = need;
    }
    gemm_amx(fmt, w8a8, ga);
  } else if (isa == ISA_AVX512) {
    gemm_avx512(fmt, ga);
  } else {
    gemm_portable(fmt, ga);
  }
}

void Engine::unit_gather(const Unit& u) {
  const Layer& L = *L_;
  const int e = u.e, n = counts_[static_cast<size_t>(e)];
  const int afmt = xfmt_[static_cast<size_t>(e)];
  const Elementwise& ew = ew_for(isa_[static_cast<size_t>(e)]);
  uint8_t* Xg = Xg_.as<uint8_t>();
  float* Xs = Xs_.as<float>();
  const size_t ld = static_cast<size_t>(L.KH) * 2;
  for (int r = u.a0; r < u.a1; ++r) {
    const int row = row_off_[static_cast<size_t>(e)] + r;
    uint8_t* dst = Xg + static_cast<size_t>(row) * ld;
    if (r < n) {
      const int t = row_token_[static_cast<size_t>(row)];
      ew.act_from_bf16(args_->hidden + static_cast<size_t>(t) * L.H, L.H, L.KH, afmt, dst,
                       &Xs[row]);
    } else {
      std::memset(dst, 0, ld);
      Xs[row] = 1.0f;
    }
  }
}

void Engine::unit_gateup(int g, const Unit& u, int tid) {
  const Layer& L = *L_;
  const Shard& sh = L.shards[static_cast<size_t>(g)];
  const int e = u.e, isa = isa_[static_cast<size_t>(e)];
  const int M = u.a1 - u.a0, nbi = u.b1 - u.b0, nb = 2 * nbi;
  const int row0 = row_off_[static_cast<size_t>(e)] + u.a0;
  GemmArgs ga;
  ga.W = sh.gu + (static_cast<size_t>(e) * sh.nblk_gu + 2 * u.b0) * sh.bb_gu;
  ga.bstride = sh.bb_gu;
  ga.nb = nb;
  ga.K = L.KH;
  ga.group = L.group;
  ga.A = Xg_.as<uint8_t>() + static_cast<size_t>(row0) * L.KH * 2;
  ga.lda = static_cast<size_t>(L.KH) * 2;
  ga.a_scale = Xs_.as<float>() + row0;
  ga.M = M;
  ga.ldc = nb * kBlockN;
  ga.C = static_cast<float*>(
      tscratch_[static_cast<size_t>(tid)]->C.ensure(static_cast<size_t>(M) * ga.ldc * 4));
  gemm(isa, L.fmt, xfmt_[static_cast<size_t>(e)] == ACT_I8, ga, tid);
  const bool to_f32 = afmt_[static_cast<size_t>(e)] != ACT_BF16;
  const size_t col0 = static_cast<size_t>(sh.ib0 + u.b0) * kBlockN;
  void* dst;
  size_t ld;
  if (to_f32) {
    ld = static_cast<size_t>(L.KI) * 4;
    dst = ActF_.as<uint8_t>() + static_cast<size_t>(row0) * ld + col0 * 4;
  } else {
    ld = static_cast<size_t>(L.KI) * 2;
    dst = ActB_.as<uint8_t>() + static_cast<size_t>(row0) * ld + col0 * 2;
  }
  ew_for(isa).silu_mul(ga.C, ga.ldc, M, nbi, to_f32, dst, ld);
}

void Engine::unit_quant(const Unit& u) {
  const Layer& L = *L_;
  const int e = u.e;
  const Elementwise& ew = ew_for(isa_[static_cast<size_t>(e)]);
  for (int r = u.a0; r < u.a1; ++r) {
    const size_t row = static_cast<size_t>(row_off_[static_cast<size_t>(e)] + r);
    ew.act_from_f32(ActF_.as<float>() + row * L.KI, L.KI, afmt_[static_cast<size_t>(e)],
                    ActB_.as<uint8_t>() + row * L.KI * 2, As_.as<float>() + row);
  }
}

void Engine::unit_down(int g, const Unit& u, int tid) {
  const Layer& L = *L_;
  const Shard& sh = L.shards[static_cast<size_t>(g)];
  const int e = u.e, isa = isa_[static_cast<size_t>(e)];
  const int afmt = afmt_[static_cast<size_t>(e)];
  const size_t esz = afmt == ACT_I8 ? 1 : 2;
  const int M = u.a1 - u.a0, nb = u.b1 - u.b0;
  const int row0 = row_off_[static_cast<size_t>(e)] + u.a0;
  GemmArgs ga;
  ga.W = sh.dn + (static_cast<size_t>(e) * sh.nblk_dn + u.b0) * sh.bb_dn;
  ga.bstride = sh.bb_dn;
  ga.nb = nb;
  ga.K = sh.KIn;
  ga.group = L.group;
  ga.A = ActB_.as<uint8_t>() + static_cast<size_t>(row0) * L.KI * 2 +
         static_cast<size_t>(sh.ib0) * kBlockN * esz;
  ga.lda = static_cast<size_t>(L.KI) * 2;
  ga.a_scale = As_.as<float>() + row0;
  ga.M = M;
  ga.ldc = nb * kBlockN;
  ga.C = static_cast<float*>(
      tscratch_[static_cast<size_t>(tid)]->C.ensure(static_cast<size_t>(M) * ga.ldc * 4));
  gemm(isa, L.fmt, afmt == ACT_I8, ga, tid);
  const int real = imin(u.a1, counts_[static_cast<size_t>(e)]) - u.a0;
  if (real <= 0) return;
  float* Y = Yd_.as<float>() + (static_cast<size_t>(g) * total_rows_ + row0) * L.NH +
             static_cast<size_t>(u.b0) * kBlockN;
  ew_for(isa).scale_rows(ga.C, ga.ldc, real, nb * kBlockN, row_w_.data() + row0, Y, L.NH);
}

void Engine::unit_reduce(const Unit& u, int tid) {
  const Layer& L = *L_;
  std::vector<const float*>& ptrs = tscratch_[static_cast<size_t>(tid)]->ptrs;
  const Elementwise& ew = ew_for(method_ == ISA_PORTABLE ? ISA_PORTABLE : ISA_AVX512);
  const float* Yd = Yd_.as<float>();
  for (int t = u.a0; t < u.a1; ++t) {
    ptrs.clear();
    for (int s = 0; s < nshards_; ++s) {
      if (L.shards[static_cast<size_t>(s)].KIn == 0) continue;
      for (int j = 0; j < k_; ++j) {
        const int row = slot_row_[static_cast<size_t>(t) * k_ + j];
        if (row >= 0)
          ptrs.push_back(Yd + (static_cast<size_t>(s) * total_rows_ + row) * L.NH + u.b0);
      }
    }
    ew.sum_rows_bf16(ptrs.data(), static_cast<int>(ptrs.size()), u.b1 - u.b0,
                     args_->out + static_cast<size_t>(t) * L.H + u.b0);
  }
}

// ------------------------------------------------------------------ forward

void Engine::execute_forward(const ForwardArgs& a) {
  uint64_t ph_ns[6] = {};
  uint64_t t0 = now_ns();
  Layer* L = find_layer(a.layer);
  if (!L) throw std::runtime_error("expert engine has no layer " + std::to_string(a.layer));
  int T = a.T;
  if (a.T_ptr) {
    T = __atomic_load_n(a.T_ptr, __ATOMIC_ACQUIRE);
    if (T < 0 || T > a.max_T)
      throw std::runtime_error("token count " + std::to_string(T) + " read at task start is outside [0, " +
                               std::to_string(a.max_T) + "]");
  }
  if (T < 0) throw std::runtime_error("negative token count");
  if (a.k <= 0) throw std::runtime_error("top-k must be positive");
  if (!method_ok_[L->fmt])
    throw std::runtime_error("method " + cfg_.method + " cannot run " + fmt_name(L->fmt) +
                             " here: missing " + method_missing(L->fmt));
  if (T == 0) return;
  const int k = a.k, E = L->E;
  L_ = L;
  args_ = &a;
  T_ = T;
  k_ = k;

  // ---- route: counting sort of the T*k slots by expert (stable: token order) ----
  const size_t nslots = static_cast<size_t>(T) * k;
  auto id_at = [&](size_t i) -> int64_t {
    if (a.ids64) {
      int64_t v;
      std::memcpy(&v, static_cast<const uint8_t*>(a.ids) + i * 8, 8);
      return v;
    }
    int32_t v;
    std::memcpy(&v, static_cast<const uint8_t*>(a.ids) + i * 4, 4);
    return v;
  };
  counts_.assign(static_cast<size_t>(E), 0);
  for (size_t i = 0; i < nslots; ++i) {
    const int64_t id = id_at(i);
    if (id == -1) continue;
    if (id < 0 || id >= E) {
      char msg[200];
      std::snprintf(msg, sizeof(msg),
                    "expert id %" PRId64 " at [%zu, %zu] is outside [0, %d) (layer %d)", id,
                    i / static_cast<size_t>(k), i % static_cast<size_t>(k), E, a.layer);
      throw std::runtime_error(msg);
    }
    ++counts_[static_cast<size_t>(id)];
  }
  isa_.assign(static_cast<size_t>(E), ISA_PORTABLE);
  xfmt_.assign(static_cast<size_t>(E), ACT_BF16);
  afmt_.assign(static_cast<size_t>(E), ACT_BF16);
  npad_.assign(static_cast<size_t>(E), 0);
  row_off_.assign(static_cast<size_t>(E), 0);
  active_.clear();
  int total = 0, n_amx = 0, n_avx = 0, n_port = 0;
  bool any_q = false;
  for (int e = 0; e < E; ++e) {
    const int n = counts_[static_cast<size_t>(e)];
    if (n == 0) continue;
    active_.push_back(e);
    const int isa = isa_for(L->fmt, n);
    isa_[static_cast<size_t>(e)] = isa;
    int af = ACT_BF16;
    if (L->fmt != FMT_BF16) {
      if (isa == ISA_AMX)
        af = (L->fmt == FMT_INT8 && cfg_.int8_w8a8) ? ACT_I8 : ACT_BF16;
      else
        af = ACT_I16;
    }
    xfmt_[static_cast<size_t>(e)] = af;
    afmt_[static_cast<size_t>(e)] = af;
    any_q = any_q || af != ACT_BF16;
    npad_[static_cast<size_t>(e)] = isa == ISA_AMX ? iround_up(n, 16) : n;
    row_off_[static_cast<size_t>(e)] = total;
    total += npad_[static_cast<size_t>(e)];
    (isa == ISA_AMX ? n_amx : isa == ISA_AVX512 ? n_avx : n_port)++;
  }
  total_rows_ = total;
  slot_row_.resize(nslots);
  row_token_.assign(static_cast<size_t>(total), -1);
  row_w_.assign(static_cast<size_t>(total), 0.0f);
  cursor_ = row_off_;
  for (size_t i = 0; i < nslots; ++i) {
    const int64_t id = id_at(i);
    if (id == -1) {
      slot_row_[i] = -1;
      continue;
    }
    const int r = cursor_[static_cast<size_t>(id)]++;
    slot_row_[i] = r;
    row_token_[static_cast<size_t>(r)] = static_cast<int32_t>(i / static_cast<size_t>(k));
    row_w_[static_cast<size_t>(r)] = a.weights[i];
  }

  // ---- buffers (grow-only) ----
  const size_t rows = static_cast<size_t>(total);
  Xg_.ensure(rows * L->KH * 2 + 64);
  Xs_.ensure(rows * 4 + 64);
  ActB_.ensure(rows * L->KI * 2 + 64);
  As_.ensure(rows * 4 + 64);
  if (any_q) ActF_.ensure(rows * L->KI * 4 + 64);
  Yd_.ensure(static_cast<size_t>(nshards_) * rows * L->NH * 4 + 64);

  // ---- units ----
  order_ = active_;
  if (cfg_.dynamic)  // heaviest experts first: their units start early (LPT order)
    std::stable_sort(order_.begin(), order_.end(), [&](int x, int y) {
      return counts_[static_cast<size_t>(x)] > counts_[static_cast<size_t>(y)];
    });
  for (int p = 0; p < PH_PACK; ++p)
    for (int s = 0; s < nshards_; ++s) units_[p][s].clear();
  for (int e : order_) {
    const int np = npad_[static_cast<size_t>(e)];
    const bool amx = isa_[static_cast<size_t>(e)] == ISA_AMX;
    for (int r0 = 0; r0 < np; r0 += 16) units_[PH_GATHER][0].push_back(Unit{e, r0, imin(np, r0 + 16), 0, 0});
    if (afmt_[static_cast<size_t>(e)] != ACT_BF16)
      for (int r0 = 0; r0 < np; r0 += 16) units_[PH_QUANT][0].push_back(Unit{e, r0, imin(np, r0 + 16), 0, 0});
    const bool deq = L->fmt != FMT_BF16 && !(L->fmt == FMT_INT8 && cfg_.int8_w8a8);
    const int mc = amx ? (deq ? cfg_.m_chunk_amx_deq : cfg_.m_chunk_amx) : cfg_.m_chunk_vec;
    const int nbi = amx ? cfg_.gu_nbi_amx : cfg_.gu_nbi_vec;
    const int nbd = amx ? cfg_.dn_nb_amx : cfg_.dn_nb_vec;
    for (int s = 0; s < nshards_; ++s) {
      const Shard& sh = L->shards[static_cast<size_t>(s)];
      const int nbs = sh.ib1 - sh.ib0;
      if (nbs == 0) continue;
      for (int m0 = 0; m0 < np; m0 += mc) {
        const int m1 = imin(np, m0 + mc);
        for (int b0 = 0; b0 < nbs; b0 += nbi) units_[PH_GATEUP][s].push_back(Unit{e, m0, m1, b0, imin(nbs, b0 + nbi)});
        for (int h0 = 0; h0 < sh.nblk_dn; h0 += nbd)
          units_[PH_DOWN][s].push_back(Unit{e, m0, m1, h0, imin(sh.nblk_dn, h0 + nbd)});
      }
    }
  }
  {
    const int H = L->H;
    int tc, cw;
    if (T >= 4 * nthreads_) {
      tc = (T + 4 * nthreads_ - 1) / (4 * nthreads_);
      cw = H;
    } else {
      tc = 1;
      const int64_t want = static_cast<int64_t>(H) * T / (2 * nthreads_);
      cw = static_cast<int>(std::min<int64_t>(H, std::max<int64_t>(64, (want + 15) / 16 * 16)));
    }
    for (int t0r = 0; t0r < T; t0r += tc)
      for (int c0 = 0; c0 < H; c0 += cw) units_[PH_REDUCE][0].push_back(Unit{0, t0r, imin(T, t0r + tc), c0, imin(H, c0 + cw)});
  }
  uint64_t t1 = now_ns();
  ph_ns[0] = t1 - t0;

  // ---- phases ----
  // Tiny row-wise phases (decode) run on the runner alone: no barrier for a few microseconds.
  const size_t small = 1u << 16;
  const bool gather_serial = rows * static_cast<size_t>(L->KH) <= small;
  const bool quant_serial = rows * static_cast<size_t>(L->KI) <= small;
  const bool reduce_serial = nslots * static_cast<size_t>(L->H) <= 2 * small;
  {
    HotGuard hot(pool_.get());
    if (gather_serial)
      run_serial(PH_GATHER);
    else if (!units_[PH_GATHER][0].empty())
      run_phase(PH_GATHER, false);
    uint64_t t2 = now_ns();
    ph_ns[1] = t2 - t1;
    if (total > 0) run_phase(PH_GATEUP, true);
    uint64_t t3 = now_ns();
    ph_ns[2] = t3 - t2;
    if (quant_serial)
      run_serial(PH_QUANT);
    else if (!units_[PH_QUANT][0].empty())
      run_phase(PH_QUANT, false);
    uint64_t t4 = now_ns();
    ph_ns[3] = t4 - t3;
    if (total > 0) run_phase(PH_DOWN, true);
    uint64_t t5 = now_ns();
    ph_ns[4] = t5 - t4;
    if (reduce_serial)
      run_serial(PH_REDUCE);
    else
      run_phase(PH_REDUCE, false);
    ph_ns[5] = now_ns() - t5;
  }
  {
    std::lock_guard<std::mutex> lk(stats_mu_);
    for (int i = 0; i < 6; ++i) last_.last_phase_ns[i] = ph_ns[i];
    last_.last_T = T;
    last_.last_active_experts = static_cast<int>(active_.size());
    last_.last_amx_experts = n_amx;
    last_.last_avx512_experts = n_avx;
    last_.last_portable_experts = n_port;
  }
}

// ------------------------------------------------------------------ benchmarks

double Engine::bench_read_gbs(size_t bytes, int reps) {
  bytes = round_up(bytes < (1u << 20) ? (1u << 20) : bytes, 64 * static_cast<size_t>(nthreads_));
  double best = 0.0;
  Buffer buf;
  uint64_t ticket = submit_generic([&] {
    uint8_t* p = static_cast<uint8_t*>(buf.ensure(bytes));
    const size_t part = bytes / nthreads_;
    const bool avx = avx_bf16_ok_;
    fn_ = [&](int tid) { std::memset(p + part * tid, 1, part); };  // first touch per thread
    cur_phase_ = PH_FN;
    pool_->run(&Engine::phase_entry, this);
    std::vector<double> sink(static_cast<size_t>(nthreads_));
    fn_ = [&](int tid) {
      sink[static_cast<size_t>(tid)] += avx ? read_sum_avx512(p + part * tid, part)
                                             : read_sum_portable(p + part * tid, part);
    };
    for (int r = 0; r < (reps < 1 ? 1 : reps); ++r) {
      const uint64_t t0 = now_ns();
      pool_->run(&Engine::phase_entry, this);
      const double dt = static_cast<double>(now_ns() - t0) * 1e-9;
      const double gbs = static_cast<double>(bytes) / dt / 1e9;
      if (gbs > best) best = gbs;
    }
    fn_ = nullptr;
  });
  sync(ticket);
  return best;
}

double Engine::bench_peak(const std::string& kind, double seconds) {
  int which;
  if (kind == "avx512_bf16") {
    if (!avx_bf16_ok_) throw std::runtime_error("avx512_bf16 peak needs: " + missing_for("avx512", FMT_BF16, false));
    which = 0;
  } else if (kind == "amx_bf16" || kind == "amx_int8") {
    if (!(kind == "amx_bf16" ? amx_ok_ : amx_int8_ok_))
      throw std::runtime_error(kind + " peak needs: " +
                               missing_for("amx", kind == "amx_int8" ? FMT_INT8 : FMT_BF16, true));
    which = kind == "amx_bf16" ? 1 : 2;
  } else {
    throw std::invalid_argument("peak kind must be avx512_bf16, amx_bf16 or amx_int8");
  }
  auto loop = [which](uint64_t iters) -> uint64_t {
    return which == 0 ? peak_avx512_bf16(iters) : peak_amx(which == 2, iters);
  };
  double result = 0.0;
  uint64_t ticket = submit_generic([&] {
    // Calibrate on the runner thread, then run the same count on every thread.
    uint64_t iters = 1000;
    for (;;) {
      const uint64_t t0 = now_ns();
      loop(iters);
      const double dt = static_cast<double>(now_ns() - t0) * 1e-9;
      if (dt > 0.02 || iters > (1ull << 40)) {
        iters = static_cast<uint64_t>(static_cast<double>(iters) * (seconds / (dt > 1e-9 ? dt : 1e-9)));
        break;
      }
      iters *= 4;
    }
    if (iters < 1000) iters = 1000;
    std::vector<uint64_t> ops(static_cast<size_t>(nthreads_));
    fn_ = [&](int tid) { ops[static_cast<size_t>(tid)] = loop(iters); };
    cur_phase_ = PH_FN;
    const uint64_t t0 = now_ns();
    pool_->run(&Engine::phase_entry, this);
    const double dt = static_cast<double>(now_ns() - t0) * 1e-9;
    fn_ = nullptr;
    uint64_t total = 0;
    for (uint64_t o : ops) total += o;
    result = static_cast<double>(total) / dt;
  });
  sync(ticket);
  return result;
}

}  // namespace hmoe

// ------------------------------------------------------------------ C API for CUDA host functions

extern "C" void hmoe_slot_submit(void* slot) {
  auto* s = static_cast<hmoe::Slot*>(slot);
  try {
    s->ticket.store(s->engine->submit(s->args), std::memory_order_release);
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lk(s->err_mu);
    s->error = e.what();
  } catch (...) {
    std::lock_guard<std::mutex> lk(s->err_mu);
    s->error = "unknown error in hmoe_slot_submit";
  }
}

extern "C" void hmoe_slot_sync(void* slot) {
  auto* s = static_cast<hmoe::Slot*>(slot);
  std::string err;
  const uint64_t t = s->ticket.load(std::memory_order_acquire);
  if (t == 0) return;
  if (!s->engine->sync_noexcept(t, &err)) {
    std::lock_guard<std::mutex> lk(s->err_mu);
    s->error = err;
  }
}
