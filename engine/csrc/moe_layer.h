// The MoE engine: packed layers, a persistent thread pool, a FIFO task queue with tickets,
// routing (counting sort of the T*k slots), the fused gate/up + silu*up + down computation
// with static or dynamic scheduling, NUMA shards (tensor parallel over the intermediate dim),
// and the "task slot" C API for CUDA host functions.
//
// One forward = phases separated by pool barriers:
//   route (runner thread) -> gather/quantize activations per expert -> gate/up + silu*up
//   (units: expert x token chunk x intermediate blocks, per NUMA shard) -> quantize the
//   intermediate rows (int paths) -> down (units: expert x token chunk x output blocks, per
//   shard; each writes w[t,j] * y into its own rows of an fp32 slot buffer) -> reduce (units:
//   token x column ranges; sums the k slots and the shards, writes bf16 out).
// Every unit owns the output rows/columns it writes, so no atomics touch the outputs.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common.h"
#include "kernels.h"
#include "numa.h"
#include "pack.h"
#include "task_queue.h"
#include "thread_pool.h"

namespace hmoe {

struct EngineConfig {
  int threads = 1;
  std::vector<int> cpus;  // CPUs to use (empty: sched_getaffinity)
  bool pin = false;
  int numa_nodes = 1;
  bool dynamic = false;
  std::string method = "auto";  // auto | amx | avx512 | portable
  int amx_threshold = 32;       // auto: AMX for experts with >= this many tokens
  bool int8_w8a8 = false;       // AMX int8: int8 activations (tdpbssd) instead of bf16 dequant
  int spin_us = 50;
  // Work decomposition (tunable; 0 keeps the default).
  int gu_nbi_vec = 1;   // intermediate 16-row blocks per gate/up unit (AVX-512/portable experts)
  int gu_nbi_amx = 4;   // ... AMX experts
  int dn_nb_vec = 2;    // output 16-row blocks per down unit (AVX-512/portable experts)
  int dn_nb_amx = 8;    // ... AMX experts
  int m_chunk_vec = 64;   // token rows per unit (AVX-512/portable experts)
  int m_chunk_amx = 256;  // ... AMX experts (multiple of 32)
  int m_chunk_amx_deq = 1024;  // ... AMX experts whose weights are dequantized per K chunk
                               // (int4, int8 w8a16): the dequantization is shared by more rows
  int kc_amx = 1024;      // AMX K chunk
};

struct LayerSource {
  int fmt = FMT_BF16;
  int group = 32;
  int E = 0, H = 0, I = 0;
  RowSource gate, up, down;  // gate/up: [I, H] per expert; down: [H, I] per expert
};

struct EngineStats {
  uint64_t tasks = 0, forwards = 0;
  uint64_t busy_ns = 0;  // sum over pool threads of time spent working in parallel phases
  uint64_t wall_ns = 0;  // sum over tasks (forwards, packing) of their wall time on the runner
  uint64_t last_phase_ns[6] = {};  // route, gather, gate_up, act_quant, down, reduce
  int last_T = 0, last_active_experts = 0, last_amx_experts = 0, last_avx512_experts = 0,
      last_portable_experts = 0;
};

struct Shard {
  int ib0 = 0, ib1 = 0;   // intermediate 16-row blocks [ib0, ib1)
  int KIn = 0;            // (ib1 - ib0) * 16: the down projection's K in this shard
  int nblk_gu = 0;        // packed gate/up blocks per expert (gate, up interleaved)
  int nblk_dn = 0;        // packed down blocks per expert (NH / 16)
  size_t bb_gu = 0, bb_dn = 0;  // bytes per block
  uint8_t* gu = nullptr;
  uint8_t* dn = nullptr;
  NodeMemory mem;
};

struct Layer {
  int fmt = FMT_BF16, group = 0, E = 0, H = 0, I = 0;
  int KH = 0, KI = 0, NH = 0;  // padded: K of gate/up, intermediate (K of down), down rows
  std::vector<Shard> shards;
  size_t bytes = 0;
  ~Layer() {
    for (auto& s : shards) node_free(s.mem);
  }
};

class Engine {
 public:
  explicit Engine(const EngineConfig& cfg);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  void add_layer(int id, const LayerSource& src);  // repacks on the pool; blocks
  void remove_layer(int id);
  int layer_experts(int id) const;     // -1 when absent
  size_t packed_bytes(int id) const;   // id < 0: all layers

  uint64_t submit(const ForwardArgs& a);        // returns a ticket at once
  void sync(uint64_t ticket);                   // 0 = all; throws std::runtime_error on error
  bool sync_noexcept(uint64_t ticket, std::string* err);
  void forward(const ForwardArgs& a) { sync(submit(a)); }
  uint64_t submit_generic(std::function<void()> fn);

  // Change method / scheduler / AMX threshold / int8 activation mode between calls (the packed
  // layout is shared by all methods). Runs as a task, so it applies after earlier submissions.
  void set_policy(const std::string& method, bool dynamic, int amx_threshold, bool int8_w8a8);

  EngineStats stats() const;
  void reset_stats();

  int threads() const { return nthreads_; }
  int shards() const { return nshards_; }
  bool numa_simulated() const { return numa_simulated_; }
  bool numa_bound() const { return numa_bound_; }
  bool pinned() const { return pinned_; }
  bool dynamic() const { return cfg_.dynamic; }
  const EngineConfig& config() const { return cfg_; }
  const std::vector<int>& thread_cpus() const { return thread_cpus_; }
  // ISA an expert with n tokens runs on for a layer of format fmt (Isa enum).
  int isa_for(int fmt, int n) const;
  // "" when the configured method can run format fmt, else what is missing.
  std::string method_missing(int fmt) const;

  // Micro-benchmarks on the engine's threads (synchronous).
  double bench_read_gbs(size_t bytes, int reps);
  double bench_peak(const std::string& kind, double seconds);  // flops (or int ops) per second

 private:
  struct Unit {
    int e, a0, a1, b0, b1;
  };
  enum Phase { PH_GATHER = 0, PH_GATEUP, PH_QUANT, PH_DOWN, PH_REDUCE, PH_PACK, PH_FN, PH_COUNT };
  struct TScratch {
    Buffer C, deq, tmp;
    std::vector<const float*> ptrs;
  };
  struct alignas(64) Counter {
    std::atomic<int> v{0};
  };

  void runner_loop();
  void execute(Task& t);
  void execute_forward(const ForwardArgs& a);
  void run_phase(Phase ph, bool grouped);
  void run_serial(Phase ph);  // all units of a global phase on the calling (runner) thread
  static void phase_entry(void* self, int tid);
  void phase_thread(int tid);
  void do_unit(Phase ph, int g, const Unit& u, int tid);
  void unit_gather(const Unit& u);
  void unit_gateup(int g, const Unit& u, int tid);
  void unit_quant(const Unit& u);
  void unit_down(int g, const Unit& u, int tid);
  void unit_reduce(const Unit& u, int tid);
  void unit_pack(int g, const Unit& u, int tid);
  void gemm(int isa, int fmt, bool w8a8, GemmArgs& ga, int tid);
  static int parse_method(const std::string& m);
  const Elementwise& ew_for(int isa) const;
  Layer* find_layer(int id) const;

  EngineConfig cfg_;
  int nthreads_ = 1, nshards_ = 1;
  bool numa_simulated_ = false, numa_bound_ = false, pinned_ = false;
  std::vector<int> thread_cpus_;
  std::vector<int> group_of_, rank_of_, group_start_;
  int method_ = -1;  // -1 auto, else Isa
  bool method_ok_[3] = {true, true, true};  // per format: the method can run it here
  void refresh_method_ok();
  bool avx_bf16_ok_ = false, avx_int_ok_ = false, amx_ok_ = false, amx_int8_ok_ = false;

  std::unique_ptr<ThreadPool> pool_;
  TaskQueue queue_;
  std::thread runner_;

  mutable std::mutex layers_mu_;
  std::map<int, std::unique_ptr<Layer>> layers_;

  // ---- per-forward state (runner thread + phases) ----
  Layer* L_ = nullptr;
  const ForwardArgs* args_ = nullptr;
  int T_ = 0, k_ = 0, total_rows_ = 0;
  std::vector<int> counts_, row_off_, npad_, isa_, xfmt_, afmt_, cursor_, order_, active_;
  std::vector<int32_t> slot_row_, row_token_;
  std::vector<float> row_w_;
  Buffer Xg_, Xs_, ActB_, ActF_, As_, Yd_;
  std::vector<Unit> units_[PH_COUNT][64];
  Counter next_[64];
  Phase cur_phase_ = PH_GATHER;
  bool cur_grouped_ = false;
  std::vector<std::unique_ptr<TScratch>> tscratch_;
  // pack task state
  const LayerSource* pack_src_ = nullptr;
  Layer* pack_layer_ = nullptr;
  // generic parallel function (benchmarks)
  std::function<void(int)> fn_;

  // ---- stats ----
  std::atomic<uint64_t> st_tasks_{0}, st_forwards_{0}, st_wall_ns_{0};
  mutable std::mutex stats_mu_;
  EngineStats last_;
  uint64_t busy_base_ = 0;
};

// Arguments of one call fixed in advance, for CUDA host functions (cudaLaunchHostFunc):
// hmoe_slot_submit(slot) enqueues a forward whose token count is read from *T_ptr when the
// task starts; hmoe_slot_sync(slot) waits for that slot's latest submission.
struct Slot {
  Engine* engine = nullptr;
  ForwardArgs args;
  std::atomic<uint64_t> ticket{0};
  std::mutex err_mu;
  std::string error;  // last error (submit or task), cleared when read
};

}  // namespace hmoe

extern "C" {
void hmoe_slot_submit(void* slot);
void hmoe_slot_sync(void* slot);
}
