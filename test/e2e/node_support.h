#pragma once
// Helpers of the node tests: a server with the ingress on a free loopback port, node tokens,
// provider processes, and reads of the node read model and the events.

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "test/e2e/e2e_support.h"

namespace unidesk::test::e2e {

inline std::string ProviderBinary() { return BuildDir() + "/provider/unidesk-provider"; }

/// Test-scaled intervals: heartbeats every 100 ms, suspect after 300 ms, offline after 1.5 s.
inline std::vector<std::string> FastLiveness() {
  return {"--heartbeat-interval", "100ms",  "--idle-timeout", "600ms", "--suspect-after", "300ms",
          "--offline-after",      "1500ms", "--grace",        "200ms", "--monitor-tick",  "50ms"};
}

/// `unidesk-server` with every role, its ingress on 127.0.0.1 (a free port, or `port`).
struct Server {
  std::unique_ptr<ChildProcess> process;
  int port = 0;
  std::string log;
};

inline Server StartNodeServer(const std::string& conninfo, std::vector<std::string> extra,
                              int port = 0) {
  Server s;
  s.log = TempPath("server.log");
  std::string ready = TempPath("ready");
  std::vector<std::string> argv = {
      ServerBinary(), "--db", conninfo, "--public",   "127.0.0.1:" + std::to_string(port),
      "--ready-file", ready,  "--api",  "127.0.0.1:0"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  s.process =
      std::make_unique<ChildProcess>(argv, std::vector<std::string>{"UNIDESK_LOG=info"}, s.log);
  WaitUntil([&] { return !ReadFile(ready).empty() || !s.process->Running(); },
            std::chrono::seconds(20));
  s.port = std::atoi(ReadFile(ready).c_str());
  std::remove(ready.c_str());
  return s;
}

/// Registers `name` through the CLI; returns the path of a file holding its token.
inline std::string AddNode(const std::string& conninfo, const std::string& name,
                           const std::string& extra = "") {
  Outcome o = Cli(conninfo, "nodes add " + name + " --json " + extra);
  if (o.code != 0) throw std::runtime_error("nodes add failed: " + o.err);
  auto at = o.out.find("\"token\":\"");
  std::string token = o.out.substr(at + 9, 47);
  std::string path = TempPath("token");
  std::ofstream(path) << token << "\n";
  return path;
}

/// `unidesk-provider` for `name` against the server's port, with its own data folder.
inline std::unique_ptr<ChildProcess> StartProvider(int port, const std::string& name,
                                                   const std::string& token_file,
                                                   std::vector<std::string> extra = {},
                                                   const std::string& log = "",
                                                   const std::string& data_dir = "") {
  std::vector<std::string> argv = {ProviderBinary(),
                                   "--server",
                                   "ws://127.0.0.1:" + std::to_string(port),
                                   "--name",
                                   name,
                                   "--token-file",
                                   token_file,
                                   "--data-dir",
                                   data_dir.empty() ? TempPath("data-" + name) : data_dir,
                                   "--docker-socket",
                                   "/nonexistent/docker.sock"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return std::make_unique<ChildProcess>(argv, std::vector<std::string>{"UNIDESK_LOG=info"},
                                        log.empty() ? TempPath("provider-" + name + ".log") : log);
}

/// The node's status in the read model ("" when it has no row).
inline std::string NodeStatus(const std::string& conninfo, const std::string& node) {
  return Text(conninfo,
              "SELECT coalesce((SELECT status FROM nodes WHERE name = '" + node + "'), '')");
}

inline long long CountEvents(const std::string& conninfo, const std::string& where) {
  return std::atoll(Text(conninfo, "SELECT count(*) FROM events WHERE " + where).c_str());
}

inline bool WaitForStatus(const std::string& conninfo, const std::string& node,
                          const std::string& status,
                          std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  return WaitUntil([&] { return NodeStatus(conninfo, node) == status; }, timeout,
                   std::chrono::milliseconds(25));
}

}  // namespace unidesk::test::e2e
