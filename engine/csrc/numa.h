// NUMA helpers: libnuma loaded with dlopen when present (never a build/link dependency),
// node CPU lists from sysfs, node-local allocation (or plain allocation + first touch).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace hmoe {

// Number of NUMA nodes the OS reports (>= 1).
int numa_node_count();
// CPUs of node `node` (from /sys/devices/system/node/nodeN/cpulist); empty if unknown.
std::vector<int> numa_node_cpus(int node);
// True when libnuma could be loaded and reports NUMA available.
bool libnuma_available();

// Memory for one NUMA shard: numa_alloc_onnode when `on_node` and libnuma is usable, else a
// 2 MiB-aligned allocation (huge pages advised) that the caller first-touches from the node's
// threads. `node_bound` tells which one happened.
struct NodeMemory {
  void* ptr = nullptr;
  size_t bytes = 0;
  bool node_bound = false;
};
NodeMemory node_alloc(size_t bytes, int node, bool on_node);
void node_free(NodeMemory& m);

// The CPUs this process may run on (sched_getaffinity); [0, hw threads) if unknown.
std::vector<int> allowed_cpus();

}  // namespace hmoe
