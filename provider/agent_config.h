#pragma once
// The agent's settings: a config file of `key = value` lines, overridden by flags.

#include <map>
#include <optional>
#include <string>

#include "core/result.h"
#include "provider/backoff.h"
#include "provider/host_hygiene.h"
#include "provider/machine.h"

namespace unidesk::provider {

struct AgentConfig {
  std::string host;
  std::string port;
  std::string path = "/v1/provider";
  std::string name;
  std::string token;  // from token_file or $UNIDESK_NODE_TOKEN; never logged
  std::map<std::string, std::string> labels;
  std::string data_dir = "/var/lib/unidesk-provider";
  MachineProbe probe;
  std::chrono::milliseconds rescan{60000};  // how often resources are re-read
  BackoffSettings backoff;
  std::chrono::milliseconds hygiene_interval{60000};  // orphan reaping and disk collection
  HygienePolicy hygiene;
  std::chrono::milliseconds git_stall_timeout{120000};            // a fetch silent this long fails
  std::chrono::milliseconds build_stall_timeout{30 * 60 * 1000};  // an env build silent this long
  bool keep_tasks_on_stop = false;  // --on-stop keep-running: a restart, not a shutdown
};

extern const char* const kAgentUsage;

/// argv (after the program name) and the config file it may name; errors say what to fix.
core::Result<AgentConfig, std::string> LoadAgentConfig(int argc, char** argv);

}  // namespace unidesk::provider
