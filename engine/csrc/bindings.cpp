// pybind11 module engine._hmoe_cpu: raw pointers (Python ints) in, no PyTorch headers.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

#include "cpu_features.h"
#include "moe_layer.h"
#include "numa.h"
#include "pack.h"

namespace py = pybind11;
using hmoe::Engine;
using hmoe::EngineConfig;

namespace {

int parse_fmt(const std::string& s) {
  if (s == "bf16") return hmoe::FMT_BF16;
  if (s == "int8") return hmoe::FMT_INT8;
  if (s == "int4") return hmoe::FMT_INT4;
  throw std::invalid_argument("format must be bf16, int8 or int4, got '" + s + "'");
}

const char* isa_name(int isa) {
  return isa == hmoe::ISA_AMX ? "amx" : isa == hmoe::ISA_AVX512 ? "avx512" : "portable";
}

template <class T>
T* ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

struct SlotHolder {
  std::unique_ptr<hmoe::Slot> slot;
  ~SlotHolder() {
    if (slot && slot->ticket.load() != 0) {
      std::string ignored;
      slot->engine->sync_noexcept(slot->ticket.load(), &ignored);
    }
  }
  void raise_if_error() {
    std::string err;
    {
      std::lock_guard<std::mutex> lk(slot->err_mu);
      err.swap(slot->error);
    }
    if (!err.empty()) throw std::runtime_error(err);
  }
};

hmoe::ForwardArgs make_args(int layer, int T, int k, uintptr_t hidden, uintptr_t ids, bool ids64,
                            uintptr_t weights, uintptr_t out) {
  hmoe::ForwardArgs a;
  a.layer = layer;
  a.T = T;
  a.k = k;
  a.hidden = ptr<const uint16_t>(hidden);
  a.ids = ptr<const void>(ids);
  a.ids64 = ids64;
  a.weights = ptr<const float>(weights);
  a.out = ptr<uint16_t>(out);
  return a;
}

}  // namespace

PYBIND11_MODULE(_hmoe_cpu, m) {
  m.doc() = "hybrid-moe-ae CPU MoE kernels (AMX / AVX-512 / portable)";

  m.def("cpu_features", [] {
    py::dict d;
    for (const auto& kv : hmoe::cpu_features().items()) d[py::str(kv.first)] = kv.second;
    return d;
  });
  m.def("amx_permission_error", [] { return hmoe::cpu_features().amx_permission_error; });
  m.def("cpu_model", &hmoe::cpu_model_name);
  m.def("numa_node_count", &hmoe::numa_node_count);
  m.def("libnuma_available", &hmoe::libnuma_available);
  m.def("allowed_cpus", &hmoe::allowed_cpus);
  m.def(
      "missing_for",
      [](const std::string& method, const std::string& fmt, bool int8_w8a8) {
        return hmoe::missing_for(method, parse_fmt(fmt), int8_w8a8);
      },
      py::arg("method"), py::arg("fmt"), py::arg("int8_w8a8") = false);
  {
    py::dict b;
#if defined(__clang__)
    b["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    b["compiler"] = std::string("gcc ") + __VERSION__;
#else
    b["compiler"] = "unknown";
#endif
    b["avx512"] = hmoe::avx512_compiled();
    b["amx"] = hmoe::amx_compiled();
#if defined(HMOE_DISABLE_AVX512)
    b["avx512_disabled_by_probe"] = true;
#endif
#if defined(HMOE_DISABLE_AMX)
    b["amx_disabled_by_probe"] = true;
#endif
    m.attr("build_info") = b;
  }
  m.attr("avx512_compiled") = hmoe::avx512_compiled();
  m.def("set_prefetch_distance", &hmoe::set_prefetch_distance,
        "AVX-512 weight-stream software prefetch distance in bytes (process-wide)");
  m.def("prefetch_distance", &hmoe::prefetch_distance);
  m.attr("amx_compiled") = hmoe::amx_compiled();
  m.attr("slot_submit_addr") = reinterpret_cast<uintptr_t>(&hmoe_slot_submit);
  m.attr("slot_sync_addr") = reinterpret_cast<uintptr_t>(&hmoe_slot_sync);

  // Quantizers (bit-identical to engine/quant), for tests: rows of bf16 -> q + scales.
  m.def(
      "quantize_int8",
      [](uintptr_t src, int N, int K, uintptr_t q, uintptr_t scale) {
        for (int n = 0; n < N; ++n)
          hmoe::quantize_row_int8(ptr<const uint16_t>(src) + static_cast<size_t>(n) * K, K,
                                  ptr<int8_t>(q) + static_cast<size_t>(n) * K, ptr<float>(scale) + n);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "quantize_int4",
      [](uintptr_t src, int N, int K, int group, uintptr_t packed, uintptr_t scales) {
        if (group <= 0 || K % group || K % 2) throw std::invalid_argument("bad int4 shape");
        for (int n = 0; n < N; ++n)
          hmoe::quantize_row_int4(ptr<const uint16_t>(src) + static_cast<size_t>(n) * K, K, group,
                                  ptr<uint8_t>(packed) + static_cast<size_t>(n) * (K / 2),
                                  ptr<float>(scales) + static_cast<size_t>(n) * (K / group));
      },
      py::call_guard<py::gil_scoped_release>());

  py::class_<SlotHolder>(m, "Slot")
      .def_property_readonly("address",
                             [](SlotHolder& s) { return reinterpret_cast<uintptr_t>(s.slot.get()); })
      .def_property_readonly("ticket", [](SlotHolder& s) { return s.slot->ticket.load(); })
      .def("submit",
           [](SlotHolder& s) {
             {
               py::gil_scoped_release nogil;
               hmoe_slot_submit(s.slot.get());
             }
             s.raise_if_error();
             return s.slot->ticket.load();
           })
      .def("sync",
           [](SlotHolder& s) {
             {
               py::gil_scoped_release nogil;
               hmoe_slot_sync(s.slot.get());
             }
             s.raise_if_error();
           })
      .def("take_error", [](SlotHolder& s) -> py::object {
        std::string err;
        {
          std::lock_guard<std::mutex> lk(s.slot->err_mu);
          err.swap(s.slot->error);
        }
        if (err.empty()) return py::none();
        return py::str(err);
      });

  py::class_<Engine>(m, "Engine")
      .def(py::init([](int threads, std::vector<int> cpus, bool pin, int numa_nodes, bool dynamic,
                       const std::string& method, int amx_threshold, bool int8_w8a8, int spin_us,
                       py::dict tunables) {
             EngineConfig c;
             c.threads = threads;
             c.cpus = std::move(cpus);
             c.pin = pin;
             c.numa_nodes = numa_nodes;
             c.dynamic = dynamic;
             c.method = method;
             c.amx_threshold = amx_threshold;
             c.int8_w8a8 = int8_w8a8;
             c.spin_us = spin_us;
             for (auto item : tunables) {
               const std::string key = py::cast<std::string>(item.first);
               const int v = py::cast<int>(item.second);
               if (key == "gu_nbi_vec") c.gu_nbi_vec = v;
               else if (key == "gu_nbi_amx") c.gu_nbi_amx = v;
               else if (key == "dn_nb_vec") c.dn_nb_vec = v;
               else if (key == "dn_nb_amx") c.dn_nb_amx = v;
               else if (key == "m_chunk_vec") c.m_chunk_vec = v;
               else if (key == "m_chunk_amx") c.m_chunk_amx = v;
               else if (key == "m_chunk_amx_deq") c.m_chunk_amx_deq = v;
               else if (key == "kc_amx") c.kc_amx = v;
               else if (key == "prefetch_bytes") hmoe::set_prefetch_distance(v);  // process-wide
               else throw std::invalid_argument("unknown tunable '" + key + "'");
             }
             py::gil_scoped_release nogil;
             return std::unique_ptr<Engine>(new Engine(c));
           }),
           py::arg("threads"), py::arg("cpus") = std::vector<int>(), py::arg("pin") = false,
           py::arg("numa_nodes") = 1, py::arg("dynamic") = false, py::arg("method") = "auto",
           py::arg("amx_threshold") = 32, py::arg("int8_w8a8") = false, py::arg("spin_us") = 50,
           py::arg("tunables") = py::dict())
      .def(
          "add_layer",
          [](Engine& e, int layer, const std::string& fmt, int E, int H, int I, int group,
             const std::string& src_kind, uintptr_t gate, uintptr_t up, int64_t gu_estride,
             uintptr_t down, uintptr_t gate_scale, uintptr_t up_scale, uintptr_t down_scale) {
            hmoe::LayerSource s;
            s.fmt = parse_fmt(fmt);
            s.group = group;
            s.E = E;
            s.H = H;
            s.I = I;
            int kind;
            if (src_kind == "bf16") kind = hmoe::SRC_BF16;
            else if (src_kind == "q8") kind = hmoe::SRC_Q8;
            else if (src_kind == "q4") kind = hmoe::SRC_Q4;
            else throw std::invalid_argument("source kind must be bf16, q8 or q4");
            auto fill = [&](hmoe::RowSource& r, uintptr_t d, uintptr_t sc, int64_t estride, int rows,
                            int K) {
              r.kind = kind;
              r.data = ptr<const void>(d);
              r.scale = ptr<const float>(sc);
              r.estride = estride;
              r.rows = rows;
              r.K = K;
              r.group = group;
            };
            fill(s.gate, gate, gate_scale, gu_estride, I, H);
            fill(s.up, up, up_scale, gu_estride, I, H);
            fill(s.down, down, down_scale, H, H, I);
            py::gil_scoped_release nogil;
            e.add_layer(layer, s);
          },
          py::arg("layer"), py::arg("fmt"), py::arg("E"), py::arg("H"), py::arg("I"),
          py::arg("group"), py::arg("src_kind"), py::arg("gate"), py::arg("up"),
          py::arg("gu_estride"), py::arg("down"), py::arg("gate_scale") = 0,
          py::arg("up_scale") = 0, py::arg("down_scale") = 0)
      .def("remove_layer", &Engine::remove_layer, py::call_guard<py::gil_scoped_release>())
      .def("layer_experts", &Engine::layer_experts)
      .def("packed_bytes", &Engine::packed_bytes, py::arg("layer") = -1)
      .def(
          "forward",
          [](Engine& e, int layer, int T, int k, uintptr_t hidden, uintptr_t ids, bool ids64,
             uintptr_t weights, uintptr_t out) {
            e.forward(make_args(layer, T, k, hidden, ids, ids64, weights, out));
          },
          py::call_guard<py::gil_scoped_release>())
      .def(
          "submit",
          [](Engine& e, int layer, int T, int k, uintptr_t hidden, uintptr_t ids, bool ids64,
             uintptr_t weights, uintptr_t out) {
            return e.submit(make_args(layer, T, k, hidden, ids, ids64, weights, out));
          },
          py::call_guard<py::gil_scoped_release>())
      .def("sync", &Engine::sync, py::arg("ticket") = 0, py::call_guard<py::gil_scoped_release>())
      .def(
          "make_slot",
          [](Engine& e, int layer, int k, uintptr_t hidden, uintptr_t ids, bool ids64,
             uintptr_t weights, uintptr_t out, uintptr_t tokens_ptr, int max_tokens) {
            if (!tokens_ptr) throw std::invalid_argument("the slot needs a token-count pointer");
            auto* h = new SlotHolder();
            h->slot.reset(new hmoe::Slot());
            h->slot->engine = &e;
            h->slot->args = make_args(layer, 0, k, hidden, ids, ids64, weights, out);
            h->slot->args.T_ptr = ptr<const int32_t>(tokens_ptr);
            h->slot->args.max_T = max_tokens;
            return h;
          },
          py::return_value_policy::take_ownership, py::keep_alive<0, 1>())
      .def("stats",
           [](Engine& e) {
             hmoe::EngineStats s = e.stats();
             py::dict d;
             d["tasks"] = s.tasks;
             d["forwards"] = s.forwards;
             d["busy_ns"] = s.busy_ns;
             d["wall_ns"] = s.wall_ns;
             d["threads"] = e.threads();
             py::dict ph;
             const char* names[6] = {"route", "gather", "gate_up", "act_quant", "down", "reduce"};
             for (int i = 0; i < 6; ++i) ph[names[i]] = s.last_phase_ns[i];
             d["last_phase_ns"] = ph;
             d["last_tokens"] = s.last_T;
             d["last_active_experts"] = s.last_active_experts;
             d["last_amx_experts"] = s.last_amx_experts;
             d["last_avx512_experts"] = s.last_avx512_experts;
             d["last_portable_experts"] = s.last_portable_experts;
             return d;
           })
      .def("reset_stats", &Engine::reset_stats)
      .def("set_policy", &Engine::set_policy, py::arg("method"), py::arg("dynamic"),
           py::arg("amx_threshold"), py::arg("int8_w8a8"), py::call_guard<py::gil_scoped_release>())
      .def("info",
           [](Engine& e) {
             const EngineConfig& c = e.config();
             py::dict d;
             d["threads"] = e.threads();
             d["numa_shards"] = e.shards();
             d["numa_simulated"] = e.numa_simulated();
             d["numa_node_bound_memory"] = e.numa_bound();
             d["pinned"] = e.pinned();
             d["thread_cpus"] = e.thread_cpus();
             d["scheduler"] = e.dynamic() ? "dynamic" : "static";
             d["method"] = c.method;
             d["amx_threshold"] = c.amx_threshold;
             d["int8_w8a8"] = c.int8_w8a8;
             d["spin_us"] = c.spin_us;
             py::dict t;
             t["gu_nbi_vec"] = c.gu_nbi_vec;
             t["gu_nbi_amx"] = c.gu_nbi_amx;
             t["dn_nb_vec"] = c.dn_nb_vec;
             t["dn_nb_amx"] = c.dn_nb_amx;
             t["m_chunk_vec"] = c.m_chunk_vec;
             t["m_chunk_amx"] = c.m_chunk_amx;
             t["m_chunk_amx_deq"] = c.m_chunk_amx_deq;
             t["kc_amx"] = c.kc_amx;
             t["prefetch_bytes"] = hmoe::prefetch_distance();
             d["tunables"] = t;
             return d;
           })
      .def("isa_for",
           [](Engine& e, const std::string& fmt, int n) { return std::string(isa_name(e.isa_for(parse_fmt(fmt), n))); })
      .def("bench_read_gbs", &Engine::bench_read_gbs, py::arg("nbytes"), py::arg("reps") = 5,
           py::call_guard<py::gil_scoped_release>())
      .def("bench_peak", &Engine::bench_peak, py::arg("kind"), py::arg("seconds") = 0.5,
           py::call_guard<py::gil_scoped_release>());
}
