// `ops/up` on one machine: its own Postgres cluster, the server with every role, and a local
// provider that joins through the public ingress; the local node is online in `nodes list`.
// A second `ops/up` on the same folder reuses the node and its token. Ctrl-C stops everything.
// (Uses the binaries of this build: `--no-build`; installing and building are ops/test's job.)

#include <doctest/doctest.h>
#include <sys/stat.h>

#include <csignal>

#include "core/json.h"
#include "test/e2e/e2e_support.h"

using namespace unidesk::test;
using namespace unidesk::test::e2e;

namespace {

struct Up {
  std::unique_ptr<ChildProcess> process;
  std::string log;
};

Up StartUp(const std::string& var) {
  Up up;
  up.log = TempPath("ops-up.log");
  up.process = std::make_unique<ChildProcess>(
      std::vector<std::string>{"/bin/bash", std::string(UNIDESK_SOURCE_DIR) + "/ops/up",
                               "--no-build", "--var", var, "--pg-port", "0", "--public",
                               "127.0.0.1:0", "--api", "127.0.0.1:0"},
      std::vector<std::string>{"UNIDESK_BUILD_DIR=" + BuildDir()}, up.log);
  return up;
}

std::string Conninfo(const std::string& var) {
  return "host=127.0.0.1 port=" + ReadFile(var + "/pg/port").substr(0, 5) +
         " dbname=unidesk user=unidesk";
}

/// The `status` of node `name` in `unidesk nodes list --json` ("" when absent).
std::string ListedStatus(const std::string& conninfo, const std::string& name) {
  Outcome o = Cli(conninfo, "nodes list --json");
  for (const std::string& line : Lines(o.out)) {
    if (Contains(line, "\"name\":\"" + name + "\"")) {
      return unidesk::core::JsonReader(line).Str("status").value_or("");
    }
  }
  return "";
}

}  // namespace

TEST_CASE("ops/up runs the platform with a local node online, and Ctrl-C stops it all") {
  std::string var = TempPath("up-var");
  {
    Up up = StartUp(var);
    REQUIRE_MESSAGE(WaitUntil([&] { return Contains(ReadFile(up.log), "ops/up: ready"); },
                              std::chrono::seconds(90), std::chrono::milliseconds(100)),
                    ReadFile(up.log));
    std::string conninfo = Conninfo(var);
    std::string log = ReadFile(up.log);
    CHECK(Contains(log, "registered node 'local'"));
    CHECK(Contains(log, "ws://127.0.0.1:"));
    // Its own listing, printed once the node is online, and the CLI agrees.
    CHECK(Contains(log, "local                online"));
    CHECK(ListedStatus(conninfo, "local") == "online");
    Outcome show = Cli(conninfo, "nodes show local --json");
    CHECK(unidesk::core::JsonReader(show.out).Raw("labels").value_or("") == "{\"role\":\"local\"}");
    CHECK(Contains(show.out, "\"cpu_cores\":"));

    // The token: kept in var/ for the next run, readable by the owner only, in no log.
    struct stat st {};
    REQUIRE(stat((var + "/local-node.token").c_str(), &st) == 0);
    CHECK((st.st_mode & 077) == 0);
    std::string token = ReadFile(var + "/local-node.token");
    token.erase(token.find_last_not_of("\n") + 1);
    CHECK(token.rfind("udn_", 0) == 0);
    for (const char* f : {"/server.log", "/provider.log"}) {
      CHECK_FALSE(Contains(ReadFile(var + f), token));
    }
    CHECK_FALSE(Contains(log, token));

    // The core API it prints takes a task, and the scheduler places it.
    CHECK(Contains(log, "core API:   http://127.0.0.1:"));
    std::string api = "http://127.0.0.1:" + Lines(ReadFile(var + "/api.ready")).at(0);
    std::string commit(40, 'a');
    std::string body = R"({"code_repo_url":"https://g.example/a.git","code_commit_id":")" + commit +
                       R"(","env_repo_url":"https://g.example/e.git","env_commit_id":")" + commit +
                       R"(","command":["true"]})";
    std::string answer;
    CHECK(Shell("curl -sf -X POST -H 'Content-Type: application/json' --data " + Quote(body) + " " +
                    api + "/api/v1/tasks",
                &answer) == 0);
    std::string task = unidesk::core::JsonReader(answer).Str("task").value_or("");
    REQUIRE(task.size() == 36);
    // The local node has a Docker engine (the machine's, or one ops/up started, saying so), so
    // it is healthy, the task is placed on it and the node runs it: here the repository's host
    // does not resolve, so the attempt fails in its git phase, blamed on the infrastructure.
    CHECK((Contains(log, "uses the Docker engine at") || Contains(log, "starting one of our own")));
    std::string shown;
    CHECK(WaitUntil(
        [&] {
          shown = Cli(conninfo, "tasks show " + task + " --json").out;
          return unidesk::core::JsonReader(shown).Str("state") == "failed";
        },
        std::chrono::seconds(30)));
    unidesk::core::JsonReader outcome(shown);
    CHECK(outcome.Str("node") == "local");
    CHECK(outcome.Str("failure_class") == "git");
    CHECK(outcome.Str("blame") == "infrastructure");

    CHECK(StopChild(*up.process, SIGTERM, std::chrono::seconds(30)) == 143);  // 128 + SIGTERM
    CHECK(Contains(ReadFile(up.log), "ops/up: stopped"));
    // Everything it started is gone: the provider said goodbye, the database is down.
    CHECK(Contains(ReadFile(var + "/provider.log"), "stopped"));
    CHECK(Shell("pg_isready -q -h 127.0.0.1 -p " + ReadFile(var + "/pg/port").substr(0, 5)) != 0);
  }
  {
    // A second run on the same folder: same node, same token, online again.
    Up up = StartUp(var);
    REQUIRE_MESSAGE(WaitUntil([&] { return Contains(ReadFile(up.log), "ops/up: ready"); },
                              std::chrono::seconds(90), std::chrono::milliseconds(100)),
                    ReadFile(up.log));
    std::string conninfo = Conninfo(var);
    CHECK_FALSE(Contains(ReadFile(up.log), "registered node 'local'"));
    CHECK(ListedStatus(conninfo, "local") == "online");
    CHECK(Text(conninfo, "SELECT count(*) FROM events WHERE type = 'node.registered'") == "1");
    // The first run's goodbye was recorded as a clean disconnect.
    CHECK(Text(conninfo, "SELECT count(*) FROM events WHERE type = 'node.disconnected'") != "0");
    StopChild(*up.process, SIGTERM, std::chrono::seconds(30));
  }
  Shell("rm -rf " + Quote(var));
}
