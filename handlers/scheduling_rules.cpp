#include "handlers/scheduling_rules.h"

#include <algorithm>
#include <cstdio>

namespace unidesk::handlers {

namespace {

std::string Cores(std::int64_t millis) {
  char buf[32];
  if (millis % 1000 == 0) {
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(millis / 1000));
  } else {
    std::snprintf(buf, sizeof buf, "%.3g", static_cast<double>(millis) / 1000.0);
  }
  return std::string(buf) + (millis == 1000 ? " CPU core" : " CPU cores");
}

std::string Memory(std::int64_t bytes) { return std::to_string(bytes >> 20) + " MiB of memory"; }

std::string Gpus(int n) { return std::to_string(n) + (n == 1 ? " GPU" : " GPUs"); }

bool LabelsFit(const SchedTask& t, const SchedNode& n) {
  for (const auto& [k, v] : t.labels) {
    auto it = n.labels.find(k);
    if (it == n.labels.end() || it->second != v) return false;
  }
  return true;
}

int FreeGpus(const SchedNode& n) {
  return static_cast<int>(n.gpu_indices.size()) - static_cast<int>(n.used_gpu_indices.size());
}
std::int64_t FreeCpu(const SchedNode& n) { return n.cpu_millis - n.used_cpu_millis; }
std::int64_t FreeMemory(const SchedNode& n) { return n.memory_bytes - n.used_memory_bytes; }

bool FitsNow(const SchedTask& t, const SchedNode& n) {
  return FreeCpu(n) >= t.cpu_millis && FreeMemory(n) >= t.memory_bytes && FreeGpus(n) >= t.gpus &&
         (t.gpus == 0 || n.gpus_ok);
}

/// Why `t` fits no node, from the first filter that leaves none.
std::string WhyWaiting(const SchedTask& t, const std::vector<SchedNode>& nodes) {
  std::vector<const SchedNode*> set;
  for (const auto& n : nodes) {
    if (n.status == "online") set.push_back(&n);
  }
  if (set.empty()) return "no node is online";
  std::string who = "no online node";
  if (!t.labels.empty()) {
    std::string labels;
    for (const auto& [k, v] : t.labels) labels += (labels.empty() ? "" : ", ") + k + "=" + v;
    set.erase(std::remove_if(set.begin(), set.end(),
                             [&](const SchedNode* n) { return !LabelsFit(t, *n); }),
              set.end());
    if (set.empty()) return who + " has the labels " + labels;
    who += " with labels " + labels;
  }
  set.erase(
      std::remove_if(set.begin(), set.end(), [](const SchedNode* n) { return !n->docker_ok; }),
      set.end());
  if (set.empty()) return who + " has a healthy Docker engine";
  auto any = [&](auto pred) { return std::any_of(set.begin(), set.end(), pred); };
  // GPUs that fail their health check take no GPU work.
  if (t.gpus > 0) {
    auto enough = [&](const SchedNode* n) {
      return static_cast<int>(n->gpu_indices.size()) >= t.gpus;
    };
    bool some = any(enough);
    set.erase(
        std::remove_if(set.begin(), set.end(), [](const SchedNode* n) { return !n->gpus_ok; }),
        set.end());
    if (some && !any(enough)) {
      return who + " has " + Gpus(t.gpus) + (t.gpus == 1 ? " that passes" : " that pass") +
             " the health check";
    }
  }
  // Big enough at all?
  if (!any([&](const SchedNode* n) { return static_cast<int>(n->gpu_indices.size()) >= t.gpus; })) {
    return who + " has " + Gpus(t.gpus);
  }
  if (!any([&](const SchedNode* n) { return n->cpu_millis >= t.cpu_millis; })) {
    return who + " has " + Cores(t.cpu_millis);
  }
  if (!any([&](const SchedNode* n) { return n->memory_bytes >= t.memory_bytes; })) {
    return who + " has " + Memory(t.memory_bytes);
  }
  if (!any([&](const SchedNode* n) {
        return static_cast<int>(n->gpu_indices.size()) >= t.gpus && n->cpu_millis >= t.cpu_millis &&
               n->memory_bytes >= t.memory_bytes;
      })) {
    return who + " has " + Cores(t.cpu_millis) + ", " + Memory(t.memory_bytes) + " and " +
           Gpus(t.gpus) + " together";
  }
  // Big enough, but busy.
  if (t.gpus > 0 && !any([&](const SchedNode* n) { return FreeGpus(*n) >= t.gpus; })) {
    return who + " has " + std::to_string(t.gpus) + " free " + (t.gpus == 1 ? "GPU" : "GPUs");
  }
  if (!any([&](const SchedNode* n) { return FreeCpu(*n) >= t.cpu_millis; })) {
    return who + " has " + Cores(t.cpu_millis) + " free";
  }
  if (!any([&](const SchedNode* n) { return FreeMemory(*n) >= t.memory_bytes; })) {
    return who + " has " + Memory(t.memory_bytes) + " free";
  }
  return who + " has " + Cores(t.cpu_millis) + ", " + Memory(t.memory_bytes) + " and " +
         Gpus(t.gpus) + " free together";
}

}  // namespace

SchedulePlan Schedule(std::vector<SchedTask> queue, std::vector<SchedNode> nodes) {
  std::sort(queue.begin(), queue.end(), [](const SchedTask& a, const SchedTask& b) {
    if (a.priority != b.priority) return a.priority > b.priority;
    return a.submitted_position < b.submitted_position;
  });
  for (auto& n : nodes) {
    std::sort(n.gpu_indices.begin(), n.gpu_indices.end());
    std::sort(n.used_gpu_indices.begin(), n.used_gpu_indices.end());
  }
  SchedulePlan plan;
  for (const SchedTask& t : queue) {
    SchedNode* best = nullptr;
    for (auto& n : nodes) {
      if (n.status != "online" || !n.docker_ok || !LabelsFit(t, n) || !FitsNow(t, n)) continue;
      if (!best) {
        best = &n;
        continue;
      }
      // Spare GPU nodes for GPU work, then spread by free CPU, then by name.
      auto key = [&](const SchedNode& x) {
        return std::make_tuple(t.gpus == 0 ? FreeGpus(x) : 0, -FreeCpu(x), x.name);
      };
      if (key(n) < key(*best)) best = &n;
    }
    if (!best) {
      plan.waiting.push_back({t.id, WhyWaiting(t, nodes)});
      continue;
    }
    Placement p{t.id, best->name, {}};
    for (int g : best->gpu_indices) {
      if (static_cast<int>(p.gpu_indices.size()) == t.gpus) break;
      if (!std::binary_search(best->used_gpu_indices.begin(), best->used_gpu_indices.end(), g)) {
        p.gpu_indices.push_back(g);
      }
    }
    best->used_cpu_millis += t.cpu_millis;
    best->used_memory_bytes += t.memory_bytes;
    best->used_gpu_indices.insert(best->used_gpu_indices.end(), p.gpu_indices.begin(),
                                  p.gpu_indices.end());
    std::sort(best->used_gpu_indices.begin(), best->used_gpu_indices.end());
    plan.placements.push_back(std::move(p));
  }
  return plan;
}

}  // namespace unidesk::handlers
