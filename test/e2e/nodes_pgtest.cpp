// Nodes join, stay online, drop out and come back: real unidesk-server and unidesk-provider
// processes on loopback, with test-scaled intervals (the same code as production).

#include <doctest/doctest.h>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <set>
#include <thread>

#include "core/json.h"
#include "test/e2e/node_support.h"
#include "test/e2e/socket_probe.h"

using namespace unidesk::test;
using namespace unidesk::test::e2e;
using namespace std::chrono_literals;

TEST_CASE("a provider joins with resources and labels, and heartbeats keep it online") {
  TestDatabase db;
  std::string token = AddNode(db.conninfo(), "gpu-1", "--label site=lab --label tier=a");
  // Wide windows here: this case asserts that nothing flaps, even on a loaded machine.
  auto server = StartNodeServer(
      db.conninfo(), {"--heartbeat-interval", "100ms", "--suspect-after", "1500ms",
                      "--offline-after", "3s", "--grace", "200ms", "--monitor-tick", "50ms"});
  REQUIRE(server.port > 0);
  // No GPU here: a stand-in nvidia-smi prints what a two-GPU machine prints (a fake, said so).
  std::string smi = TempPath("nvidia-smi");
  std::ofstream(smi) << "#!/bin/sh\necho '0, NVIDIA A100-SXM4-40GB, 40960'\n"
                        "echo '1, NVIDIA A100-SXM4-40GB, 40960'\n";
  Shell("chmod +x " + smi);
  std::string data_dir = TempPath("data-gpu-1");
  auto provider =
      StartProvider(server.port, "gpu-1", token,
                    {"--label", "tier=b", "--label", "zone=x", "--nvidia-smi", smi}, "", data_dir);
  REQUIRE(WaitForStatus(db.conninfo(), "gpu-1", "online"));
  // Both ends of the session send each frame at once (TCP_NODELAY): with Nagle a small frame
  // waited for the peer's delayed ACK of the one before, and an assignment took 25 ms more.
  CHECK(TcpNoDelayOf(provider->pid(), -1, server.port) == std::optional<bool>(true));
  CHECK(TcpNoDelayOf(server.process->pid(), server.port, -1) == std::optional<bool>(true));

  {
    INFO("a second agent on the same data dir refuses to start, naming the first");
    std::string log = TempPath("provider-second.log");
    auto second = StartProvider(server.port, "gpu-1", token, {}, log, data_dir);
    bool exited = WaitUntil([&] { return !second->Running(); }, 10s);
    if (!exited) second->Signal(SIGKILL);
    REQUIRE(exited);
    CHECK(second->Wait() == 1);
    CHECK(Contains(ReadFile(log), "another agent process (pid " + std::to_string(provider->pid()) +
                                      ") uses the data dir"));
    CHECK(provider->Running());
  }

  Outcome show = Cli(db.conninfo(), "nodes show gpu-1 --json");
  REQUIRE(show.code == 0);
  show.out.erase(std::remove(show.out.begin(), show.out.end(), ' '), show.out.end());
  CHECK(Contains(show.out, "\"status\":\"online\""));
  CHECK(Contains(show.out, "\"model\":\"NVIDIAA100-SXM4-40GB\""));
  CHECK(Contains(show.out, "\"memory_bytes\":42949672960"));
  CHECK(Contains(show.out, "\"site\":\"lab\""));
  CHECK(Contains(show.out, "\"zone\":\"x\""));
  CHECK(Contains(show.out, "\"tier\":\"a\""));  // the operator's label wins over the agent's
  CHECK(Contains(show.out, "\"docker_ok\":false"));
  CHECK(Contains(show.out, "\"agent_version\":\"" UNIDESK_VERSION "\""));

  // Thirty heartbeat intervals and the whole offline window: still online, heartbeat fresh.
  std::this_thread::sleep_for(3s);
  CHECK(NodeStatus(db.conninfo(), "gpu-1") == "online");
  double age = std::atof(Text(db.conninfo(),
                              "SELECT extract(epoch FROM now() - last_seen_at) FROM node_liveness "
                              "WHERE node = 'gpu-1'")
                             .c_str());
  CHECK(age < 0.5);
  CHECK(CountEvents(db.conninfo(), "type = 'node.suspect'") == 0);
  // Heartbeats are not events.
  CHECK(CountEvents(db.conninfo(), "stream_id = 'node-gpu-1'") < 8);

  Outcome list = Cli(db.conninfo(), "nodes list");
  CHECK(Contains(list.out, "gpu-1"));
  CHECK(Contains(list.out, "2 cpu") + Contains(list.out, " cpu, ") > 0);

  // SIGTERM: the agent says goodbye and the node is offline at once, with the reason.
  CHECK(StopChild(*provider, SIGTERM) == 0);
  REQUIRE(WaitForStatus(db.conninfo(), "gpu-1", "offline", 5s));
  CHECK(Text(db.conninfo(), "SELECT status_reason FROM nodes WHERE name = 'gpu-1'") ==
        "the agent shut down");
}

TEST_CASE("a frozen provider goes offline and comes back; a killed one goes offline") {
  TestDatabase db;
  std::string t1 = AddNode(db.conninfo(), "frozen");
  std::string t2 = AddNode(db.conninfo(), "killed");
  auto server = StartNodeServer(db.conninfo(), FastLiveness());
  auto frozen = StartProvider(server.port, "frozen", t1, {"--backoff-start", "200ms"});
  auto killed = StartProvider(server.port, "killed", t2);
  REQUIRE(WaitForStatus(db.conninfo(), "frozen", "online"));
  REQUIRE(WaitForStatus(db.conninfo(), "killed", "online"));

  frozen->Signal(SIGSTOP);
  killed->Signal(SIGKILL);
  killed->Wait();
  REQUIRE(WaitForStatus(db.conninfo(), "frozen", "offline", 10s));
  REQUIRE(WaitForStatus(db.conninfo(), "killed", "offline", 10s));
  // Suspect first (no new tasks), then offline, with the silence in the reason.
  CHECK(CountEvents(db.conninfo(), "stream_id = 'node-frozen' AND type = 'node.suspect'") == 1);
  CHECK(Contains(Text(db.conninfo(), "SELECT status_reason FROM nodes WHERE name = 'frozen'"),
                 "no heartbeat for"));
  // The frozen agent's socket was closed by the server's ping timeout, not left open.
  CHECK(Contains(ReadFile(server.log), "silent: no frame and no pong"));

  frozen->Signal(SIGCONT);
  REQUIRE(WaitForStatus(db.conninfo(), "frozen", "online", 15s));
  CHECK(NodeStatus(db.conninfo(), "killed") == "offline");
}

TEST_CASE("every provider rejoins a restarted server, with jittered delays") {
  TestDatabase db;
  // The monitor restarts with the server: its grace covers the time providers take to return.
  std::vector<std::string> flags = FastLiveness();
  flags.insert(flags.end(), {"--grace", "20s"});
  auto server = StartNodeServer(db.conninfo(), flags);
  int port = server.port;
  constexpr int kNodes = 6;
  std::vector<std::unique_ptr<ChildProcess>> providers;
  std::vector<std::string> logs;
  for (int i = 0; i < kNodes; ++i) {
    std::string name = "n" + std::to_string(i);
    logs.push_back(TempPath(name + ".log"));
    providers.push_back(StartProvider(port, name, AddNode(db.conninfo(), name),
                                      {"--backoff-start", "1s"}, logs.back()));
  }
  for (int i = 0; i < kNodes; ++i)
    REQUIRE(WaitForStatus(db.conninfo(), "n" + std::to_string(i), "online"));
  long long connected_before = CountEvents(db.conninfo(), "type = 'node.connected'");

  REQUIRE(StopChild(*server.process, SIGTERM) == 0);
  std::this_thread::sleep_for(1500ms);  // down for a while: attempts fail and back off
  auto again = StartNodeServer(db.conninfo(), flags, port);
  REQUIRE(again.port == port);
  REQUIRE(WaitUntil(
      [&] {
        return CountEvents(db.conninfo(), "type = 'node.connected'") == connected_before + kNodes;
      },
      30s));
  // Each rejoined on its own schedule: the delays they chose differ.
  std::set<std::string> delays;
  for (const auto& log : logs) {
    for (const auto& line : Lines(ReadFile(log))) {
      auto at = line.find("reconnecting in ");
      if (at != std::string::npos) delays.insert(line.substr(at, 24));
    }
  }
  CHECK(delays.size() >= kNodes);
  // The restart did not make anyone offline (the grace and the quick return).
  CHECK(CountEvents(db.conninfo(), "type = 'node.offline'") == 0);
  for (int i = 0; i < kNodes; ++i)
    CHECK(NodeStatus(db.conninfo(), "n" + std::to_string(i)) == "online");
}

TEST_CASE("a revoked token is cut off and its reconnects are refused") {
  TestDatabase db;
  std::string token = AddNode(db.conninfo(), "leaver");
  // Production-like heartbeats (5 s): the close must come from the bus, well inside one of them.
  auto server = StartNodeServer(db.conninfo(), {"--heartbeat-interval", "5s"});
  std::string log = TempPath("leaver.log");
  auto provider = StartProvider(server.port, "leaver", token, {"--backoff-start", "100ms"}, log);
  REQUIRE(WaitForStatus(db.conninfo(), "leaver", "online"));

  auto revoked_at = std::chrono::steady_clock::now();
  Outcome o = Cli(db.conninfo(), "nodes revoke leaver");
  REQUIRE(o.code == 0);
  // The agent is told (4003), retries, is refused with 403, and exits 4.
  REQUIRE(WaitUntil([&] { return !provider->Running(); }, 10s));
  CHECK(provider->Wait() == 4);
  CHECK(std::chrono::steady_clock::now() - revoked_at < 5s);
  std::string text = ReadFile(log);
  CHECK(Contains(text, "4003"));
  CHECK(Contains(text, "refused this node's token (403)"));
  CHECK(!Contains(text, ReadFile(token).substr(0, 47)));  // the token never reaches a log
  CHECK(!Contains(ReadFile(server.log), ReadFile(token).substr(0, 47)));
  // The refusal is recorded off the socket thread: it may land just after the agent exits.
  CHECK(WaitUntil(
      [&] {
        return CountEvents(db.conninfo(),
                           "type = 'ingress.rejected' AND "
                           "data->>'reason' = 'token_revoked'") >= 1;
      },
      5s));
  CHECK(WaitForStatus(db.conninfo(), "leaver", "revoked", 5s));
  // A second agent with the same token is refused too.
  auto again = StartProvider(server.port, "leaver", token);
  REQUIRE(WaitUntil([&] { return !again->Running(); }, 10s));
  CHECK(again->Wait() == 4);
}

TEST_CASE("a token is rotated without downtime; the old one ends after its grace") {
  TestDatabase db;
  std::string old_token = AddNode(db.conninfo(), "rotor");
  auto server = StartNodeServer(db.conninfo(), FastLiveness());
  auto first = StartProvider(server.port, "rotor", old_token);
  REQUIRE(WaitForStatus(db.conninfo(), "rotor", "online"));

  Outcome o = Cli(db.conninfo(), "nodes rotate rotor --grace 3s --json");
  REQUIRE_MESSAGE(o.code == 0, o.err);
  auto rotated_at = std::chrono::steady_clock::now();
  std::string new_token = unidesk::core::JsonReader(o.out).Str("token").value_or("");
  REQUIRE(new_token.rfind("udn_", 0) == 0);
  CHECK(new_token != ReadFile(old_token).substr(0, 47));
  std::string new_token_file = TempPath("new-token");
  std::ofstream(new_token_file) << new_token << "\n";
  CHECK(CountEvents(db.conninfo(), "type = 'node.token_rotated'") == 1);
  CHECK_FALSE(Contains(Text(db.conninfo(),
                            "SELECT data::text FROM events WHERE type = "
                            "'node.token_rotated'"),
                       new_token));  // only the hash is stored

  // No downtime: the live session goes on, and within the grace the old token still joins.
  std::this_thread::sleep_for(500ms);
  CHECK(NodeStatus(db.conninfo(), "rotor") == "online");
  REQUIRE(StopChild(*first, SIGTERM) == 0);
  std::string within_log = TempPath("rotor-within.log");
  auto within = StartProvider(server.port, "rotor", old_token, {}, within_log);
  REQUIRE(WaitUntil([&] { return Contains(ReadFile(within_log), "joined as rotor"); }, 10s));
  REQUIRE(StopChild(*within, SIGTERM) == 0);

  // After the grace the old token is refused (401 token_replaced), the new one joins.
  std::this_thread::sleep_until(rotated_at + 3500ms);
  std::string log = TempPath("rotor-old.log");
  auto stale = StartProvider(server.port, "rotor", old_token, {}, log);
  REQUIRE(WaitUntil([&] { return !stale->Running(); }, 10s));
  CHECK(stale->Wait() == 4);
  CHECK(WaitUntil(
      [&] {
        return CountEvents(db.conninfo(),
                           "type = 'ingress.rejected' AND "
                           "data->>'reason' = 'token_replaced'") >= 1;
      },
      5s));
  std::string renewed_log = TempPath("rotor-new.log");
  auto renewed = StartProvider(server.port, "rotor", new_token_file, {}, renewed_log);
  CHECK(WaitUntil([&] { return Contains(ReadFile(renewed_log), "joined as rotor"); }, 10s));
  CHECK(WaitForStatus(db.conninfo(), "rotor", "online"));
  StopChild(*renewed, SIGTERM);

  // Refusals: an unknown node, a bad grace, a revoked node.
  CHECK(Cli(db.conninfo(), "nodes rotate nobody").code == 1);
  CHECK(Cli(db.conninfo(), "nodes rotate rotor --grace soon").code == 2);
  REQUIRE(Cli(db.conninfo(), "nodes revoke rotor").code == 0);
  Outcome revoked = Cli(db.conninfo(), "nodes rotate rotor");
  CHECK(revoked.code == 1);
  CHECK(Contains(revoked.err, "revoked"));
}

TEST_CASE("a second agent with the same token supersedes the first; reports survive restarts") {
  TestDatabase db;
  std::string token = AddNode(db.conninfo(), "twin");
  auto server = StartNodeServer(db.conninfo(), FastLiveness());
  std::string resources = TempPath("resources.json");
  auto write_resources = [&](int cpus) {
    std::ofstream(resources) << "{\"cpu_cores\":" << cpus
                             << ",\"memory_bytes\":1024,\"disk_bytes\":10,\"disk_free_bytes\":5,"
                                "\"gpus\":[]}";
  };
  write_resources(4);
  std::string data = TempPath("twin-data");
  std::string log1 = TempPath("twin1.log");
  auto first = StartProvider(server.port, "twin", token,
                             {"--resources-file", resources, "--rescan", "100ms"}, log1, data);
  REQUIRE(WaitForStatus(db.conninfo(), "twin", "online"));
  std::string session1 = Text(db.conninfo(), "SELECT session_id::text FROM node_liveness");

  // Resources change: the agent reports them through its outbox and the server applies it once.
  // (A report queued while the server is away is covered by the outbox unit test only.)
  write_resources(8);
  REQUIRE(WaitUntil([&] { return Contains(ReadFile(log1), "resources changed"); }, 10s));
  REQUIRE(StopChild(*first, SIGTERM) == 0);
  auto& server2 = server;
  std::string log2 = TempPath("twin2.log");
  auto second = StartProvider(server.port, "twin", token,
                              {"--resources-file", resources, "--rescan", "100ms"}, log2, data);
  // The second must hold the session before the third dials: else the third is superseded.
  REQUIRE(WaitUntil([&] { return Contains(ReadFile(log2), "joined as twin"); }, 15s));
  REQUIRE(WaitUntil(
      [&] { return CountEvents(db.conninfo(), "type = 'node.resources_changed'") == 1; }, 15s));
  REQUIRE(WaitUntil(
      [&] { return Text(db.conninfo(), "SELECT resources->>'cpu_cores' FROM nodes") == "8"; },
      10s));

  // A third agent with the same token: the second session is closed (4004) and recorded, and
  // the second agent stops instead of fighting over the node (exit 6).
  std::string log3 = TempPath("twin3.log");
  auto third = StartProvider(server.port, "twin", token, {}, log3);
  REQUIRE(WaitUntil(
      [&] { return CountEvents(db.conninfo(), "type = 'node.session_superseded'") >= 1; }, 10s));
  REQUIRE(WaitUntil([&] { return !second->Running(); }, 10s));
  CHECK(second->Wait() == 6);
  std::string live = Text(db.conninfo(), "SELECT session_id::text FROM node_liveness");
  CHECK(live != session1);
  // Exactly one live session in the end, and the outbox report was applied once.
  std::this_thread::sleep_for(1s);
  CHECK(third->Running());
  CHECK(Text(db.conninfo(), "SELECT count(*) FROM node_liveness WHERE session_id IS NOT NULL") ==
        "1");
  CHECK(CountEvents(db.conninfo(), "type = 'node.resources_changed'") == 1);
  CHECK(Contains(ReadFile(server2.log), "superseding"));
}
