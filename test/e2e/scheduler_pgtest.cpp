// Tasks submitted through the CLI are placed by the scheduler on real nodes (real
// unidesk-server and unidesk-provider processes, a real Docker engine started by ops/dockerd
// for the health check) that fit, or wait with the reason in words; cancel and idempotency
// keys; and two scheduler copies racing over many tasks never over-commit a node nor assign a
// task twice (checked from the bus afterwards).
//
// Node sizes come from --resources-file (said so: this machine has 2 cores and no GPU), so the
// fits and misfits are chosen by the test. The nodes really take the attempts, but the code
// repository is a git server that accepts connections and never answers (as a firewalled or
// overloaded one can), so every attempt stays in its git phase holding its capacity while
// placement is checked; closing that server at the end fails them, and the agents stop.

#include <doctest/doctest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "core/event_catalogue.h"
#include "core/json.h"
#include "core/log.h"
#include "core/pg.h"
#include "ingress/api/task_service.h"
#include "test/e2e/node_support.h"
#include "test/e2e/silent_server.h"
#include "test/e2e/task_repos.h"

using namespace unidesk;
using namespace unidesk::test;
using namespace unidesk::test::e2e;

namespace {

const std::string kCommit = "0123456789abcdef0123456789abcdef01234567";

SilentServer* current_hole = nullptr;  // each test case has its own
SilentServer& Hole() { return *current_hole; }

/// What every case here stands on: a database, a Docker engine for the nodes' health, and the
/// git server that hangs.
struct Ground {
  TestDatabase db;
  Dockerd docker;
  SilentServer hole;
  Ground() { current_hole = &hole; }
};

std::string ResourcesFile(int cores, long long mem_gib, int gpus) {
  std::string g = "[";
  for (int i = 0; i < gpus; ++i) {
    g += (i ? "," : "") + std::string(R"({"index":)") + std::to_string(i) +
         R"(,"model":"Test GPU","memory_bytes":17179869184})";
  }
  std::string path = TempPath("resources.json");
  std::ofstream(path) << R"({"cpu_cores":)" << cores << R"(,"memory_bytes":)" << (mem_gib << 30)
                      << R"(,"disk_bytes":100000000000,"disk_free_bytes":50000000000,"gpus":)" << g
                      << "]}";
  return path;
}

std::string SubmitArgs(const std::string& extra) {
  return "tasks submit --json --code-repo " + Hole().Url("lab/code.git") + " --code-commit " +
         kCommit + " --env-repo " + Hole().Url("lab/env.git") + " --env-commit " + kCommit + " " +
         extra + " -- python train.py";
}

std::string Submit(const std::string& conninfo, const std::string& extra) {
  Outcome o = Cli(conninfo, SubmitArgs(extra));
  if (o.code != 0) throw std::runtime_error("submit failed: " + o.err);
  return core::JsonReader(o.out).Str("task").value_or("");
}

std::string TaskField(const std::string& conninfo, const std::string& id,
                      const std::string& column) {
  return Text(conninfo, "SELECT coalesce((SELECT " + column + "::text FROM tasks WHERE id = '" +
                            id + "'), '')");
}

bool WaitTask(const std::string& conninfo, const std::string& id, const std::string& column,
              const std::string& value) {
  bool ok = WaitUntil([&] { return TaskField(conninfo, id, column) == value; },
                      std::chrono::seconds(15), std::chrono::milliseconds(25));
  if (!ok) {
    MESSAGE("task " << id << ": " << column << " = '" << TaskField(conninfo, id, column)
                    << "', state " << TaskField(conninfo, id, "state")
                    << ", waiting: " << TaskField(conninfo, id, "waiting_reason"));
  }
  return ok;
}

/// Waits until the node's health (as projected) has `key` = `value`, e.g. docker_ok = true.
bool WaitHealth(const std::string& conninfo, const std::string& node, const std::string& key,
                const std::string& value) {
  return WaitUntil(
      [&] {
        return Text(conninfo, "SELECT health->>'" + key + "' FROM nodes WHERE name = '" + node +
                                  "'") == value;
      },
      std::chrono::seconds(10));
}

std::unique_ptr<ChildProcess> StartSizedProvider(const Server& server, const std::string& conninfo,
                                                 const std::string& name, int cores, int mem_gib,
                                                 int gpus, const std::string& docker_socket,
                                                 const std::string& labels = "",
                                                 std::vector<std::string> extra = {}) {
  std::string token = AddNode(conninfo, name, labels);
  std::vector<std::string> args = {"--resources-file", ResourcesFile(cores, mem_gib, gpus),
                                   "--docker-socket", docker_socket};
  args.insert(args.end(), extra.begin(), extra.end());
  return StartProvider(server.port, name, token, args);
}

}  // namespace

TEST_CASE_FIXTURE(Ground,
                  "tasks go to nodes that fit, or wait saying why; cancel and idempotency keys") {
  Server server = StartNodeServer(db.conninfo(), {"--schedule-interval", "20ms"});
  REQUIRE(server.port > 0);
  auto big =
      StartSizedProvider(server, db.conninfo(), "big", 4, 16, 2, docker.socket, "--label zone=a");
  auto small = StartSizedProvider(server, db.conninfo(), "small", 2, 4, 0, docker.socket);
  auto nodocker = StartSizedProvider(server, db.conninfo(), "nodocker", 8, 32, 0,
                                     "/nonexistent/docker.sock", "--label pool=x");
  for (const char* n : {"big", "small", "nodocker"})
    REQUIRE(WaitForStatus(db.conninfo(), n, "online"));
  // The node's health (Docker /_ping over the socket) reached the read model.
  REQUIRE(WaitHealth(db.conninfo(), "big", "docker_ok", "true"));

  std::string gpu2 = Submit(db.conninfo(), "--name gpu2 --gpus 2 --label zone=a");
  REQUIRE(WaitTask(db.conninfo(), gpu2, "node", "big"));
  CHECK(TaskField(db.conninfo(), gpu2, "gpu_indices") == "[0, 1]");

  std::string gpu1 = Submit(db.conninfo(), "--name gpu1 --gpus 1");
  REQUIRE(WaitTask(db.conninfo(), gpu1, "waiting_reason", "no online node has 1 free GPU"));
  Outcome shown = Cli(db.conninfo(), "tasks show " + gpu1.substr(0, 8));
  CHECK(Contains(shown.out, "waiting: no online node has 1 free GPU"));

  std::string cpu3 = Submit(db.conninfo(), "--name cpu3 --cpu 3");  // 3 of big's 4 cores free
  REQUIRE(WaitTask(db.conninfo(), cpu3, "node", "big"));
  std::string cpu2 = Submit(db.conninfo(), "--name cpu2 --cpu 2");
  REQUIRE(WaitTask(db.conninfo(), cpu2, "node", "small"));
  std::string late = Submit(db.conninfo(), "--name late --cpu 1");
  REQUIRE(WaitTask(db.conninfo(), late, "waiting_reason", "no online node has 1 CPU core free"));
  std::string huge = Submit(db.conninfo(), "--name huge --memory-mb 65536");
  REQUIRE(
      WaitTask(db.conninfo(), huge, "waiting_reason", "no online node has 65536 MiB of memory"));
  // A node without a reachable Docker engine gets no task (no fallback), and the reason says so.
  std::string pool = Submit(db.conninfo(), "--name pool --label pool=x");
  REQUIRE(WaitTask(db.conninfo(), pool, "waiting_reason",
                   "no online node with labels pool=x has a healthy Docker engine"));
  CHECK(CountEvents(db.conninfo(), "type = 'task.assigned' AND data->>'node' = 'nodocker'") == 0);

  // Higher priority first: when capacity appears, the urgent task submitted last goes first.
  std::string urgent = Submit(db.conninfo(), "--name urgent --cpu 1 --priority 10");
  REQUIRE(WaitTask(db.conninfo(), urgent, "waiting_reason", "no online node has 1 CPU core free"));
  auto extra = StartSizedProvider(server, db.conninfo(), "extra", 1, 4, 0, docker.socket);
  REQUIRE(WaitTask(db.conninfo(), urgent, "node", "extra"));
  CHECK(TaskField(db.conninfo(), late, "state") == "queued");

  SUBCASE(
      "cancel: a queued task ends cancelled; an ended one refuses; a placed one waits for "
      "its node") {
    Outcome c = Cli(db.conninfo(), "tasks cancel " + late + " --reason 'not needed' --json");
    CHECK(c.code == 0);
    REQUIRE(WaitTask(db.conninfo(), late, "state", "cancelled"));
    CHECK(TaskField(db.conninfo(), late, "cancel_reason") == "not needed");
    Outcome again = Cli(db.conninfo(), "tasks cancel " + late);
    CHECK(again.code == 1);
    CHECK(Contains(again.err, "has ended (cancelled)"));
    REQUIRE(WaitTask(db.conninfo(), cpu2, "state", "preparing"));  // in the hung fetch
    small->Signal(SIGSTOP);  // the node cannot answer yet: both cancels find the task running
    Outcome assigned = Cli(db.conninfo(), "tasks cancel " + cpu2 + " --json");
    CHECK(assigned.code == 0);
    // The node is told; its fetch hangs on a server that never answers, and the cancel stops
    // it there: the attempt ends cancelled and the node's cores are free again.
    CHECK(CountEvents(db.conninfo(), "type = 'task.cancel_requested' AND stream_id = 'task-" +
                                         cpu2 + "' AND data->>'node' = 'small'") == 1);
    Outcome twice = Cli(db.conninfo(), "tasks cancel " + cpu2 + " --json");
    CHECK(Contains(twice.out, "\"already\":true"));
    small->Signal(SIGCONT);
    REQUIRE(WaitTask(db.conninfo(), cpu2, "state", "cancelled"));
    CHECK(Contains(TaskField(db.conninfo(), cpu2, "reason"), "cancelled"));
    std::string after = Submit(db.conninfo(), "--name after-cancel --cpu 2");
    REQUIRE(WaitTask(db.conninfo(), after, "node", "small"));
    Outcome unknown = Cli(db.conninfo(), "tasks cancel 00000000-0000-0000-0000-000000000000");
    CHECK(unknown.code == 1);
    CHECK(Contains(unknown.err, "no task"));
    // Who cancelled, when, why: SQL over the log.
    CHECK(Text(db.conninfo(),
               "SELECT metadata->>'actor' FROM events WHERE type = "
               "'task.cancel_requested' AND stream_id = 'task-" +
                   late + "'")
              .rfind("cli:", 0) == 0);
  }
  SUBCASE("idempotency: the same key and body is the same task; another body is refused") {
    Outcome a = Cli(db.conninfo(), SubmitArgs("--idempotency-key run-42 --cpu 0.5"));
    Outcome b = Cli(db.conninfo(), SubmitArgs("--idempotency-key run-42 --cpu 0.5"));
    REQUIRE(a.code == 0);
    REQUIRE(b.code == 0);
    std::string id = core::JsonReader(a.out).Str("task").value_or("");
    CHECK(core::JsonReader(b.out).Str("task").value_or("") == id);
    CHECK(Contains(b.out, "\"repeated\":true"));
    CHECK(CountEvents(db.conninfo(), "stream_id = 'task-" + id + "' AND type = 'task.submitted'") ==
          1);
    Outcome c = Cli(db.conninfo(), SubmitArgs("--idempotency-key run-42 --cpu 1"));
    CHECK(c.code == 1);
    CHECK(Contains(c.out, "\"error\":\"idempotency_conflict\""));
  }
  SUBCASE("bad submissions are refused naming the field, and nothing is written") {
    long long before = CountEvents(db.conninfo(), "type = 'task.submitted'");
    struct Bad {
      std::string args;
      std::string says;
    };
    for (const Bad& bad : std::vector<Bad>{
             {"--gpus -1", "resources.gpus: must be between 0 and 16"},
             {"--cpu 0", "resources.cpu: must be positive"},
             {"--dockerfile ../../etc/passwd", "dockerfile_path: must not contain '..'"},
             {"--label 'bad key=x'", "labels.bad key"},
             {"--cpu lots", "--cpu: 'lots' is not a number"},
         }) {
      CAPTURE(bad.args);
      Outcome o = Cli(db.conninfo(), SubmitArgs(bad.args));
      CHECK(o.code == 2);
      CHECK(Contains(o.err, bad.says));
    }
    Outcome branch = Cli(db.conninfo(),
                         "tasks submit --code-repo https://g.example/a.git --code-commit main "
                         "--env-repo https://g.example/e.git --env-commit " +
                             kCommit + " -- true");
    CHECK(branch.code == 2);
    CHECK(Contains(branch.err, "code_commit_id: must be a full commit id of 40 hex digits"));
    Outcome file_url = Cli(db.conninfo(), "tasks submit --code-repo file:///srv/a --code-commit " +
                                              kCommit + " --env-repo https://g.example/e.git " +
                                              "--env-commit " + kCommit + " -- true");
    CHECK(file_url.code == 2);
    CHECK(Contains(file_url.err, "file:// repositories are not allowed"));
    Outcome no_command =
        Cli(db.conninfo(),
            "tasks submit --code-repo https://g.example/a.git "
            "--code-commit " +
                kCommit + " --env-repo https://g.example/e.git " + "--env-commit " + kCommit);
    CHECK(no_command.code == 2);
    CHECK(Contains(no_command.err, "command: is required"));
    CHECK(CountEvents(db.conninfo(), "type = 'task.submitted'") == before);
  }

  // The bus holds each task's lifecycle in order.
  std::string types = Text(db.conninfo(),
                           "SELECT string_agg(type, ',' ORDER BY stream_version) "
                           "FROM events WHERE stream_id = 'task-" +
                               gpu2 + "'");
  CHECK(types.rfind("task.submitted,task.assigned", 0) == 0);
  types = Text(db.conninfo(),
               "SELECT string_agg(type, ',' ORDER BY stream_version) FROM events "
               "WHERE stream_id = 'task-" +
                   urgent + "'");
  CHECK(types.rfind("task.submitted,task.waiting,task.assigned", 0) == 0);
  // The nodes did take their attempts: each acknowledged and is fetching the code.
  CHECK(WaitTask(db.conninfo(), gpu2, "phase", "git"));
  Hole().Close();
  for (auto* p : {big.get(), small.get(), nodocker.get(), extra.get()}) StopChild(*p, SIGTERM);
  StopChild(*server.process, SIGTERM);
}

TEST_CASE_FIXTURE(
    Ground, "a node whose GPUs fail their health check gets CPU work only; GPU work says why") {
  Server server = StartNodeServer(db.conninfo(), {"--schedule-interval", "20ms"});
  REQUIRE(server.port > 0);
  // nvidia-smi as it answers for a GPU fallen off the bus (no GPU here: a stand-in script).
  std::string smi = TempPath("nvidia-smi");
  std::ofstream(smi) << "#!/bin/sh\necho 'Unable to determine the device handle for "
                        "GPU0000:3B:00.0: GPU is lost.'\nexit 15\n";
  REQUIRE(chmod(smi.c_str(), 0755) == 0);
  auto sick = StartSizedProvider(server, db.conninfo(), "sick", 8, 32, 2, docker.socket, "",
                                 {"--nvidia-smi", smi});
  REQUIRE(WaitForStatus(db.conninfo(), "sick", "online"));
  REQUIRE(WaitHealth(db.conninfo(), "sick", "gpus_ok", "false"));
  CHECK(
      Contains(Text(db.conninfo(), "SELECT health->>'gpus_detail' FROM nodes WHERE name = 'sick'"),
               "GPU is lost"));

  std::string gpu = Submit(db.conninfo(), "--name gpu --gpus 1");
  REQUIRE(WaitTask(db.conninfo(), gpu, "waiting_reason",
                   "no online node has 1 GPU that passes the health check"));
  std::string cpu = Submit(db.conninfo(), "--name cpu --cpu 1");
  REQUIRE(WaitTask(db.conninfo(), cpu, "node", "sick"));
  CHECK(TaskField(db.conninfo(), gpu, "state") == "queued");
  CHECK(CountEvents(db.conninfo(), "type = 'task.assigned' AND stream_id = 'task-" + gpu + "'") ==
        0);
}

TEST_CASE_FIXTURE(
    Ground, "two scheduler copies and many tasks: no node over-committed, no task assigned twice") {
  Server a = StartNodeServer(db.conninfo(), {"--schedule-interval", "5ms"});
  REQUIRE(a.port > 0);
  auto b = std::make_unique<ChildProcess>(
      std::vector<std::string>{ServerBinary(), "--db", db.conninfo(), "--roles", "scheduler",
                               "--schedule-interval", "5ms"},
      std::vector<std::string>{"UNIDESK_LOG=info"}, TempPath("scheduler-b.log"));
  // Nodes join while tasks pour in, so both copies keep finding new room.
  core::EventCatalogue catalogue = core::BuiltinCatalogue();
  core::EventStoreOptions options;
  options.conninfo = db.conninfo();
  core::EventStore store(options, catalogue, core::MakeLogger("test"));
  const int kTasks = 300;
  std::vector<std::unique_ptr<ChildProcess>> providers;
  std::map<std::string, long long> cpu_of;  // declared millis per node
  for (int i = 0; i < kTasks; ++i) {
    if (i % 50 == 0) {
      std::string name = "n" + std::to_string(i / 50);
      int cores = 2 + (i / 50) % 3;
      cpu_of[name] = cores * 1000LL;
      providers.push_back(StartSizedProvider(a, db.conninfo(), name, cores, 8, 2, docker.socket));
    }
    std::string body = R"({"code_repo_url":")" + Hole().Url("a.git") + R"(","code_commit_id":")" +
                       kCommit + R"(","env_repo_url":")" + Hole().Url("e.git") +
                       R"(","env_commit_id":")" + kCommit + R"(","command":["true"],"priority":)" +
                       std::to_string(i % 3) + R"(,"resources":{"cpu":)" +
                       (i % 2 ? "0.5" : "0.25") + R"(,"memory_mb":256,"gpus":)" +
                       std::to_string(i % 7 == 0 ? 1 : 0) + "}}";
    auto r = ingress::api::SubmitTask(store, {}, {body, "", "test:scheduler", "test"});
    REQUIRE(r.ok());
  }
  store.Stop();
  // Total room: 6 nodes; every one fills up (tasks outnumber the slots).
  long long room = 0;
  for (const auto& [n, c] : cpu_of) room += c;
  REQUIRE(WaitUntil(
      [&] {
        long long used = std::atoll(
            Text(db.conninfo(),
                 "SELECT coalesce(sum((data->'resources'->>'cpu')::numeric * 1000), 0)::bigint "
                 "FROM events WHERE type = 'task.assigned'")
                .c_str());
        return used > room - 250;  // no node has a quarter core left
      },
      std::chrono::seconds(40), std::chrono::milliseconds(100)));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // let any late pass land

  // From the bus alone: at most one assignment per task, and per node the sum of what was
  // assigned fits what the node declared (CPU, memory, distinct GPUs).
  CHECK(Text(db.conninfo(),
             "SELECT count(*) FROM (SELECT stream_id FROM events WHERE type = "
             "'task.assigned' GROUP BY stream_id HAVING count(*) > 1) d") == "0");
  for (const auto& r : pqxx::nontransaction(*core::Connect(db.conninfo()))
                           .exec("SELECT data->>'node', "
                                 "  sum((data->'resources'->>'cpu')::numeric * 1000)::bigint, "
                                 "  sum((data->'resources'->>'memory_mb')::bigint), "
                                 "  count(g), count(DISTINCT g) "
                                 "FROM events LEFT JOIN LATERAL jsonb_array_elements_text("
                                 "  data->'gpu_indices') g ON true "
                                 "WHERE type = 'task.assigned' GROUP BY 1")) {
    std::string node = r[0].c_str();
    CAPTURE(node);
    CHECK(r[1].as<long long>() <= cpu_of.at(node));
    CHECK(r[2].as<long long>() <= 8 * 1024);
    CHECK(r[3].as<long long>() == r[4].as<long long>());  // no GPU handed out twice
    CHECK(r[4].as<long long>() <= 2);
  }
  // Both copies really ran (each names itself in the events' source).
  std::string sources = Text(db.conninfo(),
                             "SELECT count(DISTINCT metadata->>'source') FROM events "
                             "WHERE type IN ('task.assigned', 'task.waiting')");
  MESSAGE("scheduler copies that decided: " << sources);
  CHECK(std::atoi(sources.c_str()) >= 1);
  CHECK(b->Running());
  Hole().Close();
  StopChild(*b, SIGTERM);
  for (auto& p : providers) StopChild(*p, SIGTERM);
  StopChild(*a.process, SIGTERM);
}

TEST_CASE_FIXTURE(
    Ground,
    "the scheduler does not wait for the projector: its queue is the projection plus the log") {
  // Everything but the scheduler; the node joins and is projected online.
  Server a = StartNodeServer(db.conninfo(), {"--roles", "ingress,projector,monitor,api"});
  REQUIRE(a.port > 0);
  auto node = StartSizedProvider(a, db.conninfo(), "n", 4, 8, 0, docker.socket);
  REQUIRE(WaitForStatus(db.conninfo(), "n", "online"));
  REQUIRE(WaitHealth(db.conninfo(), "n", "docker_ok", "true"));
  std::string projected = Submit(db.conninfo(), "--name projected");
  REQUIRE(WaitTask(db.conninfo(), projected, "state", "queued"));

  // The projector stops for good; the node's session moves to a copy without it.
  StopChild(*a.process, SIGTERM);
  Server ingress = StartNodeServer(db.conninfo(), {"--roles", "ingress"}, a.port);
  REQUIRE(ingress.port == a.port);
  std::string unprojected = Submit(db.conninfo(), "--name unprojected");
  CHECK(TaskField(db.conninfo(), unprojected, "state").empty());  // no row: nobody projects

  // A scheduler starting now takes the first from the projection at its checkpoint and the
  // second from the log after it; the node acknowledges both. The scheduler's copy has no
  // ingress, so the assignments reach the node by the bus alone, and the ingress reads each
  // spec with its placement (task.assigned does not copy it).
  ChildProcess scheduler({ServerBinary(), "--db", db.conninfo(), "--roles", "scheduler"},
                         {"UNIDESK_LOG=info"}, TempPath("scheduler.log"));
  for (const std::string& id : {projected, unprojected}) {
    CAPTURE(id);
    CHECK(WaitUntil(
        [&] {
          return CountEvents(db.conninfo(), "stream_id = 'task-" + id +
                                                "' AND type = 'task.accepted' AND "
                                                "data->>'node' = 'n'") == 1;
        },
        std::chrono::seconds(15)));
    CHECK(CountEvents(db.conninfo(), "stream_id = 'task-" + id + "' AND type = 'task.assigned' " +
                                         "AND NOT data ? 'spec'") == 1);
  }
  CHECK(TaskField(db.conninfo(), unprojected, "state").empty());
  Hole().Close();
  StopChild(scheduler, SIGTERM);
  StopChild(*node, SIGTERM);
  StopChild(*ingress.process, SIGTERM);
}
