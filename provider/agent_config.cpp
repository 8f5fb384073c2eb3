#include "provider/agent_config.h"

#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

#include "core/duration.h"
#include "core/protocol.h"

namespace unidesk::provider {

const char* const kAgentUsage =
    "usage: unidesk-provider [--config FILE] [options]\n"
    "\n"
    "The Provider Gateway agent: dials the server's ingress, declares this machine, sends\n"
    "heartbeats and keeps reports in an on-disk outbox until the server acknowledges them.\n"
    "\n"
    "  --server URL          ws://HOST:PORT of the server's ingress (required)\n"
    "  --name NAME           this node's name, as given to `unidesk nodes add` (required)\n"
    "  --token-file FILE     the node token (else $UNIDESK_NODE_TOKEN); never put it in a URL\n"
    "  --label KEY=VALUE     a label this node declares (repeatable)\n"
    "  --data-dir DIR        outbox and caches (/var/lib/unidesk-provider)\n"
    "  --nvidia-smi PATH     GPU query tool (nvidia-smi on PATH; none: no GPUs)\n"
    "  --docker-socket PATH  Docker engine socket (/var/run/docker.sock)\n"
    "  --resources-file FILE a JSON resources object that replaces detection\n"
    "  --rescan D            re-read resources this often; changes are reported (60s)\n"
    "  --backoff-start D     first reconnect delay ceiling (1s); --backoff-cap D (60s);\n"
    "  --backoff-reset D     connected this long resets the backoff (60s)\n"
    "  --gc-interval D       reap orphaned containers and collect the disk this often (60s)\n"
    "  --disk-watermarks H,L above H% of the data dir's disk in use, remove least recently\n"
    "                        used env images, mirrors and workspaces down to L% (85,70)\n"
    "  --workspace-ttl D     an ended attempt's workspace is kept this long (24h)\n"
    "  --git-stall-timeout D a git fetch with no progress this long fails the attempt (2m)\n"
    "  --build-stall-timeout D  an env image build that prints nothing this long fails the\n"
    "                        attempt (30m)\n"
    "  --on-stop MODE        what SIGTERM/SIGINT does to running tasks: `end` them (they are\n"
    "                        lost and retried elsewhere; the default), or `keep-running` for\n"
    "                        a restart: their containers run on, and the next agent process\n"
    "                        follows them if it connects within the server's --offline-after\n"
    "  --config FILE         `key = value` lines with the same keys as the flags\n"
    "  --version, --help\n"
    "\n"
    "The agent runs its git fetches as children of its own binary: `unidesk-provider\n"
    "git-fetch --parent PID MIRROR URL` in `ps` is one of them (not meant to be run by hand).\n"
    "\n"
    "A container left by a killed agent is followed again the same way by the next one.\n"
    "\n"
    "Exit codes: 0 stopped by SIGTERM/SIGINT, 2 bad configuration, 4 token refused (unknown or\n"
    "revoked), 5 the server speaks another protocol version, 6 another agent took over this\n"
    "node's session (two agents share one token).\n";

namespace {

std::string Trim(const std::string& s) {
  auto b = s.find_first_not_of(" \t\r\n");
  auto e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

}  // namespace

core::Result<AgentConfig, std::string> LoadAgentConfig(int argc, char** argv) {
  std::vector<std::pair<std::string, std::string>> settings;
  std::vector<std::pair<std::string, std::string>> flags;
  std::optional<std::string> config_file;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0) return std::string("unexpected argument '" + a + "'");
    std::string key = a.substr(2), value;
    if (auto eq = key.find('='); eq != std::string::npos) {
      value = key.substr(eq + 1);
      key = key.substr(0, eq);
    } else {
      if (i + 1 >= argc) return std::string("option --" + key + " needs a value");
      value = argv[++i];
    }
    if (key == "config") {
      config_file = value;
    } else {
      flags.emplace_back(key, value);
    }
  }
  if (config_file) {
    std::ifstream f(*config_file);
    if (!f) return std::string("cannot read config file " + *config_file);
    int n = 0;
    for (std::string line; std::getline(f, line);) {
      ++n;
      line = Trim(line);
      if (line.empty() || line[0] == '#') continue;
      auto eq = line.find('=');
      if (eq == std::string::npos) {
        return *config_file + ":" + std::to_string(n) + ": expected key = value";
      }
      settings.emplace_back(Trim(line.substr(0, eq)), Trim(line.substr(eq + 1)));
    }
  }
  settings.insert(settings.end(), flags.begin(), flags.end());  // flags win: applied last

  AgentConfig c;
  std::string server, token_file;
  for (const auto& [key, value] : settings) {
    auto duration = [&](std::chrono::milliseconds& out) -> std::optional<std::string> {
      auto d = core::ParseDuration(value);
      if (!d || d->count() == 0) return "--" + key + ": '" + value + "' is not a duration";
      out = *d;
      return std::nullopt;
    };
    std::optional<std::string> err;
    if (key == "server") {
      server = value;
    } else if (key == "name") {
      c.name = value;
    } else if (key == "token-file") {
      token_file = value;
    } else if (key == "label") {
      auto eq = value.find('=');
      if (eq == std::string::npos || !core::protocol::IsValidLabelKey(value.substr(0, eq))) {
        return std::string("--label '" + value + "': expected KEY=VALUE");
      }
      c.labels[value.substr(0, eq)] = value.substr(eq + 1);
    } else if (key == "data-dir") {
      c.data_dir = value;
    } else if (key == "nvidia-smi") {
      c.probe.nvidia_smi = value;
    } else if (key == "docker-socket") {
      c.probe.docker_socket = value;
    } else if (key == "resources-file") {
      c.probe.resources_file = value;
    } else if (key == "rescan") {
      err = duration(c.rescan);
    } else if (key == "backoff-start") {
      err = duration(c.backoff.start);
    } else if (key == "backoff-cap") {
      err = duration(c.backoff.cap);
    } else if (key == "backoff-reset") {
      err = duration(c.backoff.reset);
    } else if (key == "gc-interval") {
      err = duration(c.hygiene_interval);
    } else if (key == "git-stall-timeout") {
      err = duration(c.git_stall_timeout);
    } else if (key == "build-stall-timeout") {
      err = duration(c.build_stall_timeout);
    } else if (key == "on-stop") {
      if (value != "end" && value != "keep-running") {
        return std::string("--on-stop '" + value + "': expected end or keep-running");
      }
      c.keep_tasks_on_stop = value == "keep-running";
    } else if (key == "workspace-ttl") {
      std::chrono::milliseconds ttl{0};
      err = duration(ttl);
      c.hygiene.workspace_ttl_s = ttl.count() / 1000;
    } else if (key == "disk-watermarks") {
      int high = -1, low = -1;
      char tail = 0;
      if (std::sscanf(value.c_str(), "%d,%d%c", &high, &low, &tail) != 2 || low < 0 || high > 100 ||
          low > high) {
        return std::string("--disk-watermarks '" + value +
                           "': expected HIGH,LOW percentages with 0 <= LOW <= HIGH <= 100");
      }
      c.hygiene.high_watermark = high / 100.0;
      c.hygiene.low_watermark = low / 100.0;
    } else {
      return std::string("unknown option --" + key);
    }
    if (err) return *err;
  }
  if (server.rfind("wss://", 0) == 0) {
    return std::string(
        "--server: wss:// is not supported by this agent version; use ws:// "
        "behind a TLS-terminating proxy, or on loopback");
  }
  if (server.rfind("ws://", 0) != 0) return std::string("--server: expected ws://HOST:PORT");
  std::string rest = server.substr(5);
  auto slash = rest.find('/');
  std::string hostport = rest.substr(0, slash);
  if (slash != std::string::npos && rest.substr(slash) != "/") c.path = rest.substr(slash);
  auto colon = hostport.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return std::string("--server: expected ws://HOST:PORT");
  c.host = hostport.substr(0, colon);
  c.port = hostport.substr(colon + 1);
  if (!core::protocol::IsValidNodeName(c.name)) {
    return std::string("--name: '" + c.name + "' is not a node name (a-z 0-9 - _ ., 1-63)");
  }
  if (!token_file.empty()) {
    std::ifstream f(token_file);
    if (!f) return std::string("cannot read the token file " + token_file);
    std::stringstream ss;
    ss << f.rdbuf();
    c.token = Trim(ss.str());
  } else if (const char* env = std::getenv("UNIDESK_NODE_TOKEN")) {
    c.token = Trim(env);
  }
  if (c.token.empty()) return std::string("no token: give --token-file or $UNIDESK_NODE_TOKEN");
  ::mkdir(c.data_dir.c_str(), 0700);
  c.probe.data_dir = c.data_dir;
  return c;
}

}  // namespace unidesk::provider
