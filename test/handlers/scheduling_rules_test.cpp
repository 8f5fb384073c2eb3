// The scheduler's pure decision: fit, order, spreading, reasons, and never over-committing.

#include "handlers/scheduling_rules.h"

#include <doctest/doctest.h>

#include <random>
#include <set>

using namespace unidesk::handlers;

namespace {

SchedNode Node(std::string name, std::int64_t cores, std::int64_t mem_gib, int gpus = 0,
               std::map<std::string, std::string> labels = {}) {
  SchedNode n;
  n.name = std::move(name);
  n.status = "online";
  n.docker_ok = true;
  n.cpu_millis = cores * 1000;
  n.memory_bytes = mem_gib << 30;
  for (int i = 0; i < gpus; ++i) n.gpu_indices.push_back(i);
  n.labels = std::move(labels);
  return n;
}

SchedTask Task(std::string id, std::int64_t cpu_millis, std::int64_t mem_mib, int gpus = 0,
               int priority = 0, std::int64_t position = 0,
               std::map<std::string, std::string> labels = {}) {
  SchedTask t;
  t.id = std::move(id);
  t.cpu_millis = cpu_millis;
  t.memory_bytes = mem_mib << 20;
  t.gpus = gpus;
  t.priority = priority;
  t.submitted_position = position;
  t.labels = std::move(labels);
  return t;
}

std::map<std::string, std::string> Placed(const SchedulePlan& p) {
  std::map<std::string, std::string> out;
  for (const auto& x : p.placements) out[x.task_id] = x.node;
  return out;
}

std::string Reason(const SchedulePlan& p, const std::string& task) {
  for (const auto& w : p.waiting) {
    if (w.task_id == task) return w.reason;
  }
  return "(placed)";
}

}  // namespace

TEST_CASE("why a task waits: the first filter that leaves no node, in words") {
  struct Case {
    const char* what;
    std::vector<SchedNode> nodes;
    SchedTask task;
    std::string reason;
  };
  SchedNode offline = Node("a", 8, 32);
  offline.status = "offline";
  SchedNode suspect = Node("a", 8, 32);
  suspect.status = "suspect";
  SchedNode no_docker = Node("a", 8, 32);
  no_docker.docker_ok = false;
  SchedNode busy_gpus = Node("g", 16, 64, 2);
  busy_gpus.used_gpu_indices = {0};
  SchedNode sick_gpus = Node("s", 16, 64, 4);
  sick_gpus.gpus_ok = false;
  SchedNode busy_cpu = Node("c", 4, 64);
  busy_cpu.used_cpu_millis = 3500;
  SchedNode busy_mem = Node("m", 4, 2);
  busy_mem.used_memory_bytes = 1LL << 30;
  std::vector<Case> cases = {
      {"no nodes", {}, Task("t", 1000, 512), "no node is online"},
      {"offline", {offline}, Task("t", 1000, 512), "no node is online"},
      {"suspect takes no new tasks", {suspect}, Task("t", 1000, 512), "no node is online"},
      {"labels",
       {Node("a", 8, 32, 0, {{"zone", "b"}})},
       Task("t", 1000, 512, 0, 0, 0, {{"zone", "a"}}),
       "no online node has the labels zone=a"},
      {"docker", {no_docker}, Task("t", 1000, 512), "no online node has a healthy Docker engine"},
      {"labels then docker",
       {Node("b", 8, 32),
        [] {
          SchedNode n = Node("a", 8, 32, 0, {{"gpu", "a100"}});
          n.docker_ok = false;
          return n;
        }()},
       Task("t", 1000, 512, 0, 0, 0, {{"gpu", "a100"}}),
       "no online node with labels gpu=a100 has a healthy Docker engine"},
      {"too few GPUs anywhere",
       {Node("a", 8, 32, 1)},
       Task("t", 1000, 512, 2),
       "no online node has 2 GPUs"},
      {"too little CPU anywhere",
       {Node("a", 2, 32)},
       Task("t", 2500, 512),
       "no online node has 2.5 CPU cores"},
      {"too little memory anywhere",
       {Node("a", 8, 1)},
       Task("t", 1000, 2048),
       "no online node has 2048 MiB of memory"},
      {"big enough only separately",
       {Node("a", 16, 1), Node("b", 1, 64)},
       Task("t", 8000, 8192),
       "no online node has 8 CPU cores, 8192 MiB of memory and 0 GPUs together"},
      {"GPUs busy", {busy_gpus}, Task("t", 1000, 512, 2), "no online node has 2 free GPUs"},
      {"GPUs failing their health check",
       {sick_gpus, Node("small", 8, 32, 1)},
       Task("t", 1000, 512, 2),
       "no online node has 2 GPUs that pass the health check"},
      {"a healthy node big enough but busy",
       {sick_gpus, busy_gpus},
       Task("t", 1000, 512, 2),
       "no online node has 2 free GPUs"},
      {"CPU busy", {busy_cpu}, Task("t", 1000, 512), "no online node has 1 CPU core free"},
      {"memory busy",
       {busy_mem},
       Task("t", 1000, 1536),
       "no online node has 1536 MiB of memory free"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.what);
    SchedulePlan p = Schedule({c.task}, c.nodes);
    CHECK(p.placements.empty());
    CHECK(Reason(p, "t") == c.reason);
  }
}

TEST_CASE("higher priority first, FIFO within a priority, smaller tasks backfill") {
  std::vector<SchedNode> nodes = {Node("a", 2, 8)};
  // Two 1-core slots. Order of submission: low(0), big(1, 4 cores), high(2), mid1(3), mid2(4).
  std::vector<SchedTask> queue = {
      Task("low", 1000, 512, 0, 0, 0),  Task("big", 4000, 512, 0, 9, 1),
      Task("high", 1000, 512, 0, 5, 2), Task("mid1", 1000, 512, 0, 1, 3),
      Task("mid2", 1000, 512, 0, 1, 4),
  };
  SchedulePlan p = Schedule(queue, nodes);
  auto placed = Placed(p);
  CHECK(placed.size() == 2);
  CHECK(placed.count("high"));
  CHECK(placed.count("mid1"));                                  // FIFO: mid1 before mid2
  CHECK(Reason(p, "big") == "no online node has 4 CPU cores");  // never fits; does not block
  CHECK(Reason(p, "mid2") == "no online node has 1 CPU core free");
  CHECK(Reason(p, "low") == "no online node has 1 CPU core free");
  REQUIRE(p.placements.size() == 2);
  CHECK(p.placements[0].task_id == "high");
}

TEST_CASE("placement: labels, GPU indices, GPU nodes spared, spread by free CPU") {
  SchedNode gpu = Node("gpu", 32, 128, 4, {{"gpu", "a100"}});
  gpu.used_gpu_indices = {1};
  SchedNode cpu1 = Node("cpu1", 8, 32);
  SchedNode cpu2 = Node("cpu2", 16, 32);
  SchedulePlan p = Schedule({Task("train", 4000, 4096, 2, 0, 0, {{"gpu", "a100"}}),
                             Task("etl", 1000, 512, 0, 0, 1), Task("etl2", 1000, 512, 0, 0, 2)},
                            {gpu, cpu1, cpu2});
  auto placed = Placed(p);
  CHECK(placed["train"] == "gpu");
  CHECK(placed["etl"] == "cpu2");   // the most free CPU among nodes without free GPUs
  CHECK(placed["etl2"] == "cpu2");  // 15 free cores still beat 8
  for (const auto& x : p.placements) {
    if (x.task_id == "train") CHECK(x.gpu_indices == std::vector<int>{0, 2});  // 1 is in use
  }
}

TEST_CASE("random fleets and queues: nothing over-committed, nothing placed twice") {
  std::mt19937 rng(7);
  for (int round = 0; round < 200; ++round) {
    std::vector<SchedNode> nodes;
    int n_nodes = 1 + static_cast<int>(rng() % 6);
    for (int i = 0; i < n_nodes; ++i) {
      SchedNode n = Node("n" + std::to_string(i), 1 + rng() % 16, 1 + rng() % 64,
                         static_cast<int>(rng() % 5), {{"zone", rng() % 2 ? "a" : "b"}});
      n.docker_ok = rng() % 8 != 0;
      n.gpus_ok = rng() % 4 != 0;
      n.status = rng() % 6 ? "online" : "offline";
      nodes.push_back(n);
    }
    std::vector<SchedTask> queue;
    int n_tasks = static_cast<int>(rng() % 60);
    for (int i = 0; i < n_tasks; ++i) {
      std::map<std::string, std::string> labels;
      if (rng() % 4 == 0) labels["zone"] = "a";
      queue.push_back(Task("t" + std::to_string(i), 250 * (1 + rng() % 16), 256 * (1 + rng() % 32),
                           static_cast<int>(rng() % 3), static_cast<int>(rng() % 3), i, labels));
    }
    SchedulePlan p = Schedule(queue, nodes);
    CHECK(p.placements.size() + p.waiting.size() == queue.size());
    std::set<std::string> seen;
    std::map<std::string, SchedNode> by_name;
    for (const auto& n : nodes) by_name[n.name] = n;
    std::map<std::string, SchedTask> tasks;
    for (const auto& t : queue) tasks[t.id] = t;
    std::map<std::string, std::int64_t> cpu, mem;
    std::map<std::string, std::set<int>> gpus;
    for (const auto& x : p.placements) {
      CHECK(seen.insert(x.task_id).second);
      const SchedNode& n = by_name[x.node];
      const SchedTask& t = tasks[x.task_id];
      CHECK(n.status == "online");
      CHECK(n.docker_ok);
      if (t.gpus > 0) CHECK(n.gpus_ok);
      for (const auto& [k, v] : t.labels) CHECK(n.labels.at(k) == v);
      cpu[x.node] += t.cpu_millis;
      mem[x.node] += t.memory_bytes;
      CHECK(static_cast<int>(x.gpu_indices.size()) == t.gpus);
      for (int g : x.gpu_indices) CHECK(gpus[x.node].insert(g).second);  // no GPU shared
    }
    for (const auto& [name, used] : cpu) CHECK(used <= by_name[name].cpu_millis);
    for (const auto& [name, used] : mem) CHECK(used <= by_name[name].memory_bytes);
    for (const auto& [name, used] : gpus) {
      CHECK(used.size() <= by_name[name].gpu_indices.size());
    }
  }
}

TEST_CASE("a node whose GPUs fail their health check still takes CPU work") {
  SchedNode sick = Node("sick", 8, 32, 2);
  sick.gpus_ok = false;
  SchedulePlan p =
      Schedule({Task("gpu", 1000, 512, 1, 0, 1), Task("cpu", 1000, 512, 0, 0, 2)}, {sick});
  CHECK(Placed(p) == std::map<std::string, std::string>{{"cpu", "sick"}});
  CHECK(Reason(p, "gpu") == "no online node has 1 GPU that passes the health check");
}
