#pragma once
// The scheduler's decision: which queued task goes to which node, and why the rest wait.
// Pure: no I/O, no clock; the scheduling pass (scheduler.h) feeds it rows and records the plan.
//
// Rules: only online nodes with a healthy Docker engine take tasks; a node takes a task when
// its labels include the task's labels and its free CPU, memory and GPUs cover the request
// (free = declared minus what placed tasks hold), so no node is over-committed. Higher priority
// first, FIFO within a priority. A task that fits nowhere does not block smaller ones behind
// it (backfill). Among nodes that fit: a task without GPUs prefers nodes without free GPUs
// (GPU nodes stay free for GPU work), then the node with the most free CPU (spread), then the
// name (deterministic).

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace unidesk::handlers {

struct SchedNode {
  std::string name;
  std::string status;  // only "online" takes tasks
  bool docker_ok = false;
  bool gpus_ok = true;  // its GPUs pass the health check (nvidia-smi answers); false: no GPU work
  std::int64_t cpu_millis = 0;
  std::int64_t memory_bytes = 0;
  std::vector<int> gpu_indices;  // the node's GPUs
  std::map<std::string, std::string> labels;
  // Held by tasks placed on it.
  std::int64_t used_cpu_millis = 0;
  std::int64_t used_memory_bytes = 0;
  std::vector<int> used_gpu_indices;
};

struct SchedTask {
  std::string id;
  int priority = 0;
  std::int64_t submitted_position = 0;
  std::int64_t cpu_millis = 0;
  std::int64_t memory_bytes = 0;
  int gpus = 0;
  std::map<std::string, std::string> labels;
  std::string waiting_reason;  // the reason recorded last ("" when none)
};

struct Placement {
  std::string task_id;
  std::string node;
  std::vector<int> gpu_indices;
};

struct Wait {
  std::string task_id;
  std::string reason;  // "no online node has 2 free GPUs"
};

struct SchedulePlan {
  std::vector<Placement> placements;  // in decision order
  std::vector<Wait> waiting;          // every task not placed, with its current reason
};

/// Places as many of `queue` on `nodes` as fit. Neither input needs to be sorted.
SchedulePlan Schedule(std::vector<SchedTask> queue, std::vector<SchedNode> nodes);

}  // namespace unidesk::handlers
