#include "numa.h"

#include <cstdlib>
#include <fstream>
#include <mutex>
#include <new>
#include <sstream>
#include <string>
#include <thread>

#include "common.h"

#if defined(__linux__)
#include <dlfcn.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace hmoe {

void* aligned_alloc_bytes(size_t bytes, size_t align) {
  if (bytes == 0) bytes = align;
  void* p = nullptr;
  if (posix_memalign(&p, align < sizeof(void*) ? sizeof(void*) : align, bytes) != 0 || !p)
    throw std::bad_alloc();
  return p;
}

void aligned_free(void* p) { std::free(p); }

void advise_huge(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  // Only whole 2 MiB pages inside the range.
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uintptr_t b = round_up(a, 2u << 20);
  uintptr_t e = (a + bytes) & ~static_cast<uintptr_t>((2u << 20) - 1);
  if (e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

namespace {

struct LibNuma {
  void* handle = nullptr;
  int (*available)() = nullptr;
  int (*max_node)() = nullptr;
  void* (*alloc_onnode)(size_t, int) = nullptr;
  void (*free_)(void*, size_t) = nullptr;
  bool ok = false;
};

const LibNuma& libnuma() {
  static std::once_flag once;
  static LibNuma L;
  std::call_once(once, [] {
#if defined(__linux__)
    L.handle = dlopen("libnuma.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!L.handle) return;
    L.available = reinterpret_cast<int (*)()>(dlsym(L.handle, "numa_available"));
    L.max_node = reinterpret_cast<int (*)()>(dlsym(L.handle, "numa_max_node"));
    L.alloc_onnode = reinterpret_cast<void* (*)(size_t, int)>(dlsym(L.handle, "numa_alloc_onnode"));
    L.free_ = reinterpret_cast<void (*)(void*, size_t)>(dlsym(L.handle, "numa_free"));
    L.ok = L.available && L.max_node && L.alloc_onnode && L.free_ && L.available() >= 0;
#endif
  });
  return L;
}

std::vector<int> parse_cpulist(const std::string& s) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, ',')) {
    if (part.empty()) continue;
    auto dash = part.find('-');
    try {
      if (dash == std::string::npos) {
        out.push_back(std::stoi(part));
      } else {
        int a = std::stoi(part.substr(0, dash)), b = std::stoi(part.substr(dash + 1));
        for (int i = a; i <= b; ++i) out.push_back(i);
      }
    } catch (...) {
    }
  }
  return out;
}

}  // namespace

bool libnuma_available() { return libnuma().ok; }

int numa_node_count() {
  int n = 0;
  for (int i = 0; i < 1024; ++i) {
    std::ifstream f("/sys/devices/system/node/node" + std::to_string(i) + "/cpulist");
    if (!f) break;
    ++n;
  }
  return n > 0 ? n : 1;
}

std::vector<int> numa_node_cpus(int node) {
  std::ifstream f("/sys/devices/system/node/node" + std::to_string(node) + "/cpulist");
  if (!f) return {};
  std::string s;
  std::getline(f, s);
  return parse_cpulist(s);
}

std::vector<int> allowed_cpus() {
  std::vector<int> cpus;
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int i = 0; i < CPU_SETSIZE; ++i)
      if (CPU_ISSET(i, &set)) cpus.push_back(i);
  }
#endif
  if (cpus.empty()) {
    unsigned n = std::thread::hardware_concurrency();
    for (unsigned i = 0; i < (n ? n : 1); ++i) cpus.push_back(static_cast<int>(i));
  }
  return cpus;
}

NodeMemory node_alloc(size_t bytes, int node, bool on_node) {
  NodeMemory m;
  m.bytes = bytes ? bytes : 64;
  const LibNuma& L = libnuma();
  if (on_node && L.ok) {
    m.ptr = L.alloc_onnode(m.bytes, node);
    if (m.ptr) {
      m.node_bound = true;
      advise_huge(m.ptr, m.bytes);
      return m;
    }
  }
  m.ptr = aligned_alloc_bytes(round_up(m.bytes, 64), 2u << 20);
  advise_huge(m.ptr, m.bytes);
  return m;
}

void node_free(NodeMemory& m) {
  if (!m.ptr) return;
  if (m.node_bound)
    libnuma().free_(m.ptr, m.bytes);
  else
    aligned_free(m.ptr);
  m.ptr = nullptr;
  m.bytes = 0;
}

}  // namespace hmoe
