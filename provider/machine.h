#pragma once
// What the agent reads about its machine: resources (CPU, memory, disk of the data dir, GPUs from
// nvidia-smi) and health (Docker answering on its socket, nvidia-smi answering).

#include <optional>
#include <string>

#include "core/protocol.h"

namespace unidesk::provider {

struct MachineProbe {
  std::string data_dir;
  std::string nvidia_smi = "nvidia-smi";  // looked up on PATH; absent means no GPUs
  std::string docker_socket = "/var/run/docker.sock";
  /// A JSON resources object that replaces detection (hosts whose detection is wrong, tests).
  std::optional<std::string> resources_file;
};

/// Reads the resources now. Errors in the override file are thrown (std::runtime_error).
core::protocol::Resources DetectResources(const MachineProbe& probe);
core::protocol::Health DetectHealth(const MachineProbe& probe);

/// The GPU half of DetectHealth: nvidia-smi answers (ok when there is no nvidia-smi, so no
/// GPUs). `detail` says why not, with nvidia-smi's first line ("... GPU is lost").
struct GpuHealth {
  bool ok = true;
  std::string detail;
};
GpuHealth CheckGpus(const std::string& nvidia_smi);

/// Parses `nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits`.
std::vector<core::protocol::Gpu> ParseNvidiaSmi(const std::string& csv);

}  // namespace unidesk::provider
